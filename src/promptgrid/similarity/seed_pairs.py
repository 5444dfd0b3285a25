"""SPoT averages every similarity over seed pairs: :func:`seed_pair_values` computes it for each
(seed_s, seed_t) pair and :func:`seed_pair_mean` reduces them to (mean, std, n).
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import numpy as np

from promptgrid.similarity.prompt_math import similarity_matrix


class SeedPairStat(NamedTuple):
    """Mean, sample standard deviation (ddof = 1; NaN for a single pair) and count of seed pairs."""

    mean: float
    std: float
    n: int


def _items(items, name: str) -> dict:
    if isinstance(items, Mapping):
        out = dict(items)
    elif isinstance(items, (list, tuple)):
        out = dict(enumerate(items))
    else:
        raise TypeError(f"{name}: expected a mapping seed -> item or a list of items, got {type(items).__name__}")
    if not out:
        raise ValueError(f"{name}: no seeds given")
    return out


def seed_pair_values(items_s, items_t, fn: Callable) -> dict:
    """Apply ``fn(item_s, item_t) -> float`` to every (seed_s, seed_t) pair.

    items_s / items_t: mapping seed -> item (a prompt (L, d), an ON mask, a PANDA task vector ...),
    or a list (seeds are then the list positions). Returns {(seed_s, seed_t): value}.
    Every pair is used, including seed_s == seed_t; for a self-pair (s == t) that pair compares a
    prompt with itself, which is why self-pairs are excluded from the analysis.
    """
    items_s, items_t = _items(items_s, "items_s"), _items(items_t, "items_t")
    return {(ss, st): float(fn(xs, xt)) for ss, xs in items_s.items() for st, xt in items_t.items()}


def seed_pair_mean(values_by_seed_pair) -> SeedPairStat:
    """Reduce per-seed-pair metric values to (mean, std, n) as SPoT does.

    ``values_by_seed_pair``: {(seed_s, seed_t): value} (from :func:`seed_pair_values`), or any
    sequence / array of values. std is the sample std (ddof = 1), NaN when there is one pair.
    A NaN value (e.g. ON with an empty mask) makes the mean NaN: it is not silently dropped.
    """
    if isinstance(values_by_seed_pair, Mapping):
        values = list(values_by_seed_pair.values())
    else:
        values = list(np.asarray(values_by_seed_pair, dtype=np.float64).reshape(-1))
    if not values:
        raise ValueError("seed_pair_mean: no values")
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return SeedPairStat(float(arr.mean()), std, int(arr.size))


def seed_pair_similarity(prompts_s, prompts_t, metric: str, blocks: int = 1) -> SeedPairStat:
    """A prompt metric averaged over all (seed_s, seed_t) pairs; prompts per seed as mapping or list
    (``blocks``: deep prompts' key/value blocks, :func:`promptgrid.similarity.prompt_math.similarity_matrix`)."""
    items_s, items_t = _items(prompts_s, "prompts_s"), _items(prompts_t, "prompts_t")
    mat = similarity_matrix(list(items_s.values()), list(items_t.values()), metric, blocks)
    return seed_pair_mean(mat.reshape(-1).tolist())
