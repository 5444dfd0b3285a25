"""The study's findings in a few rows a researcher can read (tables/findings.parquet, ``promptgrid summarize``).

Every row is an estimate with a 95 % CI that treats the target as the unit (pairs of one target are
not independent), and says on how many targets it holds:

* ``same_vs_other_family``: per method, how much more a source of the target's own task family gives
  than a source of another family (the outcome the method is judged on), averaged over the targets that
  have sources of both kinds;
* ``best_metric``: per method, the similarity metric that ranks first, with its Holm-adjusted p (it was
  picked among many) and the runner-up;
* ``<a>_minus_<b>`` for every method ``a`` whose spec is ``compared_with`` a method ``b`` (PANDA against
  vanilla transfer): a's test score minus b's, paired by source, target and seed, averaged within
  targets first;
* ``best_of_topk_share``: per method, the share of the oracle source's gain that the best of the metric's
  top k sources reaches, over the targets where any source gains.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from promptgrid.analysis.pooled import cluster_mean_ci
from promptgrid.registry import METHODS

FINDINGS_COLUMNS = ["backbone", "finding", "method", "value", "ci_low", "ci_high", "p", "n", "n_targets",
                    "positive_targets", "detail"]


def _row(backbone, finding, method, est: dict, detail: str, p=np.nan) -> dict:
    return {"backbone": backbone, "finding": finding, "method": method, "value": est["mean"],
            "ci_low": est["ci_low"], "ci_high": est["ci_high"], "p": p, "n": est["n"],
            "n_targets": est["n_groups"], "positive_targets": est["positive"], "detail": detail}


def family_contrast(transfer: pd.DataFrame, families: dict, outcome: str = "gain", n_bootstrap: int = 1000,
                    seed: int = 0) -> list:
    """Per backbone and per-source method: mean over targets of (mean outcome of same-family sources minus
    mean outcome of other-family sources), seed means first, self-pairs left out."""
    rows = []
    df = transfer[transfer["source"].isin(families) & (transfer["source"] != transfer["target"])]
    for (backbone, method), g in df.groupby(["backbone", "method"], sort=False):
        spec = METHODS.require(method)
        col = spec.outcome_column(outcome)  # what its spec judges it on: the gain column, or relative performance
        pair = g.groupby(["source", "target"], sort=False)[col].mean().reset_index()
        pair["same"] = [families.get(s) == families.get(t) for s, t in zip(pair["source"], pair["target"])]
        per_target = pair.groupby(["target", "same"])[col].mean().unstack("same")
        if True not in per_target.columns or False not in per_target.columns:
            continue
        diffs = (per_target[True] - per_target[False]).dropna()
        est = cluster_mean_ci(diffs.to_numpy(), diffs.index.to_numpy(), n_bootstrap, seed)
        unit = "relative performance" if spec.relative else f"{outcome} (score points)"
        rows.append(_row(backbone, "same_vs_other_family", method, est,
                         f"same-family minus other-family sources, {unit}, mean over the targets with sources of "
                         f"both kinds"))
    return rows


def paired_method_difference(transfer: pd.DataFrame, a: str, b: str, n_bootstrap: int = 1000,
                             seed: int = 0) -> list:
    """Test score of method ``a`` minus method ``b`` on the same (source, target, seed), averaged within
    targets, CI over targets."""
    rows = []
    key = ["backbone", "source", "target", "seed"]
    for backbone, g in transfer.groupby("backbone", sort=False):
        wide = g[g["method"].isin([a, b])].pivot_table(index=key, columns="method", values="score")
        if a not in wide.columns or b not in wide.columns:
            continue
        d = (wide[a] - wide[b]).dropna()
        if d.empty:
            continue
        est = cluster_mean_ci(d.to_numpy(), d.index.get_level_values("target").to_numpy(), n_bootstrap, seed)
        rows.append(_row(backbone, f"{a}_minus_{b}", a, est, f"test score of {a} minus {b}, paired by source, "
                                                              f"target and seed (score points)"))
    return rows


def from_summary(summary: pd.DataFrame) -> list:
    """The best metric and the best-of-top-k share, per method, from a summary_table frame."""
    rows = []
    ks = sorted(int(c[len("share_of_oracle_"):]) for c in summary.columns if c.startswith("share_of_oracle_"))
    for _, r in summary.iterrows():
        runner = "" if r["runner_up"] is None or pd.isna(r["runner_up"]) else (
            f"; runner-up {r['runner_up']} (rho {r['runner_up_rho']:.2f}), difference "
            f"{'significant' if r['significant'] else 'not significant'}")
        rows.append({"backbone": r["backbone"], "finding": "best_metric", "method": r["method"],
                     "value": r["spearman_rho"], "ci_low": r["spearman_ci_low"], "ci_high": r["spearman_ci_high"],
                     "p": r["spearman_p_holm"], "n": r["n"], "n_targets": r["n_targets"],
                     "positive_targets": r["targets_positive"],
                     "detail": f"{r['best_metric']}: within-target Spearman rho, p Holm-adjusted over "
                               f"{int(r['n_metrics'])} metrics{runner}"})
        if ks:
            k = ks[0]
            rows.append({"backbone": r["backbone"], "finding": f"best_of_top{k}_share", "method": r["method"],
                         "value": r[f"share_of_oracle_{k}"], "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                         "n": np.nan, "n_targets": r["n_oracle_positive"], "positive_targets": np.nan,
                         "detail": f"best of {r['best_metric']}'s top {k} sources as a share of the oracle "
                                   f"source's gain, mean over the targets where any source gains"})
    return rows


def findings_table(transfer: pd.DataFrame, summary: pd.DataFrame, families: dict, outcome: str = "gain",
                   n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    rows = family_contrast(transfer, families, outcome, n_bootstrap, seed)
    rows += from_summary(summary)
    for spec in METHODS.ordered():  # a method that claims to beat another: its paired difference
        if spec.compared_with is not None:
            rows += paired_method_difference(transfer, spec.name, spec.compared_with, n_bootstrap, seed)
    df = pd.DataFrame(rows, columns=FINDINGS_COLUMNS)
    return df


def findings_text(findings: pd.DataFrame) -> str:
    """The findings as a fixed-width table, one line per row."""
    if findings.empty:
        return "No findings: the study has no rows to compare."
    lines = [f"{'finding':<24} {'backbone':<10} {'method':<10} {'value':>8} {'95% CI':>19} {'p':>7} "
             f"{'targets +/n':>11}  detail"]
    for _, r in findings.iterrows():
        ci = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        p = "" if pd.isna(r["p"]) else f"{r['p']:.3f}"
        pos = "" if pd.isna(r["positive_targets"]) else f"{int(r['positive_targets'])}/{int(r['n_targets'])}"
        if pos == "" and not pd.isna(r["n_targets"]):
            pos = f"n={int(r['n_targets'])}"
        value = "n/a" if pd.isna(r["value"]) else f"{r['value']:.2f}"
        lines.append(f"{r['finding']:<24} {r['backbone']:<10} {r['method']:<10} {value:>8} {ci:>19} {p:>7} "
                     f"{pos:>11}  {r['detail']}")
    return "\n".join(lines)
