"""Grid helpers the predictors share: a method's outcomes as a (sources x targets) table, and the
leave-target-out mean of a source's outcome."""
from __future__ import annotations

from promptgrid.lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")



def outcome_grid(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One backbone and method's outcomes: sources x targets (NaN where a pair is missing)."""
    return outcomes.pivot(index="source", columns="target", values="outcome")


def source_means(grid: pd.DataFrame, leave_out=()) -> pd.DataFrame:
    """Per pair (s, t): the mean outcome of source s over the targets other than t and other than those in
    ``leave_out`` (NaN if none is left). grid: sources x targets -> the same shape."""
    W = grid.to_numpy(np.float64).copy()
    drop = np.isin(grid.columns.to_numpy(), list(leave_out))
    W[:, drop] = np.nan
    finite = np.isfinite(W)
    total = np.where(finite, W, 0.0).sum(axis=1, keepdims=True)
    count = finite.sum(axis=1, keepdims=True)
    own = np.where(finite, W, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (total - own) / (count - finite)
    means[~np.isfinite(means)] = np.nan
    return pd.DataFrame(means, index=grid.index, columns=grid.columns)


def long_pairs(values: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """values (sources x targets) read at the (source, target) rows of ``pairs`` -> (n,)."""
    col = {t: j for j, t in enumerate(values.columns)}
    row = {s: i for i, s in enumerate(values.index)}
    V = values.to_numpy(np.float64)
    return np.array([V[row[s], col[t]] if s in row and t in col else np.nan
                     for s, t in zip(pairs["source"], pairs["target"])])
