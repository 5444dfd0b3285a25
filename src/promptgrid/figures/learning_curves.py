"""Learning curves: dev score over training steps per method, for one target.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from promptgrid.figures.base import (
    BASELINE,
    JINJA_BACKBONE,
    figure_labels,
    method_sort_key,
    per_source_methods,
    require,
    row_label,
    select,
    styled,
)
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, FigureSpec

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def learning_curves(curves: pd.DataFrame, backbone: str, target: str, sources: str = "mean") -> Figure:
    """Dev score vs. training step on ``target``: the baseline and each transfer method.

    Lines are means over seeds, bands ±1 SD over seeds. Per-source methods (their spec's ``per_source``):
    ``sources="mean"`` (default) averages them over sources at each (seed, step) before the seed
    band; ``sources="best"`` keeps the source whose runs end with the highest seed-mean best dev
    score. A method that is not per source gets one line per mixture row. A dotted line marks the baseline's best dev score (what
    ``steps_to_baseline`` counts the steps to).
    """
    import seaborn as sns

    from promptgrid.figures import style

    if sources not in ("mean", "best"):
        raise ValueError(f"sources must be 'mean' or 'best', got {sources!r}")
    require(curves, ["backbone", "task", "source", "method", "seed", "step", "dev_score"], "curves")
    df = select(curves, "curves", backbone=backbone, task=target)
    parts = []
    for method, grp in df.groupby("method", sort=False):
        if method in per_source_methods():
            if sources == "best":
                peak = grp.groupby(["source", "seed"], as_index=False)["dev_score"].max()
                best = peak.groupby("source")["dev_score"].mean()
                src = best.sort_values(ascending=False, kind="stable").index[0]
                grp = grp[grp["source"] == src]
                label = f"{method} (best source: {src})"
            else:
                label = f"{method} (mean of {grp['source'].nunique()} sources)"
            agg = grp.groupby(["seed", "step"], as_index=False)["dev_score"].mean().assign(line=label)
            parts.append(agg)
        elif method == BASELINE:
            parts.append(grp.groupby(["seed", "step"], as_index=False)["dev_score"].mean().assign(line=method))
        else:  # mixture rows: one line each
            for src, sub in grp.groupby("source"):
                parts.append(sub[["seed", "step", "dev_score"]].assign(line=row_label(method, src)))
    data = pd.concat(parts, ignore_index=True)
    lines = sorted(data["line"].unique(), key=method_sort_key)
    palette = style.method_palette(lines)

    fig = style.new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for line in lines:  # one call per run kind, so each line (and its band) carries its label
        sns.lineplot(data=data[data["line"] == line], x="step", y="dev_score", color=palette[line],
                     errorbar="sd", ax=ax, linewidth=1.6, label=line)
    base = data[data["line"] == "baseline"]
    if not base.empty:
        best = base.groupby("seed")["dev_score"].max().mean()
        ax.axhline(best, color="0.1", linestyle=":", linewidth=1.0, label="baseline best (seed mean)")
    ax.set_xlabel("training step")
    ax.set_ylabel("dev score (score points, 0–100)")
    ax.set_title(style.wrap(f"Learning curves on {target} ({backbone})", fig))
    ax.legend(title="run (band: ±1 SD over seeds)", fontsize="small", title_fontsize="small", loc="lower right")
    return fig


def _caption(cfg, target: str) -> str:
    return (f"Dev score (score points, 0-100) against training step on target **{target}**, backbone "
            + JINJA_BACKBONE + ", for the target's own prompt (baseline) and each transfer method. Lines are seed "
            "means and bands +-1 standard deviation over seeds; methods with one run per source are first averaged "
            "over all sources at each step (the legend gives their number). The dotted line is the baseline's best "
            "dev score: where a transfer curve crosses it is the run's ``steps_to_baseline``.")


FIGURES.add(FigureSpec(
    name="learning_curves", tables=("curves",), category="Learning curves", order=7,
    variants=lambda cfg: list(cfg.targets),
    draw=lambda tables, cfg, backbone, target: learning_curves(tables["curves"], backbone, target),
    caption=_caption, labels=lambda cfg, target: figure_labels("learning curves", target=target)))
