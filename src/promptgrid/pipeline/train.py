"""The train verb: a task's own prompt for every seed in one bank (or imported from a PEFT adapter).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd

from promptgrid.pipeline.context import Study
from promptgrid.storage import layout
from promptgrid.storage.files import save_prompt, write_table

if TYPE_CHECKING:
    pass


def curves_frame(backbone, task, method, results, sources, seeds) -> pd.DataFrame:
    """The learning curves of a bank's runs, one row per run and evaluation step (curves.parquet's rows)."""
    rows = []
    for r, src, seed in zip(results, sources, seeds):
        for point in r.curve:
            rows.append({"backbone": backbone, "task": task, "source": src, "method": method, "seed": seed,
                         "step": point["step"], "dev_score": point["dev_score"], "train_loss": point["train_loss"]})
    return pd.DataFrame(rows, columns=["backbone", "task", "source", "method", "seed", "step", "dev_score",
                                       "train_loss"])


def train(study: Study, backbone: str, task: str) -> None:
    """Train the task's own prompt (source prompt / target baseline) for every seed, in one bank."""
    import torch

    from promptgrid.engine.training import RunSpec, train_runs

    cfg = study.cfg
    if backbone in cfg.tasks[task].peft_adapters:
        return _import_task_prompt(study, backbone, task, cfg.tasks[task].peft_adapters[backbone])
    bb = study.backbone(backbone)
    objective = study.objective(backbone, task)
    tr, dev, test = (study.encoded(backbone, task, s) for s in ("train", "dev", "test"))
    runs = [RunSpec(f"seed{seed}", seed, study.fresh_init(backbone, task, seed)) for seed in cfg.seeds]
    h = study.stage_hash("train", task=task, backbone=backbone)
    results = train_runs(bb, objective, tr, dev, runs, study.training,
                         checkpoint=study.path(layout.checkpoint("train", backbone, task)),
                         checkpoint_key=study.checkpoint_key(h),
                         label=f"train {backbone}/{task}")
    scores = objective.score(torch.stack([r.best_prompt for r in results]), test, cfg.training.eval_batch_size,
                             study.precision)
    for seed, r in zip(cfg.seeds, results):
        meta = study.meta(h, seed=seed, backbone=backbone, task=task, step=r.best_step, role="task",
                          dev_score=r.best_dev)
        save_prompt(study.path(layout.task_prompt(backbone, task, seed)), r.best_prompt, meta)
        save_prompt(study.path(layout.task_prompt(backbone, task, seed, early=True)), r.early_prompt,
                    {**meta, "step": cfg.training.early_step, "early": True})
    runs_df = pd.DataFrame({"backbone": backbone, "task": task, "seed": cfg.seeds, "score": scores,
                            "best_dev": [r.best_dev for r in results], "best_step": [r.best_step for r in results],
                            "last_step": [r.last_step for r in results]})
    meta = study.meta(h, seed=cfg.seeds, backbone=backbone, task=task)
    write_table(runs_df, study.path(layout.train_runs(backbone, task)), meta)
    write_table(curves_frame(backbone, task, "baseline", results, [""] * len(results), cfg.seeds),
                study.path(layout.train_curves(backbone, task)), meta)
    study.path(layout.checkpoint("train", backbone, task)).unlink(missing_ok=True)
    print(f"[train] {backbone}/{task}: test " + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(cfg.seeds, scores)),
          flush=True)


def _import_task_prompt(study: Study, backbone: str, task: str, adapter: str) -> None:
    """A source task's prompt taken from a PEFT adapter instead of trained (PromptTuning: an input prompt (L, d),
    PrefixTuning: a deep prompt (L, D), as ``prompt.kind`` says): the same prompt for every seed (it has one),
    scored on the task's dev and test splits so its rows look like a trained task's (best_step 0, one curve
    point)."""
    from promptgrid.config import ConfigError
    from promptgrid.models.peft_io import PEFT_TYPES, adapter_prompt_kind, resolve_adapter
    from promptgrid.models.peft_io import import_peft as load

    cfg = study.cfg
    key, kind = f"tasks.{task}.peft_adapters.{backbone}", cfg.prompt.kind
    bb = study.backbone(backbone)
    folder = resolve_adapter(adapter, cfg.cache_path / "hub")
    held = adapter_prompt_kind(folder)
    if held != kind:
        peft_type = {k: t for t, k in PEFT_TYPES.items()}
        raise ConfigError(key, f"adapter {adapter} is a PEFT {peft_type[held]} adapter, which holds {held} prompts, "
                               f"but the study's prompt.kind is {kind!r}, whose prompts come from "
                               f"{peft_type[kind]} adapters")
    prompt, adapter_meta = load(folder, expect_dim=study.prompt_width(backbone), kind=kind,
                                n_layers=bb.prefix_geometry.n_layers if kind == "deep" else None)
    if prompt.shape[0] != cfg.prompt.length:
        raise ConfigError(key, f"adapter {adapter} has {prompt.shape[0]} virtual "
                         f"tokens, the study's prompt.length is {cfg.prompt.length}; transfer banks need one length")
    objective = study.objective(backbone, task)
    dev, test = (study.encoded(backbone, task, s) for s in ("dev", "test"))
    dev_score = objective.score(prompt[None], dev, cfg.training.eval_batch_size, study.precision)[0]
    test_score = objective.score(prompt[None], test, cfg.training.eval_batch_size, study.precision)[0]
    h = study.stage_hash("train", task=task, backbone=backbone)
    for seed in cfg.seeds:
        meta = study.meta(h, seed=seed, backbone=backbone, task=task, step=0, role="task", dev_score=dev_score,
                          imported_from=adapter, adapter=json.dumps(adapter_meta, default=str))
        save_prompt(study.path(layout.task_prompt(backbone, task, seed)), prompt, meta)
        save_prompt(study.path(layout.task_prompt(backbone, task, seed, early=True)), prompt, {**meta, "early": True})
    n = len(cfg.seeds)
    runs_df = pd.DataFrame({"backbone": backbone, "task": task, "seed": cfg.seeds, "score": [test_score] * n,
                            "best_dev": [dev_score] * n, "best_step": [0] * n, "last_step": [0] * n})
    curves = pd.DataFrame({"backbone": backbone, "task": task, "source": "", "method": "baseline", "seed": cfg.seeds,
                           "step": [0] * n, "dev_score": [dev_score] * n, "train_loss": [float("nan")] * n})
    meta = study.meta(h, seed=cfg.seeds, backbone=backbone, task=task, imported_from=adapter)
    write_table(runs_df, study.path(layout.train_runs(backbone, task)), meta)
    write_table(curves, study.path(layout.train_curves(backbone, task)), meta)
    print(f"[train] {backbone}/{task}: imported from PEFT adapter {adapter}; dev {dev_score:.1f}, "
          f"test {test_score:.1f}", flush=True)
