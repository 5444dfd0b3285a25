"""Held-out retrieval (promptgrid.analysis.retrieval) and the share of the oracle with its CI
(promptgrid.analysis.summary.share_of_oracle), computed by hand."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from promptgrid.analysis.retrieval import expected_best_of_random, heldout_at_k, retrieval_table
from promptgrid.analysis.summary import share_of_oracle

# 3 sources x 2 seeds for one target. s0 is best on seed 0 only: its seed mean (5) makes it the plain oracle,
# but chosen on one seed and scored on the other it is a poor pick
PER_SEED = np.array([[10.0, 0.0],
                     [4.0, 5.0],
                     [3.0, 3.0]])
SCORES = np.array([1.0, 3.0, 2.0])  # the predictor ranks s1, s2, s0


def test_expected_best_of_random_matches_enumeration_of_every_subset():
    rng = np.random.default_rng(0)
    values, key = rng.normal(size=6), rng.permutation(6).astype(float)
    for k in range(1, 7):
        brute = np.mean([values[max(sub, key=lambda i: key[i])] for sub in itertools.combinations(range(6), k)])
        assert expected_best_of_random(values, key, k) == pytest.approx(brute)
    assert expected_best_of_random(values, key, 9) == pytest.approx(values[np.argmax(key)])  # k clipped to n
    # choosing by the values themselves is retrieval_at_k's random: the expected best of a random k-subset
    assert expected_best_of_random(values, values, 2) == pytest.approx(
        np.mean([max(values[list(s)]) for s in itertools.combinations(range(6), 2)]))


def test_random_heldout_breaks_ties_like_the_oracle():
    # held out seed 0: every source has gain 2 on seed 1, a tie; the oracle takes the first (s0, gain 1)
    per_seed = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    res = heldout_at_k(np.array([3.0, 2.0, 1.0]), per_seed, ks=(3,))[0]
    assert res["random_heldout"] == pytest.approx(res["oracle_heldout"])  # a random 3 of 3 is every source
    values, key = np.arange(6.0), np.array([1.0, 2.0, 2.0, 0.0, 2.0, 1.0])
    for k in range(1, 7):
        brute = np.mean([values[list(s)[int(np.argmax(key[list(s)]))]]
                         for s in itertools.combinations(range(6), k)])
        assert expected_best_of_random(values, key, k) == pytest.approx(brute)


def test_heldout_at_k_by_hand():
    res = heldout_at_k(SCORES, PER_SEED, ks=(1, 2, 3, 5))
    # held out seed 0: chosen on seed 1 (0, 5, 3); held out seed 1: chosen on seed 0 (10, 4, 3)
    # oracle: s1 -> 4 on seed 0, s0 -> 0 on seed 1: (4 + 0) / 2, well below the plain oracle 5
    assert [r["oracle_heldout"] for r in res] == pytest.approx([2.0] * 4)
    # top 1 = {s1}: 4, 5; top 2 = {s1, s2}: s1 both times: 4, 5; top 3 (and 5, clipped) = all: the oracle
    assert [r["best_of_topk_heldout"] for r in res] == pytest.approx([4.5, 4.5, 2.0, 2.0])
    # random k = 1: the mean gain on the held-out seed, (17 / 3 + 8 / 3) / 2
    # k = 2, held out 0: {s0,s1} -> s1 4, {s0,s2} -> s2 3, {s1,s2} -> s1 4; held out 1: s0 0, s0 0, s1 5
    assert [r["random_heldout"] for r in res] == pytest.approx([25 / 6, (11 / 3 + 5 / 3) / 2, 2.0, 2.0])


def test_heldout_at_k_nan_score_ranks_last():
    res = heldout_at_k(np.array([np.nan, 3.0, 2.0]), PER_SEED, ks=(1, 2))
    assert [r["best_of_topk_heldout"] for r in res] == pytest.approx([4.5, 4.5])
    res = heldout_at_k(np.array([5.0, np.nan, np.nan]), PER_SEED, ks=(1,))
    assert res[0]["best_of_topk_heldout"] == pytest.approx(5.0)  # s0 alone: 10 on seed 0, 0 on seed 1


def frames(seeds=(0, 1)):
    """The PER_SEED example as study tables: target T, sources s0-s2, metric m (SCORES) and a comparator."""
    sim, tr = [], []
    for i, s in enumerate(["s0", "s1", "s2"]):
        sim.append(("b", s, "T", "m", SCORES[i]))
        for seed in seeds:
            tr.append(("b", s, "T", "vanilla", seed, PER_SEED[i, seed], 1.0))
    pred = pd.DataFrame([("b", "vanilla", s, "T", "flat", 0.0, "comparator") for s in ["s0", "s1", "s2"]],
                        columns=["backbone", "method", "source", "target", "metric", "value", "kind"])
    return (pd.DataFrame(sim, columns=["backbone", "source", "target", "metric", "value"]),
            pd.DataFrame(tr, columns=["backbone", "source", "target", "method", "seed", "gain",
                                      "relative_performance"]), pred)


def test_retrieval_table_heldout_columns():
    sim, tr, pred = frames()
    r = retrieval_table(sim, tr, ks=(1, 2), predictors=pred).set_index(["metric", "k"])
    assert r["kind"].to_dict() == {("m", 1): "metric", ("m", 2): "metric", ("flat", 1): "comparator",
                                   ("flat", 2): "comparator"}
    assert (r["n_seeds"] == 2).all() and (r["n_sources"] == 3).all()
    assert (r["oracle"] == 5.0).all() and (r["oracle_heldout"] == 2.0).all()  # the plain oracle is biased
    assert r.loc[("m", 1), "best_of_topk"] == 4.5 and r.loc[("m", 1), "best_of_topk_heldout"] == 4.5
    # a constant comparator keeps the source order: top 1 = s0, top 2 = {s0, s1}
    assert r.loc[("flat", 1), "best_of_topk_heldout"] == pytest.approx(5.0)  # (10 + 0) / 2
    assert r.loc[("flat", 2), "best_of_topk_heldout"] == pytest.approx(2.0)  # s1 4, s0 0
    assert r.loc[("m", 2), "random_heldout"] == pytest.approx(8 / 3)


def test_retrieval_table_one_seed_or_a_missing_seed():
    sim, tr, _ = frames(seeds=(0,))
    r = retrieval_table(sim, tr, ks=(1,))
    assert r["n_seeds"].tolist() == [1] and r[["oracle_heldout", "best_of_topk_heldout",
                                               "random_heldout"]].isna().all(axis=None)
    # a third seed that one source lacks is not used: the figures are those of seeds 0 and 1
    sim, tr, _ = frames()
    extra = tr[tr["source"] != "s2"].assign(seed=2, gain=100.0)
    r = retrieval_table(sim, pd.concat([tr, extra], ignore_index=True), ks=(1,))
    assert r["n_seeds"].tolist() == [2] and r["oracle_heldout"].tolist() == pytest.approx([2.0])


# four targets' retrieval rows at k = 3 for metric m and comparator c, plus a target with no finite gain
BEST_M = [4.0, 6.0, 1.0, 3.0]
BEST_C = [3.0, 6.0, 2.0, np.nan]  # c has no row value on the last target: paired over the first three
ORACLE = [5.0, 8.0, 2.0, 4.0]


def retrieval_frame(heldout: bool = True) -> pd.DataFrame:
    rows = []
    for metric, best in (("m", BEST_M), ("c", BEST_C)):
        for j, t in enumerate(["t0", "t1", "t2", "t3"]):
            plain = {"best_of_topk": best[j] + 1.0, "oracle": ORACLE[j] + 2.0}  # biased-up plain figures
            held = {"best_of_topk_heldout": best[j], "oracle_heldout": ORACLE[j]} if heldout else {
                "best_of_topk_heldout": np.nan, "oracle_heldout": np.nan}
            rows.append({"backbone": "b", "method": "vanilla", "metric": metric, "k": 3, "target": t,
                         "n_sources": 5, **plain, **held})
            rows.append({"backbone": "b", "method": "vanilla", "metric": metric, "k": 1, "target": t,
                         "n_sources": 5, "best_of_topk": -50.0, "oracle": ORACLE[j] + 2.0,
                         "best_of_topk_heldout": -50.0, "oracle_heldout": ORACLE[j]})
        rows.append({"backbone": "b", "method": "vanilla", "metric": metric, "k": 3, "target": "empty",
                     "n_sources": 0, "best_of_topk": np.nan, "oracle": np.nan, "best_of_topk_heldout": np.nan,
                     "oracle_heldout": np.nan})
    return pd.DataFrame(rows)


def kish_df(oracle) -> float:
    """Kish's effective number of targets, weighted by their oracle gains, less 1 (at least 1)."""
    w = np.abs(np.asarray(oracle, dtype=float))
    return max(w.sum() ** 2 / (w ** 2).sum() - 1, 1.0)


def jackknife_by_hand(stat, rows):
    """Estimate and 95 % jackknife-t CI over the rows (targets); df = the oracle-weighted effective number of
    targets less 1 (column 1 holds the oracle gains)."""
    rows = np.asarray(rows, dtype=float)
    G = len(rows)
    est = stat(rows)
    reps = np.array([stat(np.delete(rows, g, axis=0)) for g in range(G)])
    se = math.sqrt((G - 1) / G * ((reps - reps.mean()) ** 2).sum())
    half = student_t.ppf(0.975, kish_df(rows[:, 1])) * se
    return est, est - half, est + half


def test_share_of_oracle_heldout_by_hand():
    ratio = lambda x: x[:, 0].mean() / x[:, 1].mean()  # noqa: E731
    est, low, high = jackknife_by_hand(ratio, np.column_stack([BEST_M, ORACLE]))
    assert est == pytest.approx(14 / 19)
    got = share_of_oracle(retrieval_frame(), "b", "vanilla", "m", 3)
    assert got["heldout"] and got["n_targets"] == 4  # the target without a finite gain is left out
    assert (got["estimate"], got["ci_low"], got["ci_high"]) == (pytest.approx(est), pytest.approx(low),
                                                                pytest.approx(high))
    assert got["df"] == pytest.approx(kish_df(ORACLE)) and got["df"] < 3  # unequal oracles: fewer effective targets


def test_share_of_oracle_falls_back_to_the_plain_oracle_with_one_seed():
    ratio = lambda x: x[:, 0].mean() / x[:, 1].mean()  # noqa: E731
    est, low, high = jackknife_by_hand(ratio, np.column_stack([np.add(BEST_M, 1), np.add(ORACLE, 2)]))
    got = share_of_oracle(retrieval_frame(heldout=False), "b", "vanilla", "m", 3)
    assert not got["heldout"]
    assert (got["estimate"], got["ci_low"], got["ci_high"]) == (pytest.approx(est), pytest.approx(low),
                                                                pytest.approx(high))


def test_share_of_oracle_against_is_a_paired_difference():
    diff = lambda x: (x[:, 0].mean() - x[:, 2].mean()) / x[:, 1].mean()  # noqa: E731
    rows = np.column_stack([BEST_M, ORACLE, BEST_C])[:3]  # c is NaN on t3: that target drops out of both
    est, low, high = jackknife_by_hand(diff, rows)
    assert est == pytest.approx((11 / 3 - 11 / 3) / 5)
    got = share_of_oracle(retrieval_frame(), "b", "vanilla", "m", 3, against="c")
    assert got["n_targets"] == 3
    assert (got["estimate"], got["ci_low"], got["ci_high"]) == (pytest.approx(est, abs=1e-12), pytest.approx(low),
                                                                pytest.approx(high))
    assert got["ci_low"] < 0 < got["ci_high"]  # m wins t0, c wins t2: no clear winner


def test_share_of_oracle_nan_without_a_positive_oracle():
    r = retrieval_frame()
    r["oracle_heldout"] = -1.0
    got = share_of_oracle(r, "b", "vanilla", "m", 3)
    assert math.isnan(got["estimate"]) and math.isnan(got["ci_low"])


def test_retrieval_ranks_by_the_study_outcome_and_keeps_the_final_gain_without_curves():
    """analysis.outcome auc_gain: a trained method's retrieval reads auc_gain; a method without learning curves
    (auc_gain NaN, as zero-shot) keeps its final gain; the table names the column used."""
    sim = pd.DataFrame([("b", s, "t", "m", v) for s, v in (("s0", 3.0), ("s1", 2.0), ("s2", 1.0))],
                       columns=["backbone", "source", "target", "metric", "value"])
    rows = []
    for s, gain, auc in (("s0", 1.0, 9.0), ("s1", 5.0, 2.0), ("s2", 3.0, 4.0)):
        for seed in (0, 1):
            rows.append(("b", s, "t", "vanilla", seed, gain, auc, 1.0))
            rows.append(("b", s, "t", "zeroshot", seed, gain, np.nan, 1.0))
    tr = pd.DataFrame(rows, columns=["backbone", "source", "target", "method", "seed", "gain", "auc_gain",
                                     "relative_performance"])
    got = retrieval_table(sim, tr, ks=(1,), outcome="auc_gain").set_index("method")
    assert got.loc["vanilla", "outcome"] == "auc_gain" and got.loc["zeroshot", "outcome"] == "gain"
    assert (got.loc["vanilla", "best_of_topk"], got.loc["vanilla", "oracle"]) == (9.0, 9.0)  # s0 by auc_gain
    assert (got.loc["zeroshot", "best_of_topk"], got.loc["zeroshot", "oracle"]) == (1.0, 5.0)  # s0 by gain
