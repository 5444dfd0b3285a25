"""Pooled statistics over sources x targets (promptgrid.analysis.pooled): their values, checked by hand.

The simulations that prove their error rates and coverage are in test_simulations.py.
"""
import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from promptgrid.analysis.grid import interaction_variance, pair_influence, to_grid
from promptgrid.analysis.pooled import (
    NAMES,
    cluster_mean_ci,
    compare_within,
    correlate_within,
    holm,
    jackknife_t,
    permutations_needed,
    target_jackknife,
    within_statistic,
)
from promptgrid.analysis.stats import correlate

S, T, SIMS = 6, 3, 300  # the default study's shape: 6 sources x 3 targets
ALPHA = 0.05
#: the false-positive rate may exceed alpha by at most 2 Monte-Carlo standard errors
FPR_BOUND = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / SIMS)


def null_world(rng, signal: float = 0.0):
    """x (a metric) and y (gains) share a target-level component and, unless ``signal``, nothing inside any
    target: the situation where pooling pairs as independent makes target differences look like a metric
    that works. Items are target-major: item k of each target is source k."""
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
        within += correlate_within(x, y, g, n_permutations=200, seed=i, kinds=("spearman",))["spearman_p"] < ALPHA
        pooled += correlate(x, y, n_permutations=200, n_bootstrap=0, seed=i)["spearman_p"] < ALPHA
    assert within / SIMS <= FPR_BOUND, within / SIMS
    assert pooled / SIMS > 0.3  # what pooling (source, target) pairs as independent does in this world


def test_within_target_test_finds_a_planted_within_target_signal():
    rng = np.random.default_rng(1)
    hits = sum(correlate_within(*null_world(rng, signal=1.0), n_permutations=200, seed=i,
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


def leave_one_out_by_hand(x, y, g, kind):
    """The pooled statistic with each target left out (T,) and with each source (the k-th item of every target)
    left out (S,), each recomputed from scratch."""
    source = np.tile(np.arange(S), T)
    by_target = [within_statistic(x[g != t], y[g != t], g[g != t], kind) for t in range(T)]
    by_source = [within_statistic(x[source != s], y[source != s], g[source != s], kind) for s in range(S)]
    return np.array(by_target), np.array(by_source)


def test_jackknife_t_sums_target_and_source_variances_less_their_overlap():
    by_target, by_source = np.array([0.1, 0.3, 0.2]), np.array([0.0, 0.4, 0.2, 0.2])
    v_t = 2 / 3 * (0.01 + 0.01 + 0.0)  # (n - 1) / n x sum of squared deviations from the mean
    v_s = 3 / 4 * (0.04 + 0.04 + 0.0 + 0.0)
    for overlap, var in ((0.0, v_t + v_s), (0.005, v_t + v_s - 0.005), (1.0, max(v_t, v_s))):
        res = jackknife_t(0.2, by_target, by_source, overlap=overlap)
        df = (v_t + v_s) ** 2 / (v_t ** 2 / 2 + v_s ** 2 / 3)  # Satterthwaite, on the variances as estimated
        half = student_t.ppf(0.975, df) * math.sqrt(var)
        assert (res["ci_low"], res["ci_high"], res["se"], res["df"]) == pytest.approx(
            (0.2 - half, 0.2 + half, math.sqrt(var), df)), overlap
        assert res["p"] == pytest.approx(2 * student_t.sf(0.2 / math.sqrt(var), df))
    # on Fisher's z: the interval is symmetric in z, and the overlap (on r's scale) is moved onto z
    fz = jackknife_t(0.5, np.tanh(by_target + 0.4), np.tanh(by_source + 0.4), fisher=True, overlap=0.005)
    var = v_t + v_s - 0.005 / (1 - 0.25) ** 2
    assert (math.atanh(fz["ci_low"]) + math.atanh(fz["ci_high"])) / 2 == pytest.approx(math.atanh(0.5))
    assert math.atanh(fz["ci_high"]) - math.atanh(0.5) == pytest.approx(
        student_t.ppf(0.975, (v_t + v_s) ** 2 / (v_t ** 2 / 2 + v_s ** 2 / 3)) * math.sqrt(var))


def test_correlate_within_exact_source_permutations_and_two_way_jackknife_ci():
    rng = np.random.default_rng(2)
    x, y, g = null_world(rng, signal=2.0)
    res = correlate_within(x, y, g, seed=0)  # default count >= 6! = 720 orderings: every one is used
    assert res["n"] == S * T and res["n_targets"] == T and res["n_sources"] == S
    assert res["permutations"] == 720 and res["exact"]
    for kind, name in (("pearson", "pearson_r"), ("spearman", "spearman_rho"), ("kendall", "kendall_tau")):
        assert res[name] == pytest.approx(within_statistic(x, y, g, kind))
        assert res[f"{kind}_ci_low"] <= res[name] <= res[f"{kind}_ci_high"], kind
        # exact: p is a count of the 720 orderings (the observed one among them) and has no Monte-Carlo error
        assert 0 < res[f"{kind}_p"] < 0.05 and res[f"{kind}_p_se"] == 0, kind
        assert res[f"{kind}_p"] * 720 == pytest.approx(round(res[f"{kind}_p"] * 720)), kind
        assert res[f"{kind}_p_maxt"] == res[f"{kind}_p"]  # a family of one
    for kind in ("pearson", "spearman"):
        # the CI is jackknife_t of the leave-one-out replicates (recomputed here from scratch), on Fisher's z, less
        # the pair-level variance that both replicates count
        by_target, by_source = leave_one_out_by_hand(x, y, g, kind)
        X, Y = to_grid(x, g)[0], to_grid(y, g)[0]
        overlap = float(interaction_variance(pair_influence(X[None], Y, kind))[0])
        assert 0 < overlap < np.inf
        ci = jackknife_t(res[NAMES[kind]], by_target, by_source, fisher=True, overlap=overlap)
        assert (res[f"{kind}_ci_low"], res[f"{kind}_ci_high"]) == pytest.approx((ci["ci_low"], ci["ci_high"])), kind
    # Monte-Carlo p below the exact count: (hits + 1) / (P + 1) with its binomial SE
    mc = correlate_within(x, y, g, n_permutations=500, seed=0, kinds=("spearman",))
    assert not mc["exact"] and mc["permutations"] == 500
    assert mc["spearman_p_se"] == pytest.approx(math.sqrt(mc["spearman_p"] * (1 - mc["spearman_p"]) / 500))
    assert (mc["spearman_p"] * 501) == pytest.approx(round(mc["spearman_p"] * 501))
    # n_bootstrap is accepted for old callers and changes nothing
    assert correlate_within(x, y, g, n_permutations=500, n_bootstrap=0, seed=0, kinds=("spearman",)) == mc


def test_two_pairs_are_never_significant_and_have_no_ci():
    res = correlate_within([1, 2], [3, 4], [0, 0])
    # both orderings of two sources are as extreme as the observed one (p = 1), or the value is not given (NaN)
    assert not res["spearman_p"] < ALPHA
    assert math.isnan(res["spearman_ci_low"]) and math.isnan(res["spearman_ci_high"])  # one target


def test_permutations_needed_scales_with_the_family():
    assert permutations_needed(1) == 1000
    assert permutations_needed(16) == 6400  # 20 x 16 / 0.05: the smallest p x 16 is alpha / 20
    assert permutations_needed(100) == 40000


def test_compare_within_two_way_jackknife_and_holm_over_pairs():
    # 8 targets x 10 sources: a metric that predicts the gains inside targets against two noise metrics
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(8), 10)
    x = rng.normal(0, 1, g.size)
    y = 2 * x + rng.normal(0, 1, g.size) + rng.normal(0, 3, 8)[g]
    xs = {"good": x, "noise": rng.normal(0, 1, x.size), "noise2": rng.normal(0, 1, x.size)}
    res = compare_within(xs, y, g)
    assert [(r["metric_a"], r["metric_b"]) for r in res] == [("good", "noise"), ("good", "noise2"),
                                                             ("noise", "noise2")]
    first = res[0]
    assert first["n_targets"] == 8 and first["diff"] == pytest.approx(first["r1"] - first["r2"])
    assert first["ci_low"] > 0 and first["significant"]
    assert [r["p_holm"] for r in res] == pytest.approx(holm([r["p"] for r in res]).tolist())
    # the CI is simultaneous over the 3 pairs: t quantile at 1 - 0.05 / 3 / 2
    half = student_t.ppf(1 - ALPHA / 3 / 2, first["df"]) * first["se"]
    assert (first["ci_low"], first["ci_high"]) == pytest.approx((first["diff"] - half, first["diff"] + half))
    [same] = compare_within({"a": x, "b": x}, y, g)
    assert same["diff"] == 0 and not same["significant"]


def test_holm_adjusts_in_step_down_order():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 with m = 3: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_cluster_mean_ci_averages_targets_not_pairs_with_a_t_interval():
    values = np.array([1.0] * 10 + [-1.0])  # target 0: ten pairs at +1; target 1: one pair at -1
    groups = np.array([0] * 10 + [1])
    est = cluster_mean_ci(values, groups)
    assert est["mean"] == 0.0 and est["n_groups"] == 2 and est["positive"] == 1
    assert math.isnan(est["ci_low"]) and math.isnan(est["ci_high"])  # no interval below 3 targets
    # three targets with means 1, -1, 3: mean 1, sd 2, t(2) quantile 4.303
    est = cluster_mean_ci(np.array([1.0, 1.0, -1.0, 3.0]), np.array([0, 0, 1, 2]))
    half = student_t.ppf(0.975, 2) * 2 / math.sqrt(3)
    assert (est["mean"], est["df"], est["positive"]) == (1.0, 2.0, 2)
    assert (est["ci_low"], est["ci_high"]) == pytest.approx((1 - half, 1 + half))
    assert est["p"] == pytest.approx(2 * student_t.sf(1 / (2 / math.sqrt(3)), 2))


def test_target_jackknife_of_a_ratio_of_means():
    rows = np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 5.0], [4.0, 4.0]])  # (kept, oracle) per target

    def ratio(r):
        return r[:, 0].sum() / r[:, 1].sum()

    res = target_jackknife(ratio, rows)
    reps = np.array([ratio(np.delete(rows, i, axis=0)) for i in range(4)])
    se = math.sqrt(3 / 4 * ((reps - reps.mean()) ** 2).sum())
    half = student_t.ppf(0.975, 3) * se
    assert res["estimate"] == pytest.approx(10 / 15) and res["n_targets"] == 4 and res["df"] == 3
    assert (res["ci_low"], res["ci_high"], res["se"]) == pytest.approx((10 / 15 - half, 10 / 15 + half, se))
    assert math.isnan(jackknife_t(0.5, np.array([0.4, 0.6]))["ci_low"])  # 2 targets: no CI
