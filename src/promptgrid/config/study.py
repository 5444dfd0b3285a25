"""The whole study config (``StudyConfig``), its typed loader with key-path errors, the JSON-schema check,
and the per-section config hashes that decide which jobs rerun.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from promptgrid.config.sections import (
    _HASH_FREE_TRAINING_KEYS,
    _HASH_NEUTRAL_TASK_KEYS,
    RENAMED_VALUES,
    RETIRED_KEYS,
    AnalysisConfig,
    BackboneConfig,
    ConfigError,
    CrossModelConfig,
    JobsConfig,
    MetricsConfig,
    PromptConfig,
    TaskConfig,
    TrainingConfig,
    TransferConfig,
)
from promptgrid.registry import METHODS, SIMILARITIES, SOURCES


@dataclass
class StudyConfig:
    study: str
    backbones: dict
    tasks: dict
    sources: list
    targets: list
    seeds: list = field(default_factory=lambda: [0])
    prompt: PromptConfig = field(default_factory=PromptConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    results_dir: str = "results"
    cache_dir: Optional[str] = None
    task_defaults: dict = field(default_factory=dict, metadata={"help": "keys applied to every task unless it sets them"})
    cross_model: Optional[CrossModelConfig] = None
    plugins: list = field(default_factory=list, metadata={
        "help": "Python files that register more transfer methods, similarity metrics or figure kinds "
                "(promptgrid.registry); relative paths start at the study's working directory"})

    def __post_init__(self):
        if not self.study or not all(c.isalnum() or c in "-_." for c in self.study):
            raise ConfigError("study", f"{self.study!r} must be a non-empty name of letters, digits, '-', '_' or '.'")
        if not self.backbones:
            raise ConfigError("backbones", "define at least one backbone")
        for role in ("sources", "targets"):
            names = getattr(self, role)
            if not names:
                raise ConfigError(role, "list at least one task")
            for i, name in enumerate(names):
                if name not in self.tasks:
                    raise ConfigError(f"{role}[{i}]", f"task {name!r} is not defined under 'tasks' (defined: {sorted(self.tasks)})")
            if len(set(names)) != len(names):
                raise ConfigError(role, "lists a task twice")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", "list at least one seed, each once")
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
        for key in _HASH_FREE_TRAINING_KEYS:
            d["training"].pop(key, None)
        for task_dict in d["tasks"].values():
            for key, neutral in _HASH_NEUTRAL_TASK_KEYS.items():
                if key in task_dict and task_dict[key] == neutral:
                    del task_dict[key]
        parts = {}
        for k in keys:  # "metrics.panda_examples" picks one value out of a section
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


def default_cache_dir() -> Path:
    """Downloads and converted models live here, outside results/: $PROMPTGRID_CACHE or ~/.cache/promptgrid."""
    return Path(os.environ.get("PROMPTGRID_CACHE", Path.home() / ".cache" / "promptgrid"))


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_scalar(value, tp, key):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_scalar(value, args[0], key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(key, f"expected {tp.__name__}, got a boolean {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(key, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__} {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value
    return value


_NESTED = {"prompt": PromptConfig, "training": TrainingConfig, "metrics": MetricsConfig, "analysis": AnalysisConfig,
           "jobs": JobsConfig, "cross_model": CrossModelConfig}


def _build_transfer(raw, prefix: str) -> TransferConfig:
    """``transfer``: its method list and, per method with settings, that method's own typed section."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {type(raw).__name__}")
    methods = _check_scalar(raw.get("methods", ["zeroshot", "vanilla"]), list, prefix + "methods")
    for i, m in enumerate(methods):
        _check_scalar(m, str, f"{prefix}methods[{i}]")
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


def _build(cls, raw, prefix: str):
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for (section, key), instead in RETIRED_KEYS.items():
        if prefix == f"{section}." and key in raw:
            raise ConfigError(prefix + key, f"is no longer a setting: {instead}")
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise ConfigError(prefix + str(unknown[0]), f"unknown key (allowed here: {sorted(fields)})")
    kwargs = {}
    if cls is StudyConfig and raw.get("task_defaults") is not None:
        _check_scalar(raw["task_defaults"], dict, "task_defaults")
        task_keys = {f.name for f in dataclasses.fields(TaskConfig)}
        for k in raw["task_defaults"]:
            if k not in task_keys:
                raise ConfigError(f"task_defaults.{k}", f"unknown task key (allowed: {sorted(task_keys)})")
    for name, f in fields.items():
        key = prefix + name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(key, "is required")
            continue
        value = raw[name]
        if name == "transfer" and cls is StudyConfig:
            kwargs[name] = _build_transfer(value or {}, key + ".")
            continue
        if name in _NESTED and cls is StudyConfig:
            kwargs[name] = None if value is None and name == "cross_model" else _build(_NESTED[name], value or {}, key + ".")
            continue
        if cls is StudyConfig and name in ("backbones", "tasks"):
            item_cls = BackboneConfig if name == "backbones" else TaskConfig
            _check_scalar(value, dict, key)
            defaults = raw.get("task_defaults") or {} if name == "tasks" else {}
            kwargs[name] = {str(k): _build(item_cls, {**defaults, **(v or {})}, f"{key}.{k}.")
                            for k, v in value.items()}
            continue

        kwargs[name] = _check_scalar(value, hints[name], key)
        if name in ("sources", "targets", "text_fields", "names", "plugins"):
            for i, item in enumerate(kwargs[name]):
                _check_scalar(item, str, f"{key}[{i}]")
        if name in ("seeds", "top_k"):
            for i, item in enumerate(kwargs[name]):
                _check_scalar(item, int, f"{key}[{i}]")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.key.startswith(prefix) and prefix:
            raise
        raise ConfigError(prefix + err.key, str(err).split(": ", 1)[1]) from None


def load_config(path) -> StudyConfig:
    """Read a YAML or JSON study config and validate it."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if raw is None:
        raise ConfigError("<top level>", f"{path} is empty")
    return StudyConfig.from_dict(raw)


def schema_errors(raw: dict, schema_path) -> list:
    """Check ``raw`` against the JSON schema; each error reads "config key 'a.b': message"."""
    import jsonschema
    import yaml

    schema = with_registered_names(yaml.safe_load(Path(schema_path).read_text()))
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"config key '{section}.{key}': is no longer a setting: {instead}"
              for (section, key), instead in RETIRED_KEYS.items()
              if isinstance(raw.get(section), dict) and key in raw[section]]
    if errors:
        return errors
    for err in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            if extra and err.schema.get("properties"):
                key = f"{path}.{extra[0]}" if err.absolute_path else extra[0]
                errors.append(f"config key '{key}': unknown key (allowed here: {sorted(err.schema['properties'])})")
                continue
        errors.append(f"config key '{path}': {err.message}")
    return errors


def with_registered_names(schema: dict) -> dict:
    """The JSON schema with its name enums and per-method sections taken from the registries: the transfer
    methods (and each one's ``schema`` section), the similarity metrics (old spellings included)."""
    transfer = schema["properties"]["transfer"]["properties"]
    transfer["methods"]["items"] = {"enum": list(METHODS)}
    for name, spec in METHODS.items():
        if spec.config is not None:
            transfer[name] = getattr(spec.config, "SCHEMA", {"type": "object"})
    schema["$defs"]["metric_name"] = {"enum": list(SIMILARITIES) + list(RENAMED_VALUES)}
    schema["$defs"]["task"]["properties"]["source"] = {"enum": list(SOURCES)}
    return schema
