"""Cross-model transfer bars (Su et al. projectors): the gain of the projected prompt over backbone B's own,
per held-out task, projector and objective."""
from __future__ import annotations

import pandas as pd

from promptgrid.figures.base import require, style_rc
from promptgrid.storage.layout import CROSS_MODES, CROSS_TABLE

COLUMNS = ["backbone_a", "backbone_b", "projector", "objective", "task", "seed", "mode", "score", "baseline_score",
           "gain"]


def cross_model_bars(table: pd.DataFrame):
    """Gain over B's own prompt per held-out task: one panel per objective (rows) x projector (columns),
    bars per mode (zeroshot, init); seed means, error bars ±1 SD over seeds. Returns a Figure."""
    import matplotlib
    import numpy as np
    import seaborn as sns

    from promptgrid.figures import style

    require(table, COLUMNS, CROSS_TABLE)
    if table.empty:
        raise ValueError(f"{CROSS_TABLE} table is empty")
    projectors = list(dict.fromkeys(sorted(table["projector"].unique())))
    objectives = list(dict.fromkeys(sorted(table["objective"].unique())))
    tasks = sorted(table["task"].unique())
    modes = [m for m in CROSS_MODES if m in set(table["mode"])] + sorted(set(table["mode"]) - set(CROSS_MODES))
    palette = dict(zip(modes, sns.color_palette("colorblind", len(modes))))
    pair = f"{table['backbone_a'].iloc[0]} → {table['backbone_b'].iloc[0]}"
    lo, hi = min(0.0, table["gain"].min()), max(0.0, table["gain"].max())
    pad = max(1.0, 0.1 * (hi - lo))
    with matplotlib.rc_context(style_rc()):
        # panels narrow (and their task names turn) rather than the figure grow past MAX_FIGURE_WIDTH_IN
        panel_width = min(max(3.2, 1.2 + 0.9 * len(tasks) * len(modes) / 2),
                          (style.MAX_FIGURE_WIDTH_IN - 0.8) / len(projectors))
        fig = style.new_figure(0.8 + panel_width * len(projectors), 1.6 + 2.8 * len(objectives))
        axes = np.atleast_2d(fig.subplots(len(objectives), len(projectors), squeeze=False, sharey=True))
        for i, obj in enumerate(objectives):
            for j, proj in enumerate(projectors):
                ax = axes[i, j]
                sub = table[(table["objective"] == obj) & (table["projector"] == proj)]
                if sub.empty:
                    ax.set_axis_off()
                    continue
                sns.barplot(data=sub, x="task", y="gain", hue="mode", order=tasks, hue_order=modes, palette=palette,
                            errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0}, ax=ax)
                ax.axhline(0.0, color="0.3", linewidth=0.8)
                ax.set_ylim(lo - pad, hi + pad)
                ax.set_title(f"{proj} projector\n{obj} objective", fontsize="medium")
                if max(map(len, tasks)) * 0.08 > (panel_width - 0.6) / len(tasks):  # ~0.08 in per character
                    ax.tick_params(axis="x", labelrotation=30)
                    for lab in ax.get_xticklabels():
                        lab.set_horizontalalignment("right")
                        lab.set_rotation_mode("anchor")
                ax.set_xlabel("held-out task" if i == len(objectives) - 1 else "")
                ax.set_ylabel("gain (score points)" if j == 0 else "")
                legend = ax.get_legend()
                if legend is not None:
                    legend.remove()
        handles, labels = next(((h, lab) for h, lab in (ax.get_legend_handles_labels() for ax in axes.flat) if h),
                               ([], []))
        if handles:
            fig.legend(handles, labels, title="mode", loc="outside lower center", ncols=len(labels),
                       fontsize="small", title_fontsize="small")
        fig.suptitle(style.wrap(f"Cross-model transfer {pair}: score of the projected prompt minus B's own "
                                 f"prompt (seed mean ± SD)", fig, 0.9), fontweight="bold", fontsize="medium")
    return fig
