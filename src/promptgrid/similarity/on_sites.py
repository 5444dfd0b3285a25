"""Where ON reads a prompt: the probe fed to the frozen model, whose FFNs are read, at which positions, and whether
before or after the nonlinearity. One entry per backbone kind and ``metrics.on_site``:

* ``su``: Su et al.'s code (thunlp/Prompt-Transferability, Prompt-Transferability-1.0/). A masked LM reads a
  ``<mask>`` written over prompt slot 0, followed by the rest of the prompt and ``<s>``; T5 reads the decoder's
  first position, the encoder holding the prompt and ``<extra_id_0>``. A neuron is on where its activation after
  the nonlinearity is > 0. Su et al. define no site for a mean-pooling encoder or a causal LM; ``su`` reads those
  at ``ours``'s probe, after the nonlinearity.
* ``ours``: where promptgrid's scorer reads its prediction (``[CLS] [MASK] prompt [SEP]`` at the ``[MASK]``, T5's
  decoder start after ``prompt + EOS``); a neuron is on where the first FFN linear's output is > 0.

For a plain FFN (ReLU, GELU, SiLU) the two thresholds agree (act(a) > 0 exactly when a > 0); for a gated FFN
(Llama, T5 v1.1) "after the nonlinearity" is the input of the output projection, act(gate) * up.
A deep prompt has no positions of its own: its probe is the same tokens without the prompt's positions, the
prompt as every layer's key/value prefix (``*_DEEP_READ_SITES``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptgrid.config.sections import ON_SITES
from promptgrid.errors import InputError

if TYPE_CHECKING:  # torch is imported inside the functions that need it: registering stays torch-free
    import torch
    from torch import nn

__all__ = ["DEEP_READ_SITES", "ON_SITES", "POST_ACTIVATION", "Probe", "READ_SITES", "SU_DEEP_READ_SITES",
           "SU_READ_SITES", "probe", "sentinel_id"]

#: ``ours``: where ON reads each backbone kind, with no task data (the README's fidelity table)
READ_SITES = {
    "masked_lm": "[CLS] [MASK] prompt [SEP]; the FFNs at the [MASK], the position the masked-LM scorer reads",
    "encoder": "prompt + the tokens of an empty input ([CLS] [SEP]); the FFNs averaged over every position, "
               "as the mean-pooling scorer averages them",
    "seq2seq": "encoder input prompt + EOS; the decoder's FFNs at its first position (the decoder start "
               "token), where Su et al.'s T5 code reads",
    "causal_lm": "prompt + EOS; the FFNs at the last position, where the next token is predicted",
}

#: ``ours`` for a deep prompt (promptgrid.models.prefix): the probe tokens of READ_SITES without the prompt's
#: positions (a deep prompt has none), the prefix in the attention of every layer where the backbone puts it
DEEP_READ_SITES = {
    "masked_lm": "[CLS] [MASK] [SEP], the prefix in every encoder layer; the FFNs at the [MASK]",
    "encoder": "the tokens of an empty input ([CLS] [SEP]), the prefix in every layer; the FFNs averaged over "
               "those tokens, as deep mean pooling averages them",
    "seq2seq": "encoder input EOS alone, unprefixed; the decoder's start token, the prefix in every decoder "
               "self-attention; the decoder's FFNs at that position",
    "causal_lm": "EOS alone, the prefix in every layer; the FFNs at that position",
}

#: ``su``: Su et al.'s probe (file:line at commit 2d15de5 of thunlp/Prompt-Transferability, README's fidelity table)
SU_READ_SITES = {
    "masked_lm": "<mask> written over prompt slot 0, then prompt slots 1..L-1 and the BOS/[CLS] token (RoBERTa's "
                 "<s>); the FFNs at position 0, the <mask>, where Su et al.'s scorer reads too",
    "encoder": "not defined by Su et al.: READ_SITES' probe (prompt + [CLS] [SEP]), the activations after the "
               "nonlinearity averaged over every position",
    "seq2seq": "encoder input prompt + <extra_id_0> (no EOS; a tokenizer without T5's sentinels: its mask token); "
               "the decoder's FFNs at its first position (the decoder start token)",
    "causal_lm": "not defined by Su et al.: READ_SITES' probe (prompt + EOS), after the nonlinearity at the last "
                 "position, the one that has seen the whole prompt",
}

#: ``su`` for a deep prompt: Su et al.'s probe tokens without the prompt's positions (they define ON for input
#: prompts only), the prefix in every layer
SU_DEEP_READ_SITES = {
    "masked_lm": "<mask> then the BOS/[CLS] token, the prefix in every encoder layer; the FFNs at the <mask>",
    "encoder": DEEP_READ_SITES["encoder"] + ", after the nonlinearity",
    "seq2seq": "encoder input <extra_id_0> alone, unprefixed; the decoder's start token, the prefix in every decoder "
               "self-attention; the decoder's FFNs at that position",
    "causal_lm": DEEP_READ_SITES["causal_lm"] + ", after the nonlinearity",
}

#: whether a site binarises after the nonlinearity (Su et al.: ``(outputs > 0)`` of RoBERTa's post-GELU
#: ``intermediate``) or the first FFN linear's output
POST_ACTIVATION = {"su": True, "ours": False}


@dataclass
class Probe:
    """One ON forward: ``bb.model(**kwargs)``, read in ``owner``'s FFNs (the model; T5: its decoder) at ``positions``
    of batch row 0 (averaged when several)."""

    owner: nn.Module
    kwargs: dict
    positions: list


def sentinel_id(tok) -> int:
    """T5's first sentinel ``<extra_id_0>``, which Su et al.'s T5 probe ends with; a tokenizer that lacks it (the
    tests' tiny T5 shares MiniLM's WordPiece vocabulary) stands in its mask token, the same role of "the span to
    fill"."""
    vocab = tok.get_vocab()
    if "<extra_id_0>" in vocab:
        return vocab["<extra_id_0>"]
    if tok.mask_token_id is not None:
        return tok.mask_token_id
    raise InputError(f"{type(tok).__name__} has neither T5's sentinel <extra_id_0> nor a mask token: ON's su site for "
                     f"a seq2seq backbone needs one (or set metrics.on_site: ours)")


def probe(bb, prompt: torch.Tensor, site: str) -> Probe:
    """The probe of one prompt on backbone ``bb`` (a promptgrid Backbone) at ``site``: an input prompt (L, d) at
    READ_SITES / SU_READ_SITES, a deep prompt (L, D) at DEEP_READ_SITES / SU_DEEP_READ_SITES."""
    if site not in ON_SITES:
        raise ValueError(f"unknown ON site {site!r}; sites: {list(ON_SITES)}")
    deep = bb.is_deep(prompt)
    kind = bb.cfg.kind
    if site == "su" and kind in ("masked_lm", "seq2seq"):
        return _su_deep(bb, prompt) if deep else _su_input(bb, prompt)
    return _ours_deep(bb, prompt) if deep else _ours_input(bb, prompt)


def _embed(bb, *ids):
    """Input embeddings (n, d) of the token ids that are not None."""
    import torch

    return bb.embed_layer(torch.tensor([i for i in ids if i is not None], device=bb.device))


def _ones(n: int, device):
    import torch

    return torch.ones(1, n, dtype=torch.long, device=device)


def _eos(tok):
    return tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id


def _bos(tok):
    return tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id


def _decoder_start(bb, device):
    import torch

    start = bb.model.config.decoder_start_token_id
    return torch.tensor([[start if start is not None else 0]], device=device)


def _ours_input(bb, prompt) -> Probe:
    import torch

    tok, device, kind = bb.tokenizer, bb.device, bb.cfg.kind
    prompt = prompt.to(device=device, dtype=bb.embed_layer.weight.dtype)
    if kind == "masked_lm":
        sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        embeds = torch.cat([_embed(bb, _bos(tok), tok.mask_token_id), prompt, _embed(bb, sep)])
        positions, owner = [1], bb.model
    elif kind == "encoder":
        embeds = torch.cat([prompt, _embed(bb, *bb.input_ids([""])[0])])
        positions, owner = list(range(embeds.shape[0])), bb.model
    else:
        embeds = torch.cat([prompt, _embed(bb, _eos(tok))])
        positions, owner = ([0], bb.model.get_decoder()) if kind == "seq2seq" else ([embeds.shape[0] - 1], bb.model)
    kwargs = {"inputs_embeds": embeds[None], "attention_mask": _ones(embeds.shape[0], device)}
    if kind == "seq2seq":
        kwargs["decoder_input_ids"] = _decoder_start(bb, device)
    return Probe(owner, kwargs, positions)


def _ours_deep(bb, prompt) -> Probe:
    import torch

    tok, device, kind = bb.tokenizer, bb.device, bb.cfg.kind
    prompts = prompt[None]  # (1, L, D)
    if kind == "seq2seq":
        ids = torch.tensor([[_eos(tok)]], device=device)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                  "decoder_input_ids": _decoder_start(bb, device), **bb.decoder_prefix(prompts)}
        return Probe(bb.model.get_decoder(), kwargs, [0])
    # masked LM: input_ids of "" is [SEP], and its deep input puts [CLS] [MASK] before it; encoder: [CLS] [SEP]
    ids = [_eos(tok)] if kind == "causal_lm" else bb.input_ids([""])[0]
    kwargs, _, _ = bb.model_inputs(prompts, bb.collate([ids]))
    n_tokens = kwargs["inputs_embeds"].shape[1]
    positions = {"masked_lm": [1], "encoder": list(range(n_tokens))}.get(kind, [n_tokens - 1])
    return Probe(bb.model, kwargs, positions)


def _su_input(bb, prompt) -> Probe:
    """Masked LM: Su et al.'s ``prompt_emb[:, 0] = <mask>`` (model/modelling_roberta.py:198-202) over
    ``prompt + <s>`` (formatter/activate_neuronPromptRobertaFormatter.py:39-45), read at position 0
    (activate_neuron_Roberta.py:251). Their embedding layer also zeroes the prompt's position embeddings
    (modelling_roberta.py:211-213), which their prompts were trained with; promptgrid's prompts were trained with the
    backbone's own positions, so this probe keeps them. T5: ``prompt + <extra_id_0>``
    (formatter/activate_neuronPromptT5Formatter.py:40-46), decoder position 0 (activate_neuron_T5.py:187, 258)."""
    import torch

    tok, device = bb.tokenizer, bb.device
    prompt = prompt.to(device=device, dtype=bb.embed_layer.weight.dtype)
    if bb.cfg.kind == "masked_lm":
        if tok.mask_token_id is None:
            raise InputError(f"backbone '{bb.name}': its tokenizer has no mask token for ON's su site")
        embeds = torch.cat([_embed(bb, tok.mask_token_id), prompt[1:], _embed(bb, _bos(tok))])
        return Probe(bb.model, {"inputs_embeds": embeds[None], "attention_mask": _ones(embeds.shape[0], device)}, [0])
    embeds = torch.cat([prompt, _embed(bb, sentinel_id(tok))])
    kwargs = {"inputs_embeds": embeds[None], "attention_mask": _ones(embeds.shape[0], device),
              "decoder_input_ids": _decoder_start(bb, device)}
    return Probe(bb.model.get_decoder(), kwargs, [0])


def _su_deep(bb, prompt) -> Probe:
    import torch

    from promptgrid.models.prefix import cache_keyword

    tok, device = bb.tokenizer, bb.device
    prompts = prompt[None]  # (1, L, D)
    if bb.cfg.kind == "seq2seq":
        ids = torch.tensor([[sentinel_id(tok)]], device=device)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                  "decoder_input_ids": _decoder_start(bb, device), **bb.decoder_prefix(prompts)}
        return Probe(bb.model.get_decoder(), kwargs, [0])
    if tok.mask_token_id is None:
        raise InputError(f"backbone '{bb.name}': its tokenizer has no mask token for ON's su site")
    embeds = _embed(bb, tok.mask_token_id, _bos(tok))[None]  # (1, 2, d): <mask> <s>, no prompt positions
    cache = bb.prefix_geometry.cache(prompts.to(device=device, dtype=embeds.dtype))
    kwargs = {"inputs_embeds": embeds, "attention_mask": _ones(prompt.shape[0] + embeds.shape[1], device),
              cache_keyword(bb.model): cache}
    return Probe(bb.model, kwargs, [0])
