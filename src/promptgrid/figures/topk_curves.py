"""Top-k curves: the gain of the best of a metric's k top-ranked sources, against random and the oracle.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from promptgrid.figures.base import JINJA_BACKBONE, figure_labels, per_source_in, require, select, styled
from promptgrid.registry import FIGURES, METHODS, FigureSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def topk_curves(retrieval: pd.DataFrame, backbone: str, method: str, as_gain: bool = True) -> Figure:
    """Best-of-top-k vs. k per metric, with the oracle and random-choice lines, averaged over targets.

    SPoT Table 3 as a plot. ``analysis.retrieval_table`` stores best_of_topk, oracle and random as
    seed-mean gains in score points with ``baseline`` = 0; a table that stores test scores with the
    target's baseline score instead draws the same, because with ``as_gain`` (default) every value
    is drawn minus its row's ``baseline``. ``as_gain=False`` draws the stored values unchanged, with
    the baseline as a line. Oracle = best source per target; random = expected best of k random
    sources.
    """
    import seaborn as sns

    from promptgrid.figures import style

    need = ["backbone", "method", "metric", "target", "k", "best_of_topk", "oracle", "random"]
    if as_gain:
        need.append("baseline")
    require(retrieval, need, "retrieval")
    df = select(retrieval, "retrieval", backbone=backbone, method=method).copy()
    cols = ["best_of_topk", "oracle", "random"] + ([] if as_gain else (["baseline"] if "baseline" in df else []))
    if as_gain:
        for c in ("best_of_topk", "oracle", "random"):
            df[c] = df[c] - df["baseline"]
    per_metric = df.groupby(["metric", "k"], as_index=False)["best_of_topk"].mean()
    # oracle/random/baseline do not depend on the metric: average per (target, k) first, then over targets
    refs = df.groupby(["target", "k"], as_index=False)[[c for c in cols if c != "best_of_topk"]].mean()
    refs = refs.groupby("k", as_index=False).mean(numeric_only=True).sort_values("k")
    n_targets = df["target"].nunique()

    fig = style.new_figure(6.2, 4.2)
    ax = fig.add_subplot()
    metrics = sorted(per_metric["metric"].unique())
    palette = sns.color_palette("colorblind", len(metrics))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    for i, metric in enumerate(metrics):  # one call per metric, so each line carries its metric as label
        sns.lineplot(data=per_metric[per_metric["metric"] == metric], x="k", y="best_of_topk", ax=ax,
                     color=palette[i], marker=markers[i % len(markers)], errorbar=None, label=metric)
    ax.plot(refs["k"], refs["oracle"], color="black", linestyle="--", linewidth=1.6, label="oracle")
    ax.plot(refs["k"], refs["random"], color="0.45", linestyle=":", linewidth=1.8, marker=".", label="random")
    if as_gain:
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_ylabel("gain of best of top-k sources (score points)")
    else:
        if "baseline" in refs:
            ax.plot(refs["k"], refs["baseline"], color="0.3", linestyle="-.", linewidth=1.2, label="baseline")
        ax.set_ylabel("best of top-k sources, as stored (score points)")
    ax.set_xlabel("k (number of top-ranked sources tried)")
    ks = sorted(df["k"].unique())
    ax.set_xticks(ks)
    ax.set_title(style.wrap(f"Source retrieval for {method} on {backbone} (mean over {n_targets} targets)", fig))
    ax.legend(title=None, fontsize="small", loc="best")
    return fig


def _caption(cfg, method: str) -> str:
    return (f"Source retrieval for **{method}** ({METHODS.require(method).summary}) on backbone " + JINJA_BACKBONE
            + " (SPoT Table 3 as a plot): sources are ranked for each target by a similarity metric, and each "
            "coloured line is the gain (score points over the target's own prompt, averaged over targets) of the "
            "best source among the top k. The dashed oracle line is the best source overall and the dotted random "
            "line the expected best of k randomly picked sources. A useful metric stays close to the oracle at "
            "small k and well above random.")


FIGURES.add(FigureSpec(
    name="topk_curves", tables=("retrieval",), category="Metrics vs gains", order=6, variants=per_source_in,
    draw=lambda tables, cfg, backbone, method: topk_curves(tables["retrieval"], backbone, method),
    caption=_caption, labels=lambda cfg, method: figure_labels("top-k curves", method=method)))
