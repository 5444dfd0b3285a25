"""learned: a ranking of sources fitted on every similarity metric and the comparators, leave one target out.

For each target h, a ridge regression is fitted on the pairs of the *other* targets and scores h's pairs:
* features of a pair (s, t): each metric's within-target rank scaled to [0, 1] (a missing value sits at the
  middle, 0.5); the source's mean outcome on the targets other than t and h (its rank, the same way); and
  whether s and t share a family (0 / 1). Ranks make metrics of different scales comparable, and taking them
  within the target removes everything a target shares across its sources;
* response: the outcome's within-target rank scaled to [0, 1];
* every feature and the response are centred within their target, so the fit has no intercept and learns
  only how sources are ordered inside a target;
* the ridge penalty is chosen from :data:`PENALTIES` by an inner leave-one-target-out over the training
  targets (squared error of the centred ranks), whose features also hide the inner held-out target.
h's own gains enter neither its features nor its fit, so its scores are out-of-sample for h.
"""
from __future__ import annotations

from promptgrid.analysis.predictors import PredictorData
from promptgrid.analysis.predictors.features import outcome_grid, source_means
from promptgrid.lazy import lazy_module
from promptgrid.registry import PREDICTORS, PredictorSpec

np = lazy_module("numpy")
pd = lazy_module("pandas")

PENALTIES = (0.1, 1.0, 10.0, 100.0)


def _scaled_ranks(V: np.ndarray) -> np.ndarray:
    """Within-column ranks of V (S, T) scaled to [0, 1]; NaN -> 0.5; a column of < 2 values -> 0.5."""
    from scipy.stats import rankdata  # here, not at import: registering the predictors stays light

    out = np.full(V.shape, 0.5)
    for j in range(V.shape[1]):
        ok = np.isfinite(V[:, j])
        if ok.sum() >= 2:
            out[ok, j] = (rankdata(V[ok, j]) - 1) / (ok.sum() - 1)
    return out


def _features(grid: pd.DataFrame, metric_grids: list, fam: np.ndarray, hidden) -> np.ndarray:
    """(S, T, F) features of every pair with the gains of the targets in ``hidden`` unseen; centred within
    targets."""
    src = source_means(grid, leave_out=hidden).to_numpy(np.float64)
    layers = [_scaled_ranks(m) for m in metric_grids] + [_scaled_ranks(src), fam]
    F = np.stack(layers, axis=-1)
    return F - F.mean(axis=0, keepdims=True)


def _ridge(F: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Coefficients (F,) of y (n,) on F (n, F) with an L2 penalty, no intercept (everything is centred)."""
    return np.linalg.solve(F.T @ F + penalty * np.eye(F.shape[1]), F.T @ y)


def _fit(features, held_out: int, Y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Coefficients fitted on every target but ``held_out``, the penalty chosen by an inner leave-one-target-out
    whose features hide both the outer and the inner held-out target's gains. ``features(hidden columns)``
    gives (S, T, F); Y (S, T) centred ranks; ok (S, T) where Y is finite."""
    T = Y.shape[1]
    train = np.arange(T) != held_out
    inner = [j for j in range(T) if train[j]]
    best = PENALTIES[0]
    if len(inner) >= 3:
        folds = {j: features([held_out, j]) for j in inner}
        errors = []
        for penalty in PENALTIES:
            err = 0.0
            for j, F in folds.items():
                fit = ok & (train & (np.arange(T) != j))[None, :]
                beta = _ridge(F[fit], Y[fit], penalty)
                err += float(((F[:, j][ok[:, j]] @ beta - Y[:, j][ok[:, j]]) ** 2).sum())
            errors.append(err)
        best = PENALTIES[int(np.argmin(errors))]
    F = features([held_out])
    fit = ok & train[None, :]
    return _ridge(F[fit], Y[fit], best)


def predict(data: PredictorData) -> pd.DataFrame:
    frames = []
    metrics = list(pd.unique(data.similarity["metric"])) if len(data.similarity) else []
    for (backbone, _method), g in data.outcomes.groupby(["backbone", "method"], sort=False):
        grid = outcome_grid(g)
        sources, targets = grid.index, grid.columns
        sim = data.similarity[data.similarity["backbone"] == backbone]
        metric_grids = [sim[sim["metric"] == m].pivot(index="source", columns="target", values="value")
                        .reindex(index=sources, columns=targets).to_numpy(np.float64) for m in metrics]
        fam = np.array([[float(data.families.get(s) is not None and data.families.get(s) == data.families.get(t))
                         for t in targets] for s in sources])
        Y = grid.to_numpy(np.float64)
        ok = np.isfinite(Y)
        Yr = np.where(ok, _scaled_ranks(Y), 0.0)
        counts = ok.sum(axis=0, keepdims=True)  # a target with no finite outcome is centred at 0 (it has no pairs)
        Yr = np.where(ok, Yr - np.where(ok, Yr, 0.0).sum(axis=0, keepdims=True) / np.maximum(counts, 1), 0.0)
        scores = np.full(Y.shape, np.nan)

        def features(hidden, grid=grid, metric_grids=metric_grids, fam=fam, targets=targets):
            return _features(grid, metric_grids, fam, [targets[j] for j in hidden])

        for h in range(len(targets)):
            if len(targets) < 3:  # fitted on one target: nothing to learn a ranking from
                continue
            beta = _fit(features, h, Yr, ok)
            scores[:, h] = features([h])[:, h] @ beta
        value = pd.DataFrame(scores, index=sources, columns=targets).stack(future_stack=True).rename("value")
        pairs = g[["backbone", "method", "source", "target"]]
        frames.append(pairs.join(value, on=["source", "target"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["backbone", "method", "source", "target", "value"])


PREDICTORS.add(PredictorSpec(
    name="learned", order=90, kind="learned", predict=predict,
    summary="ridge on within-target ranks of every metric, the source's record elsewhere and the family, "
            "fitted leave one target out"))
