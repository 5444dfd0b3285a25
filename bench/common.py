"""Shared pieces of the benchmarks: study data, the A/B timing loop, engine timing, tables.

Every benchmark alternates its variants in one process (A B A B ...), so a burst of load from other
jobs on the machine hits every variant alike; the ratio of medians stays meaningful under load.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from promptgrid.config import default_cache_dir, load_config
from promptgrid.engine import scoring, training
from promptgrid.objectives.classification import ClassificationObjective

CACHE = default_cache_dir()
BENCH_DEV = 100  # dev examples for the accuracy columns (the study uses 50; more costs minutes under load)


# ---------------------------------------------------------------- study pieces
@functools.cache
def study(path: str = "config.yaml"):
    from promptgrid.pipeline.plugins import load_builtins

    load_builtins()  # the config names registered data sources
    return load_config(ROOT / path)


@functools.cache
def splits(task: str, max_dev: int = BENCH_DEV) -> dict:
    """{'train','dev','test'} DataFrames of a default-study task; its source's pinned file is fetched into the
    cache first if it is not there (as the workflow's fetch job does)."""
    from promptgrid.data.artifacts import fetch_artifact
    from promptgrid.data.splits import prepare_task
    from promptgrid.registry import SOURCES

    tc = study().tasks[task]
    spec = SOURCES.require(tc.source)
    if spec.artifact is not None:
        fetch_artifact(spec.artifact, CACHE, spec.name)
    return prepare_task(dataclasses.replace(tc, max_dev=max_dev), task, CACHE)


def backbone(attention: str = "eager"):
    """The default study's MiniLM with ``attention`` eager (what ``training.attention: auto`` picks on a
    CPU) or sdpa (Hugging Face's default). Loading sets IEEE fp32 (promptgrid.models.precision); bf16 runs only
    inside train_runs' and predict_bank's precision scopes. Cached per setting."""
    from promptgrid.models.loading import load_backbone

    return load_backbone("minilm", study().backbones["minilm"], CACHE, attention=attention)


@contextlib.contextmanager
def onednn_knob(setting: str):
    """torch's oneDNN fp32 GEMM setting ("ieee", "bf16") around a raw GEMM measurement; restored after."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = setting
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


def fast_bf16() -> bool:
    """Whether this CPU computes bf16 fast, i.e. what ``training.precision: auto`` resolves to bf16 on."""
    from promptgrid.models.precision import fast_bf16 as fast

    return fast("cpu")


def encoded(bb, task: str, split: str, max_length: int | None = None):
    """EncodedSplit of a task split, left-truncated to max_length (default: the backbone's)."""
    df = splits(task)[split]
    ids = [bb.encode_text(t, max_length) for t in df["text"]]
    return scoring.EncodedSplit(ids, torch.as_tensor(df["label"].tolist(), dtype=torch.long))


def train_cfg(steps: int, **changes):
    """The default study's training section, evaluating only at step 0 and at the last step."""
    return dataclasses.replace(study().training, steps=steps, eval_every=steps, checkpoint_every=steps,
                               early_step=0, early_stop=0, **changes)


def init(bb, seed: int) -> torch.Tensor:
    """The study's initial prompt (L, d) for a seed (random vocabulary rows)."""
    from promptgrid.models.prompt import init_prompt

    return init_prompt(study().prompt, bb.embed_layer.weight, seed)


def timed_train(bb, head, train, dev, cfg, seeds):
    """Run ``training.train_runs`` with one run per seed (one bank).

    Returns (training seconds without dev evaluation, evaluation seconds, results). Evaluation time is
    measured by timing ``scoring.score_bank``, which train_runs calls for every dev evaluation.
    """
    runs = [training.RunSpec(f"seed{s}", s, init(bb, s)) for s in seeds]
    spent = [0.0]
    score_bank = scoring.score_bank

    def timed_score_bank(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return score_bank(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    scoring.score_bank = timed_score_bank
    try:
        t0 = time.perf_counter()
        objective = ClassificationObjective(bb, head, "accuracy")
        results = training.train_runs(bb, objective, train, dev, runs, cfg, log=lambda msg: None)
        total = time.perf_counter() - t0
    finally:
        scoring.score_bank = score_bank
    return total - spent[0], spent[0], results


def final_dev(result) -> float:
    return result.curve[-1]["dev_score"]


# ---------------------------------------------------------------- A/B loop and summaries
def alternate(variants: dict, repeats: int) -> dict:
    """Call every variant once per repeat, in turn: A B A B ... fn(repeat) returns a dict of numbers."""
    out = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            out[name].append(fn(r))
    return out


def wall(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def col(rows: list, key: str) -> list:
    return [row[key] for row in rows]


def stats(values) -> dict:
    values = list(values)
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def ratio(slow: dict, fast: dict) -> float:
    """Speed-up of ``fast`` over ``slow`` (both stats() of seconds): ratio of medians."""
    return slow["median"] / fast["median"]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def fmt(x, digits: int = 2) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if isinstance(x, int):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def triple(s: dict, digits: int = 2) -> str:
    """min / median / max."""
    return f"{fmt(s['min'], digits)} / {fmt(s['median'], digits)} / {fmt(s['max'], digits)}"


def md_table(headers: list, rows: list) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def goal(ok: bool) -> str:
    return "met" if ok else "NOT met"
