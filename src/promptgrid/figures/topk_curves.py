"""Top-k curves: the gain of the best of a metric's k top-ranked sources, against the comparators, the learned
ranking, random choice and the oracle, with 95 % t-intervals over targets.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from promptgrid.figures.base import JINJA_BACKBONE, figure_labels, per_source_in, require, select, styled
from promptgrid.lazy import lazy_module
from promptgrid.registry import FIGURES, METHODS, FigureSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the fewest targets a CI band is drawn from: promptgrid.analysis.pooled.MIN_TARGETS_FOR_CI, which
#: cluster_mean_ci applies (restated here so that registering the figure imports no scipy)
MIN_TARGETS_FOR_CI = 3
ORACLE_LABEL = "oracle"
BIASED_ORACLE_LABEL = "oracle (max of noisy seed means, biased upward)"
HELDOUT_ORACLE_LABEL = "oracle, held-out seed (unbiased)"
RANDOM_LABEL = "random (expected best of k)"
# comparators in a fixed order (the one a metric must beat first), any others after them by name
_COMPARATOR_ORDER = {"source_only": 0, "family_only": 1, "random": 2}


def _label(name: str, kind: str) -> str:
    """A dashed line's legend label: 'learned ranking', or the predictor named with its kind."""
    return "learned ranking" if (name, kind) == ("learned", "learned") else f"{name} ({kind})"


def t_interval(per_target: pd.DataFrame, by: list, value: str) -> pd.DataFrame:
    """Mean over targets of ``value`` per ``by`` group with its 95 % t-interval.

    ``per_target`` has one row per (``by``, target): (n_rows,) values. Returns ``by`` columns plus mean,
    ci_low, ci_high, n_targets: :func:`promptgrid.analysis.pooled.cluster_mean_ci` over the G targets whose value
    is finite (mean ± t_{G-1, .975} · sd / √G; NaN below MIN_TARGETS_FOR_CI targets), the same interval the
    summary table prints.
    """

    from promptgrid.analysis.pooled import cluster_mean_ci

    rows = []
    for key, g in per_target.groupby(by, sort=True):
        est = cluster_mean_ci(g[value].to_numpy(float), np.arange(len(g)))
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "mean": est["mean"],
                     "ci_low": est["ci_low"], "ci_high": est["ci_high"], "n_targets": est["n_groups"]})
    out = pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n_targets"])
    return out[out["n_targets"] > 0].reset_index(drop=True)


def _band(ax, curve: pd.DataFrame, colour, gid: str) -> None:
    """Shade ``curve``'s finite ci_low..ci_high over k (one PolyCollection, ``gid`` names it for readers)."""
    ok = np.isfinite(curve["ci_low"].to_numpy(float)) & np.isfinite(curve["ci_high"].to_numpy(float))
    if ok.any():
        c = curve[ok]
        ax.fill_between(c["k"].to_numpy(float), c["ci_low"].to_numpy(float), c["ci_high"].to_numpy(float),
                        color=colour, alpha=0.15, linewidth=0, gid=gid)


@styled
def topk_curves(retrieval: pd.DataFrame, backbone: str, method: str, as_gain: bool = True) -> Figure:
    """Best-of-top-k vs. k per predictor, with the oracle and random-choice lines, averaged over targets.

    SPoT Table 3 as a plot. ``analysis.retrieval_table`` stores best_of_topk, oracle and random as
    seed-mean gains in score points with ``baseline`` = 0; a table that stores test scores with the
    target's baseline score instead draws the same, because with ``as_gain`` (default) every value
    is drawn minus its row's ``baseline``. ``as_gain=False`` draws the stored values unchanged, with
    the baseline as a line. Oracle = best source per target; random = expected best of k random
    sources. Similarity metrics (``kind == "metric"``, or every row of a table without ``kind``) are
    solid lines; the learned ranking and the comparators (``kind`` "learned" / "comparator") dashed.
    Where the table has a finite ``oracle_heldout`` (source chosen on the other seeds, scored on a
    held-out seed), that unbiased oracle is drawn too and the plain one is labelled as biased upward.
    Shaded bands: the 95 % t-interval over targets (see :func:`t_interval`) of the oracle (the held-out
    one where drawn), the best metric (highest mean over k), the learned ranking and source_only.
    """
    import seaborn as sns

    from promptgrid.figures import style

    need = ["backbone", "method", "metric", "target", "k", "best_of_topk", "oracle", "random"]
    if as_gain:
        need.append("baseline")
    require(retrieval, need, "retrieval")
    df = select(retrieval, "retrieval", backbone=backbone, method=method).copy()
    if "kind" not in df.columns:  # a table written before #24: every row is a similarity metric
        df["kind"] = "metric"
    heldout = "oracle_heldout" in df.columns and bool(np.isfinite(df["oracle_heldout"].to_numpy(float)).any())
    values = ["best_of_topk", "oracle", "random"] + (["oracle_heldout"] if heldout else [])
    if as_gain:
        for c in values:
            df[c] = df[c] - df["baseline"]
    # one value per (predictor, target, k) and per (target, k) for what does not depend on the predictor,
    # then mean and t-interval over targets
    kinds = df.drop_duplicates("metric").set_index("metric")["kind"].to_dict()
    per_target = df.groupby(["metric", "target", "k"], as_index=False)["best_of_topk"].mean()
    curves = t_interval(per_target, ["metric", "k"], "best_of_topk")
    ref_cols = [c for c in values if c != "best_of_topk"] + (["baseline"] if not as_gain and "baseline" in df else [])
    refs_t = df.groupby(["target", "k"], as_index=False)[ref_cols].mean()
    refs = {c: t_interval(refs_t, ["k"], c) for c in ref_cols}
    n_targets = df["target"].nunique()

    metrics = sorted(m for m, kd in kinds.items() if kd == "metric")
    others = sorted((m for m, kd in kinds.items() if kd != "metric"),
                    key=lambda m: (kinds[m] != "learned", _COMPARATOR_ORDER.get(m, len(_COMPARATOR_ORDER)), m))
    n_entries = len(metrics) + len(others) + 3 + int(heldout)
    ncol = 3 if n_entries > 12 else 2  # the oracle labels are long: 3 columns only for short names
    fig = style.new_figure(6.8, 4.4 + 0.22 * -(-n_entries // ncol))
    ax = fig.add_subplot()
    palette = sns.color_palette("colorblind", max(len(metrics), 1))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    colours = {m: palette[i] for i, m in enumerate(metrics)}
    for i, metric in enumerate(metrics):  # one call per metric, so each line carries its metric as label
        c = curves[curves["metric"] == metric]
        ax.plot(c["k"], c["mean"], color=colours[metric], marker=markers[i % len(markers)], linewidth=1.5,
                markersize=5, label=metric)
    greys = [(0.2, 0.2, 0.2), (0.45, 0.45, 0.45), (0.6, 0.6, 0.6), (0.7, 0.7, 0.7)]
    for j, name in enumerate(others):  # learned first (strong colour), comparators in greys, all dashed
        learned = kinds[name] == "learned"
        colours[name] = sns.color_palette("dark")[3] if learned else greys[j % len(greys)]
        c = curves[curves["metric"] == name]
        ax.plot(c["k"], c["mean"], color=colours[name], linestyle="--", linewidth=2.0 if learned else 1.5,
                marker="P" if learned else "x", markersize=6, label=_label(name, kinds[name]), gid=kinds[name])
    oracle_colour = "black"
    ax.plot(refs["oracle"]["k"], refs["oracle"]["mean"], color=oracle_colour, linestyle=(0, (4, 2)), linewidth=1.6,
            alpha=0.55 if heldout else 1.0, label=BIASED_ORACLE_LABEL if heldout else ORACLE_LABEL)
    if heldout:
        ax.plot(refs["oracle_heldout"]["k"], refs["oracle_heldout"]["mean"], color=oracle_colour, linestyle="-",
                linewidth=1.8, label=HELDOUT_ORACLE_LABEL)
    _band(ax, refs["oracle_heldout" if heldout else "oracle"], oracle_colour, "oracle")
    ax.plot(refs["random"]["k"], refs["random"]["mean"], color="0.45", linestyle=":", linewidth=1.8, marker=".",
            label=RANDOM_LABEL)
    if metrics:  # the best metric: highest mean over the k shown
        best = curves[curves["metric"].isin(metrics)].groupby("metric")["mean"].mean().idxmax()
        _band(ax, curves[curves["metric"] == best], colours[best], best)
    for name in others:
        if kinds[name] == "learned" or name == "source_only":
            _band(ax, curves[curves["metric"] == name], colours[name], name)
    if as_gain:
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_ylabel("gain of best of top-k sources (score points)")
    else:
        if "baseline" in refs:
            ax.plot(refs["baseline"]["k"], refs["baseline"]["mean"], color="0.3", linestyle="-.", linewidth=1.2,
                    label="baseline")
        ax.set_ylabel("best of top-k sources, as stored (score points)")
    ax.set_xlabel("k (number of top-ranked sources tried)")
    ax.set_xticks(sorted(df["k"].unique()))
    band_note = "95 % CI bands" if n_targets >= MIN_TARGETS_FOR_CI else f"no CI from {n_targets} targets"
    ax.set_title(style.wrap(f"Source retrieval for {method} on {backbone} (mean over {n_targets} targets, "
                            f"{band_note})", fig))
    # below the axes (constrained layout makes room): with a dozen metrics plus references no corner is free
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol, fontsize="small",
               frameon=False)
    return fig


def _caption(cfg, method: str) -> str:
    return (f"Source retrieval for **{method}** ({METHODS.require(method).summary}) on backbone " + JINJA_BACKBONE
            + " (SPoT Table 3 as a plot): sources are ranked for each target by a predictor, and each line is the "
            "gain (score points over the target's own prompt, averaged over targets) of the best source among the "
            "top k. Solid coloured lines are the similarity metrics; dashed lines are the learned ranking (fitted "
            "leave-one-target-out on the metrics and comparators) and the comparators, which use no similarity: "
            "**source_only** (the source's mean gain on the other targets), **family_only** (same task family "
            "first) and **random** (one seeded random score). The dotted random line is the expected best of k "
            "randomly picked sources. The oracle picks each target's best source by its seed-mean gain, the "
            "maximum of noisy means, so it is biased upward; where the study has several seeds the solid black "
            "held-out oracle picks the source on the other seeds and scores it on a held-out seed, which is "
            "unbiased. Shaded bands are 95 % t-intervals over targets (mean ± t(G-1) sd/sqrt(G) of the per-target "
            "values; none below 3 targets) for the oracle, the best metric, the learned ranking and source_only. "
            "A useful metric stays close to the oracle at small k, above random and above source_only.")


FIGURES.add(FigureSpec(
    name="topk_curves", tables=("retrieval",), category="Metrics vs gains", order=6, variants=per_source_in,
    draw=lambda tables, cfg, backbone, method: topk_curves(tables["retrieval"], backbone, method),
    caption=_caption, labels=lambda cfg, method: figure_labels("top-k curves", method=method)))
