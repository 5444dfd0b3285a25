"""SPoT top-k: the target's prompt starts from the similarity-weighted mean of its k most similar sources."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from promptgrid.config.sections import ConfigError, check_similarity
from promptgrid.registry import METHODS, MethodSpec, RunPlan


@dataclass
class SpotConfig:
    """``transfer.spot_topk``."""

    k: int = field(default=3, metadata={"help": "number of sources mixed"})
    metric: str = field(default="cos_avg", metadata={"help": "similarity metric ranking and weighting sources"})

    SCHEMA = {"type": "object", "additionalProperties": False,
              "properties": {"k": {"type": "integer", "minimum": 1}, "metric": {"$ref": "#/$defs/metric_name"}}}

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError("k", "must be >= 1")
        self.metric = check_similarity(self.metric, "metric")


def spot_topk_init(source_prompts: dict, similarities: dict, seed: int, cfg: SpotConfig, exclude=()) -> tuple:
    """SPoT top-k weighted average for one seed.

    source_prompts: {(source, seed): (L, d)}; similarities: {source: sim(source, target)}.
    Returns (prompt (L, d), [(source, weight), ...]) with weights proportional to the similarity of
    the k most similar sources (ties broken by source order).
    """
    import torch

    from promptgrid.models.prompt import weighted_average

    candidates = [s for (s, sd) in source_prompts if sd == seed and s not in exclude and s in similarities]
    if not candidates:
        raise ValueError(f"spot_topk: no source has both a prompt for seed {seed} and a similarity value")
    ranked = sorted(candidates, key=lambda s: (-similarities[s], candidates.index(s)))[: cfg.k]
    weights = torch.tensor([similarities[s] for s in ranked], dtype=torch.float32)
    prompt = weighted_average(torch.stack([source_prompts[(s, seed)] for s in ranked]), weights)
    w = weights.clamp(min=0)
    w = w / w.sum() if w.sum() > 0 else torch.full_like(w, 1 / len(w))
    return prompt, list(zip(ranked, w.tolist()))


def plan(ctx, backbone: str, target: str) -> RunPlan:
    """One run per seed, from the mixture of that seed's k most similar source prompts (the target itself
    excluded when it is also a source)."""
    from promptgrid.engine.training import RunSpec

    cfg = ctx.cfg.transfer.spot_topk
    prompts = ctx.source_prompts(backbone, exclude=(target,))
    sims = ctx.similarities(backbone, target, cfg.metric)
    label = row_sources(ctx.cfg)[0]
    runs, pairs, mixes = [], [], []
    for seed in ctx.cfg.seeds:
        init, mix = spot_topk_init(prompts, sims, seed, cfg)
        runs.append(RunSpec(f"{label}/seed{seed}", seed, init))
        pairs.append((label, seed))
        mixes.append(json.dumps(mix))
    return RunPlan(runs, pairs, {"mixture": mixes})


def row_sources(cfg) -> list:
    return [f"top{cfg.transfer.spot_topk.k}"]


METHODS.add(MethodSpec(
    name="spot_topk", order=3, colour=(0.0078, 0.6196, 0.451), config=SpotConfig, plan=plan,
    per_source=False, row_sources=row_sources, reads_similarity=lambda cfg: [cfg.transfer.spot_topk.metric],
    summary="the target's prompt starts from the similarity-weighted mean of its k most similar sources",
    paper="SPoT (Vu et al. 2022) multi-task initialisation from the top-k sources by task-embedding similarity"))
