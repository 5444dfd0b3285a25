"""Simulated studies for the statistics of :mod:`promptgrid.analysis.pooled`, and the measurements made on them.

A *world* is one simulated study: a (S sources, T targets) grid of a metric's values and the gains, returned in
the long layout the pooled functions take (``grid.ravel()`` with ``groups`` = the target of each item; item k of a
target is source k). Each generator documents its parameters and the true value of what is estimated, so a
CI's coverage and a test's false-positive rate can be counted over many worlds.

The *measurements* (``*_rate``, ``*_coverage``) take the function under test as their first argument, so the
same loop can be run on an older implementation to show what it did (tests/analysis/test_simulations.py, the
figures of scripts/nullsim.py). Every world is drawn from ``numpy.random.default_rng(seed)``; the i-th world's
permutations use seed i, so a measurement is deterministic.
"""
from __future__ import annotations

import numpy as np

ALPHA = 0.05


def targets_of(S: int, T: int) -> np.ndarray:
    """The target label of each item of a raveled (S, T) grid: (S * T,)."""
    return np.tile(np.arange(T), S)


def notes_world(rng: np.random.Generator, S: int, T: int, rho: float = 0.0) -> tuple:
    """Target offsets shared by metric and gains; inside a target, metric and gains correlate with Pearson ``rho``.

    gain[s, t] = u_t + 2 zg[s, t] with u_t ~ N(0, 3^2), a target's baseline that moves all its gains;
    metric[s, t] = 0.8 u_t / 3 + 0.6 w_t + zm[s, t] with w_t ~ N(0, 1), a target-level shift of the metric that
    is partly the same as the gains' (corr 0.8); (zm, zg) standard bivariate normal with correlation ``rho``,
    independent over sources and targets. There are no source effects, so the population value of the pooled
    within-target Pearson r is ``rho`` (0 = the null), and of the Spearman rho 0 when ``rho`` is 0. Pooling the
    pairs as if independent mistakes the shared target offsets for a metric that works.
    Returns metric (S T,), gain (S T,), groups (S T,)."""
    u, w = rng.normal(0, 3, T), rng.normal(0, 1, T)
    zm = rng.normal(0, 1, (S, T))
    zg = rho * zm + np.sqrt(1 - rho ** 2) * rng.normal(0, 1, (S, T))
    gain = u[None, :] + 2 * zg
    metric = 0.8 * u[None, :] / 3 + 0.6 * w[None, :] + zm
    return metric.ravel(), gain.ravel(), targets_of(S, T)


def crossed_world(rng: np.random.Generator, S: int, T: int, src_sd: float = 1.0) -> tuple:
    """The null for a *population of sources*: metric and gains each have their own source effect, shared across
    all targets, and nothing links them.

    metric[s, t] = a_s + u_t + e[s, t], gain[s, t] = b_s + v_t + 2 e'[s, t], with a_s, b_s ~ N(0, src_sd^2)
    independent, u_t ~ N(0, 1), v_t ~ N(0, 3^2), e, e' ~ N(0, 1). The population correlation is 0, but the S
    sources drawn have a nonzero sample correlation of a and b that is the same in every target, so a test that
    holds the sources fixed (permuting within each target) rejects far more often than alpha as T grows.
    Returns metric (S T,), gain (S T,), groups (S T,)."""
    a, b = rng.normal(0, src_sd, S), rng.normal(0, src_sd, S)
    u, v = rng.normal(0, 1, T), rng.normal(0, 3, T)
    metric = a[:, None] + u[None, :] + rng.normal(0, 1, (S, T))
    gain = b[:, None] + v[None, :] + 2 * rng.normal(0, 1, (S, T))
    return metric.ravel(), gain.ravel(), targets_of(S, T)


def equal_metrics_world(rng: np.random.Generator, S: int, T: int, rho: float = 0.3) -> tuple:
    """Two metrics that are equally good: each has within-target Pearson ``rho`` with the gains.

    gain[s, t] = u_t + z[s, t], u_t ~ N(0, 3^2); metric_i[s, t] = w_it + rho z[s, t] + sqrt(1 - rho^2) e_i[s, t]
    (i = 1, 2) with w_it ~ N(0, 1) the metric's own target offset and z, e_1, e_2 ~ N(0, 1) independent. The two
    metrics are exchangeable, so the true difference of any of their statistics is 0.
    Returns {"a": metric_1 (S T,), "b": metric_2 (S T,)}, gain (S T,), groups (S T,)."""
    u = rng.normal(0, 3, T)
    z = rng.normal(0, 1, (S, T))
    gain = u[None, :] + z
    xs = {name: (rng.normal(0, 1, T)[None, :] + rho * z + np.sqrt(1 - rho ** 2) * rng.normal(0, 1, (S, T))).ravel()
          for name in ("a", "b")}
    return xs, gain.ravel(), targets_of(S, T)


def family_world(rng: np.random.Generator, S: int, T: int, n_metrics: int = 16, rho: float = 0.0) -> tuple:
    """A family of ``n_metrics`` metrics, the first with within-target Pearson ``rho`` with the gains, the others
    null (each metric and the gains as in :func:`notes_world`, the metrics independent of each other).
    Returns {"m00": ..., "m01": ...} (S T,) each, gain (S T,), groups (S T,)."""
    u = rng.normal(0, 3, T)
    zg = rng.normal(0, 1, (S, T))
    gain = u[None, :] + 2 * zg
    xs = {}
    for i in range(n_metrics):
        r = rho if i == 0 else 0.0
        zm = r * zg + np.sqrt(1 - r ** 2) * rng.normal(0, 1, (S, T))
        xs[f"m{i:02d}"] = (0.8 * u[None, :] / 3 + 0.6 * rng.normal(0, 1, T)[None, :] + zm).ravel()
    return xs, gain.ravel(), targets_of(S, T)


def cluster_world(rng: np.random.Generator, G: int, n_per: int = 6, mean: float = 0.0) -> tuple:
    """Per-target differences (a family contrast, PANDA - vanilla): target g's true mean is ``mean`` + N(0, 1),
    and each of its ``n_per`` items adds N(0, 1) noise. The estimand, the mean over the population of targets,
    is ``mean``. Returns values (G n_per,), groups (G n_per,)."""
    means = mean + rng.normal(0, 1, G)
    return np.repeat(means, n_per) + rng.normal(0, 1, G * n_per), np.repeat(np.arange(G), n_per)


def ratio_world(rng: np.random.Generator, T: int, share: float = 2 / 3, concentration: float = 6.0) -> np.ndarray:
    """A retrieval figure per target: the oracle's gain o_t (lognormal, median 5 points, log-sd 0.6, so a few
    targets carry most of the gain) and the gain kept by the top-k, o_t B_t with B_t ~ Beta(share c,
    (1 - share) c) independent of o_t (c = ``concentration``). The share of the oracle, E[kept] / E[oracle] (a
    ratio of means) and E[kept / oracle] (a mean of ratios), is ``share`` in both cases.
    Returns rows (T, 2): kept, oracle."""
    oracle = 5 * np.exp(rng.normal(0, 0.6, T))
    kept = oracle * rng.beta(share * concentration, (1 - share) * concentration, T)
    return np.column_stack([kept, oracle])


def ratio_of_means(rows: np.ndarray) -> float:
    """Share of the oracle over targets: sum of kept / sum of oracle. rows (G, 2) -> float."""
    return float(rows[:, 0].sum() / rows[:, 1].sum())


def mean_of_ratios(rows: np.ndarray) -> float:
    """Share of the oracle as the mean of per-target shares (kept / oracle). rows (G, 2) -> float."""
    return float(np.mean(rows[:, 0] / rows[:, 1]))


def _covers(low: float, high: float, truth: float) -> bool:
    return bool(np.isfinite(low) and np.isfinite(high) and low <= truth <= high)


def pooled_rates(correlate_within, world, S: int, T: int, n_worlds: int, seed: int, kind: str = "spearman",
                 truth: float = 0.0, n_permutations: int = 200, **world_kw) -> dict:
    """Run ``correlate_within`` (x, y, groups, n_permutations=, n_bootstrap=, seed=, kinds=) on ``n_worlds`` draws
    of ``world`` (S, T, **world_kw). Returns rejected (share with p < alpha), covered (share whose 95 % CI holds
    ``truth``), width (mean CI width over the finite ones)."""
    rng = np.random.default_rng(seed)
    rejected = covered = 0
    widths = []
    for i in range(n_worlds):
        x, y, g = world(rng, S, T, **world_kw)
        res = correlate_within(x, y, g, n_permutations=n_permutations, n_bootstrap=1000, seed=i, kinds=(kind,))
        rejected += bool(res[f"{kind}_p"] < ALPHA)
        covered += _covers(res[f"{kind}_ci_low"], res[f"{kind}_ci_high"], truth)
        widths.append(res[f"{kind}_ci_high"] - res[f"{kind}_ci_low"])
    return {"rejected": rejected / n_worlds, "covered": covered / n_worlds, "width": float(np.nanmean(widths))}


def cluster_mean_coverage(cluster_mean_ci, G: int, n_worlds: int, seed: int, mean: float = 0.0) -> float:
    """Share of :func:`cluster_world` draws whose ``cluster_mean_ci`` (values, groups, n_bootstrap=, seed=) holds
    the true mean."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(n_worlds):
        values, groups = cluster_world(rng, G, mean=mean)
        res = cluster_mean_ci(values, groups, n_bootstrap=1000, seed=i)
        hits += _covers(res["ci_low"], res["ci_high"], mean)
    return hits / n_worlds


def ratio_coverage(interval, T: int, n_worlds: int, seed: int, share: float = 2 / 3, stat=ratio_of_means) -> float:
    """Share of :func:`ratio_world` draws whose ``interval(stat, rows, seed)`` (a dict with ci_low, ci_high) holds
    the true share of the oracle (``stat``: :func:`ratio_of_means` or :func:`mean_of_ratios`)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(n_worlds):
        res = interval(stat, ratio_world(rng, T, share), i)
        hits += _covers(res["ci_low"], res["ci_high"], share)
    return hits / n_worlds


def equal_metrics_rate(compare_within, S: int, T: int, n_worlds: int, seed: int, rho: float = 0.3) -> float:
    """Share of :func:`equal_metrics_world` draws where ``compare_within`` (xs, y, groups, n_bootstrap=, seed=)
    calls two equally good metrics significantly different."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(n_worlds):
        xs, y, g = equal_metrics_world(rng, S, T, rho)
        [res] = compare_within(xs, y, g, n_bootstrap=1000, seed=i)
        hits += bool(res["significant"])
    return hits / n_worlds


def family_rates(correlate_family, S: int, T: int, n_worlds: int, seed: int, rho: float = 0.0,
                 n_metrics: int = 16, n_permutations=None, kind: str = "spearman") -> dict:
    """``correlate_family`` (xs, y, groups, n_permutations=, seed=, kinds=) on :func:`family_world` draws.
    Returns family_wise (share of worlds where any null metric has p_maxt < alpha), power_raw / power_maxt (share
    where the first metric has p / p_maxt < alpha), below_001 (share where its p_maxt < 0.01) and min_p_maxt
    (the smallest adjusted p seen)."""
    rng = np.random.default_rng(seed)
    fw = raw = adj = tiny = 0
    smallest = 1.0
    for i in range(n_worlds):
        xs, y, g = family_world(rng, S, T, n_metrics, rho)
        res = correlate_family(xs, y, g, n_permutations=n_permutations, seed=i, kinds=(kind,))
        first, *rest = xs
        fw += any(res[m][f"{kind}_p_maxt"] < ALPHA for m in (rest if rho else xs))
        raw += res[first][f"{kind}_p"] < ALPHA
        adj += res[first][f"{kind}_p_maxt"] < ALPHA
        tiny += res[first][f"{kind}_p_maxt"] < 0.01
        smallest = min(smallest, res[first][f"{kind}_p_maxt"])
    return {"family_wise": fw / n_worlds, "power_raw": raw / n_worlds, "power_maxt": adj / n_worlds,
            "below_001": tiny / n_worlds, "min_p_maxt": smallest}
