"""The simulations of tests/analysis/test_simulations.py at full size, for the README's Statistics section.

Runs every world of tests/analysis/worlds.py (their docstrings give the parameters) on promptgrid's pooled
statistics at 6 sources x 3, 6 and 9 targets and at 21 x 9, and prints a markdown table of coverage, false
positives and power. From the project root, with the venv:

    python scripts/nullsim.py [--worlds 2000] [--permutations 200] [--jobs 2]

Permutation p-values are only compared with alpha here, so 200 permutations suffice (the p of one world has a
Monte-Carlo SE of at most 0.035, which averages out over worlds). Each rate over n worlds has a Monte-Carlo SE
of sqrt(rate (1 - rate) / n): 0.5 points for a 95 % coverage over 2000 worlds. The means over targets
(`cluster_mean_ci`, `target_jackknife`) depend on the targets only: their 21 x 9 column is a second draw of 9.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analysis"))

import worlds  # noqa: E402

from promptgrid.analysis.pooled import (  # noqa: E402
    cluster_mean_ci,
    compare_within,
    correlate_family,
    correlate_within,
    target_jackknife,
)

CELLS = ((6, 3), (6, 6), (6, 9), (21, 9))


def _jackknife(stat, rows, seed):
    # a ratio of means weights each target by its oracle gain, as summary.share_of_oracle does
    return target_jackknife(stat, rows, weights=rows[:, 1] if stat is worlds.ratio_of_means else None)


def _rates(world, kind="spearman", truth=0.0, perms=None, **kw):
    def run(S, T, n, P, seed):
        return worlds.pooled_rates(correlate_within, world, S, T, n, seed, kind, truth, P if perms is None else perms,
                                   **kw)
    return run


#: one simulation per (run, cell); several rows can read one run
RUNS = {
    "null": _rates(worlds.notes_world),
    "pearson_0.5": _rates(worlds.notes_world, "pearson", 0.5, perms=1, rho=0.5),  # CI only: 1 permutation
    "crossed": _rates(worlds.crossed_world),
    "power_0.3": _rates(worlds.notes_world, rho=0.3),
    "power_0.5": _rates(worlds.notes_world, rho=0.5),
    "cluster": lambda S, T, n, P, seed: {"covered": worlds.cluster_mean_coverage(cluster_mean_ci, T, n, seed)},
    "ratio": lambda S, T, n, P, seed: {"covered": worlds.ratio_coverage(_jackknife, T, n, seed)},
    "share": lambda S, T, n, P, seed: {"covered": worlds.ratio_coverage(_jackknife, T, n, seed,
                                                                        stat=worlds.mean_of_ratios)},
    "equal": lambda S, T, n, P, seed: {"rate": worlds.equal_metrics_rate(compare_within, S, T, n, seed)},
    # Pearson: the adjustment works the same for any statistic, and the run is the table's longest
    "maxt_0.5": lambda S, T, n, P, seed: worlds.family_rates(correlate_family, S, T, n, seed, rho=0.5,
                                                             n_permutations=P, kind="pearson"),
}
#: (label, goal, run, key)
ROWS = (
    ("coverage of the pooled Spearman's 95 % CI (no association)", ">= 93 %", "null", "covered"),
    ("coverage of the pooled Pearson's 95 % CI (within-target r = 0.5)", ">= 93 %", "pearson_0.5", "covered"),
    ("coverage of the pooled Spearman's 95 % CI (crossed world, true value 0)", ">= 93 %", "crossed", "covered"),
    ("coverage of `cluster_mean_ci` (a mean over targets)", ">= 93 %", "cluster", "covered"),
    ("coverage of `target_jackknife` (share of the oracle, a ratio of means)", ">= 93 %", "ratio", "covered"),
    ("coverage of `target_jackknife` (share of the oracle, a mean of per-target shares)", ">= 93 %", "share",
     "covered"),
    ("false positives, target offsets only (Spearman p < 0.05)", "<= 5 %", "null", "rejected"),
    ("false positives, source effects (sd 1) shared across targets", "<= 6 %", "crossed", "rejected"),
    ("two equally good metrics called different by `compare_within`", "<= 5 %", "equal", "rate"),
    ("power at within-target r = 0.3 (Spearman p < 0.05)", "", "power_0.3", "rejected"),
    ("power at within-target r = 0.5", "", "power_0.5", "rejected"),
    ("power at r = 0.5, one of 16 metrics, Pearson p < 0.05", "", "maxt_0.5", "power_raw"),
    ("the same, maxT-adjusted over the 16 (Westfall-Young)", "", "maxt_0.5", "power_maxt"),
    ("any of the other 15 (null) metrics with maxT p < 0.05", "<= 5 %", "maxt_0.5", "family_wise"),
)
COSTLY = ("maxt_0.5", "power_0.3", "power_0.5", "crossed", "null")  # started first, so the pool ends together


def measure(run: str, S: int, T: int, n: int, P: int) -> dict:
    """One run of the table: its name, cell (S sources, T targets), n worlds, P permutations per p."""
    return RUNS[run](S, T, n, P, 1000 * list(RUNS).index(run) + 100 * S + T)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=2000)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = ap.parse_args(argv)
    tasks = [(run, S, T) for run in sorted(args.runs, key=lambda r: r not in COSTLY) for S, T in CELLS]
    start = time.time()
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        futures = {t: pool.submit(measure, *t, args.worlds, args.permutations) for t in tasks}
        values = {}
        for t, f in futures.items():
            values[t] = f.result()
            print(f"{t}: {values[t]} ({time.time() - start:.0f}s)", file=sys.stderr, flush=True)
    head = " | ".join(f"{S}×{T}" for S, T in CELLS)
    print(f"| check ({args.worlds} worlds per cell) | goal | {head} |")
    print("|---|---|" + "---|" * len(CELLS))
    for label, goal, run, key in ROWS:
        if run in args.runs:
            cells = " | ".join(f"{100 * values[(run, S, T)][key]:.1f} %" for S, T in CELLS)
            print(f"| {label} | {goal} | {cells} |")
    print(f"\n{time.time() - start:.0f} s, {args.permutations} permutations per p", file=sys.stderr)


if __name__ == "__main__":
    main()
