"""The PANDA metric (``panda_sim``, named apart from the PANDA transfer method): the cosine of two task
vectors that the model builds from the *target's* inputs, once prompted with P_s and once with P_t."""
from __future__ import annotations

from typing import TYPE_CHECKING

from promptgrid.registry import SIMILARITIES, SimilaritySpec

if TYPE_CHECKING:  # torch is imported inside the functions that need it: registering stays torch-free
    import torch



def panda_task_vector(pooled_outputs: torch.Tensor) -> torch.Tensor:
    """PANDA task vector: mean over examples of the pooled outputs (N, h) -> (h,).

    Pooling (our reading, methods.md §3): for each of ~100 *target* examples, the backbone's
    pooled output of (prompt + target input), i.e. :func:`promptgrid.models.backbones.mean_pool` of the last hidden state over
    non-pad positions; the task vector of s on t uses P_s as the prompt, that of t uses P_t.
    """
    import torch

    pooled_outputs = torch.as_tensor(pooled_outputs)
    if pooled_outputs.dim() != 2 or pooled_outputs.shape[0] == 0:
        raise ValueError(f"pooled_outputs: expected (N >= 1, h), got shape {tuple(pooled_outputs.shape)}")
    return pooled_outputs.detach().to(torch.float64).mean(0)


def panda_similarity(vec_s: torch.Tensor, vec_t: torch.Tensor) -> float:
    """PANDA metric: cosine of the two task vectors (h,)."""
    import torch

    vec_s, vec_t = torch.as_tensor(vec_s).double(), torch.as_tensor(vec_t).double()
    if vec_s.shape != vec_t.shape or vec_s.dim() != 1:
        raise ValueError(f"PANDA: task vectors must be two (h,) tensors; got {tuple(vec_s.shape)} and {tuple(vec_t.shape)}")
    from promptgrid.similarity.prompt_math import unit

    return float((unit(vec_s) * unit(vec_t)).sum())


def task_vectors(bb, prompts: torch.Tensor, data, batch_size: int, precision: str = "fp32") -> torch.Tensor:
    """PANDA task vectors (K, h): mean pooled output of each of K prompts (K, L, d) over the examples."""
    import torch

    from promptgrid.models.precision import precision_scope

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
        return torch.stack([panda_task_vector(torch.cat(p)) for p in pooled_all]).cpu()


def compute(ctx, backbone: str, target: str) -> dict:
    """{(source, target, "panda_sim"): SeedPairStat} for every source into ``target``: the task vectors of the
    target's first ``metrics.panda_examples`` training inputs under each source's and the target's prompts."""
    import torch

    from promptgrid.similarity.seed_pairs import seed_pair_mean

    cfg = ctx.cfg
    data = ctx.encoded(backbone, target, "train", limit=cfg.metrics.panda_examples)
    keys = list(dict.fromkeys([(s, seed) for s in cfg.sources for seed in cfg.seeds]
                              + [(target, seed) for seed in cfg.seeds]))
    prompts = torch.stack([ctx.task_prompt(backbone, t, seed) for t, seed in keys])
    vectors = dict(zip(keys, task_vectors(ctx.backbone(backbone), prompts, data, cfg.training.eval_batch_size,
                                          ctx.precision)))
    return {(s, target, "panda_sim"): seed_pair_mean(
        [panda_similarity(vectors[(s, ss)], vectors[(target, st)]) for ss in cfg.seeds for st in cfg.seeds])
        for s in cfg.sources}


SIMILARITIES.add(SimilaritySpec(
    name="panda_sim", scope="model", order=8, compute=compute, per_target=True,
    config_sections=("metrics.panda_examples",),
    summary="cosine of the task vectors the model builds from the target's inputs under each prompt",
    paper="PANDA (Zhong et al. 2022) transferability metric; pooling and example count are our reading"))
