"""Zero-shot relative performance heatmap: source prompt's score over the target's own, per pair.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import pandas as pd

from promptgrid.figures.base import DIVERGING_CMAP, JINJA_BACKBONE, families, figure_labels, require, select, styled
from promptgrid.registry import FIGURES, FigureSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def relative_performance_heatmap(transfer: pd.DataFrame, families: Mapping[str, str], backbone: str) -> Figure:
    """Zero-shot transfer: seed-mean relative performance score(P_s on t) / score(P_t on t), in %.

    Diverging colours centred on 100 % (the source prompt does as well as the target's own).
    """
    from promptgrid.figures import style

    require(transfer, ["backbone", "method", "source", "target", "relative_performance"], "transfer")
    df = select(transfer, "transfer", backbone=backbone, method="zeroshot")
    df = df.assign(rel_pct=100.0 * df["relative_performance"])
    matrix = df.pivot_table(index="source", columns="target", values="rel_pct", aggfunc="mean", dropna=False)
    return style.task_heatmap(matrix, families, title=f"Zero-shot relative performance on {backbone}",
                         cbar_label="relative performance, score(P_s on t) / score(P_t on t) (%)", fmt=".0f",
                         cmap=DIVERGING_CMAP, center=100.0)


def _caption(cfg, variant) -> str:
    return ("Zero-shot prompt transfer on backbone " + JINJA_BACKBONE + " (Su et al. 2022): each cell is the "
            "source prompt evaluated unchanged on the target, as a percentage of the target's own prompt, "
            "score(P_s on t) / score(P_t on t) x 100, averaged over seeds. Rows are source tasks grouped by task "
            "family and columns are targets. At 100 % (white) the source prompt does as well as the target's own "
            "prompt; blue cells are above, red cells below.")


FIGURES.add(FigureSpec(
    name="relative_performance", tables=("transfer",), category="Zero-shot transfer", order=2,
    variants=lambda cfg: [None] if "zeroshot" in cfg.transfer.methods else [],
    draw=lambda tables, cfg, backbone, _: relative_performance_heatmap(tables["transfer"], families(cfg), backbone),
    caption=_caption, labels=lambda cfg, _: figure_labels("relative performance", method="zeroshot")))
