"""Relative performance heatmap (Su et al.'s zero-shot transferability): a source prompt's score over the target's
own, per pair, for every method whose spec is judged on relative performance.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from promptgrid.figures.base import (
    DIVERGING_CMAP,
    JINJA_BACKBONE,
    families,
    figure_labels,
    relative_methods,
    require,
    select,
    styled,
)
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, METHODS, FigureSpec

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def relative_performance_heatmap(transfer: pd.DataFrame, families: Mapping[str, str], backbone: str,
                                 method: str) -> Figure:
    """Sources x targets of ``method``'s seed-mean relative performance score(P_s on t) / score(P_t on t), in %.

    Diverging colours centred on 100 % (the source prompt does as well as the target's own).
    """
    from promptgrid.figures import style

    require(transfer, ["backbone", "method", "source", "target", "relative_performance"], "transfer")
    df = select(transfer, "transfer", backbone=backbone, method=method)
    df = df.assign(rel_pct=100.0 * df["relative_performance"])
    matrix = df.pivot_table(index="source", columns="target", values="rel_pct", aggfunc="mean", dropna=False)
    return style.task_heatmap(matrix, families, title=f"Relative performance of {method} on {backbone}",
                         cbar_label="relative performance, score(P_s on t) / score(P_t on t) (%)", fmt=".0f",
                         cmap=DIVERGING_CMAP, center=100.0)


def _caption(cfg, method: str) -> str:
    return (f"Relative performance of **{method}** ({METHODS.require(method).summary}) on backbone "
            + JINJA_BACKBONE + " (Su et al. 2022's transferability): each cell is the target's test score "
            "under the method, as a percentage of the target's own prompt, "
            "score(P_s on t) / score(P_t on t) x 100, averaged over seeds. Rows are source tasks grouped by task "
            "family and columns are targets. At 100 % (white) the source prompt does as well as the target's own "
            "prompt; blue cells are above, red cells below.")


FIGURES.add(FigureSpec(
    name="relative_performance", tables=("transfer",), category="Relative performance", order=2,
    variants=relative_methods,
    draw=lambda tables, cfg, backbone, method: relative_performance_heatmap(tables["transfer"], families(cfg),
                                                                          backbone, method),
    caption=_caption, labels=lambda cfg, method: figure_labels("relative performance", method=method)))
