"""The findings table (promptgrid.analysis.findings): hand-computed estimates, target as the unit."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from promptgrid.analysis import findings

FAMILIES = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
# (source, target): planned seed-mean gain; seeds 0 / 1 add -1 / +1
GAINS = {("a2", "a1"): 10.0, ("b1", "a1"): 2.0, ("b2", "a1"): 4.0,
         ("b2", "b1"): 5.0, ("a1", "b1"): 1.0, ("a2", "b1"): 3.0,
         ("a1", "a2"): 6.0, ("b1", "a2"): 1.0, ("b2", "a2"): 2.0}
T975_2DF = 4.302652729911275  # the t quantile of a 95 % interval over 3 targets


def transfer_frame(panda_offset: dict | None = None) -> pd.DataFrame:
    rows = []
    for (s, t), g in GAINS.items():
        for seed, delta in ((0, -1.0), (1, 1.0)):
            rows.append({"backbone": "m", "source": s, "target": t, "method": "vanilla", "seed": seed,
                         "score": 50 + g + delta, "gain": g + delta, "relative_performance": 1.0})
            if panda_offset is not None:
                rows.append({"backbone": "m", "source": s, "target": t, "method": "panda", "seed": seed,
                             "score": 50 + g + delta + panda_offset[t], "gain": g + delta + panda_offset[t],
                             "relative_performance": 1.0})
    # a self-pair with a huge gain: left out of every finding
    rows.append({"backbone": "m", "source": "a1", "target": "a1", "method": "vanilla", "seed": 0, "score": 99.0,
                 "gain": 90.0, "relative_performance": 1.0})
    return pd.DataFrame(rows)


def test_family_contrast_is_a_mean_over_targets():
    [row] = findings.family_contrast(transfer_frame(), FAMILIES)
    # a1: same 10 - other mean(2, 4) = 7; b1: 5 - mean(1, 3) = 3; a2: 6 - mean(1, 2) = 4.5
    assert row["finding"] == "same_vs_other_family" and row["method"] == "vanilla"
    assert row["value"] == pytest.approx(29 / 6) and row["n_targets"] == 3 and row["positive_targets"] == 3
    se = np.std([7, 3, 4.5], ddof=1) / math.sqrt(3)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(29 / 6 - T975_2DF * se),
                                               pytest.approx(29 / 6 + T975_2DF * se))
    # t = 4.14 on 2 df: just short of 4.30, so three positive targets are not enough to tell at alpha 0.05
    assert row["p"] == pytest.approx(2 * student_t.sf((29 / 6) / se, 2)) and 0.05 < row["p"] < 0.06
    assert row["verdict"] == findings.CANNOT_TELL
    # the MDE of a t-test over 3 targets: (t_.975 + t_.8 at 2 df) x SE
    assert row["mde"] == pytest.approx((T975_2DF + 1.0606601717798212) * se)
    # two targets give an estimate but no CI: a CI over targets starts at 3
    [two] = findings.family_contrast(transfer_frame().query("target != 'a2'"), FAMILIES)
    assert two["value"] == pytest.approx(5.0) and math.isnan(two["ci_low"]) and two["verdict"] == ""


def test_family_contrast_needs_both_kinds_of_source():
    one_family = {k: "A" for k in FAMILIES}
    assert findings.family_contrast(transfer_frame(), one_family) == []


def test_panda_minus_vanilla_is_paired_and_averaged_within_targets():
    [row] = findings.paired_method_difference(transfer_frame({"a1": 2.0, "b1": -1.0, "a2": 0.5}), "panda", "vanilla")
    assert row["finding"] == "panda_minus_vanilla"
    assert row["value"] == pytest.approx(0.5) and row["n"] == 18 and row["n_targets"] == 3
    assert row["positive_targets"] == 2
    se = np.std([2.0, -1.0, 0.5], ddof=1) / math.sqrt(3)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(0.5 - T975_2DF * se), pytest.approx(0.5 + T975_2DF * se))
    assert row["verdict"] == findings.CANNOT_TELL  # a CI across 0 is not "no effect"
    assert findings.paired_method_difference(transfer_frame(), "panda", "vanilla") == []  # no PANDA runs


def test_findings_table_and_text():
    summary = pd.DataFrame([{"backbone": "m", "method": "vanilla", "best_metric": "max", "n": 6, "n_targets": 3,
                             "n_metrics": 4, "spearman_rho": 0.4, "spearman_ci_low": -0.2, "spearman_ci_high": 0.8,
                             "spearman_p_maxt": 0.6, "spearman_mde_maxt": 0.9, "targets_positive": 1,
                             "runner_up": "on", "runner_up_rho": 0.3, "significant": False,
                             "source_only_rho": 0.5, "vs_source_only_ci_low": -0.7, "vs_source_only_ci_high": 0.5,
                             "vs_source_only_p": 1.0, "beats_source_only": False}])
    table = findings.findings_table(transfer_frame({"a1": 2.0, "b1": -1.0, "a2": 0.5}), summary, FAMILIES,
                                    predictors=[("source_only", "comparator")])
    assert list(table.columns) == findings.FINDINGS_COLUMNS
    assert table["finding"].tolist() == ["same_vs_other_family", "same_vs_other_family", "best_metric",
                                         "best_metric_vs_source_only", "panda_minus_vanilla"]
    by = table.set_index("finding")
    best = by.loc["best_metric"]
    assert best["p"] == 0.6 and best["mde"] == 0.9 and best["verdict"] == findings.CANNOT_TELL
    assert "max-statistic adjusted over all 4 metrics" in best["detail"]
    assert "runner-up on (rho 0.30), difference not significant" in best["detail"]
    vs = by.loc["best_metric_vs_source_only"]
    assert vs["value"] == pytest.approx(-0.1) and (vs["ci_low"], vs["ci_high"]) == (-0.7, 0.5)
    assert "does not beat it" in vs["detail"]
    text = findings.findings_text(table)
    lines = text.splitlines()
    assert len(lines) == 6 and lines[0].startswith("finding")
    assert "4.83" in lines[1] and "3/3" in lines[1] and findings.CANNOT_TELL in lines[1]
    assert "0.600" in lines[3] and "0.90" in lines[3] and "1/3" in lines[3] and findings.CANNOT_TELL in lines[3]
    assert findings.findings_text(table.iloc[:0]).startswith("No findings")


def test_speedup_is_the_mean_of_per_target_medians_with_a_t_interval_around_1x():
    rows = []
    for t, speedups in (("x", [2.0, 2.5, 6.0]), ("y", [1.0, 1.5, 2.0]), ("z", [3.0, 3.0, np.nan])):
        for i, sp in enumerate(speedups):
            rows.append({"backbone": "m", "source": f"s{i}", "target": t, "method": "vanilla", "seed": 0,
                         "speedup": sp})
    rows.append({"backbone": "m", "source": "x", "target": "x", "method": "vanilla", "seed": 0, "speedup": 50.0})
    [row] = findings.speedups(pd.DataFrame(rows))
    medians = np.array([2.5, 1.5, 3.0])  # per target (x: the median 2.5, not the mean 3.5); the self-pair and the run that never reached it left out
    se = medians.std(ddof=1) / math.sqrt(3)
    assert row["finding"] == "speedup" and row["value"] == pytest.approx(medians.mean())
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(medians.mean() - T975_2DF * se),
                                               pytest.approx(medians.mean() + T975_2DF * se))
    assert row["p"] == pytest.approx(2 * student_t.sf((medians.mean() - 1) / se, 2))  # against no speed-up, 1x
    assert findings.speedups(pd.DataFrame(rows).drop(columns="speedup")) == []
