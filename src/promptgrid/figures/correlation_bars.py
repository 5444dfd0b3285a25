"""Correlation bars: how well each similarity metric predicts the outcome, against the comparators that know
only the source, only the family, or nothing, and against the learned ranking (two-way jackknife-t CI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from promptgrid.figures.base import (
    JINJA_BACKBONE,
    figure_labels,
    outcome_words,
    per_source_in,
    require,
    select,
    styled,
)
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, METHODS, FigureSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the correlation table's ``kind`` column: similarity metrics, analysis-stage comparators, the learned ranking.
#: Bars come in this order; a table without the column (written before #24) holds metrics only.
KINDS = ("metric", "learned", "comparator")
#: the comparator a metric must beat: it knows only the source's mean outcome on the other targets
SOURCE_ONLY = "source_only"
# comparators in a fixed order (the most informative first), any others after them by name
_COMPARATOR_ORDER = {SOURCE_ONLY: 0, "family_only": 1, "random": 2}
_VALUE_COL = {"spearman": "spearman_rho", "pearson": "pearson_r", "kendall": "kendall_tau"}
_SYMBOL = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τ"}


def _ordered(pooled: pd.DataFrame, value_col: str) -> pd.DataFrame:
    """Pooled rows in bar order: metrics from the highest value, then the learned ranking, then the comparators
    (source-only, family-only, random, others by name). One row per predictor."""

    rank = pooled["kind"].map({k: i for i, k in enumerate(KINDS)}).fillna(len(KINDS))
    # within metrics and learned: highest value first; within comparators: the fixed order
    within = np.where(pooled["kind"] == "comparator",
                      pooled["metric"].map(_COMPARATOR_ORDER).fillna(len(_COMPARATOR_ORDER)).to_numpy(float),
                      -pooled[value_col].fillna(-np.inf).to_numpy(float))
    keyed = pooled.assign(_rank=rank.to_numpy(float), _within=within)
    return keyed.sort_values(["_rank", "_within", "metric"], kind="stable").drop(columns=["_rank", "_within"])


@styled
def correlation_bars(correlation: pd.DataFrame, backbone: str, method: str, stat: str = "spearman") -> Figure:
    """Bars of each predictor's pooled within-target correlation with the outcome, 95 % CI as error bars.

    ``stat`` is ``spearman`` (default), ``pearson`` or ``kendall`` (columns ``<stat>_rho|_r|_tau``,
    ``<stat>_ci_low/high``, ``<stat>_p``, and since #24 ``<stat>_p_maxt``). Bars are the rows with
    ``target == "pooled"``: the similarity metrics (``kind == "metric"``) from the highest value, then the
    learned ranking (``kind == "learned"``, hatched) and the comparators (``kind == "comparator"``, grey,
    hatched), behind a dotted separator. A table without ``kind`` draws every row as a metric. A dashed line
    at the ``source_only`` comparator's value shows which metrics beat knowing only the source. Per-target
    values (other rows) are overlaid as points; ``*`` marks a family-adjusted (Westfall-Young maxT)
    p < 0.05, or the raw p where the table has no ``<stat>_p_maxt`` column (the legend says which).
    """
    import seaborn as sns
    from matplotlib.container import BarContainer
    from matplotlib.lines import Line2D

    from promptgrid.figures import style

    value_col = _VALUE_COL.get(stat)
    if value_col is None:
        raise ValueError(f"stat must be spearman, pearson or kendall, got {stat!r}")
    lo_col, hi_col = f"{stat}_ci_low", f"{stat}_ci_high"
    require(correlation, ["backbone", "method", "metric", "target", value_col, lo_col, hi_col], "correlation")
    df = select(correlation, "correlation", backbone=backbone, method=method)
    if "kind" not in df.columns:  # a table written before #24: every row is a similarity metric
        df = df.assign(kind="metric")
    pooled = df[df["target"] == "pooled"].drop_duplicates("metric")
    if pooled.empty:
        raise ValueError(f"correlation table: no target == 'pooled' rows for backbone={backbone!r}, "
                         f"method={method!r} (targets present: {sorted(map(str, df['target'].unique()))})")
    pooled = _ordered(pooled, value_col)
    order = list(pooled["metric"])
    kinds = pooled["kind"].to_numpy()
    symbol = _SYMBOL[stat]
    # the `*`: family-adjusted p where the table has it (#24), else the raw p, and the legend says so
    adjusted = f"{stat}_p_maxt" in pooled.columns
    p_col = f"{stat}_p_maxt" if adjusted else f"{stat}_p"

    fig = style.new_figure(min(style.MAX_FIGURE_WIDTH_IN, max(5.0, 1.8 + 0.75 * len(order))), 5.0)
    ax = fig.add_subplot()
    x = np.arange(len(order), dtype=float)
    y = pooled[value_col].to_numpy(float)
    palette = sns.color_palette("colorblind")
    looks = {  # kind -> (legend label, face colour, hatch): comparators grey so metrics stand out
        "metric": ("similarity metric", palette[0], None),
        "learned": ("learned ranking", palette[2], "//"),
        "comparator": ("comparator (no similarity)", (0.78, 0.78, 0.78), "xx"),
    }
    for kind in [*KINDS, *sorted(set(kinds) - set(KINDS))]:  # one container per kind, in bar order
        here = kinds == kind
        if not here.any():
            continue
        label, colour, hatch = looks.get(kind, (str(kind), (0.6, 0.6, 0.6), ".."))
        ax.bar(x[here], np.nan_to_num(y[here]), width=0.7, color=colour, hatch=hatch, edgecolor="0.25",
               linewidth=0.6, label=label, gid=kind)
    n_metrics = int((kinds == "metric").sum())
    if 0 < n_metrics < len(order):  # metrics left of the line, the rest right of it
        ax.axvline(n_metrics - 0.5, color="0.4", linestyle=":", linewidth=1.0)

    lo = pooled[lo_col].to_numpy(float)
    hi = pooled[hi_col].to_numpy(float)
    has_ci = ~(np.isnan(lo) | np.isnan(hi) | np.isnan(y))
    if has_ci.any():
        err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])[:, has_ci]
        ci_label = ("95 % CI, jackknife-t (targets + sources)" if adjusted or "kind" in correlation
                    else "95 % CI (as stored)")
        ax.errorbar(x[has_ci], y[has_ci], yerr=err, fmt="none", ecolor="black", elinewidth=1.2, capsize=4,
                    label=ci_label)
    per_target = df[df["target"] != "pooled"]
    per_target = per_target[per_target["metric"].isin(order)].dropna(subset=[value_col])
    if not per_target.empty:
        # deterministic horizontal spread, so reruns give identical figures
        pos = {m: i for i, m in enumerate(order)}
        px, py = [], []
        for m, grp in per_target.groupby("metric", sort=False):
            offs = np.linspace(-0.22, 0.22, len(grp)) if len(grp) > 1 else np.zeros(1)
            px.extend(pos[m] + offs)
            py.extend(grp.sort_values("target")[value_col])
        ax.scatter(px, py, s=14, color="0.15", alpha=0.7, zorder=3, label="per target")
    src_only = pooled[(pooled["metric"] == SOURCE_ONLY) & (pooled["kind"] == "comparator")]
    if not src_only.empty and np.isfinite(src_only[value_col].iloc[0]):
        ref = float(src_only[value_col].iloc[0])
        ax.axhline(ref, color=palette[3], linestyle="--", linewidth=1.4, zorder=2.5, gid=SOURCE_ONLY,
                   label=f"source-only {symbol} = {ref:.2f} (beat it)")
    starred = 0
    if p_col in pooled.columns:
        for xi, yi, p, h in zip(x, y, pooled[p_col].to_numpy(float), hi):
            if not np.isnan(p) and p < 0.05:
                top = h if not np.isnan(h) else yi
                ax.text(xi, max(top, yi, 0) + 0.04, "*", ha="center", va="bottom", fontsize="large")
                starred += 1
    handles, labels = ax.get_legend_handles_labels()
    bars_first = sorted(range(len(handles)), key=lambda i: not isinstance(handles[i], BarContainer))
    handles, labels = [handles[i] for i in bars_first], [labels[i] for i in bars_first]
    if starred or p_col in pooled.columns:
        handles.append(Line2D([], [], linestyle="none", marker="$*$", color="black", markersize=8))
        labels.append("p < 0.05, maxT-adjusted" if adjusted else "p < 0.05, NOT adjusted (old table)")
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(-1.05, 1.12)
    ax.set_xticks(x, order)
    outcome = outcome_words(method)
    ax.set_xlabel("predictor (similarity metrics, then learned ranking and comparators)"
                  if n_metrics < len(order) else "similarity metric")
    ax.set_ylabel(f"{symbol} with {outcome} (unitless, −1…1)")
    ax.set_title(style.wrap(f"How well each metric predicts {method} transfer on {backbone}", fig))
    ax.tick_params(axis="x", labelrotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    # below the axes (constrained layout makes room): with ~20 bars and points anywhere in -1..1 no corner is free
    fig.legend(handles, labels, loc="outside lower center", ncol=3 if fig.get_figwidth() >= 8 else 2,
               fontsize="small", frameon=False)
    return fig


def _caption(cfg, method: str) -> str:
    outcome = outcome_words(method, f"seed-mean {cfg.analysis.outcome}")
    return (f"How well each similarity metric predicts the outcome of **{method}** ({METHODS.require(method).summary}) "
            "on backbone " + JINJA_BACKBONE + ": bars are the pooled within-target Spearman rho (unitless, -1 to 1: "
            f"each target's sources ranked against each other, self-pairs left out) with the {outcome}; the "
            "similarity metrics come first, sorted from the best. Right of the dotted line, hatched, are the "
            "learned ranking (a ridge ranking fitted on the metrics and comparators, leave-one-target-out) and the "
            "grey comparators, which use no similarity at all: **source_only** ranks sources by their mean outcome "
            "on the other targets (leave-one-target-out), **family_only** by whether the source shares the target's "
            "task family, **random** by a seeded random score. The dashed line is the source-only rho: a metric "
            "below it does no better than knowing which sources are generally useful. Error bars are 95 % "
            "confidence intervals from a two-way jackknife-t (targets and sources both treated as samples, on "
            "Fisher's z scale), so they speak for other targets and other sources; grey points are the per-target "
            "rho. ``*`` marks p < 0.05 after Westfall-Young maxT adjustment over every predictor shown (joint "
            "source permutations within targets); a table written before that adjustment existed shows the raw p "
            "and the legend says so. A CI that crosses the zero line means the predictor is not reliably better "
            "than chance.")


FIGURES.add(FigureSpec(
    name="correlation_bars", tables=("correlation",), category="Metrics vs gains", order=5, variants=per_source_in,
    draw=lambda tables, cfg, backbone, method: correlation_bars(tables["correlation"], backbone, method),
    caption=_caption, labels=lambda cfg, method: figure_labels("correlation bars", method=method)))
