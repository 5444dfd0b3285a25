"""Does a similarity predict the measured transfer outcome? Correlations per target and pooled, and paired
comparisons of metrics, each metric shown beside the analysis predictors (:mod:`promptgrid.analysis.predictors`:
what the source alone, the family alone and chance predict, and a ranking learned from the metrics).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.analysis.gains import no_duplicates, require_columns
from promptgrid.analysis.pooled import compare_within, correlate_family
from promptgrid.analysis.predictors import PredictorData, predict_all
from promptgrid.analysis.stats import correlate
from promptgrid.registry import METHODS, PREDICTORS

STAT_COLUMNS = [f"{k}_{c}" for k in ("pearson", "spearman", "kendall") for c in ("p", "p_se", "p_maxt", "ci_low",
                                                                                "ci_high", "mde", "mde_maxt")]
CORRELATION_COLUMNS = ["backbone", "metric", "kind", "method", "target", "n", "n_targets", "n_sources", "permutations",
                       "exact", "pearson_r", "spearman_rho", "kendall_tau"] + STAT_COLUMNS


RETRIEVAL_COLUMNS = ["backbone", "metric", "kind", "method", "outcome", "target", "k", "n_sources", "n_missing", "n_seeds",
                     "best_of_topk", "oracle", "random", "baseline", "ndcg", "regret", "best_of_topk_heldout",
                     "oracle_heldout", "random_heldout"]


COMPARISON_COLUMNS = ["backbone", "method", "metric_a", "kind_a", "metric_b", "kind_b", "n", "n_targets", "r_a", "r_b",
                      "diff", "se", "ci_low", "ci_high", "p", "p_holm", "significant"]


POOLED = "pooled"
METRIC = "metric"  # the kind of a similarity metric's rows (analysis predictors carry their spec's kind)


def outcomes(transfer: pd.DataFrame, outcome: str = "gain") -> pd.DataFrame:
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


def predictor_rows(similarity: pd.DataFrame, transfer: pd.DataFrame, families: dict, outcome: str = "gain",
                   seed: int = 0, names: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The analysis predictors' values per (backbone, method, source, target) pair, self-pairs left out:
    backbone, method, source, target, metric (the predictor), value, kind. ``names``: which registered
    predictors (default all, in their order)."""
    out = outcomes(transfer, outcome)
    sim = similarity[similarity["source"] != similarity["target"]]
    # per-source rows only: a mixture row (spot_topk's "top3") has no source to score
    out = out[(out["source"] != out["target"]) & out["source"].isin(set(sim["source"]))].reset_index(drop=True)
    specs = [s for s in PREDICTORS.ordered() if names is None or s.name in names]
    return predict_all(PredictorData(out, sim, families, seed), specs)


def pairs(similarity: pd.DataFrame, transfer: pd.DataFrame, outcome: str = "gain",
          predictors: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """similarity (and predictor rows) x seed-mean outcomes, self-pairs dropped: backbone, metric, kind, method,
    source, target, value, gain, outcome. Rows ordered by backbone, metric (the metrics, then the predictors),
    method, target, source, each in the order of first appearance in the inputs."""
    require_columns(similarity, ["backbone", "source", "target", "metric", "value"], "similarity")
    no_duplicates(similarity, ["backbone", "source", "target", "metric"], "similarity")
    sim = similarity[similarity["source"] != similarity["target"]][["backbone", "source", "target", "metric", "value"]]
    out = outcomes(transfer, outcome)
    out = out[out["source"] != out["target"]]
    joined = sim.merge(out, on=["backbone", "source", "target"], how="inner").assign(kind=METRIC)
    if predictors is not None and len(predictors):
        extra = predictors.merge(out, on=["backbone", "method", "source", "target"], how="inner")
        joined = pd.concat([joined, extra], ignore_index=True)
    names = list(pd.unique(similarity["metric"])) + ([] if predictors is None else list(pd.unique(predictors["metric"])))
    order = {"backbone": pd.unique(similarity["backbone"]), "metric": names, "method": pd.unique(transfer["method"]),
             "target": pd.unique(similarity["target"]), "source": pd.unique(similarity["source"])}
    keys = [joined[c].map({v: i for i, v in enumerate(order[c])}).fillna(len(order[c])).to_numpy() for c in order]
    return joined.iloc[np.lexsort(keys[::-1])].reset_index(drop=True)


def _wide(grp: pd.DataFrame) -> tuple:
    """One backbone and method's pairs side by side: values (source, target) x predictor, the outcome on the same
    index, and predictor -> kind."""
    wide = grp.pivot(index=["source", "target"], columns="metric", values="value")
    y = grp.drop_duplicates(["source", "target"]).set_index(["source", "target"])["outcome"].reindex(wide.index)
    return wide, y, grp.drop_duplicates("metric").set_index("metric")["kind"]


def correlation_table(similarity: pd.DataFrame, transfer: pd.DataFrame, n_permutations: Optional[int] = None,
                      n_bootstrap: int = 1000, seed: int = 0, outcome: str = "gain",
                      predictors: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """correlation.parquet: each metric and analysis predictor against the seed-mean outcome, per backbone x
    metric x method x target (over that target's sources: SPoT's primary result) and target "pooled".

    similarity: similarity.parquet frame (backbone, source, target, metric, value, ...).
    transfer: transfer.parquet frame (per seed). The outcome is ``outcome`` (gain, early_gain or auc_gain), or
    relative_performance for a method judged on it. predictors: :func:`predictor_rows` (optional). Pairs with a
    NaN value or outcome are dropped (``n`` counts what is left).
    A per-target row correlates over that target's sources (permutation p, bootstrap CI over sources). The
    pooled row (:mod:`promptgrid.analysis.pooled`) is a within-target correlation with sources and targets as
    samples: p from permuting sources jointly across targets (``permutations`` of them, ``exact`` when all),
    its Monte-Carlo SE, the maxT p adjusted over every metric and predictor of that backbone and method, a
    two-way jackknife-t 95 % CI, and the minimum detectable effect. ``n_permutations`` None: sized to the
    number of predictors (:func:`promptgrid.analysis.pooled.permutations_needed`). Every row uses the same
    ``seed``, so a row does not depend on which other rows are computed.
    """
    data = pairs(similarity, transfer, outcome, predictors)
    rows = []
    for (backbone, method), grp in data.groupby(["backbone", "method"], sort=False):
        names = list(pd.unique(grp["metric"]))
        wide, y, kinds = _wide(grp)
        src, tgt = wide.index.get_level_values("source"), wide.index.get_level_values("target")
        pooled = correlate_family({m: wide[m].to_numpy() for m in names}, y.to_numpy(), tgt.to_numpy(),
                                  units=src.to_numpy(), n_permutations=n_permutations, seed=seed)
        for metric in names:
            g = grp[grp["metric"] == metric]
            key = {"backbone": backbone, "metric": metric, "kind": kinds[metric], "method": method}
            for target, gt in g.groupby("target", sort=False):
                # one target's test is not adjusted over the metrics, so it needs no more than the usual 1000
                res = correlate(gt["value"], gt["outcome"], n_permutations=n_permutations or 1000,
                                n_bootstrap=n_bootstrap, seed=seed)
                rows.append({**key, "target": target, "n_targets": 1, "n_sources": res["n"], **res})
            rows.append({**key, "target": POOLED, **pooled[metric]})
    df = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    for col in ("n", "n_targets", "n_sources"):
        df[col] = df[col].astype(np.int64)
    df["permutations"] = df["permutations"].astype("Int64")
    df["exact"] = df["exact"].astype("boolean")
    return df


def metric_comparison_table(similarity: pd.DataFrame, transfer: pd.DataFrame, n_bootstrap: Optional[int] = None,
                            seed: int = 0, kind: str = "spearman", metrics: Optional[Sequence[str]] = None,
                            outcome: str = "gain", predictors: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Every pair of metrics, and every metric against every analysis predictor, on the pooled pairs of each
    backbone x method (:func:`promptgrid.analysis.pooled.compare_within`): the difference of their within-target
    correlations with the outcome on the pairs that have all of them, a two-way jackknife SE, p, p_holm
    (Holm within each of two families per backbone and method: metric against metric, and
    metric against predictor) and a simultaneous 95 % CI; significant =
    p_holm < 0.05. metric_a is listed before metric_b (metrics in ``metrics`` order, default their order in
    ``similarity``, then the predictors). ``n_bootstrap`` is not used (kept for older callers)."""
    del n_bootstrap
    data = pairs(similarity, transfer, outcome, predictors)
    order = list(metrics) if metrics is not None else list(pd.unique(similarity["metric"]))
    rows = []
    for (backbone, method), grp in data.groupby(["backbone", "method"], sort=False):
        wide, y, kinds = _wide(grp)
        present = [m for m in order if m in wide.columns]
        others = [m for m in wide.columns if kinds[m] != METRIC]
        # two families, each Holm-adjusted on its own: metric against metric, and metric against predictor
        families = ([(a, b) for i, a in enumerate(present) for b in present[i + 1:]],
                    [(a, c) for a in present for c in others])
        values = {m: wide[m].to_numpy() for m in present + others}
        targets, sources = (wide.index.get_level_values(c).to_numpy() for c in ("target", "source"))
        results = [res for todo in families if todo
                   for res in compare_within(values, y.to_numpy(), targets, kind=kind, units=sources, pairs=todo)]
        for res in results:
            rows.append({"backbone": backbone, "method": method, "metric_a": res["metric_a"],
                         "kind_a": kinds[res["metric_a"]], "metric_b": res["metric_b"],
                         "kind_b": kinds[res["metric_b"]], "n": res["n"], "n_targets": res["n_targets"],
                         "r_a": res["r1"], "r_b": res["r2"], "diff": res["diff"], "se": res["se"],
                         "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p": res["p"], "p_holm": res["p_holm"],
                         "significant": res["significant"]})
    df = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    df["significant"] = df["significant"].astype(bool)
    return df
