"""Which metric predicts the outcome best, as a table row per backbone and method and as plain English.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from promptgrid.analysis.correlation import CORRELATION_COLUMNS, POOLED
from promptgrid.analysis.gains import _require

SUMMARY_BASE = ["backbone", "method", "best_metric", "n", "spearman_rho", "spearman_ci_low", "spearman_ci_high",
                "spearman_p", "runner_up", "runner_up_rho", "margin", "diff_ci_low", "diff_ci_high", "diff_p",
                "significant"]


def summary_table(correlation: pd.DataFrame, retrieval: Optional[pd.DataFrame] = None,
                  comparison: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per backbone x method: which metric best predicts the outcome (pooled Spearman).

    Columns: backbone, method, best_metric, n, spearman_rho, spearman_ci_low, spearman_ci_high,
    spearman_p, runner_up, runner_up_rho, margin (= rho_best - rho_runner_up), then from
    ``comparison`` (a :func:`metric_comparison_table` frame, Spearman) for best vs runner-up:
    diff_ci_low, diff_ci_high, diff_p, significant (NaN / None without it); then from
    ``retrieval`` for the best metric, means over targets: oracle, best_of_top{k}, regret_at_{k},
    ndcg_at_{k} for every k present. Metrics with a NaN pooled rho are never "best".
    """
    _require(correlation, CORRELATION_COLUMNS, "correlation")
    pooled = correlation[(correlation["target"] == POOLED) & correlation["spearman_rho"].notna()]
    ks = sorted(retrieval["k"].unique()) if retrieval is not None and len(retrieval) else []
    rows = []
    for (backbone, method), grp in pooled.groupby(["backbone", "method"], sort=False):
        grp = grp.sort_values("spearman_rho", ascending=False, kind="stable")
        best = grp.iloc[0]
        row = {"backbone": backbone, "method": method, "best_metric": best["metric"], "n": int(best["n"]),
               "spearman_rho": best["spearman_rho"], "spearman_ci_low": best["spearman_ci_low"],
               "spearman_ci_high": best["spearman_ci_high"], "spearman_p": best["spearman_p"],
               "runner_up": None, "runner_up_rho": np.nan, "margin": np.nan,
               "diff_ci_low": np.nan, "diff_ci_high": np.nan, "diff_p": np.nan, "significant": None}
        if len(grp) > 1:
            second = grp.iloc[1]
            row.update(runner_up=second["metric"], runner_up_rho=second["spearman_rho"],
                       margin=best["spearman_rho"] - second["spearman_rho"])
            if comparison is not None:
                row.update(_lookup_comparison(comparison, backbone, method, best["metric"], second["metric"]))
        if ks:
            r = retrieval[(retrieval["backbone"] == backbone) & (retrieval["method"] == method)
                          & (retrieval["metric"] == best["metric"])]
            row["oracle"] = r["oracle"].groupby(r["target"]).first().mean() if len(r) else np.nan
            for k in ks:
                rk = r[r["k"] == k]
                row[f"best_of_top{k}"] = rk["best_of_topk"].mean() if len(rk) else np.nan
                row[f"regret_at_{k}"] = rk["regret"].mean() if len(rk) else np.nan
                row[f"ndcg_at_{k}"] = rk["ndcg"].mean() if len(rk) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else SUMMARY_BASE)


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
    """A plain-English paragraph from a :func:`summary_table` frame, one or two sentences per row.

    The retrieval sentence uses the smallest k that the summary has columns for."""
    ks = sorted(int(c[len("best_of_top"):]) for c in summary.columns if c.startswith("best_of_top"))
    sentences = []
    for _, r in summary.iterrows():
        outcome = "zero-shot relative performance" if r["method"] == "zeroshot" else f"{r['method']} gains"
        s = (f"On {r['backbone']}, {r['best_metric']} predicts {outcome} best (Spearman ρ = {_fmt(r['spearman_rho'])} "
             f"[95% CI {_fmt(r['spearman_ci_low'])}, {_fmt(r['spearman_ci_high'])}], n = {int(r['n'])})")
        if _missing(r.get("runner_up")):
            s += "; it is the only metric with a defined correlation."
        else:
            s += f", ahead of {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}) by {_fmt(r['margin'])}"
            sig = r.get("significant")
            if _missing(sig):
                s += "; no paired comparison was run."
            else:
                s += (f"; the difference is {'' if sig else 'not '}significant (paired bootstrap p = "
                      f"{_fmt(r['diff_p'], 3)}, 95% CI {_fmt(r['diff_ci_low'])} to {_fmt(r['diff_ci_high'])}).")
        if ks and not _missing(r.get(f"best_of_top{ks[0]}")):
            k = ks[0]
            picked = "its top-ranked source" if k == 1 else f"the best of its top {k} sources"
            s += (f" Taking {picked} gives a mean gain of {_fmt(r[f'best_of_top{k}'], 1)} points against the "
                  f"oracle's {_fmt(r['oracle'], 1)} (regret {_fmt(r[f'regret_at_{k}'], 1)}, nDCG@{k} "
                  f"{_fmt(r[f'ndcg_at_{k}'])}).")
        sentences.append(s)
    return " ".join(sentences)
