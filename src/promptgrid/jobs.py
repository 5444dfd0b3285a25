"""One function per pipeline verb: read the study's inputs, call the library, write outputs atomically.

Each job loads its backbone once and handles every run it owns in one process (all seeds of a task,
all sources of a target), which is what keeps per-job overhead small.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

# torch is imported inside the verbs that need it: prepare, collect, correlate and figure jobs then
# start without its ~2 s import (bench/README.md, per-job overhead)
from promptgrid import layout
from promptgrid.config import PROMPT_METRICS, StudyConfig, load_config
from promptgrid.io import (load_prompt, merge_compute, provenance, read_table, read_table_meta, save_prompt,
                           write_table)

if TYPE_CHECKING:
    import torch


class Study:
    """A loaded study config plus cached backbones, splits, label heads and task objectives."""

    def __init__(self, cfg: StudyConfig, config_path: Optional[Path] = None):
        self.cfg = cfg
        self.root = cfg.study_dir
        self.config_path = config_path
        self._backbones: dict = {}
        self._encoded: dict = {}
        self._heads: dict = {}
        self._objectives: dict = {}

    @classmethod
    def from_file(cls, path) -> "Study":
        return cls(load_config(path), Path(path))

    # -- paths and metadata
    def path(self, rel: str) -> Path:
        return self.root / rel

    def config_hash(self, *sections, task=None, backbone=None) -> str:
        return self.cfg.section_hash(*sections, task=task, backbone=backbone)

    def meta(self, config_hash: str, seed=None, backbone: Optional[str] = None, **extra) -> dict:
        """Provenance of an output; a job that ran a model adds how it computed (``compute``)."""
        revision = self.backbone(backbone).revision if backbone and backbone in self._backbones else None
        if self._backbones and "compute" not in extra:
            extra["compute"] = self.compute.record()
        return provenance(config_hash, seed=seed, backbone_revision=revision, config=self.cfg.to_dict(),
                          study=self.cfg.study, **extra)

    # -- how this job computes, resolved on the node that runs it (promptgrid.precision)
    @functools.cached_property
    def compute(self):
        from promptgrid.hardware import cpu_info, cpu_label
        from promptgrid.precision import Compute

        t = self.cfg.training
        compute = Compute.resolve(t.precision, t.attention, "cpu")
        print(f"[compute] precision {compute.precision} (configured {compute.precision_configured}), attention "
              f"{compute.attention}, device {compute.device}; CPU {cpu_label(cpu_info())}", flush=True)
        return compute

    @property
    def precision(self) -> str:
        """The resolved precision, fp32 or bf16, that every model call of this job runs under."""
        return self.compute.precision

    @property
    def training(self):
        """The training settings with the precision resolved: what ``train_runs`` gets."""
        import dataclasses

        return dataclasses.replace(self.cfg.training, precision=self.precision)

    def checkpoint_key(self, config_hash: str) -> str:
        """A checkpoint belongs to its config and to the precision it ran in: a job that resumes on a
        node where ``auto`` resolves otherwise starts over instead of mixing precisions."""
        return f"{config_hash}/{self.precision}"

    # -- cached resources
    def backbone(self, name: str):
        if name not in self.cfg.backbones:
            raise KeyError(f"unknown backbone {name!r}; the config defines {sorted(self.cfg.backbones)}")
        if name not in self._backbones:
            import torch

            from promptgrid.backbones import load_backbone

            torch.manual_seed(0)
            t0 = time.time()
            self._backbones[name] = load_backbone(name, self.cfg.backbones[name], self.cfg.cache_path,
                                                  attention=self.compute.attention)
            print(f"[load] backbone {name} in {time.time() - t0:.1f}s", flush=True)
        return self._backbones[name]

    def split(self, task: str, split: str) -> pd.DataFrame:
        from promptgrid.tasks import load_split

        return load_split(self.path(layout.data(task, split)), self.cfg.tasks[task])

    def encoded(self, backbone: str, task: str, split: str, limit: Optional[int] = None):
        """A split encoded by the task's objective (classification: an ``EncodedSplit`` of ids and labels)."""
        key = (backbone, task, split, limit)
        if key not in self._encoded:
            df = self.split(task, split)
            if limit is not None:
                df = df.iloc[:limit]
            self._encoded[key] = self.objective(backbone, task).encode(df)
        return self._encoded[key]

    def head(self, backbone: str, task: str):
        """The label head of a classification or regression task (its label words)."""
        kind = self.cfg.tasks[task].kind
        if kind not in ("classification", "regression"):
            raise ValueError(f"task {task!r} is a {kind} task: it has no label words, so no label head")
        key = (backbone, task)
        if key not in self._heads:
            from promptgrid.precision import precision_scope

            bb = self.backbone(backbone)
            with precision_scope(self.precision, bb.device):
                self._heads[key] = bb.task_head(self.cfg.tasks[task].label_texts)
        return self._heads[key]

    def objective(self, backbone: str, task: str):
        """What training optimises and scoring measures for ``task`` on ``backbone`` (:mod:`promptgrid.objectives`)."""
        key = (backbone, task)
        if key not in self._objectives:
            from promptgrid.objectives import make_objective

            tcfg = self.cfg.tasks[task]
            head = self.head(backbone, task) if tcfg.kind in ("classification", "regression") else None
            self._objectives[key] = make_objective(self.backbone(backbone), tcfg, task=task, head=head)
        return self._objectives[key]

    def task_prompt(self, backbone: str, task: str, seed: int, early: bool = False,
                    load_model: bool = True) -> torch.Tensor:
        """A task's prompt (L, d), its width checked against the backbone (``load_model=False``: against
        nothing here; callers that never run the model check the widths agree among themselves)."""
        dim = self.backbone(backbone).embed_dim if load_model else None
        prompt, _ = load_prompt(self.path(layout.task_prompt(backbone, task, seed, early)),
                                expect_dim=dim, expect_length=self.cfg.prompt.length)
        return prompt

    def fresh_init(self, backbone: str, task: str, seed: int) -> torch.Tensor:
        from promptgrid.prompt import init_prompt

        bb = self.backbone(backbone)
        from_file = None
        if self.cfg.prompt.init == "file":
            from_file, _ = load_prompt(self.cfg.prompt.init_file, expect_dim=bb.embed_dim)
        label_ids = None  # tasks without label words (span_qa, ner) start from sampled vocabulary
        if self.cfg.tasks[task].kind in ("classification", "regression"):
            head = self.head(backbone, task)
            label_ids = head.label_token_ids or [bb.tokenizer(t, add_special_tokens=False)["input_ids"]
                                                 for t in head.label_texts]
        return init_prompt(self.cfg.prompt, bb.embed_layer.weight, seed, label_ids, from_file)


def _stack(prompts: list):
    """K prompts (L, d) -> a bank (K, L, d)."""
    import torch

    return torch.stack(prompts)


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
    from promptgrid.training import RunSpec, train_runs

    cfg = study.cfg
    if backbone in cfg.tasks[task].peft_adapters:
        return _import_task_prompt(study, backbone, task, cfg.tasks[task].peft_adapters[backbone])
    bb = study.backbone(backbone)
    objective = study.objective(backbone, task)
    tr, dev, test = (study.encoded(backbone, task, s) for s in ("train", "dev", "test"))
    runs = [RunSpec(f"seed{seed}", seed, study.fresh_init(backbone, task, seed)) for seed in cfg.seeds]
    h = study.config_hash("prompt", "training", "seeds", task=task, backbone=backbone)
    results = train_runs(bb, objective, tr, dev, runs, study.training,
                         checkpoint=study.path(layout.checkpoint("train", backbone, task)),
                         checkpoint_key=study.checkpoint_key(h),
                         label=f"train {backbone}/{task}")
    scores = objective.score(_stack([r.best_prompt for r in results]), test, cfg.training.eval_batch_size,
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
    write_table(_curves_frame(backbone, task, "baseline", results, [""] * len(results), cfg.seeds),
                study.path(layout.train_curves(backbone, task)), meta)
    study.path(layout.checkpoint("train", backbone, task)).unlink(missing_ok=True)
    print(f"[train] {backbone}/{task}: test " + ", ".join(f"seed{s}={v:.1f}" for s, v in zip(cfg.seeds, scores)),
          flush=True)


def _import_task_prompt(study: Study, backbone: str, task: str, adapter: str) -> None:
    """A source task's prompt taken from a PEFT PromptTuning adapter instead of trained: the same prompt
    for every seed (it has one), scored on the task's dev and test splits so its rows look like a trained
    task's (best_step 0, one curve point)."""
    from promptgrid.peft_io import import_peft as load, resolve_adapter

    cfg = study.cfg
    bb = study.backbone(backbone)
    folder = resolve_adapter(adapter, cfg.cache_path / "hub")
    prompt, adapter_meta = load(folder, expect_dim=bb.embed_dim)
    if prompt.shape[0] != cfg.prompt.length:
        raise ValueError(f"tasks.{task}.peft_adapters.{backbone}: adapter {adapter} has {prompt.shape[0]} virtual "
                         f"tokens, the study's prompt.length is {cfg.prompt.length}; transfer banks need one length")
    objective = study.objective(backbone, task)
    dev, test = (study.encoded(backbone, task, s) for s in ("dev", "test"))
    dev_score = objective.score(prompt[None], dev, cfg.training.eval_batch_size, study.precision)[0]
    test_score = objective.score(prompt[None], test, cfg.training.eval_batch_size, study.precision)[0]
    h = study.config_hash("prompt", "training", "seeds", task=task, backbone=backbone)
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


def _source_prompts(study: Study, backbone: str, exclude=(), early=False) -> dict:
    return {(s, seed): study.task_prompt(backbone, s, seed, early) for s in study.cfg.sources if s not in exclude
            for seed in study.cfg.seeds}


def zeroshot(study: Study, backbone: str, target: str) -> None:
    """Every source prompt (every seed) evaluated unchanged on the target's test split, in one pass."""
    from promptgrid.transfer import zeroshot_scores

    cfg = study.cfg
    objective = study.objective(backbone, target)
    test = study.encoded(backbone, target, "test")
    prompts = _source_prompts(study, backbone)
    t0 = time.time()
    scores = zeroshot_scores(lambda p: objective.score(p, test, cfg.training.eval_batch_size, study.precision),
                             prompts)
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
    from promptgrid.training import RunSpec, train_runs
    from promptgrid.transfer import panda_runs, spot_topk_init, vanilla_runs

    cfg = study.cfg
    bb = study.backbone(backbone)
    objective = study.objective(backbone, target)
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
    results = train_runs(bb, objective, tr, dev, runs, study.training, kd=kd,
                         checkpoint=study.path(layout.checkpoint(method, backbone, target)),
                         checkpoint_key=study.checkpoint_key(h),
                         label=f"{method} {backbone}/->{target}")
    scores = objective.score(_stack([r.best_prompt for r in results]), test, cfg.training.eval_batch_size,
                             study.precision)
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


# ---------------------------------------------------------------- similarity metrics
def _similarity_rows(backbone, pairs_values: dict, metric: str) -> list:
    return [{"backbone": backbone, "source": s, "target": t, "metric": metric, "value": st.mean, "std": st.std,
             "n_pairs": st.n} for (s, t), st in pairs_values.items()]


SIMILARITY_COLUMNS = ["backbone", "source", "target", "metric", "value", "std", "n_pairs"]


def prompt_metrics(study: Study, backbone: str) -> None:
    """Prompt-only metrics for every (source, target) pair, final and early-checkpoint prompts,
    each averaged over all seed pairs (SPoT)."""
    from promptgrid.metrics import seed_pair_similarity

    cfg = study.cfg
    names = [m for m in cfg.metrics.names if m in PROMPT_METRICS]
    rows = []
    for early in (False, True):
        # prompt-only metrics never run the model, so the job skips loading it (per-job overhead)
        prompts = {t: {seed: study.task_prompt(backbone, t, seed, early, load_model=False) for seed in cfg.seeds}
                   for t in cfg.trained_tasks}
        widths = {(t, seed): p.shape[1] for t, by_seed in prompts.items() for seed, p in by_seed.items()}
        if len(set(widths.values())) > 1:
            raise ValueError(f"prompts of backbone {backbone!r} differ in width: {widths}; were some trained on "
                             f"another backbone?")
        for metric in names:
            values = {(s, t): seed_pair_similarity(prompts[s], prompts[t], metric)
                      for s in cfg.sources for t in cfg.targets}
            rows += _similarity_rows(backbone, values, f"early_{metric}" if early else metric)
    h = study.config_hash("prompt", "training", "seeds", "sources", "targets", "metrics", backbone=backbone)
    write_table(pd.DataFrame(rows, columns=SIMILARITY_COLUMNS), study.path(layout.prompt_similarity(backbone)),
                study.meta(h, seed=cfg.seeds, backbone=backbone))
    print(f"[prompt-metrics] {backbone}: {len(rows)} rows ({len(names)} metrics x 2 checkpoints)", flush=True)


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _ffn_model(bb):
    return bb.model.get_encoder() if bb.cfg.kind == "seq2seq" else bb.model


def on_mask_for(study: Study, backbone: str, task: str, seed: int) -> torch.Tensor:
    """The prompt's FFN activation mask (n_layers, ffn_dim), computed once and cached beside the study.

    The cache records the prompt file's digest and the precision the mask was computed in, so neither a
    retrained prompt nor a job on a node that resolves ``precision: auto`` otherwise reuses a stale mask.
    """
    import torch
    from safetensors.torch import save_file

    from promptgrid.io import atomic_path
    from promptgrid.metrics import activation_mask

    prompt_file = study.path(layout.task_prompt(backbone, task, seed))
    digest = _file_digest(prompt_file)
    cache = study.path(layout.on_mask(backbone, task, seed))
    if cache.exists():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as fh:
            saved = fh.metadata() or {}
            if saved.get("prompt_sha256") == digest and saved.get("precision", "fp32") == study.precision:
                return fh.get_tensor("mask").bool()
    from promptgrid.precision import precision_scope

    bb = study.backbone(backbone)
    with precision_scope(study.precision, bb.device):
        mask = activation_mask(_ffn_model(bb), study.task_prompt(backbone, task, seed), bb.special_token_embedding())
    with atomic_path(cache) as tmp:
        save_file({"mask": mask.to(torch.uint8)}, str(tmp), metadata={"prompt_sha256": digest, "task": task,
                                                                      "seed": str(seed), "precision": study.precision,
                                                                      "compute": json.dumps(study.compute.record())})
    return mask


def on_metric(study: Study, backbone: str) -> None:
    """ON (all layers) and ON per window of ``metrics.on_window`` layers, averaged over seed pairs."""
    from promptgrid.metrics import on_overlap, on_windows, seed_pair_mean

    cfg = study.cfg
    masks = {(t, seed): on_mask_for(study, backbone, t, seed) for t in cfg.trained_tasks for seed in cfg.seeds}
    rows = []
    for s in cfg.sources:
        for t in cfg.targets:
            per_metric: dict = {}
            for ss in cfg.seeds:
                for st in cfg.seeds:
                    a, b = masks[(s, ss)], masks[(t, st)]
                    per_metric.setdefault("on", []).append(on_overlap(a, b))
                    for i, v in enumerate(on_windows(a, b, cfg.metrics.on_window)):
                        per_metric.setdefault(f"on_w{i}", []).append(v)
            for metric, values in per_metric.items():
                rows += _similarity_rows(backbone, {(s, t): seed_pair_mean(values)}, metric)
    h = study.config_hash("prompt", "training", "seeds", "sources", "targets", "metrics", backbone=backbone)
    write_table(pd.DataFrame(rows, columns=SIMILARITY_COLUMNS), study.path(layout.on_similarity(backbone)),
                study.meta(h, seed=cfg.seeds, backbone=backbone))
    print(f"[on-metric] {backbone}: {len(masks)} masks, {len(rows)} rows", flush=True)


def _task_vectors(bb, prompts: torch.Tensor, data, batch_size: int, precision: str = "fp32") -> torch.Tensor:
    """PANDA task vectors (K, h): mean pooled output of each of K prompts (K, L, d) over the examples."""
    import torch

    from promptgrid.metrics import panda_task_vector
    from promptgrid.precision import precision_scope

    K = prompts.shape[0]
    chunk = max(1, batch_size // K)
    pooled_all = [[] for _ in range(K)]
    with torch.inference_mode():
        for start in range(0, len(data), chunk):
            ids = data.ids[start: start + chunk]
            index = torch.arange(K).repeat_interleave(len(ids))
            with precision_scope(precision, bb.device):
                pooled = bb.pooled(prompts[index], bb.collate(ids * K)).float().view(K, len(ids), -1)
            for k in range(K):
                pooled_all[k].append(pooled[k])
        return torch.stack([panda_task_vector(torch.cat(p)) for p in pooled_all])


def panda_metric(study: Study, backbone: str, target: str) -> None:
    """PANDA metric T(s, t): cosine of task vectors of the target's inputs under P_s and under P_t."""
    from promptgrid.metrics import panda_similarity, seed_pair_mean

    cfg = study.cfg
    bb = study.backbone(backbone)
    data = study.encoded(backbone, target, "train", limit=cfg.metrics.panda_examples)
    keys = [(s, seed) for s in cfg.sources for seed in cfg.seeds] + [(target, seed) for seed in cfg.seeds]
    keys = list(dict.fromkeys(keys))
    prompts = _stack([study.task_prompt(backbone, t, seed) for t, seed in keys])
    vectors = dict(zip(keys, _task_vectors(bb, prompts, data, cfg.training.eval_batch_size,
                                                     study.precision)))
    rows = []
    for s in cfg.sources:
        values = [panda_similarity(vectors[(s, ss)], vectors[(target, st)]) for ss in cfg.seeds for st in cfg.seeds]
        rows += _similarity_rows(backbone, {(s, target): seed_pair_mean(values)}, "panda")
    h = study.config_hash("prompt", "training", "seeds", "sources", "metrics", task=target, backbone=backbone)
    write_table(pd.DataFrame(rows, columns=SIMILARITY_COLUMNS), study.path(layout.panda_similarity(backbone, target)),
                study.meta(h, seed=cfg.seeds, backbone=backbone))
    print(f"[panda-metric] {backbone}/{target}: {len(keys)} prompts x {len(data)} examples", flush=True)


# ---------------------------------------------------------------- tables
def _read_all(study: Study, rels, metas: Optional[list] = None) -> pd.DataFrame:
    """The parts that exist, concatenated; their provenance is appended to ``metas`` when given."""
    paths = [study.path(r) for r in rels if study.path(r).exists()]
    if metas is not None:
        metas += [read_table_meta(p) for p in paths]
    frames = [read_table(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collect(study: Study) -> None:
    """Gather every part into tables/transfer, similarity and curves."""
    from promptgrid.analysis import aggregate_gains, compute_gains

    cfg = study.cfg
    methods = cfg.transfer.methods
    trained = [m for m in methods if m in layout.TRAINED_METHODS]
    baselines, runs, curves, sims, parts = [], [], [], [], []
    for b in cfg.backbones:
        baselines.append(_read_all(study, [layout.train_runs(b, t) for t in cfg.trained_tasks], parts))
        curves.append(_read_all(study, [layout.train_curves(b, t) for t in cfg.targets]))
        if "zeroshot" in methods:
            runs.append(_read_all(study, [layout.zeroshot_part(b, t) for t in cfg.targets], parts))
        for m in trained:
            runs.append(_read_all(study, [layout.method_runs(b, m, t) for t in cfg.targets], parts))
            curves.append(_read_all(study, [layout.method_curves(b, m, t) for t in cfg.targets]))
        sims.append(_read_all(study, [layout.prompt_similarity(b), layout.on_similarity(b)]
                              + [layout.panda_similarity(b, t) for t in cfg.targets], parts))
    baselines = pd.concat(baselines, ignore_index=True)
    curves = pd.concat(curves, ignore_index=True)
    runs = pd.concat([r for r in runs if len(r)], ignore_index=True)
    similarity = pd.concat([s for s in sims if len(s)], ignore_index=True) if any(len(s) for s in sims) \
        else pd.DataFrame(columns=SIMILARITY_COLUMNS)
    transfer = compute_gains(runs, baselines, curves)
    h = study.config_hash("prompt", "training", "seeds", "sources", "targets", "transfer", "metrics", "tasks",
                          "backbones")
    meta = study.meta(h, seed=cfg.seeds, compute=merge_compute(parts))
    write_table(transfer, study.path(layout.table("transfer")), meta)
    write_table(similarity[SIMILARITY_COLUMNS], study.path(layout.table("similarity")), meta)
    write_table(curves, study.path(layout.table("curves")), meta)
    write_table(aggregate_gains(transfer), study.path(layout.table("gains")), meta)
    print(f"[collect] transfer {len(transfer)} rows, similarity {len(similarity)} rows, curves {len(curves)} rows",
          flush=True)


def correlate(study: Study) -> None:
    from promptgrid.analysis import correlation_table, metric_comparison_table, retrieval_table, summary_table

    cfg = study.cfg
    a = cfg.analysis
    transfer = read_table(study.path(layout.table("transfer")))
    similarity = read_table(study.path(layout.table("similarity")))
    t0 = time.time()
    correlation = correlation_table(similarity, transfer, a.permutations, a.bootstrap, a.seed)
    comparison = metric_comparison_table(similarity, transfer, a.bootstrap, a.seed)
    retrieval = retrieval_table(similarity, transfer, a.top_k)
    summary = summary_table(correlation, retrieval, comparison)
    # the statistics ran here, on the numbers the model jobs computed: their record travels on
    compute = read_table_meta(study.path(layout.table("transfer"))).get("compute") or {}
    meta = study.meta(study.config_hash("analysis", "prompt", "training", "seeds", "transfer", "metrics"),
                      seed=a.seed, compute=compute)
    for name, df in (("correlation", correlation), ("metric_comparison", comparison), ("retrieval", retrieval),
                     ("summary", summary)):
        write_table(df, study.path(layout.table(name)), meta)
    from promptgrid.io import atomic_path

    for name, df in (("correlation", correlation), ("retrieval", retrieval), ("summary", summary)):
        with atomic_path(study.path(f"tables/{name}.csv")) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4g")
    print(f"[correlate] {len(correlation)} correlations, {len(comparison)} comparisons, {len(retrieval)} retrieval "
          f"rows in {time.time() - t0:.1f}s", flush=True)
    print(summary_text_for(summary), flush=True)


def summary_text_for(summary: pd.DataFrame) -> str:
    from promptgrid.analysis import summary_text

    return summary_text(summary)


def summarize(study: Study) -> str:
    """The summary paragraph, then how the study computed (precision, hardware, torch)."""
    from promptgrid.io import compute_line

    path = study.path(layout.table("summary"))
    return summary_text_for(read_table(path)) + "\n" + compute_line(read_table_meta(path).get("compute") or {})


# ---------------------------------------------------------------- figures
def figure(study: Study, kind: str, backbone: str, out: Path, method=None, metric=None, target=None) -> None:
    from promptgrid import plots

    cfg = study.cfg
    families = {name: t.family for name, t in cfg.tasks.items()}
    table = lambda name: read_table(study.path(layout.table(name)))  # noqa: E731
    variants = layout.figure_variants(cfg, kind)
    for v in variants:
        if kind == "gain_heatmap":
            fig = plots.gain_heatmap(table("transfer"), families, backbone, v)
        elif kind == "relative_performance":
            fig = plots.relative_performance_heatmap(table("transfer"), families, backbone)
        elif kind == "similarity_heatmap":
            fig = plots.similarity_heatmap(table("similarity"), families, backbone, v)
        elif kind == "metric_scatter":
            method_, metric_ = v.split("_", 1)
            fig = plots.metric_scatter(table("similarity"), table("transfer"), backbone, metric_, method_)
        elif kind == "correlation_bars":
            fig = plots.correlation_bars(table("correlation"), backbone, v)
        elif kind == "topk_curves":
            fig = plots.topk_curves(table("retrieval"), backbone, v)
        elif kind == "learning_curves":
            fig = plots.learning_curves(table("curves"), backbone, v)
        elif kind == "method_bars":
            fig = plots.method_bars(table("transfer"), None, backbone)
        else:
            raise ValueError(f"unknown figure kind {kind!r}")
        stem = f"{out}_{v}" if v is not None else str(out)  # the rule's outputs: layout.figure_variants
        plots.save_figure(fig, f"{stem}.png", f"{stem}.pdf")
        print(f"[figure] {stem}.png/.pdf", flush=True)


# ---------------------------------------------------------------- PEFT prompt bank
def export_peft(study: Study, backbone: str, prompt_file: Path, out: Path) -> None:
    """One prompt file -> a PEFT PromptTuning adapter folder that PeftModel.from_pretrained loads."""
    from promptgrid.peft_io import export_peft as export

    bb = study.backbone(backbone)
    prompt, meta = load_prompt(prompt_file, expect_dim=bb.embed_dim)
    export(prompt, bb, out, meta)
    print(f"[export-peft] {prompt_file} -> {out}", flush=True)


def export_peft_bank(study: Study, backbone: str, out_dir: Path) -> None:
    """Every task prompt of the study (every seed) as PEFT adapters: <out_dir>/<task>/seed<k>/."""
    from promptgrid.peft_io import export_peft as export

    bb = study.backbone(backbone)
    n = 0
    for task in study.cfg.trained_tasks:
        for seed in study.cfg.seeds:
            prompt, meta = load_prompt(study.path(layout.task_prompt(backbone, task, seed)), expect_dim=bb.embed_dim)
            export(prompt, bb, out_dir / task / f"seed{seed}", meta)
            n += 1
    print(f"[export-peft] {n} adapters under {out_dir}", flush=True)


def import_peft(study: Study, backbone: str, adapter: Path, out: Path) -> None:
    """A PEFT PromptTuning adapter -> a promptgrid prompt file (e.g. to use as a source or an init)."""
    from promptgrid.peft_io import import_peft as load

    bb = study.backbone(backbone)
    prompt, meta = load(adapter, expect_dim=bb.embed_dim)
    save_prompt(out, prompt, {**meta, "imported_from": str(adapter), "backbone": backbone})
    print(f"[import-peft] {adapter} -> {out} ({tuple(prompt.shape)})", flush=True)
