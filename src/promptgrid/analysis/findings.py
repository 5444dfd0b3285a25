"""The study's findings in a few rows a researcher can read (tables/findings.parquet, ``promptgrid summarize``).

Every row is an estimate with a 95 % CI that treats the target as the unit (pairs of one target are not
independent), its p, the minimum detectable effect at the study's size (80 % power, two-sided alpha 0.05),
and a verdict: "significant", or, when not, "cannot tell at this size" (a null at this size is not evidence
of no effect; ``mde`` says how large an effect it would have found). The rows:

* ``same_vs_other_family``: per method, how much more a source of the target's own task family gives than a
  source of another family, averaged over the targets that have sources of both kinds (t over targets);
* ``best_metric``: per method, the similarity metric that ranks first, with its max-statistic p (adjusted for
  picking it among all metrics and predictors) and the runner-up;
* ``best_metric_vs_<c>``: the best metric's rho minus analysis predictor c's (Holm-adjusted, simultaneous CI);
* ``<a>_minus_<b>`` for every method ``a`` whose spec is ``compared_with`` a method ``b`` (PANDA against
  vanilla transfer): a's test score minus b's, paired by source, target and seed, averaged within targets;
* ``share_of_oracle_top<k>`` for the best metric and for every analysis predictor: the share of the oracle's
  gain the best of its top k keeps (held out across seeds when there are >= 2), jackknife-t over targets;
* ``learned_minus_<x>_top<k>``: the learned ranking's share minus the best metric's and minus source_only's,
  paired by target;
* ``speedup``: per method that trains, the mean over targets of the median speed-up to the baseline's best
  dev score (runs that reached it after step 0), t over targets.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from promptgrid.analysis.pooled import ALPHA, cluster_mean_ci
from promptgrid.analysis.summary import share_of_oracle
from promptgrid.registry import METHODS

FINDINGS_COLUMNS = ["backbone", "finding", "method", "value", "ci_low", "ci_high", "p", "mde", "verdict", "n",
                    "n_targets", "positive_targets", "detail"]
CANNOT_TELL = "cannot tell at this size"


def verdict(p) -> str:
    return "" if p is None or not np.isfinite(p) else ("significant" if p < ALPHA else CANNOT_TELL)


def _row(backbone, finding, method, est: dict, detail: str) -> dict:
    return {"backbone": backbone, "finding": finding, "method": method, "value": est["mean"],
            "ci_low": est["ci_low"], "ci_high": est["ci_high"], "p": est["p"], "mde": est["mde"],
            "verdict": verdict(est["p"]), "n": est["n"], "n_targets": est["n_groups"],
            "positive_targets": est["positive"], "detail": detail}


def family_contrast(transfer: pd.DataFrame, families: dict, outcome: str = "gain") -> list:
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
        est = cluster_mean_ci(diffs.to_numpy(), diffs.index.to_numpy())
        unit = "relative performance" if spec.relative else f"{outcome} (score points)"
        rows.append(_row(backbone, "same_vs_other_family", method, est,
                         f"same-family minus other-family sources, {unit}, mean over the targets with sources of "
                         f"both kinds (t-interval over targets)"))
    return rows


def paired_method_difference(transfer: pd.DataFrame, a: str, b: str) -> list:
    """Test score of method ``a`` minus method ``b`` on the same (source, target, seed), averaged within
    targets, t-interval over targets."""
    rows = []
    key = ["backbone", "source", "target", "seed"]
    for backbone, g in transfer.groupby("backbone", sort=False):
        wide = g[g["method"].isin([a, b])].pivot_table(index=key, columns="method", values="score")
        if a not in wide.columns or b not in wide.columns:
            continue
        d = (wide[a] - wide[b]).dropna()
        if d.empty:
            continue
        est = cluster_mean_ci(d.to_numpy(), d.index.get_level_values("target").to_numpy())
        rows.append(_row(backbone, f"{a}_minus_{b}", a, est, f"test score of {a} minus {b}, paired by source, "
                                                              f"target and seed (score points)"))
    return rows


def speedups(transfer: pd.DataFrame) -> list:
    """Per backbone and training method: the mean over targets of each target's median speed-up."""
    rows = []
    if "speedup" not in transfer.columns:
        return rows
    df = transfer[transfer["speedup"].notna() & (transfer["source"] != transfer["target"])]
    for (backbone, method), g in df.groupby(["backbone", "method"], sort=False):
        per_target = g.groupby("target", sort=False)["speedup"].median()
        est = cluster_mean_ci(per_target.to_numpy() - 1.0, per_target.index.to_numpy())
        est = {**est, "mean": est["mean"] + 1.0, "ci_low": est["ci_low"] + 1.0, "ci_high": est["ci_high"] + 1.0}
        rows.append(_row(backbone, "speedup", method, est, "median speed-up to the baseline's best dev score per "
                                                           "target, mean over targets; p tests 'no speed-up' (1x)"))
    return rows


def _share_row(backbone, method, finding, est: dict, detail: str) -> dict:
    return {"backbone": backbone, "finding": finding, "method": method, "value": est["estimate"],
            "ci_low": est["ci_low"], "ci_high": est["ci_high"], "p": est["p"], "mde": np.nan,
            "verdict": verdict(est["p"]) if "minus" in finding else "", "n": np.nan, "n_targets": est["n_targets"],
            "positive_targets": np.nan, "detail": detail}


def from_summary(summary: pd.DataFrame, retrieval: pd.DataFrame = None, predictors=()) -> list:
    """The best metric, its standing against the analysis predictors, and the shares of the oracle, per method.
    ``predictors``: (name, kind) of the analysis predictors, in order."""
    rows = []
    ks = sorted(int(c[len("best_of_top"):]) for c in summary.columns
                if c.startswith("best_of_top") and c[len("best_of_top"):].isdigit())
    k = 3 if 3 in ks else (ks[0] if ks else None)
    for _, r in summary.iterrows():
        runner = "" if r["runner_up"] is None or pd.isna(r["runner_up"]) else (
            f"; runner-up {r['runner_up']} (rho {r['runner_up_rho']:.2f}), difference "
            f"{'significant' if r['significant'] else 'not significant'} (Holm over all pairs)")
        p = r.get("spearman_p_maxt")
        rows.append({"backbone": r["backbone"], "finding": "best_metric", "method": r["method"],
                     "value": r["spearman_rho"], "ci_low": r["spearman_ci_low"], "ci_high": r["spearman_ci_high"],
                     "p": p, "mde": r.get("spearman_mde_maxt", np.nan), "verdict": verdict(p), "n": r["n"],
                     "n_targets": r["n_targets"], "positive_targets": r["targets_positive"],
                     "detail": f"{r['best_metric']}: within-target Spearman rho, p from joint source permutations, "
                               f"max-statistic adjusted over all {int(r['n_metrics'])} metrics and the predictors"
                               f"{runner}"})
        for name, _ in predictors:
            if f"vs_{name}_p" not in r:
                continue
            low, high = r[f"vs_{name}_ci_low"], r[f"vs_{name}_ci_high"]
            beats = bool(r[f"beats_{name}"])
            rows.append({"backbone": r["backbone"], "finding": f"best_metric_vs_{name}", "method": r["method"],
                         "value": r["spearman_rho"] - r[f"{name}_rho"], "ci_low": low, "ci_high": high,
                         "p": r[f"vs_{name}_p"], "mde": np.nan, "verdict": verdict(r[f"vs_{name}_p"]), "n": r["n"],
                         "n_targets": r["n_targets"], "positive_targets": np.nan,
                         "detail": f"{r['best_metric']}'s rho minus {name}'s ({r[f'{name}_rho']:.2f}): "
                                   f"{'beats it' if beats else 'does not beat it'} (simultaneous CI, Holm p)"})
        for name, _ in predictors:
            if f"metrics_beating_{name}" not in r:
                continue
            beating = [m for m in str(r[f"metrics_beating_{name}"]).split(", ") if m and m != "nan"]
            rows.append({"backbone": r["backbone"], "finding": f"metrics_beating_{name}", "method": r["method"],
                         "value": float(len(beating)), "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                         "mde": np.nan, "verdict": "", "n": np.nan, "n_targets": r["n_targets"],
                         "positive_targets": np.nan,
                         "detail": f"of {int(r['n_metrics'])} metrics, significantly above {name} (Holm over every "
                                   f"metric-vs-predictor comparison): {', '.join(beating) or 'none'}"})
        if k is None or retrieval is None:
            continue
        b, m = r["backbone"], r["method"]
        for name, detail in [(r["best_metric"], "the best metric")] + [(n, n) for n, _ in predictors]:
            est = share_of_oracle(retrieval, b, m, name, k)
            oracle = "held-out oracle (chosen on other seeds)" if est["heldout"] else "oracle (one seed: biased up)"
            rows.append(_share_row(b, m, f"share_of_oracle_top{k}" + ("" if name == r["best_metric"] else f"_{name}"),
                                   est, f"{detail} ({name}): best of its top {k} sources as a share of the {oracle}'s "
                                        f"gain, ratio of means over targets, jackknife-t CI"))
        for name, kind in predictors:
            if kind != "learned":
                continue
            for other in [r["best_metric"]] + [n for n, kd in predictors if n == "source_only"]:
                est = share_of_oracle(retrieval, b, m, name, k, against=other)
                rows.append(_share_row(b, m, f"{name}_minus_{'best_metric' if other == r['best_metric'] else other}"
                                             f"_top{k}", est,
                                       f"{name}'s share of the oracle at top {k} minus {other}'s, paired by target "
                                       f"(jackknife-t); the best metric was picked on these data, which favours it"))
    return rows


def findings_table(transfer: pd.DataFrame, summary: pd.DataFrame, families: dict, outcome: str = "gain",
                   retrieval: pd.DataFrame = None, predictors=()) -> pd.DataFrame:
    rows = family_contrast(transfer, families, outcome)
    rows += from_summary(summary, retrieval, predictors)
    for spec in METHODS.ordered():  # a method that claims to beat another: its paired difference
        if spec.compared_with is not None:
            rows += paired_method_difference(transfer, spec.name, spec.compared_with)
    rows += speedups(transfer)
    return pd.DataFrame(rows, columns=FINDINGS_COLUMNS)


def findings_text(findings: pd.DataFrame) -> str:
    """The findings as a fixed-width table, one line per row."""
    if findings.empty:
        return "No findings: the study has no rows to compare."
    lines = [f"{'finding':<34} {'backbone':<10} {'method':<10} {'value':>8} {'95% CI':>19} {'p':>7} {'MDE':>6} "
             f"{'targets +/n':>11}  {'verdict':<24}  detail"]
    for _, r in findings.iterrows():
        ci = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        p = "" if pd.isna(r["p"]) else f"{r['p']:.3f}"
        mde = "" if "mde" not in r or pd.isna(r["mde"]) else f"{r['mde']:.2f}"
        pos = "" if pd.isna(r["positive_targets"]) else f"{int(r['positive_targets'])}/{int(r['n_targets'])}"
        if pos == "" and not pd.isna(r["n_targets"]):
            pos = f"n={int(r['n_targets'])}"
        value = "n/a" if pd.isna(r["value"]) else f"{r['value']:.2f}"
        lines.append(f"{r['finding']:<34} {r['backbone']:<10} {r['method']:<10} {value:>8} {ci:>19} {p:>7} "
                     f"{mde:>6} {pos:>11}  {r.get('verdict', '') or '':<24}  {r['detail']}")
    return "\n".join(lines)
