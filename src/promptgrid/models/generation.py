"""Decoding with a soft prompt on causal LM and seq2seq backbones: greedy generation of a bank of
prompts at once, and the teacher-forced loss of target texts.
"""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from promptgrid.models.backbones import Backbone, BackboneError


def stop_token_ids(backbone: Backbone) -> list:
    """Token ids that end a generation; the first is the EOS appended to training targets."""
    model, tok = backbone.model, backbone.tokenizer
    ids = []
    gen_cfg = getattr(model, "generation_config", None)
    for value in (tok.eos_token_id, getattr(gen_cfg, "eos_token_id", None), getattr(model.config, "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    if not ids and tok.sep_token_id is not None:
        ids.append(int(tok.sep_token_id))
    if not ids:
        raise BackboneError(f"backbone '{backbone.name}': neither tokenizer nor model config defines an EOS token")
    return ids


def _decoder_start_id(backbone: Backbone) -> int:
    model = backbone.model
    for cfg in (model.config, getattr(model, "generation_config", None)):
        v = getattr(cfg, "decoder_start_token_id", None)
        if v is not None:
            return int(v)
    return backbone.pad_id


def _target_ids(backbone: Backbone, target: str, max_target_length: Optional[int], eos: int) -> list:
    text = " " + target if backbone.kind == "causal_lm" else target
    ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_target_length is not None:
        ids = ids[: max(max_target_length - 1, 0)]
    return ids + [eos]


def _check_family(backbone: Backbone) -> None:
    if backbone.kind not in ("causal_lm", "seq2seq"):
        raise BackboneError(f"backbone '{backbone.name}' is a {backbone.kind!r} model; text-to-text tasks need "
                            f"a causal_lm or seq2seq backbone")


def _check_batch(prompts: torch.Tensor, n: int, what: str) -> None:
    if prompts.dim() != 3 or prompts.shape[0] != n:
        raise ValueError(f"prompts must be (B, L, d) with B = {n} {what}; got {tuple(prompts.shape)}")


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _causal_logits_at(model, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, **kwargs):
    """Model output whose ``logits`` (B, K, V) are taken at the sorted, unique ``positions`` (K,) only
    (``logits_to_keep`` where the model has it: full-sequence logits of a 50k vocabulary are large)."""
    if _keeps_logits(model):
        out = model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=positions, **kwargs)
        if out.logits.shape[1] == positions.numel():
            return out
    out = model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
    out.logits = out.logits[:, positions]
    return out


def greedy_token_ids(backbone: Backbone, prompts: torch.Tensor, texts: Sequence[str],
                     max_new_tokens: int = 32) -> list:
    """Greedy continuation token ids per example (stop token excluded). prompts: (B, L, d)."""
    _check_family(backbone)
    texts = list(texts)
    _check_batch(prompts, len(texts), "texts")
    if max_new_tokens < 1 or not texts:
        return [[] for _ in texts]
    model = backbone.model
    stop_ids = stop_token_ids(backbone)
    device = backbone.device
    stops = torch.tensor(stop_ids, device=device)
    batch = backbone.collate(backbone.input_ids(texts))
    B = len(texts)
    out_ids = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    with torch.inference_mode():
        embeds, mask = backbone.prompted_inputs(prompts, batch)
        if backbone.kind == "causal_lm":
            # right-padded [prompt][tokens][pad]: the scoring layout. Row b's last real position is
            # lengths[b] - 1; new tokens go after the pads, masked pads hidden, positions continuing
            # from lengths[b] so they match an unpadded run.
            lengths = mask.sum(1)
            keep, inverse = torch.unique(lengths - 1, sorted=True, return_inverse=True)
            out = _causal_logits_at(model, embeds, mask, keep, use_cache=True)
            logits = out.logits[torch.arange(B, device=device), inverse]
            position = lengths.clone()
        else:
            enc = model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            cur = torch.full((B, 1), _decoder_start_id(backbone), dtype=torch.long, device=device)
            out = model(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=cur, use_cache=True)
            logits = out.logits[:, -1]
        for step in range(max_new_tokens):
            nxt = logits.float().argmax(-1)
            # one host copy per generated token (decoding needs it), not one per row
            nxt_host, stop_host = nxt.tolist(), torch.isin(nxt, stops).tolist()
            for b in (~done).nonzero().flatten().tolist():
                if not stop_host[b]:
                    out_ids[b].append(nxt_host[b])
            done |= torch.isin(nxt, stops)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            nxt = nxt.masked_fill(done, stop_ids[0]).unsqueeze(1)  # finished rows idle on EOS
            if backbone.kind == "causal_lm":
                mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
                out = model(inputs_embeds=backbone.embed_layer(nxt), attention_mask=mask,
                            position_ids=position.unsqueeze(1), past_key_values=out.past_key_values, use_cache=True)
                position = position + 1
            else:
                out = model(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=nxt,
                            past_key_values=out.past_key_values, use_cache=True)
            logits = out.logits[:, -1]
    return out_ids


def generate(backbone: Backbone, prompts: torch.Tensor, texts: Sequence[str], max_new_tokens: int = 32) -> list:
    """Greedy generations (list of B strings, special tokens dropped) for prompts (B, L, d) and B
    input texts; the caller batches. Deterministic: no sampling anywhere."""
    ids = greedy_token_ids(backbone, prompts, texts, max_new_tokens)
    return [backbone.tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]


def seq2seq_loss(backbone: Backbone, prompts: torch.Tensor, texts: Sequence[str], targets: Sequence[str],
                 max_target_length: Optional[int] = None) -> torch.Tensor:
    """Per-example teacher-forced cross-entropy (B,), the mean over the target's tokens (EOS
    included) of -log p(token | prompt, input, previous target tokens). prompts: (B, L, d), one
    target string per example (a frame's ``targets[0]``). Differentiable in ``prompts``.
    ``max_target_length`` caps the target tokens (EOS included)."""
    targets = list(targets)
    bad = [t for t in targets if not isinstance(t, str)]
    if bad:
        raise ValueError(f"targets must be one string per example (pick targets[0] of a frame row); got {bad[0]!r}")
    return teacher_forced(backbone, prompts, texts, targets, max_target_length)[0]


def teacher_forced(backbone: Backbone, prompts: torch.Tensor, texts, targets, max_target_length: Optional[int] = None):
    """Teacher-forced pass over the targets, keeping the logits (PANDA distils them).

    Returns (loss (B,), token logits (B, T, V) float, mask (B, T)): the loss is the mean over each
    target's tokens (EOS included) of -log p(token | prompt, input, previous target tokens); row b's
    logits at target position j predict its j-th target token; ``mask`` marks the real target positions.
    prompts: (B, L, d), one target string per example. Differentiable in ``prompts``.
    """
    _check_family(backbone)
    texts, targets = list(texts), list(targets)
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    _check_batch(prompts, len(texts), "texts")
    model = backbone.model
    B, L = prompts.shape[:2]
    eos = stop_token_ids(backbone)[0]
    tgt = [_target_ids(backbone, t, max_target_length, eos) for t in targets]
    T = max(len(t) for t in tgt)
    device = backbone.device
    mask = torch.zeros(B, T)
    for b, t in enumerate(tgt):
        mask[b, :len(t)] = 1.0
    if backbone.kind == "causal_lm":
        ctx = backbone.input_ids(texts)
        packed = backbone.collate([c + t for c, t in zip(ctx, tgt)])
        embeds, attn = backbone.prompted_inputs(prompts, packed)
        rows, cols, pos, gold = [], [], [], []
        for b, (c, t) in enumerate(zip(ctx, tgt)):
            start = L + len(c)
            rows += [b] * len(t)
            cols += range(len(t))
            pos += range(start - 1, start - 1 + len(t))  # token at position p is predicted at p - 1
            gold += t
        pos = torch.tensor(pos, device=device)
        keep, inverse = torch.unique(pos, sorted=True, return_inverse=True)
        logits = _causal_logits_at(model, embeds, attn, keep).logits
        rows_t = torch.tensor(rows, device=device)
        token_logits = logits[rows_t, inverse].float()
        nll = F.cross_entropy(token_logits, torch.tensor(gold, device=device), reduction="none")
        per_example = torch.zeros(B, dtype=nll.dtype, device=device).index_add(0, rows_t, nll)
        loss = per_example / torch.tensor([len(t) for t in tgt], dtype=nll.dtype, device=device)
        out = token_logits.new_zeros(B, T, token_logits.shape[-1])
        out = out.index_put((rows_t, torch.tensor(cols, device=device)), token_logits)
        return loss, out, mask.to(device)
    batch = backbone.collate(backbone.input_ids(texts))
    embeds, attn = backbone.prompted_inputs(prompts, batch)
    labels = backbone.collate(tgt)
    label_ids = labels.input_ids.masked_fill(labels.attention_mask == 0, -100)
    enc = model.get_encoder()(inputs_embeds=embeds, attention_mask=attn).last_hidden_state
    logits = model(encoder_outputs=(enc,), attention_mask=attn, labels=label_ids).logits.float()
    nll = F.cross_entropy(logits.transpose(1, 2), label_ids, ignore_index=-100, reduction="none")
    return nll.sum(1) / labels.attention_mask.sum(1).to(nll.dtype), logits, labels.attention_mask.float()
