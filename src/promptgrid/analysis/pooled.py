"""Pooled statistics over a study's sources x targets, with both as samples.

(source, target) pairs are not independent. The pairs of one target share its baseline and its scale of
gains; the pairs of one source share whatever makes that source generally useful (a source effect on the
gains) and its place in the metric's space (a source effect on the metric). Pooling the pairs as if they were
independent makes a metric look predictive when it is not (a pooled Spearman test rejects a true null in
about a third of the worlds with shared target offsets), and so does treating the sources as fixed (a
within-target test rejects in 12 % of 21 x 9 worlds where metric and gains have independent source effects).
So, with the statistic of :mod:`promptgrid.analysis.grid` (a within-target correlation):

* **p-values** come from permuting the *sources jointly*: one permutation of the source labels, the same in
  every target. It keeps everything a source carries across targets, so it tests the null "the metric is
  unrelated to the outcome in the population of sources these were drawn from", whatever the targets differ
  in. With S! <= the permutation count every ordering is used (an exact test, no Monte-Carlo error);
  otherwise each p comes with its Monte-Carlo standard error ``sqrt(p (1 - p) / P)``.
* **several predictors at once** share the permutations, so the max-statistic (Westfall-Young single-step
  maxT) p of each is adjusted over all of them: the chance that *any* predictor reaches that value under the
  null. The best metric's adjusted p therefore carries no winner's curse. The count is sized to the
  multiplicity (:func:`permutations_needed`), so an adjusted verdict does not sit on the permutation grid.
* **confidence intervals** are jackknife-t intervals with targets *and* sources as samples: the variance is the
  leave-one-target-out plus the leave-one-source-out jackknife variance (on Fisher's z for correlations) minus
  the pair-level variance both of them count (the interaction variance of each pair's linearised share of
  the statistic, :func:`promptgrid.analysis.grid.pair_influence`), never less than the larger of the two, with
  Satterthwaite's degrees of freedom. It is given from 3 targets on (wide with 3, as it should be); the t
  quantile with few targets makes it conservative (README, Statistics, gives the simulated coverage).
* **comparisons** of two predictors use the same jackknife on the difference, and a family of comparisons is
  Holm-adjusted; the CI printed with them is simultaneous (Bonferroni over the family).
* **means over targets** (a family contrast, a paired method difference, a retrieval figure) use a t-interval
  over the per-target values, or, for a ratio of means, a jackknife-t over targets.

The minimum detectable effect (80 % power, two-sided alpha 0.05) of a correlation is read off its permutation
null: the 95 % quantile of |null| (the test's critical value) plus ``z_0.8 x sd(null)``; adjusted for the
predictors compared, the 95 % quantile of the max |null| over them instead of its own.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional

import numpy as np
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

from promptgrid.analysis.grid import KINDS, interaction_variance, leave_one_out, pair_influence, statistic, to_grid

ALPHA = 0.05
POWER = 0.8
MIN_TARGETS_FOR_CI = 3
NAMES = {"pearson": "pearson_r", "spearman": "spearman_rho", "kendall": "kendall_tau"}
_CHUNK_CELLS = 4_000_000  # permuted cells per vectorised call (memory ~ 8 x this bytes per temporary)


def permutations_needed(n_tests: int, alpha: float = ALPHA) -> int:
    """Permutations for a family of ``n_tests``: 20 m / alpha (at least 1000), so that the smallest p a
    Monte-Carlo test can give (1 / (P + 1)), times m, is a twentieth of alpha."""
    return max(1000, int(math.ceil(20 * max(1, n_tests) / alpha)))


def source_permutations(n_sources: int, n_permutations: int, rng: np.random.Generator) -> tuple:
    """(P, S) orderings of the sources and whether they are all S! of them (an exact test, identity included)."""
    if math.factorial(n_sources) <= n_permutations:
        return np.array(list(itertools.permutations(range(n_sources))), dtype=np.intp), True
    return rng.permuted(np.tile(np.arange(n_sources), (n_permutations, 1)), axis=1), False


def _null(X: np.ndarray, Y: np.ndarray, perms: np.ndarray, kind: str) -> np.ndarray:
    """The statistic of X (S, T) with its sources reordered by each of perms (P, S): (P,)."""
    if kind == "spearman" and np.isfinite(X).all() and np.isfinite(Y).all():
        # a full grid keeps every pair under any reordering, so the ranks move with the rows: rank once
        X, Y, kind = rankdata(X, axis=0), rankdata(Y, axis=0), "pearson"
    step = max(1, _CHUNK_CELLS // (X.size * (X.shape[0] if kind == "kendall" else 1)))
    return np.concatenate([statistic(X[perms[i:i + step]], Y, kind) for i in range(0, len(perms), step)])


def _exceed(observed: np.ndarray, null: np.ndarray, exact: bool) -> tuple:
    """Two-sided p of each observed (M,) against null (M, P) on |value|, and its Monte-Carlo SE (0 if exact)."""
    finite = np.isfinite(null)
    size = finite.sum(axis=1)
    tol = 1e-12 * np.maximum(1.0, np.abs(observed))
    hits = (finite & (np.abs(np.nan_to_num(null)) >= (np.abs(observed) - tol)[:, None])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = hits / size if exact else (hits + 1) / (size + 1)
        se = np.zeros_like(p) if exact else np.sqrt(p * (1 - p) / size)
    bad = ~np.isfinite(observed) | (size == 0)
    return np.where(bad, np.nan, np.minimum(p, 1.0)), np.where(bad, np.nan, se)


def _peak(null: np.ndarray) -> np.ndarray:
    """The largest |value| of any predictor in each permutation (P,); NaN where none is defined."""
    a = np.abs(null)
    defined = np.isfinite(a).any(axis=0)
    return np.where(defined, np.where(np.isfinite(a), a, -np.inf).max(axis=0, initial=-np.inf), np.nan)


def _maxt(observed: np.ndarray, null: np.ndarray, exact: bool, raw: np.ndarray) -> np.ndarray:
    """Westfall-Young single-step maxT adjusted p (M,): how often the largest |null| of any predictor reaches
    each observed |value|; never below the raw p."""
    peak = _peak(null)
    adjusted, _ = _exceed(observed, np.broadcast_to(peak, null.shape), exact)
    return np.where(np.isfinite(raw), np.maximum(adjusted, raw), np.nan)


def jackknife_t(estimate: float, by_target: np.ndarray, by_source: Optional[np.ndarray] = None,
                fisher: bool = False, level: float = 0.95, overlap: float = 0.0) -> dict:
    """Jackknife-t interval from leave-one-out replicates over targets (T,) and, if given, sources (S,):
    variance = the sum of the two jackknife variances minus ``overlap`` (the pair-level variance both count,
    on the estimate's scale; never below the larger of the two), df by Satterthwaite. ``fisher``: on
    z = atanh(r), mapped back. Returns ci_low, ci_high, se (of the estimate, on its scale), df, p (t-test of 0).
    NaN with < 3 targets."""
    out = {"ci_low": np.nan, "ci_high": np.nan, "se": np.nan, "df": np.nan, "p": np.nan}
    f, inv = (lambda v: np.arctanh(np.clip(v, -0.999999, 0.999999)), np.tanh) if fisher else (
        lambda v: np.asarray(v, dtype=np.float64), lambda v: v)
    reps = [np.asarray(by_target, dtype=np.float64)] + (
        [np.asarray(by_source, dtype=np.float64)] if by_source is not None else [])
    if not np.isfinite(estimate) or reps[0].size < MIN_TARGETS_FOR_CI or any(~np.isfinite(r).all() for r in reps):
        return out
    variances, dfs = [], []
    for r in reps:
        z = f(r)
        variances.append((z.size - 1) / z.size * ((z - z.mean()) ** 2).sum())
        dfs.append(z.size - 1)
    if np.isfinite(overlap) and overlap > 0:
        scale = (1 - min(estimate ** 2, 0.999999)) ** 2 if fisher else 1.0  # delta method onto z
        var = max(sum(variances) - overlap / scale, max(variances))
    else:
        var = sum(variances)
    if var <= 0:
        # every replicate agrees: no sampling spread to speak of (degenerate, e.g. an exact linear relation)
        return {**out, "ci_low": float(estimate), "ci_high": float(estimate), "se": 0.0,
                "p": 0.0 if estimate != 0 else 1.0}
    # Satterthwaite on the two jackknife variances as estimated (taking it after the overlap is subtracted
    # shrinks df with the square of the variance and widened the CI at 3 targets)
    df = sum(variances) ** 2 / sum(v ** 2 / d for v, d in zip(variances, dfs) if v > 0)
    half = student_t.ppf(0.5 + level / 2, df) * math.sqrt(var)
    centre = float(f(np.float64(estimate)))
    se = math.sqrt(var) if not fisher else math.sqrt(var) * (1 - estimate ** 2)  # delta method back to r
    return {"ci_low": float(inv(centre - half)), "ci_high": float(inv(centre + half)), "se": float(se),
            "df": float(df), "p": float(2 * student_t.sf(abs(centre) / math.sqrt(var), df))}


def target_jackknife(stat: Callable[[np.ndarray], float], rows: np.ndarray, level: float = 0.95,
                     weights: Optional[np.ndarray] = None) -> dict:
    """Jackknife-t over targets of any statistic of per-target rows (G, k) (a ratio of means, a difference of
    shares): estimate plus :func:`jackknife_t`'s keys. For a mean this is the t-interval. ``weights`` (G,): for a
    ratio of means, each target's denominator; the t quantile then takes Kish's effective number of targets,
    (sum w)^2 / sum w^2, less 1, as its df, since the few targets with the largest denominators carry the
    variance (with G - 1 the interval covered 91.5-93 % in simulation; README, Statistics)."""
    rows = np.asarray(rows, dtype=np.float64)
    est = float(stat(rows)) if len(rows) else np.nan
    reps = np.array([stat(np.delete(rows, g, axis=0)) for g in range(len(rows))]) if len(rows) > 1 else np.empty(0)
    res = jackknife_t(est, reps, level=level)
    if weights is not None and np.isfinite(res["se"]) and res["se"] > 0:
        w = np.abs(np.asarray(weights, dtype=np.float64))
        df = max(w.sum() ** 2 / (w ** 2).sum() - 1, 1.0)
        half = student_t.ppf(0.5 + level / 2, df) * res["se"]
        res.update(ci_low=est - half, ci_high=est + half, df=float(df),
                   p=float(2 * student_t.sf(abs(est) / res["se"], df)))
    return {"estimate": est, "n_targets": int(len(rows)), **res}


def _null_mde(null: np.ndarray, critical: np.ndarray, sd: float) -> float:
    """The effect a permutation test finds with 80 % power: the 95 % quantile of |critical| (a predictor's own
    null, or the max over the family) plus z_0.8 times the sd of its own null."""
    crit = np.abs(critical[np.isfinite(critical)])
    if crit.size == 0 or not np.isfinite(sd):
        return float("nan")
    return float(np.quantile(crit, 1 - ALPHA) + norm.ppf(POWER) * sd)


def mde(se: float, df: float = math.inf, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided test at ``alpha`` with ``power``, given the estimate's SE."""
    if not np.isfinite(se):
        return float("nan")
    q = (norm.ppf(1 - alpha / 2) + norm.ppf(power)) if not np.isfinite(df) else (
        student_t.ppf(1 - alpha / 2, df) + student_t.ppf(power, df))
    return float(q * se)


def correlate_family(xs: dict, y, groups, units=None, n_permutations: Optional[int] = None, seed: int = 0,
                     kinds=KINDS) -> dict:
    """Every predictor in ``xs`` (name -> values (n,)) against ``y`` (n,), pooled within targets ``groups`` (n,),
    sources ``units`` (n,) (see :func:`promptgrid.analysis.grid.to_grid`).

    Returns name -> {n, n_targets, n_sources, permutations, exact, and per kind k: <stat> (pearson_r,
    spearman_rho, kendall_tau), k_p (joint source permutations), k_p_se (its Monte-Carlo SE), k_p_maxt (adjusted
    over the family), k_ci_low / k_ci_high (two-way jackknife-t), k_mde, k_mde_maxt}. ``n_permutations`` None:
    :func:`permutations_needed` for the family's size."""
    names = list(xs)
    Y, src, tgt = to_grid(y, groups, units)
    X = np.stack([to_grid(xs[m], groups, units)[0] for m in names]) if names else np.empty((0,) + Y.shape)
    P = permutations_needed(len(names)) if n_permutations is None else int(n_permutations)
    perms, exact = source_permutations(Y.shape[0], P, np.random.default_rng(seed))
    both = np.isfinite(X) & np.isfinite(Y)
    out = {m: {"n": int(both[i].sum()), "n_targets": int(both[i].any(axis=0).sum()),
               "n_sources": int(both[i].any(axis=1).sum()), "permutations": int(len(perms)), "exact": bool(exact)}
           for i, m in enumerate(names)}
    for kind in kinds:
        observed = np.where(both.sum(axis=(1, 2)) >= 3, statistic(X, Y, kind), np.nan)  # < 3 pairs: undefined
        null = np.stack([_null(X[i], Y, perms, kind) for i in range(len(names))]) if names else np.empty((0, 0))
        p, se = _exceed(observed, null, exact)
        p_maxt = _maxt(observed, null, exact, p)
        by_target, by_source = leave_one_out(X, Y, kind)
        overlap = interaction_variance(pair_influence(X, Y, kind))
        peak = _peak(null) if len(names) else np.empty(0)
        for i, m in enumerate(names):
            keep_t, keep_s = both[i].any(axis=0), both[i].any(axis=1)
            ci = jackknife_t(observed[i], by_target[i][keep_t], by_source[i][keep_s], fisher=True,
                             overlap=overlap[i])
            sd = float(np.nanstd(null[i])) if np.isfinite(null[i]).any() else np.nan
            out[m].update({NAMES[kind]: float(observed[i]), f"{kind}_p": float(p[i]), f"{kind}_p_se": float(se[i]),
                           f"{kind}_p_maxt": float(p_maxt[i]), f"{kind}_ci_low": ci["ci_low"],
                           f"{kind}_ci_high": ci["ci_high"], f"{kind}_mde": _null_mde(null[i], null[i], sd),
                           f"{kind}_mde_maxt": _null_mde(null[i], peak, sd)})
    return out


def correlate_within(x, y, groups, n_permutations: Optional[int] = None, n_bootstrap: Optional[int] = None,
                     seed: int = 0, kinds=KINDS, units=None) -> dict:
    """One predictor's pooled within-target correlations (:func:`correlate_family` with one member). Its CIs are
    jackknife-t; ``n_bootstrap`` is accepted for callers written before #24 and not used."""
    del n_bootstrap
    return correlate_family({"x": x}, y, groups, units, n_permutations, seed, kinds)["x"]


def within_statistic(x, y, groups, kind: str = "spearman", units=None) -> float:
    """The within-target association of x and y (:mod:`promptgrid.analysis.grid`); NaN if undefined."""
    Y = to_grid(y, groups, units)[0]
    return float(statistic(to_grid(x, groups, units)[0], Y, kind))


def compare_within(xs: dict, y, groups, n_bootstrap: Optional[int] = None, seed: int = 0, kind: str = "spearman",
                   units=None, pairs=None) -> list:
    """Pairs (a, b) of predictors (default every pair, a listed first): the difference of their within-target
    statistics with y on the pairs where every predictor and y are finite, its SE from the two-way jackknife
    (targets and sources as samples), p (t, Satterthwaite df), p_holm over the pairs compared, and a
    simultaneous 95 % CI (Bonferroni over them). ``significant`` = p_holm < 0.05. Returns dicts metric_a, metric_b,
    n, n_targets, r1, r2, diff, se, df, ci_low, ci_high, p, p_holm, significant."""
    del n_bootstrap, seed  # the jackknife is deterministic
    names = list(xs)
    Y = to_grid(y, groups, units)[0]
    X = np.stack([to_grid(xs[m], groups, units)[0] for m in names])
    common = np.isfinite(Y) & np.isfinite(X).all(axis=0)
    X, Y = np.where(common, X, np.nan), np.where(common, Y, np.nan)
    keep_t, keep_s = common.any(axis=0), common.any(axis=1)
    observed = statistic(X, Y, kind)
    by_target, by_source = leave_one_out(X, Y, kind)
    influence = pair_influence(X, Y, kind)
    index = {m: i for i, m in enumerate(names)}
    todo = list(pairs) if pairs is not None else [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    level = 1 - ALPHA / max(1, len(todo))
    results = []
    for a, b in todo:
        i, j = index[a], index[b]
        diff = float(observed[i] - observed[j])
        overlap = float(interaction_variance(influence[i] - influence[j]))
        ci = jackknife_t(diff, (by_target[i] - by_target[j])[keep_t], (by_source[i] - by_source[j])[keep_s],
                         level=level, overlap=overlap)
        # a difference of two correlations lies in [-2, 2]
        results.append({"metric_a": a, "metric_b": b, "n": int(common.sum()), "n_targets": int(keep_t.sum()),
                        "r1": float(observed[i]), "r2": float(observed[j]), "diff": diff, "se": ci["se"],
                        "df": ci["df"], "ci_low": max(ci["ci_low"], -2.0), "ci_high": min(ci["ci_high"], 2.0),
                        "p": ci["p"]})
    adjusted = holm([r["p"] for r in results])
    for r, p in zip(results, adjusted):
        r.update(p_holm=float(p), significant=bool(np.isfinite(p) and p < ALPHA))
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


def cluster_mean_ci(values, groups, n_bootstrap: Optional[int] = None, seed: Optional[int] = None) -> dict:
    """Mean of per-group (per-target) means of ``values`` with a 95 % t-interval over the groups: the estimate for
    "the average target" when items of one target are not independent. Returns mean, ci_low, ci_high, se, df,
    p (t-test of 0), mde (80 % power), n (items), n_groups, positive (groups whose own mean is > 0). The CI is
    NaN below 3 groups. ``n_bootstrap`` and ``seed`` are accepted for callers written before #24 and not used."""
    del n_bootstrap, seed
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    keep = np.isfinite(v)
    codes = np.unique(g[keep], return_inverse=True)[1]
    G = int(codes.max()) + 1 if codes.size else 0
    means = np.array([v[keep][codes == k].mean() for k in range(G)])
    res = target_jackknife(np.mean, means[:, None]) if G else {"estimate": np.nan, "se": np.nan, "df": np.nan,
                                                                "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    return {"mean": res["estimate"], "ci_low": res["ci_low"], "ci_high": res["ci_high"], "se": res["se"],
            "df": res["df"], "p": res["p"], "mde": mde(res["se"], res["df"]), "n": int(keep.sum()), "n_groups": G,
            "positive": int((means > 0).sum())}
