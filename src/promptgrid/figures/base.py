"""What every figure kind shares without drawing anything: table checks, the order of tasks, methods and
top-k rows, the style decorator. Import-light (pandas only), so registering a figure kind stays cheap;
:mod:`promptgrid.figures.style` holds the matplotlib / seaborn side.
"""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from promptgrid.errors import InputError
from promptgrid.lazy import lazy_module
from promptgrid.registry import METHODS

np = lazy_module("numpy")
pd = lazy_module("pandas")

if TYPE_CHECKING:  # torch is imported inside the functions that need it: registering stays torch-free
    pass


# the heatmap colour schemes: gains diverge around 0, relative performance around 100 %
DIVERGING_CMAP = "RdBu"
SEQUENTIAL_CMAP = "mako_r"
# rows that are no configured task (mixture rows of a method that is not per source) go last, under this name
NO_FAMILY = "(no family)"
# the target's own prompt: first in legends and bars, always grey
BASELINE, BASELINE_COLOUR = "baseline", (0.35, 0.35, 0.35)


def method_order() -> list:
    """Legend and bar order: the baseline, then every registered method by its ``order``."""
    return [BASELINE] + [spec.name for spec in METHODS.ordered()]


def per_source_methods() -> list:
    """Methods with one run per source: their curves and bars are summarised over sources."""
    return [spec.name for spec in METHODS.ordered() if spec.per_source]


def families(cfg) -> dict:
    """task -> family, in config order."""
    return {name: t.family for name, t in cfg.tasks.items()}


def outcome(method: str) -> tuple[str, str, float, float]:
    """How ``method``'s spec says it is judged, for an axis: (transfer column, axis label, scale to the
    axis's unit, the value of "as good as the target's own prompt" in that unit): the gain in score points
    (reference 0), or relative performance in % (reference 100)."""
    if METHODS.require(method).relative:
        return "relative_performance", "relative performance (%)", 100.0, 100.0
    return "gain", "gain (score points)", 1.0, 0.0


def outcome_words(method: str, gain: str = "gain") -> str:
    """The outcome ``method`` is judged on, in words for captions and labels."""
    return "relative performance" if METHODS.require(method).relative else gain


def relative_methods(cfg) -> list:
    """The study's methods judged on relative performance (zero-shot transfer and its kind)."""
    return [m for m in cfg.transfer.methods if METHODS.require(m).relative]


def row_label(method: str, source: str) -> str:
    """A bar's or line's label for one mixture row of a method that is not per source: 'method (row)'."""
    return f"{method} ({source})"


def require(df: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{table} table lacks required column(s) {missing}; it has {list(df.columns)}")


def select(df: pd.DataFrame, table: str, **filters) -> pd.DataFrame:
    """Rows of ``df`` where every ``column == value``; a filter matching nothing raises, naming it."""

    require(df, filters, table)
    mask = np.ones(len(df), dtype=bool)
    for col, val in filters.items():
        mask &= (df[col] == val).to_numpy()
    out = df.loc[mask]
    if out.empty:
        what = ", ".join(f"{k}={v!r}" for k, v in filters.items())
        have = "; ".join(f"{k} values present: {sorted(map(str, df[k].dropna().unique()))}" for k in filters)
        raise InputError(f"{table} table: no rows match {what} ({have or 'table is empty'})")
    return out


def natural_key(name) -> tuple:
    """Sort key that reads digit runs as numbers, so mixture rows sort as people count ('top2' before 'top10')."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name)))


def family_order(tasks: Iterable[str], families: Mapping[str, str]) -> list[tuple[str, str]]:
    """(task, family) sorted by family, families and tasks in the config's (dict) order.

    Rows absent from ``families`` (mixture rows such as ``top{k}``) come last under NO_FAMILY, in
    natural order (``top2`` before ``top10``).
    """
    fam_rank = {}
    for fam in families.values():
        fam_rank.setdefault(fam, len(fam_rank))
    task_rank = {t: i for i, t in enumerate(families)}

    def key(task):
        if task in families:
            return (0, fam_rank[families[task]], task_rank[task], ())
        return (1, 0, 0, natural_key(task))

    return [(t, families.get(t, NO_FAMILY)) for t in sorted(set(tasks), key=key)]


@functools.lru_cache(maxsize=1)
def style_rc() -> dict:
    """The look of every figure: seaborn's whitegrid in the paper context, fonts bundled with matplotlib."""
    import seaborn as sns

    return {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("paper", font_scale=1.1),
        "font.family": "DejaVu Sans",  # bundled with matplotlib: same glyphs on every machine
        "axes.titleweight": "bold",
        "figure.dpi": 100,
    }


def styled(func: Callable) -> Callable:
    """Draw under a fixed style, without touching the caller's global rcParams."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(style_rc()):
            return func(*args, **kwargs)

    return wrapper


def method_sort_key(label: str):
    base = label.split(" ")[0]
    order = method_order()
    rank = order.index(base) if base in order else len(order)
    row = label.split("(")[-1].rstrip(")") if "(" in label else ""
    return (rank, natural_key(row), label)


def best_sources(df: pd.DataFrame, score_col: str, group: Sequence[str]) -> pd.DataFrame:
    """Keep, per ``group``, the source with the highest seed-mean ``score_col``."""
    means = df.groupby([*group, "source"], as_index=False)[score_col].mean()
    best = means.sort_values([*group, score_col, "source"], ascending=[True] * len(group) + [False, True],
                             kind="stable").drop_duplicates(list(group))
    return df.merge(best[[*group, "source"]], on=[*group, "source"], how="inner")


# ---------------------------------------------------------------- what the report shows
#: captions are Jinja templates rendered by Snakemake's report: this names the figure job's backbone
JINJA_BACKBONE = "**{{ snakemake.wildcards.backbone }}**"


def figure_labels(kind: str, method: str = "", metric: str = "", target: str = "") -> dict:
    """The report's table columns for one figure: the same four for every figure, '-' where one does not apply."""
    return {"figure": kind, "method": method or "-", "metric": metric or "-", "target": target or "all"}


def per_source_in(cfg) -> list:
    """The study's methods with one row per source (the ones a similarity can be correlated with)."""
    return [m for m in cfg.transfer.methods if m in per_source_methods()]


def variant_of(method: str, metric: str) -> str:
    return f"{method}_{metric}"


def split_variant(cfg, variant: str) -> tuple:
    """(method, metric) of a ``<method>_<metric>`` variant; names may contain '_', the method is the longest
    of the study's methods that prefixes the variant."""
    method = max((m for m in cfg.transfer.methods if variant.startswith(m + "_")), key=len, default=None)
    if method is None:
        raise InputError(f"figure variant {variant!r} starts with none of the study's methods {cfg.transfer.methods}")
    return method, variant[len(method) + 1:]
