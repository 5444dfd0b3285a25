"""Loading what registers itself: the built-in data sources, methods, similarity metrics, figure kinds,
cross-model projectors and analysis predictors, and a study's own ``plugins:`` files. Every entry point (the CLI, the Snakefile, the
tests) loads them before it reads a config, because the config is validated against the registries
(:mod:`promptgrid.registry`)."""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

import promptgrid.analysis.predictors
import promptgrid.data.sources
import promptgrid.engine.projectors
import promptgrid.figures
import promptgrid.methods
import promptgrid.similarity

#: the packages whose every module registers one thing
BUILTIN_PACKAGES = (promptgrid.data.sources, promptgrid.methods, promptgrid.similarity, promptgrid.figures,
                    promptgrid.engine.projectors, promptgrid.analysis.predictors)


def load_builtins() -> None:
    """Import every module of the built-in packages (each registers itself; importing twice is a no-op)."""
    for package in BUILTIN_PACKAGES:
        for info in pkgutil.iter_modules(package.__path__):
            if info.name not in getattr(package, "HELPERS", ()):
                importlib.import_module(f"{package.__name__}.{info.name}")


def load_plugins(paths, base: Path = None) -> None:
    """Import a study's plugin files (relative paths start at ``base``, default the working directory)."""
    for i, path in enumerate(paths or []):
        file = Path(path).expanduser()
        if not file.is_absolute() and base is not None:
            file = base / file
        if not file.is_file():
            from promptgrid.config import ConfigError

            raise ConfigError(f"plugins[{i}]", f"plugin file {path} does not exist (looked at {file.resolve()})")
        name = f"promptgrid_plugin_{file.stem}_{abs(hash(str(file.resolve())))}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def load(raw: dict = None, base: Path = None) -> None:
    """The built-ins, then the plugins a raw (not yet validated) config names."""
    load_builtins()
    if isinstance(raw, dict) and isinstance(raw.get("plugins"), list):
        load_plugins(raw["plugins"], base)


def load_config_with_plugins(path):
    """Read a YAML or JSON study config, load the plugins it names, then validate it (``load_config``)."""
    from promptgrid.config import load_config
    from promptgrid.config.study import read_config_file

    path = Path(path)
    if path.exists():
        load(read_config_file(path))
    else:
        load_builtins()
    return load_config(path)
