"""Metric scatter: a similarity against the measured outcome, one point per (source, target) pair.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from promptgrid.figures.base import (
    JINJA_BACKBONE,
    figure_labels,
    outcome,
    per_source_in,
    require,
    select,
    split_variant,
    styled,
    variant_of,
)
from promptgrid.lazy import lazy_module
from promptgrid.pearson import pearson
from promptgrid.registry import FIGURES, METHODS, SIMILARITIES, FigureSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def metric_scatter(similarity: pd.DataFrame, transfer: pd.DataFrame, backbone: str, metric: str,
                   method: str, max_cols: int = 3) -> Figure:
    """One panel per target: metric value (x) vs. seed-mean gain of ``method`` (y), as SPoT Fig. 5.

    For a method judged on relative performance (its spec's outcome) y is that, in %. Self-pairs are left out. Each panel has a least-
    squares line with a 95 % bootstrap band (seeded) and its Pearson r over sources in the title.
    Panels wrap after ``max_cols`` columns (2.8 in each), so the figure stays legible at report width.
    """
    import seaborn as sns

    from promptgrid.figures import style

    require(similarity, ["backbone", "metric", "source", "target", "value"], "similarity")
    col, ylabel, scale, reference = outcome(method)
    require(transfer, ["backbone", "method", "source", "target", col], "transfer")
    sim = select(similarity, "similarity", backbone=backbone, metric=metric)
    tr = select(transfer, "transfer", backbone=backbone, method=method)
    tr = tr.groupby(["source", "target"], as_index=False)[col].mean()
    sim = sim.groupby(["source", "target"], as_index=False)["value"].mean()
    df = sim.merge(tr, on=["source", "target"], how="inner")
    df = df[df["source"] != df["target"]].dropna(subset=["value", col])
    if df.empty:
        raise ValueError(f"no (source, target) pair other than self-pairs has both similarity metric={metric!r} "
                         f"and transfer method={method!r} on backbone={backbone!r}")
    df = df.assign(y=scale * df[col])

    targets = sorted(df["target"].unique())
    n_cols = min(len(targets), max_cols)
    n_rows = -(-len(targets) // n_cols)
    fig = style.new_figure(min(style.MAX_FIGURE_WIDTH_IN, 2.8 * n_cols), 2.9 * n_rows + 0.5)
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=False, sharey=False)
    for idx, ax in enumerate(axes.ravel()):
        if idx >= len(targets):
            fig.delaxes(ax)  # the figure holds exactly one axes per target
            continue
        t = targets[idx]
        sub = df[df["target"] == t]
        can_fit = len(sub) >= 2 and sub["value"].nunique() > 1
        sns.regplot(data=sub, x="value", y="y", ax=ax, fit_reg=can_fit, ci=95 if len(sub) >= 3 else None,
                    n_boot=300, seed=0, scatter_kws={"s": 22, "alpha": 0.85}, line_kws={"linewidth": 1.4})
        r = pearson(sub["value"].to_numpy(float), sub["y"].to_numpy(float)) if len(sub) >= 3 else float("nan")
        r_txt = "n/a" if np.isnan(r) else f"{r:.2f}"
        ax.set_title(f"{t}\nPearson r = {r_txt}, n = {len(sub)}", fontsize="medium")
        ax.set_xlabel(f"{metric} similarity (unitless)")
        ax.set_ylabel(ylabel)
        ax.axhline(reference, color="0.5", linewidth=0.8, linestyle="--")  # as good as the target's own prompt
    fig.suptitle(style.wrap(f"Similarity '{metric}' vs. {method} transfer outcome per target on {backbone}", fig),
                 fontweight="bold")
    return fig


def _caption(cfg, variant: str) -> str:
    method, metric = split_variant(cfg, variant)
    y = ("relative performance in % (the dashed line at 100 % is as good as the target's own prompt)"
         if METHODS.require(method).relative else "the seed-mean gain over the target's own prompt")
    return (f"Similarity **{metric}** ({SIMILARITIES.require(metric).summary}) against the outcome of **{method}** "
            f"({METHODS.require(method).summary}) on backbone " + JINJA_BACKBONE + " (SPoT Fig. 5): one panel per "
            f"target, one point per source, self-pairs left out. The y axis is {y}. Each panel has a "
            "least-squares line with a 95 % bootstrap band, and its title gives the Pearson r over that target's "
            "sources and their number n. A steep, tight cloud means ranking sources by this metric would pick "
            "good sources for that target.")


def _draw(tables, cfg, backbone, variant):
    method, metric = split_variant(cfg, variant)
    return metric_scatter(tables["similarity"], tables["transfer"], backbone, metric, method)


FIGURES.add(FigureSpec(
    name="metric_scatter", tables=("similarity", "transfer"), category="Metrics vs gains", order=4,
    variants=lambda cfg: [variant_of(m, metric) for m in per_source_in(cfg) for metric in cfg.metrics.names],
    draw=_draw, caption=_caption,
    labels=lambda cfg, v: figure_labels("metric scatter", method=split_variant(cfg, v)[0],
                                        metric=split_variant(cfg, v)[1])))
