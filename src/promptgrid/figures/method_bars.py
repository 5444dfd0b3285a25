"""Method bars: each method's test score per target beside the target's own prompt.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from promptgrid.figures.base import (
    JINJA_BACKBONE,
    best_sources,
    figure_labels,
    method_sort_key,
    require,
    row_label,
    select,
    styled,
)
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, METHODS, FigureSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def method_bars(transfer: pd.DataFrame, baselines: Optional[pd.DataFrame], backbone: str,
                methods: Optional[Sequence[str]] = None, best_source: bool = False,
                include_mean: bool = True) -> Figure:
    """Per-target test scores of prompt tuning (baseline) and each transfer method, error bars over seeds.

    ``baselines``: the target's own prompt-tuning scores, columns backbone, target (or task), seed,
    score; ``None`` takes them from ``transfer.baseline_score``. ``methods`` default: every method in
    ``transfer`` that its spec judges by a gain (methods judged on relative performance score prompts
    unchanged: their own heatmap shows them), in registry order. Per-source methods are averaged over
    sources per seed; ``best_source`` adds "<method> (best source)" bars, the source with the highest
    seed-mean score per target; a method that is not per source gets one bar per mixture row. Bars are seed means,
    error bars ±1 SD over seeds; the "mean" group averages the targets per seed (PANDA's tables).
    """
    import seaborn as sns

    from promptgrid.figures import style

    require(transfer, ["backbone", "method", "source", "target", "seed", "score"], "transfer")
    tr = select(transfer, "transfer", backbone=backbone)
    if baselines is None:
        require(transfer, ["baseline_score"], "transfer")
        base = tr.groupby(["target", "seed"], as_index=False)["baseline_score"].mean()
        base = base.rename(columns={"baseline_score": "score"})
    else:
        bl = baselines.rename(columns={"task": "target"}) if "target" not in baselines else baselines
        require(bl, ["target", "seed", "score"], "baselines")
        if "backbone" in bl:
            bl = select(bl, "baselines", backbone=backbone)
        base = bl.groupby(["target", "seed"], as_index=False)["score"].mean()
    parts = [base.assign(bar="baseline")]
    if methods is None:
        methods = [spec.name for spec in METHODS.ordered() if not spec.relative]
    present = [m for m in methods if m in set(tr["method"])]
    for method in present:
        grp = tr[tr["method"] == method]
        if not METHODS.require(method).per_source:
            for src, sub in grp.groupby("source"):
                parts.append(sub.groupby(["target", "seed"], as_index=False)["score"].mean()
                             .assign(bar=row_label(method, src)))
            continue
        parts.append(grp.groupby(["target", "seed"], as_index=False)["score"].mean().assign(bar=method))
        if best_source:
            parts.append(best_sources(grp, "score", ["target"])
                         .groupby(["target", "seed"], as_index=False)["score"].mean()
                         .assign(bar=f"{method} (best source)"))
    data = pd.concat(parts, ignore_index=True)
    if data.empty:
        raise ValueError(f"no baseline or transfer scores for backbone={backbone!r}")
    targets = sorted(data["target"].unique())
    if include_mean and len(targets) > 1:
        # average over targets within a seed, so the error bar is still a spread over seeds
        complete = data.groupby(["bar", "seed"])["target"].transform("nunique") == len(targets)
        mean = data[complete].groupby(["bar", "seed"], as_index=False)["score"].mean().assign(target="mean")
        data = pd.concat([data, mean], ignore_index=True)
        targets = targets + (["mean"] if not mean.empty else [])
    bars = sorted(data["bar"].unique(), key=method_sort_key)
    palette = style.method_palette(bars)

    # 0.35 in per bar up to MAX_FIGURE_WIDTH_IN (1.5 in go to the axis and the legend on the right)
    width = min(style.MAX_FIGURE_WIDTH_IN, max(5.5, 1.5 + 0.35 * len(bars) * len(targets)))
    fig = style.new_figure(width, 4.3)
    ax = fig.add_subplot()
    sns.barplot(data=data, x="target", y="score", hue="bar", order=targets, hue_order=bars, palette=palette,
                errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0}, ax=ax)
    lo = data.groupby(["target", "bar"])["score"].mean().min()
    ax.set_ylim(max(0.0, np.floor((lo - 10) / 5) * 5), None)  # zoom on the differences, never below 0
    if max(map(len, targets)) * 0.08 > (width - 1.5) / len(targets):  # names wider than their group (~0.08 in/char)
        ax.tick_params(axis="x", labelrotation=30)
        for lab in ax.get_xticklabels():
            lab.set_horizontalalignment("right")
            lab.set_rotation_mode("anchor")
    ax.set_xlabel("target task")
    ax.set_ylabel("test score (score points, 0–100)")
    ax.set_title(style.wrap(f"Prompt tuning vs. transfer methods on {backbone} (seed mean ± SD)", fig, 0.85))
    ax.legend(title="method", fontsize="small", title_fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    return fig


def _caption(cfg, variant) -> str:
    return ("Test scores (score points, 0-100) of prompt tuning from scratch (baseline, grey) and of each transfer "
            "method on backbone " + JINJA_BACKBONE + ", per target and, in the last group, averaged over targets "
            "as in PANDA's tables. Methods with one run per source are averaged over all sources; bars are seed "
            "means with +-1 standard deviation over seeds. The y axis does not start at 0, so that differences show.")


FIGURES.add(FigureSpec(
    name="method_bars", tables=("transfer",), category="Gains", order=8, variants=lambda cfg: [None],
    draw=lambda tables, cfg, backbone, _: method_bars(tables["transfer"], None, backbone),
    caption=_caption, labels=lambda cfg, _: figure_labels("method bars")))
