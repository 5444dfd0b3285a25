"""A method's spec says how it is judged and drawn; analysis and figures read the spec, never a method's name.

The second test plugin (tests/plugins/toy_evaluator.py, method "reversed") is judged on relative performance,
as zero-shot transfer is. Each test below puts it beside zeroshot and a gain-judged method in one frame and
checks that every table and figure treats it exactly as zeroshot: the outcome column correlated, the findings'
unit, the summary's words, the steps, the figure variants, the axis and the bars.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from promptgrid.analysis import correlation as corr
from promptgrid.analysis import findings, gains, summary
from promptgrid.analysis.stats import correlate
from promptgrid.figures import base
from promptgrid.pipeline.plugins import load_plugins
from promptgrid.registry import FIGURES, METHODS, RELATIVE, MethodSpec

load_plugins([Path(__file__).parents[1] / "plugins" / "toy_evaluator.py"])

SOURCES, TARGETS, SEEDS = ["s1", "s2", "s3", "s4"], ["t1", "t2"], [0, 1]
FAMILIES = {"s1": "A", "s2": "A", "s3": "B", "s4": "B", "t1": "A", "t2": "B"}
# the target's own score differs by seed, so a seed-mean gain and a seed-mean ratio rank sources differently
BASE = {(t, k): b for (t, k), b in zip(itertools.product(TARGETS, SEEDS), (20.0, 80.0, 30.0, 90.0))}
RAW = {"s1": (30.0, 70.0), "s2": (10.0, 90.0), "s3": (25.0, 60.0), "s4": (18.0, 88.0)}  # score per seed
VALUE = {"s1": 0.9, "s2": 0.1, "s3": 0.5, "s4": 0.3}
METHODS_HERE = ("zeroshot", "reversed", "vanilla")


def transfer_frame() -> pd.DataFrame:
    runs = pd.DataFrame([{"backbone": "m", "source": s, "target": t, "method": m, "seed": k,
                          "score": RAW[s][k] + (3.0 if t == "t2" else 0.0)}
                         for m in METHODS_HERE for s, t, k in itertools.product(SOURCES, TARGETS, SEEDS)])
    curves = pd.DataFrame(
        [{"backbone": "m", "task": t, "source": t, "method": "baseline", "seed": k, "step": step,
          "dev_score": BASE[(t, k)]} for t, k, step in itertools.product(TARGETS, SEEDS, (0, 10))]
        + [{"backbone": "m", "task": t, "source": s, "method": m, "seed": k, "step": step,
            "dev_score": BASE[(t, k)] + step} for m in METHODS_HERE
           for s, t, k, step in itertools.product(SOURCES, TARGETS, SEEDS, (0, 10))])
    baselines = pd.DataFrame([{"backbone": "m", "target": t, "seed": k, "score": b} for (t, k), b in BASE.items()])
    return gains.compute_gains(runs, baselines, curves, early_step=10)


def similarity_frame() -> pd.DataFrame:
    return pd.DataFrame([{"backbone": "m", "source": s, "target": t, "metric": "cos_avg", "value": VALUE[s]}
                         for s, t in itertools.product(SOURCES, TARGETS)])


def test_the_spec_says_how_a_method_is_judged():
    assert METHODS["reversed"].outcome == METHODS["zeroshot"].outcome == RELATIVE
    assert METHODS["vanilla"].outcome_column("auc_gain") == "auc_gain"
    assert METHODS["reversed"].outcome_column("auc_gain") == "relative_performance"
    assert METHODS["panda"].compared_with == "vanilla"
    with pytest.raises(ValueError, match="outcome"):
        MethodSpec(name="bad", summary="", paper="", colour=(0, 0, 0), order=99, evaluate=len, outcome="accuracy")
    with pytest.raises(ValueError, match="exactly one of plan"):
        MethodSpec(name="bad", summary="", paper="", colour=(0, 0, 0), order=99)


def test_methods_scored_unchanged_have_no_steps():
    t = transfer_frame()
    for m in METHODS_HERE:
        steps = t.loc[t.method == m, "steps_to_baseline"]
        assert steps.isna().all() if not METHODS[m].trains else steps.notna().all(), m


def test_correlations_use_the_outcome_the_spec_names():
    t, sim = transfer_frame(), similarity_frame()
    table = corr.correlation_table(sim, t, n_permutations=20, n_bootstrap=20, seed=0)
    means = t.groupby(["method", "source", "target"])[["gain", "relative_performance"]].mean()
    for method, column in (("zeroshot", "relative_performance"), ("reversed", "relative_performance"),
                           ("vanilla", "gain")):
        for target in TARGETS:
            expected = correlate(pd.Series([VALUE[s] for s in SOURCES]),
                                 pd.Series([means.loc[(method, s, target), column] for s in SOURCES]),
                                 n_permutations=20, n_bootstrap=20, seed=0)["pearson_r"]
            row = table[(table.method == method) & (table.target == target)].iloc[0]
            assert row["pearson_r"] == pytest.approx(expected), (method, target)
    # the two outcomes rank these sources differently, so the check above can tell them apart
    per = table[table.target == "t1"].set_index("method")["pearson_r"]
    assert per["reversed"] == pytest.approx(per["zeroshot"]) and abs(per["reversed"] - per["vanilla"]) > 0.05


def test_findings_and_summary_word_the_outcome_from_the_spec():
    rows = findings.family_contrast(transfer_frame(), FAMILIES, "auc_gain")
    unit = {r["method"]: r["detail"] for r in rows}
    assert "relative performance" in unit["reversed"] and "relative performance" in unit["zeroshot"]
    assert "auc_gain (score points)" in unit["vanilla"]
    table = summary.summary_table(corr.correlation_table(similarity_frame(), transfer_frame(), 20, 20))
    text = summary.summary_text(table)
    assert "for reversed relative performance" in text and "for vanilla gains" in text


def test_a_compared_with_method_gets_its_paired_difference():
    t = transfer_frame()
    plain = findings.findings_table(t, pd.DataFrame(columns=summary.SUMMARY_BASE), FAMILIES)
    assert not plain["finding"].str.contains("_minus_").any()  # panda is not in this frame
    claim = MethodSpec(name="claimant", summary="", paper="", colour=(0, 0, 0), order=98, evaluate=len,
                       compared_with="vanilla")
    METHODS.add(claim)
    try:
        t2 = pd.concat([t, t[t.method == "vanilla"].assign(method="claimant", score=lambda d: d.score + 2.0)])
        table = findings.findings_table(t2, pd.DataFrame(columns=summary.SUMMARY_BASE), FAMILIES)
    finally:
        del METHODS["claimant"]
    [row] = table[table.finding == "claimant_minus_vanilla"].to_dict("records")
    assert row["value"] == pytest.approx(2.0) and row["n_targets"] == 2


def test_figures_treat_a_relative_method_as_zeroshot():
    cfg = SimpleNamespace(transfer=SimpleNamespace(methods=list(METHODS_HERE)), metrics=SimpleNamespace(
        names=["cos_avg"]), analysis=SimpleNamespace(outcome="gain"), tasks={})
    assert FIGURES["relative_performance"].variants(cfg) == ["zeroshot", "reversed"]
    assert "reversed_cos_avg" in FIGURES["metric_scatter"].variants(cfg)
    assert base.outcome("reversed") == base.outcome("zeroshot") == ("relative_performance", "relative performance (%)",
                                                                     100.0, 100.0)
    assert "relative performance" in FIGURES["correlation_bars"].caption(cfg, "reversed")
    assert "relative performance in %" in FIGURES["metric_scatter"].caption(cfg, "reversed_cos_avg")
    assert "**reversed**" in FIGURES["relative_performance"].caption(cfg, "reversed")


def test_figures_draw_a_relative_method_as_zeroshot():
    import matplotlib.pyplot as plt

    from promptgrid.figures.method_bars import method_bars
    from promptgrid.figures.metric_scatter import metric_scatter
    from promptgrid.figures.relative_performance import relative_performance_heatmap

    t, sim = transfer_frame(), similarity_frame()
    fig = metric_scatter(sim, t, "m", "cos_avg", "reversed")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "relative performance (%)"
    ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
    assert ys.max() > 10  # in percent, not a ratio
    plt.close(fig)
    heat = relative_performance_heatmap(t, FAMILIES, "m", "reversed")
    assert "reversed" in heat.axes[0].get_title()
    plt.close(heat)
    bars = method_bars(t, None, "m")  # its default leaves methods judged on relative performance out
    labels = [txt.get_text() for txt in bars.axes[0].get_legend().get_texts()]
    assert labels == ["baseline", "vanilla"]
    plt.close(bars)


def test_no_method_is_named_in_analysis_or_figures():
    import re

    root = Path(__file__).parents[2] / "src" / "promptgrid"
    pattern = re.compile("[\"'](" + "|".join(METHODS) + ")[\"']")
    hits = [f"{p.relative_to(root)}:{i}" for folder in ("analysis", "figures") for p in (root / folder).glob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
