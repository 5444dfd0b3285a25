"""Every similarity metric on deep prompts (prompt.kind: deep; promptgrid.models.prefix).

Prompt metrics compare each key/value block (L, h) as an input prompt and average over the 2 * n_layers blocks;
ON probes the backbone's minimal input with the prefix in the attention; PANDA reads the backbone's pooled
output, whichever kind of prompt it holds."""
import math

import pytest
import torch
import yaml
from tiny_models import ffn_pre_activations, hand_cache, liven, tiny_backbone
from transformers import DynamicCache, EncoderDecoderCache

from promptgrid.config import ConfigError
from promptgrid.models.prefix import PrefixGeometry, cache_keyword
from promptgrid.registry import SIMILARITIES, SimilaritySpec
from promptgrid.similarity import on, panda_sim
from promptgrid.similarity.prompt_math import pair_similarity, prompt_blocks, similarity_matrix
from promptgrid.similarity.seed_pairs import seed_pair_mean

# the tiny models of tests/tiny_models.py: 2 layers, 2 (key/value) heads of width 8 -> D = 2 * 2 * 2 * 8
N_LAYERS, HEADS, HEAD_DIM = 2, 2, 8
BLOCK = HEADS * HEAD_DIM
WIDTH = 2 * N_LAYERS * BLOCK


def prompt_metrics() -> list:
    return [n for n, spec in SIMILARITIES.items() if spec.scope == "prompt"]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- prompt metrics, per key/value block
def test_one_block_is_the_metric_itself_exactly():
    a, b = _randn(3, 4, 6, seed=1), _randn(5, 4, 6, seed=2)
    for name in prompt_metrics():
        assert torch.equal(similarity_matrix(a, b, name, blocks=1), SIMILARITIES[name].matrix(a, b)), name
        assert torch.equal(similarity_matrix(a, b, name, blocks=1), similarity_matrix(a, b, name)), name


def test_a_deep_prompt_repeating_one_input_prompt_has_that_prompts_value():
    """Blocks that are all the same input prompt (L, h): the block average is that prompt's value, whatever the
    number of blocks; the flattened (L, D) comparison is not (the distances grow with the width)."""
    a, b = _randn(3, 4, 6, seed=3), _randn(2, 4, 6, seed=4)
    for n_blocks in (2, 4):
        deep_a, deep_b = a.repeat(1, 1, n_blocks), b.repeat(1, 1, n_blocks)  # (N, L, n_blocks * 6)
        for name in prompt_metrics():
            torch.testing.assert_close(similarity_matrix(deep_a, deep_b, name, blocks=n_blocks),
                                       similarity_matrix(a, b, name), atol=1e-12, rtol=1e-12, msg=name)
        assert not torch.allclose(similarity_matrix(deep_a, deep_b, "e_con"), similarity_matrix(a, b, "e_con"))


# Hand-worked 2-block example. Block 0: P_S rows (1, 0), (0, 1) against P_T rows (1, 1), (0, 1) (the input-prompt
# example of test_metrics.py); block 1: P_S scaled by 100 on both sides (identical blocks, a far larger scale).
P_S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P_T = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
BLOCK0 = {"cos_avg": 3 / math.sqrt(10), "token_cos": (math.sqrt(2) + 1) / 4, "c_con": 2 / math.sqrt(6), "e_con": 0.5,
          "e_ave": 1 / (1 + (2 + math.sqrt(2)) / 4), "max": (1 / math.sqrt(2) + 1) / 2}
# block 1 compares 100 P_S with itself: cosines are scale-free; token_cos: cosines 1, 0, 0, 1 -> 1/2; e_ave:
# distances 0, 100 sqrt2, 100 sqrt2, 0 -> mean 50 sqrt2; max: each row finds itself -> 1; e_con: distance 0 -> 1
BLOCK1 = {"cos_avg": 1.0, "token_cos": 0.5, "c_con": 1.0, "e_con": 1.0, "e_ave": 1 / (1 + 50 * math.sqrt(2)),
          "max": 1.0}


@pytest.mark.parametrize("name", sorted(BLOCK0))
def test_two_blocks_by_hand(name):
    deep_s = torch.cat([P_S, 100 * P_S], dim=1)  # (L = 2, D = 4): block 0 columns 0-1, block 1 columns 2-3
    deep_t = torch.cat([P_T, 100 * P_S], dim=1)
    expect = (BLOCK0[name] + BLOCK1[name]) / 2
    assert pair_similarity(name, deep_s, deep_t, blocks=2) == pytest.approx(expect, abs=1e-12)
    assert similarity_matrix(deep_s[None], deep_t[None], name, blocks=2).item() == pytest.approx(expect, abs=1e-12)


def test_two_blocks_flattened_would_be_dominated_by_the_larger_block():
    """The rationale: flattened, c_con is ~1 because the 100x block drowns block 0; per block it is their mean."""
    deep_s, deep_t = torch.cat([P_S, 100 * P_S], dim=1), torch.cat([P_T, 100 * P_S], dim=1)
    assert pair_similarity("c_con", deep_s, deep_t) > 0.9999
    assert pair_similarity("c_con", deep_s, deep_t, blocks=2) == pytest.approx((2 / math.sqrt(6) + 1) / 2)


def test_blocks_are_the_prefix_geometrys_key_and_value_blocks():
    """similarity_matrix splits (L, D) exactly as PrefixGeometry.blocks does (layer by layer, key then value)."""
    geo = PrefixGeometry(N_LAYERS, HEADS, HEAD_DIM)
    a, b = _randn(3, 5, WIDTH, seed=5), _randn(4, 5, WIDTH, seed=6)
    blocks_a, blocks_b = geo.blocks(a), geo.blocks(b)  # (N, 2 * n_layers, L, h)
    for name in prompt_metrics():
        expect = torch.stack([similarity_matrix(blocks_a[:, k], blocks_b[:, k], name)
                              for k in range(2 * N_LAYERS)]).mean(0)
        torch.testing.assert_close(similarity_matrix(a, b, name, blocks=2 * N_LAYERS), expect,
                                   atol=1e-12, rtol=1e-12, msg=name)


def test_prompt_blocks_and_block_errors():
    bb = tiny_backbone("encoder")
    assert bb.deep_width == WIDTH
    assert prompt_blocks(bb, "input") == 1 and prompt_blocks(bb, "deep") == 2 * N_LAYERS
    with pytest.raises(ValueError, match="prompt.kind"):
        prompt_blocks(bb, "shallow")
    with pytest.raises(ValueError, match="do not split into 5 key/value blocks"):
        similarity_matrix(torch.zeros(1, 2, WIDTH), torch.zeros(1, 2, WIDTH), "cos_avg", blocks=5)


# ---------------------------------------------------------------- ON on deep prompts
def _deep_prompt(seed, L=3, std=1.0):
    return torch.randn(L, WIDTH, generator=torch.Generator().manual_seed(seed)) * std


KINDS = ["encoder", "masked_lm", "causal_lm", "seq2seq"]


@pytest.mark.parametrize("kind", KINDS)
def test_deep_on_depends_on_the_prompt(kind):
    bb = liven(tiny_backbone(kind), std=0.5)
    p1, p2 = _deep_prompt(1), _deep_prompt(2)
    m1, m2 = on.prompt_activation_mask(bb, p1), on.prompt_activation_mask(bb, p2)
    assert m1.dtype == torch.bool and m1.shape == (N_LAYERS, 32)
    assert 0 < m1.sum() < m1.numel()
    assert not torch.equal(m1, m2) and on.on_overlap(m1, m2) < 1.0
    assert on.on_overlap(m1, on.prompt_activation_mask(bb, p1.clone())) == 1.0
    assert set(on.DEEP_READ_SITES) == set(on.READ_SITES)


@pytest.mark.parametrize("kind", KINDS)
def test_deep_on_reads_the_probe_with_the_prefix_in_every_layer(kind):
    """The mask against a forward written out here: the probe tokens, a hand-built cache, the read positions."""
    bb = liven(tiny_backbone(kind), std=0.5)
    tok, prompt = bb.tokenizer, _deep_prompt(3)
    key = cache_keyword(bb.model)
    assert tok.eos_token_id is None  # MiniLM's tokenizer: the probe's EOS is [SEP]

    def embeds(*ids):
        return bb.embed_layer(torch.tensor([ids]))

    ones = torch.ones(1, prompt.shape[0] + {"encoder": 2, "masked_lm": 3}.get(kind, 1), dtype=torch.long)
    if kind == "encoder":  # [CLS] [SEP], averaged over both tokens
        x = embeds(tok.cls_token_id, tok.sep_token_id)
        stack, positions, run = bb.model, [0, 1], lambda: bb.model(inputs_embeds=x, attention_mask=ones,
                                                                    **{key: hand_cache(prompt)})
    elif kind == "masked_lm":  # [CLS] [MASK] [SEP], at the [MASK]
        x = embeds(tok.cls_token_id, tok.mask_token_id, tok.sep_token_id)
        stack, positions, run = bb.model, [1], lambda: bb.model(inputs_embeds=x, attention_mask=ones,
                                                                 **{key: hand_cache(prompt)})
    elif kind == "causal_lm":  # EOS alone
        x = embeds(tok.sep_token_id)
        stack, positions, run = bb.model, [0], lambda: bb.model(inputs_embeds=x, attention_mask=ones,
                                                                 **{key: hand_cache(prompt)})
    else:  # encoder: EOS, unprefixed; decoder: the start token, prefixed
        stack, positions = bb.model.get_decoder(), [0]
        run = lambda: bb.model(input_ids=torch.tensor([[tok.sep_token_id]]),  # noqa: E731
                               decoder_input_ids=torch.tensor([[bb.model.config.decoder_start_token_id]]),
                               **{key: EncoderDecoderCache(hand_cache(prompt), DynamicCache())})
    pre = ffn_pre_activations(stack, run, positions)
    assert pre.abs().min() > 1e-4  # no neuron sits on the threshold: the bool comparison is not up to rounding
    assert torch.equal(on.prompt_activation_mask(bb, prompt), pre > 0)


def _prefix_from_cache(cache) -> torch.Tensor:
    """A deep prompt (L, D) holding a cache's keys and values (batch row 0): layer by layer, key then value."""
    cols = []
    for layer in cache.layers[:N_LAYERS]:
        for t in (layer.keys, layer.values):  # (1, heads, L, head_dim) -> (L, heads * head_dim)
            cols.append(t[0].transpose(0, 1).reshape(t.shape[2], -1))
    return torch.cat(cols, dim=1)


@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_deep_on_of_a_cached_context_equals_the_input_it_was_cached_from(kind):
    """A causal stack cannot tell a prefix from the cached keys and values of real tokens before the probe: the
    deep prompt made of the cache of tokens y gives the mask of the plain input y + probe, read at the probe."""
    bb = liven(tiny_backbone(kind), std=0.5)
    sep, y = bb.tokenizer.sep_token_id, torch.tensor([[2023, 3185, 2001, 2307]])  # four word pieces
    with torch.no_grad():
        if kind == "causal_lm":
            prompt = _prefix_from_cache(bb.model(input_ids=y, use_cache=True).past_key_values)
            plain = torch.cat([y, torch.tensor([[sep]])], dim=1)
            pre = ffn_pre_activations(bb.model, lambda: bb.model(input_ids=plain), [y.shape[1]])
        else:
            enc = torch.tensor([[sep]])
            out = bb.model(input_ids=enc, decoder_input_ids=y, use_cache=True)
            prompt = _prefix_from_cache(out.past_key_values.self_attention_cache)
            plain = torch.cat([y, torch.tensor([[bb.model.config.decoder_start_token_id]])], dim=1)
            pre = ffn_pre_activations(bb.model.get_decoder(), lambda: bb.model(input_ids=enc, decoder_input_ids=plain),
                                  [y.shape[1]])
    assert prompt.shape == (y.shape[1], WIDTH)
    assert pre.abs().min() > 1e-4
    assert torch.equal(on.prompt_activation_mask(bb, prompt), pre > 0)


# ---------------------------------------------------------------- PANDA on deep prompts
class Examples:
    """What task_vectors reads of an encoded split: the token ids of each example, and their number."""

    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)


TEXTS = ["the room was lovely", "terrible service, never again", "fine", "a long and quite boring stay at best"]


def _reference_pooled(bb, prompt, ids) -> torch.Tensor:
    """One example alone (no padding), through a hand-built cache: encoder / causal LM: the last hidden state
    averaged over the tokens; seq2seq: the decoder's last state at its start position. -> (h,)"""
    key, x = cache_keyword(bb.model), torch.tensor([ids])
    ones = torch.ones(1, prompt.shape[0] + len(ids), dtype=torch.long)
    with torch.no_grad():
        if bb.kind == "seq2seq":
            start = torch.tensor([[bb.model.config.decoder_start_token_id]])
            out = bb.model(input_ids=x, decoder_input_ids=start, output_hidden_states=True,
                           **{key: EncoderDecoderCache(hand_cache(prompt), DynamicCache())})
            return out.decoder_hidden_states[-1][0, 0].double()
        out = bb.model(input_ids=x, attention_mask=ones, output_hidden_states=True, **{key: hand_cache(prompt)})
        return out.hidden_states[-1][0].mean(0).double()


@pytest.mark.parametrize("kind", ["encoder", "causal_lm", "seq2seq"])
def test_panda_task_vectors_of_deep_prompts(kind):
    """Unchanged definition: the mean over examples of the backbone's pooled output under the prompt, here with the
    prompts as prefixes; two prompts batched in one pass, in uneven chunks with padding."""
    bb = liven(tiny_backbone(kind), std=0.5)
    prompts = torch.stack([_deep_prompt(4), _deep_prompt(5)])
    ids = bb.input_ids(TEXTS)
    vectors = panda_sim.task_vectors(bb, prompts, Examples(ids), batch_size=6)  # chunks of 3 and 1 examples
    assert vectors.shape == (2, bb.model.config.hidden_size if kind != "seq2seq" else bb.model.config.d_model)
    for k in range(2):
        expect = torch.stack([_reference_pooled(bb, prompts[k], i) for i in ids]).mean(0)
        torch.testing.assert_close(vectors[k].double(), expect, atol=1e-5, rtol=1e-5)
    assert panda_sim.panda_similarity(vectors[0], vectors[1]) < 0.999  # the prompts make a difference


# ---------------------------------------------------------------- the config check and the similarity jobs
def _tiny_raw(repo, tmp_path, **prompt):
    raw = yaml.safe_load((repo / "tests/studies/tiny.yaml").read_text())
    raw.update(study="deep", results_dir=str(tmp_path / "results"))
    raw["prompt"] = {"length": 4, "kind": "deep", "init": "random", "random_std": 1.0, **prompt}
    return raw


def _load(raw, tmp_path):
    from promptgrid.pipeline.plugins import load_config_with_plugins

    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config_with_plugins(path)


@pytest.fixture
def flat_only_metric():
    """A prompt metric registered for one test, with no meaning for deep prompts."""
    spec = SimilaritySpec(name="flat_only", scope="prompt", order=99, matrix=lambda a, b: torch.zeros(len(a), len(b)),
                          summary="a test metric", paper="none", deep=False,
                          deep_reason="it reads input embeddings, which a deep prompt does not have")
    SIMILARITIES.add(spec)
    try:
        yield spec.name
    finally:
        SIMILARITIES.pop(spec.name)


def test_the_config_check_refuses_a_metric_undefined_for_deep_prompts(repo, tmp_path, flat_only_metric):
    raw = _tiny_raw(repo, tmp_path)
    raw["metrics"]["names"] = ["cos_avg", flat_only_metric]
    with pytest.raises(ConfigError) as err:
        _load(raw, tmp_path)
    assert err.value.key == "metrics.names[1]"
    assert "'flat_only' has no meaning for deep prompts" in str(err.value)
    assert "reads input embeddings" in str(err.value)
    raw["prompt"] = {"length": 4}  # input prompts: the same metric is fine
    assert _load(raw, tmp_path).metrics.names == ["cos_avg", flat_only_metric]


def test_every_built_in_metric_is_defined_for_deep_prompts(repo, tmp_path):
    built_in = [n for n, spec in SIMILARITIES.items() if spec.matrix is not None or spec.compute is not None]
    assert {"cos_avg", "token_cos", "c_con", "e_con", "e_ave", "max", "on", "panda_sim"} <= set(built_in)
    assert all(SIMILARITIES[n].deep for n in built_in if n != "flat_only")
    raw = _tiny_raw(repo, tmp_path)
    raw["metrics"]["names"] = ["cos_avg", "token_cos", "c_con", "e_con", "e_ave", "max", "on", "panda_sim"]
    assert _load(raw, tmp_path).prompt.kind == "deep"


def test_a_deep_tiny_studys_similarity_jobs(repo, tmp_path, monkeypatch):
    """prompt_similarity, model_similarity (on) and model_similarity (panda_sim) on a deep tiny study, the backbone a
    tiny encoder: the prompt metrics per key/value block, ON and PANDA through the prefix."""
    import pandas as pd

    from promptgrid.pipeline.context import Study
    from promptgrid.pipeline.prepare import prepare
    from promptgrid.pipeline.similarity import model_similarity, prompt_similarity
    from promptgrid.storage import layout
    from promptgrid.storage.files import save_prompt

    raw = _tiny_raw(repo, tmp_path)
    raw["training"]["precision"] = "fp32"  # auto is bf16 on a CPU with AMX/avx512_bf16; the references run fp32
    cfg = _load(raw, tmp_path)
    study = Study(cfg)
    bb = liven(tiny_backbone("encoder"), std=0.5)
    monkeypatch.setattr(study, "backbone", lambda name: bb)  # the tiny model stands in for MiniLM
    prompts = {}
    for i, task in enumerate(cfg.trained_tasks):
        for seed in cfg.seeds:
            for early in (False, True):
                prompts[(task, seed, early)] = _deep_prompt(100 * i + 10 * seed + early, L=4)
                save_prompt(study.path(layout.task_prompt("minilm", task, seed, early)),
                            prompts[(task, seed, early)], {"task": task})
    for target in cfg.targets:
        prepare(study, target)

    prompt_similarity(study, "minilm")
    table = pd.read_parquet(study.path(layout.prompt_similarity("minilm"))).set_index(["source", "target", "metric"])
    for metric in ("cos_avg", "e_con", "early_max"):
        name, early = metric.removeprefix("early_"), metric.startswith("early_")
        ref = [pair_similarity(name, prompts[("hotels", ss, early)], prompts[("medicine", st, early)],
                               blocks=2 * N_LAYERS) for ss in cfg.seeds for st in cfg.seeds]
        assert table.loc[("hotels", "medicine", metric), "value"] == pytest.approx(seed_pair_mean(ref).mean, abs=1e-9)
        flat = [pair_similarity(name, prompts[("hotels", ss, early)], prompts[("medicine", st, early)])
                for ss in cfg.seeds for st in cfg.seeds]
        assert abs(seed_pair_mean(flat).mean - seed_pair_mean(ref).mean) > 1e-6  # per block is not flattened

    model_similarity(study, "minilm", "on")
    on_table = pd.read_parquet(study.path(layout.model_similarity("minilm", "on"))).set_index(
        ["source", "target", "metric"])
    assert cfg.metrics.on_site == "su"  # the default: the encoder read after the nonlinearity
    masks = {(t, s): on.prompt_activation_mask(bb, prompts[(t, s, False)], site="su") for t in ("intent", "reviews")
             for s in cfg.seeds}
    expect = seed_pair_mean([on.on_overlap(masks[("intent", ss)], masks[("reviews", st)])
                             for ss in cfg.seeds for st in cfg.seeds]).mean
    assert on_table.loc[("intent", "reviews", "on"), "value"] == pytest.approx(expect)
    assert 0 < expect < 1

    model_similarity(study, "minilm", "panda_sim", target="medicine")
    panda = pd.read_parquet(study.path(layout.model_similarity("minilm", "panda_sim", "medicine")))
    assert sorted(panda["source"]) == sorted(cfg.sources) and (panda["metric"] == "panda_sim").all()
    assert panda["value"].between(-1, 1).all() and panda["value"].notna().all()
    assert (panda["n_pairs"] == len(cfg.seeds) ** 2).all()
