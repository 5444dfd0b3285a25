"""``Study``: what every verb of a job works with — the config, its stage hashes and provenance, and the
backbones, splits, label heads, objectives and prompts it loads once and caches.

Each job loads its backbone once and handles every run it owns in one process (all seeds of a task,
all sources of a target), which is what keeps per-job overhead small. Methods and similarity metrics
(:mod:`promptgrid.registry`) read what they need through a study; they never build paths themselves.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

from promptgrid.config import StudyConfig
from promptgrid.errors import UnknownName
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt
from promptgrid.storage.provenance import provenance

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
    def from_file(cls, path) -> Study:
        """The study of a config file, with the plugins it names loaded first."""
        from promptgrid.pipeline.plugins import load_config_with_plugins

        return cls(load_config_with_plugins(path), Path(path))

    # -- paths and metadata
    def path(self, rel: str) -> Path:
        return self.root / rel

    def stage_hash(self, stage: str, **names) -> str:
        """The config hash of ``stage`` (:mod:`promptgrid.config.stages`), the same one its rule carries."""
        from promptgrid.config.stages import stage_hash

        return stage_hash(self.cfg, stage, **names)

    def meta(self, config_hash: str, seed=None, backbone: Optional[str] = None, **extra) -> dict:
        """Provenance of an output; a job that ran a model adds how it computed (``compute``)."""
        revision = self.backbone(backbone).revision if backbone and backbone in self._backbones else None
        if self._backbones and "compute" not in extra:
            extra["compute"] = self.compute.record()
        return provenance(config_hash, seed=seed, backbone_revision=revision, config=self.cfg.to_dict(),
                          study=self.cfg.study, prompt_kind=self.cfg.prompt.kind, **extra)

    # -- how this job computes, resolved on the node that runs it (promptgrid.models.precision)
    @functools.cached_property
    def compute(self):
        from promptgrid.models.devices import resolve_device, set_deterministic
        from promptgrid.models.precision import Compute
        from promptgrid.storage.hardware import cpu_info, cpu_label

        t = self.cfg.training
        device = resolve_device(t.device, lock_dir=self.path(layout.gpu_locks()))
        if device != "cpu":
            set_deterministic(device)
        compute = Compute.resolve(t.precision, t.attention, device)
        gpu = compute.record()["gpu"]
        print(f"[compute] precision {compute.precision} (configured {compute.precision_configured}), attention "
              f"{compute.attention}, device {compute.device}{f' ({gpu})' if gpu else ''}; CPU {cpu_label(cpu_info())}",
              flush=True)
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
            raise UnknownName(f"unknown backbone {name!r}; the config defines {sorted(self.cfg.backbones)}")
        if name not in self._backbones:
            import torch

            from promptgrid.models.loading import load_backbone

            torch.manual_seed(0)
            t0 = time.time()
            self._backbones[name] = load_backbone(name, self.cfg.backbones[name], self.cfg.cache_path,
                                                  attention=self.compute.attention, device=self.compute.device)
            print(f"[load] backbone {name} in {time.time() - t0:.1f}s", flush=True)
        return self._backbones[name]

    def split(self, task: str, split: str) -> pd.DataFrame:
        from promptgrid.data.splits import load_split

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
            from promptgrid.models.precision import precision_scope

            bb = self.backbone(backbone)
            with precision_scope(self.precision, bb.device):
                self._heads[key] = bb.task_head(self.cfg.tasks[task].label_texts)
        return self._heads[key]

    def objective(self, backbone: str, task: str):
        """What training optimises and scoring measures for ``task`` on ``backbone`` (:mod:`promptgrid.objectives`)."""
        key = (backbone, task)
        if key not in self._objectives:
            from promptgrid.objectives.factory import make_objective

            tcfg = self.cfg.tasks[task]
            head = self.head(backbone, task) if tcfg.kind in ("classification", "regression") else None
            self._objectives[key] = make_objective(self.backbone(backbone), tcfg, task=task, head=head)
        return self._objectives[key]

    def task_prompt(self, backbone: str, task: str, seed: int, early: bool = False,
                    load_model: bool = True) -> torch.Tensor:
        """A task's prompt (L, d), its width checked against the backbone (``load_model=False``: against
        nothing here; callers that never run the model check the widths agree among themselves)."""
        dim = self.prompt_width(backbone) if load_model else None
        prompt, _ = load_prompt(self.path(layout.task_prompt(backbone, task, seed, early)),
                                expect_dim=dim, expect_length=self.cfg.prompt.length)
        return prompt

    def prompt_width(self, backbone: str) -> int:
        """The width of this study's prompts on ``backbone``: d (input prompts) or D (deep prompts)."""
        return self.backbone(backbone).prompt_width(self.cfg.prompt.kind)

    def fresh_init(self, backbone: str, task: str, seed: int) -> torch.Tensor:
        """A run's initial prompt (L, d), or (L, D) for deep prompts (N(0, random_std^2) or the init file)."""
        from promptgrid.models.prompt import init_prompt

        bb = self.backbone(backbone)
        pc = self.cfg.prompt
        from_file = None
        if pc.init == "file":
            from_file, _ = load_prompt(pc.init_file, expect_dim=self.prompt_width(backbone), expect_length=pc.length)
        if pc.kind == "deep":
            from promptgrid.models.prefix import random_deep_prompt

            return from_file.clone() if from_file is not None else random_deep_prompt(
                pc.length, bb.deep_width, pc.random_std, seed)
        label_ids = None  # tasks without label words (span_qa, ner) start from sampled vocabulary
        if self.cfg.tasks[task].kind in ("classification", "regression"):
            head = self.head(backbone, task)
            label_ids = head.label_token_ids or [bb.tokenizer(t, add_special_tokens=False)["input_ids"]
                                                 for t in head.label_texts]
        return init_prompt(self.cfg.prompt, bb.embed_layer.weight, seed, label_ids, from_file)


    # -- what methods and similarity metrics read
    def source_prompts(self, backbone: str, exclude=(), early: bool = False) -> dict:
        """{(source, seed): prompt (L, d)} of every source (but ``exclude``) and seed."""
        return {(s, seed): self.task_prompt(backbone, s, seed, early) for s in self.cfg.sources if s not in exclude
                for seed in self.cfg.seeds}

    def transfer_prompt(self, backbone: str, method: str, target: str, source: str, seed: int) -> torch.Tensor:
        """The best prompt (L, d) of ``method``'s run from ``source`` into ``target``."""
        prompt, _ = load_prompt(self.path(layout.transfer_prompt(backbone, method, target, source, seed)),
                                expect_dim=self.prompt_width(backbone))
        return prompt

    def similarities(self, backbone: str, target: str, metric: str) -> dict:
        """{source: value} of similarity ``metric`` for pairs into ``target``, read from its part."""
        from promptgrid.storage.files import read_table

        df = read_table(self.path(layout.similarity_part(backbone, metric, target)))
        df = df[(df["target"] == target) & (df["metric"] == metric)]
        return dict(zip(df["source"], df["value"]))

    def prompt_cache(self, name: str, backbone: str, task: str, seed: int, make) -> torch.Tensor:
        """``make()`` for the task's prompt, computed once and cached beside the study (``layout.prompt_cache``).

        The cache records the prompt file's digest and the precision it was computed in, so neither a
        retrained prompt nor a job on a node where ``precision: auto`` resolves otherwise reuses it."""
        import hashlib
        import json

        from safetensors import safe_open
        from safetensors.torch import save_file

        from promptgrid.storage.files import atomic_path

        digest = hashlib.sha256(self.path(layout.task_prompt(backbone, task, seed)).read_bytes()).hexdigest()
        cache = self.path(layout.prompt_cache(name, backbone, task, seed))
        if cache.exists():
            with safe_open(str(cache), framework="pt") as fh:
                saved = fh.metadata() or {}
                if saved.get("prompt_sha256") == digest and saved.get("precision") == self.precision:
                    return fh.get_tensor(name)
        value = make()
        meta = {"prompt_sha256": digest, "task": task, "seed": str(seed), "precision": self.precision,
                "compute": json.dumps(self.compute.record()), "machine": json.dumps(self.meta("")["machine"])}
        with atomic_path(cache) as tmp:
            save_file({name: value.contiguous()}, str(tmp), metadata=meta)
        return value
