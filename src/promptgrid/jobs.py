"""One function per pipeline verb: read the study's inputs, call the library, write outputs atomically.

Each job loads its backbone once and handles every run it owns in one process (all seeds of a task,
all sources of a target), which is what keeps per-job overhead small.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from promptgrid import layout
from promptgrid.config import PROMPT_METRICS, StudyConfig, load_config
from promptgrid.io import load_prompt, provenance, read_table, save_prompt, write_table


class Study:
    """A loaded study config plus cached backbones, splits and label heads."""

    def __init__(self, cfg: StudyConfig, config_path: Optional[Path] = None):
        self.cfg = cfg
        self.root = cfg.study_dir
        self.config_path = config_path
        self._backbones: dict = {}
        self._encoded: dict = {}
        self._heads: dict = {}

    @classmethod
    def from_file(cls, path) -> "Study":
        return cls(load_config(path), Path(path))

    # -- paths and metadata
    def path(self, rel: str) -> Path:
        return self.root / rel

    def config_hash(self, *sections, task=None, backbone=None) -> str:
        return self.cfg.section_hash(*sections, task=task, backbone=backbone)

    def meta(self, config_hash: str, seed=None, backbone: Optional[str] = None, **extra) -> dict:
        revision = self.backbone(backbone).revision if backbone and backbone in self._backbones else None
        return provenance(config_hash, seed=seed, backbone_revision=revision, config=self.cfg.to_dict(),
                          study=self.cfg.study, **extra)

    # -- cached resources
    def backbone(self, name: str):
        if name not in self.cfg.backbones:
            raise KeyError(f"unknown backbone {name!r}; the config defines {sorted(self.cfg.backbones)}")
        if name not in self._backbones:
            from promptgrid.backbones import load_backbone

            torch.manual_seed(0)
            t0 = time.time()
            self._backbones[name] = load_backbone(name, self.cfg.backbones[name], self.cfg.cache_path,
                                                  fast_matmul=self.cfg.training.fast_matmul)
            print(f"[load] backbone {name} in {time.time() - t0:.1f}s", flush=True)
        return self._backbones[name]

    def split(self, task: str, split: str) -> pd.DataFrame:
        from promptgrid.tasks import load_split

        return load_split(self.path(layout.data(task, split)), self.cfg.tasks[task])

    def encoded(self, backbone: str, task: str, split: str, limit: Optional[int] = None):
        from promptgrid.training import encode_split

        key = (backbone, task, split, limit)
        if key not in self._encoded:
            df = self.split(task, split)
            if limit is not None:
                df = df.iloc[:limit]
            self._encoded[key] = encode_split(self.backbone(backbone), df["text"], df["label"])
        return self._encoded[key]

    def head(self, backbone: str, task: str):
        key = (backbone, task)
        if key not in self._heads:
            self._heads[key] = self.backbone(backbone).task_head(self.cfg.tasks[task].label_texts)
        return self._heads[key]

    def task_prompt(self, backbone: str, task: str, seed: int, early: bool = False) -> torch.Tensor:
        bb = self.backbone(backbone)
        prompt, _ = load_prompt(self.path(layout.task_prompt(backbone, task, seed, early)),
                                expect_dim=bb.embed_dim, expect_length=self.cfg.prompt.length)
        return prompt

    def fresh_init(self, backbone: str, task: str, seed: int) -> torch.Tensor:
        from promptgrid.prompt import init_prompt

        bb = self.backbone(backbone)
        from_file = None
        if self.cfg.prompt.init == "file":
            from_file, _ = load_prompt(self.cfg.prompt.init_file, expect_dim=bb.embed_dim)
        head = self.head(backbone, task)
        label_ids = head.label_token_ids or [bb.tokenizer(t, add_special_tokens=False)["input_ids"]
                                             for t in head.label_texts]
        return init_prompt(self.cfg.prompt, bb.embed_layer.weight, seed, label_ids, from_file)


# ---------------------------------------------------------------- verbs
def prepare(study: Study, task: str) -> None:
    from promptgrid.tasks import prepare_task, write_splits

    cfg = study.cfg
    if task not in cfg.tasks:
        raise KeyError(f"task {task!r} is not defined in the config")
    t0 = time.time()
    splits = prepare_task(cfg.tasks[task], task, cfg.cache_path)
    h = study.config_hash(task=task)
    write_splits(splits, study.path(f"data/{task}"), study.meta(h, task=task))
    print(f"[prepare] {task}: " + ", ".join(f"{k}={len(v)}" for k, v in splits.items())
          + f" in {time.time() - t0:.1f}s", flush=True)


def _runs_frame(results, scores, **cols) -> pd.DataFrame:
    rows = []
    for r, s in zip(results, scores):
        rows.append({**cols(r) if callable(cols) else cols, "run_id": r.run_id, "score": s,
                     "best_dev": r.best_dev, "best_step": r.best_step, "last_step": r.last_step})
    return pd.DataFrame(rows)


def _curves_frame(backbone, task, method, results, sources, seeds) -> pd.DataFrame:
    rows = []
    for r, src, seed in zip(results, sources, seeds):
        for point in r.curve:
            rows.append({"backbone": backbone, "task": task, "source": src, "method": method, "seed": seed,
                         "step": point["step"], "dev_score": point["dev_score"], "train_loss": point["train_loss"]})
    return pd.DataFrame(rows, columns=["backbone", "task", "source", "method", "seed", "step", "dev_score",
                                       "train_loss"])


def train(study: Study, backbone: str, task: str) -> None:
    """Train the task's own prompt (source prompt / target baseline) for every seed, in one bank."""
    from promptgrid.training import RunSpec, score_bank, train_runs

    cfg = study.cfg
    bb = study.backbone(backbone)
    head = study.head(backbone, task)
    tr, dev, test = (study.encoded(backbone, task, s) for s in ("train", "dev", "test"))
    runs = [RunSpec(f"seed{seed}", seed, study.fresh_init(backbone, task, seed)) for seed in cfg.seeds]
    h = study.config_hash("prompt", "training", "seeds", task=task, backbone=backbone)
    results = train_runs(bb, head, tr, dev, runs, cfg.training, cfg.tasks[task].metric,
                         checkpoint=study.path(layout.checkpoint("train", backbone, task)), checkpoint_key=h,
                         label=f"train {backbone}/{task}")
    scores = score_bank(bb, head, torch.stack([r.best_prompt for r in results]), test, cfg.tasks[task].metric,
                        cfg.training.eval_batch_size)
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
    write_table(_curves_frame(backbone, task, "baseline", results, [""] * len(results), cfg.seeds),
                study.path(layout.train_curves(backbone, task)), meta)
    study.path(layout.checkpoint("train", backbone, task)).unlink(missing_ok=True)
    print(f"[train] {backbone}/{task}: test " + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(cfg.seeds, scores)),
          flush=True)


def _source_prompts(study: Study, backbone: str, exclude=(), early=False) -> dict:
    return {(s, seed): study.task_prompt(backbone, s, seed, early) for s in study.cfg.sources if s not in exclude
            for seed in study.cfg.seeds}


def zeroshot(study: Study, backbone: str, target: str) -> None:
    """Every source prompt (every seed) evaluated unchanged on the target's test split, in one pass."""
    from promptgrid.training import score_bank
    from promptgrid.transfer import zeroshot_scores

    cfg = study.cfg
    bb = study.backbone(backbone)
    head = study.head(backbone, target)
    test = study.encoded(backbone, target, "test")
    prompts = _source_prompts(study, backbone)
    t0 = time.time()
    scores = zeroshot_scores(lambda p: score_bank(bb, head, p, test, cfg.tasks[target].metric,
                                                  cfg.training.eval_batch_size), prompts)
    df = pd.DataFrame([{"backbone": backbone, "source": s, "target": target, "method": "zeroshot", "seed": seed,
                        "score": v} for (s, seed), v in scores.items()])
    h = study.config_hash("prompt", "training", "seeds", "sources", task=target, backbone=backbone)
    write_table(df, study.path(layout.zeroshot_part(backbone, target)), study.meta(h, seed=cfg.seeds, backbone=backbone))
    print(f"[zeroshot] {backbone}/{target}: {len(prompts)} prompts x {len(test)} examples in "
          f"{time.time() - t0:.1f}s", flush=True)


def _similarities_for(study: Study, backbone: str, target: str, metric: str) -> dict:
    """{source: value} of ``metric`` for pairs into ``target`` from the metric parts."""
    if metric == "panda":
        df = read_table(study.path(layout.panda_similarity(backbone, target)))
    elif metric.startswith("on"):
        df = read_table(study.path(layout.on_similarity(backbone)))
    else:
        df = read_table(study.path(layout.prompt_similarity(backbone)))
    df = df[(df["target"] == target) & (df["metric"] == metric)]
    return dict(zip(df["source"], df["value"]))


def transfer(study: Study, backbone: str, target: str, method: str) -> None:
    """Train every transfer run of ``method`` into ``target`` in one prompt bank."""
    from promptgrid.training import score_bank, train_runs
    from promptgrid.transfer import panda_runs, spot_topk_init, vanilla_runs
    from promptgrid.training import RunSpec

    cfg = study.cfg
    bb = study.backbone(backbone)
    head = study.head(backbone, target)
    tr, dev, test = (study.encoded(backbone, target, s) for s in ("train", "dev", "test"))
    kd = None
    extra = {}
    if method == "vanilla":
        prompts = _source_prompts(study, backbone)
        runs = vanilla_runs(prompts)
        pairs = list(prompts)
    elif method == "panda":
        teachers = {}
        for s in cfg.sources:
            for seed in cfg.seeds:
                teachers[(s, seed)], _ = load_prompt(study.path(layout.transfer_prompt(backbone, "vanilla", target, s, seed)),
                                                     expect_dim=bb.embed_dim)
        sims = _similarities_for(study, backbone, target, cfg.transfer.panda.beta_metric) \
            if cfg.transfer.panda.beta is None else {}
        inits = {seed: study.fresh_init(backbone, target, seed) for seed in cfg.seeds}
        runs = panda_runs(teachers, inits, sims, cfg.transfer.panda)
        pairs = list(teachers)
        kd = cfg.transfer.panda
        extra["beta"] = [r.beta for r in runs]
    elif method == "spot_topk":
        prompts = _source_prompts(study, backbone, exclude=(target,))
        sims = _similarities_for(study, backbone, target, cfg.transfer.spot_topk.metric)
        runs, pairs, mixes = [], [], []
        for seed in cfg.seeds:
            init, mix = spot_topk_init(prompts, sims, seed, cfg.transfer.spot_topk)
            runs.append(RunSpec(f"top{cfg.transfer.spot_topk.k}/seed{seed}", seed, init))
            pairs.append((f"top{cfg.transfer.spot_topk.k}", seed))
            mixes.append(json.dumps(mix))
        extra["mixture"] = mixes
    else:
        raise ValueError(f"unknown trained transfer method {method!r}")
    h = study.config_hash("prompt", "training", "seeds", "sources", "transfer", task=target, backbone=backbone)
    results = train_runs(bb, head, tr, dev, runs, cfg.training, cfg.tasks[target].metric, kd=kd,
                         checkpoint=study.path(layout.checkpoint(method, backbone, target)), checkpoint_key=h,
                         label=f"{method} {backbone}/->{target}")
    scores = score_bank(bb, head, torch.stack([r.best_prompt for r in results]), test, cfg.tasks[target].metric,
                        cfg.training.eval_batch_size)
    for (src, seed), r in zip(pairs, results):
        save_prompt(study.path(layout.transfer_prompt(backbone, method, target, src, seed)), r.best_prompt,
                    study.meta(h, seed=seed, backbone=backbone, task=target, source=src, method=method,
                               step=r.best_step))
    df = pd.DataFrame({"backbone": backbone, "source": [p[0] for p in pairs], "target": target, "method": method,
                       "seed": [p[1] for p in pairs], "score": scores, "best_dev": [r.best_dev for r in results],
                       "best_step": [r.best_step for r in results], **extra})
    meta = study.meta(h, seed=cfg.seeds, backbone=backbone)
    write_table(df, study.path(layout.method_runs(backbone, method, target)), meta)
    write_table(_curves_frame(backbone, target, method, results, [p[0] for p in pairs], [p[1] for p in pairs]),
                study.path(layout.method_curves(backbone, method, target)), meta)
    study.path(layout.checkpoint(method, backbone, target)).unlink(missing_ok=True)
    print(f"[{method}] {backbone}/->{target}: mean test {sum(scores) / len(scores):.2f} over {len(scores)} runs",
          flush=True)
