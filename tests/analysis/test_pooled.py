"""Pooled statistics with the target as the unit (promptgrid.analysis.pooled), proved by simulation."""
import math

import numpy as np
import pytest

from promptgrid.analysis.pooled import cluster_mean_ci, compare_within, correlate_within, holm, within_statistic
from promptgrid.analysis.stats import correlate

S, T, SIMS = 6, 3, 300  # the default study's shape: 6 sources x 3 targets
ALPHA = 0.05
#: the false-positive rate may exceed alpha by at most 2 Monte-Carlo standard errors
FPR_BOUND = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / SIMS)


def null_world(rng, signal: float = 0.0):
    """x (a metric) and y (gains) share a target-level component and, unless ``signal``, nothing inside any
    target: the situation where pooling pairs as independent makes target differences look like a metric
    that works."""
    groups = np.repeat(np.arange(T), S)
    target = rng.normal(0, 1, T)[groups]
    x = target + rng.normal(0, 1, S * T)
    y = 3 * target + signal * (x - target) + rng.normal(0, 1, S * T)
    return x, y, groups


def test_within_target_test_keeps_its_level_where_the_pooled_test_does_not():
    rng = np.random.default_rng(0)
    within = pooled = 0
    for i in range(SIMS):
        x, y, g = null_world(rng)
        within += correlate_within(x, y, g, n_permutations=200, n_bootstrap=0, seed=i,
                                   kinds=("spearman",))["spearman_p"] < ALPHA
        pooled += correlate(x, y, n_permutations=200, n_bootstrap=0, seed=i)["spearman_p"] < ALPHA
    assert within / SIMS <= FPR_BOUND, within / SIMS
    assert pooled / SIMS > 0.3  # what pooling (source, target) pairs as independent does in this world


def test_within_target_test_finds_a_planted_within_target_signal():
    rng = np.random.default_rng(1)
    hits = sum(correlate_within(*null_world(rng, signal=1.0), n_permutations=200, n_bootstrap=0, seed=i,
                                kinds=("spearman",))["spearman_p"] < ALPHA for i in range(100))
    assert hits / 100 > 0.6


def test_within_statistic_ignores_target_level_shifts_and_sees_within_target_order():
    g = np.repeat([0, 1], 4)
    x = np.array([1, 2, 3, 4, 11, 12, 13, 14.0])
    y = np.array([4, 3, 2, 1, 40, 30, 20, 10.0])  # opposite order inside each target, same order between
    assert correlate(x, y, 0, 0)["spearman_rho"] > 0  # pooled: the targets' levels dominate
    assert within_statistic(x, y, g, "spearman") == pytest.approx(-1.0)
    # Pearson keeps each target's scale of deviations: sxy = -5 - 50, sxx = 5 + 5, syy = 5 + 500
    assert within_statistic(x, y, g, "pearson") == pytest.approx(-55 / math.sqrt(10 * 505))
    assert within_statistic(x, y, g, "kendall") == pytest.approx(-1.0)


def test_correlate_within_reports_targets_and_cluster_ci():
    rng = np.random.default_rng(2)
    x, y, g = null_world(rng, signal=2.0)
    res = correlate_within(x, y, g, n_permutations=500, n_bootstrap=500, seed=0)
    assert res["n"] == S * T and res["n_targets"] == T
    for kind, name in (("pearson", "pearson_r"), ("spearman", "spearman_rho"), ("kendall", "kendall_tau")):
        assert res[f"{kind}_ci_low"] <= res[name] <= res[f"{kind}_ci_high"], kind
        assert 0 < res[f"{kind}_p"] < 0.05, kind
    # a bootstrap over 3 targets can only draw 10 distinct target sets: the CI is set by them
    assert res["spearman_ci_high"] - res["spearman_ci_low"] < 1.0
    assert math.isnan(correlate_within([1, 2], [3, 4], [0, 0])["spearman_rho"])


def test_compare_within_pairs_metrics_on_the_same_target_resamples():
    # 8 targets x 10 sources: enough targets for a cluster bootstrap to separate a metric from noise
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(8), 10)
    x = rng.normal(0, 1, g.size)
    y = 2 * x + rng.normal(0, 1, g.size) + rng.normal(0, 3, 8)[g]
    noise = rng.normal(0, 1, x.size)
    [res] = compare_within({"good": x, "noise": noise}, y, g, n_bootstrap=400, seed=0)
    assert res["metric_a"] == "good" and res["n_targets"] == 8
    assert res["diff"] == pytest.approx(res["r1"] - res["r2"])
    assert res["ci_low"] > 0 and res["significant"]
    [same] = compare_within({"a": x, "b": x}, y, g, n_bootstrap=100, seed=0)
    assert same["diff"] == 0 and not same["significant"]


def test_holm_adjusts_in_step_down_order():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 with m = 3: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_cluster_mean_ci_averages_targets_not_pairs():
    values = np.array([1.0] * 10 + [-1.0])  # target 0: ten pairs at +1; target 1: one pair at -1
    groups = np.array([0] * 10 + [1])
    est = cluster_mean_ci(values, groups, n_bootstrap=200)
    assert est["mean"] == 0.0 and est["n_groups"] == 2 and est["positive"] == 1
    assert est["ci_low"] == -1.0 and est["ci_high"] == 1.0
