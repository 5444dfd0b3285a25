"""Pearson's r and Spearman's rho, written once: row-wise over (R, n) arrays, a single pair as the R = 1 case.

Used by the regression task scores (objectives), the correlation statistics (analysis) and the scatter
titles (figures). NaN where r is undefined (fewer than two points, or a constant side); callers that need
another value there say so (a regression task scores a constant prediction as 0).
"""
from __future__ import annotations

from promptgrid.lazy import lazy_module

np = lazy_module("numpy")



def constant_rows(X: np.ndarray) -> np.ndarray:
    """(R, n) -> (R,) bool: rows whose values are all equal."""
    return X.max(axis=1) == X.min(axis=1)


def pearson_rows(X, Y) -> np.ndarray:
    """Pearson r of each row pair: X, Y (R, n) -> (R,), NaN for a constant row or n < 2."""
    X, Y = np.atleast_2d(np.asarray(X, dtype=np.float64)), np.atleast_2d(np.asarray(Y, dtype=np.float64))
    if X.shape != Y.shape:
        raise ValueError(f"pearson: shapes {X.shape} and {Y.shape} differ")
    if X.shape[1] < 2:
        return np.full(X.shape[0], np.nan)
    Xc = X - X.mean(axis=1, keepdims=True)
    Yc = Y - Y.mean(axis=1, keepdims=True)
    den = np.sqrt((Xc * Xc).sum(axis=1) * (Yc * Yc).sum(axis=1))
    bad = constant_rows(X) | constant_rows(Y) | (den == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Xc * Yc).sum(axis=1) / den
    r = np.clip(r, -1.0, 1.0)
    r[bad] = np.nan
    return r


def spearman_rows(X, Y) -> np.ndarray:
    """Spearman rho of each row pair: the Pearson r of average ranks (ties share their mean rank, as in
    ``scipy.stats.spearmanr``). X, Y (R, n) -> (R,)."""
    from scipy.stats import rankdata

    X, Y = np.atleast_2d(np.asarray(X, dtype=np.float64)), np.atleast_2d(np.asarray(Y, dtype=np.float64))
    return pearson_rows(rankdata(X, axis=1), rankdata(Y, axis=1))


def pearson(x, y) -> float:
    """Pearson r of two (n,) arrays (NaN where undefined)."""
    return float(pearson_rows(np.asarray(x)[None], np.asarray(y)[None])[0])


def spearman(x, y) -> float:
    """Spearman rho of two (n,) arrays (NaN where undefined)."""
    return float(spearman_rows(np.asarray(x)[None], np.asarray(y)[None])[0])
