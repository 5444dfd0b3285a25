"""ON (Su et al.): the overlap of FFN neurons that a prompt activates in the frozen model.

Registered as the similarity metric ``on``; it also writes ``on_w<i>``, the overlap within the i-th
window of ``metrics.on_window`` layers. Each prompt's mask is computed once and cached beside the
study (``Study.prompt_cache``). Where a prompt is read (``metrics.on_site``: Su et al.'s site or promptgrid's
own) is :mod:`promptgrid.similarity.on_sites`; a deep prompt (no positions of its own) is read with the probe's
tokens and the prompt as every layer's key/value prefix (:data:`DEEP_READ_SITES`, :data:`SU_DEEP_READ_SITES`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from promptgrid.errors import InputError
from promptgrid.registry import SIMILARITIES, SimilaritySpec
from promptgrid.similarity import on_sites
from promptgrid.similarity.on_sites import (  # noqa: F401  (ON's read sites, re-exported: on.READ_SITES)
    DEEP_READ_SITES,
    POST_ACTIVATION,
    READ_SITES,
    SU_DEEP_READ_SITES,
    SU_READ_SITES,
)

if TYPE_CHECKING:  # torch is imported inside the functions that need it: registering stays torch-free
    import torch
    from torch import nn



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
    raise InputError(f"no transformer FFN layers found in {type(model).__name__}; known first-FFN module names: "
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
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


def _capture(ffn_owner: nn.Module, run, positions, post_activation: bool):
    """Run ``run()`` once with hooks on every FFN of ``ffn_owner``; per layer, the first projection's output
    (or, ``post_activation``, the output projection's input) averaged over ``positions`` of batch row 0:
    float (n_layers, ffn_dim)."""
    import torch

    layers = _ffn_modules(ffn_owner)
    captured: list = [None] * len(layers)
    handles = []
    for i, (_, first, second) in enumerate(layers):
        if post_activation:
            def pre_hook(module, args, i=i):
                captured[i] = args[0][0, positions].detach().float().mean(0).cpu()
            handles.append(second.register_forward_pre_hook(pre_hook))
        else:
            def hook(module, args, output, i=i):
                captured[i] = output[0, positions].detach().float().mean(0).cpu()
            handles.append(first.register_forward_hook(hook))
    was_training = ffn_owner.training
    ffn_owner.eval()
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
        ffn_owner.train(was_training)
    missing = [name for (name, _, _), c in zip(layers, captured) if c is None]
    if missing:
        raise ValueError(f"{type(ffn_owner).__name__}: FFN layers {missing[:3]}{'...' if len(missing) > 3 else ''} "
                         f"did not run; for an encoder-decoder model pass model.get_encoder()")
    return torch.stack(captured)


def activation_mask(model: nn.Module, prompt_embeds: torch.Tensor, special_token_embed: torch.Tensor,
                    position: int = -1, post_activation: bool = False) -> torch.Tensor:
    """Binary FFN activation pattern of one prompt, bool (n_layers, ffn_dim), read at one position.

    Input: inputs_embeds = [prompt_embeds (L, d); special_token_embed (d,)], shape (1, L + 1, d),
    attention mask all ones, no task data; the model is called as
    ``model(inputs_embeds=..., attention_mask=...)`` in eval mode (dropout off; the mode is
    restored afterwards). ``position`` indexes the L + 1 positions; default -1 is the special
    token. :func:`prompt_activation_mask` picks the input and the read site per backbone kind.

    What is binarised (a > 0), per layer, at ``position``:
      * ``post_activation=False`` (default): the output of the first FFN linear (see
        :func:`ffn_first_layers`), i.e. the pre-activation. For BERT/RoBERTa that is pre-GELU.
        Su et al.'s RoBERTa code reads the post-GELU value instead; for a plain FFN with ReLU,
        GELU or SiLU the two masks are the same, because act(a) > 0 exactly when a > 0.
      * ``post_activation=True``: the input of the FFN's output projection, i.e. act(first)
        for a plain FFN and act(gate) * up for gated FFNs (Llama, T5 v1.1), where the two
        choices do differ.
    For encoder-decoder models pass the encoder (``model.get_encoder()``).
    """
    import torch

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
    dtype, device = _model_dtype_device(model)
    embeds = torch.cat([prompt_embeds, special_token_embed[None]], 0)[None].to(device=device, dtype=dtype)
    mask = torch.ones(1, length, dtype=torch.long, device=device)
    return _capture(model, lambda: model(inputs_embeds=embeds, attention_mask=mask), [position], post_activation) > 0


def prompt_activation_mask(bb, prompt: torch.Tensor, post_activation: Optional[bool] = None,
                           site: str = "ours") -> torch.Tensor:
    """ON's activation pattern of one prompt on backbone ``bb`` (a promptgrid Backbone), bool (n_layers, ffn_dim).

    ``site`` (``metrics.on_site``) picks the probe and the read positions (:func:`on_sites.probe`): an input prompt
    (L, d) at :data:`READ_SITES` (``ours``) or :data:`SU_READ_SITES` (``su``), a deep prompt (L, D) at
    :data:`DEEP_READ_SITES` / :data:`SU_DEEP_READ_SITES`. ``post_activation`` (default: the site's,
    :data:`POST_ACTIVATION`) binarises the FFN's output projection's input rather than its first linear's output.
    No task data is fed."""
    probe = on_sites.probe(bb, prompt, site)
    post = POST_ACTIVATION[site] if post_activation is None else post_activation
    return _capture(probe.owner, lambda: bb.model(**probe.kwargs), probe.positions, post) > 0


def on_overlap(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    """ON = |A ∩ B| / sqrt(|A| |B|) over all layers: the cosine of the two binary vectors.

    Masks are bool (n_layers, ffn_dim) (any equal shapes work). NaN when a mask is empty.
    """
    import torch

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
    import torch

    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    a, b = torch.as_tensor(mask_a), torch.as_tensor(mask_b)
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"ON windows need two (n_layers, ffn_dim) masks of one shape; got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return [on_overlap(a[i:i + window], b[i:i + window]) for i in range(0, a.shape[0], window)]


def compute(ctx, backbone: str, target=None) -> dict:
    """{(source, target, name): SeedPairStat} for ``on`` and every ``on_w<i>``, all (source, target) pairs,
    each averaged over all seed pairs."""
    import torch

    from promptgrid.models.precision import precision_scope
    from promptgrid.similarity.seed_pairs import seed_pair_mean

    cfg = ctx.cfg
    site = cfg.metrics.on_site
    cache_name = "on_mask" if site == "ours" else f"on_mask_{site}"  # "on_mask": the caches made before sites

    def mask_of(task, seed):
        def make():
            bb = ctx.backbone(backbone)
            with precision_scope(ctx.precision, bb.device):
                return prompt_activation_mask(bb, ctx.task_prompt(backbone, task, seed), site=site).to(torch.uint8)
        return ctx.prompt_cache(cache_name, backbone, task, seed, make).bool()

    masks = {(t, seed): mask_of(t, seed) for t in cfg.trained_tasks for seed in cfg.seeds}
    out = {}
    for s in cfg.sources:
        for t in cfg.targets:
            per_name: dict = {}
            for ss in cfg.seeds:
                for st in cfg.seeds:
                    a, b = masks[(s, ss)], masks[(t, st)]
                    per_name.setdefault("on", []).append(on_overlap(a, b))
                    for i, v in enumerate(on_windows(a, b, cfg.metrics.on_window)):
                        per_name.setdefault(f"on_w{i}", []).append(v)
            out.update({(s, t, name): seed_pair_mean(values) for name, values in per_name.items()})
    return out


SIMILARITIES.add(SimilaritySpec(
    name="on", scope="model", order=7, compute=compute, config_sections=("metrics.on_window", "metrics.on_site"),
    summary="overlap of the FFN neurons the two prompts activate (all layers; on_w<i>: per layer window)",
    paper="Su et al. 2022, ON; metrics.on_site su: read at Su et al.'s code's site after the nonlinearity "
          "(on.SU_READ_SITES), ours: where promptgrid's scorer reads (on.READ_SITES)"))
