import math

import pytest
import torch

from promptgrid.models.backbones import mean_pool
from promptgrid.registry import SIMILARITIES
from promptgrid.similarity import on, panda_sim, seed_pairs
from promptgrid.similarity.prompt_math import pair_similarity, similarity_matrix

# Hand-worked example. P_s rows s1 = (1, 0), s2 = (0, 1); P_t rows t1 = (1, 1), t2 = (0, 1).
P_S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P_T = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
# cos_avg: means (.5, .5) and (.5, 1): .75 / sqrt(.5 * 1.25) = 3 / sqrt(10)
# token_cos: cosines s1t1 = 1/sqrt2, s1t2 = 0, s2t1 = 1/sqrt2, s2t2 = 1 -> (sqrt2 + 1) / 4
# c_con: vec (1,0,0,1) . (1,1,0,1) = 2, norms sqrt2, sqrt3 -> 2 / sqrt6
# e_con: vec difference (0,-1,0,0), norm 1 -> 1 / 2
# e_ave: distances 1, sqrt2, 1, 0 -> mean (2 + sqrt2) / 4 -> 1 / (1 + .853553...)
# max: t1 best cosine 1/sqrt2, t2 best cosine 1 -> (1/sqrt2 + 1) / 2
EXPECTED = {
    "cos_avg": 0.9486832980505138,
    "token_cos": 0.6035533905932737,
    "c_con": 0.8164965809277261,
    "e_con": 0.5,
    "e_ave": 0.5395042867796359,
    "max": 0.8535533905932737,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prompt_metric_hand_values(name):
    assert pair_similarity(name, P_S, P_T) == pytest.approx(EXPECTED[name], abs=1e-12)
    mat = similarity_matrix(P_S[None], P_T[None], name)
    assert mat.shape == (1, 1)
    assert mat.item() == pytest.approx(EXPECTED[name], abs=1e-12)


def test_hand_values_match_closed_forms():
    r2 = math.sqrt(2)
    assert EXPECTED["cos_avg"] == pytest.approx(3 / math.sqrt(10))
    assert EXPECTED["token_cos"] == pytest.approx((r2 + 1) / 4)
    assert EXPECTED["c_con"] == pytest.approx(2 / math.sqrt(6))
    assert EXPECTED["e_ave"] == pytest.approx(1 / (1 + (2 + r2) / 4))
    assert EXPECTED["max"] == pytest.approx((1 / r2 + 1) / 2)


def test_max_is_asymmetric():
    # P_s has both rows (1, 0): target token (0, 1) finds no match -> (1 + 0) / 2;
    # the other way every target row (1, 0) has an exact match -> 1.
    p_s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert pair_similarity("max", p_s, p_t) == pytest.approx(0.5)
    assert pair_similarity("max", p_t, p_s) == pytest.approx(1.0)


def test_self_similarity_and_zero_rows():
    p = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    for name in ("cos_avg", "c_con", "e_con", "e_ave", "max"):
        if name == "e_ave":  # mean distance includes i != j token pairs, so below 1
            assert pair_similarity("e_ave", p, p) < 1.0
            continue
        assert pair_similarity(name, p, p) == pytest.approx(1.0)
    zero = torch.zeros(2, 2)
    assert pair_similarity("cos_avg", zero, P_T) == 0.0  # cosine with a zero vector is 0, not NaN


def _reference(name: str, p_s: torch.Tensor, p_t: torch.Tensor) -> float:
    """Each metric's formula written out token by token (methods.md §3), independent of the vectorised code."""
    cos = lambda u, v: float(u @ v / (u.norm() * v.norm())) if u.norm() > 0 and v.norm() > 0 else 0.0  # noqa: E731
    if name == "cos_avg":
        return cos(p_s.mean(0), p_t.mean(0))
    if name == "token_cos":
        return sum(cos(u, v) for u in p_s for v in p_t) / (len(p_s) * len(p_t))
    if name == "c_con":
        return cos(p_s.reshape(-1), p_t.reshape(-1))
    if name == "e_con":
        return 1 / (1 + float((p_s - p_t).norm()))
    if name == "e_ave":
        return 1 / (1 + sum(float((u - v).norm()) for u in p_s for v in p_t) / (len(p_s) * len(p_t)))
    if name == "max":
        return sum(max(cos(u, v) for u in p_s) for v in p_t) / len(p_t)
    raise KeyError(name)


def test_matrix_matches_the_written_out_formula_for_every_prompt_metric():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    b = torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    names = [n for n, spec in SIMILARITIES.items() if spec.scope == "prompt"]
    assert set(names) == set(EXPECTED)  # every registered prompt metric has a hand-worked value
    for name in names:
        mat = similarity_matrix(a, b, name)
        assert mat.shape == (3, 5) and mat.dtype == torch.float64
        expect = torch.tensor([[_reference(name, a[i], b[j]) for j in range(5)] for i in range(3)], dtype=torch.float64)
        torch.testing.assert_close(mat, expect, atol=1e-9, rtol=1e-9)
    # a list of (L, d) tensors works as well
    torch.testing.assert_close(similarity_matrix(list(a), list(b), "max"), similarity_matrix(a, b, "max"))


def test_matrix_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="width"):
        similarity_matrix(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), "cos_avg")
    with pytest.raises(ValueError, match="same length"):
        pair_similarity("c_con", torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="unknown prompt metric"):
        similarity_matrix(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), "nope")
    # different lengths are fine for token-wise metrics
    assert pair_similarity("e_ave", torch.zeros(2, 3), torch.zeros(3, 3)) == 1.0


def test_seed_pairs():
    prompts_s = {0: P_S, 1: P_T}
    prompts_t = {7: P_T}
    values = seed_pairs.seed_pair_values(prompts_s, prompts_t, lambda a, b: pair_similarity("e_con", a, b))
    assert values == {(0, 7): 0.5, (1, 7): 1.0}
    stat = seed_pairs.seed_pair_mean(values)
    assert stat.mean == pytest.approx(0.75)
    assert stat.std == pytest.approx(math.sqrt(0.125))  # sample std of (.5, 1)
    assert stat.n == 2
    assert seed_pairs.seed_pair_similarity(prompts_s, prompts_t, "e_con") == pytest.approx((0.75, math.sqrt(0.125), 2))
    single = seed_pairs.seed_pair_mean([0.3])
    assert single.mean == 0.3 and math.isnan(single.std) and single.n == 1


# ---------------------------------------------------------------- ON

def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                     max_position_embeddings=32)
    return BertModel(cfg).eval()


def test_ffn_first_layers_bert():
    model = tiny_bert()
    layers = on.ffn_first_layers(model)
    assert layers == [model.encoder.layer[0].intermediate.dense, model.encoder.layer[1].intermediate.dense]


def test_activation_mask_known_pattern():
    model = tiny_bert()
    bias0 = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(16)])  # even neurons on
    bias1 = torch.tensor([1.0 if i < 5 else -1.0 for i in range(16)])  # first five on
    with torch.no_grad():
        for layer, bias in zip(model.encoder.layer, (bias0, bias1)):
            layer.intermediate.dense.weight.zero_()  # output = bias, whatever the input
            layer.intermediate.dense.bias.copy_(bias)
    prompt = torch.randn(3, 8)
    special = torch.randn(8)
    expected = torch.stack([bias0 > 0, bias1 > 0])
    mask = on.activation_mask(model, prompt, special)
    assert mask.dtype == torch.bool and mask.shape == (2, 16)
    assert torch.equal(mask, expected)
    # GELU(a) > 0 iff a > 0: the post-activation mask is the same for a plain FFN
    assert torch.equal(on.activation_mask(model, prompt, special, post_activation=True), expected)
    model.train()
    on.activation_mask(model, prompt, special)
    assert model.training  # mode restored


def test_activation_mask_reads_the_prediction_position():
    model = tiny_bert()
    g = torch.Generator().manual_seed(3)
    prompt, special = torch.randn(4, 8, generator=g), torch.randn(8, generator=g)
    embeds = torch.cat([prompt, special[None]])[None]
    with torch.no_grad():
        out = model(inputs_embeds=embeds, attention_mask=torch.ones(1, 5, dtype=torch.long), output_hidden_states=True)
        expected = []
        for i, layer in enumerate(model.encoder.layer):
            attn = layer.attention(out.hidden_states[i])[0]
            expected.append(layer.intermediate.dense(attn)[0] > 0)  # (5, 16)
    for position in (-1, 0, 2):
        mask = on.activation_mask(model, prompt, special, position=position)
        assert torch.equal(mask, torch.stack([e[position] for e in expected]))
    assert not torch.equal(on.activation_mask(model, prompt, special, position=0),
                           on.activation_mask(model, prompt, special, position=-1))
    with pytest.raises(ValueError, match="position"):
        on.activation_mask(model, prompt, special, position=5)


def test_llama_finder_and_gated_post_activation():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, mlp_bias=True, max_position_embeddings=32)
    model = LlamaModel(cfg).eval()
    assert on.ffn_first_layers(model) == [layer.mlp.gate_proj for layer in model.layers]
    gate = torch.tensor([1.0, 1.0, -1.0, -1.0] * 4)
    up = torch.tensor([1.0, -1.0, 1.0, -1.0] * 4)
    with torch.no_grad():
        for layer in model.layers:
            layer.mlp.gate_proj.weight.zero_()
            layer.mlp.gate_proj.bias.copy_(gate)
            layer.mlp.up_proj.weight.zero_()
            layer.mlp.up_proj.bias.copy_(up)
    prompt, special = torch.randn(3, 8), torch.randn(8)
    pre = on.activation_mask(model, prompt, special)
    assert torch.equal(pre, torch.stack([gate > 0] * 2))
    # silu(g) * u > 0 iff g and u have the same sign
    post = on.activation_mask(model, prompt, special, post_activation=True)
    assert torch.equal(post, torch.stack([(gate > 0) == (up > 0)] * 2))


def test_t5_and_gpt2_finders():
    from transformers import GPT2Config, GPT2Model, T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=8, d_ff=16, d_kv=4, num_layers=2, num_heads=2)).eval()
    assert on.ffn_first_layers(t5) == [b.layer[1].DenseReluDense.wi for b in t5.encoder.block]
    t5g = T5EncoderModel(T5Config(vocab_size=32, d_model=8, d_ff=16, d_kv=4, num_layers=2, num_heads=2,
                                  feed_forward_proj="gated-gelu")).eval()
    assert on.ffn_first_layers(t5g) == [b.layer[1].DenseReluDense.wi_0 for b in t5g.encoder.block]
    gpt2 = GPT2Model(GPT2Config(vocab_size=32, n_embd=8, n_layer=2, n_head=2, n_positions=32)).eval()
    assert on.ffn_first_layers(gpt2) == [h.mlp.c_fc for h in gpt2.h]
    for model in (t5, t5g, gpt2):
        assert on.activation_mask(model, torch.randn(3, 8), torch.randn(8)).shape[0] == 2
    assert on.activation_mask(gpt2, torch.randn(3, 8), torch.randn(8)).shape == (2, 32)  # GPT-2 FFN is 4 * n_embd
    with pytest.raises(ValueError, match="no transformer FFN"):
        on.ffn_first_layers(torch.nn.Linear(2, 2))


def test_on_overlap_and_windows():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    # |A| = 8, |B| = 5, |A & B| = 1 + 1 + 0 + 2 = 4
    assert on.on_overlap(a, b) == pytest.approx(4 / math.sqrt(40))
    # window 3: layers 0-2 (|A| 4, |B| 3, both 2) and the remainder layer 3 (4, 2, 2)
    assert on.on_windows(a, b, window=3) == pytest.approx([2 / math.sqrt(12), 2 / math.sqrt(8)])
    assert on.on_windows(a, b, window=2) == pytest.approx([2 / math.sqrt(9), 2 / math.sqrt(10)])
    assert on.on_overlap(a, a) == pytest.approx(1.0)
    assert math.isnan(on.on_overlap(a, torch.zeros_like(a)))
    with pytest.raises(ValueError, match="shapes"):
        on.on_overlap(a, b[:2])


# ---------------------------------------------------------------- PANDA

def test_panda_pooling_and_similarity():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]],
                           [[0.0, 4.0], [0.0, 0.0], [0.0, 2.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 1.0], [0.0, 2.0]]))
    vec = panda_sim.panda_task_vector(pooled)
    torch.testing.assert_close(vec, torch.tensor([1.0, 1.5], dtype=torch.float64))
    # cos((1, 1.5), (1, 0)) = 1 / sqrt(3.25)
    assert panda_sim.panda_similarity(vec, torch.tensor([1.0, 0.0])) == pytest.approx(1 / math.sqrt(3.25))
    with pytest.raises(ValueError):
        panda_sim.panda_task_vector(torch.zeros(0, 3))


# ---------------------------------------------------------------- ON's read site per backbone kind


@pytest.mark.parametrize("kind", ["masked_lm", "encoder", "seq2seq", "causal_lm"])
def test_on_reads_where_each_backbone_kind_reads_its_prediction(kind):
    from tiny_models import ffn_pre_activations, liven, tiny_backbone

    bb = liven(tiny_backbone(kind), std=0.5)
    tok, embed = bb.tokenizer, bb.embed_layer
    prompt = torch.randn(4, bb.embed_dim, generator=torch.Generator().manual_seed(1))

    def ids(*token_ids):
        return embed(torch.tensor(token_ids))

    with torch.no_grad():
        if kind == "masked_lm":  # [CLS] [MASK] prompt [SEP], read at the [MASK] (position 1)
            x = torch.cat([ids(tok.cls_token_id, tok.mask_token_id), prompt, ids(tok.sep_token_id)])[None]
            stack, positions, kwargs = bb.model, [1], {}
        elif kind == "encoder":  # prompt [CLS] [SEP], averaged over every position, as mean pooling does
            x = torch.cat([prompt, ids(tok.cls_token_id, tok.sep_token_id)])[None]
            stack, positions, kwargs = bb.model, list(range(6)), {}
        elif kind == "seq2seq":  # encoder: prompt + EOS; read in the decoder at its first position
            x = torch.cat([prompt, ids(bb.model.config.eos_token_id)])[None]
            stack, positions = bb.model.get_decoder(), [0]
            kwargs = {"decoder_input_ids": torch.tensor([[bb.model.config.decoder_start_token_id]])}
        else:  # causal LM: prompt + EOS, read at the last position
            x = torch.cat([prompt, ids(tok.sep_token_id)])[None]
            stack, positions, kwargs = bb.model, [4], {}
    expected = ffn_pre_activations(stack, lambda: bb.model(inputs_embeds=x, **kwargs), positions) > 0
    mask = on.prompt_activation_mask(bb, prompt)
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    assert 0 < mask.sum() < mask.numel()  # some neurons on and some off: the comparison can fail
    # the read site matters: the old site (the appended special token; for T5 the encoder's EOS) differs
    if kind != "encoder":
        old_stack = bb.model.get_encoder() if kind == "seq2seq" else stack
        elsewhere = ffn_pre_activations(old_stack, lambda: bb.model(inputs_embeds=x, **kwargs),
                                        [x.shape[1] - 1] if kind != "causal_lm" else [0]) > 0
        assert not torch.equal(mask, elsewhere)
    assert set(on.READ_SITES) == {"masked_lm", "encoder", "seq2seq", "causal_lm"}
