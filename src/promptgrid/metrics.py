"""Task-similarity metrics between a source task s and a target task t (methods.md §3).

Three kinds:

* prompt-only metrics on the two trained prompts P_s, P_t, each (L, d):
  ``cos_avg``, ``token_cos``, ``c_con``, ``e_con``, ``e_ave``, ``max``;
* ON, the overlap of FFN neurons that the prompt activates in a frozen model (Su et al.);
* the PANDA metric, the cosine of two task vectors that the model builds from the *target's*
  inputs, once prompted with P_s and once with P_t.

Every metric is a similarity: larger means "more alike". The distance metrics are turned into
similarities as 1 / (1 + distance). Cosines of a zero vector are 0 (no NaN), because rows are
normalised with a tiny floor on the norm.

SPoT averages every metric over seed pairs: :func:`seed_pair_values` computes a metric for each
(seed_s, seed_t) pair and :func:`seed_pair_mean` reduces them to (mean, std, n).
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-12

# ====================================================================== prompt-only metrics


def _as_prompt(p, name: str) -> torch.Tensor:
    p = torch.as_tensor(p)
    if p.dim() != 2:
        raise ValueError(f"{name}: a prompt is (L, d); got shape {tuple(p.shape)}")
    return p.detach().to(torch.float64)


def _check_widths(p_s: torch.Tensor, p_t: torch.Tensor, same_length: bool, metric: str) -> None:
    if p_s.shape[-1] != p_t.shape[-1]:
        raise ValueError(f"{metric}: source prompts have width {p_s.shape[-1]} but target prompts have "
                         f"width {p_t.shape[-1]}; prompts from different backbones cannot be compared")
    if same_length and p_s.shape[-2] != p_t.shape[-2]:
        raise ValueError(f"{metric}: compares vec(P), so both prompts need the same length; got "
                         f"L_s = {p_s.shape[-2]} and L_t = {p_t.shape[-2]}")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=_EPS)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((_unit(a) * _unit(b)).sum())


def cos_avg(p_s, p_t) -> float:
    """SPoT's task-embedding cosine: cos(mean_i p^s_i, mean_j p^t_j). P_s (L_s, d), P_t (L_t, d)."""
    p_s, p_t = _as_prompt(p_s, "P_s"), _as_prompt(p_t, "P_t")
    _check_widths(p_s, p_t, False, "cos_avg")
    return _cos(p_s.mean(0), p_t.mean(0))


def token_cos(p_s, p_t) -> float:
    """Su et al.'s C_ave: (1 / (L_s L_t)) sum_i sum_j cos(p^s_i, p^t_j). P_s (L_s, d), P_t (L_t, d)."""
    p_s, p_t = _as_prompt(p_s, "P_s"), _as_prompt(p_t, "P_t")
    _check_widths(p_s, p_t, False, "token_cos")
    return float((_unit(p_s) @ _unit(p_t).T).mean())


def c_con(p_s, p_t) -> float:
    """Su et al.'s C_con: cos(vec(P_s), vec(P_t)). Both prompts (L, d), same L."""
    p_s, p_t = _as_prompt(p_s, "P_s"), _as_prompt(p_t, "P_t")
    _check_widths(p_s, p_t, True, "c_con")
    return _cos(p_s.reshape(-1), p_t.reshape(-1))


def e_con(p_s, p_t) -> float:
    """Su et al.'s E_con: 1 / (1 + ||vec(P_s) - vec(P_t)||_2). Both prompts (L, d), same L."""
    p_s, p_t = _as_prompt(p_s, "P_s"), _as_prompt(p_t, "P_t")
    _check_widths(p_s, p_t, True, "e_con")
    return 1.0 / (1.0 + float(torch.linalg.vector_norm(p_s - p_t)))


def e_ave(p_s, p_t) -> float:
    """Su et al.'s E_ave: 1 / (1 + (1 / (L_s L_t)) sum_i sum_j ||p^s_i - p^t_j||_2)."""
    p_s, p_t = _as_prompt(p_s, "P_s"), _as_prompt(p_t, "P_t")
    _check_widths(p_s, p_t, False, "e_ave")
    dist = torch.linalg.vector_norm(p_s[:, None, :] - p_t[None, :, :], dim=-1)  # (L_s, L_t)
    return 1.0 / (1.0 + float(dist.mean()))


def max_cos(p_s, p_t) -> float:
    """Lin et al. (2024) MAX: mean over target tokens j of max_i cos(p^s_i, p^t_j).

    Not symmetric: every *target* token looks for its best match among the source tokens.
    """
    p_s, p_t = _as_prompt(p_s, "P_s"), _as_prompt(p_t, "P_t")
    _check_widths(p_s, p_t, False, "max")
    sim = _unit(p_s) @ _unit(p_t).T  # (L_s, L_t)
    return float(sim.max(dim=0).values.mean())


#: metric name (as in config.PROMPT_METRICS) -> f(P_s (L, d), P_t (L, d)) -> float
PROMPT_METRIC_FUNCS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "cos_avg": cos_avg,
    "token_cos": token_cos,
    "c_con": c_con,
    "e_con": e_con,
    "e_ave": e_ave,
    "max": max_cos,
}


def _stack(prompts, name: str) -> torch.Tensor:
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise ValueError(f"{name}: no prompts given")
        shapes = {tuple(p.shape) for p in prompts}
        if len(shapes) > 1:
            raise ValueError(f"{name}: prompts of different shapes {sorted(shapes)} cannot be stacked")
        prompts = torch.stack([torch.as_tensor(p) for p in prompts])
    prompts = torch.as_tensor(prompts)
    if prompts.dim() != 3:
        raise ValueError(f"{name}: expected a stack of prompts (N, L, d); got shape {tuple(prompts.shape)}")
    return prompts.detach().to(torch.float64)


def _chunk_rows(n_a: int, per_row: int, budget: int = 1 << 24) -> int:
    """How many rows of A to process at once so a temporary stays below ``budget`` elements."""
    return max(1, min(n_a, budget // max(1, per_row)))


def prompt_similarity_matrix(prompts_a, prompts_b, metric: str) -> torch.Tensor:
    """All pairs at once: out[a, b] = metric(P_s = prompts_a[a], P_t = prompts_b[b]).

    prompts_a (A, L_a, d) are the sources and prompts_b (B, L_b, d) the targets (this matters for
    the asymmetric ``max``); a list of equal-shape (L, d) tensors is accepted too.
    Returns a float64 tensor (A, B) equal (up to float rounding) to calling
    ``PROMPT_METRIC_FUNCS[metric]`` on every pair. Large pairwise temporaries are chunked over A.
    """
    if metric not in PROMPT_METRIC_FUNCS:
        raise ValueError(f"unknown prompt metric {metric!r}; choose one of {list(PROMPT_METRIC_FUNCS)}")
    a, b = _stack(prompts_a, "prompts_a"), _stack(prompts_b, "prompts_b")
    _check_widths(a, b, metric in ("c_con", "e_con"), metric)
    n_a, l_a, d = a.shape
    n_b, l_b, _ = b.shape
    if metric == "cos_avg":
        return _unit(a.mean(1)) @ _unit(b.mean(1)).T
    if metric == "token_cos":
        # mean_ij u_i . v_j = (mean_i u_i) . (mean_j v_j): no (L, L) matrix needed
        return _unit(a).mean(1) @ _unit(b).mean(1).T
    if metric == "c_con":
        return _unit(a.reshape(n_a, -1)) @ _unit(b.reshape(n_b, -1)).T
    if metric == "e_con":
        dist = torch.cdist(a.reshape(n_a, -1), b.reshape(n_b, -1), compute_mode="donot_use_mm_for_euclid_dist")
        return 1.0 / (1.0 + dist)
    out = torch.empty(n_a, n_b, dtype=torch.float64)
    step = _chunk_rows(n_a, l_a * n_b * l_b)
    if metric == "e_ave":
        flat_b = b.reshape(-1, d)
        for i in range(0, n_a, step):
            chunk = a[i:i + step]
            dist = torch.cdist(chunk.reshape(-1, d), flat_b).reshape(len(chunk), l_a, n_b, l_b)
            out[i:i + step] = 1.0 / (1.0 + dist.mean(dim=(1, 3)))
        return out
    # max: for every target token, best cosine over source tokens, then mean over target tokens
    unit_b = _unit(b).reshape(-1, d)
    for i in range(0, n_a, step):
        chunk = _unit(a[i:i + step])
        sim = (chunk.reshape(-1, d) @ unit_b.T).reshape(len(chunk), l_a, n_b, l_b)
        out[i:i + step] = sim.max(dim=1).values.mean(dim=-1)
    return out


# ====================================================================== seed pairs


class SeedPairStat(NamedTuple):
    """Mean, sample standard deviation (ddof = 1; NaN for a single pair) and count of seed pairs."""

    mean: float
    std: float
    n: int


def _items(items, name: str) -> dict:
    if isinstance(items, Mapping):
        out = dict(items)
    elif isinstance(items, (list, tuple)):
        out = dict(enumerate(items))
    else:
        raise TypeError(f"{name}: expected a mapping seed -> item or a list of items, got {type(items).__name__}")
    if not out:
        raise ValueError(f"{name}: no seeds given")
    return out


def seed_pair_values(items_s, items_t, fn: Callable) -> dict:
    """Apply ``fn(item_s, item_t) -> float`` to every (seed_s, seed_t) pair.

    items_s / items_t: mapping seed -> item (a prompt (L, d), an ON mask, a PANDA task vector ...),
    or a list (seeds are then the list positions). Returns {(seed_s, seed_t): value}.
    Every pair is used, including seed_s == seed_t; for a self-pair (s == t) that pair compares a
    prompt with itself, which is why self-pairs are excluded from the analysis.
    """
    items_s, items_t = _items(items_s, "items_s"), _items(items_t, "items_t")
    return {(ss, st): float(fn(xs, xt)) for ss, xs in items_s.items() for st, xt in items_t.items()}


def seed_pair_mean(values_by_seed_pair) -> SeedPairStat:
    """Reduce per-seed-pair metric values to (mean, std, n) as SPoT does.

    ``values_by_seed_pair``: {(seed_s, seed_t): value} (from :func:`seed_pair_values`), or any
    sequence / array of values. std is the sample std (ddof = 1), NaN when there is one pair.
    A NaN value (e.g. ON with an empty mask) makes the mean NaN: it is not silently dropped.
    """
    if isinstance(values_by_seed_pair, Mapping):
        values = list(values_by_seed_pair.values())
    else:
        values = list(np.asarray(values_by_seed_pair, dtype=np.float64).reshape(-1))
    if not values:
        raise ValueError("seed_pair_mean: no values")
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return SeedPairStat(float(arr.mean()), std, int(arr.size))


def seed_pair_similarity(prompts_s, prompts_t, metric: str) -> SeedPairStat:
    """A prompt metric averaged over all (seed_s, seed_t) pairs; prompts per seed as mapping or list."""
    items_s, items_t = _items(prompts_s, "prompts_s"), _items(prompts_t, "prompts_t")
    mat = prompt_similarity_matrix(list(items_s.values()), list(items_t.values()), metric)
    return seed_pair_mean(mat.reshape(-1).tolist())


# ====================================================================== ON (Su et al.)
#
# Which module is "the first FFN layer", per architecture family. Each entry: the suffix of the
# first projection's module name and the suffix (relative to the same parent) of the FFN's output
# projection, whose *input* is the post-activation neuron value.
#   BERT / RoBERTa / ELECTRA / MiniLM: intermediate.dense (pre-GELU)  -> output.dense
#   Llama / Mistral / Qwen / SmolLM (gated SwiGLU): mlp.gate_proj     -> mlp.down_proj
#       gate_proj, not up_proj: silu(g) > 0 iff g > 0, so gate_proj's sign is the neuron's
#       "on/off" gate, like a ReLU pre-activation; up_proj is linear and has no such meaning.
#   Non-gated up/down MLPs: mlp.up_proj                              -> mlp.down_proj
#   T5 v1.1 / Flan-T5 (gated-gelu): DenseReluDense.wi_0               -> DenseReluDense.wo
#   T5 v1.0 (ReLU): DenseReluDense.wi                                 -> DenseReluDense.wo
#   GPT-2: mlp.c_fc (pre-GELU)                                        -> mlp.c_proj
_FFN_FAMILIES = (
    ("intermediate.dense", "output.dense"),
    ("mlp.gate_proj", "mlp.down_proj"),
    ("mlp.up_proj", "mlp.down_proj"),
    ("DenseReluDense.wi_0", "DenseReluDense.wo"),
    ("DenseReluDense.wi", "DenseReluDense.wo"),
    ("mlp.c_fc", "mlp.c_proj"),
)


def _ffn_modules(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """[(name of the first projection, first projection, output projection)] in layer order."""
    modules = dict(model.named_modules())
    for first_suffix, second_suffix in _FFN_FAMILIES:
        found = []
        for name, module in modules.items():
            if name == first_suffix or name.endswith("." + first_suffix):
                parent = name[: len(name) - len(first_suffix)]
                second = modules.get(parent + second_suffix)
                if second is None:
                    raise ValueError(f"{type(model).__name__}: found FFN projection {name!r} but not its output "
                                     f"projection {parent + second_suffix!r}")
                found.append((name, module, second))
        if found:
            return found
    raise ValueError(f"no transformer FFN layers found in {type(model).__name__}; known first-FFN module names: "
                     f"{[f for f, _ in _FFN_FAMILIES]}")


def ffn_first_layers(model: nn.Module) -> list[nn.Module]:
    """The first FFN projection of every transformer layer, in layer order.

    BERT/RoBERTa: ``layer.intermediate.dense``; Llama-type gated MLPs: ``mlp.gate_proj`` (the
    gate, whose sign decides whether SiLU lets the neuron through; ``mlp.up_proj`` only for
    non-gated up/down MLPs); T5: ``DenseReluDense.wi_0`` (gated) or ``DenseReluDense.wi``;
    GPT-2: ``mlp.c_fc``. For an encoder-decoder model both stacks are returned (encoder first, in
    module order); pass ``model.get_encoder()`` to :func:`activation_mask` instead.
    """
    return [first for _, first, _ in _ffn_modules(model)]


def _model_dtype_device(model: nn.Module):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


@torch.no_grad()
def activation_mask(model: nn.Module, prompt_embeds: torch.Tensor, special_token_embed: torch.Tensor,
                    position: int = -1, post_activation: bool = False) -> torch.Tensor:
    """Binary FFN activation pattern of one prompt (Su et al.'s ON), bool (n_layers, ffn_dim).

    Input: inputs_embeds = [prompt_embeds (L, d); special_token_embed (d,)], shape (1, L + 1, d),
    attention mask all ones, no task data; the model is called as
    ``model(inputs_embeds=..., attention_mask=...)`` in eval mode (dropout off; the mode is
    restored afterwards). ``position`` indexes the L + 1 positions; default -1 is the special
    token, the prediction position.

    What is binarised (a > 0), per layer, at ``position``:
      * ``post_activation=False`` (default): the output of the first FFN linear (see
        :func:`ffn_first_layers`), i.e. the pre-activation. For BERT/RoBERTa that is pre-GELU.
        Su et al.'s RoBERTa code reads the post-GELU value instead; for a plain FFN with ReLU,
        GELU or SiLU the two masks are the same, because act(a) > 0 exactly when a > 0.
      * ``post_activation=True``: the input of the FFN's output projection, i.e. act(first)
        for a plain FFN and act(gate) * up for gated FFNs (Llama, T5 v1.1), where the two
        choices do differ.
    For encoder-decoder models pass the encoder (``model.get_encoder()``). Cache the mask per
    prompt (the caller saves it) so that pairs never recompute it.
    """
    prompt_embeds = torch.as_tensor(prompt_embeds)
    special_token_embed = torch.as_tensor(special_token_embed)
    if prompt_embeds.dim() != 2:
        raise ValueError(f"prompt_embeds: expected (L, d), got shape {tuple(prompt_embeds.shape)}")
    if special_token_embed.shape != (prompt_embeds.shape[1],):
        raise ValueError(f"special_token_embed: expected shape ({prompt_embeds.shape[1]},) to match the prompt "
                         f"width, got {tuple(special_token_embed.shape)}")
    length = prompt_embeds.shape[0] + 1
    if not -length <= position < length:
        raise ValueError(f"position {position} is outside the {length} input positions (prompt + special token)")
    layers = _ffn_modules(model)
    dtype, device = _model_dtype_device(model)
    embeds = torch.cat([prompt_embeds, special_token_embed[None]], 0)[None].to(device=device, dtype=dtype)
    attention_mask = torch.ones(1, length, dtype=torch.long, device=device)

    captured: list = [None] * len(layers)
    handles = []
    for i, (_, first, second) in enumerate(layers):
        if post_activation:
            def pre_hook(module, args, i=i):
                captured[i] = args[0][0, position].detach().float().cpu()
            handles.append(second.register_forward_pre_hook(pre_hook))
        else:
            def hook(module, args, output, i=i):
                captured[i] = output[0, position].detach().float().cpu()
            handles.append(first.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(inputs_embeds=embeds, attention_mask=attention_mask)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [name for (name, _, _), c in zip(layers, captured) if c is None]
    if missing:
        raise ValueError(f"{type(model).__name__}: FFN layers {missing[:3]}{'...' if len(missing) > 3 else ''} did not "
                         f"run; for an encoder-decoder model pass model.get_encoder()")
    return torch.stack(captured) > 0


def on_overlap(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    """ON = |A ∩ B| / sqrt(|A| |B|) over all layers: the cosine of the two binary vectors.

    Masks are bool (n_layers, ffn_dim) (any equal shapes work). NaN when a mask is empty.
    """
    a = torch.as_tensor(mask_a).bool()
    b = torch.as_tensor(mask_b).bool()
    if a.shape != b.shape:
        raise ValueError(f"ON: masks of different shapes {tuple(a.shape)} and {tuple(b.shape)} (different backbones?)")
    size_a, size_b = int(a.sum()), int(b.sum())
    if size_a == 0 or size_b == 0:
        return float("nan")
    return int((a & b).sum()) / math.sqrt(size_a * size_b)


def on_windows(mask_a: torch.Tensor, mask_b: torch.Tensor, window: int = 3) -> list[float]:
    """ON per window of ``window`` consecutive layers: layers [0, w), [w, 2w), ...

    Windows do not overlap; when n_layers is not a multiple of ``window`` the last window is the
    shorter remainder. Entry i is the value stored as metric ``on_w{i}``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    a, b = torch.as_tensor(mask_a), torch.as_tensor(mask_b)
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"ON windows need two (n_layers, ffn_dim) masks of one shape; got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return [on_overlap(a[i:i + window], b[i:i + window]) for i in range(0, a.shape[0], window)]


# ====================================================================== PANDA metric


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-example pooled output: mean of last_hidden_state (N, T, h) over positions where
    attention_mask (N, T) is 1. With a prompt prepended, the prompt positions count (mask 1)."""
    mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def panda_task_vector(pooled_outputs: torch.Tensor) -> torch.Tensor:
    """PANDA task vector: mean over examples of the pooled outputs (N, h) -> (h,).

    Pooling (our reading, methods.md §3): for each of ~100 *target* examples, the backbone's
    pooled output of (prompt + target input), i.e. :func:`mean_pool` of the last hidden state over
    non-pad positions; the task vector of s on t uses P_s as the prompt, that of t uses P_t.
    """
    pooled_outputs = torch.as_tensor(pooled_outputs)
    if pooled_outputs.dim() != 2 or pooled_outputs.shape[0] == 0:
        raise ValueError(f"pooled_outputs: expected (N >= 1, h), got shape {tuple(pooled_outputs.shape)}")
    return pooled_outputs.detach().to(torch.float64).mean(0)


def panda_similarity(vec_s: torch.Tensor, vec_t: torch.Tensor) -> float:
    """PANDA metric: cosine of the two task vectors (h,)."""
    vec_s, vec_t = torch.as_tensor(vec_s).double(), torch.as_tensor(vec_t).double()
    if vec_s.shape != vec_t.shape or vec_s.dim() != 1:
        raise ValueError(f"PANDA: task vectors must be two (h,) tensors; got {tuple(vec_s.shape)} and {tuple(vec_t.shape)}")
    return _cos(vec_s, vec_t)
