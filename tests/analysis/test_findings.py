"""The findings table (promptgrid.analysis.findings): hand-computed estimates, target as the unit."""
import math

import pandas as pd
import pytest

from promptgrid.analysis import findings

FAMILIES = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
# (source, target): planned seed-mean gain; seeds 0 / 1 add -1 / +1
GAINS = {("a2", "a1"): 10.0, ("b1", "a1"): 2.0, ("b2", "a1"): 4.0,
         ("b2", "b1"): 5.0, ("a1", "b1"): 1.0, ("a2", "b1"): 3.0}


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
    [row] = findings.family_contrast(transfer_frame(), FAMILIES, n_bootstrap=500, seed=0)
    # target a1: same 10 - other mean(2, 4) = 7; target b1: 5 - mean(1, 3) = 3; mean 5
    assert row["finding"] == "same_vs_other_family" and row["method"] == "vanilla"
    assert row["value"] == pytest.approx(5.0) and row["n_targets"] == 2 and row["positive_targets"] == 2
    # a bootstrap over 2 targets can only average {7, 7}, {7, 3} or {3, 3}
    assert row["ci_low"] == pytest.approx(3.0) and row["ci_high"] == pytest.approx(7.0)


def test_family_contrast_needs_both_kinds_of_source():
    one_family = {k: "A" for k in FAMILIES}
    assert findings.family_contrast(transfer_frame(), one_family) == []


def test_panda_minus_vanilla_is_paired_and_averaged_within_targets():
    [row] = findings.paired_method_difference(transfer_frame({"a1": 2.0, "b1": -1.0}), "panda", "vanilla",
                                               n_bootstrap=200, seed=0)
    assert row["finding"] == "panda_minus_vanilla"
    assert row["value"] == pytest.approx(0.5) and row["n"] == 12 and row["n_targets"] == 2
    assert row["positive_targets"] == 1
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(-1.0), pytest.approx(2.0))
    assert findings.paired_method_difference(transfer_frame(), "panda", "vanilla") == []  # no PANDA runs


def test_findings_table_and_text():
    summary = pd.DataFrame([{"backbone": "m", "method": "vanilla", "best_metric": "max", "n": 6, "n_targets": 2,
                             "n_metrics": 4, "spearman_rho": 0.4, "spearman_ci_low": -0.2, "spearman_ci_high": 0.8,
                             "spearman_p_holm": 0.6, "targets_positive": 1, "runner_up": "on",
                             "runner_up_rho": 0.3, "significant": False, "share_of_oracle_1": 0.75,
                             "n_oracle_positive": 2}])
    table = findings.findings_table(transfer_frame({"a1": 2.0, "b1": -1.0}), summary, FAMILIES, n_bootstrap=100)
    assert list(table.columns) == findings.FINDINGS_COLUMNS
    assert table["finding"].tolist() == ["same_vs_other_family", "same_vs_other_family", "best_metric",
                                         "best_of_top1_share", "panda_minus_vanilla"]
    best = table.set_index("finding").loc["best_metric"]
    assert best["p"] == 0.6 and "Holm-adjusted over 4 metrics" in best["detail"]
    assert "runner-up on (rho 0.30), difference not significant" in best["detail"]
    share = table.set_index("finding").loc["best_of_top1_share"]
    assert share["value"] == 0.75 and share["n_targets"] == 2 and math.isnan(share["ci_low"])
    text = findings.findings_text(table)
    lines = text.splitlines()
    assert len(lines) == 6 and lines[0].startswith("finding")
    assert "5.00" in lines[1] and "[3.00, 7.00]" in lines[1] and "2/2" in lines[1]
    assert "0.600" in lines[3] and "1/2" in lines[3]
    assert findings.findings_text(table.iloc[:0]).startswith("No findings")
