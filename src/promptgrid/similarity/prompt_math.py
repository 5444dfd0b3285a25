"""What the prompt-only similarity metrics share: shape checks, unit rows, chunking, and one entry point.

Every similarity is "larger = more alike"; distances become similarities as 1 / (1 + distance). Cosines
with a zero vector are 0 (no NaN), because rows are normalised with a tiny floor on the norm.

:func:`similarity_matrix` is the one path for every prompt metric: all (source, target) prompt pairs at
once, through the metric's registered ``matrix``. :func:`pair_similarity` is the single pair, the
1 x 1 case of the same call.

Deep prompts (:mod:`promptgrid.models.prefix`), stored (L, D) with D = 2 * n_layers * h, are compared per key/value
block: each (L, h) block is compared with the same block of the other prompt as if both were input prompts, and
the 2 * n_layers values are averaged (``blocks``; :func:`prompt_blocks` says how many a backbone's prompts have).
A flattened comparison over D would be dominated by whichever layers' keys or values have the largest scale;
per block, every layer's keys and values count equally. No metric's own ``matrix`` knows about blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from promptgrid.registry import SIMILARITIES

EPS = 1e-12


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm (a zero row stays zero)."""
    return F.normalize(x, dim=-1, eps=EPS)


def chunk_rows(n_a: int, per_row: int, budget: int = 1 << 24) -> int:
    """How many rows of A to process at once so a temporary stays below ``budget`` elements."""
    return max(1, min(n_a, budget // max(1, per_row)))


def stack_prompts(prompts, name: str) -> torch.Tensor:
    """A stack (N, L, d) float64 from a tensor or a list of equal-shape (L, d) prompts."""
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise ValueError(f"{name}: no prompts given")
        shapes = {tuple(torch.as_tensor(p).shape) for p in prompts}
        if len(shapes) > 1:
            raise ValueError(f"{name}: prompts of different shapes {sorted(shapes)} cannot be stacked")
        prompts = torch.stack([torch.as_tensor(p) for p in prompts])
    prompts = torch.as_tensor(prompts)
    if prompts.dim() != 3:
        raise ValueError(f"{name}: expected a stack of prompts (N, L, d); got shape {tuple(prompts.shape)}")
    return prompts.detach().to(torch.float64)


def prompt_blocks(bb, kind: str) -> int:
    """How many (L, h) blocks a stored prompt of ``kind`` (config ``prompt.kind``) has on backbone ``bb``:
    1 for an input prompt (L, d); 2 * n_layers for a deep prompt (L, D), a key and a value block per layer."""
    if kind == "input":
        return 1
    if kind == "deep":
        return 2 * bb.prefix_geometry.n_layers
    raise ValueError(f"prompt.kind: unknown prompt kind {kind!r}; choose input or deep")


def similarity_matrix(prompts_a, prompts_b, metric: str, blocks: int = 1) -> torch.Tensor:
    """out[a, b] = metric(P_s = prompts_a[a], P_t = prompts_b[b]), float64 (A, B).

    prompts_a (A, L_a, w) are the sources and prompts_b (B, L_b, w) the targets (the order matters for
    the asymmetric ``max``); a list of equal-shape (L, w) tensors is accepted too.

    ``blocks`` > 1 (deep prompts, w = D = blocks * h): the columns are ``blocks`` (L, h) matrices side by side
    (the key and value of every layer, :meth:`promptgrid.models.prefix.PrefixGeometry.blocks`); block k of
    each source is compared with block k of each target, as input prompts (A, L_a, h) and (B, L_b, h), and the
    ``blocks`` (A, B) matrices are averaged. ``blocks`` = 1 is the metric on the prompts themselves.
    """
    spec = SIMILARITIES.get(metric)
    if spec is None or spec.scope != "prompt":
        prompt_metrics = [n for n, s in SIMILARITIES.items() if s.scope == "prompt"]
        raise ValueError(f"unknown prompt metric {metric!r}; choose one of {prompt_metrics}")
    a, b = stack_prompts(prompts_a, "prompts_a"), stack_prompts(prompts_b, "prompts_b")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{metric}: source prompts have width {a.shape[-1]} but target prompts have width "
                         f"{b.shape[-1]}; prompts from different backbones cannot be compared")
    if spec.same_length and a.shape[1] != b.shape[1]:
        raise ValueError(f"{metric}: compares vec(P), so both prompts need the same length; got "
                         f"L_s = {a.shape[1]} and L_t = {b.shape[1]}")
    if blocks == 1:
        return spec.matrix(a, b)
    width = a.shape[-1]
    if blocks < 1 or width % blocks:
        raise ValueError(f"{metric}: prompts of width {width} do not split into {blocks} key/value blocks; "
                         f"is prompt.kind right for these prompts?")
    h = width // blocks
    # (N, L, D) -> (N, L, blocks, h): block k is [..., k, :], the layout of PrefixGeometry.blocks
    a_blocks, b_blocks = a.reshape(*a.shape[:2], blocks, h), b.reshape(*b.shape[:2], blocks, h)
    total = torch.zeros(len(a), len(b), dtype=torch.float64)
    for k in range(blocks):  # one block at a time: a metric's temporaries stay those of one input prompt
        total += spec.matrix(a_blocks[:, :, k].contiguous(), b_blocks[:, :, k].contiguous())
    return total / blocks


def pair_similarity(metric: str, p_s, p_t, blocks: int = 1) -> float:
    """``metric`` of one source prompt P_s (L_s, w) and one target prompt P_t (L_t, w) (``blocks``: as in
    :func:`similarity_matrix`)."""
    p_s, p_t = torch.as_tensor(p_s), torch.as_tensor(p_t)
    for name, p in (("P_s", p_s), ("P_t", p_t)):
        if p.dim() != 2:
            raise ValueError(f"{metric}: {name} is a prompt (L, d); got shape {tuple(p.shape)}")
    return float(similarity_matrix(p_s[None], p_t[None], metric, blocks)[0, 0])
