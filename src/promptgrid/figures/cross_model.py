"""Cross-model transfer bars (Su et al. projectors): the gain of the projected prompt over backbone B's own,
per held-out task, projector and fit. A figure kind with one variant, the study's A -> B pair (none without a
``cross_model`` section), drawn from ``tables/cross_model.parquet``."""
from __future__ import annotations

from promptgrid.config.sections import CROSS_MODEL_FITS
from promptgrid.figures.base import figure_labels, require, style_rc
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, PROJECTORS, FigureSpec
from promptgrid.storage.layout import CROSS_MODES, CROSS_TABLE, cross_pair

np = lazy_module("numpy")
pd = lazy_module("pandas")

COLUMNS = ["backbone_a", "backbone_b", "projector", "fit", "task", "seed", "mode", "score", "baseline_score", "gain"]


def _in_order(values, order) -> list:
    """``values`` in the registry's (or the config's) order, names it does not know last, by name."""
    values = set(values)
    return [v for v in order if v in values] + sorted(values - set(order))


def cross_model_bars(table: pd.DataFrame):
    """Gain over B's own prompt per held-out task: one panel per fit (rows) x projector (columns), bars per
    mode (zeroshot, init); seed means, error bars ±1 SD over seeds. Returns a Figure."""
    import matplotlib
    import seaborn as sns

    from promptgrid.figures import style

    require(table, COLUMNS, CROSS_TABLE)
    if table.empty:
        raise ValueError(f"{CROSS_TABLE} table is empty")
    projectors = _in_order(table["projector"], [spec.name for spec in PROJECTORS.ordered()])
    fits = _in_order(table["fit"], CROSS_MODEL_FITS)
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
        fig = style.new_figure(0.8 + panel_width * len(projectors), 1.6 + 2.8 * len(fits))
        axes = np.atleast_2d(fig.subplots(len(fits), len(projectors), squeeze=False, sharey=True))
        for i, fit in enumerate(fits):
            for j, proj in enumerate(projectors):
                ax = axes[i, j]
                sub = table[(table["fit"] == fit) & (table["projector"] == proj)]
                if sub.empty:
                    ax.set_axis_off()
                    continue
                sns.barplot(data=sub, x="task", y="gain", hue="mode", order=tasks, hue_order=modes, palette=palette,
                            errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0}, ax=ax)
                ax.axhline(0.0, color="0.3", linewidth=0.8)
                ax.set_ylim(lo - pad, hi + pad)
                ax.set_title(f"{proj} projector\n{fit} fit", fontsize="medium")
                if max(map(len, tasks)) * 0.08 > (panel_width - 0.6) / len(tasks):  # ~0.08 in per character
                    ax.tick_params(axis="x", labelrotation=30)
                    for lab in ax.get_xticklabels():
                        lab.set_horizontalalignment("right")
                        lab.set_rotation_mode("anchor")
                ax.set_xlabel("held-out task" if i == len(fits) - 1 else "")
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


def _caption(cfg, pair) -> str:
    cm = cfg.cross_model
    return (f"Cross-model transfer (Su et al.) from backbone **{cm.source_backbone}** to "
            f"**{cm.target_backbone}**: a projector (columns) maps {cm.source_backbone}'s task prompts into "
            f"{cm.target_backbone}'s embedding space; it is fitted (rows) by *distance* (its output close to "
            f"{cm.target_backbone}'s own prompt of the same task) or by *task* ({cm.target_backbone}'s task loss "
            f"given the projected prompt), on every trained task except the held-out ones "
            f"({', '.join(cm.held_out)}). Bars: the test score of the projected prompt minus "
            f"{cm.target_backbone}'s own prompt's on each held-out task, used as it is (*zeroshot*) or as the "
            f"initial prompt of a prompt-tuning run on {cm.target_backbone} (*init*); seed means ± SD. Above 0, "
            f"the projected prompt beats training {cm.target_backbone}'s prompt from scratch.")


FIGURES.add(FigureSpec(
    name="cross_model", tables=(CROSS_TABLE,), category="Cross-model transfer", order=9,
    variants=lambda cfg: [] if cfg.cross_model is None else [cross_pair(cfg)],
    draw=lambda tables, cfg, backbone, pair: cross_model_bars(tables[CROSS_TABLE]),
    caption=_caption, labels=lambda cfg, pair: figure_labels("cross-model bars"),
    backbones=lambda cfg: [cfg.cross_model.target_backbone]))  # one figure, in the folder of the backbone B
