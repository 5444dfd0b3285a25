"""Does a similarity predict the measured transfer outcome? Correlations per target and pooled, paired
comparisons of metrics, and best-of-top-k retrieval.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.analysis.gains import no_duplicates, require_columns
from promptgrid.analysis.pooled import compare_within, correlate_within
from promptgrid.analysis.stats import correlate, retrieval_at_k
from promptgrid.registry import METHODS

CORRELATION_COLUMNS = ["backbone", "metric", "method", "target", "n", "n_targets",
                       "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high",
                       "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high",
                       "kendall_tau", "kendall_p", "kendall_ci_low", "kendall_ci_high"]


RETRIEVAL_COLUMNS = ["backbone", "metric", "method", "target", "k", "n_sources", "n_missing", "best_of_topk", "oracle",
                     "random", "baseline", "ndcg", "regret"]


COMPARISON_COLUMNS = ["backbone", "method", "metric_a", "metric_b", "n", "n_targets", "r_a", "r_b", "diff", "ci_low",
                      "ci_high", "p", "significant"]


POOLED = "pooled"


def _outcomes(transfer: pd.DataFrame, outcome: str = "gain") -> pd.DataFrame:
    """Seed-mean outcome per (backbone, source, target, method): columns gain (final test gain, what
    retrieval ranks by) and outcome (the column each method's spec is judged on: ``outcome``, or
    relative performance for a method judged on it)."""
    require_columns(transfer, ["backbone", "source", "target", "method", "gain", "relative_performance", outcome],
             "transfer")
    key = ["backbone", "source", "target", "method"]
    cols = list(dict.fromkeys(["gain", "relative_performance", outcome]))
    means = transfer.groupby(key, sort=False)[cols].mean().reset_index()
    means["outcome"] = np.nan
    for method in means["method"].unique():
        rows = means["method"] == method
        means.loc[rows, "outcome"] = means.loc[rows, METHODS.require(method).outcome_column(outcome)]
    return means[key + ["gain", "outcome"]]


def _pairs(similarity: pd.DataFrame, transfer: pd.DataFrame, outcome: str = "gain") -> pd.DataFrame:
    """similarity x seed-mean outcomes, self-pairs dropped: backbone, metric, method, source, target,
    value, gain, outcome. Rows ordered by backbone, metric, method, target, source, each in the order
    of first appearance in the inputs (methods in ``transfer``, the rest in ``similarity``)."""
    require_columns(similarity, ["backbone", "source", "target", "metric", "value"], "similarity")
    no_duplicates(similarity, ["backbone", "source", "target", "metric"], "similarity")
    sim = similarity[similarity["source"] != similarity["target"]][["backbone", "source", "target", "metric", "value"]]
    out = _outcomes(transfer, outcome)
    out = out[out["source"] != out["target"]]
    pairs = sim.merge(out, on=["backbone", "source", "target"], how="inner")
    # a stable, input-defined row order, so that grouped outputs list targets as the inputs do
    order = {col: {v: i for i, v in enumerate(pd.unique(frame[col]))}
             for col, frame in (("backbone", similarity), ("metric", similarity), ("method", transfer),
                                ("target", similarity), ("source", similarity))}
    keys = pd.DataFrame({col: pairs[col].map(codes) for col, codes in order.items()})
    return pairs.iloc[np.lexsort([keys[c].to_numpy() for c in reversed(list(order))])].reset_index(drop=True)


def correlation_table(similarity: pd.DataFrame, transfer: pd.DataFrame, n_permutations: int = 1000,
                      n_bootstrap: int = 1000, seed: int = 0, outcome: str = "gain") -> pd.DataFrame:
    """correlation.parquet: each metric against the seed-mean outcome, per backbone x metric x
    method x target (over that target's sources: SPoT's primary result) and target "pooled".

    similarity: similarity.parquet frame (backbone, source, target, metric, value, ...).
    transfer: transfer.parquet frame (per seed). The outcome is ``outcome`` (a gain column:
    gain, early_gain or auc_gain), or relative_performance for a method judged on it (its spec's outcome). Pairs with a NaN value or
    outcome are dropped (``n`` counts what is left). A
    per-target row correlates over that target's sources (permutation p, bootstrap CI over sources).
    The pooled row has the target as its unit (:mod:`promptgrid.analysis.pooled`): a within-target
    correlation, a permutation test within targets and a bootstrap CI over targets; ``n_targets`` says
    how many. Every row uses the same ``seed``, so a row does not depend on which other rows are computed.
    """
    pairs = _pairs(similarity, transfer, outcome)
    rows = []
    for (backbone, metric, method), grp in pairs.groupby(["backbone", "metric", "method"], sort=False):
        for target, g in grp.groupby("target", sort=False):
            res = correlate(g["value"], g["outcome"], n_permutations=n_permutations, n_bootstrap=n_bootstrap,
                            seed=seed)
            rows.append({"backbone": backbone, "metric": metric, "method": method, "target": target, "n_targets": 1,
                         **res})
        res = correlate_within(grp["value"], grp["outcome"], grp["target"], n_permutations=n_permutations,
                               n_bootstrap=n_bootstrap, seed=seed)
        rows.append({"backbone": backbone, "metric": metric, "method": method, "target": POOLED, **res})
    df = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    df[["n", "n_targets"]] = df[["n", "n_targets"]].astype(np.int64)
    return df


def metric_comparison_table(similarity: pd.DataFrame, transfer: pd.DataFrame, n_bootstrap: int = 1000,
                            seed: int = 0, kind: str = "spearman",
                            metrics: Optional[Sequence[str]] = None, outcome: str = "gain") -> pd.DataFrame:
    """Every pair of metrics compared on the pooled pairs of each backbone x method, targets as the unit.

    For metric_a before metric_b (in ``metrics`` order, default: order of first appearance in
    ``similarity``), :func:`promptgrid.analysis.pooled.compare_within`: the difference of the two
    within-target correlations with the outcome, its 95 % CI and p from one bootstrap over targets, on
    the (source, target) pairs that have every metric and an outcome. Columns: backbone, method,
    metric_a, metric_b, n, n_targets, r_a, r_b, diff (= r_a - r_b), ci_low, ci_high, p, significant
    (CI excludes 0).
    """
    pairs = _pairs(similarity, transfer, outcome)
    order = list(metrics) if metrics is not None else list(pd.unique(similarity["metric"]))
    rows = []
    for (backbone, method), grp in pairs.groupby(["backbone", "method"], sort=False):
        wide = grp.pivot(index=["source", "target"], columns="metric", values="value")
        outcome = grp.drop_duplicates(["source", "target"]).set_index(["source", "target"])["outcome"]
        wide = wide.join(outcome)
        present = [m for m in order if m in wide.columns]
        targets = wide.index.get_level_values("target").to_numpy()
        results = compare_within({m: wide[m].to_numpy() for m in present}, wide["outcome"].to_numpy(), targets,
                                 n_bootstrap=n_bootstrap, seed=seed, kind=kind)
        for res in results:
            rows.append({"backbone": backbone, "method": method, "metric_a": res["metric_a"],
                         "metric_b": res["metric_b"], "n": res["n"], "n_targets": res["n_targets"], "r_a": res["r1"],
                         "r_b": res["r2"],
                         "diff": res["diff"], "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p": res["p"],
                         "significant": res["significant"]})
    df = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    df["significant"] = df["significant"].astype(bool)
    return df


def retrieval_table(similarity: pd.DataFrame, transfer: pd.DataFrame, ks: Sequence[int] = (1, 3, 5)) -> pd.DataFrame:
    """retrieval.parquet: per backbone x metric x method x target x k, ranking the target's sources
    by the metric (see :func:`promptgrid.analysis.stats.retrieval_at_k`).

    Gains are seed-mean gains in score points; ``baseline`` is 0.0, the gain of training the
    target's own prompt. Candidates are the sources with a finite gain (``n_sources``); sources whose
    gain is NaN are counted in ``n_missing``, and a target with no finite gain keeps its rows, with NaN
    values, so it is reported rather than silently dropped. A NaN metric value ranks last; ties keep
    the order in which sources first appear in ``similarity``.
    """
    pairs = _pairs(similarity, transfer)
    rows = []
    for (backbone, metric, method, target), g in pairs.groupby(["backbone", "metric", "method", "target"],
                                                                sort=False):
        finite = np.isfinite(g["gain"].to_numpy(np.float64))
        key = {"backbone": backbone, "metric": metric, "method": method, "target": target,
               "n_sources": int(finite.sum()), "n_missing": int((~finite).sum()), "baseline": 0.0}
        if not finite.any():
            rows += [{**key, "k": int(k)} for k in ks]
            continue
        for res in retrieval_at_k(g["value"].to_numpy()[finite], g["gain"].to_numpy()[finite], ks):
            rows.append({**key, **res})
    df = pd.DataFrame(rows, columns=RETRIEVAL_COLUMNS)
    df[["k", "n_sources", "n_missing"]] = df[["k", "n_sources", "n_missing"]].astype(np.int64)
    return df
