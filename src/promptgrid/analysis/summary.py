"""Which metric predicts the outcome best, as a table row per backbone and method and as plain English.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from promptgrid.analysis.correlation import CORRELATION_COLUMNS, POOLED
from promptgrid.analysis.gains import require_columns
from promptgrid.analysis.pooled import holm
from promptgrid.registry import METHODS

SUMMARY_BASE = ["backbone", "method", "best_metric", "n", "n_targets", "n_metrics", "spearman_rho", "spearman_ci_low",
                "spearman_ci_high", "spearman_p", "spearman_p_holm", "targets_positive", "runner_up", "runner_up_rho",
                "margin", "diff_ci_low", "diff_ci_high", "diff_p", "significant"]
ALPHA = 0.05


def summary_table(correlation: pd.DataFrame, retrieval: Optional[pd.DataFrame] = None,
                  comparison: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per backbone x method: which metric best predicts the outcome, and whether that holds up.

    The best metric has the highest pooled within-target Spearman rho (targets as the unit,
    :mod:`promptgrid.analysis.pooled`); metrics with a NaN pooled rho are never best. Columns:
    backbone, method, best_metric, n (pairs), n_targets, n_metrics (the metrics compared: the family the
    p-value is corrected for), spearman_rho / _ci_low / _ci_high / _p, spearman_p_holm (Holm-adjusted
    over the n_metrics pooled tests, since the best is picked among them), targets_positive (targets whose
    own rho for that metric is > 0: SPoT's per-target result), runner_up, runner_up_rho, margin, then from
    ``comparison`` for best vs runner-up: diff_ci_low, diff_ci_high, diff_p, significant (NaN / None
    without it); then from ``retrieval`` for the best metric: oracle (mean over targets),
    best_of_top{k}, regret_at_{k}, ndcg_at_{k} (means over targets with finite values), share_of_oracle_{k}
    (mean of best_of_top{k} / oracle over the n_oracle_positive targets whose oracle gain is > 0), and
    n_targets_missing (targets without a finite gain, reported rather than dropped).
    """
    require_columns(correlation, CORRELATION_COLUMNS, "correlation")
    pooled = correlation[(correlation["target"] == POOLED) & correlation["spearman_rho"].notna()]
    per_target = correlation[correlation["target"] != POOLED]
    ks = sorted(retrieval["k"].unique()) if retrieval is not None and len(retrieval) else []
    rows = []
    for (backbone, method), grp in pooled.groupby(["backbone", "method"], sort=False):
        grp = grp.assign(p_holm=holm(grp["spearman_p"].to_numpy()))
        grp = grp.sort_values("spearman_rho", ascending=False, kind="stable")
        best = grp.iloc[0]
        own = per_target[(per_target["backbone"] == backbone) & (per_target["method"] == method)
                         & (per_target["metric"] == best["metric"])]
        row = {"backbone": backbone, "method": method, "best_metric": best["metric"], "n": int(best["n"]),
               "n_targets": _n_targets(best, own), "n_metrics": len(grp), "spearman_rho": best["spearman_rho"],
               "spearman_ci_low": best["spearman_ci_low"], "spearman_ci_high": best["spearman_ci_high"],
               "spearman_p": best["spearman_p"], "spearman_p_holm": best["p_holm"],
               "targets_positive": int((own["spearman_rho"] > 0).sum()),
               "runner_up": None, "runner_up_rho": np.nan, "margin": np.nan,
               "diff_ci_low": np.nan, "diff_ci_high": np.nan, "diff_p": np.nan, "significant": None}
        if len(grp) > 1:
            second = grp.iloc[1]
            row.update(runner_up=second["metric"], runner_up_rho=second["spearman_rho"],
                       margin=best["spearman_rho"] - second["spearman_rho"])
            if comparison is not None:
                row.update(_lookup_comparison(comparison, backbone, method, best["metric"], second["metric"]))
        if ks:
            row.update(_retrieval_columns(retrieval, backbone, method, best["metric"], ks))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else SUMMARY_BASE)


def _n_targets(best: pd.Series, own: pd.DataFrame) -> int:
    """The pooled row's target count; tables written before it was a column: the per-target rows."""
    return int(best["n_targets"]) if not _missing(best["n_targets"]) else int(own["target"].nunique())


def _retrieval_columns(retrieval: pd.DataFrame, backbone, method, metric, ks) -> dict:
    r = retrieval[(retrieval["backbone"] == backbone) & (retrieval["method"] == method)
                  & (retrieval["metric"] == metric)]
    oracle = r.groupby("target", sort=False)["oracle"].first()
    out = {"oracle": oracle.mean(), "n_oracle_positive": int((oracle > 0).sum()),
           "n_targets_missing": int(r.groupby("target", sort=False)["n_sources"].first().eq(0).sum())}
    for k in ks:
        rk = r[r["k"] == k].set_index("target")
        out[f"best_of_top{k}"] = rk["best_of_topk"].mean()
        out[f"regret_at_{k}"] = rk["regret"].mean()
        out[f"ndcg_at_{k}"] = rk["ndcg"].mean()
        positive = rk[rk["oracle"] > 0]
        out[f"share_of_oracle_{k}"] = (positive["best_of_topk"] / positive["oracle"]).mean() if len(positive) \
            else np.nan
    return out


def _lookup_comparison(comparison: pd.DataFrame, backbone, method, best, second) -> dict:
    c = comparison[(comparison["backbone"] == backbone) & (comparison["method"] == method)]
    hit = c[(c["metric_a"] == best) & (c["metric_b"] == second)]
    sign = 1.0
    if hit.empty:
        hit = c[(c["metric_a"] == second) & (c["metric_b"] == best)]
        sign = -1.0
    if hit.empty:
        return {}
    h = hit.iloc[0]
    low, high = sign * h["ci_low"], sign * h["ci_high"]
    return {"diff_ci_low": min(low, high), "diff_ci_high": max(low, high), "diff_p": h["p"],
            "significant": bool(h["significant"])}


def _missing(x) -> bool:
    return x is None or (np.ndim(x) == 0 and bool(pd.isna(x)))


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if _missing(x) or not np.isfinite(float(x)) else f"{float(x):.{digits}f}"


def summary_text(summary: pd.DataFrame) -> str:
    """A plain-English paragraph from a :func:`summary_table` frame, a few sentences per row. It says
    plainly when the best metric does not hold up after the multiplicity correction, and when no
    metric beats the runner-up. The retrieval sentence uses the smallest k the summary has."""
    ks = sorted(int(c[len("best_of_top"):]) for c in summary.columns if c.startswith("best_of_top"))
    sentences = []
    for _, r in summary.iterrows():
        outcome = f"{r['method']} {'relative performance' if METHODS.require(r['method']).relative else 'gains'}"
        s = (f"On {r['backbone']}, {r['best_metric']} ranks first among {int(r['n_metrics'])} metrics for {outcome} "
             f"(within-target Spearman ρ = {_fmt(r['spearman_rho'])} [95% CI over targets {_fmt(r['spearman_ci_low'])}, "
             f"{_fmt(r['spearman_ci_high'])}], {int(r['n'])} pairs on {int(r['n_targets'])} targets; ρ > 0 on "
             f"{int(r['targets_positive'])} of {int(r['n_targets'])} targets)")
        held = not _missing(r["spearman_p_holm"]) and r["spearman_p_holm"] < ALPHA
        s += (f"; after Holm correction over the {int(r['n_metrics'])} metrics it is "
              f"{'significant' if held else 'not significant'} (p = {_fmt(r['spearman_p_holm'], 3)}).")
        if _missing(r.get("runner_up")):
            s += " It is the only metric with a defined correlation."
        else:
            sig = r.get("significant")
            if _missing(sig):
                s += f" The runner-up is {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}); no paired comparison was run."
            elif sig:
                s += (f" It beats the runner-up {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}; difference 95% CI "
                      f"{_fmt(r['diff_ci_low'])} to {_fmt(r['diff_ci_high'])}).")
            else:
                s += (f" No metric beats another: the runner-up {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}) is "
                      f"within the noise (difference 95% CI {_fmt(r['diff_ci_low'])} to {_fmt(r['diff_ci_high'])}).")
        if ks and not _missing(r.get(f"best_of_top{ks[0]}")):
            k = ks[0]
            picked = "its top-ranked source" if k == 1 else f"the best of its top {k} sources"
            share = r.get(f"share_of_oracle_{k}")
            s += (f" Taking {picked} gives a mean gain of {_fmt(r[f'best_of_top{k}'], 1)} points against the "
                  f"oracle's {_fmt(r['oracle'], 1)} (regret {_fmt(r[f'regret_at_{k}'], 1)}, nDCG@{k} "
                  f"{_fmt(r[f'ndcg_at_{k}'])}); "
                  + (f"{_fmt(100 * share, 0)} % of the oracle gain on the {int(r['n_oracle_positive'])} targets "
                     f"where any source gains." if not _missing(share) else "no target has a source that gains."))
            if r.get("n_targets_missing"):
                s += f" {int(r['n_targets_missing'])} target(s) have no finite gain and are left out of these means."
        sentences.append(s)
    return " ".join(sentences)
