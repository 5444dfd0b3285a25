"""The whole study config (``StudyConfig``), its typed loader with key-path errors, and the per-section config
hashes that decide which jobs rerun.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from promptgrid.config.fields import NAME_PATTERN, NAME_RULE, ConfigError, Section, setting, unoptional
from promptgrid.config.sections import (
    HASH_FREE_TRAINING_KEYS,
    HASH_NEUTRAL_PROMPT_KEYS,
    HASH_NEUTRAL_TASK_KEYS,
    RETIRED_KEYS,
    AnalysisConfig,
    BackboneConfig,
    CrossModelConfig,
    JobsConfig,
    MetricsConfig,
    PromptConfig,
    TaskConfig,
    TrainingConfig,
    TransferConfig,
)
from promptgrid.errors import InputError, MissingResource
from promptgrid.registry import METHODS, SOURCES


@dataclass
class StudyConfig(Section):
    """One study: backbones, tasks, the source x target grid, prompt and training settings, seeds, transfer
    methods and similarity metrics."""

    study: str = setting(pattern=NAME_PATTERN, rule=NAME_RULE, help="the study's name: its folder under results_dir")
    backbones: dict[str, BackboneConfig] = setting(min_items=1, keys=NAME_PATTERN,
                                                   help="name -> a frozen model prompts are tuned on")
    tasks: dict[str, TaskConfig] = setting(min_items=1, keys=NAME_PATTERN, help="name -> a task")
    sources: list[str] = setting(min_items=1, unique=True, help="tasks whose prompts are transferred")
    targets: list[str] = setting(min_items=1, unique=True, help="tasks prompts are transferred to")
    seeds: list[int] = setting(default_factory=lambda: [0], min_items=1, unique=True,
                               help="a prompt is trained per task and seed")
    prompt: PromptConfig = setting(default_factory=PromptConfig, help="the soft prompt")
    training: TrainingConfig = setting(default_factory=TrainingConfig, help="prompt tuning")
    transfer: TransferConfig = setting(default_factory=TransferConfig, help="the transfer methods and their settings")
    metrics: MetricsConfig = setting(default_factory=MetricsConfig, help="the task-similarity metrics")
    analysis: AnalysisConfig = setting(default_factory=AnalysisConfig, help="statistics")
    jobs: JobsConfig = setting(default_factory=JobsConfig, help="how runs are grouped into jobs")
    results_dir: str = setting("results", help="where results/<study>/ is written")
    cache_dir: Optional[str] = setting(None, default_doc="$PROMPTGRID_CACHE, else ~/.cache/promptgrid",
                                       help="downloads and converted models, shared by studies")
    task_defaults: dict = setting(default_factory=dict, defaults_for=TaskConfig,
                                  help="task keys applied to every task unless it sets them")
    cross_model: Optional[CrossModelConfig] = setting(None, help="Su et al.'s cross-model transfer (off if absent)")
    plugins: list[str] = setting(default_factory=list, help=(
        "Python files that register more transfer methods, similarity metrics, figure kinds, data sources or "
        "projectors (promptgrid.registry); relative paths start at the study's working directory"))

    def check(self):
        for role in ("sources", "targets"):
            for i, name in enumerate(getattr(self, role)):
                if name not in self.tasks:
                    raise ConfigError(f"{role}[{i}]", f"task {name!r} is not defined under 'tasks' (defined: {sorted(self.tasks)})")
        for name, task in self.tasks.items():
            for bname in task.peft_adapters:
                if bname not in self.backbones:
                    raise ConfigError(f"tasks.{name}.peft_adapters.{bname}", f"backbone {bname!r} is not defined "
                                                                             f"under 'backbones'")
            if task.peft_adapters and name in self.targets:
                # a target's own prompt is the baseline every gain is measured against: it must be trained
                raise ConfigError(f"tasks.{name}.peft_adapters", f"task {name!r} is a target; imported prompts "
                                                                 f"can only serve as sources")
        self._refuse_overlaps()
        if self.cross_model is not None:
            for key in ("source_backbone", "target_backbone"):
                if getattr(self.cross_model, key) not in self.backbones:
                    raise ConfigError(f"cross_model.{key}", f"backbone {getattr(self.cross_model, key)!r} is not "
                                                            f"defined under 'backbones'")
            for i, t in enumerate(self.cross_model.held_out):
                if t not in self.trained_tasks:
                    raise ConfigError(f"cross_model.held_out[{i}]", f"task {t!r} is neither a source nor a target")
        if self.prompt.kind == "deep":
            self._check_deep()

    def _check_deep(self) -> None:
        """What deep prompts do not reach, refused before any job runs."""
        for name in self.trained_tasks:
            if self.tasks[name].kind not in DEEP_TASK_KINDS:
                raise ConfigError(f"tasks.{name}.kind", f"task {name!r} is a {self.tasks[name].kind} task; deep prompts "
                                                         f"(prompt.kind: deep) score {' and '.join(DEEP_TASK_KINDS)} "
                                                         f"tasks only")
        if self.cross_model is not None:
            raise ConfigError("cross_model", "cross-model projection maps input prompts (L, d) between embedding "
                                             "spaces; with prompt.kind 'deep' it is not defined: remove cross_model "
                                             "or set prompt.kind: input")
        from promptgrid.registry import SIMILARITIES

        for i, name in enumerate(self.metrics.names):
            spec = SIMILARITIES.get(name)
            if spec is not None and not spec.deep:
                raise ConfigError(f"metrics.names[{i}]", f"metric {name!r} has no meaning for deep prompts "
                                                         f"(prompt.kind: deep): {spec.deep_reason}")

    def _refuse_overlaps(self) -> None:
        """No two trained tasks may share texts: the same data twice (same source, path, files, config and split),
        or tasks a source declares as overlapping (Rotten Tomatoes repeats the VADER movie snippets), or a source
        would hold its target's test examples."""
        seen = {}
        for name in self.trained_tasks:
            task = self.tasks[name]
            declared = SOURCES[task.source].overlaps.get(task.path, ())
            for other_name, other in seen.items():
                if (_data_identity(task) == _data_identity(other) or other.source_task in declared
                        or task.source_task in SOURCES[other.source].overlaps.get(other.path, ())):
                    raise ConfigError(f"tasks.{name}", f"{task.source_task} shares its texts with task "
                                                       f"{other_name!r} ({other.source_task}); a study may hold "
                                                       f"only one of them, or a source would hold its target's "
                                                       f"test examples")
            seen[name] = task

    @property
    def fetched_sources(self) -> list:
        """Data sources with a pinned artifact that the trained tasks read, in task order: one fetch job each."""
        names = dict.fromkeys(self.tasks[t].source for t in self.trained_tasks)
        return [n for n in names if SOURCES[n].artifact is not None]

    # ---- derived views -------------------------------------------------
    @property
    def trained_tasks(self) -> list:
        """Tasks that get a prompt of their own: sources then targets, each once."""
        return list(dict.fromkeys(list(self.sources) + list(self.targets)))

    @property
    def study_dir(self) -> Path:
        return Path(self.results_dir) / self.study

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(os.path.expanduser(self.cache_dir))
        return default_cache_dir()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(dataclasses.replace(self, transfer=TransferConfig([])))
        d["transfer"] = self.transfer.to_dict()
        return d

    def section_hash(self, *keys: str, task: Optional[str] = None, backbone: Optional[str] = None) -> str:
        """Short hash of the config parts a job depends on, so a change reruns only those jobs."""
        d = self.to_dict()
        for key in HASH_FREE_TRAINING_KEYS:
            d["training"].pop(key, None)
        neutral_prompt = [k for k, v in HASH_NEUTRAL_PROMPT_KEYS.items() if d["prompt"].get(k) == v]
        for key in neutral_prompt:
            del d["prompt"][key]
        for name, section in self.transfer.sections.items():  # a method's keys added after studies ran
            for key, neutral in getattr(type(section), "HASH_NEUTRAL", {}).items():
                if d["transfer"][name].get(key) == neutral:
                    del d["transfer"][name][key]
        dropped = set()  # a section's keys added after studies ran (MetricsConfig, CrossModelConfig)
        for f in dataclasses.fields(self):
            for key, neutral in getattr(type(getattr(self, f.name)), "HASH_NEUTRAL", {}).items():
                if isinstance(d[f.name], dict) and d[f.name].get(key) == neutral:
                    del d[f.name][key]
                    dropped.add(f"{f.name}.{key}")
        for task_dict in d["tasks"].values():
            for key, neutral in HASH_NEUTRAL_TASK_KEYS.items():
                if key in task_dict and task_dict[key] == neutral:
                    del task_dict[key]
            for old, renamed in TaskConfig.RENAMED.items():  # hashed under its old name: the rename reran nothing
                task_dict[old] = task_dict.pop(renamed)
        parts = {}
        for k in keys:  # "metrics.panda_examples" picks one value out of a section
            if (k.startswith("prompt.") and k[len("prompt."):] in neutral_prompt) or k in dropped:
                continue
            value = d
            for part in k.split("."):
                value = value[part]
            parts[k] = value
        if task is not None:
            parts["task"] = d["tasks"][task]
        if backbone is not None:
            parts["backbone"] = d["backbones"][backbone]
        return stable_hash(parts)

    @classmethod
    def from_dict(cls, raw: dict) -> StudyConfig:
        return _build(cls, raw, "")


def _data_identity(task: TaskConfig) -> tuple:
    """What names a task's examples: one hub dataset with another config, split or files is other data."""
    return task.source, task.path, task.hf_config, task.data_files, task.hf_split


#: task kinds whose objectives take deep prompts (label scoring through Backbone.logits)
DEEP_TASK_KINDS = ("classification", "regression")


def default_cache_dir() -> Path:
    """Downloads and converted models live here, outside results/: $PROMPTGRID_CACHE or ~/.cache/promptgrid."""
    return Path(os.environ.get("PROMPTGRID_CACHE", Path.home() / ".cache" / "promptgrid"))


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_type(value, tp, key):
    """``value`` if it has the annotated type ``tp`` (list items and mapping values too; an int is a float), else a
    ConfigError at ``key``."""
    if value is None and unoptional(tp) is not tp:
        return None
    tp = unoptional(tp)
    origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(key, f"expected {tp.__name__}, got a boolean {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(key, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return {k: _check_type(v, args[1], f"{key}.{k}") for k, v in value.items()} if args else value
    return value


def _renamed(cls, raw: dict, prefix: str) -> tuple:
    """``raw`` with the old keys of ``cls.RENAMED`` under their new names (each with a FutureWarning; both at once
    is an error), and {new: old} for the keys it renamed."""
    aliases = {}
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old in raw:
            if new in raw:
                raise ConfigError(prefix + old, f"is the old name of '{new}', which is set too; keep only '{new}'")
            warnings.warn(f"config key '{prefix}{old}' is deprecated: it is called '{prefix}{new}' now (same values); "
                          f"rename it", FutureWarning, stacklevel=3)
            raw = {(new if k == old else k): v for k, v in raw.items()}
            aliases[new] = old
    return raw, aliases


def _build_transfer(raw, prefix: str) -> TransferConfig:
    """``transfer``: its method list and, per method with settings, that method's own typed section."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {type(raw).__name__}")
    methods = _check_type(raw.get("methods", ["zeroshot", "vanilla"]), list[str], prefix + "methods")
    sections = {}
    for name, value in raw.items():
        if name == "methods":
            continue
        spec = METHODS.get(name)
        if spec is None or spec.config is None:
            allowed = sorted(["methods"] + [n for n, s in METHODS.items() if s.config is not None])
            raise ConfigError(prefix + name, f"unknown key (allowed here: {allowed})")
        sections[name] = _build(spec.config, value or {}, f"{prefix}{name}.")
    try:
        return TransferConfig(methods, **sections)
    except ConfigError as err:
        raise ConfigError(prefix + err.key, str(err).split(": ", 1)[1]) from None


def _build(cls, raw, prefix: str, aliases: Optional[dict] = None):
    """A ``cls`` from the mapping ``raw`` at key path ``prefix``, led by ``cls``'s annotations: a dataclass field
    is built in turn, ``dict[str, <dataclass>]`` builds each value, the rest is type-checked; unknown, missing
    and retired keys fail naming their path. ``aliases``: {new: old} key names the study used (errors name those)."""
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a mapping, got {type(raw).__name__}")
    raw, more = _renamed(cls, raw, prefix)
    aliases = {**(aliases or {}), **more}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for (section, key), instead in RETIRED_KEYS.items():
        if prefix == f"{section}." and key in raw:
            raise ConfigError(prefix + key, f"is no longer a setting: {instead}")
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise ConfigError(prefix + str(unknown[0]), f"unknown key (allowed here: {sorted(fields)})")
    kwargs, defaults = {}, {}  # defaults: section class -> the keys every one of them takes (task_defaults)
    for name, f in fields.items():
        key = prefix + aliases.get(name, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(key, "is required")
            continue
        value, tp = raw[name], unoptional(hints[name])
        if tp is TransferConfig:
            kwargs[name] = _build_transfer(value or {}, key + ".")
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = None if value is None and tp is not hints[name] else _build(tp, value or {}, key + ".")
        elif "defaults_for" in f.metadata:  # task_defaults: any task key, each task takes them unless it sets its own
            item_cls = f.metadata["defaults_for"]
            kwargs[name], _ = _renamed(item_cls, _check_type(value or {}, dict, key), key + ".")
            known = {g.name for g in dataclasses.fields(item_cls)}
            for k in kwargs[name]:
                if k not in known:
                    raise ConfigError(f"{key}.{k}", f"unknown task key (allowed: {sorted(known)})")
            defaults[item_cls] = kwargs[name]
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            kwargs[name] = _check_type(value, dict, key)
        else:
            kwargs[name] = _check_type(value, hints[name], key)
    for name, tp in hints.items():  # mappings of sections (backbones, tasks), after task_defaults
        tp = unoptional(tp)
        if name in kwargs and typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            item_cls = typing.get_args(tp)[1]
            built = {}
            for k, v in kwargs[name].items():
                item_prefix = f"{prefix}{name}.{k}."
                own, renamed = _renamed(item_cls, _check_type(v or {}, dict, item_prefix.rstrip(".")), item_prefix)
                merged = {**defaults.get(item_cls, {}), **own}
                built[str(k)] = _build(item_cls, merged, item_prefix, renamed)
            kwargs[name] = built
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.key.startswith(prefix) and prefix:
            raise
        head = re.match(r"[^.\[]+", err.key).group(0)
        key = aliases.get(head, head) + err.key[len(head):]
        raise ConfigError(prefix + key, str(err).split(": ", 1)[1]) from None


def read_config_file(path) -> Any:
    """The raw (not yet validated) content of a YAML or JSON study config. A missing file is a
    :class:`MissingResource`, one that does not parse an :class:`InputError` naming the file and the line."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise MissingResource(f"config file {path} does not exist")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise InputError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                         f"{err}") from None


def load_config(path) -> StudyConfig:
    """Read a YAML or JSON study config and validate it."""
    raw = read_config_file(path)
    if raw is None:
        raise ConfigError("<top level>", f"{path} is empty")
    return StudyConfig.from_dict(raw)
