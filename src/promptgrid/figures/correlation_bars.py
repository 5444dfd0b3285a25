"""Correlation bars: how well each similarity metric predicts the outcome (Spearman, bootstrap CI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from promptgrid.figures.base import (
    JINJA_BACKBONE,
    figure_labels,
    outcome_words,
    per_source_in,
    require,
    select,
    styled,
)
from promptgrid.registry import FIGURES, METHODS, FigureSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@styled
def correlation_bars(correlation: pd.DataFrame, backbone: str, method: str, stat: str = "spearman") -> Figure:
    """Bars of each metric's pooled rank correlation with gain, 95 % bootstrap CI as error bars.

    ``stat`` is ``spearman`` (default), ``pearson`` or ``kendall`` (columns ``<stat>_rho|_r|_tau``,
    ``<stat>_ci_low/high``, ``<stat>_p``). Bars are the rows with ``target == "pooled"``, sorted from
    the highest value; per-target values (other rows) are overlaid as points; ``*`` marks p < 0.05.
    """
    import numpy as np
    import seaborn as sns

    from promptgrid.figures import style

    value_col = {"spearman": "spearman_rho", "pearson": "pearson_r", "kendall": "kendall_tau"}.get(stat)
    if value_col is None:
        raise ValueError(f"stat must be spearman, pearson or kendall, got {stat!r}")
    lo_col, hi_col, p_col = f"{stat}_ci_low", f"{stat}_ci_high", f"{stat}_p"
    require(correlation, ["backbone", "method", "metric", "target", value_col, lo_col, hi_col], "correlation")
    df = select(correlation, "correlation", backbone=backbone, method=method)
    pooled = df[df["target"] == "pooled"].drop_duplicates("metric")
    if pooled.empty:
        raise ValueError(f"correlation table: no target == 'pooled' rows for backbone={backbone!r}, "
                         f"method={method!r} (targets present: {sorted(map(str, df['target'].unique()))})")
    pooled = pooled.sort_values(value_col, ascending=False, na_position="last", kind="stable")
    order = list(pooled["metric"])
    symbol = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τ"}[stat]

    fig = style.new_figure(min(style.MAX_FIGURE_WIDTH_IN, max(4.5, 1.8 + 0.75 * len(order))), 4.0)
    ax = fig.add_subplot()
    sns.barplot(data=pooled, x="metric", y=value_col, order=order, color=sns.color_palette("colorblind")[0],
                errorbar=None, ax=ax, label=f"pooled within-target {symbol}")
    x = np.arange(len(order))
    y = pooled[value_col].to_numpy(float)
    lo = pooled[lo_col].to_numpy(float)
    hi = pooled[hi_col].to_numpy(float)
    has_ci = ~(np.isnan(lo) | np.isnan(hi) | np.isnan(y))
    if has_ci.any():
        err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])[:, has_ci]
        ax.errorbar(x[has_ci], y[has_ci], yerr=err, fmt="none", ecolor="black", elinewidth=1.2, capsize=4,
                    label="95 % CI (targets resampled)")
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
        ax.scatter(px, py, s=16, color="0.15", alpha=0.7, zorder=3, label="per target")
    if p_col in pooled.columns:
        for xi, yi, p, h in zip(x, y, pooled[p_col].to_numpy(float), hi):
            if not np.isnan(p) and p < 0.05:
                top = h if not np.isnan(h) else yi
                ax.text(xi, max(top, yi, 0) + 0.04, "*", ha="center", va="bottom", fontsize="large")
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.set_ylim(-1.05, 1.12)
    outcome = outcome_words(method)
    ax.set_xlabel("similarity metric")
    ax.set_ylabel(f"{symbol} with {outcome} (unitless, −1…1)")
    ax.set_title(style.wrap(f"How well each metric predicts {method} transfer on {backbone}", fig))
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="lower right", fontsize="small", frameon=True)
    return fig


def _caption(cfg, method: str) -> str:
    outcome = outcome_words(method, f"seed-mean {cfg.analysis.outcome}")
    return (f"How well each similarity metric predicts the outcome of **{method}** ({METHODS.require(method).summary}) "
            "on backbone " + JINJA_BACKBONE + ": bars are the pooled within-target Spearman rho (unitless, -1 to 1: "
            f"each target's sources ranked against each other, self-pairs left out) with the {outcome}, sorted from "
            "the best metric. Error bars are 95 % confidence intervals from resampling whole targets, grey points the per-target rho, and ``*`` "
            "marks a within-target permutation p < 0.05 (not corrected for the number of metrics: the summary table "
            "gives the Holm-adjusted p). A CI that crosses the zero line means the metric is not reliably better "
            "than chance.")


FIGURES.add(FigureSpec(
    name="correlation_bars", tables=("correlation",), category="Metrics vs gains", order=5, variants=per_source_in,
    draw=lambda tables, cfg, backbone, method: correlation_bars(tables["correlation"], backbone, method),
    caption=_caption, labels=lambda cfg, method: figure_labels("correlation bars", method=method)))
