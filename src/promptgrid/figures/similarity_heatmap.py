"""Similarity heatmap: one similarity metric over all (source, target) pairs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from promptgrid.figures.base import (
    DIVERGING_CMAP,
    JINJA_BACKBONE,
    SEQUENTIAL_CMAP,
    families,
    figure_labels,
    require,
    select,
    styled,
)
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, SIMILARITIES, FigureSpec

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def similarity_heatmap(similarity: pd.DataFrame, families: Mapping[str, str], backbone: str, metric: str) -> Figure:
    """Sources × targets of one similarity metric (mean over seed pairs; unitless).

    Sequential colours, or diverging around 0 when the metric takes negative values (cosines).
    """
    from promptgrid.figures import style

    require(similarity, ["backbone", "metric", "source", "target", "value"], "similarity")
    df = select(similarity, "similarity", backbone=backbone, metric=metric)
    matrix = df.pivot_table(index="source", columns="target", values="value", aggfunc="mean", dropna=False)
    negative = bool((matrix.to_numpy() < 0).any())
    return style.task_heatmap(matrix, families, title=f"Prompt similarity '{metric}' on {backbone}",
                         cbar_label=f"similarity {metric} (unitless)", fmt=".2f",
                         cmap=DIVERGING_CMAP if negative else SEQUENTIAL_CMAP, center=0.0 if negative else None)


def _variants(cfg) -> list:
    """Every configured metric, and the early-checkpoint version of each prompt-only one (SPoT)."""
    prompt_only = [m for m in cfg.metrics.names if SIMILARITIES[m].scope == "prompt"]
    return list(cfg.metrics.names) + [f"early_{m}" for m in prompt_only]


def _caption(cfg, metric: str) -> str:
    name = metric.removeprefix("early_")
    early = " from the prompts' early checkpoints (SPoT's early task embeddings)" if name != metric else ""
    return (f"Similarity **{metric}** ({SIMILARITIES.require(name).summary}){early} between source and target on "
            "backbone " + JINJA_BACKBONE + ", unitless and averaged over seed pairs. Rows are source tasks and "
            "columns targets, both grouped by task family. Darker cells are more similar; metrics that can be "
            "negative (cosines) use a blue-red scale centred on 0. A metric that predicts transfer shows the same "
            "pattern as the gain heatmaps of this backbone.")


FIGURES.add(FigureSpec(
    name="similarity_heatmap", tables=("similarity",), category="Similarity", order=3, variants=_variants,
    draw=lambda tables, cfg, backbone, metric: similarity_heatmap(tables["similarity"], families(cfg), backbone,
                                                                  metric),
    caption=_caption, labels=lambda cfg, metric: figure_labels("similarity heatmap", metric=metric)))
