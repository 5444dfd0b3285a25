import math

import numpy as np
import pytest
from scipy import stats as sstats

from promptgrid.analysis import stats as S


def data(n=30, seed=0, strength=0.4, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = strength * x + rng.normal(size=n)
    if ties:
        x = np.round(x, 0)
        y = np.round(y, 0)
    return x, y


@pytest.mark.parametrize("ties", [False, True])
def test_point_estimates_match_scipy(ties):
    x, y = data(ties=ties)
    res = S.correlate(x, y, n_permutations=200, n_bootstrap=200, seed=1)
    assert res["n"] == 30
    assert res["pearson_r"] == pytest.approx(sstats.pearsonr(x, y).statistic, abs=1e-12)
    assert res["spearman_rho"] == pytest.approx(sstats.spearmanr(x, y).statistic, abs=1e-12)
    assert res["kendall_tau"] == pytest.approx(sstats.kendalltau(x, y).statistic, abs=1e-12)


def _scipy_perm_p(x, y, statistic, n_resamples, seed):
    return sstats.permutation_test((x,), lambda a: statistic(a, y), permutation_type="pairings",
                                   n_resamples=n_resamples, rng=np.random.default_rng(seed)).pvalue


def _scipy_stat(kind):
    return {"pearson": lambda a, b: sstats.pearsonr(a, b).statistic,
            "spearman": lambda a, b: sstats.spearmanr(a, b).statistic,
            "kendall": lambda a, b: sstats.kendalltau(a, b).statistic}[kind]


@pytest.mark.parametrize("kind", ["pearson", "spearman", "kendall"])
def test_permutation_p_close_to_scipy(kind):
    x, y = data(n=25, seed=4, strength=0.35)
    ours = S.correlate(x, y, n_permutations=4000, n_bootstrap=0, seed=0)[f"{kind}_p"]
    theirs = _scipy_perm_p(x, y, _scipy_stat(kind), 4000, 0)
    assert 0.01 < theirs < 0.5  # a p-value in the range where Monte-Carlo noise matters
    assert ours == pytest.approx(theirs, abs=0.03)  # two independent 4000-draw estimates


@pytest.mark.parametrize("kind", ["pearson", "spearman", "kendall"])
def test_exact_permutation_p_equals_scipy(kind):
    # n! = 120 <= n_permutations: both enumerate every ordering, so the p-values agree exactly
    x = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    y = np.array([1.0, 2.0, 3.0, 2.5, 5.0])
    ours = S.correlate(x, y, n_permutations=1000, n_bootstrap=0, seed=0)[f"{kind}_p"]
    theirs = _scipy_perm_p(x, y, _scipy_stat(kind), 1000, 0)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_perfect_three_points_exact_p():
    res = S.correlate([1, 2, 3], [10, 20, 30], n_permutations=100, n_bootstrap=100, seed=0)
    # only the identity of the 6 orderings reaches r = 1: p = 2 * 1/6
    for kind in ("pearson", "spearman", "kendall"):
        assert res[f"{kind}_p"] == pytest.approx(1 / 3)
    assert res["pearson_r"] == pytest.approx(1.0)
    # every non-degenerate resample of a perfectly monotone set is perfectly monotone
    assert res["spearman_ci_low"] == pytest.approx(1.0) and res["spearman_ci_high"] == pytest.approx(1.0)


def test_bootstrap_ci_seeded_and_close_to_scipy():
    x, y = data(n=40, seed=2, strength=0.6)
    a = S.correlate(x, y, n_permutations=100, n_bootstrap=2000, seed=7)
    b = S.correlate(x, y, n_permutations=100, n_bootstrap=2000, seed=7)
    c = S.correlate(x, y, n_permutations=100, n_bootstrap=2000, seed=8)
    assert a == b
    assert a["pearson_ci_low"] != c["pearson_ci_low"]
    for kind, stat in (("pearson", "pearson_r"), ("spearman", "spearman_rho"), ("kendall", "kendall_tau")):
        assert a[f"{kind}_ci_low"] < a[stat] < a[f"{kind}_ci_high"]
    ref = sstats.bootstrap((x, y), lambda u, v: sstats.pearsonr(u, v).statistic, paired=True, vectorized=False,
                           n_resamples=2000, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert a["pearson_ci_low"] == pytest.approx(ref.low, abs=0.05)
    assert a["pearson_ci_high"] == pytest.approx(ref.high, abs=0.05)


def test_degenerate_inputs_give_nan():
    small = S.correlate([1, 2], [3, 4], 100, 100, 0)
    assert small["n"] == 2 and math.isnan(small["pearson_r"]) and math.isnan(small["kendall_p"])
    const = S.correlate([1, 1, 1, 1], [1, 2, 3, 4], 100, 100, 0)
    assert const["n"] == 4
    assert all(math.isnan(const[k]) for k in const if k != "n")
    # non-finite pairs are dropped before anything else
    res = S.correlate([1, 2, np.nan, 3, 4], [2, 4, 5, np.inf, 8], 100, 100, 0)
    assert res["n"] == 3 and res["pearson_r"] == pytest.approx(1.0)


def test_retrieval_hand_computed():
    scores = [0.9, 0.5, 0.7, 0.1]
    gains = [1.0, 4.0, -2.0, 3.0]
    # metric order: source 0, 2, 1, 3 -> gains 1, -2, 4, 3; relevance = max(gain, 0) -> 1, 0, 4, 3;
    # ideal 4, 3, 1, 0 (the source that hurts is irrelevant, not "less bad")
    res = S.retrieval_at_k(scores, gains, [1, 2, 3, 10])
    log3 = math.log2(3)
    expected = [
        # k, best, random (sorted gains -2, 1, 3, 4), ndcg
        (1, 1.0, 1.5, 1 / 4),
        (2, 1.0, (1 * 1 + 3 * 2 + 4 * 3) / 6, 1 / (4 + 3 / log3)),  # C(i-1, 1) / C(4, 2)
        (3, 4.0, (3 * 1 + 4 * 3) / 4, (1 + 4 / 2) / (4 + 3 / log3 + 1 / 2)),  # C(i-1, 2) / C(4, 3)
        (10, 4.0, 4.0, (1 + 4 / 2 + 3 / math.log2(5)) / (4 + 3 / log3 + 1 / 2)),  # k clipped to 4
    ]
    assert [r["k"] for r in res] == [1, 2, 3, 10]
    for r, (_k, best, random, ndcg) in zip(res, expected):
        assert r["best_of_topk"] == pytest.approx(best)
        assert r["oracle"] == 4.0
        assert r["random"] == pytest.approx(random)
        assert r["ndcg"] == pytest.approx(ndcg)
        assert r["regret"] == pytest.approx(4.0 - best)
    assert res[1]["random"] == pytest.approx(19 / 6)
    assert res[1]["ndcg"] == pytest.approx(0.169699, abs=1e-6)


def test_retrieval_ties_and_edge_cases():
    # sources 0 and 1 tie on the metric: the earlier one (gain 1) is ranked first
    res = S.retrieval_at_k([0.5, 0.5, 0.1], [1.0, 2.0, 0.0], [1])
    assert res[0]["best_of_topk"] == 1.0 and res[0]["regret"] == 1.0
    # NaN metric ranks last
    res = S.retrieval_at_k([np.nan, 0.2, 0.1], [9.0, 2.0, 0.0], [1])
    assert res[0]["best_of_topk"] == 2.0
    flat = S.retrieval_at_k([0.3, 0.2], [1.0, 1.0], [1])
    assert flat[0]["ndcg"] == 1 and flat[0]["regret"] == 0
    # no source helps: nothing is relevant, nDCG is undefined rather than flattering
    hurt = S.retrieval_at_k([0.3, 0.2], [-1.0, -3.0], [1])
    assert math.isnan(hurt[0]["ndcg"]) and hurt[0]["regret"] == 0
    with pytest.raises(ValueError, match="finite"):
        S.retrieval_at_k([0.1, 0.2], [np.nan, 1.0], [1])
    with pytest.raises(ValueError, match="sources"):
        S.retrieval_at_k([0.1], [1.0, 2.0], [1])


def test_expected_best_of_random_k_matches_enumeration():
    import itertools

    gains = [3.0, -1.0, 3.0, 0.5, 2.0, 7.0]
    for k in range(1, 7):
        subsets = list(itertools.combinations(gains, k))
        assert S.expected_best_of_random_k(gains, k) == pytest.approx(np.mean([max(s) for s in subsets]))


def test_correlate_is_fast_enough_for_pooled_tables():
    import time

    x, y = data(n=200, seed=5)
    t0 = time.perf_counter()
    S.correlate(x, y, n_permutations=1000, n_bootstrap=1000, seed=0)
    assert time.perf_counter() - t0 < 10
