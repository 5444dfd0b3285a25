"""Gain heatmap: score gain over the target's own prompt, one cell per (source, target), per method.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from promptgrid.figures.base import DIVERGING_CMAP, JINJA_BACKBONE, families, figure_labels, require, select, styled
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, METHODS, FigureSpec

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def gain_heatmap(transfer: pd.DataFrame, families: Mapping[str, str], backbone: str, method: str) -> Figure:
    """Sources × targets of the seed-mean gain (score − baseline, in score points) of ``method``.

    ``transfer`` is transfer.parquet; ``families`` maps task -> family (config ``tasks.<t>.family``).
    Diverging colours centred on 0 (blue: the transfer beats the target's own prompt).
    """
    from promptgrid.figures import style

    require(transfer, ["backbone", "method", "source", "target", "seed", "gain"], "transfer")
    df = select(transfer, "transfer", backbone=backbone, method=method)
    matrix = df.pivot_table(index="source", columns="target", values="gain", aggfunc="mean", dropna=False)
    n_seeds = df.groupby(["source", "target"])["seed"].nunique()
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}–{n_seeds.max()}"
    return style.task_heatmap(matrix, families, title=f"Gain of {method} transfer on {backbone} (mean of {seeds} seeds)",
                         cbar_label="gain over the target's own prompt (score points)", fmt=".1f",
                         cmap=DIVERGING_CMAP, center=0.0)


def _caption(cfg, method: str) -> str:
    spec = METHODS.require(method)
    rows = ("Rows are source tasks grouped by task family (separator lines, family names on the right, tick labels "
            "coloured by family)" if spec.per_source else
            f"Rows are the method's mixtures of sources ({', '.join(map(str, spec.row_sources(cfg)))})")
    return (f"Transfer gain of **{method}** ({spec.summary}) on backbone "
            + JINJA_BACKBONE + ": each cell is the target's test score with the transferred prompt minus the "
            f"score of the target's own prompt (same seed), averaged over seeds, in score points. {rows} and "
            "columns are targets. Blue cells are positive transfer, red negative, the scale is symmetric around 0, "
            "and grey cells are pairs that were not run.")


FIGURES.add(FigureSpec(
    name="gain_heatmap", tables=("transfer",), category="Gains", order=1,
    variants=lambda cfg: list(cfg.transfer.methods),
    draw=lambda tables, cfg, backbone, method: gain_heatmap(tables["transfer"], families(cfg), backbone, method),
    caption=_caption, labels=lambda cfg, method: figure_labels("gain heatmap", method=method)))
