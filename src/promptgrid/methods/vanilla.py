"""Vanilla prompt transfer (SPoT): the target's prompt starts from a source's trained prompt."""
from __future__ import annotations

from promptgrid.registry import METHODS, MethodSpec, RunPlan


def plan(ctx, backbone: str, target: str) -> RunPlan:
    """One run per (source, seed): initialised with that source's prompt of that seed, trained on the target
    with that seed's data order, so it differs from the target's baseline only in its initial prompt."""
    from promptgrid.engine.training import RunSpec

    prompts = ctx.source_prompts(backbone)
    runs = [RunSpec(f"{s}/seed{seed}", seed, p.clone()) for (s, seed), p in prompts.items()]
    return RunPlan(runs, list(prompts))


METHODS.add(MethodSpec(
    name="vanilla", order=2, colour=(0.0039, 0.451, 0.698), plan=plan,
    summary="the target's prompt starts from the source's prompt",
    paper="SPoT (Vu et al. 2022) prompt transfer; PANDA's 'vanilla transfer' baseline"))
