"""Transfer methods on top of the training engine: zero-shot, vanilla (PoT/SPoT), SPoT top-k and PANDA.

Functions here take loaded data (tensors, encoded splits) and return results; reading and writing
files is the job of :mod:`promptgrid.jobs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from promptgrid.config import PandaConfig, SpotConfig
from promptgrid.prompt import weighted_average
from promptgrid.training import RunSpec


@dataclass
class PromptKey:
    """Names one trained prompt: the task it was trained on and its seed."""

    task: str
    seed: int


def zeroshot_scores(score_fn, source_prompts: dict) -> dict:
    """Score every source prompt unchanged on the target in one batched call.

    source_prompts: {(source, seed): (L, d)}; score_fn: (K, L, d) -> list of K scores.
    Returns {(source, seed): score}.
    """
    keys = list(source_prompts)
    scores = score_fn(torch.stack([source_prompts[k] for k in keys]))
    return dict(zip(keys, scores))


def vanilla_runs(source_prompts: dict) -> list:
    """Target prompt initialised from each source prompt; data seed = the source prompt's seed."""
    return [RunSpec(f"{src}/seed{seed}", seed, p.clone()) for (src, seed), p in source_prompts.items()]


def panda_beta(similarity: Optional[float], cfg: PandaConfig) -> float:
    """KD weight for a pair. Fixed ``cfg.beta`` if set (ablation), else beta_scale * clip(T(s, t), 0, 1).

    The paper lets the predicted transferability control the KD weight but does not give the
    mapping; the authors' code fixes it. Clipping keeps a negative similarity from turning
    distillation into anti-distillation.
    """
    if cfg.beta is not None:
        return float(cfg.beta)
    if similarity is None or similarity != similarity:  # NaN
        return 0.0
    return float(cfg.beta_scale * min(max(similarity, 0.0), 1.0))


def panda_runs(teachers: dict, fresh_inits: dict, similarities: dict, cfg: PandaConfig) -> list:
    """Student = fresh prompt (the baseline's init for that seed); teacher = the vanilla-transfer prompt.

    teachers: {(source, seed): (L, d)}; fresh_inits: {seed: (L, d)}; similarities: {source: T(s, t)}.
    """
    runs = []
    for (src, seed), teacher in teachers.items():
        runs.append(RunSpec(f"{src}/seed{seed}", seed, fresh_inits[seed].clone(), teacher=teacher.clone(),
                            beta=panda_beta(similarities.get(src), cfg)))
    return runs


def spot_topk_init(source_prompts: dict, similarities: dict, seed: int, cfg: SpotConfig, exclude=()) -> tuple:
    """SPoT top-k weighted average for one seed.

    source_prompts: {(source, seed): (L, d)}; similarities: {source: sim(source, target)}.
    Returns (prompt (L, d), [(source, weight), ...]) with weights proportional to the similarity of
    the k most similar sources (ties broken by source order).
    """
    candidates = [s for (s, sd) in source_prompts if sd == seed and s not in exclude and s in similarities]
    if not candidates:
        raise ValueError(f"spot_topk: no source has both a prompt for seed {seed} and a similarity value")
    ranked = sorted(candidates, key=lambda s: (-similarities[s], candidates.index(s)))[: cfg.k]
    weights = torch.tensor([similarities[s] for s in ranked], dtype=torch.float32)
    prompt = weighted_average(torch.stack([source_prompts[(s, seed)] for s in ranked]), weights)
    w = weights.clamp(min=0)
    w = w / w.sum() if w.sum() > 0 else torch.full_like(w, 1 / len(w))
    return prompt, list(zip(ranked, w.tolist()))
