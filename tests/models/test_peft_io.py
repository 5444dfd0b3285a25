"""PEFT export/import: input prompts as prompt tuning, deep prompts as prefix tuning; PEFT's forward pass gives
what promptgrid's scoring gives."""
import copy
import json

import peft  # a required dependency (pyproject): a missing install must fail, not skip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny_models import liven, tiny_backbone, tokenizer
from transformers import T5Config, T5ForConditionalGeneration

from promptgrid.config import BackboneConfig
from promptgrid.models.loading import wrap_model
from promptgrid.models.peft_io import (
    PROMPT_KEY,
    PeftAdapterError,
    PeftExportError,
    adapter_prompt_kind,
    export_peft,
    import_peft,
)
from promptgrid.storage.files import PromptFileError

TEXTS = ["the room was lovely and clean", "terrible service, never again, not for any money"]
LABELS = ["positive", "negative"]
META = {"backbone": "tiny", "task": "sst2", "seed": 3, "config_hash": "abc123"}
ATOL = 1e-5


def _prompt(bb, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, bb.embed_dim, generator=g) * 0.5


def _peft_model(bb, adapter_dir):
    """PEFT's own loader on a copy of the backbone's weights (PEFT wraps the model it is given)."""
    model = peft.PeftModel.from_pretrained(copy.deepcopy(bb.model), str(adapter_dir))
    model.eval()
    return model


def _batch(bb):
    batch = bb.collate(bb.input_ids(TEXTS))
    assert (batch.attention_mask == 0).any(), "the test needs right padding in the batch"
    return batch


# ---------------------------------------------------------------- equality of outputs
def test_causal_lm_peft_logits_equal_promptgrid(tmp_path):
    bb = tiny_backbone("causal_lm")
    prompt = _prompt(bb)
    out = export_peft(prompt, bb, tmp_path / "adapter", META)
    pm = _peft_model(bb, out)
    batch = _batch(bb)
    B, L = batch.input_ids.shape[0], prompt.shape[0]
    with torch.no_grad():
        theirs = pm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        embeds, mask = bb.prompted_inputs(prompt.expand(B, -1, -1), batch)
        ours = bb.model(inputs_embeds=embeds, attention_mask=mask).logits
        # without the prompt the logits change, so equality above is not vacuous
        zero_embeds, _ = bb.prompted_inputs(torch.zeros_like(prompt).expand(B, -1, -1), batch)
        plain = bb.model(inputs_embeds=zero_embeds, attention_mask=mask).logits
    assert theirs.shape == (B, L + batch.input_ids.shape[1], bb.model.config.vocab_size)
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=ATOL)
    assert not torch.allclose(theirs, plain, atol=1e-3)


def test_causal_lm_label_scores_through_peft_equal_backbone_logits(tmp_path):
    """Rank-classification scores: promptgrid's packed rows vs PEFT run per (example, label)."""
    bb = tiny_backbone("causal_lm")
    prompt = _prompt(bb, seed=1)
    pm = _peft_model(bb, export_peft(prompt, bb, tmp_path / "adapter", META))
    batch, head = _batch(bb), bb.task_head(LABELS)
    B, L = batch.input_ids.shape[0], prompt.shape[0]
    with torch.no_grad():
        ours = bb.logits(prompt.expand(B, -1, -1), batch, head)
        theirs = torch.empty(B, len(LABELS))
        for b in range(B):
            ctx = batch.input_ids[b, : int(batch.attention_mask[b].sum())].tolist()
            for c, label in enumerate(head.label_token_ids):
                row = torch.tensor([ctx + label])
                logp = F.log_softmax(pm(input_ids=row, attention_mask=torch.ones_like(row)).logits.float(), -1)
                # PEFT's output has the L virtual positions first; label token j is predicted at L+len(ctx)+j-1
                start = L + len(ctx) - 1
                theirs[b, c] = logp[0, start: start + len(label)].gather(-1, torch.tensor(label)[:, None]).sum()
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=ATOL)


def test_encoder_feature_extraction_equal_hidden_states_and_pooled(tmp_path):
    bb = tiny_backbone("encoder", temperature=5.0)
    prompt = _prompt(bb, L=3)
    pm = _peft_model(bb, export_peft(prompt, bb, tmp_path / "adapter", META))
    assert pm.peft_config["default"].task_type == "FEATURE_EXTRACTION"
    batch, head = _batch(bb), bb.task_head(LABELS)
    B, L = batch.input_ids.shape[0], prompt.shape[0]
    with torch.no_grad():
        theirs = pm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        embeds, mask = bb.prompted_inputs(prompt.expand(B, -1, -1), batch)
        ours = bb.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        # promptgrid's pooling (mean over prompt + real tokens) applied to PEFT's hidden states
        m = torch.cat([torch.ones(B, L), batch.attention_mask.float()], 1).unsqueeze(-1)
        theirs_pooled = (theirs * m).sum(1) / m.sum(1)
        ours_pooled = bb.pooled(prompt.expand(B, -1, -1), batch)
        ours_scores = bb.logits(prompt.expand(B, -1, -1), batch, head)
    assert theirs.shape == (B, L + batch.input_ids.shape[1], bb.embed_dim)
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(theirs_pooled, ours_pooled, atol=ATOL, rtol=ATOL)
    theirs_scores = 5.0 * F.normalize(theirs_pooled, dim=-1) @ head.label_embeddings.T
    torch.testing.assert_close(theirs_scores, ours_scores, atol=ATOL, rtol=ATOL)


def test_seq2seq_peft_logits_and_label_scores_equal_promptgrid(tmp_path):
    bb = tiny_backbone("seq2seq")
    prompt = _prompt(bb, L=5, seed=2)
    pm = _peft_model(bb, export_peft(prompt, bb, tmp_path / "adapter", META))
    assert pm.peft_config["default"].num_transformer_submodules == 1
    batch, head = _batch(bb), bb.task_head(LABELS)
    B = batch.input_ids.shape[0]
    decoder_ids = torch.tensor([[0, 7, 9, 11]] * B)
    with torch.no_grad():
        theirs = pm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=decoder_ids).logits
        embeds, mask = bb.prompted_inputs(prompt.expand(B, -1, -1), batch)
        ours = bb.model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=ATOL)
        # label log-likelihood scores: PEFT with labels (T5 shifts them into the decoder) vs Seq2SeqBackbone.logits
        ours_scores = bb.logits(prompt.expand(B, -1, -1), batch, head)
        theirs_scores = torch.empty(B, len(LABELS))
        for c, label in enumerate(head.label_token_ids):
            labels = torch.tensor([label] * B)
            out = pm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels)
            theirs_scores[:, c] = F.log_softmax(out.logits.float(), -1).gather(-1, labels[..., None]).squeeze(-1).sum(1)
    torch.testing.assert_close(theirs_scores, ours_scores, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------- files
def test_export_writes_peft_files_and_round_trips(tmp_path):
    bb = tiny_backbone("causal_lm")
    prompt = _prompt(bb, L=6)
    out = export_peft(prompt, bb, tmp_path / "sub" / "adapter", META)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "promptgrid.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"]) == ("PROMPT_TUNING", "CAUSAL_LM")
    assert (config["num_virtual_tokens"], config["token_dim"], config["num_transformer_submodules"]) == (6, 16, 1)
    assert config["base_model_name_or_path"] == "tiny"
    back, meta = import_peft(out, expect_dim=bb.embed_dim)
    assert back.dtype == torch.float32
    assert torch.equal(back, prompt)
    assert meta == META
    # re-export over an existing folder replaces it
    export_peft(prompt * 2, bb, out, {"seed": 4})
    back2, meta2 = import_peft(out, expect_dim=bb.embed_dim)
    assert torch.equal(back2, prompt * 2) and meta2 == {"seed": 4}


def test_import_reads_adapter_saved_by_peft_itself(tmp_path):
    """A PEFT-trained adapter (seq2seq default: 2 submodules) gives its encoder-side prompt."""
    bb = tiny_backbone("seq2seq")
    pm = peft.get_peft_model(copy.deepcopy(bb.model), peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM",
                                                                             num_virtual_tokens=3))
    pm.save_pretrained(str(tmp_path / "ad"))
    stored = pm.prompt_encoder["default"].embedding.weight.detach()
    assert stored.shape == (6, bb.embed_dim)
    prompt, meta = import_peft(tmp_path / "ad", expect_dim=bb.embed_dim)
    assert torch.equal(prompt, stored[:3])
    assert meta["peft_task_type"] == "SEQ_2_SEQ_LM"


# ---------------------------------------------------------------- errors
def test_masked_lm_export_refused(tmp_path):
    bb = tiny_backbone("masked_lm")
    with pytest.raises(PeftExportError, match="masked_lm"):
        export_peft(_prompt(bb), bb, tmp_path / "adapter", META)
    assert not (tmp_path / "adapter").exists()


def test_export_wrong_width_refused(tmp_path):
    bb = tiny_backbone("encoder")
    with pytest.raises(PeftExportError, match="width 8 != embedding size 16"):
        export_peft(torch.zeros(4, 8), bb, tmp_path / "adapter", META)


def test_lora_adapter_refused_naming_peft_type(tmp_path):
    bb = tiny_backbone("causal_lm")
    pm = peft.get_peft_model(copy.deepcopy(bb.model), peft.LoraConfig(task_type="CAUSAL_LM", r=2,
                                                                      target_modules=["q_proj"]))
    pm.save_pretrained(str(tmp_path / "lora"))
    with pytest.raises(PeftAdapterError, match=r"adapter_config\.json: peft_type is 'LORA'"):
        import_peft(tmp_path / "lora", expect_dim=bb.embed_dim)


def test_pickle_weights_refused(tmp_path):
    bb = tiny_backbone("causal_lm")
    out = export_peft(_prompt(bb), bb, tmp_path / "adapter", META)
    (out / "adapter_model.safetensors").unlink()
    # never loaded: the file is not even a valid pickle, so a load attempt would fail differently
    (out / "adapter_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(PeftAdapterError, match=r"adapter_model\.bin is a pickle"):
        import_peft(out, expect_dim=bb.embed_dim)


def test_import_errors_name_the_file(tmp_path):
    bb = tiny_backbone("causal_lm")
    out = export_peft(_prompt(bb, L=4), bb, tmp_path / "adapter", META)
    with pytest.raises(PeftAdapterError, match=r"adapter_model\.safetensors: prompt width 16 does not match "
                                               r"the expected embedding size 32"):
        import_peft(out, expect_dim=32)
    assert issubclass(PeftAdapterError, PromptFileError)

    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "num_virtual_tokens": 5}))
    with pytest.raises(PeftAdapterError, match="has 4 rows but .*num_virtual_tokens=5"):
        import_peft(out, expect_dim=16)

    (out / "adapter_config.json").write_text(json.dumps(config))
    save_file({"other": torch.zeros(4, 16)}, str(out / "adapter_model.safetensors"))
    with pytest.raises(PeftAdapterError, match=f"no '{PROMPT_KEY}' tensor"):
        import_peft(out, expect_dim=16)

    (out / "adapter_model.safetensors").unlink()
    with pytest.raises(PeftAdapterError, match=r"adapter_model\.safetensors do not exist"):
        import_peft(out, expect_dim=16)
    (out / "adapter_config.json").unlink()
    with pytest.raises(PeftAdapterError, match=r"adapter_config\.json does not exist"):
        import_peft(out, expect_dim=16)
    with pytest.raises(PeftAdapterError, match="does not exist"):
        import_peft(tmp_path / "missing", expect_dim=16)


# ---------------------------------------------------------------- deep prompts as prefix tuning
def _deep(bb, L=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, bb.deep_width, generator=g) * 0.5


def _deep_backbone(kind):
    """A lively tiny backbone; seq2seq: a T5 with ONE encoder and decoder layer, the only depth PEFT 0.21 maps
    faithfully (peft_io's docstring)."""
    if kind != "seq2seq":
        return liven(tiny_backbone(kind))
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=tokenizer().vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102,
                   attn_implementation="eager")
    return liven(wrap_model("tiny-t5", BackboneConfig(model="tiny", kind="seq2seq", max_length=32),
                            T5ForConditionalGeneration(cfg), tokenizer()))


def _peft_scores(bb, pm, batch, head):
    """Label scores (B, C) of a PEFT model run per unpadded row, by promptgrid's rule for the backbone's kind."""
    B = batch.input_ids.shape[0]
    scores = torch.empty(B, len(head.label_texts))
    for b in range(B):
        n = int(batch.attention_mask[b].sum())
        ids = batch.input_ids[b:b + 1, :n]
        if bb.kind == "encoder":
            pooled = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.mean(1)
            scores[b] = bb.cfg.temperature * F.normalize(pooled, dim=-1)[0] @ head.label_embeddings.T
            continue
        for c, label in enumerate(head.label_token_ids):
            if bb.kind == "causal_lm":
                row = torch.tensor([ids[0].tolist() + label])
                logp = F.log_softmax(pm(input_ids=row, attention_mask=torch.ones_like(row)).logits, -1)[0, n - 1:-1]
            else:
                logp = F.log_softmax(pm(input_ids=ids, attention_mask=torch.ones_like(ids),
                                        labels=torch.tensor([label])).logits, -1)[0]
            scores[b, c] = logp.gather(-1, torch.tensor(label)[:, None]).sum()
    return scores


@pytest.mark.parametrize("kind", ["encoder", "causal_lm", "seq2seq"])
def test_deep_export_loads_in_peft_with_equal_scores(tmp_path, kind):
    bb = _deep_backbone(kind)
    prompt = _deep(bb, seed=1)
    pm = _peft_model(bb, export_peft(prompt, bb, tmp_path / "adapter", META))
    config = pm.peft_config["default"]
    assert (config.peft_type, config.task_type) == ("PREFIX_TUNING", {"encoder": "FEATURE_EXTRACTION",
                                                                      "causal_lm": "CAUSAL_LM",
                                                                      "seq2seq": "SEQ_2_SEQ_LM"}[kind])
    assert torch.equal(pm.prompt_encoder["default"].embedding.weight, prompt)
    batch, head = _batch(bb), bb.task_head(LABELS)
    B = batch.input_ids.shape[0]
    with torch.no_grad():
        ours = bb.logits(prompt.expand(B, -1, -1), batch, head)
        theirs = _peft_scores(bb, pm, batch, head)
        unprompted = _peft_scores(bb, copy.deepcopy(bb.model), batch, head) if kind != "seq2seq" else None
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)
    if unprompted is not None:  # the adapter's prefix matters, so the equality above is not vacuous
        assert (unprompted - ours).abs().max() > 1e-2


def test_deep_export_writes_prefix_tuning_files_and_round_trips(tmp_path):
    bb = tiny_backbone("causal_lm")
    geo = bb.prefix_geometry
    prompt = _deep(bb, L=5)
    out = export_peft(prompt, bb, tmp_path / "adapter", META)
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"], config["prefix_projection"]) == ("PREFIX_TUNING", "CAUSAL_LM",
                                                                                        False)
    assert (config["num_virtual_tokens"], config["num_layers"], config["token_dim"],
            config["num_attention_heads"]) == (5, 2, 16, 2)
    assert geo.width == config["num_layers"] * 2 * config["token_dim"] == 64
    assert adapter_prompt_kind(out) == "deep"
    back, meta = import_peft(out, expect_dim=bb.deep_width, kind="deep", n_layers=geo.n_layers)
    assert torch.equal(back, prompt) and meta == META
    # a one-layer T5's adapter carries PEFT's own two submodules (its seq2seq cache needs them)
    t5 = _deep_backbone("seq2seq")
    config = json.loads((export_peft(_deep(t5), t5, tmp_path / "t5", META) / "adapter_config.json").read_text())
    assert (config["task_type"], config["num_layers"], config["num_transformer_submodules"]) == ("SEQ_2_SEQ_LM", 1, 2)


def test_deep_export_refuses_masked_lm_and_deeper_seq2seq(tmp_path):
    mlm = tiny_backbone("masked_lm")
    with pytest.raises(PeftExportError, match="'masked_lm' has no faithful PEFT form: PEFT has no masked-LM task"):
        export_peft(_deep(mlm), mlm, tmp_path / "mlm", META)
    t5 = tiny_backbone("seq2seq")  # two decoder layers
    with pytest.raises(PeftExportError, match=r"2 decoder layers .* layer 2i mod 2"):
        export_peft(_deep(t5), t5, tmp_path / "t5", META)
    assert not (tmp_path / "mlm").exists() and not (tmp_path / "t5").exists()
    enc = tiny_backbone("encoder")
    with pytest.raises(PeftExportError, match="width 40 != embedding size 16 .* or deep width 64"):
        export_peft(torch.zeros(3, 40), enc, tmp_path / "enc", META)


def test_import_reads_prefix_adapters_saved_by_peft_itself(tmp_path):
    """A PEFT-trained prefix adapter, plain or projected (PEFT saves the projected prefix), is the deep prompt that
    makes promptgrid's scores equal PEFT's."""
    bb = _deep_backbone("causal_lm")
    batch, head = _batch(bb), bb.task_head(LABELS)
    for projection in (False, True):
        torch.manual_seed(7)
        cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=projection,
                                      encoder_hidden_size=8)
        peft.get_peft_model(copy.deepcopy(bb.model), cfg).save_pretrained(str(tmp_path / f"ad{projection}"))
        prompt, meta = import_peft(tmp_path / f"ad{projection}", expect_dim=bb.deep_width, kind="deep", n_layers=2)
        assert prompt.shape == (3, bb.deep_width) and meta["peft_task_type"] == "CAUSAL_LM"
        pm = _peft_model(bb, tmp_path / f"ad{projection}")
        with torch.no_grad():
            ours = bb.logits(prompt.expand(2, -1, -1), batch, head)
            torch.testing.assert_close(_peft_scores(bb, pm, batch, head), ours, atol=ATOL, rtol=0)


def test_import_refuses_the_other_kind_other_depths_and_deeper_seq2seq(tmp_path):
    bb = tiny_backbone("causal_lm")
    deep = export_peft(_deep(bb), bb, tmp_path / "deep", META)
    shallow = export_peft(_prompt(bb), bb, tmp_path / "input", META)
    assert adapter_prompt_kind(shallow) == "input"
    with pytest.raises(PeftAdapterError, match="peft_type is 'PREFIX_TUNING', which holds deep prompts; input "
                                               "prompts come from 'PROMPT_TUNING'"):
        import_peft(deep, expect_dim=bb.embed_dim, kind="input")
    with pytest.raises(PeftAdapterError, match="peft_type is 'PROMPT_TUNING', which holds input prompts"):
        import_peft(shallow, expect_dim=bb.deep_width, kind="deep")
    with pytest.raises(PeftAdapterError, match=r"prompt width 64 does not match the expected deep prompt width .* 128"):
        import_peft(deep, expect_dim=128, kind="deep")
    with pytest.raises(PeftAdapterError, match="num_layers=2, but the backbone's deep prompts have 4 layers"):
        import_peft(deep, expect_dim=64, kind="deep", n_layers=4)
    config = json.loads((deep / "adapter_config.json").read_text())
    (deep / "adapter_config.json").write_text(json.dumps({**config, "token_dim": 8}))
    with pytest.raises(PeftAdapterError, match=r"num_layers=2 x 2 x token_dim=8 != the stored prefix width 64"):
        import_peft(deep, expect_dim=64, kind="deep")
    # a PEFT-saved adapter of a two-layer T5 decoder: PEFT gives its layers other rows than promptgrid would
    t5 = tiny_backbone("seq2seq")
    peft.get_peft_model(copy.deepcopy(t5.model), peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM",
                                                                         num_virtual_tokens=3)
                        ).save_pretrained(str(tmp_path / "t5"))
    with pytest.raises(PeftAdapterError, match="SEQ_2_SEQ_LM prefix-tuning adapter of 2 layers cannot be"):
        import_peft(tmp_path / "t5", expect_dim=t5.deep_width, kind="deep", n_layers=2)
