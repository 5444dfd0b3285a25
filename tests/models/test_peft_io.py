"""PEFT prompt-tuning export/import: PEFT's forward pass gives what promptgrid's prompted path gives."""
import copy
import json

import peft  # a required dependency (pyproject): a missing install must fail, not skip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny_models import tiny_backbone

from promptgrid.models.peft_io import PROMPT_KEY, PeftAdapterError, PeftExportError, export_peft, import_peft
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
