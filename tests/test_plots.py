"""Figures: built from small contract-format frames, saved, and read back through their axes."""
from __future__ import annotations

import itertools

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from promptgrid import plots

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
    plots.save_figure(fig, png, pdf)
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
    return png, pdf


def _annotations(ax):
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------- heatmaps
def test_gain_heatmap_orders_rows_by_family_and_shows_seed_means(transfer, tmp_path):
    fig = plots.gain_heatmap(transfer, FAMILIES, BACKBONE, "vanilla")
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
    fig = plots.gain_heatmap(transfer, FAMILIES, BACKBONE, "spot_topk")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["top1", "top2"]


def test_relative_performance_heatmap_in_percent(transfer, tmp_path):
    fig = plots.relative_performance_heatmap(transfer, FAMILIES, BACKBONE)
    _saved(fig, tmp_path, "relperf")
    ax = fig.axes[0]
    assert "zero-shot" in _texts(ax) and "relative performance" in _texts(ax)
    assert "%" in fig.axes[1].get_xlabel()
    # sst2 -> rte: mean over seeds of (b + g) / b = ((60-32)/60 + (62-31)/62) / 2
    expected = 100 * ((60 - 32) / 60 + (62 - 31) / 62) / 2
    assert f"{expected:.0f}" in _annotations(ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sst2", "imdb", "mnli"]


def test_similarity_heatmap(similarity, tmp_path):
    fig = plots.similarity_heatmap(similarity, FAMILIES, BACKBONE, "max")
    _saved(fig, tmp_path, "sim")
    ax = fig.axes[0]
    assert "max" in _texts(ax) and "similarity" in _texts(ax)
    # rte appears as a source (self-pair row): it has a family (nli) so it comes after mnli
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sst2", "imdb", "mnli", "rte"]
    assert "0.85" in _annotations(ax)  # mnli -> cb


# ---------------------------------------------------------------- scatter, correlations, retrieval
def test_metric_scatter_one_panel_per_target_without_self_pairs(similarity, transfer_with_self, tmp_path):
    fig = plots.metric_scatter(similarity, transfer_with_self, BACKBONE, "max", "vanilla")
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
    fig = plots.metric_scatter(similarity, transfer, BACKBONE, "cos_avg", "zeroshot")
    assert all("relative performance" in ax.get_ylabel() for ax in fig.axes)
    ys = np.concatenate([ax.collections[0].get_offsets()[:, 1] for ax in fig.axes])
    assert ys.min() > 40 and ys.max() < 100  # in %, not a ratio


def test_correlation_bars_heights_are_pooled_rho_with_ci(correlation, tmp_path):
    fig = plots.correlation_bars(correlation, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "corr")
    ax = fig.axes[0]
    bars = list(ax.containers[0])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(bars) == len(METRICS)
    assert labels == ["max", "cos_avg"]  # best first
    assert [b.get_height() for b in bars] == pytest.approx([RHO[m] for m in labels])
    assert "spearman" in ax.get_ylabel().lower() and "ρ" in ax.get_ylabel()
    assert "metric" in ax.get_xlabel()
    # error bars span the bootstrap CI
    err = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"][0]
    segs = err.lines[2][0].get_segments()
    spans = sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in segs)
    assert spans == sorted((round(RHO[m] - 0.25, 6), round(RHO[m] + 0.2, 6)) for m in METRICS)
    assert any(line.get_ydata()[0] == 0 for line in ax.lines)  # zero line
    assert "*" in _annotations(ax)  # max has p = 0.01


def test_topk_curves_have_oracle_and_random(retrieval, tmp_path):
    fig = plots.topk_curves(retrieval, BACKBONE, "vanilla")
    _saved(fig, tmp_path, "topk")
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    assert {"oracle", "random", "max", "cos_avg"} <= set(by_label)
    assert list(by_label["oracle"].get_ydata()) == pytest.approx([6.0, 6.0, 6.0])  # gain over baseline
    assert list(by_label["random"].get_ydata()) == pytest.approx([0.5, 1.0, 1.5])
    assert list(by_label["max"].get_ydata()) == pytest.approx([4.0, 5.0, 6.0])
    assert "k" in ax.get_xlabel() and "points" in ax.get_ylabel()
    # analysis.retrieval_table's convention: values already gains, baseline = 0 -> the same curves
    cols = ("best_of_topk", "oracle", "random")
    as_gains = retrieval.assign(**{c: retrieval[c] - retrieval["baseline"] for c in cols}, baseline=0.0)
    lines0 = {line.get_label(): line for line in plots.topk_curves(as_gains, BACKBONE, "vanilla").axes[0].lines}
    for name in ("oracle", "random", "max", "cos_avg"):
        assert list(lines0[name].get_ydata()) == pytest.approx(list(by_label[name].get_ydata()))
    fig2 = plots.topk_curves(retrieval, BACKBONE, "vanilla", as_gain=False)
    lines2 = {line.get_label(): line for line in fig2.axes[0].lines}
    assert list(lines2["oracle"].get_ydata()) == pytest.approx([71.0] * 3)
    assert "baseline" in lines2


# ---------------------------------------------------------------- training
def test_learning_curves(curves, tmp_path):
    fig = plots.learning_curves(curves, BACKBONE, "rte")
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
    best = plots.learning_curves(curves, BACKBONE, "rte", sources="best")
    assert any("best source: mnli" in t.get_text() for t in best.axes[0].get_legend().get_texts())


def test_method_bars(transfer, tmp_path):
    fig = plots.method_bars(transfer, None, BACKBONE)
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
    fig2 = plots.method_bars(transfer, bl, BACKBONE, best_source=True)
    legend2 = [t.get_text() for t in fig2.axes[0].get_legend().get_texts()]
    assert "vanilla (best source)" in legend2 and "panda (best source)" in legend2


# ---------------------------------------------------------------- errors and reproducibility
def test_errors_name_the_culprit(transfer, similarity, correlation, retrieval):
    with pytest.raises(ValueError, match="method='nope'"):
        plots.gain_heatmap(transfer, FAMILIES, BACKBONE, "nope")
    with pytest.raises(ValueError, match="backbone='ghost'"):
        plots.correlation_bars(correlation, "ghost", "vanilla")
    with pytest.raises(ValueError, match="gain"):
        plots.gain_heatmap(transfer.drop(columns="gain"), FAMILIES, BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="spearman_ci_low"):
        plots.correlation_bars(correlation.drop(columns="spearman_ci_low"), BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="pooled"):
        plots.correlation_bars(correlation[correlation.target != "pooled"], BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="oracle"):
        plots.topk_curves(retrieval.drop(columns="oracle"), BACKBONE, "vanilla")
    with pytest.raises(ValueError, match="metric='nope'"):
        plots.similarity_heatmap(similarity, FAMILIES, BACKBONE, "nope")
    with pytest.raises(ValueError, match="self-pairs"):  # spot_topk's top{k} sources have no similarity
        plots.metric_scatter(similarity, transfer, BACKBONE, "max", "spot_topk")
    with pytest.raises(ValueError, match="task='nope'"):
        plots.learning_curves(pd.DataFrame(columns=["backbone", "task", "source", "method", "seed", "step",
                                                    "dev_score"]).astype({"backbone": str, "task": str}),
                              BACKBONE, "nope")


def test_saving_is_byte_reproducible(transfer, correlation, tmp_path):
    fig = plots.gain_heatmap(transfer, FAMILIES, BACKBONE, "vanilla")
    plots.save_figure(fig, tmp_path / "a.png", tmp_path / "a.pdf")
    plots.save_figure(fig, tmp_path / "b.png", tmp_path / "b.pdf")
    # a figure rebuilt from the same data gives the same bytes too
    plots.save_figure(plots.gain_heatmap(transfer, FAMILIES, BACKBONE, "vanilla"), tmp_path / "c.png",
                      tmp_path / "c.pdf")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes() == (tmp_path / "c.png").read_bytes()
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes() == (tmp_path / "c.pdf").read_bytes()
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()
    # overwriting in place works and leaves no temporary file
    plots.save_figure(plots.correlation_bars(correlation, BACKBONE, "vanilla"), tmp_path / "a.png",
                      tmp_path / "a.pdf")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png", "b.pdf", "b.png", "c.pdf", "c.png"]


def test_does_not_touch_global_pyplot_state(transfer):
    import matplotlib
    import matplotlib.pyplot as plt

    before_rc = dict(matplotlib.rcParams)
    before_figs = plt.get_fignums()
    plots.gain_heatmap(transfer, FAMILIES, BACKBONE, "panda")
    assert plt.get_fignums() == before_figs
    assert dict(matplotlib.rcParams) == before_rc
