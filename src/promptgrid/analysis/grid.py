"""Within-target association on a sources x targets grid, computed for many permutations at once.

A study's pairs form a grid: predictor values X (S sources, T targets) and outcomes Y (S, T), NaN where a
pair is missing (a self-pair, a failed run). Every pooled statistic of :mod:`promptgrid.analysis.pooled` is a
*within-target* association, so that nothing a target shares across its sources (its baseline, its scale of
gains, an offset of the metric) can enter it:

* pearson: Pearson r of the deviations of x and y from their target's mean, pooled over all pairs;
* spearman: the same on within-target average ranks (ties share their mean rank);
* kendall: the mean of the per-target tau-b, weighted by each target's number of source pairs.

The functions here take X of shape (..., S, T) (leading axes: permutations, metrics) and return (...,), so a
permutation test costs one vectorised call. Only pairs where both x and y are finite count; ranks and means
are taken over those, per leading index.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

KINDS = ("pearson", "spearman", "kendall")


def to_grid(x, groups, units=None) -> tuple:
    """Long vectors to a grid: x (n,), groups (n,) target labels, units (n,) source labels -> (X (S, T), row
    labels, column labels). Without ``units`` the k-th item of each target (in input order) is source k, the
    layout of ``matrix.ravel()`` for a (sources, targets) matrix. A (source, target) pair given twice is refused."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if units is None:
        units = np.empty(g.size, dtype=np.int64)
        seen: dict = {}
        for i, label in enumerate(g.tolist()):
            units[i] = seen.get(label, 0)
            seen[label] = units[i] + 1
    u = np.asarray(units).reshape(-1)
    if not (x.size == g.size == u.size):
        raise ValueError(f"values, groups and units must have one length; got {x.size}, {g.size}, {u.size}")
    rows, r = np.unique(u, return_inverse=True)
    cols, c = np.unique(g, return_inverse=True)
    X = np.full((rows.size, cols.size), np.nan)
    if np.any(np.bincount(r * cols.size + c, minlength=X.size) > 1):
        raise ValueError("a (source, target) pair occurs more than once")
    X[r, c] = x
    return X, rows, cols


def _masked_ranks(V: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks along the source axis (-2) among the masked entries; 0 elsewhere."""
    if mask.all():
        return rankdata(V, axis=-2)
    ranks = rankdata(np.where(mask, V, np.nan), axis=-2, nan_policy="omit")
    return np.where(mask, ranks, 0.0)


def _centred(V: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """V minus its per-target mean over masked entries; 0 where not masked. (..., S, T)."""
    n = mask.sum(axis=-2, keepdims=True)
    total = np.where(mask, V, 0.0).sum(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
    return np.where(mask, V - mean, 0.0)


def target_parts(X: np.ndarray, Y: np.ndarray, kind: str) -> tuple:
    """Per-target pieces of the pooled statistic: X (..., S, T), Y broadcastable to it.

    pearson / spearman: (sxy, sxx, syy), each (..., T), the within-target cross-products, whose sums over T give
    the pooled r = sum sxy / sqrt(sum sxx * sum syy). kendall: (tau_b (..., T) with NaN where undefined,
    weights (..., T) = the number of source pairs)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.broadcast_to(np.asarray(Y, dtype=np.float64), X.shape)
    mask = np.isfinite(X) & np.isfinite(Y)
    if kind == "kendall":
        return _kendall_parts(X, Y, mask)
    if kind == "spearman":
        X, Y = _masked_ranks(X, mask), _masked_ranks(Y, mask)
    elif kind != "pearson":
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    Xc, Yc = _centred(X, mask), _centred(Y, mask)
    return (Xc * Yc).sum(axis=-2), (Xc * Xc).sum(axis=-2), (Yc * Yc).sum(axis=-2)


def _kendall_parts(X: np.ndarray, Y: np.ndarray, mask: np.ndarray) -> tuple:
    """Per-target tau-b (ties excluded, as scipy's default) and source-pair counts, vectorised over the leading
    axes: sign matrices (..., S, S) per target, zero wherever either pair member is missing."""
    T = X.shape[-1]
    taus = np.full(X.shape[:-2] + (T,), np.nan)
    weights = np.zeros(X.shape[:-2] + (T,))
    for t in range(T):
        m = mask[..., t]
        both = m[..., :, None] & m[..., None, :]
        x, y = X[..., t], Y[..., t]
        with np.errstate(invalid="ignore"):
            sx = np.where(both, np.sign(x[..., :, None] - x[..., None, :]), 0.0)
            sy = np.where(both, np.sign(y[..., :, None] - y[..., None, :]), 0.0)
        num = (sx * sy).sum(axis=(-2, -1))
        untied_x, untied_y = np.abs(sx).sum(axis=(-2, -1)), np.abs(sy).sum(axis=(-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = num / np.sqrt(untied_x * untied_y)
        n = m.sum(axis=-1)
        taus[..., t] = np.where((untied_x > 0) & (untied_y > 0), np.clip(tau, -1, 1), np.nan)
        weights[..., t] = n * (n - 1) / 2
    return taus, weights


def combine(parts: tuple, kind: str, keep=None) -> np.ndarray:
    """The pooled statistic from :func:`target_parts`, over the targets where ``keep`` (T,) bool is true
    (default all): (...,). NaN where undefined."""
    if kind == "kendall":
        taus, weights = parts
        w = np.where(np.isfinite(taus), weights, 0.0)
        if keep is not None:
            w = w * keep
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(w.sum(-1) > 0, (w * np.nan_to_num(taus)).sum(-1) / w.sum(-1), np.nan)
    sxy, sxx, syy = parts
    if keep is not None:
        sxy, sxx, syy = sxy * keep, sxx * keep, syy * keep
    den = np.sqrt(sxx.sum(-1) * syy.sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy.sum(-1) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)


def statistic(X: np.ndarray, Y: np.ndarray, kind: str) -> np.ndarray:
    """The pooled within-target statistic of X (..., S, T) with Y (S, T): (...,)."""
    return combine(target_parts(X, Y, kind), kind)


def leave_one_out(X: np.ndarray, Y: np.ndarray, kind: str) -> tuple:
    """Jackknife replicates of the statistic of X (M, S, T) with Y (S, T): (leave one target out (M, T), leave one
    source out (M, S)). Leaving a target out keeps the others' within-target values, so it reuses their parts;
    leaving a source out changes its targets' means and ranks, so it is recomputed."""
    parts = target_parts(X, Y, kind)
    T, S = X.shape[-1], X.shape[-2]
    by_target = np.stack([combine(parts, kind, keep=np.arange(T) != t) for t in range(T)], axis=-1)
    by_source = np.stack([statistic(np.delete(X, s, axis=-2), np.delete(Y, s, axis=-2), kind) for s in range(S)],
                         axis=-1)
    return by_target, by_source


def pair_influence(X: np.ndarray, Y: np.ndarray, kind: str) -> np.ndarray:
    """Each pair's first-order share of the pooled Pearson / Spearman statistic of X (M, S, T) with Y (S, T):
    u = x~ y~ / D - (r / 2) (x~^2 / Sxx + y~^2 / Syy), with x~, y~ the within-target centred values (ranks),
    D = sqrt(Sxx Syy); sum(u) = 0 and r moves by about sum(u) when pairs are reweighted. NaN where a pair is
    missing. (M, S, T). Kendall has no such simple form: NaN everywhere."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.broadcast_to(np.asarray(Y, dtype=np.float64), X.shape)
    mask = np.isfinite(X) & np.isfinite(Y)
    if kind == "kendall":
        return np.full(X.shape, np.nan)
    if kind == "spearman":
        X, Y = _masked_ranks(X, mask), _masked_ranks(Y, mask)
    Xc, Yc = _centred(X, mask), _centred(Y, mask)
    sxx = (Xc * Xc).sum(axis=(-2, -1), keepdims=True)
    syy = (Yc * Yc).sum(axis=(-2, -1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.sqrt(sxx * syy)
        r = (Xc * Yc).sum(axis=(-2, -1), keepdims=True) / d
        u = Xc * Yc / d - r / 2 * (Xc * Xc / sxx + Yc * Yc / syy)
    return np.where(mask, u, np.nan)


def interaction_variance(U: np.ndarray) -> np.ndarray:
    """N x the residual variance of U (..., S, T) after removing additive source and target effects, over the
    finite cells: the pair-level part of Var(sum U) that a leave-one-target-out and a leave-one-source-out
    jackknife both count. (...,)."""
    ok = np.isfinite(U)
    V = np.where(ok, U, 0.0)
    n_s, n_t = ok.sum(axis=-1, keepdims=True), ok.sum(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        grand = V.sum(axis=(-2, -1), keepdims=True) / ok.sum(axis=(-2, -1), keepdims=True)
        rows = V.sum(axis=-1, keepdims=True) / n_s
        cols = V.sum(axis=-2, keepdims=True) / n_t
    e = np.where(ok, V - rows - cols + grand, 0.0)
    n = ok.sum(axis=(-2, -1))
    S, T = (ok.any(axis=-1)).sum(axis=-1), (ok.any(axis=-2)).sum(axis=-1)
    dof = n - S - T + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dof > 0, n * (e * e).sum(axis=(-2, -1)) / np.maximum(dof, 1), np.nan)
