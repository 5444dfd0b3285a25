"""Figures of a transferability study, drawn from the long tables in ``.contracts.md``.

Every ``*_heatmap``/``*_scatter``/``*_bars``/``*_curves`` function takes DataFrames (not paths) and
returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG and PDF.

Figures are built with :class:`~matplotlib.figure.Figure` directly and rendered by the Agg canvas,
never through pyplot, so importing this module changes no global backend or pyplot state, and a
figure that is dropped is simply garbage-collected. Seaborn draws into the axes we pass in.

Reading the figures back (what the tests and any caller can rely on):
- heatmaps: ``fig.axes[0]`` is the heatmap (rows = sources, columns = targets), the colour bar follows;
- ``metric_scatter``: exactly one axes per target, in sorted target order;
- ``correlation_bars``: ``fig.axes[0].containers[0]`` holds one bar per metric;
- ``topk_curves``: lines carry the labels of their metric, ``"oracle"`` and ``"random"``.

Missing values: a filter that matches nothing, or a missing column, raises ``ValueError`` naming the
table, the filter or the column; absent methods or metrics are simply not drawn.
"""
from __future__ import annotations

import functools
import os
import re
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# the heatmap colour schemes: gains diverge around 0, relative performance around 100 %
DIVERGING_CMAP = "RdBu"
SEQUENTIAL_CMAP = "mako_r"
# families that are not in the config (e.g. "top3" rows of spot_topk) go last, under this name
NO_FAMILY = "(no family)"
# method order in legends and bars: the target's own prompt first, then the transfer methods
METHOD_ORDER = ("baseline", "zeroshot", "vanilla", "spot_topk", "panda")
# methods that have one run per source; their curves and bars are summarised over sources
PER_SOURCE_METHODS = ("zeroshot", "vanilla", "panda")
# one colour per method in every figure (seaborn "colorblind"); variants (top-k, best source) are shades
_CB = sns.color_palette("colorblind")
METHOD_COLOURS = {"baseline": (0.35, 0.35, 0.35), "zeroshot": _CB[4], "vanilla": _CB[0], "spot_topk": _CB[2],
                  "panda": _CB[3]}

_STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("paper", font_scale=1.1),
    "font.family": "DejaVu Sans",  # bundled with matplotlib: same glyphs on every machine
    "axes.titleweight": "bold",
    "figure.dpi": 100,
}
# applied at save time: TrueType fonts in the PDF (editable text), no timestamps or salts
_SAVE_RC = {"pdf.fonttype": 42, "svg.hashsalt": "promptgrid", "path.simplify": True}
PNG_METADATA = {"Software": f"promptgrid (matplotlib {matplotlib.__version__})"}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Creator": "promptgrid",
                "Producer": f"matplotlib {matplotlib.__version__}"}


# ---------------------------------------------------------------- saving
def save_figure(fig: Figure, out_png, out_pdf, dpi: int = 150) -> None:
    """Write ``fig`` to ``out_png`` and ``out_pdf``, each atomically and byte-reproducibly.

    Each file is rendered into a temporary file beside its destination and renamed into place, so
    an interrupted job never leaves a half-written figure that Snakemake would take as done.
    Metadata is fixed (no creation date; PNG carries only ``Software``), so the same figure saved
    twice gives identical bytes.
    """
    FigureCanvasAgg(fig)  # attach the Agg canvas whatever pyplot's backend is
    if fig.get_layout_engine() is not None:
        # constrained layout is not idempotent (a second pass shifts axes by a pixel or so): run it
        # once, then freeze the positions, so every save of this figure gives the same bytes
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    for path, fmt, meta in ((out_png, "png", PNG_METADATA), (out_pdf, "pdf", PDF_METADATA)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with matplotlib.rc_context(_SAVE_RC):
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# ---------------------------------------------------------------- checks and helpers
def _require(df: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table} table lacks required column(s) {missing}; it has {list(df.columns)}")


def _select(df: pd.DataFrame, table: str, **filters) -> pd.DataFrame:
    """Rows of ``df`` where every ``column == value``; a filter matching nothing raises, naming it."""
    _require(df, filters, table)
    mask = np.ones(len(df), dtype=bool)
    for col, val in filters.items():
        mask &= (df[col] == val).to_numpy()
    out = df.loc[mask]
    if out.empty:
        what = ", ".join(f"{k}={v!r}" for k, v in filters.items())
        have = "; ".join(f"{k} values present: {sorted(map(str, df[k].dropna().unique()))}" for k in filters)
        raise ValueError(f"{table} table: no rows match {what} ({have or 'table is empty'})")
    return out


def _topk_key(name: str):
    """'top3' -> 3 so spot_topk rows sort numerically (top2 before top10)."""
    m = re.fullmatch(r"top(\d+)", str(name))
    return int(m.group(1)) if m else None


def _family_order(tasks: Iterable[str], families: Mapping[str, str]) -> list[tuple[str, str]]:
    """(task, family) sorted by family, families and tasks in the config's (dict) order.

    Tasks absent from ``families`` (e.g. spot_topk's ``top{k}``) come last under NO_FAMILY,
    top-k rows by k, others by name.
    """
    fam_rank = {}
    for fam in families.values():
        fam_rank.setdefault(fam, len(fam_rank))
    task_rank = {t: i for i, t in enumerate(families)}

    def key(task):
        if task in families:
            return (0, fam_rank[families[task]], task_rank[task], 0, "")
        k = _topk_key(task)
        return (1, 0, 0, k if k is not None else 10**9, str(task))

    return [(t, families.get(t, NO_FAMILY)) for t in sorted(set(tasks), key=key)]


def _family_colours(families_in_use: Sequence[str]) -> dict[str, tuple]:
    pal = sns.color_palette("colorblind", max(len(families_in_use), 1))
    return {fam: ("0.35" if fam == NO_FAMILY else pal[i]) for i, fam in enumerate(families_in_use)}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _styled(func: Callable) -> Callable:
    """Draw under a fixed style, without touching the caller's global rcParams."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def _method_sort_key(label: str):
    base = label.split(" ")[0]
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    k = _topk_key(label.split("(")[-1].rstrip(")")) if "(" in label else None
    return (rank, k if k is not None else -1, label)


def _method_palette(labels: Sequence[str]) -> dict[str, tuple]:
    """Colour per label "<method>[ (variant)]": the method's colour, variants in darker/lighter shades."""
    out, by_method = {}, {}
    for lab in labels:
        by_method.setdefault(lab.split(" ")[0], []).append(lab)
    extra = iter(sns.color_palette("colorblind")[5:] * 3)
    for method, labs in by_method.items():
        base = METHOD_COLOURS.get(method) or next(extra)
        shades = [base] if len(labs) == 1 else sns.light_palette(base, len(labs) + 2)[2:]
        if len(labs) > 1 and labs[0] == method:  # the plain method keeps its own colour
            shades = [base] + list(sns.dark_palette(base, len(labs) + 1, reverse=True)[1:len(labs)])
        out.update(zip(labs, shades))
    return out


def _wrap(text: str, fig: Figure, scale: float = 1.0) -> str:
    """Wrap a title to the figure's width (about 9 bold characters per inch at the title size)."""
    return textwrap.fill(text, width=max(24, int(fig.get_figwidth() * 9 * scale)), break_long_words=False)


# ---------------------------------------------------------------- heatmaps
def _task_heatmap(matrix: pd.DataFrame, families: Mapping[str, str], *, title: str, cbar_label: str,
                  fmt: str, cmap: str, center: Optional[float]) -> Figure:
    """Heatmap of a sources × targets matrix, rows and columns ordered and coloured by task family.

    Family blocks are separated by lines and named to the right of the rows; tick labels take the
    family colour, so the grouping reads on both axes.
    """
    rows = _family_order(matrix.index, families)
    cols = _family_order(matrix.columns, families)
    matrix = matrix.reindex(index=[r for r, _ in rows], columns=[c for c, _ in cols])
    fams_in_use = list(dict.fromkeys([f for _, f in rows] + [f for _, f in cols]))
    colour = _family_colours(fams_in_use)

    n_rows, n_cols = matrix.shape
    fig = _new_figure(max(5.0, 2.6 + 0.75 * n_cols), max(4.2, 2.2 + 0.42 * n_rows))
    ax = fig.add_subplot()
    annot_size = 9 if n_rows * n_cols <= 100 else 7
    values = matrix.to_numpy(float)
    if not np.isfinite(values).any():
        raise ValueError(f"{title}: every cell is NaN, nothing to draw")
    vmin = vmax = None
    if center is not None:
        # symmetric limits: equal colour intensity means equal distance from the centre on both sides
        spread = float(np.nanmax(np.abs(values - center))) or 1.0
        vmin, vmax = center - spread, center + spread
    with warnings.catch_warnings():
        # seaborn 0.13 calls Colormap.set_bad, which matplotlib >= 3.11 flags as pending deprecation
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(matrix, ax=ax, annot=True, fmt=fmt, annot_kws={"size": annot_size}, cmap=cmap, center=center,
                    vmin=vmin, vmax=vmax, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": cbar_label, "location": "bottom", "shrink": 0.8, "aspect": 30})
    ax.grid(False)
    ax.set_facecolor("0.9")  # pairs that were not run (NaN) show as plain grey
    ax.set_title(_wrap(title, fig))
    ax.set_xlabel("target task")
    ax.set_ylabel("source task")
    ax.tick_params(axis="x", labelrotation=45, labeltop=False)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
        lab.set_rotation_mode("anchor")
    for lab, (_, fam) in zip(ax.get_yticklabels(), rows):
        lab.set_color(colour[fam])
        lab.set_rotation(0)
    for lab, (_, fam) in zip(ax.get_xticklabels(), cols):
        lab.set_color(colour[fam])

    # family separators and names: rows (names to the right), columns (separators only)
    row_fams = [f for _, f in rows]
    start = 0
    for i in range(1, n_rows + 1):
        if i == n_rows or row_fams[i] != row_fams[start]:
            if i < n_rows:
                ax.axhline(i, color="black", linewidth=1.6)
            ax.text(1.02, (start + i) / 2, row_fams[start], transform=ax.get_yaxis_transform(),
                    ha="left", va="center", color=colour[row_fams[start]], fontweight="bold", clip_on=False)
            start = i
    col_fams = [f for _, f in cols]
    for j in range(1, n_cols):
        if col_fams[j] != col_fams[j - 1]:
            ax.axvline(j, color="black", linewidth=1.6)
    return fig


@_styled
def gain_heatmap(transfer: pd.DataFrame, families: Mapping[str, str], backbone: str, method: str) -> Figure:
    """Sources × targets of the seed-mean gain (score − baseline, in score points) of ``method``.

    ``transfer`` is transfer.parquet; ``families`` maps task -> family (config ``tasks.<t>.family``).
    Diverging colours centred on 0 (blue: the transfer beats the target's own prompt).
    """
    _require(transfer, ["backbone", "method", "source", "target", "seed", "gain"], "transfer")
    df = _select(transfer, "transfer", backbone=backbone, method=method)
    matrix = df.pivot_table(index="source", columns="target", values="gain", aggfunc="mean", dropna=False)
    n_seeds = df.groupby(["source", "target"])["seed"].nunique()
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}–{n_seeds.max()}"
    return _task_heatmap(matrix, families, title=f"Gain of {method} transfer on {backbone} (mean of {seeds} seeds)",
                         cbar_label="gain over the target's own prompt (score points)", fmt=".1f",
                         cmap=DIVERGING_CMAP, center=0.0)


@_styled
def relative_performance_heatmap(transfer: pd.DataFrame, families: Mapping[str, str], backbone: str) -> Figure:
    """Zero-shot transfer: seed-mean relative performance score(P_s on t) / score(P_t on t), in %.

    Diverging colours centred on 100 % (the source prompt does as well as the target's own).
    """
    _require(transfer, ["backbone", "method", "source", "target", "relative_performance"], "transfer")
    df = _select(transfer, "transfer", backbone=backbone, method="zeroshot")
    df = df.assign(rel_pct=100.0 * df["relative_performance"])
    matrix = df.pivot_table(index="source", columns="target", values="rel_pct", aggfunc="mean", dropna=False)
    return _task_heatmap(matrix, families, title=f"Zero-shot relative performance on {backbone}",
                         cbar_label="relative performance, score(P_s on t) / score(P_t on t) (%)", fmt=".0f",
                         cmap=DIVERGING_CMAP, center=100.0)


@_styled
def similarity_heatmap(similarity: pd.DataFrame, families: Mapping[str, str], backbone: str, metric: str) -> Figure:
    """Sources × targets of one similarity metric (mean over seed pairs; unitless).

    Sequential colours, or diverging around 0 when the metric takes negative values (cosines).
    """
    _require(similarity, ["backbone", "metric", "source", "target", "value"], "similarity")
    df = _select(similarity, "similarity", backbone=backbone, metric=metric)
    matrix = df.pivot_table(index="source", columns="target", values="value", aggfunc="mean", dropna=False)
    negative = bool((matrix.to_numpy() < 0).any())
    return _task_heatmap(matrix, families, title=f"Prompt similarity '{metric}' on {backbone}",
                         cbar_label=f"similarity {metric} (unitless)", fmt=".2f",
                         cmap=DIVERGING_CMAP if negative else SEQUENTIAL_CMAP, center=0.0 if negative else None)


# ---------------------------------------------------------------- metric vs. realised gain
def _outcome(transfer: pd.DataFrame, method: str) -> tuple[str, str, float]:
    """Which transfer column a metric is judged against: gain, or relative performance for zeroshot."""
    if method == "zeroshot":
        return "relative_performance", "relative performance (%)", 100.0
    return "gain", "gain (score points)", 1.0


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


@_styled
def metric_scatter(similarity: pd.DataFrame, transfer: pd.DataFrame, backbone: str, metric: str,
                   method: str, max_cols: int = 4) -> Figure:
    """One panel per target: metric value (x) vs. seed-mean gain of ``method`` (y), as SPoT Fig. 5.

    For zeroshot y is relative performance in %. Self-pairs are left out. Each panel has a least-
    squares line with a 95 % bootstrap band (seeded) and its Pearson r over sources in the title.
    """
    _require(similarity, ["backbone", "metric", "source", "target", "value"], "similarity")
    col, ylabel, scale = _outcome(transfer, method)
    _require(transfer, ["backbone", "method", "source", "target", col], "transfer")
    sim = _select(similarity, "similarity", backbone=backbone, metric=metric)
    tr = _select(transfer, "transfer", backbone=backbone, method=method)
    tr = tr.groupby(["source", "target"], as_index=False)[col].mean()
    sim = sim.groupby(["source", "target"], as_index=False)["value"].mean()
    df = sim.merge(tr, on=["source", "target"], how="inner")
    df = df[df["source"] != df["target"]].dropna(subset=["value", col])
    if df.empty:
        raise ValueError(f"no (source, target) pair other than self-pairs has both similarity metric={metric!r} "
                         f"and transfer method={method!r} on backbone={backbone!r}")
    df = df.assign(y=scale * df[col])

    targets = sorted(df["target"].unique())
    n_cols = min(len(targets), max_cols)
    n_rows = -(-len(targets) // n_cols)
    fig = _new_figure(3.2 * n_cols, 2.9 * n_rows + 0.5)
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=False, sharey=False)
    for idx, ax in enumerate(axes.ravel()):
        if idx >= len(targets):
            fig.delaxes(ax)  # the figure holds exactly one axes per target
            continue
        t = targets[idx]
        sub = df[df["target"] == t]
        can_fit = len(sub) >= 2 and sub["value"].nunique() > 1
        sns.regplot(data=sub, x="value", y="y", ax=ax, fit_reg=can_fit, ci=95 if len(sub) >= 3 else None,
                    n_boot=300, seed=0, scatter_kws={"s": 22, "alpha": 0.85}, line_kws={"linewidth": 1.4})
        r = _pearson(sub["value"].to_numpy(float), sub["y"].to_numpy(float))
        r_txt = "n/a" if np.isnan(r) else f"{r:.2f}"
        ax.set_title(f"{t}\nPearson r = {r_txt}, n = {len(sub)}", fontsize="medium")
        ax.set_xlabel(f"{metric} similarity (unitless)")
        ax.set_ylabel(ylabel)
        if method != "zeroshot":
            ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
    fig.suptitle(_wrap(f"Similarity '{metric}' vs. {method} transfer outcome per target on {backbone}", fig),
                 fontweight="bold")
    return fig


@_styled
def correlation_bars(correlation: pd.DataFrame, backbone: str, method: str, stat: str = "spearman") -> Figure:
    """Bars of each metric's pooled rank correlation with gain, 95 % bootstrap CI as error bars.

    ``stat`` is ``spearman`` (default), ``pearson`` or ``kendall`` (columns ``<stat>_rho|_r|_tau``,
    ``<stat>_ci_low/high``, ``<stat>_p``). Bars are the rows with ``target == "pooled"``, sorted from
    the highest value; per-target values (other rows) are overlaid as points; ``*`` marks p < 0.05.
    """
    value_col = {"spearman": "spearman_rho", "pearson": "pearson_r", "kendall": "kendall_tau"}.get(stat)
    if value_col is None:
        raise ValueError(f"stat must be spearman, pearson or kendall, got {stat!r}")
    lo_col, hi_col, p_col = f"{stat}_ci_low", f"{stat}_ci_high", f"{stat}_p"
    _require(correlation, ["backbone", "method", "metric", "target", value_col, lo_col, hi_col], "correlation")
    df = _select(correlation, "correlation", backbone=backbone, method=method)
    pooled = df[df["target"] == "pooled"].drop_duplicates("metric")
    if pooled.empty:
        raise ValueError(f"correlation table: no target == 'pooled' rows for backbone={backbone!r}, "
                         f"method={method!r} (targets present: {sorted(map(str, df['target'].unique()))})")
    pooled = pooled.sort_values(value_col, ascending=False, na_position="last", kind="stable")
    order = list(pooled["metric"])
    symbol = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τ"}[stat]

    fig = _new_figure(max(4.5, 1.8 + 0.75 * len(order)), 4.0)
    ax = fig.add_subplot()
    sns.barplot(data=pooled, x="metric", y=value_col, order=order, color=sns.color_palette("colorblind")[0],
                errorbar=None, ax=ax, label=f"pooled {symbol}")
    x = np.arange(len(order))
    y = pooled[value_col].to_numpy(float)
    lo = pooled[lo_col].to_numpy(float)
    hi = pooled[hi_col].to_numpy(float)
    has_ci = ~(np.isnan(lo) | np.isnan(hi) | np.isnan(y))
    if has_ci.any():
        err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])[:, has_ci]
        ax.errorbar(x[has_ci], y[has_ci], yerr=err, fmt="none", ecolor="black", elinewidth=1.2, capsize=4,
                    label="95 % bootstrap CI")
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
    outcome = "relative performance" if method == "zeroshot" else "gain"
    ax.set_xlabel("similarity metric")
    ax.set_ylabel(f"{symbol} with {outcome} (unitless, −1…1)")
    ax.set_title(_wrap(f"How well each metric predicts {method} transfer on {backbone}", fig))
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="lower right", fontsize="small", frameon=True)
    return fig


# ---------------------------------------------------------------- retrieval
@_styled
def topk_curves(retrieval: pd.DataFrame, backbone: str, method: str, as_gain: bool = True) -> Figure:
    """Best-of-top-k vs. k per metric, with the oracle and random-choice lines, averaged over targets.

    SPoT Table 3 as a plot. ``analysis.retrieval_table`` stores best_of_topk, oracle and random as
    seed-mean gains in score points with ``baseline`` = 0; a table that stores test scores with the
    target's baseline score instead draws the same, because with ``as_gain`` (default) every value
    is drawn minus its row's ``baseline``. ``as_gain=False`` draws the stored values unchanged, with
    the baseline as a line. Oracle = best source per target; random = expected best of k random
    sources.
    """
    need = ["backbone", "method", "metric", "target", "k", "best_of_topk", "oracle", "random"]
    if as_gain:
        need.append("baseline")
    _require(retrieval, need, "retrieval")
    df = _select(retrieval, "retrieval", backbone=backbone, method=method).copy()
    cols = ["best_of_topk", "oracle", "random"] + ([] if as_gain else (["baseline"] if "baseline" in df else []))
    if as_gain:
        for c in ("best_of_topk", "oracle", "random"):
            df[c] = df[c] - df["baseline"]
    per_metric = df.groupby(["metric", "k"], as_index=False)["best_of_topk"].mean()
    # oracle/random/baseline do not depend on the metric: average per (target, k) first, then over targets
    refs = df.groupby(["target", "k"], as_index=False)[[c for c in cols if c != "best_of_topk"]].mean()
    refs = refs.groupby("k", as_index=False).mean(numeric_only=True).sort_values("k")
    n_targets = df["target"].nunique()

    fig = _new_figure(6.2, 4.2)
    ax = fig.add_subplot()
    metrics = sorted(per_metric["metric"].unique())
    palette = sns.color_palette("colorblind", len(metrics))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    for i, metric in enumerate(metrics):  # one call per metric, so each line carries its metric as label
        sns.lineplot(data=per_metric[per_metric["metric"] == metric], x="k", y="best_of_topk", ax=ax,
                     color=palette[i], marker=markers[i % len(markers)], errorbar=None, label=metric)
    ax.plot(refs["k"], refs["oracle"], color="black", linestyle="--", linewidth=1.6, label="oracle")
    ax.plot(refs["k"], refs["random"], color="0.45", linestyle=":", linewidth=1.8, marker=".", label="random")
    if as_gain:
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_ylabel("gain of best of top-k sources (score points)")
    else:
        if "baseline" in refs:
            ax.plot(refs["k"], refs["baseline"], color="0.3", linestyle="-.", linewidth=1.2, label="baseline")
        ax.set_ylabel("best of top-k sources, as stored (score points)")
    ax.set_xlabel("k (number of top-ranked sources tried)")
    ks = sorted(df["k"].unique())
    ax.set_xticks(ks)
    ax.set_title(_wrap(f"Source retrieval for {method} on {backbone} (mean over {n_targets} targets)", fig))
    ax.legend(title=None, fontsize="small", loc="best")
    return fig


# ---------------------------------------------------------------- training
def _best_sources(df: pd.DataFrame, score_col: str, group: Sequence[str]) -> pd.DataFrame:
    """Keep, per ``group``, the source with the highest seed-mean ``score_col``."""
    means = df.groupby([*group, "source"], as_index=False)[score_col].mean()
    best = means.sort_values([*group, score_col, "source"], ascending=[True] * len(group) + [False, True],
                             kind="stable").drop_duplicates(list(group))
    return df.merge(best[[*group, "source"]], on=[*group, "source"], how="inner")


@_styled
def learning_curves(curves: pd.DataFrame, backbone: str, target: str, sources: str = "mean") -> Figure:
    """Dev score vs. training step on ``target``: the baseline and each transfer method.

    Lines are means over seeds, bands ±1 SD over seeds. vanilla/panda have one run per source:
    ``sources="mean"`` (default) averages them over sources at each (seed, step) before the seed
    band; ``sources="best"`` keeps the source whose runs end with the highest seed-mean best dev
    score. spot_topk gets one line per k. A dotted line marks the baseline's best dev score (what
    ``steps_to_baseline`` counts the steps to).
    """
    if sources not in ("mean", "best"):
        raise ValueError(f"sources must be 'mean' or 'best', got {sources!r}")
    _require(curves, ["backbone", "task", "source", "method", "seed", "step", "dev_score"], "curves")
    df = _select(curves, "curves", backbone=backbone, task=target)
    parts = []
    for method, grp in df.groupby("method", sort=False):
        if method in PER_SOURCE_METHODS:
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
        elif method == "spot_topk":
            for src, sub in grp.groupby("source"):
                parts.append(sub[["seed", "step", "dev_score"]].assign(line=f"spot_topk ({src})"))
        else:
            parts.append(grp.groupby(["seed", "step"], as_index=False)["dev_score"].mean().assign(line=method))
    data = pd.concat(parts, ignore_index=True)
    lines = sorted(data["line"].unique(), key=_method_sort_key)
    palette = _method_palette(lines)

    fig = _new_figure(6.4, 4.2)
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
    ax.set_title(_wrap(f"Learning curves on {target} ({backbone})", fig))
    ax.legend(title="run (band: ±1 SD over seeds)", fontsize="small", title_fontsize="small", loc="lower right")
    return fig


@_styled
def method_bars(transfer: pd.DataFrame, baselines: Optional[pd.DataFrame], backbone: str,
                methods: Sequence[str] = ("vanilla", "spot_topk", "panda"), best_source: bool = False,
                include_mean: bool = True) -> Figure:
    """Per-target test scores of prompt tuning (baseline) and each transfer method, error bars over seeds.

    ``baselines``: the target's own prompt-tuning scores, columns backbone, target (or task), seed,
    score; ``None`` takes them from ``transfer.baseline_score``. vanilla/panda (and zeroshot if asked)
    are averaged over sources per seed; ``best_source`` adds "<method> (best source)" bars, the source
    with the highest seed-mean score per target; spot_topk gets one bar per k. Bars are seed means,
    error bars ±1 SD over seeds; the "mean" group averages the targets per seed (PANDA's tables).
    """
    _require(transfer, ["backbone", "method", "source", "target", "seed", "score"], "transfer")
    tr = _select(transfer, "transfer", backbone=backbone)
    if baselines is None:
        _require(transfer, ["baseline_score"], "transfer")
        base = tr.groupby(["target", "seed"], as_index=False)["baseline_score"].mean()
        base = base.rename(columns={"baseline_score": "score"})
    else:
        bl = baselines.rename(columns={"task": "target"}) if "target" not in baselines else baselines
        _require(bl, ["target", "seed", "score"], "baselines")
        if "backbone" in bl:
            bl = _select(bl, "baselines", backbone=backbone)
        base = bl.groupby(["target", "seed"], as_index=False)["score"].mean()
    parts = [base.assign(bar="baseline")]
    present = [m for m in methods if m in set(tr["method"])]
    for method in present:
        grp = tr[tr["method"] == method]
        if method == "spot_topk":
            for src, sub in grp.groupby("source"):
                parts.append(sub.groupby(["target", "seed"], as_index=False)["score"].mean()
                             .assign(bar=f"spot_topk ({src})"))
            continue
        parts.append(grp.groupby(["target", "seed"], as_index=False)["score"].mean().assign(bar=method))
        if best_source:
            parts.append(_best_sources(grp, "score", ["target"])
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
    bars = sorted(data["bar"].unique(), key=_method_sort_key)
    palette = _method_palette(bars)

    fig = _new_figure(max(5.5, 1.5 + 0.35 * len(bars) * len(targets)), 4.3)
    ax = fig.add_subplot()
    sns.barplot(data=data, x="target", y="score", hue="bar", order=targets, hue_order=bars, palette=palette,
                errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0}, ax=ax)
    lo = data.groupby(["target", "bar"])["score"].mean().min()
    ax.set_ylim(max(0.0, np.floor((lo - 10) / 5) * 5), None)  # zoom on the differences, never below 0
    ax.set_xlabel("target task")
    ax.set_ylabel("test score (score points, 0–100)")
    ax.set_title(_wrap(f"Prompt tuning vs. transfer methods on {backbone} (seed mean ± SD)", fig, 0.85))
    ax.legend(title="method", fontsize="small", title_fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    return fig


__all__ = ["save_figure", "gain_heatmap", "relative_performance_heatmap", "similarity_heatmap", "metric_scatter",
           "correlation_bars", "topk_curves", "learning_curves", "method_bars"]
