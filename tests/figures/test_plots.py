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


def test_correlation_bars_heights_are_pooled_rho_with_ci(correlation, tmp_path):
    fig = correlation_bars(correlation, BACKBONE, "vanilla")
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
    fig = topk_curves(retrieval, BACKBONE, "vanilla")
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
    lines0 = {line.get_label(): line for line in topk_curves(as_gains, BACKBONE, "vanilla").axes[0].lines}
    for name in ("oracle", "random", "max", "cos_avg"):
        assert list(lines0[name].get_ydata()) == pytest.approx(list(by_label[name].get_ydata()))
    fig2 = topk_curves(retrieval, BACKBONE, "vanilla", as_gain=False)
    lines2 = {line.get_label(): line for line in fig2.axes[0].lines}
    assert list(lines2["oracle"].get_ydata()) == pytest.approx([71.0] * 3)
    assert "baseline" in lines2


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
