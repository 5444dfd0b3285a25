"""Which metric predicts the outcome best, as a table row per backbone and method and as plain English.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from promptgrid.analysis.correlation import METRIC, POOLED
from promptgrid.analysis.gains import require_columns
from promptgrid.analysis.pooled import cluster_mean_ci, permutations_needed, target_jackknife
from promptgrid.registry import METHODS

SUMMARY_BASE = ["backbone", "method", "best_metric", "n", "n_targets", "n_sources", "n_metrics", "permutations",
                "spearman_rho", "spearman_ci_low", "spearman_ci_high", "spearman_p", "spearman_p_se", "spearman_p_maxt",
                "spearman_mde", "spearman_mde_maxt", "exact", "permutations_needed", "targets_positive", "runner_up", "runner_up_rho", "margin",
                "diff_ci_low", "diff_ci_high", "diff_p", "significant"]
ALPHA = 0.05


def summary_table(correlation: pd.DataFrame, retrieval: Optional[pd.DataFrame] = None,
                  comparison: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per backbone x method: which metric best predicts the outcome, whether that holds up, and
    whether it beats the analysis predictors.

    The best metric has the highest pooled within-target Spearman rho among the similarity metrics (``kind``
    metric; NaN never best). Columns: backbone, method, best_metric, n (pairs), n_targets, n_sources, n_metrics,
    permutations, spearman_rho / _ci_low / _ci_high (two-way jackknife-t), spearman_p (joint source
    permutations) with its Monte-Carlo SE, spearman_p_maxt (adjusted over every metric and predictor by the
    max statistic, so picking the best costs nothing extra), spearman_mde / _mde_maxt (the rho detectable with
    80 % power), targets_positive (targets whose own rho is > 0), runner_up, runner_up_rho, margin, and from
    ``comparison`` best vs runner-up: diff_ci_low, diff_ci_high (simultaneous), diff_p (Holm), significant.
    Per analysis predictor c: c_rho, and best metric minus c: vs_c_ci_low, vs_c_ci_high, vs_c_p (Holm),
    beats_c (significantly above it), and metrics_beating_c (every metric significantly above c, comma-separated). From ``retrieval``, for the best metric: oracle, oracle_heldout,
    n_oracle_positive, n_targets_missing, and per k best_of_top{k}, regret_at_{k}, ndcg_at_{k} (means over
    targets, each with _ci_low/_ci_high: t over targets), share_of_oracle_{k} (:func:`share_of_oracle`) with
    its CI, and share_of_oracle_{k}_{c} for each predictor c.
    """
    require_columns(correlation, ["backbone", "metric", "method", "target", "n", "spearman_rho", "spearman_ci_low",
                                  "spearman_ci_high", "spearman_p"], "correlation")
    # tables written before #24 have no kind: every row is a similarity metric
    correlation = correlation.assign(kind=correlation["kind"].astype(object).fillna(METRIC) if "kind" in correlation
                                     else METRIC)
    pooled = correlation[(correlation["target"] == POOLED) & correlation["spearman_rho"].notna()]
    per_target = correlation[correlation["target"] != POOLED]
    ks = sorted(retrieval["k"].unique()) if retrieval is not None and len(retrieval) else []
    rows = []
    for (backbone, method), everything in pooled.groupby(["backbone", "method"], sort=False):
        grp = everything[everything["kind"] == METRIC].sort_values("spearman_rho", ascending=False, kind="stable")
        if grp.empty:
            continue
        best = grp.iloc[0]
        own = per_target[(per_target["backbone"] == backbone) & (per_target["method"] == method)
                         & (per_target["metric"] == best["metric"])]
        row = {"backbone": backbone, "method": method, "best_metric": best["metric"], "n": int(best["n"]),
               "n_targets": _n_targets(best, own), "n_sources": best.get("n_sources", np.nan),
               "n_metrics": len(grp), "permutations": best.get("permutations", np.nan),
               "exact": best.get("exact", None), "permutations_needed": permutations_needed(len(everything)),
               **{c: best.get(c, np.nan) for c in SUMMARY_BASE[8:16]},
               "targets_positive": int((own["spearman_rho"] > 0).sum()),
               "runner_up": None, "runner_up_rho": np.nan, "margin": np.nan,
               "diff_ci_low": np.nan, "diff_ci_high": np.nan, "diff_p": np.nan, "significant": None}
        if _missing(row["spearman_p_maxt"]) and "spearman_p_holm" in best:  # a table written before #24
            row["spearman_p_maxt"] = best["spearman_p_holm"]
        if len(grp) > 1:
            second = grp.iloc[1]
            row.update(runner_up=second["metric"], runner_up_rho=second["spearman_rho"],
                       margin=best["spearman_rho"] - second["spearman_rho"])
            if comparison is not None:
                row.update(_lookup_comparison(comparison, backbone, method, best["metric"], second["metric"]))
        predictors = everything[everything["kind"] != METRIC]
        for _, c in predictors.iterrows():
            row[f"{c['metric']}_rho"] = c["spearman_rho"]
            if comparison is not None:
                row[f"metrics_beating_{c['metric']}"] = ", ".join(_beating(comparison, backbone, method, c["metric"]))
            if comparison is not None:
                found = _lookup_comparison(comparison, backbone, method, best["metric"], c["metric"])
                row.update({f"vs_{c['metric']}_ci_low": found.get("diff_ci_low", np.nan),
                            f"vs_{c['metric']}_ci_high": found.get("diff_ci_high", np.nan),
                            f"vs_{c['metric']}_p": found.get("diff_p", np.nan),
                            f"beats_{c['metric']}": bool(found.get("significant")) and
                            best["spearman_rho"] > c["spearman_rho"]})
        if ks:
            row.update(_retrieval_columns(retrieval, backbone, method, best["metric"], ks))
            for name in predictors["metric"]:
                for k in ks:
                    row[f"share_of_oracle_{k}_{name}"] = share_of_oracle(retrieval, backbone, method, name, k)["estimate"]
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else SUMMARY_BASE)


def _n_targets(best: pd.Series, own: pd.DataFrame) -> int:
    """The pooled row's target count; tables written before it was a column: the per-target rows."""
    return int(best["n_targets"]) if "n_targets" in best and not _missing(best["n_targets"]) \
        else int(own["target"].nunique())


def per_target_retrieval(retrieval: pd.DataFrame, backbone, method, metric, k) -> pd.DataFrame:
    """One predictor's retrieval rows at k, one per target with a finite gain, indexed by target."""
    r = retrieval[(retrieval["backbone"] == backbone) & (retrieval["method"] == method)
                  & (retrieval["metric"] == metric) & (retrieval["k"] == k)]
    return r[r["n_sources"] > 0].set_index("target")


def share_of_oracle(retrieval: pd.DataFrame, backbone, method, metric, k, against: Optional[str] = None) -> dict:
    """The share of the oracle's gain that the best of a predictor's top k keeps: mean over targets of
    best_of_topk over mean of oracle, both held out (chosen on other seeds, scored on the held-out one) when the
    study has >= 2 seeds, else the plain seed means (an oracle biased upward). With ``against``, the share of
    ``metric`` minus the share of ``against``, paired by target. Estimate with a jackknife-t 95 % CI over targets
    whose df is the effective number of targets weighted by their oracle gains
    (:func:`promptgrid.analysis.pooled.target_jackknife`); NaN where the mean oracle gain is <= 0."""
    r = per_target_retrieval(retrieval, backbone, method, metric, k)
    held = "oracle_heldout" in r.columns and r["oracle_heldout"].notna().all() and len(r)
    best_col, oracle_col = ("best_of_topk_heldout", "oracle_heldout") if held else ("best_of_topk", "oracle")
    cols = [r[best_col], r[oracle_col]]
    if against is not None:
        other = per_target_retrieval(retrieval, backbone, method, against, k)
        cols.append(other[best_col].reindex(r.index))
    rows = pd.concat(cols, axis=1).dropna().to_numpy(np.float64)

    def share(x):
        if len(x) == 0 or x[:, 1].mean() <= 0:
            return np.nan
        return (x[:, 0].mean() - (x[:, 2].mean() if x.shape[1] > 2 else 0.0)) / x[:, 1].mean()

    return {**target_jackknife(share, rows, weights=rows[:, 1]), "heldout": bool(held)}


def _retrieval_columns(retrieval: pd.DataFrame, backbone, method, metric, ks) -> dict:
    r = retrieval[(retrieval["backbone"] == backbone) & (retrieval["method"] == method)
                  & (retrieval["metric"] == metric)]
    oracle = r.groupby("target", sort=False)["oracle"].first()
    out = {"retrieval_outcome": r["outcome"].iloc[0] if "outcome" in r.columns and len(r) else "gain",
           "oracle": oracle.mean(), "n_oracle_positive": int((oracle > 0).sum()),
           "n_targets_missing": int(r.groupby("target", sort=False)["n_sources"].first().eq(0).sum())}
    if "oracle_heldout" in r.columns:
        out["oracle_heldout"] = r.groupby("target", sort=False)["oracle_heldout"].first().mean()
    for k in ks:
        rk = per_target_retrieval(retrieval, backbone, method, metric, k)
        # t-intervals over targets, cut to the range the quantity can take (regret >= 0, nDCG in [0, 1])
        for name, col, low, high in ((f"best_of_top{k}", "best_of_topk", -np.inf, np.inf),
                                     (f"regret_at_{k}", "regret", 0.0, np.inf), (f"ndcg_at_{k}", "ndcg", 0.0, 1.0)):
            est = cluster_mean_ci(rk[col].to_numpy(), rk.index.to_numpy())
            out.update({name: est["mean"], f"{name}_ci_low": max(est["ci_low"], low),
                        f"{name}_ci_high": min(est["ci_high"], high)})
        share = share_of_oracle(retrieval, backbone, method, metric, k)
        out.update({f"share_of_oracle_{k}": share["estimate"], f"share_of_oracle_{k}_ci_low": share["ci_low"],
                    f"share_of_oracle_{k}_ci_high": share["ci_high"]})
    return out


def _beating(comparison: pd.DataFrame, backbone, method, predictor: str) -> list:
    """The metrics whose rho is significantly above ``predictor``'s (Holm within the metric-vs-predictor family)."""
    c = comparison[(comparison["backbone"] == backbone) & (comparison["method"] == method)
                   & (comparison["metric_b"] == predictor)]
    return c.loc[c["significant"].astype(bool) & (c["diff"] > 0), "metric_a"].tolist()


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
    p = h["p_holm"] if "p_holm" in h else h["p"]
    return {"diff_ci_low": min(low, high), "diff_ci_high": max(low, high), "diff_p": p,
            "significant": bool(h["significant"])}


def _missing(x) -> bool:
    return x is None or (np.ndim(x) == 0 and bool(pd.isna(x)))


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if _missing(x) or not np.isfinite(float(x)) else f"{float(x):.{digits}f}"


def summary_text(summary: pd.DataFrame) -> str:
    """A plain-English paragraph from a :func:`summary_table` frame, a few sentences per row. It says plainly
    when the best metric does not hold up after the multiplicity correction (and then, since a test this size
    can miss real effects, that it cannot tell, with the smallest rho it could detect), whether any metric
    beats the runner-up, and whether the best metric beats the analysis predictors. The retrieval sentence
    uses k = 3 when the summary has it, else the smallest k."""
    ks = sorted(int(c[len("best_of_top"):]) for c in summary.columns
                if c.startswith("best_of_top") and c[len("best_of_top"):].isdigit())
    sentences = []
    for _, r in summary.iterrows():
        outcome = f"{r['method']} {'relative performance' if METHODS.require(r['method']).relative else 'gains'}"
        n_t = int(r["n_targets"])
        s = (f"On {r['backbone']}, {r['best_metric']} ranks first among {int(r['n_metrics'])} metrics for {outcome} "
             f"(within-target Spearman ρ = {_fmt(r['spearman_rho'])} [95% CI, targets and sources as samples: "
             f"{_fmt(r['spearman_ci_low'])}, {_fmt(r['spearman_ci_high'])}], {int(r['n'])} pairs on {n_t} targets; "
             f"ρ > 0 on {int(r['targets_positive'])} of {n_t} targets)")
        p_adj = r.get("spearman_p_maxt")
        held = not _missing(p_adj) and p_adj < ALPHA
        mc = "" if _missing(r.get("spearman_p_se")) or bool(r.get("exact")) else \
            f" ± {_fmt(r['spearman_p_se'], 3)} Monte-Carlo"
        s += (f"; adjusted for picking it among all metrics and predictors (max-statistic test) it is "
              f"{'significant' if held else 'not significant'} (p = {_fmt(p_adj, 3)}{mc})")
        mde = r.get("spearman_mde_maxt")
        if not held and not _missing(mde):
            s += (", which at this size means we cannot tell: " + (
                f"only a ρ of about {_fmt(mde)} or more would be found with 80 % power" if mde < 1 else
                f"not even a perfect ρ of 1 would be found with 80 % power from {int(r['n_sources'])} sources"))
        s += "."
        if not _missing(r.get("permutations")) and not bool(r.get("exact")) and \
                r["permutations"] < r.get("permutations_needed", 0):
            s += (f" WARNING: its p-values come from {int(r['permutations'])} permutations (analysis.permutations), "
                  f"fewer than the {int(r['permutations_needed'])} the number of metrics and predictors needs, so "
                  f"an adjusted p may sit on the permutation grid.")
        if _missing(r.get("runner_up")):
            s += " It is the only metric with a defined correlation."
        else:
            sig = r.get("significant")
            if _missing(sig):
                s += f" The runner-up is {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}); no paired comparison was run."
            elif sig:
                s += (f" It beats the runner-up {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}; difference "
                      f"simultaneous 95% CI {_fmt(r['diff_ci_low'])} to {_fmt(r['diff_ci_high'])}, Holm-adjusted).")
            else:
                s += (f" It does not beat the runner-up {r['runner_up']} (ρ = {_fmt(r['runner_up_rho'])}; difference "
                      f"simultaneous 95% CI {_fmt(r['diff_ci_low'])} to {_fmt(r['diff_ci_high'])}).")
        s += _predictor_sentence(r)
        k = 3 if 3 in ks else (ks[0] if ks else None)
        if k is not None and not _missing(r.get(f"best_of_top{k}")):
            picked = "its top-ranked source" if k == 1 else f"the best of its top {k} sources"
            gain = r.get("retrieval_outcome") if not _missing(r.get("retrieval_outcome")) else "gain"
            s += (f" Taking {picked} gives a mean {gain} of {_fmt(r[f'best_of_top{k}'], 1)} points "
                  f"[{_fmt(r.get(f'best_of_top{k}_ci_low'), 1)}, {_fmt(r.get(f'best_of_top{k}_ci_high'), 1)}] "
                  f"(regret {_fmt(r[f'regret_at_{k}'], 1)}, nDCG@{k} {_fmt(r[f'ndcg_at_{k}'])})")
            share = r.get(f"share_of_oracle_{k}")
            heldout = not _missing(r.get("oracle_heldout"))
            oracle = (f"the held-out oracle's {_fmt(r['oracle_heldout'], 1)} (chosen on other seeds, scored on "
                      f"a held-out one)" if heldout else f"the oracle's {_fmt(r['oracle'], 1)} (the best seed-mean "
                      f"gain, biased upward: one seed)")
            s += (f": {_fmt(100 * share, 0)} % [{_fmt(100 * r.get(f'share_of_oracle_{k}_ci_low'), 0)}, "
                  f"{_fmt(100 * r.get(f'share_of_oracle_{k}_ci_high'), 0)}] of {oracle}" if not _missing(share)
                  else f"; no share of the oracle: {oracle} is not above 0")
            others = [(c[len(f"share_of_oracle_{k}_"):], r[c]) for c in summary.columns
                      if c.startswith(f"share_of_oracle_{k}_") and not c.endswith(("_ci_low", "_ci_high"))
                      and not _missing(r[c])]
            if others:
                s += " (" + ", ".join(f"{name} {_fmt(100 * v, 0)} %" for name, v in others) + ")"
            s += "."
            if r.get("n_targets_missing"):
                s += f" {int(r['n_targets_missing'])} target(s) have no finite gain and are left out of these means."
        sentences.append(s)
    return " ".join(sentences)


def _predictor_sentence(r: pd.Series) -> str:
    """How the best metric stands against each analysis predictor, from the summary row's vs_<c> columns."""
    names = [c[len("beats_"):] for c in r.index if c.startswith("beats_")]
    if not names:
        return ""
    parts = []
    for c in names:
        verdict = "beats" if bool(r[f"beats_{c}"]) else "does not beat"
        parts.append(f"{verdict} {c} (ρ = {_fmt(r.get(f'{c}_rho'))}; difference {_fmt(r.get(f'vs_{c}_ci_low'))} to "
                     f"{_fmt(r.get(f'vs_{c}_ci_high'))})")
    return f" Against the analysis predictors it {'; '.join(parts)}."
