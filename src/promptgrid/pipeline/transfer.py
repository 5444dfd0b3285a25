"""The transfer verb: every source into one target with one method, in one pass or one prompt bank.

Generic over the method registry (:data:`promptgrid.registry.METHODS`): a trained method hands over the
runs of its bank (``MethodSpec.plan``) and this verb trains, scores and writes them; an evaluating
method (zero-shot) returns its scores (``MethodSpec.evaluate``). Either way the job writes the
method's runs part (one row per run) and, for trained methods, learning curves and prompts. A trained
method's runs table records the learning rate its runs trained with (``lr``: ``RunPlan.lr`` or ``training.lr``).
"""
from __future__ import annotations

import dataclasses
import time

import pandas as pd

from promptgrid.errors import InputError
from promptgrid.pipeline.context import Study
from promptgrid.pipeline.train import curves_frame
from promptgrid.registry import METHODS
from promptgrid.storage import layout
from promptgrid.storage.files import save_prompt, write_table

RUN_COLUMNS = ["backbone", "source", "target", "method", "seed", "score"]


def transfer(study: Study, backbone: str, target: str, method: str) -> None:
    """Run ``method`` from every source into ``target`` and write its runs part."""
    spec = METHODS.require(method)
    if method not in study.cfg.transfer.methods:
        raise InputError(f"transfer method {method!r} is not in this study's transfer.methods "
                         f"{study.cfg.transfer.methods}")
    (_trained if spec.trains else _evaluated)(study, spec, backbone, target)


def _evaluated(study: Study, spec, backbone: str, target: str) -> None:
    t0 = time.time()
    scores = spec.evaluate(study, backbone, target)
    df = pd.DataFrame([{"backbone": backbone, "source": s, "target": target, "method": spec.name, "seed": seed,
                        "score": v} for (s, seed), v in scores.items()], columns=RUN_COLUMNS)
    h = study.stage_hash("transfer", task=target, backbone=backbone, method=spec.name)
    write_table(df, study.path(layout.method_runs(backbone, spec.name, target)),
                study.meta(h, seed=study.cfg.seeds, backbone=backbone))
    print(f"[{spec.name}] {backbone}/->{target}: {len(df)} prompts scored in {time.time() - t0:.1f}s", flush=True)


def _trained(study: Study, spec, backbone: str, target: str) -> None:
    import torch

    from promptgrid.engine.training import train_runs

    cfg, method = study.cfg, spec.name
    objective = study.objective(backbone, target)
    tr, dev, test = (study.encoded(backbone, target, s) for s in ("train", "dev", "test"))
    plan = spec.plan(study, backbone, target)
    # a method may train at its own learning rate (its config section holds it, so it is in this stage's hash)
    training = study.training if plan.lr is None else dataclasses.replace(study.training, lr=plan.lr)
    h = study.stage_hash("transfer", task=target, backbone=backbone, method=method)
    ckpt = study.path(layout.checkpoint(method, backbone, target))
    results = train_runs(study.backbone(backbone), objective, tr, dev, plan.runs, training, kd=plan.kd,
                         checkpoint=ckpt, checkpoint_key=study.checkpoint_key(h), label=f"{method} {backbone}/->{target}")
    scores = objective.score(torch.stack([r.best_prompt for r in results]), test, cfg.training.eval_batch_size,
                             study.precision)
    sources, seeds = [p[0] for p in plan.pairs], [p[1] for p in plan.pairs]
    for src, seed, r in zip(sources, seeds, results):
        save_prompt(study.path(layout.transfer_prompt(backbone, method, target, src, seed)), r.best_prompt,
                    study.meta(h, seed=seed, backbone=backbone, task=target, source=src, method=method,
                               step=r.best_step))
    df = pd.DataFrame({"backbone": backbone, "source": sources, "target": target, "method": method, "seed": seeds,
                       "score": scores, "best_dev": [r.best_dev for r in results],
                       "best_step": [r.best_step for r in results], "lr": training.lr, **plan.extra})
    meta = study.meta(h, seed=cfg.seeds, backbone=backbone)
    write_table(df, study.path(layout.method_runs(backbone, method, target)), meta)
    write_table(curves_frame(backbone, target, method, results, sources, seeds),
                study.path(layout.method_curves(backbone, method, target)), meta)
    ckpt.unlink(missing_ok=True)
    print(f"[{method}] {backbone}/->{target}: mean test {sum(scores) / len(scores):.2f} over {len(scores)} runs",
          flush=True)
