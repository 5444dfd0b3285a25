"""Deep prompts (P-tuning v2, PEFT's PrefixTuning without projection): a learned key/value prefix in the
self-attention of every layer.

Stored shape. A deep prompt is a tensor (L, D) with D = n_layers * 2 * n_heads * head_dim, the layout of
PEFT's ``PrefixTuning`` embedding: row i is prefix position i, and its columns are, layer by layer, the
key then the value of that position, each (n_heads, head_dim) flattened. So a deep prompt is saved,
banked (K, L, D), averaged (SPoT's mixture) and exported exactly like an input prompt (L, d); only its
width differs, and the width alone says which kind a prompt is (D > d for every model with a layer).

Where the prefixes go, per backbone kind (as PEFT puts them, so ``PeftModel`` gives the same outputs):
- encoder, masked LM: every self-attention layer of the encoder;
- causal LM: every self-attention layer;
- seq2seq (T5): every self-attention layer of the decoder. The encoder runs unprefixed, as in PEFT, whose
  seq2seq prefix is only the decoder's cache. (PEFT 0.21 also gives decoder layer i the rows of layer
  2i mod n_layers; promptgrid gives each layer its own, so the two agree on one-layer decoders only, and a
  deeper seq2seq deep prompt is not exported to PEFT.)

As in PEFT and P-tuning v2, the prefix occupies cache positions 0..L-1: the tokens' absolute positions
start at L (BERT's position embeddings, Llama's rotary positions), and the attention mask is the prefix's
L ones before the tokens' mask.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixGeometry:
    """The key/value shape of the prefixed attention layers: n_layers, n_heads, head_dim."""

    n_layers: int
    n_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        """D, the width of a stored deep prompt (L, D)."""
        return self.n_layers * 2 * self.n_heads * self.head_dim

    @property
    def block_width(self) -> int:
        """Width of one key or value block of a layer: n_heads * head_dim."""
        return self.n_heads * self.head_dim

    def blocks(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (..., L, D) -> (..., 2 * n_layers, L, n_heads * head_dim): the key (even) and value (odd)
        prefix of each layer as its own (L, h) matrix, the unit that the prompt metrics compare."""
        *lead, L, D = prompts.shape
        if D != self.width:
            raise ValueError(f"a deep prompt of this backbone has width {self.width}; got {D}")
        x = prompts.reshape(*lead, L, 2 * self.n_layers, self.block_width)
        return x.transpose(-3, -2)

    def cache(self, prompts: torch.Tensor, seq2seq: bool = False):
        """The per-example prefixes as a transformers cache: prompts (B, L, D) -> a ``DynamicCache`` holding, for
        layer i, keys and values (B, n_heads, L, head_dim) (seq2seq: the decoder's self-attention cache of an
        ``EncoderDecoderCache``). Built anew for every forward pass: a forward appends to the cache it gets."""
        from transformers import DynamicCache, EncoderDecoderCache

        B, L, _ = prompts.shape
        kv = prompts.reshape(B, L, 2 * self.n_layers, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cache = DynamicCache()
        for i in range(self.n_layers):
            cache.update(kv[2 * i], kv[2 * i + 1], i)
        return EncoderDecoderCache(cache, DynamicCache()) if seq2seq else cache


def geometry(model_config, seq2seq: bool = False) -> PrefixGeometry:
    """The prefix geometry of a transformers model config (seq2seq: its decoder's self-attention)."""
    cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    if seq2seq:
        n_layers = getattr(cfg, "num_decoder_layers", None) or cfg.num_layers
    else:
        n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None) or cfg.n_layer
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None) or cfg.n_head
    # grouped-query attention: the cache holds the key/value heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.n_embd
    head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or hidden // heads
    return PrefixGeometry(int(n_layers), int(kv_heads), int(head_dim))


def cache_keyword(model) -> str:
    """The name under which ``model.forward`` takes a cache: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (older releases)."""
    for module in (model, getattr(model, "base_model", model)):  # a head model may pass **kwargs to its base
        params = inspect.signature(module.forward).parameters
        if "cache" in params:
            return "cache"
        if "past_key_values" in params:
            return "past_key_values"
    return "past_key_values"


def random_deep_prompt(length: int, width: int, std: float, seed: int) -> torch.Tensor:
    """A fresh deep prompt (L, D): N(0, std^2), seeded. PEFT draws N(0, 1) (an nn.Embedding's default); P-tuning v2 as
    WHU-ZQH/PANDA ran it draws N(0, 0.02^2), because transformers re-initialises the prefix embedding, missing from
    the checkpoint, with BERT's initializer_range."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(length, width, generator=gen) * std
