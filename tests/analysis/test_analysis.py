import itertools
import math

import numpy as np
import pandas as pd
import pytest

from promptgrid.analysis import correlation, gains, retrieval, summary

NAN = float("nan")


# ---------------------------------------------------------------- compute_gains / aggregate_gains

def gains_inputs():
    runs = pd.DataFrame([
        # backbone, source, target, method, seed, score
        ("b", "s1", "t", "vanilla", 0, 80.0),
        ("b", "s1", "t", "vanilla", 1, 70.0),
        ("b", "s1", "t", "zeroshot", 0, 40.0),
        ("b", "top2", "t", "spot_topk", 0, 78.0),
    ], columns=["backbone", "source", "target", "method", "seed", "score"])
    baselines = pd.DataFrame([("b", "t", 0, 75.0), ("b", "t", 1, 60.0)],
                             columns=["backbone", "target", "seed", "score"])
    rows = []
    # baseline seed 0: best dev 80 first reached at step 20 (the later 80 does not count)
    for step, dev in zip((0, 10, 20, 30, 40), (50, 70, 80, 78, 80)):
        rows.append(("b", "t", "", "baseline", 0, step, dev))
    # baseline seed 1: best dev 60 first reached at step 10
    for step, dev in zip((0, 10, 20), (50, 60, 60)):
        rows.append(("b", "t", "", "baseline", 1, step, dev))
    # vanilla seed 0 reaches 80 at step 10; seed 1 never reaches 60
    for step, dev in zip((0, 10, 20), (60, 80, 85)):
        rows.append(("b", "t", "s1", "vanilla", 0, step, dev))
    for step, dev in zip((0, 10, 20), (40, 50, 55)):
        rows.append(("b", "t", "s1", "vanilla", 1, step, dev))
    # spot_topk starts above the baseline's best: steps_to_baseline 0, speedup inf
    for step, dev in zip((0, 10), (85, 86)):
        rows.append(("b", "t", "top2", "spot_topk", 0, step, dev))
    curves = pd.DataFrame(rows, columns=["backbone", "task", "source", "method", "seed", "step", "dev_score"])
    curves["train_loss"] = 1.0
    return runs, baselines, curves


def test_compute_gains_exact():
    runs, baselines, curves = gains_inputs()
    t = gains.compute_gains(runs, baselines, curves)
    assert list(t.columns) == gains.TRANSFER_COLUMNS
    assert len(t) == 4
    v0, v1, z, spot = (t.iloc[i] for i in range(4))
    assert (v0["baseline_score"], v0["gain"], v0["rer"]) == (75.0, 5.0, pytest.approx(0.2))
    assert v0["relative_performance"] == pytest.approx(80 / 75)
    assert (v0["baseline_steps"], v0["steps_to_baseline"], v0["speedup"]) == (20.0, 10.0, 2.0)
    assert (v1["gain"], v1["rer"]) == (10.0, pytest.approx(0.25))
    assert v1["relative_performance"] == pytest.approx(70 / 60)
    assert v1["baseline_steps"] == 10.0 and math.isnan(v1["steps_to_baseline"]) and math.isnan(v1["speedup"])
    assert z["gain"] == -35.0 and z["relative_performance"] == pytest.approx(40 / 75)
    assert z["baseline_steps"] == 20.0 and math.isnan(z["steps_to_baseline"]) and math.isnan(z["speedup"])
    # spot_topk was already at the baseline's best at step 0: reached, but no finite speed-up
    assert spot["source"] == "top2" and spot["steps_to_baseline"] == 0.0 and math.isnan(spot["speedup"])
    assert t["reached_at_start"].tolist() == [False, False, False, True]
    # dev-curve outcomes: differences to the baseline at shared steps (v0: 10, 10, 5; v1: -10, -10, -5;
    # spot: 35, 16); early_gain at the last evaluation <= early_step
    assert t["auc_gain"].iloc[[0, 1, 3]].tolist() == pytest.approx([25 / 3, -25 / 3, 25.5])
    assert t["early_gain"].iloc[[0, 1, 3]].tolist() == [10.0, -10.0, 35.0]
    assert math.isnan(z["auc_gain"]) and math.isnan(z["early_gain"])
    late = gains.compute_gains(runs, baselines, curves, early_step=25)
    assert late["early_gain"].iloc[[0, 1, 3]].tolist() == [5.0, -5.0, 16.0]
    assert t["seed"].dtype == np.int64

    no_curves = gains.compute_gains(runs, baselines)
    assert no_curves["steps_to_baseline"].isna().all() and no_curves["speedup"].isna().all()
    assert no_curves["auc_gain"].isna().all() and not no_curves["reached_at_start"].any()
    assert no_curves["gain"].tolist() == [5.0, 10.0, -35.0, 3.0]


def test_compute_gains_errors():
    runs, baselines, _ = gains_inputs()
    with pytest.raises(ValueError, match=r"no baseline score.*'seed': 1"):
        gains.compute_gains(runs, baselines.iloc[:1])
    with pytest.raises(ValueError, match="sharing a key"):
        gains.compute_gains(pd.concat([runs, runs.iloc[:1]]), baselines)
    with pytest.raises(ValueError, match="unknown transfer methods"):
        gains.compute_gains(runs.assign(method="magic"), baselines)
    with pytest.raises(ValueError, match="lacks columns"):
        gains.compute_gains(runs.drop(columns="score"), baselines)
    # baselines may name the target column "task"; baseline 100 / 0 give NaN, not inf
    edge = gains.compute_gains(runs.iloc[:1], pd.DataFrame({"backbone": ["b"], "task": ["t"], "seed": [0],
                                                         "score": [100.0]}))
    assert edge["gain"].item() == -20.0 and math.isnan(edge["rer"].item())
    edge = gains.compute_gains(runs.iloc[:1], baselines.assign(score=0.0))
    assert math.isnan(edge["relative_performance"].item())


def test_aggregate_gains():
    runs, baselines, curves = gains_inputs()
    agg = gains.aggregate_gains(gains.compute_gains(runs, baselines, curves))
    van = agg[agg["method"] == "vanilla"].iloc[0]
    assert van["n_seeds"] == 2 and van["n_reached"] == 1
    assert van["gain_mean"] == 7.5 and van["gain_std"] == pytest.approx(math.sqrt(12.5))
    assert van["rer_mean"] == pytest.approx(0.225)
    assert van["speedup_mean"] == 2.0  # the seed that never reached the baseline has no speedup
    assert van["speedup_median"] == 2.0 and van["n_reached_at_start"] == 0
    spot = agg[agg["method"] == "spot_topk"].iloc[0]
    assert spot["n_reached"] == 1 and spot["n_reached_at_start"] == 1 and math.isnan(spot["speedup_mean"])
    assert van["score_mean"] == 75.0 and van["baseline_score_mean"] == 67.5
    zs = agg[agg["method"] == "zeroshot"].iloc[0]
    assert zs["n_seeds"] == 1 and math.isnan(zs["gain_std"]) and zs["n_reached"] == 0
    assert len(agg) == 3


# ---------------------------------------------------------------- metric tables

TASKS = ["A", "B", "C", "D"]
# value of cos_avg for (source, target); all distinct
V = {("B", "A"): .2, ("C", "A"): .5, ("D", "A"): .3,
     ("A", "B"): .1, ("C", "B"): .4, ("D", "B"): .6,
     ("A", "C"): .7, ("B", "C"): .8, ("D", "C"): .05,
     ("A", "D"): .15, ("B", "D"): .25, ("C", "D"): .35}


def metric_frames():
    sim, tr = [], []
    for s in TASKS:
        for t in TASKS:
            v = V.get((s, t), 1.0)  # self-pairs: top similarity
            for metric, value in (("cos_avg", v), ("neg", -v), ("copy", 2 * v)):
                sim.append(("b", s, t, metric, value, 0.0, 1))
            for seed, delta in ((0, -1.0), (1, 1.0)):  # the two seeds average to the planned value
                if s == t:  # a self-pair with a big loss: including it would spoil every correlation
                    van_gain, zs_gain, zs_rel = -50.0, -50.0, 0.0
                else:
                    van_gain, zs_gain, zs_rel = 10 * v + 1, -10 * v, 0.5 + v
                tr.append(("b", s, t, "vanilla", seed, van_gain + delta, zs_rel))
                tr.append(("b", s, t, "zeroshot", seed, zs_gain + delta, zs_rel + delta / 10))
    tr.append(("b", "top3", "A", "spot_topk", 0, 9.0, 1.1))
    similarity = pd.DataFrame(sim, columns=["backbone", "source", "target", "metric", "value", "std", "n_pairs"])
    transfer = pd.DataFrame(tr, columns=["backbone", "source", "target", "method", "seed", "gain",
                                         "relative_performance"])
    return similarity, transfer


def brute_force_joint_p() -> float:
    """The exact joint-source permutation p of cos_avg against the vanilla gain in metric_frames, computed
    directly: each of the 4! orderings of the sources moves every source's metric values (self-pairs missing),
    and the within-target Pearson r is taken over the pairs both sides still have."""
    x = np.array([[V.get((s, t), np.nan) for t in TASKS] for s in TASKS])
    y = 10 * x + 1

    def r_of(xp):
        num = sxx = syy = 0.0
        for j in range(len(TASKS)):
            ok = np.isfinite(xp[:, j]) & np.isfinite(y[:, j])
            a, b = xp[ok, j] - xp[ok, j].mean(), y[ok, j] - y[ok, j].mean()
            num, sxx, syy = num + (a * b).sum(), sxx + (a * a).sum(), syy + (b * b).sum()
        return num / np.sqrt(sxx * syy)

    observed = abs(r_of(x))
    stats = [abs(r_of(x[list(perm)])) for perm in itertools.permutations(range(len(TASKS)))]
    return sum(v >= observed - 1e-12 for v in stats) / len(stats)


def test_correlation_table_exact():
    sim, tr = metric_frames()
    c = correlation.correlation_table(sim, tr, n_permutations=1000, n_bootstrap=200, seed=0)
    assert list(c.columns) == correlation.CORRELATION_COLUMNS
    # 3 metrics x 2 methods (spot_topk has no per-source similarity) x (4 targets + pooled)
    assert len(c) == 30
    assert set(c["method"]) == {"vanilla", "zeroshot"}
    assert c.loc[c["target"] == "pooled", "n"].tolist() == [12] * 6
    assert c.loc[c["target"] != "pooled", "n"].tolist() == [3] * 24
    for metric, sign in (("cos_avg", 1.0), ("copy", 1.0), ("neg", -1.0)):
        rows = c[c["metric"] == metric]
        # vanilla gain is linear in the value; zeroshot uses relative_performance (also linear in it)
        for col in ("pearson_r", "spearman_rho", "kendall_tau"):
            assert rows[col].tolist() == pytest.approx([sign] * 10)
        per_target = rows[rows["target"] != "pooled"]
        # n = 3: exact test over 3! orders, only the observed one is this extreme -> 2 / 6
        assert per_target["spearman_p"].tolist() == pytest.approx([1 / 3] * 8)
        pooled = rows[rows["target"] == "pooled"]
        # n = 12 pairs over 4 targets and 4 sources; the sources are permuted jointly across targets, and
        # 4! = 24 <= 1000, so the test is exact: p = the share of the 24 orderings whose |r| reaches 1
        assert (pooled["n_targets"] == 4).all() and (pooled["n_sources"] == 4).all()
        assert pooled["exact"].all() and (pooled["permutations"] == 24).all()
        assert pooled["pearson_p"].tolist() == pytest.approx([brute_force_joint_p()] * 2)
        assert pooled["pearson_p_se"].tolist() == [0.0, 0.0]  # exact: no Monte-Carlo error
        assert pooled["spearman_ci_low"].tolist() == pytest.approx([sign] * 2)
    assert c["target"].tolist()[:5] == ["A", "B", "C", "D", "pooled"]


def test_metric_comparison_table_exact():
    sim, tr = metric_frames()
    cmp = correlation.metric_comparison_table(sim, tr, n_bootstrap=1000, seed=0)
    assert list(cmp.columns) == correlation.COMPARISON_COLUMNS
    assert len(cmp) == 6  # 3 metric pairs x 2 methods
    van = cmp[cmp["method"] == "vanilla"].set_index(["metric_a", "metric_b"])
    r = van.loc[("cos_avg", "neg")]
    assert (r["n"], r["r_a"], r["r_b"], r["diff"]) == (12, pytest.approx(1), pytest.approx(-1), pytest.approx(2))
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(2), pytest.approx(2))
    assert r["p"] == 0.0 and r["p_holm"] == 0.0 and r["significant"]  # every jackknife replicate is 2: no spread
    r = van.loc[("cos_avg", "copy")]
    assert r["diff"] == pytest.approx(0) and r["p"] == 1.0 and not r["significant"]
    r = van.loc[("neg", "copy")]
    assert r["diff"] == pytest.approx(-2) and r["significant"]


def test_retrieval_table_exact():
    sim, tr = metric_frames()
    ret = retrieval.retrieval_table(sim, tr, ks=(1, 2))
    assert list(ret.columns) == correlation.RETRIEVAL_COLUMNS
    assert len(ret) == 3 * 2 * 4 * 2  # metrics x methods x targets x ks
    assert (ret["baseline"] == 0.0).all()
    key = ret.set_index(["metric", "method", "target", "k"])
    # target A, vanilla: sources B, C, D with values .2, .5, .3 and gains 3, 6, 4
    r = key.loc[("cos_avg", "vanilla", "A", 1)]
    assert (r["best_of_topk"], r["oracle"], r["regret"], r["ndcg"]) == (6.0, 6.0, 0.0, 1.0)
    assert r["random"] == pytest.approx(13 / 3)
    assert key.loc[("cos_avg", "vanilla", "A", 2), "random"] == pytest.approx((4 * 1 + 6 * 2) / 3)
    # neg ranks B (gain 3) then D (4): relevance max(gain, 0) -> 3, 4; ideal 6, 4
    r = key.loc[("neg", "vanilla", "A", 1)]
    assert (r["best_of_topk"], r["regret"], r["ndcg"]) == (3.0, 3.0, 0.5)
    r = key.loc[("neg", "vanilla", "A", 2)]
    assert r["best_of_topk"] == 4.0 and r["regret"] == 2.0
    assert r["ndcg"] == pytest.approx((3 + 4 / math.log2(3)) / (6 + 4 / math.log2(3)))
    # zeroshot retrieval uses the gain (-10 v), so the most similar source is the worst one
    r = key.loc[("cos_avg", "zeroshot", "A", 1)]
    assert (r["best_of_topk"], r["oracle"], r["regret"]) == (pytest.approx(-5.0), pytest.approx(-2.0),
                                                              pytest.approx(3.0))


def test_summary_table_and_text():
    sim, tr = metric_frames()
    corr = correlation.correlation_table(sim, tr, n_permutations=200, n_bootstrap=200, seed=0)
    ret = retrieval.retrieval_table(sim, tr, ks=(1, 3))
    cmp = correlation.metric_comparison_table(sim, tr, n_bootstrap=200, seed=0)
    summ = summary.summary_table(corr, ret, cmp)
    assert len(summ) == 2
    van = summ[summ["method"] == "vanilla"].iloc[0]
    assert van["best_metric"] == "cos_avg" and van["runner_up"] == "copy"  # tie on rho: first listed wins
    assert van["spearman_rho"] == pytest.approx(1.0) and van["margin"] == pytest.approx(0.0)
    assert van["n"] == 12 and van["diff_p"] == 1.0 and not van["significant"]
    assert van["oracle"] == pytest.approx((6 + 7 + 9 + 4.5) / 4)
    assert van["best_of_top1"] == pytest.approx(6.625) and van["regret_at_1"] == 0.0 and van["ndcg_at_1"] == 1.0
    assert van["regret_at_3"] == 0.0
    text = summary.summary_text(summ)
    assert van["n_targets"] == 4 and van["n_metrics"] == 3 and van["targets_positive"] == 4
    # 4 sources: all 4! = 24 joint orderings (exact, no Monte-Carlo error), 6 of them as extreme as the observed
    # one; the three metrics are copies, so the max statistic adjusts nothing
    assert (van["permutations"], van["exact"], van["spearman_p_se"]) == (24, True, 0.0)
    assert van["spearman_p"] == pytest.approx(0.25) and van["spearman_p_maxt"] == pytest.approx(0.25)
    assert van["spearman_mde"] > 1  # 4 sources cannot show any rho with 80 % power
    assert van["share_of_oracle_1"] == 1.0 and van["n_oracle_positive"] == 4 and van["n_targets_missing"] == 0
    assert van["oracle_heldout"] == pytest.approx(van["oracle"])  # the seeds only shift every gain by -1 / +1
    # best of top 1 per target: 6, 7, 9, 4.5 -> t-interval over the 4 targets
    half = 3.182446305284263 * np.std([6, 7, 9, 4.5], ddof=1) / 2
    assert (van["best_of_top1_ci_low"], van["best_of_top1_ci_high"]) == (pytest.approx(6.625 - half),
                                                                         pytest.approx(6.625 + half))
    assert text.startswith("On b, cos_avg ranks first among 3 metrics for vanilla gains (within-target Spearman "
                           "ρ = 1.00 [95% CI, targets and sources as samples: 1.00, 1.00], 12 pairs on 4 targets; "
                           "ρ > 0 on 4 of 4 targets); adjusted for picking it among all metrics and predictors "
                           "(max-statistic test) it is not significant (p = 0.250), which at this size means we "
                           "cannot tell: not even a perfect ρ of 1 would be found with 80 % power from 4 sources. "
                           "It does not beat the runner-up copy")
    zs = summ[summ["method"] == "zeroshot"].iloc[0]
    assert zs["n_oracle_positive"] == 0 and math.isnan(zs["share_of_oracle_1"])
    assert text.endswith("is not above 0.")
    assert "zeroshot relative performance" in text
    assert "regret 0.0" in text


def test_summary_hand_made_frames():
    rows = []
    for metric, rho, low, high in (("max", 0.6, 0.4, 0.75), ("cos_avg", 0.3, 0.1, 0.5), ("on", NAN, NAN, NAN)):
        rows.append({c: NAN for c in correlation.CORRELATION_COLUMNS} | {
            "backbone": "m", "metric": metric, "method": "vanilla", "target": "pooled", "n": 40,
            "spearman_rho": rho, "spearman_ci_low": low, "spearman_ci_high": high, "spearman_p": 0.001,
            "spearman_p_maxt": 0.002, "spearman_mde_maxt": 0.45})
    corr = pd.DataFrame(rows, columns=correlation.CORRELATION_COLUMNS)
    # the comparison is stored the other way round (cos_avg - max): the summary flips it
    cmp = pd.DataFrame([{"backbone": "m", "method": "vanilla", "metric_a": "cos_avg", "metric_b": "max", "n": 40,
                         "r_a": 0.3, "r_b": 0.6, "diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "p": 0.004,
                         "significant": True}])
    summ = summary.summary_table(corr, None, cmp)
    r = summ.iloc[0]
    assert (r["best_metric"], r["runner_up"]) == ("max", "cos_avg")
    assert r["margin"] == pytest.approx(0.3)
    assert (r["diff_ci_low"], r["diff_ci_high"], r["diff_p"], r["significant"]) == (
        pytest.approx(0.1), pytest.approx(0.5), 0.004, True)
    # no per-target rows and no n_targets column value: the count falls back to the per-target rows (0)
    assert r["n_metrics"] == 2 and r["spearman_p_maxt"] == pytest.approx(0.002)
    assert summary.summary_text(summ) == (
        "On m, max ranks first among 2 metrics for vanilla gains (within-target Spearman ρ = 0.60 [95% CI, targets "
        "and sources as samples: 0.40, 0.75], 40 pairs on 0 targets; ρ > 0 on 0 of 0 targets); adjusted for picking "
        "it among all metrics and predictors (max-statistic test) it is significant (p = 0.002). It beats the "
        "runner-up cos_avg (ρ = 0.30; difference simultaneous 95% CI 0.10 to 0.50, Holm-adjusted).")
    held_not = summary.summary_table(corr.assign(spearman_p_maxt=0.08), None, cmp)
    assert ("it is not significant (p = 0.080), which at this size means we cannot tell: only a ρ of about 0.45 or "
            "more would be found with 80 % power.") in summary.summary_text(held_not)
    alone = summary.summary_table(corr[corr["metric"] == "max"])
    assert alone.iloc[0]["runner_up"] is None
    assert summary.summary_text(alone).endswith("It is the only metric with a defined correlation.")
    assert summary.summary_text(summary.summary_table(corr)).endswith("no paired comparison was run.")


def test_summary_text_uses_smallest_k_and_reads_back_nan():
    sim, tr = metric_frames()
    corr = correlation.correlation_table(sim, tr, n_permutations=50, n_bootstrap=50, seed=0)
    summ = summary.summary_table(corr[corr["metric"] == "cos_avg"], retrieval.retrieval_table(sim, tr, ks=(3,)))
    text = summary.summary_text(summ)
    half = 3.182446305284263 * np.std([6, 7, 9, 4.5], ddof=1) / 2  # t over 4 targets
    assert (f"Taking the best of its top 3 sources gives a mean gain of 6.6 points [{6.625 - half:.1f}, "
            f"{6.625 + half:.1f}] (regret 0.0, nDCG@3 1.00): 100 % [100, 100] of the held-out oracle's 6.6") in text
    # a parquet round trip may turn None into NaN
    assert summary.summary_text(summ.assign(runner_up=np.nan)).count("only metric") == 2


def test_summary_names_the_metrics_that_beat_each_predictor():
    corr = pd.DataFrame([{c: NAN for c in correlation.CORRELATION_COLUMNS} | {
        "backbone": "m", "metric": name, "kind": kind, "method": "vanilla", "target": "pooled", "n": 30,
        "n_targets": 3, "spearman_rho": rho, "spearman_ci_low": rho - 0.2, "spearman_ci_high": rho + 0.1,
        "spearman_p": 0.01} for name, kind, rho in (("max", "metric", 0.7), ("on", "metric", 0.5),
                                                    ("cos_avg", "metric", 0.45), ("source_only", "comparator", 0.4))])
    # max and cos_avg are significantly above source_only (Holm p < 0.05), on is not
    cmp = pd.DataFrame([{"backbone": "m", "method": "vanilla", "metric_a": a, "metric_b": "source_only", "diff": d,
                         "ci_low": d - 0.1, "ci_high": d + 0.1, "p": p, "p_holm": p, "significant": p < 0.05}
                        for a, d, p in (("max", 0.3, 0.01), ("on", 0.1, 0.3), ("cos_avg", 0.05, 0.02))])
    r = summary.summary_table(corr, None, cmp).iloc[0]
    assert r["metrics_beating_source_only"] == "max, cos_avg" and bool(r["beats_source_only"])
    assert r["source_only_rho"] == 0.4 and (r["vs_source_only_ci_low"], r["vs_source_only_ci_high"]) == (
        pytest.approx(0.2), pytest.approx(0.4))
    assert "Against the analysis predictors it beats source_only (ρ = 0.40" in summary.summary_text(
        summary.summary_table(corr, None, cmp))
