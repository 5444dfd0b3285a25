"""A transfer method written as a study plugin, the way a researcher adds one: this file alone, named in the
study's ``plugins:`` and ``transfer.methods``. The target's prompt starts from the mean of every source's
prompt of the same seed (one run per seed)."""
from promptgrid.registry import METHODS, MethodSpec, RunPlan


def plan(ctx, backbone: str, target: str) -> RunPlan:
    import torch

    from promptgrid.engine.training import RunSpec

    prompts = ctx.source_prompts(backbone)
    runs, pairs = [], []
    for seed in ctx.cfg.seeds:
        mean = torch.stack([p for (_, s), p in prompts.items() if s == seed]).mean(0)
        runs.append(RunSpec(f"mean/seed{seed}", seed, mean))
        pairs.append(("mean", seed))
    return RunPlan(runs, pairs)


METHODS.add(MethodSpec(name="toy", order=9, colour=(0.55, 0.55, 0.0), plan=plan, per_source=False,
                       row_sources=lambda cfg: ["mean"], summary="the target's prompt starts from the mean source prompt",
                       paper="none: the test suite's plugin"))
