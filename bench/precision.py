"""Precision: fp32 against bf16 against auto (``training.precision``), in time and in dev accuracy.

``auto`` is bf16 on CPUs with AVX512-BF16 or AMX and IEEE fp32 elsewhere (promptgrid.models.precision), so it
costs exactly what the precision it resolves to costs; the table says which that is on this CPU.

- Time: seconds per training step at max_length 128 (PEFT's inputs), one run per task, fp32 and bf16
  alternated. Where this CPU has no fast bf16 a bf16 step takes ~25x longer, so bf16 gets a 2-step
  probe there instead of the full step count.
- Accuracy (only where bf16 is fast: elsewhere nobody would run it): every (task, seed) trains twice
  from the same initial prompt on the same batches, once in fp32 and once under bf16 autocast, all
  seeds of a task in one bank. The paired differences of the final dev accuracy (bf16 - fp32) get a
  mean, its standard error and a seeded bootstrap 95 % interval.
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


def _step_times(bb, tasks: list, steps: int, repeats: int) -> dict:
    """Median seconds per training step, {task: {precision: s}}; bf16 probed for 2 steps if it is slow here."""
    bf16_steps = steps if C.fast_bf16() else 2
    out = {}
    for task in tasks:
        head = bb.task_head(C.study().tasks[task].label_texts)
        train, dev = C.encoded(bb, task, "train", MAX_LENGTH), C.encoded(bb, task, "dev", MAX_LENGTH)
        dev = C.scoring.EncodedSplit(dev.ids[:8], dev.labels[:8])  # evaluation is subtracted anyway

        def variant(precision, n):
            def fn(r):
                s, _, _ = C.timed_train(bb, head, train, dev, C.train_cfg(n, precision=precision), [r])
                return {"s": s / n}
            return fn

        C.timed_train(bb, head, train, dev, C.train_cfg(1, precision="fp32"), [0])  # warm-up
        raw = C.alternate({"fp32": variant("fp32", steps), "bf16": variant("bf16", bf16_steps)}, repeats)
        out[task] = {p: C.stats(C.col(rows, "s"))["median"] for p, rows in raw.items()}
        print(f"[precision] {task}: fp32 {out[task]['fp32']:.3f} s/step, bf16 {out[task]['bf16']:.3f} s/step",
              flush=True)
    return out


def _paired_accuracy(bb, tasks: list, cfg, seeds: list) -> dict:
    out, rows, diffs, seconds = {"tasks": {}}, [], [], {"fp32": 0.0, "bf16": 0.0}
    for task in tasks:
        head = bb.task_head(C.study().tasks[task].label_texts)
        train, dev = C.encoded(bb, task, "train", MAX_LENGTH), C.encoded(bb, task, "dev", MAX_LENGTH)
        dev_by = {}
        for precision in ("fp32", "bf16"):
            s, _, results = C.timed_train(bb, head, train, dev, dataclasses.replace(cfg, precision=precision), seeds)
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
    rows.append([f"all ({len(diffs)} paired runs)",
                 f"{C.mean([v for t in out['tasks'].values() for v in t['dev_fp32']]):.1f}",
                 f"{C.mean([v for t in out['tasks'].values() for v in t['dev_bf16']]):.1f}",
                 f"{mean:+.2f} (SE {se:.2f}; 95% CI {low:+.2f} to {high:+.2f})",
                 f"{sum(d < 0 for d in diffs)} / {sum(d > 0 for d in diffs)}"])
    out["table"] = C.md_table(["task", "dev fp32 (mean over seeds)", "dev bf16", "bf16 - fp32 (points)",
                               "runs bf16 lower / higher"], rows) + \
        f"\n\nTraining time, all runs: fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s: " \
        f"**{out['speedup']:.2f}x** ({cfg.steps} steps, batch {cfg.batch_size}, {len(seeds)} seeds per bank)."
    return out


def run(quick: bool) -> dict:
    from promptgrid.models.precision import resolve_precision

    tasks = ["amazon", "nyt", "trec"] if quick else list(C.study().tasks)
    steps, repeats = (6, 2) if quick else (10, 3)
    bb = C.backbone()
    auto = resolve_precision("auto")
    times = _step_times(bb, tasks, steps, repeats)
    fp32_s, bf16_s = (sum(t[p] for t in times.values()) for p in ("fp32", "bf16"))
    out = {"auto": auto, "fast_bf16": C.fast_bf16(), "step_seconds": times, "max_length": MAX_LENGTH,
           "bf16_over_fp32_time": bf16_s / fp32_s}
    auto_s = {"fp32": fp32_s, "bf16": bf16_s}[auto]
    rows = [[task, f"{t['fp32']:.3f}", f"{t['bf16']:.3f}", f"{t['bf16'] / t['fp32']:.2f}x", auto]
            for task, t in times.items()]
    rows.append([f"all {len(tasks)} tasks (summed)", f"{fp32_s:.3f}", f"{bf16_s:.3f}", f"{bf16_s / fp32_s:.2f}x",
                 f"{auto}: {fp32_s / auto_s:.2f}x the speed of fp32"])
    table = C.md_table(["task", "fp32 s/step", "bf16 s/step", "bf16 time / fp32 time", "auto on this CPU"], rows)
    table += (f"\n\n`auto` resolves to **{auto}** on this CPU ("
              + ("it computes bf16 natively" if C.fast_bf16() else
                 f"no AVX512-BF16 or AMX: bf16 was probed for 2 steps per task, and runs "
                 f"{bf16_s / fp32_s:.0f}x slower than fp32") + ").")
    if C.fast_bf16():
        acc = _paired_accuracy(bb, tasks, C.train_cfg(30), list(range(8)))
        out.update({k: v for k, v in acc.items() if k != "table"})
        table += "\n\nPaired dev accuracy (bf16 autocast against fp32):\n\n" + acc["table"]
    else:
        table += " The paired accuracy comparison runs only where bf16 is fast (see the earlier table below)."
    out["table"] = table
    print(out["table"])
    return out


if __name__ == "__main__":
    run("--quick" in sys.argv)
