"""Su et al.'s cross-model transfer: project backbone A's prompts into backbone B.

For a study with a ``cross_model`` section (source backbone A, target backbone B, held-out tasks):

- :func:`project` (the ``project`` verb, one job per registered projector x fit: rule ``cross_model``) fits a
  projector (:data:`promptgrid.registry.PROJECTORS`) on the prompts of every trained task that is not held
  out (A and B prompts, all seeds), then, for each held-out task and seed, scores ``g(P_a)`` on B's test
  split unchanged (mode ``zeroshot``) and as the initial prompt of a prompt-tuning run on B with the
  study's training config (mode ``init``). Both are compared with B's own prompt of that task and seed
  (``parts/<B>/train/<task>.runs.parquet``): gain = score - baseline. The init run uses the same data seed
  as B's baseline run, so the two differ only in their initial prompt (see :mod:`promptgrid.engine.training`).
- :func:`gather` (called by the ``collect`` verb) gathers the parts into ``tables/cross_model.parquet``,
  which the figure kind ``cross_model`` (:mod:`promptgrid.figures.cross_model`) draws.

Projectors are seeded with the study's first seed: one projector per (projector, fit) is fitted on all seeds'
prompts, and its init/zero-shot runs are per seed. ``cross_model.recipe`` picks how both fits optimise
(:data:`promptgrid.engine.projection.RECIPES`): ``quick`` (Adam at ``lr``; ``steps`` full-batch distance steps,
``task_steps`` task steps at ``training.batch_size``) or ``su`` (Su et al.'s AdamW at 5e-3 in batches of 16 for
``epochs`` passes). Registering and gathering import no torch.
"""
from __future__ import annotations

import json
import time

import pandas as pd

from promptgrid.errors import InputError
from promptgrid.figures.cross_model import COLUMNS
from promptgrid.pipeline.checks import check_cross_model, projector_tasks
from promptgrid.pipeline.context import Study
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt, read_table, save_prompt, write_table

CURVE_COLUMNS = ["backbone_a", "backbone_b", "projector", "fit", "task", "seed", "step", "dev_score", "train_loss"]


def job_hash(study: Study, projector: str, fit: str) -> str:
    return study.stage_hash("cross_model") + f"-{projector}-{fit}"


# ---------------------------------------------------------------- verbs
def _prompts(study: Study, backbone: str, tasks, seeds):
    """Task prompts of ``backbone`` stacked task-major: a tensor (len(tasks) * len(seeds), L, d).

    Read straight from the files, so backbone A never has to be loaded; widths must agree.
    """
    import torch

    out = []
    for t in tasks:
        for s in seeds:
            p, _ = load_prompt(study.path(layout.task_prompt(backbone, t, s)), expect_length=study.cfg.prompt.length)
            if out and p.shape != out[0].shape:
                raise InputError(f"prompt {study.path(layout.task_prompt(backbone, t, s))} has shape "
                                 f"{tuple(p.shape)}, other {backbone} prompts {tuple(out[0].shape)}")
            out.append(p)
    return torch.stack(out)


def _baseline_scores(study: Study, backbone: str, task: str) -> dict:
    path = study.path(layout.train_runs(backbone, task))
    df = read_table(path)
    scores = dict(zip(df["seed"].astype(int), df["score"].astype(float)))
    missing = [s for s in study.cfg.seeds if s not in scores]
    if missing:
        raise InputError(f"{path} has no baseline run for seed(s) {missing}")
    return scores


def _out_scale(bb) -> float:
    """Typical per-row standard deviation of B's input embeddings (the ``out_scale`` a projector's build gets)."""
    import torch

    with torch.no_grad():
        return float(bb.embed_layer.weight.float().std(dim=1).mean())


def project(study: Study, projector: str, fit: str) -> None:
    """Fit one registered projector by one fit (``distance`` or ``task``) and evaluate it on every held-out task."""
    import torch
    from safetensors.torch import save_file

    from promptgrid.engine.projection import (
        RECIPES,
        ProjectionTask,
        distance_epoch_steps,
        make_projector,
        task_epoch_steps,
        train_distance,
        train_task,
    )
    from promptgrid.engine.projection import project as apply_projector
    from promptgrid.engine.training import RunSpec, train_runs
    from promptgrid.storage.files import atomic_path

    cfg = study.cfg
    check_cross_model(cfg, required=True)
    cm = cfg.cross_model
    if projector not in cm.projectors:
        raise InputError(f"projector {projector!r} is not in cross_model.projectors {cm.projectors}")
    if fit not in cm.fits:
        raise InputError(f"fit {fit!r} is not in cross_model.fits {cm.fits}")
    a, b = cm.source_backbone, cm.target_backbone
    seeds, L = list(cfg.seeds), cfg.prompt.length
    train_tasks = projector_tasks(cfg)
    h = job_hash(study, projector, fit)
    label = f"cross-model {a}->{b} {projector}/{fit}"
    t0 = time.time()

    bb = study.backbone(b)
    prompts_a = _prompts(study, a, train_tasks, seeds)  # (T*S, L, d_a)
    d_a, d_b = prompts_a.shape[-1], bb.embed_dim
    g = make_projector(projector, L, d_a, d_b, hidden=cm.hidden, seed=seeds[0], out_scale=_out_scale(bb))
    recipe = RECIPES[cm.recipe]
    if fit == "distance":
        prompts_b = _prompts(study, b, train_tasks, seeds)
        if prompts_b.shape[-1] != d_b:
            raise InputError(f"{b} prompts are {prompts_b.shape[-1]} wide; backbone {b} embeds in {d_b}")
        steps, bs = cm.steps, None  # quick: full batch
        if recipe.batch_size is not None:  # su: epochs of the recipe's batches over the prompt pairs
            steps, bs = cm.epochs * distance_epoch_steps(len(prompts_a), recipe.batch_size), recipe.batch_size
        losses = train_distance(g, prompts_a, prompts_b, steps, cm.lr, seeds[0], batch_size=bs, label=label,
                                recipe=recipe)
    else:
        tasks = {t: ProjectionTask(study.head(b, t), study.encoded(b, t, "train")) for t in train_tasks}
        by_task = {t: prompts_a[i * len(seeds):(i + 1) * len(seeds)] for i, t in enumerate(train_tasks)}
        steps, bs = cm.task_steps or cm.steps, cfg.training.batch_size
        if recipe.batch_size is not None:
            bs = recipe.batch_size
            steps = cm.epochs * task_epoch_steps({t: len(tasks[t].data) for t in train_tasks},
                                                 {t: len(seeds) for t in train_tasks}, bs)
        losses = train_task(g, bb, tasks, by_task, steps, cm.lr, seeds[0], batch_size=bs,
                            precision=study.precision, label=label, recipe=recipe)
    t_fit = time.time() - t0
    with atomic_path(study.path(layout.projector_file(cfg, projector, fit))) as tmp:
        save_file({k: v.detach().contiguous() for k, v in g.state_dict().items()}, str(tmp),
                  metadata={"projector": projector, "fit": fit, "source_backbone": a,
                            "target_backbone": b, "train_tasks": json.dumps(train_tasks), "seeds": json.dumps(seeds),
                            "recipe": cm.recipe, "steps": str(len(losses)),
                            "first_loss": f"{losses[0]:.6g}", "last_loss": f"{losses[-1]:.6g}", "config_hash": h})

    rows, curves = [], []
    for task in cm.held_out:
        checkpoint = study.path(layout.checkpoint(f"crossmodel_{projector}_{fit}", b, task))
        task_objective = study.objective(b, task)
        tr, dev, test = (study.encoded(b, task, s) for s in ("train", "dev", "test"))
        baseline = _baseline_scores(study, b, task)
        projected = apply_projector(g, _prompts(study, a, [task], seeds))  # (S, L, d_b)
        zs = task_objective.score(projected, test, cfg.training.eval_batch_size, study.precision)
        runs = [RunSpec(f"seed{s}", s, projected[k]) for k, s in enumerate(seeds)]
        results = train_runs(bb, task_objective, tr, dev, runs, study.training,
                             checkpoint=checkpoint,
                             checkpoint_key=study.checkpoint_key(h), label=f"{label} init ->{task}")
        tuned = task_objective.score(torch.stack([r.best_prompt for r in results]), test,
                                     cfg.training.eval_batch_size, study.precision)
        ids = {"backbone_a": a, "backbone_b": b, "projector": projector, "fit": fit, "task": task}
        for k, s in enumerate(seeds):
            meta = study.meta(h, seed=s, backbone=b, task=task, source_backbone=a, projector=projector, fit=fit)
            save_prompt(study.path(layout.projected_prompt(cfg, projector, fit, "zeroshot", task, s)), projected[k],
                        {**meta, "mode": "zeroshot"})
            save_prompt(study.path(layout.projected_prompt(cfg, projector, fit, "init", task, s)),
                        results[k].best_prompt, {**meta, "mode": "init", "step": results[k].best_step})
            for mode, score in (("zeroshot", zs[k]), ("init", tuned[k])):
                rows.append({**ids, "seed": s, "mode": mode, "score": score, "baseline_score": baseline[s],
                             "gain": score - baseline[s]})
            curves += [{**ids, "seed": s, **point} for point in results[k].curve]
        checkpoint.unlink(missing_ok=True)
        print(f"[project] {projector}/{fit} {a}->{b} {task}: zero-shot "
              + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(seeds, zs)) + "; init "
              + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(seeds, tuned)) + "; baseline "
              + ", ".join(f"seed{s}={baseline[s]:.1f}" for s in seeds), flush=True)
    meta = study.meta(h, seed=seeds, backbone=b, source_backbone=a, projector=projector, fit=fit,
                      projector_train_tasks=train_tasks, projector_first_loss=losses[0],
                      projector_last_loss=losses[-1], projector_fit_seconds=round(t_fit, 1),
                      projector_recipe=cm.recipe, projector_steps=len(losses))
    write_table(pd.DataFrame(rows, columns=COLUMNS), study.path(layout.cross_part(cfg, projector, fit)), meta)
    write_table(pd.DataFrame(curves, columns=CURVE_COLUMNS)[CURVE_COLUMNS],
                study.path(layout.cross_curves(cfg, projector, fit)), meta)
    print(f"[project] {projector}/{fit}: projector loss {losses[0]:.4g} -> {losses[-1]:.4g} in "
          f"{t_fit:.1f}s; {len(rows)} rows in {time.time() - t0:.1f}s", flush=True)


def gather(study: Study) -> pd.DataFrame:
    """Every (projector, fit) part into tables/cross_model.parquet (the ``collect`` verb calls it when the study
    has a ``cross_model`` section)."""
    cfg = study.cfg
    check_cross_model(cfg, required=True)
    cm = cfg.cross_model
    df = pd.concat([read_table(study.path(p)) for p in layout.cross_parts(cfg)], ignore_index=True)[COLUMNS]
    df = df.sort_values(["projector", "fit", "task", "mode", "seed"], kind="stable", ignore_index=True)
    meta = study.meta(study.stage_hash("cross_model"), seed=cfg.seeds, source_backbone=cm.source_backbone,
                      target_backbone=cm.target_backbone)
    write_table(df, study.path(layout.table(layout.CROSS_TABLE)), meta)
    print(f"[collect] {layout.CROSS_TABLE} {len(df)} rows", flush=True)
    return df
