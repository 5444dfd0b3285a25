"""Typed study configuration.

A study config is a YAML mapping (see ``config.yaml`` and ``workflow/schemas/config.schema.yaml``).
``StudyConfig.from_dict`` turns it into dataclasses and rejects anything it does not know, naming
the offending key path (``training.lr``, ``tasks.hotels.labels``), so a typo fails before any job runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

BACKBONE_KINDS = ("encoder", "causal_lm", "seq2seq", "masked_lm")
DATA_SOURCES = ("bigbench", "hf", "local")
INIT_KINDS = ("vocab", "labels", "random", "file")
OPTIMIZERS = ("adamw", "adafactor", "sgd")
TRANSFER_METHODS = ("zeroshot", "vanilla", "panda", "spot_topk")
PROMPT_METRICS = ("cos_avg", "token_cos", "c_con", "e_con", "e_ave", "max")
MODEL_METRICS = ("on", "panda")
ALL_METRICS = PROMPT_METRICS + MODEL_METRICS
TASK_KINDS = ("classification", "regression", "span_qa", "ner")
PRECISIONS = ("fp32", "bf16", "auto")
ATTENTIONS = ("auto", "eager", "sdpa")
#: the task metrics each task kind allows; the first is its default
KIND_METRICS = {"classification": ("accuracy", "macro_f1"), "regression": ("pearson", "spearman"),
                "span_qa": ("squad_f1", "squad_em"), "ner": ("ner_f1",)}
TASK_METRICS = tuple(dict.fromkeys(m for ms in KIND_METRICS.values() for m in ms))
#: task keys added after studies had been run: at these values they drop out of the config hashes
#: (``StudyConfig.section_hash``), so adding them left every existing result valid
_HASH_NEUTRAL_TASK_KEYS = {"label_range": [0.0, 5.0], "tag_names": None, "max_new_tokens": 32, "peft_adapters": {}}
#: speed choices that never change what is computed beyond float rounding: in no config hash
_HASH_FREE_TRAINING_KEYS = ("attention",)
#: keys that were removed or split, with what to write instead (an old study fails at DAG build saying so)
RETIRED_KEYS = {
    ("training", "fast_matmul"): "it was split in two: training.attention (auto | eager | sdpa, a speed choice) "
                                 "and training.precision (fp32 | bf16 | auto; the oneDNN bf16 GEMM setting is part "
                                 "of bf16, and fp32 is IEEE fp32)",
}


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the key path."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


@dataclass
class BackboneConfig:
    """A frozen model that prompts are tuned on."""

    model: str = field(metadata={"help": "hub id, local folder, or 'pypi:<module>' for a model shipped in a PyPI package"})
    kind: str = field(default="encoder", metadata={"help": "encoder | causal_lm | seq2seq | masked_lm"})
    revision: Optional[str] = field(default=None, metadata={"help": "hub revision (commit or tag)"})
    gguf_file: Optional[str] = field(default=None, metadata={"help": "GGUF file inside the model folder, if any"})
    temperature: float = field(default=20.0, metadata={"help": "encoder scoring: logits = temperature * cosine"})
    max_length: int = field(default=64, metadata={"help": "input tokens kept (truncated on the left)"})
    answer_template: str = field(default="{text}\nAnswer:", metadata={"help": "LM scoring: text before the label"})
    trust_remote_code: bool = field(default=False, metadata={"help": "only set for models you trust"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16"})

    def __post_init__(self):
        if self.kind not in BACKBONE_KINDS:
            raise ConfigError("kind", f"unknown backbone kind {self.kind!r}; choose one of {list(BACKBONE_KINDS)}")
        if self.temperature <= 0:
            raise ConfigError("temperature", "must be > 0")
        if self.max_length < 4:
            raise ConfigError("max_length", "must be >= 4")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError("dtype", f"unknown dtype {self.dtype!r}")
        if "{text}" not in self.answer_template:
            raise ConfigError("answer_template", "must contain '{text}'")


@dataclass
class TaskConfig:
    """Where a task's examples come from and how labels are verbalised."""

    source: str = field(metadata={"help": "bigbench | hf | local"})
    path: str = field(metadata={"help": "bigbench: task path like 'multiemo/hotels_text_en'; hf: hub id or builder ('json', 'csv', 'parquet'); local: a .jsonl/.csv/.parquet file"})
    labels: dict = field(default_factory=dict, metadata={"help": "raw label value -> verbalizer text, in class order"})
    family: str = field(default="other", metadata={"help": "task family, used to order figures"})
    text_fields: list = field(default_factory=lambda: ["input"], metadata={"help": "columns joined into the input text"})
    label_field: str = field(default="label", metadata={"help": "column holding the raw label (hf/local)"})
    id_field: Optional[str] = field(default=None, metadata={"help": "column with a stable example id; row number if absent"})
    data_files: Optional[str] = field(default=None, metadata={"help": "hf: local data file(s) for a builder like 'json'"})
    hf_config: Optional[str] = field(default=None, metadata={"help": "hf: dataset config name"})
    hf_split: str = field(default="train", metadata={"help": "hf: split to read (promptgrid re-splits it)"})
    max_train: int = field(default=1000, metadata={"help": "cap on train examples"})
    max_dev: int = field(default=200, metadata={"help": "cap on dev examples"})
    max_test: int = field(default=200, metadata={"help": "cap on test examples"})
    dev_fraction: float = field(default=0.1, metadata={"help": "share of examples hashed into dev"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of examples hashed into test"})
    metric: Optional[str] = field(default=None, metadata={
        "help": "classification: accuracy (default) | macro_f1; regression: pearson (default) | spearman; "
                "span_qa: squad_f1 (default) | squad_em; ner: ner_f1"})
    empty_text: str = field(default="drop", metadata={"help": "rows with empty text: drop (with a warning) | error"})
    kind: str = field(default="classification", metadata={
        "help": "classification | regression (labels: a low and a high word; score in label_range) | span_qa "
                "(SQuAD-format records) | ner (CoNLL-format records)"})
    label_range: list = field(default_factory=lambda: [0.0, 5.0], metadata={
        "help": "regression: [min, max] of the gold scores; prediction = min + (max - min) * "
                "sigmoid(logit(high word) - logit(low word))"})
    tag_names: Optional[list] = field(default=None, metadata={
        "help": "ner: BIO tag names that integer ner_tags index; default: the HF dataset's ClassLabel names, "
                "else CoNLL-2003's"})
    peft_adapters: dict = field(default_factory=dict, metadata={
        "help": "backbone name -> a PEFT PromptTuning adapter (local folder with adapter_config.json + "
                "adapter_model.safetensors, or a hub id) used as this task's prompt on that backbone instead of "
                "training one, for every seed: a published prompt bank as sources"})
    max_new_tokens: int = field(default=32, metadata={
        "help": "span_qa / ner on causal_lm / seq2seq: greedy decoding length, and the cap on training "
                "target tokens (EOS included)"})

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ConfigError("kind", f"unknown task kind {self.kind!r}; choose one of {list(TASK_KINDS)}")
        if self.empty_text not in ("drop", "error"):
            raise ConfigError("empty_text", f"must be 'drop' or 'error', got {self.empty_text!r}")
        if self.source not in DATA_SOURCES:
            raise ConfigError("source", f"unknown data source {self.source!r}; choose one of {list(DATA_SOURCES)}")
        if not isinstance(self.labels, dict) or (self.kind == "classification" and len(self.labels) < 2):
            raise ConfigError("labels", "a classification task needs at least two labels (raw value -> label text)")
        if self.kind == "regression" and len(self.labels) != 2:
            raise ConfigError("labels", f"a regression task needs exactly two label words, the low one then the high "
                                        f"one (e.g. {{low: 'no', high: 'yes'}}); got {len(self.labels)}")
        self.labels = {str(k): str(v) for k, v in self.labels.items()}
        if self.kind == "regression" and set(self.labels) == {"low", "high"}:
            self.labels = {"low": self.labels["low"], "high": self.labels["high"]}
        if len(set(self.labels.values())) != len(self.labels):
            raise ConfigError("labels", "two labels share one label text")
        if not self.text_fields:
            raise ConfigError("text_fields", "needs at least one field")
        for key in ("max_train", "max_dev", "max_test"):
            if getattr(self, key) < 1:
                raise ConfigError(key, "must be >= 1")
        if not (0 < self.dev_fraction < 1 and 0 < self.test_fraction < 1 and self.dev_fraction + self.test_fraction < 1):
            raise ConfigError("dev_fraction", "dev_fraction and test_fraction must be in (0, 1) and sum below 1")
        allowed = KIND_METRICS[self.kind]
        if self.metric is None:
            self.metric = allowed[0]
        if self.metric not in allowed:
            raise ConfigError("metric", f"unknown metric {self.metric!r} for a {self.kind} task; choose one of "
                                        f"{list(allowed)}")
        rng = self.label_range
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)):
            raise ConfigError("label_range", f"must be a list of two numbers [min, max]; got {rng!r}")
        self.label_range = [float(rng[0]), float(rng[1])]
        if not self.label_range[0] < self.label_range[1]:
            raise ConfigError("label_range", f"min must be below max; got {rng!r}")
        if self.tag_names is not None:
            if not isinstance(self.tag_names, list) or not self.tag_names:
                raise ConfigError("tag_names", "must be a non-empty list of tag names")
            for i, name in enumerate(self.tag_names):
                if not isinstance(name, str) or not (name == "O" or (name[:2] in ("B-", "I-") and len(name) > 2)):
                    raise ConfigError(f"tag_names[{i}]", f"{name!r} is not O, B-<type> or I-<type>")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", "must be >= 1")

    @property
    def label_texts(self) -> list:
        """Label words in class order; regression: [low word, high word]."""
        return list(self.labels.values())


@dataclass
class PromptConfig:
    length: int = field(default=20, metadata={"help": "number of soft-prompt vectors L"})
    init: str = field(default="vocab", metadata={"help": "vocab | labels | random | file"})
    init_file: Optional[str] = field(default=None, metadata={"help": "safetensors prompt for init: file"})
    vocab_top: int = field(default=5000, metadata={"help": "vocab init samples rows among the first N token ids"})
    random_std: float = field(default=0.02, metadata={"help": "std of random init"})

    def __post_init__(self):
        if self.length < 1:
            raise ConfigError("length", "must be >= 1")
        if self.init not in INIT_KINDS:
            raise ConfigError("init", f"unknown init {self.init!r}; choose one of {list(INIT_KINDS)}")
        if self.init == "file" and not self.init_file:
            raise ConfigError("init_file", "required when init is 'file'")


@dataclass
class TrainingConfig:
    optimizer: str = field(default="adamw", metadata={"help": "adamw | adafactor | sgd"})
    lr: float = field(default=0.03, metadata={"help": "learning rate"})
    weight_decay: float = field(default=1e-5)
    steps: int = field(default=100, metadata={"help": "maximum optimizer steps"})
    batch_size: int = field(default=16)
    eval_every: int = field(default=20, metadata={"help": "dev evaluation interval in steps"})
    early_stop: int = field(default=0, metadata={"help": "stop after this many evaluations without improvement (0: off)"})
    checkpoint_every: int = field(default=20, metadata={"help": "resumable checkpoint interval in steps"})
    early_step: int = field(default=20, metadata={"help": "step whose prompt is kept as the SPoT early task embedding"})
    eval_batch_size: int = field(default=64)
    precision: str = field(default="auto", metadata={
        "help": "fp32 (IEEE) | bf16 (autocast of the frozen model; fp32 prompts and optimiser state) | auto (bf16 "
                "where the hardware computes bf16 fast: a GPU, or a CPU with AMX or AVX512-BF16; else fp32), "
                "resolved by each job on its node (promptgrid.precision)"})
    attention: str = field(default="auto", metadata={
        "help": "auto | eager | sdpa: the attention kernels, a speed choice (auto: eager on CPU, sdpa on GPU)"})

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.attention not in ATTENTIONS:
            raise ConfigError("attention", f"must be one of {list(ATTENTIONS)}, got {self.attention!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if self.lr <= 0:
            raise ConfigError("lr", "must be > 0")
        for key in ("steps", "batch_size", "eval_every", "checkpoint_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(key, "must be >= 1")
        if self.early_stop < 0:
            raise ConfigError("early_stop", "must be >= 0")
        if not 0 <= self.early_step <= self.steps:
            raise ConfigError("early_step", f"must be between 0 and steps ({self.steps})")


@dataclass
class PandaConfig:
    kd_loss: str = field(default="mse", metadata={"help": "mse (authors' code) | kl"})
    kd_temperature: float = field(default=2.0, metadata={"help": "KL temperature"})
    beta: Optional[float] = field(default=None, metadata={"help": "fixed KD weight (ablation); None: from the metric"})
    beta_metric: str = field(default="panda", metadata={"help": "metric giving T(s, t) for beta"})
    beta_scale: float = field(default=1.0, metadata={"help": "beta = beta_scale * clip(T, 0, 1)"})

    def __post_init__(self):
        if self.kd_loss not in ("mse", "kl"):
            raise ConfigError("kd_loss", f"unknown KD loss {self.kd_loss!r}; choose mse or kl")
        if self.beta_metric not in ALL_METRICS:
            raise ConfigError("beta_metric", f"unknown metric {self.beta_metric!r}")


@dataclass
class SpotConfig:
    k: int = field(default=3, metadata={"help": "number of sources mixed"})
    metric: str = field(default="cos_avg", metadata={"help": "metric ranking and weighting sources"})

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError("k", "must be >= 1")
        if self.metric not in ALL_METRICS:
            raise ConfigError("metric", f"unknown metric {self.metric!r}")


@dataclass
class TransferConfig:
    methods: list = field(default_factory=lambda: ["zeroshot", "vanilla"])
    panda: PandaConfig = field(default_factory=PandaConfig)
    spot_topk: SpotConfig = field(default_factory=SpotConfig)

    def __post_init__(self):
        for i, m in enumerate(self.methods):
            if m not in TRANSFER_METHODS:
                raise ConfigError(f"methods[{i}]", f"unknown transfer method {m!r}; choose from {list(TRANSFER_METHODS)}")


@dataclass
class MetricsConfig:
    names: list = field(default_factory=lambda: list(PROMPT_METRICS))
    on_window: int = field(default=3, metadata={"help": "ON per window of this many layers, plus all layers"})
    panda_examples: int = field(default=100, metadata={"help": "target inputs embedded for the PANDA metric"})

    def __post_init__(self):
        for i, m in enumerate(self.names):
            if m not in ALL_METRICS:
                raise ConfigError(f"names[{i}]", f"unknown metric {m!r}; choose from {list(ALL_METRICS)}")


@dataclass
class CrossModelConfig:
    """Su et al.'s cross-model transfer: project backbone A's prompts into backbone B."""

    source_backbone: str = field(metadata={"help": "backbone A, whose prompts are projected"})
    target_backbone: str = field(metadata={"help": "backbone B, which the projected prompts are used on"})
    held_out: list = field(metadata={"help": "tasks kept out of projector training and evaluated"})
    projectors: list = field(default_factory=lambda: ["linear", "mlp"], metadata={"help": "linear | mlp (Su et al. two-layer)"})
    objectives: list = field(default_factory=lambda: ["distance", "task"], metadata={"help": "distance | task"})
    hidden: int = field(default=768, metadata={"help": "hidden width of the two-layer projector"})
    steps: int = field(default=200, metadata={"help": "Adam steps of distance-minimising projector training"})
    lr: float = field(default=1e-3)
    task_steps: Optional[int] = field(default=None, metadata={
        "help": "Adam steps of task-tuning projector training (each one a forward and backward through backbone "
                "B, so usually far fewer); default: steps"})

    def __post_init__(self):
        for i, p in enumerate(self.projectors):
            if p not in ("linear", "mlp"):
                raise ConfigError(f"projectors[{i}]", f"unknown projector {p!r}; choose linear or mlp")
        for i, o in enumerate(self.objectives):
            if o not in ("distance", "task"):
                raise ConfigError(f"objectives[{i}]", f"unknown objective {o!r}; choose distance or task")
        if not self.held_out:
            raise ConfigError("held_out", "hold at least one task out of projector training")
        if self.steps < 1 or (self.task_steps is not None and self.task_steps < 1):
            raise ConfigError("task_steps" if self.steps >= 1 else "steps", "must be >= 1")


@dataclass
class AnalysisConfig:
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for CIs"})
    permutations: int = field(default=1000, metadata={"help": "permutations for p-values"})
    top_k: list = field(default_factory=lambda: [1, 3, 5])
    seed: int = 0


@dataclass
class JobsConfig:
    """How runs are grouped into Snakemake jobs. Results do not depend on it (it is in no config hash)."""

    per_backbone: bool = field(default=False, metadata={
        "help": "true: one train, one zeroshot and one panda-metric job per backbone, each loading the model "
                "once for every task (a workstation: less process start and model load per job). false: one "
                "job per task / target (a cluster: more parallel jobs, and a changed task reruns only its own)"})


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
        if self.cross_model is not None:
            for key in ("source_backbone", "target_backbone"):
                if getattr(self.cross_model, key) not in self.backbones:
                    raise ConfigError(f"cross_model.{key}", f"backbone {getattr(self.cross_model, key)!r} is not "
                                                            f"defined under 'backbones'")
            for i, t in enumerate(self.cross_model.held_out):
                if t not in self.trained_tasks:
                    raise ConfigError(f"cross_model.held_out[{i}]", f"task {t!r} is neither a source nor a target")

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
        return dataclasses.asdict(self)

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
    def from_dict(cls, raw: dict) -> "StudyConfig":
        return _build(cls, raw, "")


def default_cache_dir() -> Path:
    """Downloads and converted models live here, outside results/: $PROMPTGRID_CACHE or ~/.cache/promptgrid."""
    return Path(os.environ.get("PROMPTGRID_CACHE", Path.home() / ".cache" / "promptgrid"))


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


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


_NESTED = {"prompt": PromptConfig, "training": TrainingConfig, "transfer": TransferConfig,
           "metrics": MetricsConfig, "analysis": AnalysisConfig, "jobs": JobsConfig, "panda": PandaConfig,
           "spot_topk": SpotConfig, "cross_model": CrossModelConfig}


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
        if name in _NESTED and cls in (StudyConfig, TransferConfig):
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
        if name in ("sources", "targets", "text_fields", "names", "methods"):
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

    schema = yaml.safe_load(Path(schema_path).read_text())
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
