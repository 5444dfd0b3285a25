"""Source retrieval: does ranking sources by a metric (or an analysis predictor) find a good source for a target?

The plain oracle, the best seed-mean gain of any source, is the maximum of noisy values, so it is biased upward,
and so is a best-of-top-k judged on the same gains. With two or more seeds each target also gets *held-out*
figures: the source is chosen on the mean gain of the other seeds and scored on the held-out seed's gain,
averaged over which seed is held out. Choosing and scoring then share no noise, so the held-out oracle is what
a researcher who tries every source can expect, not the luckiest draw.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.analysis.correlation import RETRIEVAL_COLUMNS, pairs
from promptgrid.analysis.gains import require_columns
from promptgrid.analysis.stats import expected_best_of_random, retrieval_at_k


def heldout_at_k(scores: np.ndarray, per_seed: np.ndarray, ks: Sequence[int]) -> list:
    """Held-out retrieval for one target: scores (n,) of the predictor, per_seed (n, R) gains of each source on
    each of R >= 2 seeds. For each held-out seed h: among the candidates (all sources for the oracle, the
    predictor's top k for best_of_topk, a random k-subset for random), take the one with the best mean gain
    on the other seeds and read its gain on seed h; average over h. Returns one dict per k with
    best_of_topk_heldout, oracle_heldout, random_heldout."""
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    ranked = np.argsort(-keyed, kind="stable")
    R = per_seed.shape[1]
    out = []
    for k in ks:
        kk = min(int(k), scores.size)
        best, oracle, rand = [], [], []
        for h in range(R):
            rest = np.nanmean(np.delete(per_seed, h, axis=1), axis=1)
            rest = np.where(np.isfinite(rest), rest, -np.inf)
            top = ranked[:kk]
            best.append(per_seed[top[np.argmax(rest[top])], h])
            oracle.append(per_seed[np.argmax(rest), h])
            rand.append(expected_best_of_random(per_seed[:, h], rest, kk))
        out.append({"best_of_topk_heldout": float(np.mean(best)), "oracle_heldout": float(np.mean(oracle)),
                    "random_heldout": float(np.mean(rand))})
    return out


def _retrieval_gains(transfer: pd.DataFrame, outcome: str) -> tuple:
    """transfer with its ``gain`` column replaced, per method, by the ``outcome`` gain column where that method has
    it (a method that scores prompts unchanged has no learning curve, so no early or area gain: it keeps the
    final gain), and method -> the column used."""
    out, used = transfer.copy(), {}
    for method in pd.unique(transfer["method"]):
        rows = transfer["method"] == method
        col = outcome if outcome in transfer.columns and transfer.loc[rows, outcome].notna().any() else "gain"
        out.loc[rows, "gain"] = transfer.loc[rows, col]
        used[method] = col
    return out, used


def retrieval_table(similarity: pd.DataFrame, transfer: pd.DataFrame, ks: Sequence[int] = (1, 3, 5),
                    predictors: Optional[pd.DataFrame] = None, outcome: str = "gain") -> pd.DataFrame:
    """retrieval.parquet: per backbone x metric (or predictor) x method x target x k, ranking the target's
    sources by it (:func:`promptgrid.analysis.stats.retrieval_at_k`), plus the held-out figures.

    Gains are seed-mean gains in score points, of the study's ``outcome`` (gain, early_gain or auc_gain: the
    column named in ``outcome``; a method without that column, as one that scores prompts unchanged, is ranked
    on its final gain); ``baseline`` is 0.0, the gain of training the target's own prompt. Candidates are the sources with a finite gain (``n_sources``); sources whose gain is NaN are
    counted in ``n_missing``, and a target with no finite gain keeps its rows, with NaN values, so it is
    reported rather than silently dropped. A NaN metric value ranks last; ties keep the order in which sources
    first appear in ``similarity``. The held-out columns need every candidate's gain on each of ``n_seeds``
    >= 2 seeds (NaN otherwise).
    """
    require_columns(transfer, ["backbone", "source", "target", "method", "seed", "gain"], "transfer")
    transfer, used = _retrieval_gains(transfer, outcome)
    data = pairs(similarity, transfer, predictors=predictors)
    per_seed = transfer.pivot_table(index=["backbone", "method", "target", "source"], columns="seed", values="gain",
                                    aggfunc="mean")
    rows = []
    for (backbone, metric, method, target), g in data.groupby(["backbone", "metric", "method", "target"],
                                                              sort=False):
        finite = np.isfinite(g["gain"].to_numpy(np.float64))
        key = {"backbone": backbone, "metric": metric, "kind": g["kind"].iloc[0], "method": method,
               "outcome": used[method], "target": target, "n_sources": int(finite.sum()), "n_missing": int((~finite).sum()),
               "baseline": 0.0}
        if not finite.any():
            rows += [{**key, "k": int(k), "n_seeds": 0} for k in ks]
            continue
        cand = g[finite]
        seeds = per_seed.loc[[(backbone, method, target, s) for s in cand["source"]]].to_numpy(np.float64)
        seeds = seeds[:, np.isfinite(seeds).all(axis=0)]
        heldout = heldout_at_k(cand["value"].to_numpy(), seeds, ks) if seeds.shape[1] >= 2 else [{}] * len(ks)
        for res, held in zip(retrieval_at_k(cand["value"].to_numpy(), cand["gain"].to_numpy(), ks), heldout):
            rows.append({**key, "n_seeds": int(seeds.shape[1]), **res, **held})
    df = pd.DataFrame(rows, columns=RETRIEVAL_COLUMNS)
    df[["k", "n_sources", "n_missing", "n_seeds"]] = df[["k", "n_sources", "n_missing", "n_seeds"]].astype(np.int64)
    return df
