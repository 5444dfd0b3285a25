"""Pipeline verbs of Su et al.'s cross-model transfer: project backbone A's prompts into backbone B.

For a study with a ``cross_model`` section (source backbone A, target backbone B, held-out tasks):

- :func:`cross_model` (one job per projector x objective) trains a projector on the prompts of every
  trained task that is not held out (A and B prompts, all seeds), then, for each held-out task and
  seed, scores ``g(P_a)`` on B's test split unchanged (mode ``zeroshot``) and as the initial prompt of
  a prompt-tuning run on B with the study's training config (mode ``init``). Both are compared with
  B's own prompt of that task and seed (``parts/<B>/train/<task>.runs.parquet``): gain = score - baseline.
  The init run uses the same data seed as B's baseline run, so the two differ only in their
  initial prompt (see :mod:`promptgrid.engine.training`).
- :func:`cross_model_table` gathers the parts into ``tables/cross_model.parquet``;
- :func:`cross_model_figure` draws ``figures/cross_model.png/.pdf``.

Paths live here (not in :mod:`promptgrid.storage.layout`) so ``workflow/rules/crossmodel.smk`` and the verbs
share them. Projectors are seeded with the study's first seed: one projector per (projector,
objective) is trained from all seeds' prompts, and its init/zero-shot runs are per seed.
"""
from __future__ import annotations

import json
import time

import pandas as pd
import torch

from promptgrid.figures.cross_model import COLUMNS
from promptgrid.pipeline.checks import check_cross_model, projector_tasks
from promptgrid.pipeline.study import Study
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt, read_table, save_prompt, write_table

CURVE_COLUMNS = ["backbone_a", "backbone_b", "projector", "objective", "task", "seed", "step", "dev_score",
                 "train_loss"]


def job_hash(study: Study, projector: str, objective: str) -> str:
    return study.stage_hash("cross_model") + f"-{projector}-{objective}"


# ---------------------------------------------------------------- verbs
def _prompts(study: Study, backbone: str, tasks, seeds) -> torch.Tensor:
    """Task prompts of ``backbone`` stacked task-major: (len(tasks) * len(seeds), L, d).

    Read straight from the files, so backbone A never has to be loaded; widths must agree.
    """
    out = []
    for t in tasks:
        for s in seeds:
            p, _ = load_prompt(study.path(layout.task_prompt(backbone, t, s)), expect_length=study.cfg.prompt.length)
            if out and p.shape != out[0].shape:
                raise ValueError(f"prompt {study.path(layout.task_prompt(backbone, t, s))} has shape "
                                 f"{tuple(p.shape)}, other {backbone} prompts {tuple(out[0].shape)}")
            out.append(p)
    return torch.stack(out)


def _baseline_scores(study: Study, backbone: str, task: str) -> dict:
    path = study.path(layout.train_runs(backbone, task))
    df = read_table(path)
    scores = dict(zip(df["seed"].astype(int), df["score"].astype(float)))
    missing = [s for s in study.cfg.seeds if s not in scores]
    if missing:
        raise ValueError(f"{path} has no baseline run for seed(s) {missing}")
    return scores


def _out_scale(bb) -> float:
    """Typical per-row standard deviation of B's input embeddings (initial LayerNorm gain of the MLP projector)."""
    with torch.no_grad():
        return float(bb.embed_layer.weight.float().std(dim=1).mean())


def cross_model(study: Study, projector: str, objective: str) -> None:
    """Train one projector (``projector`` x ``objective``) and evaluate it on every held-out task."""
    from safetensors.torch import save_file

    from promptgrid.engine.projector import ProjectionTask, make_projector, project, train_distance, train_task
    from promptgrid.engine.training import RunSpec, train_runs
    from promptgrid.storage.files import atomic_path

    cfg = study.cfg
    check_cross_model(cfg, required=True)
    cm = cfg.cross_model
    if projector not in cm.projectors:
        raise ValueError(f"projector {projector!r} is not in cross_model.projectors {cm.projectors}")
    if objective not in cm.objectives:
        raise ValueError(f"objective {objective!r} is not in cross_model.objectives {cm.objectives}")
    a, b = cm.source_backbone, cm.target_backbone
    seeds, L = list(cfg.seeds), cfg.prompt.length
    train_tasks = projector_tasks(cfg)
    h = job_hash(study, projector, objective)
    label = f"cross-model {a}->{b} {projector}/{objective}"
    t0 = time.time()

    bb = study.backbone(b)
    prompts_a = _prompts(study, a, train_tasks, seeds)  # (T*S, L, d_a)
    d_a, d_b = prompts_a.shape[-1], bb.embed_dim
    g = make_projector(projector, L, d_a, d_b, hidden=cm.hidden, seed=seeds[0], out_scale=_out_scale(bb))
    if objective == "distance":
        prompts_b = _prompts(study, b, train_tasks, seeds)
        if prompts_b.shape[-1] != d_b:
            raise ValueError(f"{b} prompts are {prompts_b.shape[-1]} wide; backbone {b} embeds in {d_b}")
        losses = train_distance(g, prompts_a, prompts_b, cm.steps, cm.lr, seeds[0], label=label)
    else:
        tasks = {t: ProjectionTask(study.head(b, t), study.encoded(b, t, "train")) for t in train_tasks}
        by_task = {t: prompts_a[i * len(seeds):(i + 1) * len(seeds)] for i, t in enumerate(train_tasks)}
        losses = train_task(g, bb, tasks, by_task, cm.task_steps or cm.steps, cm.lr, seeds[0], batch_size=cfg.training.batch_size,
                            precision=study.precision, label=label)
    t_fit = time.time() - t0
    with atomic_path(study.path(layout.projector_file(cfg, projector, objective))) as tmp:
        save_file({k: v.detach().contiguous() for k, v in g.state_dict().items()}, str(tmp),
                  metadata={"projector": projector, "objective": objective, "source_backbone": a,
                            "target_backbone": b, "train_tasks": json.dumps(train_tasks), "seeds": json.dumps(seeds),
                            "first_loss": f"{losses[0]:.6g}", "last_loss": f"{losses[-1]:.6g}", "config_hash": h})

    rows, curves = [], []
    for task in cm.held_out:
        task_objective = study.objective(b, task)
        tr, dev, test = (study.encoded(b, task, s) for s in ("train", "dev", "test"))
        baseline = _baseline_scores(study, b, task)
        projected = project(g, _prompts(study, a, [task], seeds))  # (S, L, d_b)
        zs = task_objective.score(projected, test, cfg.training.eval_batch_size, study.precision)
        runs = [RunSpec(f"seed{s}", s, projected[k]) for k, s in enumerate(seeds)]
        results = train_runs(bb, task_objective, tr, dev, runs, study.training,
                             checkpoint=study.path(layout.checkpoint(f"crossmodel_{projector}_{objective}", b, task)),
                             checkpoint_key=study.checkpoint_key(h), label=f"{label} init ->{task}")
        tuned = task_objective.score(torch.stack([r.best_prompt for r in results]), test,
                                     cfg.training.eval_batch_size, study.precision)
        for k, s in enumerate(seeds):
            meta = study.meta(h, seed=s, backbone=b, task=task, source_backbone=a, projector=projector,
                              objective=objective)
            save_prompt(study.path(layout.projected_prompt(cfg, projector, objective, "zeroshot", task, s)), projected[k],
                        {**meta, "mode": "zeroshot"})
            save_prompt(study.path(layout.projected_prompt(cfg, projector, objective, "init", task, s)),
                        results[k].best_prompt, {**meta, "mode": "init", "step": results[k].best_step})
            for mode, score in (("zeroshot", zs[k]), ("init", tuned[k])):
                rows.append({"backbone_a": a, "backbone_b": b, "projector": projector, "objective": objective,
                             "task": task, "seed": s, "mode": mode, "score": score, "baseline_score": baseline[s],
                             "gain": score - baseline[s]})
            curves += [{"backbone_a": a, "backbone_b": b, "projector": projector, "objective": objective,
                        "task": task, "seed": s, **point} for point in results[k].curve]
        study.path(layout.checkpoint(f"crossmodel_{projector}_{objective}", b, task)).unlink(missing_ok=True)
        print(f"[cross-model] {projector}/{objective} {a}->{b} {task}: zero-shot "
              + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(seeds, zs)) + "; init "
              + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(seeds, tuned)) + "; baseline "
              + ", ".join(f"seed{s}={baseline[s]:.1f}" for s in seeds), flush=True)
    meta = study.meta(h, seed=seeds, backbone=b, source_backbone=a, projector=projector, objective=objective,
                      projector_train_tasks=train_tasks, projector_first_loss=losses[0],
                      projector_last_loss=losses[-1], projector_fit_seconds=round(t_fit, 1))
    write_table(pd.DataFrame(rows, columns=COLUMNS), study.path(layout.cross_part(cfg, projector, objective)), meta)
    write_table(pd.DataFrame(curves, columns=CURVE_COLUMNS)[CURVE_COLUMNS],
                study.path(layout.cross_curves(cfg, projector, objective)), meta)
    print(f"[cross-model] {projector}/{objective}: projector loss {losses[0]:.4g} -> {losses[-1]:.4g} in "
          f"{t_fit:.1f}s; {len(rows)} rows in {time.time() - t0:.1f}s", flush=True)


def cross_model_table(study: Study) -> pd.DataFrame:
    """Gather every (projector, objective) part into tables/cross_model.parquet."""
    cfg = study.cfg
    check_cross_model(cfg, required=True)
    cm = cfg.cross_model
    frames = [read_table(study.path(layout.cross_part(cfg, p, o))) for p in cm.projectors for o in cm.objectives]
    df = pd.concat(frames, ignore_index=True)[COLUMNS]
    df = df.sort_values(["projector", "objective", "task", "mode", "seed"], kind="stable", ignore_index=True)
    h = study.stage_hash("cross_model")
    write_table(df, study.path(layout.table(layout.CROSS_TABLE)), study.meta(h, seed=cfg.seeds, source_backbone=cm.source_backbone,
                                                         target_backbone=cm.target_backbone))
    print(f"[cross-model-table] {len(df)} rows", flush=True)
    return df


def cross_model_figure(study: Study) -> None:
    """The cross-model gain bars (:mod:`promptgrid.figures.cross_model`) as PNG and PDF."""
    from promptgrid.figures.cross_model import cross_model_bars
    from promptgrid.figures.style import save_figure

    check_cross_model(study.cfg, required=True)
    fig = cross_model_bars(read_table(study.path(layout.table(layout.CROSS_TABLE))))
    stem = study.path(layout.cross_figure_stem())
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    print(f"[figure] {stem}.png/.pdf", flush=True)
