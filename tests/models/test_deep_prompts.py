"""Deep prompts against references, in IEEE fp32: PEFT's PrefixTuning without projection (encoder, causal LM,
one-layer T5), a hand-written BERT for the masked LM (PEFT refuses BertForMaskedLM), and gradients that reach
the key and value block of every layer."""
import copy
import math

import peft  # a required dependency (pyproject): a missing install must fail, not skip
import pytest
import torch
import torch.nn.functional as F
from tiny_models import liven, tiny_backbone, tokenizer
from transformers import T5Config, T5ForConditionalGeneration

from promptgrid.config import BackboneConfig
from promptgrid.models.loading import wrap_model

TEXTS = ["the room was lovely", "terrible service, never again, not for any money"]
LABELS = ["positive", "negative"]
ATOL = 1e-5
TASK_TYPES = {"encoder": "FEATURE_EXTRACTION", "causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def _deep_prompts(bb, K=2, L=3, seed=0):
    """K different deep prompts (K, L, D), std 0.5 so each layer's prefix moves the outputs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, L, bb.deep_width, generator=g) * 0.5


def _peft(bb, prompt, task_type=None):
    """PEFT's PrefixTuning (no projection) on a copy of the backbone's weights, its embedding set to prompt (L, D)."""
    cfg = peft.PrefixTuningConfig(task_type=task_type or TASK_TYPES[bb.kind], num_virtual_tokens=prompt.shape[0],
                                  prefix_projection=False, inference_mode=True)
    pm = peft.get_peft_model(copy.deepcopy(bb.model), cfg)
    weight = pm.prompt_encoder["default"].embedding.weight
    assert weight.shape == prompt.shape, "PEFT's prefix embedding has promptgrid's (L, D) layout"
    with torch.no_grad():
        weight.copy_(prompt)
    return pm.eval()


def _batch(bb):
    batch = bb.collate(bb.input_ids(TEXTS))
    assert (batch.attention_mask == 0).any(), "the test needs right padding in the batch"
    return batch


def _row(batch, b):
    """Row b of the batch without its padding: input_ids and attention_mask (1, n)."""
    n = int(batch.attention_mask[b].sum())
    return batch.input_ids[b:b + 1, :n], batch.attention_mask[b:b + 1, :n]


def _t5_backbone(n_layers: int):
    """A lively tiny T5 with n_layers encoder and decoder layers."""
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=tokenizer().vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=n_layers,
                   num_decoder_layers=n_layers, num_heads=2, decoder_start_token_id=0, pad_token_id=0,
                   eos_token_id=102, attn_implementation="eager")
    bb = wrap_model("tiny-t5", BackboneConfig(model="tiny", kind="seq2seq", max_length=32),
                    T5ForConditionalGeneration(cfg), tokenizer())
    return liven(bb)


def _max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- PEFT PrefixTuning references
def test_encoder_pooled_and_scores_equal_peft_row_by_row():
    """Two prompts in one padded batch: row b against PEFT carrying prompt b on that row alone."""
    bb = liven(tiny_backbone("encoder", temperature=5.0))
    prompts, batch, head = _deep_prompts(bb), _batch(bb), bb.task_head(LABELS)
    with torch.no_grad():
        ours = bb.pooled(prompts, batch)
        ours_scores = bb.logits(prompts, batch, head)
        theirs = torch.cat([_peft(bb, prompts[b])(*_row(batch, b)).last_hidden_state.mean(1) for b in range(2)])
        plain = bb.pooled(torch.zeros(2, 1, bb.embed_dim), batch)  # an all-zero input prompt: no prefix
    theirs_scores = 5.0 * F.normalize(theirs, dim=-1) @ head.label_embeddings.T
    assert ours.shape == (2, bb.embed_dim)
    assert _max_diff(ours, theirs) <= ATOL
    assert _max_diff(ours_scores, theirs_scores) <= ATOL
    assert _max_diff(ours, plain) > 1e-2  # the prefix matters, so the equality is not vacuous


def test_causal_lm_logits_and_label_scores_equal_peft():
    bb = liven(tiny_backbone("causal_lm"))
    prompts, batch, head = _deep_prompts(bb, seed=1), _batch(bb), bb.task_head(LABELS)
    with torch.no_grad():
        kwargs, out_mask, offset = bb.model_inputs(prompts, batch)
        ours = bb.model(**kwargs).logits
        ours_scores = bb.logits(prompts, batch, head)
        theirs_scores = torch.empty(2, len(LABELS))
        for b in range(2):
            pm = _peft(bb, prompts[b])
            # PEFT on the whole padded batch with prompt b: its row b is our row b (prefix tuning adds no
            # output positions, so the logits line up token for token)
            theirs = pm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            assert _max_diff(ours[b], theirs[b]) <= ATOL
            ctx = _row(batch, b)[0][0].tolist()
            for c, label in enumerate(head.label_token_ids):
                row = torch.tensor([ctx + label])
                logp = F.log_softmax(pm(input_ids=row, attention_mask=torch.ones_like(row)).logits, -1)[0]
                start = len(ctx) - 1  # label token j is predicted at position len(ctx) + j - 1
                theirs_scores[b, c] = logp[start:start + len(label)].gather(-1, torch.tensor(label)[:, None]).sum()
    assert offset == 0 and torch.equal(out_mask, batch.attention_mask)
    assert _max_diff(ours_scores, theirs_scores) <= ATOL
    assert _max_diff(ours_scores[0], ours_scores[1]) > 1e-3


def test_one_layer_t5_label_scores_and_pooled_equal_peft():
    """PEFT 0.21's seq2seq prefix (decoder self-attention only) gives our outputs on a one-layer decoder."""
    bb = _t5_backbone(1)
    prompts, batch, head = _deep_prompts(bb, seed=2), _batch(bb), bb.task_head(LABELS)
    start = torch.tensor([[bb.model.config.decoder_start_token_id]])
    with torch.no_grad():
        ours_scores = bb.logits(prompts, batch, head)
        ours_pooled = bb.pooled(prompts, batch)
        theirs_scores = torch.empty(2, len(LABELS))
        theirs_pooled = torch.empty(2, bb.embed_dim)
        for b in range(2):
            pm = _peft(bb, prompts[b])
            ids, mask = _row(batch, b)
            for c, label in enumerate(head.label_token_ids):
                labels = torch.tensor([label])
                logp = F.log_softmax(pm(input_ids=ids, attention_mask=mask, labels=labels).logits, -1)
                theirs_scores[b, c] = logp.gather(-1, labels[..., None]).sum()
            out = pm(input_ids=ids, attention_mask=mask, decoder_input_ids=start, output_hidden_states=True)
            theirs_pooled[b] = out.decoder_hidden_states[-1][0, 0]
    assert _max_diff(ours_scores, theirs_scores) <= ATOL
    assert _max_diff(ours_pooled, theirs_pooled) <= ATOL
    assert _max_diff(ours_scores[0], ours_scores[1]) > 1e-3


def _peft_layer_mapping(bb, prompt):
    """prompt (L, D) with decoder layer i's key/value rows replaced by those of layer 2i mod n: what PEFT 0.21's
    SEQ_2_SEQ_LM get_prompt does (cat([kv, kv], dim=2) then split(4): self-attention of chunk i = entry 4i)."""
    geo = bb.prefix_geometry
    blocks = geo.blocks(prompt)  # (2n, L, h)
    order = [2 * ((2 * i) % geo.n_layers) + kv for i in range(geo.n_layers) for kv in (0, 1)]
    return blocks[order].transpose(0, 1).reshape(prompt.shape)


@pytest.mark.parametrize("n_layers", [2, 3])
def test_peft_gives_deeper_t5_decoders_other_layers_prefixes(n_layers):
    """Documents PEFT 0.21's seq2seq layer mapping, the reason export refuses seq2seq decoders of more than
    one layer: if a PEFT upgrade gives each layer its own rows, the first assertion fails and export can open up."""
    bb = _t5_backbone(n_layers)
    prompt = _deep_prompts(bb, K=1, seed=4)[0]
    batch = _batch(bb)
    decoder_ids = torch.tensor([[0, 7, 9, 11]] * 2)
    pm = _peft(bb, prompt)
    with torch.no_grad():
        theirs = pm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=decoder_ids)
        enc, mask = bb.token_inputs(batch)

        def ours(p):
            return bb.model(inputs_embeds=enc, attention_mask=mask, decoder_input_ids=decoder_ids,
                            **bb.decoder_prefix(p.expand(2, -1, -1))).logits

        assert _max_diff(ours(prompt), theirs.logits) > 1e-2
        assert _max_diff(ours(_peft_layer_mapping(bb, prompt)), theirs.logits) <= ATOL


# ---------------------------------------------------------------- masked LM: a hand-written BERT
def _bert_layer(layer, x, prefix_k, prefix_v, bias, n_heads):
    """One BERT layer over x (T, h) with prefix keys/values (L, h) before its own; bias (L+T,) 0 or -inf."""
    att = layer.attention
    T, h = x.shape
    hd = h // n_heads

    def heads(t):  # (n, h) -> (n_heads, n, hd)
        return t.view(-1, n_heads, hd).transpose(0, 1)

    q = heads(att.self.query(x))
    k = heads(torch.cat([prefix_k, att.self.key(x)]))
    v = heads(torch.cat([prefix_v, att.self.value(x)]))
    probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + bias, dim=-1)
    ctx = (probs @ v).transpose(0, 1).reshape(T, h)
    x = att.output.LayerNorm(att.output.dense(ctx) + x)
    return layer.output.LayerNorm(layer.output.dense(F.gelu(layer.intermediate.dense(x))) + x)


def _reference_masked_lm(model, ids, prompt, n_heads):
    """MLM logits (V,) at position 1 of ids (n,) = [CLS] [MASK] x.. [SEP] with deep prompt (L, D): positions
    start at L, every layer's keys and values start with the prompt's rows of that layer."""
    bert = model.bert
    L, n = prompt.shape[0], ids.shape[0]
    emb = bert.embeddings
    x = emb.word_embeddings(ids) + emb.position_embeddings(torch.arange(L, L + n)) + emb.token_type_embeddings(
        torch.zeros_like(ids))
    x = emb.LayerNorm(x)
    h = x.shape[1]
    bias = torch.zeros(L + n)
    for i, layer in enumerate(bert.encoder.layer):
        x = _bert_layer(layer, x, prompt[:, 2 * i * h:(2 * i + 1) * h], prompt[:, (2 * i + 1) * h:(2 * i + 2) * h],
                        bias, n_heads)
    t = model.cls.predictions.transform
    y = t.LayerNorm(F.gelu(t.dense(x[1])))
    return model.cls.predictions.decoder(y)


def test_masked_lm_equals_hand_written_bert():
    bb = liven(tiny_backbone("masked_lm"))
    prompts, batch = _deep_prompts(bb, seed=3), _batch(bb)
    head = bb.task_head(["good", "bad", "fine"])
    tok = bb.tokenizer
    with torch.no_grad():
        ours = bb.logits(prompts, batch, head)
        theirs = torch.stack([_reference_masked_lm(bb.model, torch.tensor([tok.cls_token_id, tok.mask_token_id]
                                                                           + _row(batch, b)[0][0].tolist()),
                                                   prompts[b], bb.model.config.num_attention_heads)
                              for b in range(2)])[:, head.label_word_ids]
    assert _max_diff(ours, theirs) <= ATOL
    assert _max_diff(ours[0], ours[1]) > 1e-3


def test_masked_lm_equals_peft_feature_extraction_fed_our_token_row():
    """PEFT has no masked-LM task type (get_peft_model without one fails on BertForMaskedLM), but its
    FEATURE_EXTRACTION prefix tuning runs BertForMaskedLM: fed [CLS] [MASK] x.. [SEP], its logits at position 1
    are ours. A second, independent reference for the hand-written BERT above."""
    bb = liven(tiny_backbone("masked_lm"))
    prompts, batch = _deep_prompts(bb, seed=6), _batch(bb)
    head = bb.task_head(["good", "bad", "fine"])
    with pytest.raises(KeyError):
        peft.get_peft_model(copy.deepcopy(bb.model), peft.PrefixTuningConfig(num_virtual_tokens=3))
    special = [bb.tokenizer.cls_token_id, bb.tokenizer.mask_token_id]
    with torch.no_grad():
        ours = bb.logits(prompts, batch, head)
        theirs = torch.cat([_peft(bb, prompts[b], "FEATURE_EXTRACTION")(
            input_ids=torch.tensor([special + _row(batch, b)[0][0].tolist()])).logits[:, 1, head.label_word_ids]
            for b in range(2)])
    assert _max_diff(ours, theirs) <= ATOL


# ---------------------------------------------------------------- every layer's prefix is used
@pytest.mark.parametrize("kind", ["encoder", "masked_lm", "causal_lm", "seq2seq"])
def test_every_layers_key_and_value_block_gets_a_gradient(kind):
    """A layer whose prefix were dropped (or given to another layer) leaves its key or value block without a
    gradient: each of the 2 * n_layers blocks of each row's prompt must receive one."""
    bb = liven(tiny_backbone(kind))
    prompts = _deep_prompts(bb, seed=5).requires_grad_(True)
    out = bb.logits(prompts, _batch(bb), bb.task_head(LABELS))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * weights).sum().backward()
    grads = bb.prefix_geometry.blocks(prompts.grad)  # (K, 2 * n_layers, L, h)
    assert grads.shape[1] == 2 * bb.prefix_geometry.n_layers >= 4
    norms = grads.flatten(2).norm(dim=-1)
    assert (norms > 1e-6).all(), norms
