"""An evaluating transfer method written as a study plugin, judged like zero-shot transfer: every source prompt,
its token order reversed, is scored unchanged on the target, and the method's spec says it is judged on
relative performance. Nothing outside this file names it, so every table and figure that treats it as it
treats zero-shot transfer does so from the spec alone (tests/methods/test_method_specs.py and the e2e test)."""
from promptgrid.registry import METHODS, RELATIVE, MethodSpec


def evaluate(ctx, backbone: str, target: str) -> dict:
    """{(source, seed): test score} of every source prompt, token order reversed (L, d) -> flipped on L."""
    import torch

    objective = ctx.objective(backbone, target)
    test = ctx.encoded(backbone, target, "test")
    prompts = ctx.source_prompts(backbone)
    keys = list(prompts)
    bank = torch.stack([prompts[k].flip(0) for k in keys])  # (K, L, d)
    scores = objective.score(bank, test, ctx.cfg.training.eval_batch_size, ctx.precision)
    return dict(zip(keys, scores))


METHODS.add(MethodSpec(name="reversed", order=10, colour=(0.5, 0.3, 0.6), evaluate=evaluate, outcome=RELATIVE,
                       summary="each source prompt on the target unchanged, its token order reversed",
                       paper="none: the test suite's second plugin"))
