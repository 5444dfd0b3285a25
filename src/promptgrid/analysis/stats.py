"""Statistics for judging similarity metrics: correlations with permutation p-values and
bootstrap CIs, paired comparison of two metrics, and retrieval quality (best-of-top-k, nDCG, regret).

All randomness comes from a ``numpy.random.Generator`` seeded by the caller, so every table is
reproducible. Degenerate input (fewer than 3 finite pairs, or a constant variable) gives NaN,
never an exception.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
from scipy import stats as sstats

from promptgrid.pearson import constant_rows, pearson_rows, spearman_rows

KINDS = ("pearson", "spearman", "kendall")
_STAT_NAME = {"pearson": "pearson_r", "spearman": "spearman_rho", "kendall": "kendall_tau"}
_KENDALL_VECTOR_MAX_N = 400  # above this, O(n^2) sign matrices per resample cost more than scipy's O(n log n)


# ---------------------------------------------------------------- row-wise statistics
# Each takes X, Y of shape (R, n) and returns R statistics, NaN where a row is constant.

def _signs(X: np.ndarray) -> np.ndarray:
    """(R, n) -> (R, n, n) int8 sign(x_i - x_j)."""
    return (X[:, :, None] > X[:, None, :]).astype(np.int8) - (X[:, :, None] < X[:, None, :]).astype(np.int8)


def _kendall_rows(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Kendall tau-b (scipy's default): (C - D) / sqrt((n0 - n1)(n0 - n2)) with ties excluded."""
    R, n = X.shape
    out = np.empty(R)
    if n > _KENDALL_VECTOR_MAX_N:
        for r in range(R):
            if constant_rows(X[r:r + 1])[0] or constant_rows(Y[r:r + 1])[0]:
                out[r] = np.nan
            else:
                out[r] = sstats.kendalltau(X[r], Y[r]).statistic
        return out
    step = max(1, (1 << 23) // (n * n))
    for i in range(0, R, step):
        sx, sy = _signs(X[i:i + step]), _signs(Y[i:i + step])
        num = np.einsum("rij,rij->r", sx, sy, dtype=np.int64)  # 2 (C - D): both halves of the symmetric product
        untied_x = np.abs(sx).sum(axis=(1, 2), dtype=np.int64)  # 2 (n0 - n1)
        untied_y = np.abs(sy).sum(axis=(1, 2), dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = num / np.sqrt(untied_x.astype(np.float64) * untied_y)
        tau[(untied_x == 0) | (untied_y == 0)] = np.nan
        out[i:i + step] = np.clip(tau, -1.0, 1.0)
    return out


_ROW_FUNCS = {"pearson": pearson_rows, "spearman": spearman_rows, "kendall": _kendall_rows}


# ---------------------------------------------------------------- helpers

def _clean(*arrays, names) -> tuple:
    """1-D float arrays of one length, keeping only positions where all are finite."""
    out = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    lengths = {len(a) for a in out}
    if len(lengths) > 1:
        raise ValueError(f"{', '.join(names)} must have the same length; got {[len(a) for a in out]}")
    keep = np.ones(len(out[0]), dtype=bool)
    for a in out:
        keep &= np.isfinite(a)
    return tuple(a[keep] for a in out)


def _permutations(n: int, n_permutations: int, rng: np.random.Generator):
    """Permutation index matrix (P, n) and whether it enumerates all n! orders (exact test).

    Like scipy.stats.permutation_test: when n! <= n_permutations every ordering is used once
    (identity included); otherwise n_permutations uniform random orderings.
    """
    if math.factorial(n) <= n_permutations:
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp), True
    return rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1), False


def _perm_pvalue(observed: float, null: np.ndarray, exact: bool) -> float:
    """Two-sided p as scipy.stats.permutation_test: 2 * min(P(T <= obs), P(T >= obs)), capped at 1.

    A random test counts the observed ordering once more ((hits + 1) / (P + 1)), so p > 0.
    """
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    null = null[np.isfinite(null)]
    tol = 1e-12 * max(1.0, abs(observed))  # the same value reached by another route may differ in the last bits
    less = np.count_nonzero(null <= observed + tol)
    greater = np.count_nonzero(null >= observed - tol)
    if exact:
        p_less, p_greater = less / null.size, greater / null.size
    else:
        p_less, p_greater = (less + 1) / (null.size + 1), (greater + 1) / (null.size + 1)
    return float(min(1.0, 2.0 * min(p_less, p_greater)))


def _percentile_ci(values: np.ndarray) -> tuple:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _nan_result(n: int) -> dict:
    out = {"n": n}
    for kind in KINDS:
        name = _STAT_NAME[kind]
        out.update({name: float("nan"), f"{kind}_p": float("nan"),
                    f"{kind}_ci_low": float("nan"), f"{kind}_ci_high": float("nan")})
    return out


# ---------------------------------------------------------------- public API

def correlate(x, y, n_permutations: int = 1000, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Pearson r, Spearman rho and Kendall tau-b of paired samples x, y (n,).

    Pairs where x or y is not finite are dropped first; ``n`` is what is left.
    * p-values: two-sided permutation test (y fixed, x permuted; exact over all n! orders when
      n! <= n_permutations, else ``n_permutations`` random orders), scipy's convention
      p = min(1, 2 * min(P(T <= t), P(T >= t))).
    * CIs: 95% percentile bootstrap, ``n_bootstrap`` resamples of the (x, y) pairs with
      replacement; resamples where a variable is constant are left out.
    Returns {n, pearson_r, pearson_p, pearson_ci_low, pearson_ci_high, spearman_rho, spearman_p,
    spearman_ci_low, spearman_ci_high, kendall_tau, kendall_p, kendall_ci_low, kendall_ci_high}
    (the correlation.parquet columns). NaN stats for n < 3 or constant input.
    """
    x, y = _clean(x, y, names=("x", "y"))
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _nan_result(n)
    rng = np.random.default_rng(seed)
    out = {"n": n}
    perms, exact = _permutations(n, n_permutations, rng) if n_permutations > 0 else (np.empty((0, n), np.intp), False)
    boot = rng.integers(0, n, size=(n_bootstrap, n)) if n_bootstrap > 0 else np.empty((0, n), np.intp)
    for kind in KINDS:
        rows = _ROW_FUNCS[kind]
        observed = float(rows(x[None], y[None])[0])
        null = rows(x[perms], np.broadcast_to(y, perms.shape)) if len(perms) else np.empty(0)
        boots = rows(x[boot], y[boot]) if len(boot) else np.empty(0)
        low, high = _percentile_ci(boots)
        out.update({_STAT_NAME[kind]: observed, f"{kind}_p": _perm_pvalue(observed, null, exact),
                    f"{kind}_ci_low": low, f"{kind}_ci_high": high})
    return out


def expected_best_of_random(values, key, k: int) -> float:
    """E[value of the member with the largest ``key`` in a uniformly random k-subset] (exact): with the n sources
    sorted by key, the i-th is the one chosen with chance C(i - 1, k - 1) / C(n, k). values, key: (n,); ties in
    key: the lower index counts as larger, as ``np.argmax`` picks."""
    key = np.asarray(key, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)[np.lexsort((-np.arange(key.size), key))]
    n = v.size
    k = min(k, n)
    total = math.comb(n, k)
    return float(sum(v[i - 1] * (math.comb(i - 1, k - 1) / total) for i in range(k, n + 1)))


def expected_best_of_random_k(gains, k: int) -> float:
    """E[max gain of a uniformly random k-subset], exactly: :func:`expected_best_of_random` choosing by the gain
    itself."""
    return expected_best_of_random(gains, gains, k)


def retrieval_at_k(metric_scores, gains, ks: Sequence[int]) -> list[dict]:
    """How well ranking sources by a metric finds a good source for one target.

    metric_scores (n_sources,): the metric's similarity of each source to the target (higher =
    rank earlier; ties keep the input order, NaN ranks last). gains (n_sources,): the realised
    gain of each source, finite. For every k (clipped to n_sources) a dict with:
      k, best_of_topk = max gain among the top-k sources, oracle = max gain,
      random = expected best-of-k of a uniformly random k-subset (exact, not sampled),
      ndcg = DCG@k / IDCG@k with relevance rel = max(gain, 0) (a source that hurts the target is
        irrelevant, never "less bad"; the scale is score points; NaN when no source has a positive
        gain) and discount 1 / log2(rank + 1),
      regret = oracle - best_of_topk.
    """
    scores = np.asarray(metric_scores, dtype=np.float64).reshape(-1)
    gains = np.asarray(gains, dtype=np.float64).reshape(-1)
    if scores.size != gains.size:
        raise ValueError(f"metric_scores has {scores.size} sources but gains has {gains.size}")
    if gains.size == 0:
        raise ValueError("retrieval needs at least one source")
    if not np.all(np.isfinite(gains)):
        raise ValueError(f"gains must be finite; got {gains.tolist()}")
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-keyed, kind="stable")  # stable: ties keep source order
    ranked_gains = gains[order]
    relevance = np.maximum(gains, 0.0)
    ranked_rel = relevance[order]
    ideal_rel = np.sort(relevance)[::-1]
    discounts = 1.0 / np.log2(np.arange(2, gains.size + 2))
    oracle = float(gains.max())
    out = []
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = min(int(k), gains.size)
        best = float(ranked_gains[:kk].max())
        idcg = float((ideal_rel[:kk] * discounts[:kk]).sum())
        dcg = float((ranked_rel[:kk] * discounts[:kk]).sum())
        out.append({"k": int(k), "best_of_topk": best, "oracle": oracle,
                    "random": expected_best_of_random_k(gains, kk),
                    "ndcg": dcg / idcg if idcg > 0 else float("nan"), "regret": oracle - best})
    return out
