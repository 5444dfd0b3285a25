"""``config/README.md``, generated from the typed config: every key of a study config, by section, with its type,
default, allowed values and help text, read from the dataclasses' ``setting`` declarations
(:mod:`promptgrid.config.fields`) and the registries (built-in names). The Snakemake workflow catalog shows this
file; ``tests/config/test_config.py`` regenerates it in a fresh interpreter and fails when the committed copy differs.

Regenerate both generated files (this one and the JSON schema) after changing a setting or a built-in name::

    python -c 'import promptgrid.pipeline.plugins as p, promptgrid.config.docs as d; p.load_builtins(); d.write_generated()'
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

from promptgrid.config.fields import NAME_PATTERN, NAME_RULE, Names, allowed, unoptional
from promptgrid.config.sections import RENAMED_VALUES, RETIRED_KEYS, TransferConfig
from promptgrid.config.study import StudyConfig
from promptgrid.registry import METHODS

#: where the generated README is committed, relative to the repository root
README_FILE = "config/README.md"
_WORDS = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", dict: "mapping"}

_INTRO = """# Configuration

<!-- Generated from the typed config (src/promptgrid/config) by promptgrid.config.docs: do not edit.
     tests/config/test_config.py fails when this file differs from what promptgrid generates. -->

A study is one YAML file. `config/config.yaml` is the default study (`snakemake` runs it; snakedeploy copies
`config/`, the workflow catalog reads it, and the root `config.yaml` is a link to it); `studies/*.yaml` hold more (`snakemake --configfile studies/<name>.yaml`). While Snakemake builds the DAG the
config is checked against the JSON schema `workflow/schemas/config.schema.yaml` and then by the typed config in
`src/promptgrid/config/`, both generated from the same declarations as this file: an unknown key or a bad value
fails before any job starts, and the message names its key path (`config key 'training.lrr': unknown key ...`).

Names from a registry (data sources, transfer methods, similarity metrics, projectors) list the built-in ones;
a study's `plugins` add theirs. Changing a value reruns only the jobs whose stage reads it
(`src/promptgrid/config/stages.py`)."""


def _esc(text: str) -> str:
    """Text for a table cell: ``|`` ends a cell and ``<`` opens HTML in GitHub's markdown."""
    return str(text).replace("|", "\\|").replace("<", "\\<")


def _code(value) -> str:
    """A value as inline code in a table cell."""
    return "`" + _value(value).replace("|", "\\|") + "`"


def _value(v) -> str:
    """A default as YAML would spell it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if re.fullmatch(r"[A-Za-z_][\w.:/-]*", v) and v not in ("null", "true", "false") else json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_value(k)}: {_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _type(tp) -> str:
    inner = unoptional(tp)
    if inner is TransferConfig or dataclasses.is_dataclass(inner):
        words = "section"
    else:
        origin, args = typing.get_origin(inner) or inner, typing.get_args(inner)
        words = _WORDS.get(origin, getattr(origin, "__name__", str(origin)))
        if args:
            item = args[-1]
            words += f" of {'sections' if dataclasses.is_dataclass(item) else _WORDS.get(item, item)}"
    return words + (" or null" if inner is not tp else "")


def _default(f) -> str:
    if f.metadata.get("default_doc"):
        return _esc(f.metadata["default_doc"])
    if f.default is not dataclasses.MISSING:
        return _code(f.default)
    if f.default_factory is dataclasses.MISSING:
        return "required"
    value = f.default_factory()
    if dataclasses.is_dataclass(value) or isinstance(value, TransferConfig):
        return "its keys' defaults"
    return _code(value)


def _allowed(meta) -> str:
    parts = []
    if "choices" in meta:
        choices = meta["choices"]
        names = " \\| ".join(_code(c) for c in allowed(choices))
        parts.append(f"a registered {choices.what}: {names}" if isinstance(choices, Names) else names)
    for key, op in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if key in meta:
            parts.append(f"{op} {meta[key]}")
    if "pattern" in meta:
        parts.append(_esc(meta.get("rule") or meta["pattern"]))
    if "min_items" in meta and meta.get("max_items") == meta["min_items"]:
        parts.append(f"exactly {meta['min_items']} entries")
    else:
        if "min_items" in meta:
            parts.append(f"at least {meta['min_items']} {'entry' if meta['min_items'] == 1 else 'entries'}")
        if "max_items" in meta:
            parts.append(f"at most {meta['max_items']} entries")
    if meta.get("unique"):
        parts.append("each once")
    if "keys" in meta:
        parts.append(f"keys: {_esc(NAME_RULE if meta['keys'] == NAME_PATTERN else meta['keys'])}")
    if "each" in meta:
        parts.append(f"each: {_allowed(meta['each'])}")
    return "; ".join(parts)


def _rows(cls, fields=None) -> list:
    """Table rows of a dataclass's keys (``fields``: dataclasses.Field objects, default all of them)."""
    hints = typing.get_type_hints(cls) if cls is not None else {}
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for f in fields or dataclasses.fields(cls):
        meta = f.metadata
        tp = hints.get(f.name, list[str])
        where = _section_name(f, hints.get(f.name))
        see = f" (see [`{where}`](#{_anchor(where)}))" if where else ""
        kind = "section" if "defaults_for" in meta else _type(tp)
        rows.append(f"| `{f.name}` | {kind} | {_default(f)} | {_allowed(meta)} | {_esc(meta.get('help', ''))}{see} |")
    for old, new in getattr(cls, "RENAMED", {}).items():
        rows.append(f"| `{old}` | | | | deprecated: the old name of `{new}` (read as `{new}`, with a warning) |")
    return rows


def _section_name(f, tp):
    """The heading a key's own keys are listed under, if it is a section (or a mapping of them)."""
    if tp is None:
        return None
    inner = unoptional(tp)
    args = typing.get_args(inner)
    if inner is TransferConfig or dataclasses.is_dataclass(inner):
        return f.name
    if args and dataclasses.is_dataclass(args[-1]):
        return f"{f.name}.<name>"
    if "defaults_for" in f.metadata:
        return "tasks.<name>"
    return None


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading ``\\`heading\\```."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def config_readme() -> str:
    """The text of ``config/README.md``."""
    hints = typing.get_type_hints(StudyConfig)
    out = [_INTRO, "", "## Top level", "", *_rows(StudyConfig)]
    for f in dataclasses.fields(StudyConfig):
        inner = unoptional(hints[f.name])
        args = typing.get_args(inner)
        if inner is TransferConfig:
            methods = dataclasses.field(default_factory=TransferConfig.METHODS_SETTING.default_factory,
                                        metadata=TransferConfig.METHODS_SETTING.metadata)
            methods.name = "methods"
            out += ["", "## `transfer`", "", "The methods a study runs, and one section of settings per method "
                    "that has any (`transfer.<method>`, its `MethodSpec.config`).", "", *_rows(None, [methods])]
            for spec in METHODS.ordered():
                if spec.config is not None:
                    out += ["", f"## `transfer.{spec.name}`", "", _esc(spec.summary[:1].upper() + spec.summary[1:]) + ".",
                            "", *_rows(spec.config)]
        elif dataclasses.is_dataclass(inner):
            out += ["", f"## `{f.name}`", "", *_doc(inner), *_rows(inner)]
        elif args and dataclasses.is_dataclass(args[-1]):
            extra = [" `task_defaults` takes the same keys; a task's own value wins."] if f.name == "tasks" else []
            out += ["", f"## `{f.name}.<name>`", "", *_doc(args[-1], extra), *_rows(args[-1])]
    out += ["", "## Renamed and removed", ""]
    for section, cls in (("tasks.<name>", hints["tasks"]),):
        for old, new in getattr(typing.get_args(cls)[-1], "RENAMED", {}).items():
            out.append(f"- `{section}.{old}` is now `{section}.{new}` (the old key is read, with a warning).")
    for old, new in RENAMED_VALUES.items():
        out.append(f"- The similarity metric `{old}` is now `{new}` (the old name is still accepted).")
    for (section, key), instead in RETIRED_KEYS.items():
        out.append(f"- `{section}.{key}` was removed: {instead}.")
    return "\n".join(out) + "\n"


def _doc(cls, extra=()) -> list:
    """A section's docstring (its first paragraph), if it has one of its own."""
    doc = (cls.__doc__ or "").strip()
    if not doc or doc.startswith(cls.__name__ + "("):  # the dataclass's generated signature
        return []
    return [" ".join(doc.split("\n\n")[0].split()) + "".join(extra), ""]


def write_generated(root=".") -> list:
    """Write ``config/README.md`` and ``workflow/schemas/config.schema.yaml`` under the repository ``root``; returns
    the paths written. Load the built-in registries first (``promptgrid.pipeline.plugins.load_builtins``), and
    nothing else: what is registered when this runs is what the files list."""
    from promptgrid.config.schema import SCHEMA_FILE, schema_text

    written = []
    for rel, text in ((README_FILE, config_readme()), (SCHEMA_FILE, schema_text())):
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(str(path))
    return written
