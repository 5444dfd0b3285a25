"""The simulations of issue #24 at CI size: 400 worlds per check (tests/analysis/worlds.py describes each world).

Each check fails if the behaviour before #24 came back; the docstrings give what that code measured on the same
worlds (percentile bootstraps over targets, permutations within each target, Holm over 1000 permutations).
The worlds are seeded, so every check is deterministic; the thresholds sit below (or above) the goal by about
2 Monte-Carlo standard errors of a 400-world rate, so that an implementation that meets the goal passes on
almost any seed. The old figures quoted are from these seeds (the old pooled.py swapped in); each old
behaviour misses its threshold by 6 or more of its standard errors at 3 targets (6 x 3; the crossed world by its
coverage), by 1 to 4 at 9. scripts/nullsim.py gives the figures from 2000 worlds for the README.
"""
import math

import numpy as np
import pytest
from worlds import (
    cluster_mean_coverage,
    crossed_world,
    equal_metrics_rate,
    family_rates,
    family_world,
    mean_of_ratios,
    notes_world,
    pooled_rates,
    ratio_coverage,
    ratio_of_means,
)

from promptgrid.analysis.pooled import (
    cluster_mean_ci,
    compare_within,
    correlate_family,
    correlate_within,
    permutations_needed,
    target_jackknife,
)

WORLDS = 400
ALPHA = 0.05


def mc_se(rate: float, n: int = WORLDS) -> float:
    """Monte-Carlo standard error of a rate measured on n worlds."""
    return math.sqrt(rate * (1 - rate) / n)


#: goal 0.93 (issue #24) less 2 SE of a 400-world rate (0.0255) is 0.905; 0.91 as the issue asks. A CI at its
#: nominal 95 % fails this with probability < 1e-4, the old bootstraps (75-88 %) always do.
COVERAGE_MIN = 0.91
#: "<= 6 % false positives" in the crossed world at 21 x 9: 0.06 + 2 SE = 0.084 (the old test: 12-14 %)
CROSSED_FPR_MAX = 0.06 + 2 * mc_se(0.06)
#: a rate that should be at most alpha (a level, a family-wise error, equal metrics called different): 0.072
LEVEL_MAX = ALPHA + 2 * mc_se(ALPHA)


@pytest.mark.parametrize("T", [3, 6, 9])
def test_pooled_ci_covers_and_the_source_permutation_test_keeps_its_level(T):
    """6 sources x T targets, no association inside any target. The old percentile bootstrap over targets
    covered 0 in 74 % / 87 % / 87 % of these worlds at 3 / 6 / 9 targets."""
    res = pooled_rates(correlate_within, notes_world, 6, T, WORLDS, seed=2400 + T, kind="spearman")
    assert res["covered"] >= COVERAGE_MIN, res
    assert res["rejected"] <= LEVEL_MAX, res
    assert res["width"] < 2.0, res  # not the trivial interval [-1, 1]


@pytest.mark.parametrize("T", [3, 9])
def test_pooled_ci_covers_a_nonzero_correlation(T):
    """Within-target Pearson 0.5 (the true pooled r): an interval that only ever covered 0 fails here. The old
    bootstrap covered 0.5 in 76 % / 90 % of these worlds at 3 / 9 targets."""
    res = pooled_rates(correlate_within, notes_world, 6, T, WORLDS, seed=2410 + T, kind="pearson", truth=0.5,
                       n_permutations=1, rho=0.5)
    assert res["covered"] >= COVERAGE_MIN, res


def test_crossed_world_false_positives_and_coverage_at_21x9():
    """Independent source effects (sd 1) on metric and gains, shared across targets: the population null. The old
    within-target permutation test rejected in 10.2 % of these worlds (13.8 % on other seeds, 12 % in the
    issue's 300) and its CI covered 0 in 78 %; a jackknife over targets alone, without the sources, in 90 %."""
    res = pooled_rates(correlate_within, crossed_world, 21, 9, WORLDS, seed=2421, kind="spearman")
    assert res["rejected"] <= CROSSED_FPR_MAX, res
    assert res["covered"] >= COVERAGE_MIN, res


@pytest.mark.parametrize("G", [3, 6, 9])
def test_cluster_mean_ci_covers_the_mean_over_targets(G):
    """A family contrast / paired difference over G targets. The old percentile bootstrap covered in 72 % /
    85 % / 89 % at 3 / 6 / 9 targets."""
    assert cluster_mean_coverage(cluster_mean_ci, G, WORLDS, seed=2430 + G) >= COVERAGE_MIN


@pytest.mark.parametrize("stat", [ratio_of_means, mean_of_ratios])
@pytest.mark.parametrize("T", [3, 6, 9])
def test_target_jackknife_covers_a_share_of_the_oracle(T, stat):
    """The share of the oracle over targets, as a ratio of means (kept gain / oracle gain) and as a mean of
    per-target shares. A percentile bootstrap over targets covered the ratio of means in 74 % / 83 % / 85 % at
    3 / 6 / 9 targets. The jackknife-t of the ratio of means with G - 1 degrees of freedom covered 91.5-93 %
    (its variance rests on the few targets with the largest oracle gains); with Kish's effective number of
    targets as df, as summary.share_of_oracle weights it, it reaches the goal (README, Statistics)."""
    def interval(stat, rows, seed):
        return target_jackknife(stat, rows, weights=rows[:, 1] if stat is ratio_of_means else None)

    assert ratio_coverage(interval, T, WORLDS, seed=2440 + T, stat=stat) >= COVERAGE_MIN


@pytest.mark.parametrize(("S", "T"), [(6, 3), (21, 9)])
def test_equal_metrics_are_rarely_called_different(S, T):
    """Two metrics with the same within-target correlation with the gains. The old bootstrap comparison called
    them significantly different in 28 % (6 x 3) and 11.5 % (21 x 9) of these worlds."""
    assert equal_metrics_rate(compare_within, S, T, WORLDS, seed=2450 + T) <= LEVEL_MAX


def test_permutations_are_sized_so_that_16_adjusted_p_values_leave_the_grid():
    """Holm over 16 metrics on 1000 permutations could not give an adjusted p below 16 x 2 / 1001 = 0.032. Now:
    at least 20 m / alpha permutations, and a clear signal among 16 metrics at 21 x 9 gets a maxT p near 1 / P."""
    assert permutations_needed(16) >= 20 * 16 / ALPHA
    xs, y, g = family_world(np.random.default_rng(2460), 21, 9, n_metrics=16, rho=0.5)
    res = correlate_family(xs, y, g, seed=0, kinds=("pearson",))
    assert res["m00"]["permutations"] == permutations_needed(16) and not res["m00"]["exact"]
    assert res["m00"]["pearson_p_maxt"] < ALPHA / 20


def test_maxt_gives_small_adjusted_p_to_a_strong_signal_among_16_metrics():
    """6 x 3, one of 16 metrics with within-target r 0.8, the default permutation count (all 6! = 720 orderings).
    Pearson: the adjustment does not depend on the statistic, and its leave-one-out CIs are cheaper. Holm on the
    old 1000 within-target permutations never went below 16 x 2 / 1001 = 0.032 (0 of these 400 worlds under
    0.01); maxT reaches the exact test's floor 1/720 and is under 0.01 in about two thirds of them. The other 15
    metrics keep the family-wise level (unadjusted p's: a false positive in 53 % of these worlds)."""
    res = family_rates(correlate_family, 6, 3, WORLDS, seed=2470, rho=0.8, kind="pearson")
    assert res["min_p_maxt"] == pytest.approx(1 / 720)
    assert res["below_001"] >= 0.5, res
    assert res["family_wise"] <= LEVEL_MAX, res


def test_maxt_keeps_the_family_wise_level_over_16_null_metrics():
    """16 null metrics, 200 permutations (enough for p against alpha): how often any adjusted p is < 0.05. The
    unadjusted p's of the same worlds give one or more false positives in 56 % of them."""
    res = family_rates(correlate_family, 6, 3, WORLDS, seed=2480, n_permutations=200, kind="pearson")
    assert res["family_wise"] <= LEVEL_MAX, res
