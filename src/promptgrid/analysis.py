"""Tables of the analysis: realised transfer gains, metric-gain correlations, metric comparisons,
retrieval quality, and a one-paragraph summary. Inputs and outputs are long-format DataFrames
in the shapes of the contracts (transfer / similarity / curves / correlation / retrieval).

Conventions shared by every function:
* self-pairs (source == target) are left out of correlations, comparisons and retrieval;
* a method's outcome for a (source, target) pair is its mean over seeds; correlations use the
  gain, except zeroshot, which uses relative_performance (Su et al.'s transferability);
  retrieval always uses the gain in score points;
* spot_topk rows (source "top{k}") match no similarity row and so drop out of the
  correlation, comparison and retrieval tables.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.config import TRANSFER_METHODS
from promptgrid.stats import compare_many_correlations, correlate, retrieval_at_k

TRANSFER_COLUMNS = ["backbone", "source", "target", "method", "seed", "score", "baseline_score", "gain", "rer",
                    "relative_performance", "steps_to_baseline", "baseline_steps", "speedup"]
CORRELATION_COLUMNS = ["backbone", "metric", "method", "target", "n",
                       "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high",
                       "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high",
                       "kendall_tau", "kendall_p", "kendall_ci_low", "kendall_ci_high"]
RETRIEVAL_COLUMNS = ["backbone", "metric", "method", "target", "k", "best_of_topk", "oracle", "random", "baseline",
                     "ndcg", "regret"]
COMPARISON_COLUMNS = ["backbone", "method", "metric_a", "metric_b", "n", "r_a", "r_b", "diff", "ci_low", "ci_high",
                      "p", "significant"]
SUMMARY_BASE = ["backbone", "method", "best_metric", "n", "spearman_rho", "spearman_ci_low", "spearman_ci_high",
                "spearman_p", "runner_up", "runner_up_rho", "margin", "diff_ci_low", "diff_ci_high", "diff_p",
                "significant"]
POOLED = "pooled"
_DEV_TOL = 1e-9  # dev scores equal up to float noise count as "reached"


def _require(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (has {list(df.columns)})")


def _no_duplicates(df: pd.DataFrame, key: Sequence[str], name: str) -> None:
    dup = df.duplicated(list(key), keep=False)
    if dup.any():
        first = df.loc[dup, list(key)].iloc[0].to_dict()
        raise ValueError(f"{name} has {int(dup.sum())} rows sharing a key {list(key)}, e.g. {first}")


# ====================================================================== gains

def _curve_steps(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: the baseline's best dev score, the step it first reached it, and the run's first
    step with dev_score >= that best. Curves are in the curves.parquet format."""
    _require(curves, ["backbone", "task", "source", "method", "seed", "step", "dev_score"], "curves")
    curves = curves.dropna(subset=["dev_score"])
    base = curves[curves["method"] == "baseline"]
    best = base.groupby(["backbone", "task", "seed"], sort=False)["dev_score"].max().rename("best_dev").reset_index()
    at_best = base.merge(best, on=["backbone", "task", "seed"])
    at_best = at_best[at_best["dev_score"] >= at_best["best_dev"] - _DEV_TOL]
    base_steps = at_best.groupby(["backbone", "task", "seed"], sort=False)["step"].min().rename("baseline_steps")
    best = best.merge(base_steps.reset_index(), on=["backbone", "task", "seed"]).rename(columns={"task": "target"})

    run_curves = curves[curves["method"] != "baseline"].rename(columns={"task": "target"})
    run_curves = run_curves.merge(best[["backbone", "target", "seed", "best_dev"]], on=["backbone", "target", "seed"])
    reached = run_curves[run_curves["dev_score"] >= run_curves["best_dev"] - _DEV_TOL]
    key = ["backbone", "source", "target", "method", "seed"]
    first = reached.groupby(key, sort=False)["step"].min().rename("steps_to_baseline").reset_index()
    out = runs[key].merge(best[["backbone", "target", "seed", "baseline_steps"]], on=["backbone", "target", "seed"],
                          how="left").merge(first, on=key, how="left")
    return out


def compute_gains(runs: pd.DataFrame, baselines: pd.DataFrame, curves: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The transfer table (transfer.parquet columns, in that order), one row per run.

    runs: one row per transfer run, columns backbone, source, target, method, seed, score
      (0-100 test score; for spot_topk the source is "top{k}"); other columns are ignored.
    baselines: the target's own prompt, columns backbone, target (or task), seed, score.
    curves: optional curves.parquet frame (backbone, task, source, method, seed, step,
      dev_score, ...); baseline rows have method "baseline". Without it the step columns are NaN.

    gain = score - baseline_score; rer = gain / (100 - baseline_score) (NaN if the baseline is
    100); relative_performance = score / baseline_score (NaN if the baseline is 0);
    baseline_steps = first step at which the baseline run reached its own best dev score;
    steps_to_baseline = first step at which this run's dev score >= that best (NaN if never, if
    the curve is missing, and always for zeroshot); speedup = baseline_steps / steps_to_baseline
    (inf when the run starts at or above the baseline's best at step 0 and the baseline needed
    steps; NaN when steps_to_baseline is NaN or both are 0).
    """
    _require(runs, ["backbone", "source", "target", "method", "seed", "score"], "runs")
    if "target" not in baselines.columns and "task" in baselines.columns:
        baselines = baselines.rename(columns={"task": "target"})
    _require(baselines, ["backbone", "target", "seed", "score"], "baselines")
    unknown = sorted(set(runs["method"]) - set(TRANSFER_METHODS))
    if unknown:
        raise ValueError(f"runs: unknown transfer methods {unknown}; expected {list(TRANSFER_METHODS)}")
    key = ["backbone", "source", "target", "method", "seed"]
    _no_duplicates(runs, key, "runs")
    _no_duplicates(baselines, ["backbone", "target", "seed"], "baselines")

    base = baselines[["backbone", "target", "seed", "score"]].rename(columns={"score": "baseline_score"})
    df = runs[key + ["score"]].merge(base, on=["backbone", "target", "seed"], how="left")
    missing = df[df["baseline_score"].isna()]
    if len(missing):
        combos = missing[["backbone", "target", "seed"]].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"no baseline score for {len(missing)} runs, e.g. (backbone, target, seed) = {combos}")

    score = df["score"].to_numpy(np.float64)
    base_score = df["baseline_score"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["gain"] = score - base_score
        df["rer"] = np.where(base_score == 100.0, np.nan, (score - base_score) / (100.0 - base_score))
        df["relative_performance"] = np.where(base_score == 0.0, np.nan, score / base_score)

    if curves is not None:
        steps = _curve_steps(runs, curves)
        df = df.merge(steps, on=key, how="left")
    else:
        df["baseline_steps"] = np.nan
        df["steps_to_baseline"] = np.nan
    df.loc[df["method"] == "zeroshot", "steps_to_baseline"] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        df["speedup"] = df["baseline_steps"].to_numpy(np.float64) / df["steps_to_baseline"].to_numpy(np.float64)
    df["seed"] = df["seed"].astype(np.int64)
    for col in ("score", "baseline_score", "steps_to_baseline", "baseline_steps"):
        df[col] = df[col].astype(np.float64)
    return df[TRANSFER_COLUMNS].reset_index(drop=True)


def aggregate_gains(transfer: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof = 1; NaN with one seed) over seeds per (backbone, source, target, method).

    Columns: backbone, source, target, method, n_seeds, n_reached (seeds whose run reached the
    baseline's best dev score), then <col>_mean, <col>_std for score, baseline_score, gain, rer,
    relative_performance, speedup. speedup is averaged over the seeds where it is defined
    (pandas skips NaN), so read it together with n_reached.
    """
    _require(transfer, TRANSFER_COLUMNS, "transfer")
    key = ["backbone", "source", "target", "method"]
    cols = ["score", "baseline_score", "gain", "rer", "relative_performance", "speedup"]
    g = transfer.groupby(key, sort=False)
    out = g.size().rename("n_seeds").to_frame()
    out["n_reached"] = g["steps_to_baseline"].count()
    for col in cols:
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_std"] = g[col].std(ddof=1)
    return out.reset_index()


# ====================================================================== metric vs outcome

def _outcomes(transfer: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean outcome per (backbone, source, target, method): columns gain, outcome."""
    _require(transfer, ["backbone", "source", "target", "method", "gain", "relative_performance"], "transfer")
    key = ["backbone", "source", "target", "method"]
    means = transfer.groupby(key, sort=False)[["gain", "relative_performance"]].mean().reset_index()
    means["outcome"] = np.where(means["method"] == "zeroshot", means["relative_performance"], means["gain"])
    return means[key + ["gain", "outcome"]]


def _pairs(similarity: pd.DataFrame, transfer: pd.DataFrame) -> pd.DataFrame:
    """similarity x seed-mean outcomes, self-pairs dropped: backbone, metric, method, source, target,
    value, gain, outcome. Rows ordered by backbone, metric, method, target, source, each in the order
    of first appearance in the inputs (methods in ``transfer``, the rest in ``similarity``)."""
    _require(similarity, ["backbone", "source", "target", "metric", "value"], "similarity")
    _no_duplicates(similarity, ["backbone", "source", "target", "metric"], "similarity")
    sim = similarity[similarity["source"] != similarity["target"]][["backbone", "source", "target", "metric", "value"]]
    out = _outcomes(transfer)
    out = out[out["source"] != out["target"]]
    pairs = sim.merge(out, on=["backbone", "source", "target"], how="inner")
    # a stable, input-defined row order, so that grouped outputs list targets as the inputs do
    order = {col: {v: i for i, v in enumerate(pd.unique(frame[col]))}
             for col, frame in (("backbone", similarity), ("metric", similarity), ("method", transfer),
                                ("target", similarity), ("source", similarity))}
    keys = pd.DataFrame({col: pairs[col].map(codes) for col, codes in order.items()})
    return pairs.iloc[np.lexsort([keys[c].to_numpy() for c in reversed(list(order))])].reset_index(drop=True)


def correlation_table(similarity: pd.DataFrame, transfer: pd.DataFrame, n_permutations: int = 1000,
                      n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """correlation.parquet: each metric against the seed-mean outcome, per backbone x metric x
    method x target (over that target's sources) and target "pooled" (all pairs together).

    similarity: similarity.parquet frame (backbone, source, target, metric, value, ...).
    transfer: transfer.parquet frame (per seed). The outcome is the gain, or relative_performance
    for zeroshot. Pairs with a NaN value or outcome are dropped (``n`` counts what is left). Every
    row uses the same ``seed``, so a row does not depend on which other rows are computed.
    """
    pairs = _pairs(similarity, transfer)
    rows = []
    for (backbone, metric, method), grp in pairs.groupby(["backbone", "metric", "method"], sort=False):
        groups = [(t, g) for t, g in grp.groupby("target", sort=False)] + [(POOLED, grp)]
        for target, g in groups:
            res = correlate(g["value"], g["outcome"], n_permutations=n_permutations, n_bootstrap=n_bootstrap,
                            seed=seed)
            rows.append({"backbone": backbone, "metric": metric, "method": method, "target": target, **res})
    df = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    df["n"] = df["n"].astype(np.int64)
    return df


def metric_comparison_table(similarity: pd.DataFrame, transfer: pd.DataFrame, n_bootstrap: int = 1000,
                            seed: int = 0, kind: str = "spearman",
                            metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Every pair of metrics compared on the pooled pairs of each backbone x method.

    For metric_a before metric_b (in ``metrics`` order, default: order of first appearance in
    ``similarity``), :func:`promptgrid.stats.compare_correlations` (via
    :func:`promptgrid.stats.compare_many_correlations`) on the (source, target) pairs
    that have both metrics and an outcome. Columns: backbone, method, metric_a, metric_b, n, r_a,
    r_b, diff (= r_a - r_b), ci_low, ci_high, p, significant (CI excludes 0).
    """
    pairs = _pairs(similarity, transfer)
    order = list(metrics) if metrics is not None else list(pd.unique(similarity["metric"]))
    rows = []
    for (backbone, method), grp in pairs.groupby(["backbone", "method"], sort=False):
        wide = grp.pivot(index=["source", "target"], columns="metric", values="value")
        outcome = grp.drop_duplicates(["source", "target"]).set_index(["source", "target"])["outcome"]
        wide = wide.join(outcome)
        present = [m for m in order if m in wide.columns]
        results = compare_many_correlations({m: wide[m].to_numpy() for m in present}, wide["outcome"].to_numpy(),
                                            n_bootstrap=n_bootstrap, seed=seed, kind=kind)
        for res in results:
            rows.append({"backbone": backbone, "method": method, "metric_a": res["metric_a"],
                         "metric_b": res["metric_b"], "n": res["n"], "r_a": res["r1"], "r_b": res["r2"],
                         "diff": res["diff"], "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p": res["p"],
                         "significant": res["significant"]})
    df = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    df["significant"] = df["significant"].astype(bool)
    return df


def retrieval_table(similarity: pd.DataFrame, transfer: pd.DataFrame, ks: Sequence[int] = (1, 3, 5)) -> pd.DataFrame:
    """retrieval.parquet: per backbone x metric x method x target x k, ranking the target's sources
    by the metric (see :func:`promptgrid.stats.retrieval_at_k`).

    Gains are seed-mean gains in score points; ``baseline`` is 0.0, the gain of training the
    target's own prompt. Candidates are the sources with a finite gain; a NaN metric value ranks
    last; ties keep the order in which sources first appear in ``similarity``.
    """
    pairs = _pairs(similarity, transfer)
    pairs = pairs[np.isfinite(pairs["gain"].to_numpy(np.float64))]
    rows = []
    for (backbone, metric, method, target), g in pairs.groupby(["backbone", "metric", "method", "target"],
                                                                sort=False):
        for res in retrieval_at_k(g["value"].to_numpy(), g["gain"].to_numpy(), ks):
            rows.append({"backbone": backbone, "metric": metric, "method": method, "target": target, "baseline": 0.0,
                         **res})
    df = pd.DataFrame(rows, columns=RETRIEVAL_COLUMNS)
    df["k"] = df["k"].astype(np.int64)
    return df


# ====================================================================== summary

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
