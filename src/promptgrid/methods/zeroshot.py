"""Zero-shot transfer (Su et al.'s relative performance): every source prompt scored unchanged on the target."""
from __future__ import annotations

from promptgrid.registry import METHODS, RELATIVE, MethodSpec


def evaluate(ctx, backbone: str, target: str) -> dict:
    """{(source, seed): test score} of every source prompt on ``target``, all K prompts in one batched pass."""
    import torch

    objective = ctx.objective(backbone, target)
    test = ctx.encoded(backbone, target, "test")
    prompts = ctx.source_prompts(backbone)
    keys = list(prompts)
    scores = objective.score(torch.stack([prompts[k] for k in keys]), test, ctx.cfg.training.eval_batch_size,
                             ctx.precision)
    return dict(zip(keys, scores))


METHODS.add(MethodSpec(
    name="zeroshot", order=1, colour=(0.8, 0.4706, 0.7373), evaluate=evaluate, outcome=RELATIVE,
    summary="each source prompt on the target, unchanged",
    paper="Su et al. 2022, zero-shot transfer; outcome = relative performance (score / baseline score)"))
