"""bf16 autocast against fp32: what it costs in dev accuracy, paired run by run, and what it saves in time.

The throughput goal is judged "at equal dev accuracy", and a 2-seed mean cannot tell a 2-point loss from
noise. Here every (task, seed) trains twice from the same initial prompt on the same batches, once in
fp32 and once under bf16 autocast (`training.precision`), both on promptgrid's fast path with the
inputs PEFT sees (max_length 128); all seeds of a task train in one bank. The paired differences of the
final dev accuracy (bf16 - fp32) get a mean, its standard error and a seeded bootstrap 95 % interval.
"""
from __future__ import annotations

import dataclasses
import random
import sys

import common as C

MAX_LENGTH = 128


def _bootstrap_ci(diffs: list, n: int = 2000, seed: int = 0) -> tuple:
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def run(quick: bool) -> dict:
    tasks = ["medicine_text", "medicine_sentence", "intent"] if quick else list(C.study().tasks)
    seeds = list(range(8))
    cfg = C.train_cfg(30)
    bb = C.backbone(fast=True)
    out = {"tasks": {}, "seeds": seeds, "steps": cfg.steps, "max_length": MAX_LENGTH}
    rows, diffs, seconds = [], [], {"fp32": 0.0, "bf16": 0.0}
    for task in tasks:
        head = bb.task_head(C.study().tasks[task].label_texts)
        train, dev = C.encoded(bb, task, "train", MAX_LENGTH), C.encoded(bb, task, "dev", MAX_LENGTH)
        dev_by = {}
        for precision in ("fp32", "bf16"):
            with C.matmul(True):
                s, _, results = C.timed_train(bb, head, train, dev, dataclasses.replace(cfg, precision=precision),
                                              seeds)
            seconds[precision] += s
            dev_by[precision] = [C.final_dev(r) for r in results]
        task_diffs = [b - a for a, b in zip(dev_by["fp32"], dev_by["bf16"])]
        diffs += task_diffs
        out["tasks"][task] = {"dev_fp32": dev_by["fp32"], "dev_bf16": dev_by["bf16"]}
        rows.append([task, f"{C.mean(dev_by['fp32']):.1f}", f"{C.mean(dev_by['bf16']):.1f}",
                     f"{C.mean(task_diffs):+.1f}", f"{sum(d < 0 for d in task_diffs)} / {sum(d > 0 for d in task_diffs)}"])
    mean = C.mean(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    low, high = _bootstrap_ci(diffs)
    out.update({"diff_mean": mean, "diff_se": se, "diff_ci": [low, high], "n": len(diffs),
                "speedup": seconds["fp32"] / seconds["bf16"], "seconds": seconds})
    rows.append([f"all ({len(diffs)} paired runs)", f"{C.mean([v for t in out['tasks'].values() for v in t['dev_fp32']]):.1f}",
                 f"{C.mean([v for t in out['tasks'].values() for v in t['dev_bf16']]):.1f}",
                 f"{mean:+.2f} (SE {se:.2f}; 95% CI {low:+.2f} to {high:+.2f})",
                 f"{sum(d < 0 for d in diffs)} / {sum(d > 0 for d in diffs)}"])
    out["table"] = C.md_table(["task", "dev fp32 (mean over seeds)", "dev bf16", "bf16 - fp32 (points)",
                               "runs bf16 lower / higher"], rows) + \
        f"\n\nTraining time, all runs: fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s: " \
        f"**{out['speedup']:.2f}x** ({cfg.steps} steps, batch {cfg.batch_size}, {len(seeds)} seeds per bank)."
    print(out["table"])
    return out


if __name__ == "__main__":
    run("--quick" in sys.argv)
