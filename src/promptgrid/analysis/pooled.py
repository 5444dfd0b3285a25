"""Pooled statistics over several targets, with the target as the unit.

(source, target) pairs are not independent: the pairs of one target share its baseline and its scale of
gains, and a target-level component that raises both a metric and the gains of all its pairs would look
like metric quality if the pairs were pooled as independent (a pooled Spearman test then rejects at
alpha = 0.05 in about a third of such null worlds). So every pooled statistic here is built within
targets and resampled by target:

* the statistic is a *within-target* correlation: x and y are replaced by their deviations from their
  target's mean (Pearson) or by their within-target ranks, centred (Spearman); Kendall is the mean of
  the per-target tau-b weighted by each target's number of pairs. Between-target differences cannot
  enter it.
* p-values come from a *stratified* permutation test: x is permuted within each target, which is
  exactly the null of no association inside any target, whatever the targets differ in.
* confidence intervals come from a *cluster* bootstrap: targets are resampled with replacement (each
  drawn target brings all its pairs), so the CI reflects how much the answer depends on which targets
  were studied. With few targets the interval is wide, as it should be.

:func:`holm` adjusts a family of p-values for multiplicity (Holm-Bonferroni; it controls the family-wise
error rate under any dependence between the tests).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau, rankdata

from promptgrid.pearson import pearson_rows

KINDS = ("pearson", "spearman", "kendall")


def _groups(x, y, groups) -> tuple:
    """Finite pairs only, grouped: (x, y, group codes (n,), number of groups)."""
    x, y = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if not (len(x) == len(y) == len(g)):
        raise ValueError(f"x, y and groups must have one length; got {len(x)}, {len(y)}, {len(g)}")
    keep = np.isfinite(x) & np.isfinite(y)
    codes = np.unique(g[keep], return_inverse=True)[1]
    return x[keep], y[keep], codes, int(codes.max()) + 1 if codes.size else 0


def _within(values: np.ndarray, codes: np.ndarray, n_groups: int, ranks: bool) -> np.ndarray:
    """Values (or their within-group ranks) minus their group's mean."""
    out = np.empty_like(values)
    for k in range(n_groups):
        members = codes == k
        v = rankdata(values[members]) if ranks else values[members]
        out[members] = v - v.mean()
    return out


def _weighted_pearson(X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Pearson r of centred values with item weights: X, Y (n,), W (B, n) -> (B,). Values are already
    centred within groups and a group's items share one weight, so weighting keeps them centred."""
    sxy, sxx, syy = W @ (X * Y), W @ (X * X), W @ (Y * Y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    return np.clip(r, -1.0, 1.0)


def _kendall_parts(x, y, codes, n_groups) -> tuple:
    """Per group: tau-b (NaN when undefined) and the number of pairs."""
    taus, weights = np.full(n_groups, np.nan), np.zeros(n_groups)
    for k in range(n_groups):
        members = codes == k
        n = int(members.sum())
        weights[k] = n * (n - 1) / 2
        if n >= 2 and np.ptp(x[members]) > 0 and np.ptp(y[members]) > 0:
            taus[k] = kendalltau(x[members], y[members]).statistic
    return taus, weights


def _kendall_pooled(taus: np.ndarray, weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted mean of group taus, groups drawn ``counts`` (B, G) times -> (B,)."""
    ok = np.isfinite(taus)
    w = counts[:, ok] * weights[ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ taus[ok]) / w.sum(1)


def within_statistic(x, y, groups, kind: str = "spearman") -> float:
    """The within-target association of x and y (see the module docstring); NaN if undefined."""
    x, y, codes, G = _groups(x, y, groups)
    if kind == "kendall":
        taus, weights = _kendall_parts(x, y, codes, G)
        return float(_kendall_pooled(taus, weights, np.ones((1, G)))[0])
    ranks = kind == "spearman"
    X, Y = _within(x, codes, G, ranks), _within(y, codes, G, ranks)
    return float(pearson_rows(X[None], Y[None])[0]) if X.size >= 3 else float("nan")


def _stratified_permutations(codes: np.ndarray, n_groups: int, n_permutations: int,
                             rng: np.random.Generator) -> np.ndarray:
    """(P, n) index arrays that permute items only within their own group."""
    P, n = n_permutations, codes.size
    perms = np.tile(np.arange(n), (P, 1))
    for k in range(n_groups):
        members = np.flatnonzero(codes == k)
        perms[:, members] = members[rng.permuted(np.tile(np.arange(members.size), (P, 1)), axis=1)]
    return perms


def _two_sided_p(observed: float, null: np.ndarray) -> float:
    """Monte-Carlo two-sided p with the observed ordering counted once: 2 * min tail, capped at 1."""
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    tol = 1e-12 * max(1.0, abs(observed))
    less = (np.count_nonzero(null <= observed + tol) + 1) / (null.size + 1)
    greater = (np.count_nonzero(null >= observed - tol) + 1) / (null.size + 1)
    return float(min(1.0, 2.0 * min(less, greater)))


def _ci(values: np.ndarray) -> tuple:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def correlate_within(x, y, groups, n_permutations: int = 1000, n_bootstrap: int = 1000, seed: int = 0,
                     kinds=KINDS) -> dict:
    """Pooled within-target Pearson, Spearman and Kendall over all targets' pairs.

    Returns the correlation.parquet columns ({n, pearson_r, pearson_p, pearson_ci_low, pearson_ci_high,
    spearman_rho, ...}) plus ``n_targets``: p from ``n_permutations`` within-target permutations, 95 %
    CIs from ``n_bootstrap`` resamples of whole targets. NaN where fewer than 3 pairs remain.
    """
    names = {"pearson": "pearson_r", "spearman": "spearman_rho", "kendall": "kendall_tau"}
    x, y, codes, G = _groups(x, y, groups)
    out = {"n": int(x.size), "n_targets": G}
    rng = np.random.default_rng(seed)
    perms = _stratified_permutations(codes, G, n_permutations, rng) if n_permutations > 0 and G else None
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_bootstrap) if n_bootstrap > 0 and G else None
    for kind in kinds:
        if x.size < 3:
            out.update({names[kind]: float("nan"), f"{kind}_p": float("nan"), f"{kind}_ci_low": float("nan"),
                        f"{kind}_ci_high": float("nan")})
            continue
        if kind == "kendall":
            taus, weights = _kendall_parts(x, y, codes, G)
            observed = float(_kendall_pooled(taus, weights, np.ones((1, G)))[0])
            null = np.array([_kendall_pooled(*_kendall_parts(x[p], y, codes, G), np.ones((1, G)))[0]
                             for p in perms]) if perms is not None else np.empty(0)
            boots = _kendall_pooled(taus, weights, counts) if counts is not None else np.empty(0)
        else:
            ranks = kind == "spearman"
            X, Y = _within(x, codes, G, ranks), _within(y, codes, G, ranks)
            observed = float(pearson_rows(X[None], Y[None])[0])
            # a within-group permutation of x permutes its centred values (ranks included) within the group
            null = pearson_rows(X[perms], np.broadcast_to(Y, perms.shape)) if perms is not None else np.empty(0)
            boots = _weighted_pearson(X, Y, counts[:, codes]) if counts is not None else np.empty(0)
        low, high = _ci(boots)
        out.update({names[kind]: observed, f"{kind}_p": _two_sided_p(observed, null), f"{kind}_ci_low": low,
                    f"{kind}_ci_high": high})
    return out


def compare_within(xs: dict, y, groups, n_bootstrap: int = 1000, seed: int = 0, kind: str = "spearman") -> list:
    """Every pair (a, b) of metrics in ``xs`` (a listed first): the difference of their within-target
    statistics with y, a 95 % CI and a two-sided p from one cluster bootstrap over targets shared by all
    metrics (so the dependence between the two statistics is kept). Items where any metric or y is not
    finite are dropped. Returns dicts metric_a, metric_b, n, n_targets, r1, r2, diff, ci_low, ci_high, p,
    significant (the CI excludes 0)."""
    names = list(xs)
    arrays = {m: np.asarray(xs[m], dtype=np.float64).reshape(-1) for m in names}
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    keep = np.isfinite(y)
    for a in arrays.values():
        keep &= np.isfinite(a)
    codes = np.unique(g[keep], return_inverse=True)[1]
    G = int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_bootstrap) if G and n_bootstrap > 0 else None
    observed, boots = {}, {}
    for m in names:
        x = arrays[m][keep]
        if kind == "kendall":
            taus, weights = _kendall_parts(x, y[keep], codes, G)
            observed[m] = float(_kendall_pooled(taus, weights, np.ones((1, G)))[0]) if G else float("nan")
            boots[m] = _kendall_pooled(taus, weights, counts) if counts is not None else None
        else:
            ranks = kind == "spearman"
            X, Y = _within(x, codes, G, ranks), _within(y[keep], codes, G, ranks)
            observed[m] = float(pearson_rows(X[None], Y[None])[0]) if X.size >= 3 else float("nan")
            boots[m] = _weighted_pearson(X, Y, counts[:, codes]) if counts is not None else None
    results = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            res = {"metric_a": a, "metric_b": b, "n": int(keep.sum()), "n_targets": G, "r1": observed[a],
                   "r2": observed[b], "diff": observed[a] - observed[b], "ci_low": float("nan"),
                   "ci_high": float("nan"), "p": float("nan"), "significant": False}
            if boots[a] is not None and np.isfinite(res["diff"]):
                d = boots[a] - boots[b]
                d = d[np.isfinite(d)]
                if d.size:
                    low, high = _ci(d)
                    p_low = (np.count_nonzero(d <= 0) + 1) / (d.size + 1)
                    p_high = (np.count_nonzero(d >= 0) + 1) / (d.size + 1)
                    res.update(ci_low=low, ci_high=high, p=float(min(1.0, 2 * min(p_low, p_high))),
                               significant=bool(low > 0 or high < 0))
            results.append(res)
    return results


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def cluster_mean_ci(values, groups, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Mean of per-group means of ``values`` with a 95 % CI from resampling whole groups: the estimate for
    "the average target" when items of one target are not independent. Returns mean, ci_low, ci_high, n
    (items), n_groups, positive (groups whose own mean is > 0)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    keep = np.isfinite(v)
    codes = np.unique(g[keep], return_inverse=True)[1]
    G = int(codes.max()) + 1 if codes.size else 0
    if G == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "n_groups": 0,
                "positive": 0}
    means = np.array([v[keep][codes == k].mean() for k in range(G)])
    counts = np.random.default_rng(seed).multinomial(G, np.full(G, 1.0 / G), size=n_bootstrap)
    low, high = _ci(counts @ means / G)
    return {"mean": float(means.mean()), "ci_low": low, "ci_high": high, "n": int(keep.sum()), "n_groups": G,
            "positive": int((means > 0).sum())}
