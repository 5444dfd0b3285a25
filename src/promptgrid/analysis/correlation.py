"""Does a similarity predict the measured transfer outcome? Correlations per target and pooled, paired
comparisons of metrics, and best-of-top-k retrieval.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.analysis.gains import _no_duplicates, _require
from promptgrid.analysis.stats import compare_many_correlations, correlate, retrieval_at_k

CORRELATION_COLUMNS = ["backbone", "metric", "method", "target", "n",
                       "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high",
                       "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high",
                       "kendall_tau", "kendall_p", "kendall_ci_low", "kendall_ci_high"]


RETRIEVAL_COLUMNS = ["backbone", "metric", "method", "target", "k", "best_of_topk", "oracle", "random", "baseline",
                     "ndcg", "regret"]


COMPARISON_COLUMNS = ["backbone", "method", "metric_a", "metric_b", "n", "r_a", "r_b", "diff", "ci_low", "ci_high",
                      "p", "significant"]


POOLED = "pooled"


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
    ``similarity``), :func:`promptgrid.analysis.stats.compare_correlations` (via
    :func:`promptgrid.analysis.stats.compare_many_correlations`) on the (source, target) pairs
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
    by the metric (see :func:`promptgrid.analysis.stats.retrieval_at_k`).

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
