"""SPoT top-k: the target's prompt starts from the similarity-weighted mean of its k most similar sources."""
from __future__ import annotations

import json
from dataclasses import dataclass

from promptgrid.config.fields import Section, setting
from promptgrid.config.sections import SIMILARITY_METRICS
from promptgrid.registry import METHODS, MethodSpec, RunPlan


@dataclass
class SpotConfig(Section):
    """``transfer.spot_topk``."""

    k: int = setting(3, ge=1, help="number of sources mixed")
    metric: str = setting("cos_avg", choices=SIMILARITY_METRICS, help="similarity metric ranking and weighting sources")


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


def early_target_similarities(ctx, backbone: str, target: str, metric: str, seed: int, prompts: dict) -> dict:
    """{source: metric(source's prompt, the target's early prompt)} for one seed: SPoT ranks sources by the
    target's task embedding after a short prompt tuning, not by its fully trained prompt."""
    import torch

    from promptgrid.similarity.prompt_math import prompt_blocks, similarity_matrix

    sources = [s for (s, sd) in prompts if sd == seed]
    early = ctx.task_prompt(backbone, target, seed, early=True)
    kind = ctx.cfg.prompt.kind  # deep prompts compare per key/value block; the backbone says how many
    blocks = prompt_blocks(ctx.backbone(backbone) if kind == "deep" else None, kind)
    values = similarity_matrix(torch.stack([prompts[(s, seed)] for s in sources]), early[None], metric,
                               blocks)[:, 0]
    return dict(zip(sources, values.tolist()))


def plan(ctx, backbone: str, target: str) -> RunPlan:
    """One run per seed, from the mixture of that seed's k most similar source prompts (the target itself
    excluded when it is also a source). A prompt-only metric compares each source's prompt with the
    target's early prompt (``training.early_step``) of the same seed, as SPoT does; a model-based metric
    comes from its similarity part."""
    from promptgrid.engine.training import RunSpec
    from promptgrid.registry import SIMILARITIES

    cfg = ctx.cfg.transfer.spot_topk
    prompts = ctx.source_prompts(backbone, exclude=(target,))
    from_prompts = SIMILARITIES.require(cfg.metric).scope == "prompt"
    label = row_sources(ctx.cfg)[0]
    runs, pairs, mixes = [], [], []
    for seed in ctx.cfg.seeds:
        sims = early_target_similarities(ctx, backbone, target, cfg.metric, seed, prompts) if from_prompts \
            else ctx.similarities(backbone, target, cfg.metric)
        init, mix = spot_topk_init(prompts, sims, seed, cfg)
        runs.append(RunSpec(f"{label}/seed{seed}", seed, init))
        pairs.append((label, seed))
        mixes.append(json.dumps(mix))
    return RunPlan(runs, pairs, {"mixture": mixes})


def _reads_similarity(cfg) -> list:
    """Only a model-based ranking metric needs its similarity part (a prompt-only one is computed here)."""
    from promptgrid.registry import SIMILARITIES

    metric = cfg.transfer.spot_topk.metric
    return [metric] if SIMILARITIES.require(metric).scope == "model" else []


def row_sources(cfg) -> list:
    return [f"top{cfg.transfer.spot_topk.k}"]


METHODS.add(MethodSpec(
    name="spot_topk", order=3, colour=(0.0078, 0.6196, 0.451), config=SpotConfig, plan=plan,
    per_source=False, row_sources=row_sources, reads_similarity=_reads_similarity,
    summary="the target's prompt starts from the similarity-weighted mean of its k most similar sources",
    paper="SPoT (Vu et al. 2022): the top-k sources by the similarity of their prompts to the target's early "
          "prompt, mixed by similarity weight"))
