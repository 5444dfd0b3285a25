"""Figures: built from small contract-format frames, saved, and read back through their axes."""
from __future__ import annotations

import itertools

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from promptgrid.figures import style
from promptgrid.figures.correlation_bars import correlation_bars
from promptgrid.figures.gain_heatmap import gain_heatmap
from promptgrid.figures.learning_curves import learning_curves
from promptgrid.figures.method_bars import method_bars
from promptgrid.figures.metric_scatter import metric_scatter
from promptgrid.figures.relative_performance import relative_performance_heatmap
from promptgrid.figures.similarity_heatmap import similarity_heatmap
from promptgrid.figures.topk_curves import topk_curves

BACKBONE = "tiny-bert"
# config order: sentiment first, so sst2, imdb (sentiment) must precede mnli (nli) in the heatmap rows
FAMILIES = {"sst2": "sentiment", "mnli": "nli", "imdb": "sentiment", "rte": "nli", "cb": "nli"}
SOURCES = ["sst2", "mnli", "imdb"]
TARGETS = ["rte", "cb"]
SEEDS = [0, 1]
METRICS = ["cos_avg", "max"]
BASELINE = {("rte", 0): 60.0, ("rte", 1): 62.0, ("cb", 0): 70.0, ("cb", 1): 74.0}


def _gain(source, target, seed, method):
    # distinct, readable numbers: mnli (nli family) helps nli targets, sentiment sources hurt a little
    base = {"sst2": -2.0, "mnli": 5.0, "imdb": -1.0, "top1": 4.0, "top2": 3.0}[source]
    shift = {"vanilla": 0.0, "panda": 1.5, "spot_topk": 0.5, "zeroshot": -30.0}[method]
    return base + shift + (0.5 if target == "cb" else 0.0) + (1.0 if seed else 0.0)


@pytest.fixture(scope="module")
def transfer():
    rows = []
    for method in ("zeroshot", "vanilla", "panda", "spot_topk"):
        sources = ["top1", "top2"] if method == "spot_topk" else SOURCES
        for s, t, seed in itertools.product(sources, TARGETS, SEEDS):
            b = BASELINE[(t, seed)]
            g = _gain(s, t, seed, method)
            rows.append(dict(backbone=BACKBONE, source=s, target=t, method=method, seed=seed, score=b + g,
                             baseline_score=b, gain=g, rer=g / (100 - b), relative_performance=(b + g) / b,
                             steps_to_baseline=np.nan if method == "zeroshot" else 100.0,
                             baseline_steps=200.0, speedup=np.nan if method == "zeroshot" else 2.0))
    # a second backbone that must be filtered away
    other = pd.DataFrame(rows).assign(backbone="other", gain=99.0)
    return pd.concat([pd.DataFrame(rows), other], ignore_index=True)


@pytest.fixture(scope="module")
def similarity():
    rows = []
    for m, (s, t) in itertools.product(METRICS, itertools.product(SOURCES, TARGETS)):
        v = {"sst2": 0.1, "mnli": 0.8, "imdb": 0.3}[s] + (0.05 if t == "cb" else 0.0)
        rows.append(dict(backbone=BACKBONE, source=s, target=t, metric=m, value=v if m == "max" else v - 0.2,
                         std=0.01, n_pairs=4))
    # a self-pair (rte as source) that the scatter must leave out
    rows.append(dict(backbone=BACKBONE, source="rte", target="rte", metric="max", value=1.0, std=0.0, n_pairs=4))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def transfer_with_self(transfer):
    extra = transfer[(transfer.source == "mnli") & (transfer.target == "rte")].assign(source="rte", gain=50.0)
    return pd.concat([transfer, extra], ignore_index=True)


RHO = {"cos_avg": 0.35, "max": 0.62}


@pytest.fixture(scope="module")
def correlation():
    rows = []
    for m in METRICS:
        for t in TARGETS + ["pooled"]:
            rho = RHO[m] if t == "pooled" else RHO[m] + (0.1 if t == "cb" else -0.1)
            rows.append(dict(backbone=BACKBONE, metric=m, method="vanilla", target=t, n=3 if t != "pooled" else 6,
                             pearson_r=rho, pearson_p=0.2, pearson_ci_low=rho - 0.3, pearson_ci_high=rho + 0.2,
                             spearman_rho=rho, spearman_p=0.01 if m == "max" else 0.3,
                             spearman_ci_low=rho - 0.25, spearman_ci_high=min(rho + 0.2, 1.0),
                             kendall_tau=rho, kendall_p=0.2, kendall_ci_low=rho - 0.3, kendall_ci_high=rho + 0.2))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def retrieval():
    rows = []
    for m, t, k in itertools.product(METRICS, TARGETS, [1, 2, 3]):
        base = 60.0 if t == "rte" else 70.0
        rows.append(dict(backbone=BACKBONE, metric=m, method="vanilla", target=t, k=k,
                         best_of_topk=base + (3.0 if m == "max" else 1.0) + k, oracle=base + 6.0,
                         random=base + 0.5 * k, baseline=base, ndcg=0.8, regret=2.0 - k * 0.5))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def curves():
    rows = []
    steps = [0, 50, 100, 150, 200]
    for seed, step in itertools.product(SEEDS, steps):
        rows.append(dict(backbone=BACKBONE, task="rte", source="", method="baseline", seed=seed, step=step,
                         dev_score=50 + step / 20 + seed, train_loss=1.0 - step / 400))
        for method, src in itertools.product(("vanilla", "panda"), SOURCES):
            rows.append(dict(backbone=BACKBONE, task="rte", source=src, method=method, seed=seed, step=step,
                             dev_score=55 + step / 20 + seed + (2 if src == "mnli" else 0)
                             + (1.5 if method == "panda" else 0),
                             train_loss=0.8 - step / 400))
        rows.append(dict(backbone=BACKBONE, task="rte", source="top2", method="spot_topk", seed=seed, step=step,
                         dev_score=56 + step / 20 + seed, train_loss=0.8 - step / 400))
    return pd.DataFrame(rows)


def _texts(ax):
    return " ".join([ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]).lower()


def _saved(fig, tmp_path, name):
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    style.save_figure(fig, png, pdf)
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
    return png, pdf


def _annotations(ax):
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------- heatmaps
def test_gain_heatmap_orders_rows_by_family_and_shows_seed_means(transfer, tmp_path):
    fig = gain_heatmap(transfer, FAMILIES, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "gain")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sst2", "imdb", "mnli"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rte", "cb"]  # both nli, config order
    text = _texts(ax)
    assert "gain" in text and "vanilla" in text and BACKBONE in text and "source" in text and "target" in text
    assert "score points" in fig.axes[1].get_xlabel()  # colour bar label (bottom bar) carries the unit
    # family names beside the rows; seed-mean gains as annotations (mnli -> cb: 5 + .5 + mean(0, 1) = 6.0)
    ann = _annotations(ax)
    assert "sentiment" in ann and "nli" in ann
    assert "6.0" in ann and "99.0" not in ann  # the other backbone is filtered out
    # the colour map is centred on 0: a zero gain would be the middle colour
    mesh = ax.collections[0]
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    # tick labels take their family's colour: same family, same colour
    colours = [mcolors.to_hex(t.get_color()) for t in ax.get_yticklabels()]
    assert colours[0] == colours[1] != colours[2]


def test_gain_heatmap_spot_topk_rows_sorted_by_k(transfer, tmp_path):
    fig = gain_heatmap(transfer, FAMILIES, BACKBONE, "spot_topk")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["top1", "top2"]


def test_relative_performance_heatmap_in_percent(transfer, tmp_path):
    fig = relative_performance_heatmap(transfer, FAMILIES, BACKBONE, "zeroshot")
    _saved(fig, tmp_path, "relperf")
    ax = fig.axes[0]
    assert "zeroshot" in _texts(ax) and "relative performance" in _texts(ax)
    assert "%" in fig.axes[1].get_xlabel()
    # sst2 -> rte: mean over seeds of (b + g) / b = ((60-32)/60 + (62-31)/62) / 2
    expected = 100 * ((60 - 32) / 60 + (62 - 31) / 62) / 2
    assert f"{expected:.0f}" in _annotations(ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sst2", "imdb", "mnli"]


def test_similarity_heatmap(similarity, tmp_path):
    fig = similarity_heatmap(similarity, FAMILIES, BACKBONE, "max")
    _saved(fig, tmp_path, "sim")
    ax = fig.axes[0]
    assert "max" in _texts(ax) and "similarity" in _texts(ax)
    # rte appears as a source (self-pair row): it has a family (nli) so it comes after mnli
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sst2", "imdb", "mnli", "rte"]
    assert "0.85" in _annotations(ax)  # mnli -> cb


# ---------------------------------------------------------------- scatter, correlations, retrieval
def test_metric_scatter_one_panel_per_target_without_self_pairs(similarity, transfer_with_self, tmp_path):
    fig = metric_scatter(similarity, transfer_with_self, BACKBONE, "max", "vanilla")
    _saved(fig, tmp_path, "scatter")
    assert len(fig.axes) == len(TARGETS)
    by_title = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    assert set(by_title) == set(TARGETS)
    for t, ax in by_title.items():
        # 3 sources, the rte->rte self-pair left out
        pts = ax.collections[0].get_offsets()
        assert len(pts) == 3
        sub_x = similarity[(similarity.metric == "max") & (similarity.target == t) & (similarity.source != t)]
        g = (transfer_with_self[(transfer_with_self.backbone == BACKBONE) & (transfer_with_self.method == "vanilla")
                                & (transfer_with_self.target == t)].groupby("source")["gain"].mean())
        merged = sub_x.set_index("source")["value"].to_frame().join(g)
        r = np.corrcoef(merged["value"], merged["gain"])[0, 1]
        assert f"Pearson r = {r:.2f}" in ax.get_title()
        assert "similarity" in ax.get_xlabel() and "gain" in ax.get_ylabel() and "points" in ax.get_ylabel()
        assert len(ax.lines) >= 1  # the regression line
    assert "max" in fig.get_suptitle()


def test_metric_scatter_zeroshot_uses_relative_performance(similarity, transfer, tmp_path):
    fig = metric_scatter(similarity, transfer, BACKBONE, "cos_avg", "zeroshot")
    assert all("relative performance" in ax.get_ylabel() for ax in fig.axes)
    ys = np.concatenate([ax.collections[0].get_offsets()[:, 1] for ax in fig.axes])
    assert ys.min() > 40 and ys.max() < 100  # in %, not a ratio


def _bars(ax):
    """(label, bar) in x order over every bar container (one container per predictor kind)."""
    from matplotlib.container import BarContainer

    bars = [b for c in ax.containers if isinstance(c, BarContainer) for b in c]
    labels = {round(t.get_position()[0]): t.get_text() for t in ax.get_xticklabels()}
    return sorted(((labels[round(b.get_x() + b.get_width() / 2)], b) for b in bars), key=lambda lb: lb[1].get_x())


def _error_spans(ax):
    err = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"][0]
    return sorted((round(s[0][0]), round(s[0][1], 6), round(s[1][1], 6)) for s in err.lines[2][0].get_segments())


def _legend_texts(ax):
    """The texts of ``ax``'s legend, or of its figure's (correlation_bars puts it below the axes)."""
    legend = ax.get_legend() or ax.figure.legends[0]
    return [t.get_text() for t in legend.get_texts()]


def test_correlation_bars_heights_are_pooled_rho_with_ci(correlation, tmp_path):
    """A table written before #24 (no kind, no maxT p): every row a metric, the raw p behind the `*`, said so."""
    assert "kind" not in correlation and "spearman_p_maxt" not in correlation
    fig = correlation_bars(correlation, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "corr")
    ax = fig.axes[0]
    bars = _bars(ax)
    labels = [lb for lb, _ in bars]
    assert len(bars) == len(METRICS)
    assert labels == ["max", "cos_avg"]  # best first
    assert [b.get_height() for _, b in bars] == pytest.approx([RHO[m] for m in labels])
    assert "spearman" in ax.get_ylabel().lower() and "ρ" in ax.get_ylabel()
    assert "metric" in ax.get_xlabel()
    # error bars span the stored CI
    assert _error_spans(ax) == sorted((labels.index(m), round(RHO[m] - 0.25, 6), round(RHO[m] + 0.2, 6))
                                      for m in METRICS)
    assert any(line.get_ydata()[0] == 0 for line in ax.lines)  # zero line
    assert _annotations(ax) == ["*"]  # max has p = 0.01, cos_avg 0.3
    legend = " ".join(_legend_texts(ax))
    assert "NOT adjusted" in legend and "source-only" not in legend  # no comparators in an old table
    assert not [line for line in ax.lines if line.get_gid() == "source_only"]


# a table in the #24 schema: metrics, the learned ranking and three comparators; the raw p would star every
# predictor, the family-adjusted (maxT) p only max and learned
RHO24 = {"max": 0.62, "cos_avg": 0.35, "token_cos": 0.10, "learned": 0.70, "source_only": 0.40,
         "family_only": 0.20, "random": 0.02}
KIND24 = {"max": "metric", "cos_avg": "metric", "token_cos": "metric", "learned": "learned",
          "source_only": "comparator", "family_only": "comparator", "random": "comparator"}


@pytest.fixture(scope="module")
def correlation24():
    rows = []
    for m, rho in RHO24.items():
        for t in TARGETS + ["pooled"]:
            pooled = t == "pooled"
            r = rho if pooled else rho + (0.1 if t == "cb" else -0.1)
            rows.append(dict(backbone=BACKBONE, metric=m, kind=KIND24[m], method="vanilla", target=t,
                             n=3 if not pooled else 6, n_targets=2, n_sources=3, permutations=6, exact=True,
                             **{f"{s}_{v}": r for s, v in (("pearson", "r"), ("spearman", "rho"), ("kendall", "tau"))},
                             **{f"{s}_ci_low": r - 0.3 for s in ("pearson", "spearman", "kendall")},
                             **{f"{s}_ci_high": min(r + 0.2, 1.0) for s in ("pearson", "spearman", "kendall")},
                             **{f"{s}_p": 0.01 for s in ("pearson", "spearman", "kendall")},
                             **{f"{s}_p_maxt": (0.02 if m in ("max", "learned") else 0.3) if pooled else np.nan
                                for s in ("pearson", "spearman", "kendall")},
                             **{f"{s}_{c}": np.nan if not pooled else 0.1
                                for s in ("pearson", "spearman", "kendall") for c in ("p_se", "mde", "mde_maxt")}))
    return pd.DataFrame(rows)


def test_correlation_bars_show_comparators_learned_and_source_only_line(correlation24, tmp_path):
    fig = correlation_bars(correlation24, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "corr24")
    ax = fig.axes[0]
    bars = _bars(ax)
    # metrics best first, then the learned ranking, then the comparators in their fixed order
    assert [lb for lb, _ in bars] == ["max", "cos_avg", "token_cos", "learned", "source_only", "family_only",
                                      "random"]
    assert [b.get_height() for lb, b in bars] == pytest.approx([RHO24[lb] for lb, _ in bars])
    # one container per kind; metrics plain, learned and comparators hatched, comparators grey
    from matplotlib.container import BarContainer
    sizes = [len(c) for c in ax.containers if isinstance(c, BarContainer)]
    assert sizes == [3, 1, 3]
    look = {lb: (mcolors.to_hex(b.get_facecolor()), b.get_hatch()) for lb, b in bars}
    assert look["max"] == look["cos_avg"] and look["max"][1] is None
    assert look["source_only"] == look["random"] and look["source_only"][1] and look["learned"][1]
    assert len({look["max"][0], look["learned"][0], look["source_only"][0]}) == 3
    r, g, b = mcolors.to_rgb(look["source_only"][0])
    assert r == g == b  # grey
    # the source-only reference line, and a separator between metrics and the rest (at x = 2.5)
    ref = [line for line in ax.lines if line.get_gid() == "source_only"]
    assert len(ref) == 1 and list(ref[0].get_ydata()) == pytest.approx([0.40, 0.40])
    assert any(list(line.get_xdata()) == [2.5, 2.5] for line in ax.lines)
    # CIs on every bar, comparators included
    assert _error_spans(ax) == sorted((i, round(RHO24[lb] - 0.3, 6), round(min(RHO24[lb] + 0.2, 1.0), 6))
                                      for i, (lb, _) in enumerate(bars))
    # `*` follows the family-adjusted p: max (x 0) and learned (x 3), not the raw p that is 0.01 everywhere
    stars = sorted(round(t.get_position()[0]) for t in ax.texts if t.get_text() == "*")
    assert stars == [0, 3]
    legend = " ".join(_legend_texts(ax))
    assert "maxT-adjusted" in legend and "NOT adjusted" not in legend
    assert "comparator" in legend and "learned" in legend and "source-only" in legend and "jackknife" in legend
    # per-target points: 2 targets for each of the 7 predictors
    from matplotlib.collections import PathCollection
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 1 and len(points[0].get_offsets()) == 2 * len(RHO24)


def test_correlation_bars_caption_names_the_interval_and_comparators():
    from types import SimpleNamespace

    from promptgrid.figures.correlation_bars import _caption

    text = _caption(SimpleNamespace(analysis=SimpleNamespace(outcome="gain")), "vanilla")
    for word in ("two-way jackknife-t", "targets and sources", "source_only", "family_only", "random",
                 "learned", "maxT", "dashed line"):
        assert word in text, word


def test_topk_curves_have_oracle_and_random(retrieval, tmp_path):
    """A table written before #24 (no kind, no held-out oracle, 2 targets): lines as before, no CI band."""
    from promptgrid.figures.topk_curves import RANDOM_LABEL

    fig = topk_curves(retrieval, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "topk")
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    assert {"oracle", RANDOM_LABEL, "max", "cos_avg"} <= set(by_label)
    assert list(by_label["oracle"].get_ydata()) == pytest.approx([6.0, 6.0, 6.0])  # gain over baseline
    assert list(by_label[RANDOM_LABEL].get_ydata()) == pytest.approx([0.5, 1.0, 1.5])
    assert list(by_label["max"].get_ydata()) == pytest.approx([4.0, 5.0, 6.0])
    assert all(by_label[m].get_linestyle() == "-" for m in METRICS)
    assert not ax.collections  # 2 targets: no t-interval, so no band
    assert "no CI from 2 targets" in ax.get_title()
    assert "k" in ax.get_xlabel() and "points" in ax.get_ylabel()
    # analysis.retrieval_table's convention: values already gains, baseline = 0 -> the same curves
    cols = ("best_of_topk", "oracle", "random")
    as_gains = retrieval.assign(**{c: retrieval[c] - retrieval["baseline"] for c in cols}, baseline=0.0)
    lines0 = {line.get_label(): line for line in topk_curves(as_gains, BACKBONE, "vanilla").axes[0].lines}
    for name in ("oracle", RANDOM_LABEL, "max", "cos_avg"):
        assert list(lines0[name].get_ydata()) == pytest.approx(list(by_label[name].get_ydata()))
    fig2 = topk_curves(retrieval, BACKBONE, "vanilla", as_gain=False)
    lines2 = {line.get_label(): line for line in fig2.axes[0].lines}
    assert list(lines2["oracle"].get_ydata()) == pytest.approx([71.0] * 3)
    assert "baseline" in lines2


TARGETS24 = ["rte", "cb", "mrpc", "qnli"]
KIND_TOPK = {"cos_avg": "metric", "max": "metric", "learned": "learned", "source_only": "comparator",
             "random": "comparator"}


def _gain24(m, i, k):
    # distinct per target, so the sd is not 0: max is the best metric, cos_avg worse, learned best of all
    return {"cos_avg": 1.0, "max": 3.0, "learned": 3.5, "source_only": 2.0, "random": 0.5}[m] + k + 0.7 * i ** 1.5


@pytest.fixture(scope="module")
def retrieval24():
    rows = []
    for m, (i, t), k in itertools.product(KIND_TOPK, enumerate(TARGETS24), [1, 2]):
        rows.append(dict(backbone=BACKBONE, metric=m, kind=KIND_TOPK[m], method="vanilla", target=t, k=k,
                         n_sources=6, n_missing=0, n_seeds=3, best_of_topk=_gain24(m, i, k), oracle=8.0 + i,
                         random=0.5 * k, baseline=0.0, ndcg=0.8, regret=1.0, oracle_heldout=6.0 + i * i,
                         best_of_topk_heldout=_gain24(m, i, k) - 1.0, random_heldout=0.5 * k - 0.2))
    return pd.DataFrame(rows)


def _by_hand_t_interval(values):
    from scipy import stats

    v = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return v.mean() - half, v.mean() + half


def _band_bounds(band, x):
    """(lowest, highest) y of ``band``'s polygon at ``x``."""
    v = band.get_paths()[0].vertices
    ys = v[np.isclose(v[:, 0], x), 1]
    return ys.min(), ys.max()


def test_topk_curves_comparators_dashed_heldout_oracle_and_t_bands(retrieval24, tmp_path):
    from promptgrid.figures.topk_curves import BIASED_ORACLE_LABEL, HELDOUT_ORACLE_LABEL

    fig = topk_curves(retrieval24, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "topk24")
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    assert {"cos_avg", "max", "learned ranking", "source_only (comparator)", "random (comparator)",
            BIASED_ORACLE_LABEL, HELDOUT_ORACLE_LABEL} <= set(by_label)
    assert "oracle" not in by_label  # the plain oracle is labelled as biased once a held-out one exists
    # metrics solid, learned ranking and comparators dashed
    assert [by_label[m].get_linestyle() for m in ("cos_avg", "max")] == ["-", "-"]
    assert {by_label[m].get_linestyle() for m in ("learned ranking", "source_only (comparator)",
                                                  "random (comparator)")} == {"--"}
    # means over targets
    assert list(by_label[HELDOUT_ORACLE_LABEL].get_ydata()) == pytest.approx([np.mean([6.0 + i * i for i in
                                                                                       range(4)])] * 2)
    assert list(by_label[BIASED_ORACLE_LABEL].get_ydata()) == pytest.approx([9.5, 9.5])
    assert list(by_label["learned ranking"].get_ydata()) == pytest.approx(
        [np.mean([_gain24("learned", i, k) for i in range(4)]) for k in (1, 2)])
    # bands: the held-out oracle, the best metric (max, not cos_avg), the learned ranking, source_only
    bands = {c.get_gid(): c for c in ax.collections if c.get_gid()}
    assert set(bands) == {"oracle", "max", "learned", "source_only"}
    lo, hi = _by_hand_t_interval([6.0 + i * i for i in range(4)])
    for k in (1, 2):
        assert _band_bounds(bands["oracle"], k) == pytest.approx((lo, hi))
        for m in ("max", "learned", "source_only"):
            assert _band_bounds(bands[m], k) == pytest.approx(_by_hand_t_interval([_gain24(m, i, k)
                                                                                    for i in range(4)]))
    legend = _legend_texts(ax)
    assert legend[:2] == ["cos_avg", "max"] and legend[2:5] == ["learned ranking", "source_only (comparator)",
                                                                 "random (comparator)"]
    assert BIASED_ORACLE_LABEL in legend and HELDOUT_ORACLE_LABEL in legend


def test_topk_t_interval_needs_three_targets(retrieval24):
    from promptgrid.figures.topk_curves import t_interval

    three = retrieval24[retrieval24.target.isin(TARGETS24[:3])]
    got = t_interval(three, ["metric", "k"], "best_of_topk")
    row = got[(got.metric == "max") & (got.k == 1)].iloc[0]
    assert (row.ci_low, row.ci_high) == pytest.approx(_by_hand_t_interval([_gain24("max", i, 1) for i in range(3)]))
    assert row.n_targets == 3
    two = t_interval(retrieval24[retrieval24.target.isin(TARGETS24[:2])], ["metric", "k"], "best_of_topk")
    assert two["ci_low"].isna().all() and two["ci_high"].isna().all()
    assert two["mean"].notna().all()
    # a NaN value leaves its target out (3 finite of 4 -> the 3-target interval)
    with_nan = retrieval24.assign(best_of_topk=np.where(retrieval24.target == TARGETS24[3], np.nan,
                                                        retrieval24.best_of_topk))
    again = t_interval(with_nan, ["metric", "k"], "best_of_topk")
    assert again[(again.metric == "max") & (again.k == 1)].iloc[0].ci_low == pytest.approx(row.ci_low)


def test_topk_curves_without_heldout_or_one_seed(retrieval24):
    """A one-seed study: oracle_heldout all NaN -> no held-out line, the plain oracle named plainly."""
    from promptgrid.figures.topk_curves import HELDOUT_ORACLE_LABEL

    one_seed = retrieval24.assign(oracle_heldout=np.nan, n_seeds=1)
    labels = [line.get_label() for line in topk_curves(one_seed, BACKBONE, "vanilla").axes[0].lines]
    assert "oracle" in labels and HELDOUT_ORACLE_LABEL not in labels
    old = retrieval24.drop(columns=["kind", "oracle_heldout", "best_of_topk_heldout", "random_heldout", "n_seeds"])
    ax = topk_curves(old, BACKBONE, "vanilla").axes[0]
    styles = {line.get_label(): line.get_linestyle() for line in ax.lines}
    assert styles["learned"] == styles["source_only"] == "-"  # no kind column: all drawn as metrics


def test_topk_curves_caption_says_what_the_bands_and_oracles_are():
    from promptgrid.figures.topk_curves import _caption

    text = _caption(None, "vanilla")
    for word in ("t-interval", "biased upward", "held-out", "source_only", "family_only", "dashed"):
        assert word in text, word


def test_correlation_and_topk_legible_with_a_full_predictor_set(tmp_path):
    """16 metrics + learned + 3 comparators over 9 targets: both figures still read at report width."""
    names = [f"metric_{i:02d}" for i in range(16)]
    kinds = {**{m: "metric" for m in names}, "learned": "learned", "source_only": "comparator",
             "family_only": "comparator", "random": "comparator"}
    targets = [f"target_{j}" for j in range(9)]
    rng = np.random.default_rng(0)
    corr, retr = [], []
    for m, kd in kinds.items():
        for t in targets + ["pooled"]:
            r = float(rng.uniform(-0.5, 0.9))
            corr.append(dict(backbone=BACKBONE, metric=m, kind=kd, method="vanilla", target=t, spearman_rho=r,
                             spearman_ci_low=r - 0.3, spearman_ci_high=min(r + 0.2, 1.0), spearman_p=0.01,
                             spearman_p_maxt=0.04 if t == "pooled" else np.nan))
        for (j, t), k in itertools.product(enumerate(targets), [1, 3, 5]):
            retr.append(dict(backbone=BACKBONE, metric=m, kind=kd, method="vanilla", target=t, k=k,
                             best_of_topk=float(rng.normal(2 + k, 1)), oracle=8.0 + j % 3, random=0.5 * k,
                             baseline=0.0, oracle_heldout=6.0 + j % 4))
    for name, fig in (("corr", correlation_bars(pd.DataFrame(corr), BACKBONE, "vanilla")),
                      ("topk", topk_curves(pd.DataFrame(retr), BACKBONE, "vanilla"))):
        png, _ = _saved(fig, tmp_path, name)
        _assert_legible(fig, png, name)


# ---------------------------------------------------------------- training
def test_learning_curves(curves, tmp_path):
    fig = learning_curves(curves, BACKBONE, "rte")
    _saved(fig, tmp_path, "curves")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "baseline"
    assert any(s.startswith("vanilla (mean of 3 sources)") for s in legend)
    assert any(s.startswith("panda") for s in legend) and "spot_topk (top2)" in legend
    assert "step" in ax.get_xlabel() and "dev score" in ax.get_ylabel() and "rte" in ax.get_title()
    # mean over sources then seeds at step 0: 55 + 0.5 + 2/3
    vanilla = [line for line in ax.lines if line.get_label().startswith("vanilla")][0]
    assert vanilla.get_ydata()[0] == pytest.approx(55.5 + 2 / 3)
    best = learning_curves(curves, BACKBONE, "rte", sources="best")
    assert any("best source: mnli" in t.get_text() for t in best.axes[0].get_legend().get_texts())


def test_method_bars(transfer, tmp_path):
    fig = method_bars(transfer, None, BACKBONE)
    _saved(fig, tmp_path, "methods")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cb", "rte", "mean"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["baseline", "vanilla", "spot_topk (top1)", "spot_topk (top2)", "panda"]
    # baseline bar on rte = mean over seeds of the baseline scores
    base_bars = ax.containers[0]
    assert base_bars[1].get_height() == pytest.approx(61.0)
    assert base_bars[0].get_height() == pytest.approx(72.0)
    assert "score points" in ax.get_ylabel() and "target" in ax.get_xlabel()
    # explicit baselines table (task column) and best-source bars
    bl = pd.DataFrame([dict(backbone=BACKBONE, task=t, seed=s, score=v) for (t, s), v in BASELINE.items()])
    fig2 = method_bars(transfer, bl, BACKBONE, best_source=True)
    legend2 = [t.get_text() for t in fig2.axes[0].get_legend().get_texts()]
    assert "vanilla (best source)" in legend2 and "panda (best source)" in legend2


# ---------------------------------------------------------------- errors and reproducibility
def test_errors_name_the_culprit(transfer, similarity, correlation, retrieval):
    with pytest.raises(ValueError, match="method='nope'"):
        gain_heatmap(transfer, FAMILIES, BACKBONE, "nope")
    with pytest.raises(ValueError, match="backbone='ghost'"):
        correlation_bars(correlation, "ghost", "vanilla")
    with pytest.raises(ValueError, match="gain"):
        gain_heatmap(transfer.drop(columns="gain"), FAMILIES, BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="spearman_ci_low"):
        correlation_bars(correlation.drop(columns="spearman_ci_low"), BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="pooled"):
        correlation_bars(correlation[correlation.target != "pooled"], BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="oracle"):
        topk_curves(retrieval.drop(columns="oracle"), BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="metric='nope'"):
        similarity_heatmap(similarity, FAMILIES, BACKBONE, "nope")
    with pytest.raises(ValueError, match="self-pairs"):  # spot_topk's top{k} sources have no similarity
        metric_scatter(similarity, transfer, BACKBONE, "max", "spot_topk")
    with pytest.raises(ValueError, match="task='nope'"):
        learning_curves(pd.DataFrame(columns=["backbone", "task", "source", "method", "seed", "step",
                                                    "dev_score"]).astype({"backbone": str, "task": str}),
                              BACKBONE, "nope")


def test_saving_is_byte_reproducible(transfer, correlation, tmp_path):
    fig = gain_heatmap(transfer, FAMILIES, BACKBONE, "vanilla")
    style.save_figure(fig, tmp_path / "a.png", tmp_path / "a.pdf")
    style.save_figure(fig, tmp_path / "b.png", tmp_path / "b.pdf")
    # a figure rebuilt from the same data gives the same bytes too
    style.save_figure(gain_heatmap(transfer, FAMILIES, BACKBONE, "vanilla"), tmp_path / "c.png",
                      tmp_path / "c.pdf")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes() == (tmp_path / "c.png").read_bytes()
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes() == (tmp_path / "c.pdf").read_bytes()
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()
    # overwriting in place works and leaves no temporary file
    style.save_figure(correlation_bars(correlation, BACKBONE, "vanilla"), tmp_path / "a.png",
                      tmp_path / "a.pdf")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png", "b.pdf", "b.png", "c.pdf", "c.png"]


def test_does_not_touch_global_pyplot_state(transfer):
    import matplotlib
    import matplotlib.pyplot as plt

    before_rc = dict(matplotlib.rcParams)
    before_figs = plt.get_fignums()
    gain_heatmap(transfer, FAMILIES, BACKBONE, "panda")
    assert plt.get_fignums() == before_figs
    assert dict(matplotlib.rcParams) == before_rc


# ---------------------------------------------------------------- legible in the HTML report
def _study_tables(cfg, backbone: str) -> dict:
    """Every table a figure kind reads, in contract format, shaped like the study ``cfg`` (its tasks, methods,
    metrics, seeds and k): made-up but distinct numbers, so each kind draws at the size a real run gives."""
    from promptgrid.figures.base import per_source_in
    from promptgrid.registry import METHODS, SIMILARITIES

    rng = np.random.default_rng(0)
    methods = list(cfg.transfer.methods)
    srcs = {m: list(cfg.sources) if METHODS[m].per_source else METHODS[m].row_sources(cfg) for m in methods}
    transfer = []
    for m in methods:
        for s, t, seed in itertools.product(srcs[m], cfg.targets, cfg.seeds):
            b, g = 60.0 + 5 * seed, float(rng.normal(0, 4)) - (30.0 if m == "zeroshot" else 0.0)
            transfer.append(dict(backbone=backbone, source=s, target=t, method=m, seed=seed, score=b + g,
                                 baseline_score=b, gain=g, rer=g / (100 - b), relative_performance=(b + g) / b,
                                 steps_to_baseline=100.0, baseline_steps=200.0, speedup=2.0))
    metrics = list(cfg.metrics.names) + [f"early_{m}" for m in cfg.metrics.names if SIMILARITIES[m].scope == "prompt"]
    similarity = [dict(backbone=backbone, source=s, target=t, metric=m, value=float(rng.uniform(-0.2, 1.0)),
                       std=0.01, n_pairs=4) for m, s, t in itertools.product(metrics, cfg.sources, cfg.targets)]
    correlation, retrieval = [], []
    for m, metric in itertools.product(per_source_in(cfg), cfg.metrics.names):
        for t in list(cfg.targets) + ["pooled"]:
            rho = float(rng.uniform(-0.6, 0.9))
            correlation.append(dict(backbone=backbone, metric=metric, method=m, target=t, n=len(cfg.sources),
                                    **{f"{stat}_{v}": rho for stat, v in (("pearson", "r"), ("spearman", "rho"),
                                                                          ("kendall", "tau"))},
                                    **{f"{stat}_{c}": rho + d for stat in ("pearson", "spearman", "kendall")
                                       for c, d in (("ci_low", -0.3), ("ci_high", 0.1))},
                                    **{f"{stat}_p": 0.01 for stat in ("pearson", "spearman", "kendall")}))
        for t, k in itertools.product(cfg.targets, cfg.analysis.top_k):
            retrieval.append(dict(backbone=backbone, metric=metric, method=m, target=t, k=k, best_of_topk=2.0 + k,
                                  oracle=6.0, random=0.5 * k, baseline=0.0, ndcg=0.8, regret=4.0 - k))
    curves = []
    for t, seed, step in itertools.product(cfg.targets, cfg.seeds,
                                           range(0, cfg.training.steps + 1, cfg.training.eval_every)):
        for m in ["baseline"] + [m for m in methods if METHODS[m].trains]:
            for s in [""] if m == "baseline" else srcs[m]:
                curves.append(dict(backbone=backbone, task=t, source=s, method=m, seed=seed, step=step,
                                   dev_score=50 + step / 10 + float(rng.normal(0, 1)), train_loss=1.0))
    return {name: pd.DataFrame(rows) for name, rows in (("transfer", transfer), ("similarity", similarity),
                                                          ("correlation", correlation), ("retrieval", retrieval),
                                                          ("curves", curves))}


def _shown_text_px(fig, png) -> float:
    """The smallest visible text of ``fig``, in screen pixels, where the report shows ``png``: points -> PNG
    pixels at the PNG's own pixels per inch, then shrunk to the report's content width if the PNG is wider."""
    from matplotlib.text import Text
    from PIL import Image

    width_px = Image.open(png).size[0]
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) / 72 * (width_px / fig.get_figwidth()) * min(1.0, style.REPORT_VIEW_WIDTH_PX / width_px)


def _assert_legible(fig, png, what: str) -> None:
    from PIL import Image

    width_px = Image.open(png).size[0]
    assert width_px <= style.REPORT_PNG_WIDTH_PX, f"{what}: PNG {width_px} px wide"
    assert _shown_text_px(fig, png) >= 8.0, f"{what}: smallest text {_shown_text_px(fig, png):.1f} px in the report"
    assert fig.get_figwidth() <= style.MAX_FIGURE_WIDTH_IN + 1e-9, f"{what}: {fig.get_figwidth()} in wide"


# the kinds whose width grows with the grid's tasks (the other heatmaps share style.task_heatmap with gain_heatmap)
GRID_KINDS = ("gain_heatmap", "metric_scatter", "method_bars")


@pytest.mark.parametrize("study, kinds", [("config.yaml", None), ("studies/bigbench-21x9.yaml", GRID_KINDS)])
def test_every_figure_kind_is_legible_at_report_width(repo, study, kinds, tmp_path):
    """Snakemake's report shows a PNG at most ~780 px wide: every figure kind, drawn at the size the default
    study gives (and those that grow with the grid, at the 21 x 9 grid's), is a PNG at most
    REPORT_PNG_WIDTH_PX wide whose smallest text still reads at >= 8 px there, within MAX_FIGURE_WIDTH_IN."""
    from promptgrid.pipeline.plugins import load_config_with_plugins
    from promptgrid.registry import FIGURES

    cfg = load_config_with_plugins(repo / study)
    tables = _study_tables(cfg, BACKBONE)
    drawn = []
    for spec in FIGURES.ordered():
        if (kinds is not None and spec.name not in kinds) or not spec.variants(cfg):
            continue  # a kind the study does not draw (cross_model: test_cross_model_bars_legible_...)
        variant = spec.variants(cfg)[0]  # the variants of a kind share its shape
        fig = spec.draw(tables, cfg, BACKBONE, variant)
        png, _ = _saved(fig, tmp_path, spec.name)
        _assert_legible(fig, png, f"{spec.name} ({study})")
        drawn.append(spec.name)
    assert set(drawn) == set(kinds or [s.name for s in FIGURES.values() if s.variants(cfg)])
    assert len(drawn) >= (len(kinds) if kinds else len(FIGURES) - 1)


def test_cross_model_bars_legible_at_report_width(tmp_path):
    from promptgrid.figures.cross_model import cross_model_bars

    rows = [dict(backbone_a="minilm", backbone_b="smollm2", projector=p, fit=o, task=t, seed=s, mode=m,
                 score=60.0 + s, baseline_score=58.0, gain=2.0 + s)
            for p, o, t, s, m in itertools.product(["linear", "mlp"], ["distance", "task"],
                                                   ["medicine_sentence", "reviews_sentence", "hotels_text", "fever"],
                                                   SEEDS, ["zeroshot", "init"])]
    fig = cross_model_bars(pd.DataFrame(rows))
    png, _ = _saved(fig, tmp_path, "cross")
    _assert_legible(fig, png, "cross_model_bars")
