"""The engine's device code, tested without a GPU.

A tensor built on the wrong device is the GPU bug a CPU never shows. Here the tiny models live on torch's
``meta`` device: every op still runs (shapes only), and torch refuses any op that mixes a meta tensor with a
CPU one, as CUDA refuses a CPU tensor. So a batch, mask, label or index that the code forgets to put on
``backbone.device`` fails these tests on a CPU. Chunked and out-of-memory paths of the bank are tested with
real values.
"""
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_models import tiny_backbone, tiny_model, tokenizer

from promptgrid.config import BackboneConfig, TaskConfig, TrainingConfig
from promptgrid.data.formats import read_conll
from promptgrid.engine import memory, scoring
from promptgrid.engine.training import RunSpec, train_runs
from promptgrid.methods.panda import PandaConfig
from promptgrid.models.loading import wrap_model
from promptgrid.objectives.classification import ClassificationObjective
from promptgrid.objectives.regression import RegressionObjective
from promptgrid.objectives.tagging import TaggingObjective
from promptgrid.objectives.text import TextObjective

FIX = Path(__file__).parents[1] / "fixtures" / "generation"
KINDS = ["encoder", "masked_lm", "causal_lm", "seq2seq"]
L = 3
TEXTS = ["a great film", "awful, boring and long", "fine", "the best thing i have seen in years", "meh", "no"]


@pytest.fixture(autouse=True)
def no_data_dependent_mask_shortcuts(monkeypatch):
    """transformers skips an all-ones padding mask by reading it (``mask.all()``), which a meta tensor cannot
    answer; the shortcut changes no result, so the tests take the general path."""
    import transformers.masking_utils as mu

    for name in ("_ignore_bidirectional_mask_sdpa", "_ignore_causal_mask_sdpa"):
        if hasattr(mu, name):
            monkeypatch.setattr(mu, name, lambda *a, **k: False)


def meta_backbone(kind):
    cfg = BackboneConfig(model="tiny", kind=kind, max_length=32)
    return wrap_model(f"tiny-{kind}", cfg, tiny_model(kind), tokenizer(), device="meta")


def check_backward(bb, obj, split, idx, kd_outputs=True, prompt_kind="input"):
    """forward + KD + backward of a bank on the backbone's device; the prompt gradient lands there."""
    prompts = torch.nn.Parameter(torch.randn(len(idx), L, bb.prompt_width(prompt_kind), device=bb.device))
    per_example, outputs = obj.forward(prompts, split, idx)
    assert per_example.shape == (len(idx),) and per_example.device == bb.device
    if kd_outputs:
        with torch.no_grad():
            _, teacher = obj.forward(prompts.detach() * 2, split, idx)
        per_example = per_example + obj.kd(outputs, teacher, PandaConfig())
    per_example.sum().backward()
    assert prompts.grad is not None and prompts.grad.device == bb.device


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
@pytest.mark.parametrize("kind", KINDS)
def test_classification_and_regression_compute_on_the_backbones_device(kind, prompt_kind):
    bb = meta_backbone(kind)
    assert bb.device.type == "meta"
    frame = pd.DataFrame({"text": TEXTS, "label": [1, 0, 1, 1, 0, 0]})
    obj = ClassificationObjective(bb, bb.task_head(["bad", "good"]))
    split = obj.encode(frame)
    check_backward(bb, obj, split, [0, 3, 5, 1], prompt_kind=prompt_kind)
    # scoring's inner step: a bank of prompts on a length-sorted batch, under inference mode
    with torch.inference_mode():
        batch = bb.collate([split.ids[i] for i in [0, 1, 2]] * 2)
        assert batch.input_ids.device == bb.device and batch.attention_mask.device == bb.device
        logits = bb.logits(torch.randn(6, L, bb.prompt_width(prompt_kind)), batch, obj.head)  # host prompts move
    assert logits.shape == (6, 2) and logits.device == bb.device
    reg = RegressionObjective(bb, TaskConfig(source="local", path="x", kind="regression", labels={"low": "bad",
                                                                                               "high": "good"}))
    check_backward(bb, reg, reg.encode(frame.assign(label=[4.5, 0.5, 3.0, 5.0, 1.0, 2.0])), [0, 1, 2],
                   prompt_kind=prompt_kind)


@pytest.mark.parametrize("kind", ["encoder", "masked_lm"])
def test_tagging_computes_on_the_backbones_device(kind):
    bb = meta_backbone(kind)
    obj = TaggingObjective(bb, TaskConfig(source="local", path=str(FIX / "conll2003.jsonl"), kind="ner"))
    split = obj.encode(read_conll(FIX / "conll2003.jsonl"))
    check_backward(bb, obj, split, [0, 1, 2])


def test_text_to_text_computes_on_the_backbones_device():
    """seq2seq only: the causal LM's teacher-forced pass uses torch.unique, which has no meta kernel."""
    bb = meta_backbone("seq2seq")
    obj = TextObjective(bb, TaskConfig(source="local", path=str(FIX / "squad.jsonl"), kind="span_qa"))
    frame = pd.DataFrame({"text": TEXTS[:3], "targets": [["film"], ["boring"], ["fine"]]})
    check_backward(bb, obj, obj.encode(frame), [0, 1, 2])


def test_a_host_tensor_in_the_forward_pass_is_caught():
    """The guard itself: a batch left on the host next to a meta model fails (so the tests above can)."""
    bb = meta_backbone("encoder")
    batch = bb.collate([[101, 2000, 102]])
    batch.attention_mask = torch.ones(1, 3, dtype=torch.long)  # left on the host
    with pytest.raises((RuntimeError, ValueError), match="device"):
        bb.logits(torch.randn(1, L, bb.embed_dim, device="meta"), batch, bb.task_head(["a", "b"]))


# ---------------------------------------------------------------- memory-aware banks (real values)
def encoder_task():
    bb = tiny_backbone("encoder")
    obj = ClassificationObjective(bb, bb.task_head(["bad", "good"]))
    frame = pd.DataFrame({"text": TEXTS * 4, "label": [1, 0, 1, 1, 0, 0] * 4})
    return bb, obj, obj.encode(frame)


def bank_runs(bb, k=4, teacher=False, prompt_kind="input"):
    gen = torch.Generator().manual_seed(0)
    inits = torch.randn(k, L, bb.prompt_width(prompt_kind), generator=gen)
    return [RunSpec(f"r{i}", i % 2, inits[i], teacher=inits[(i + 1) % k] if teacher else None,
                    beta=0.5 if teacher else 0.0) for i in range(k)]


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
@pytest.mark.parametrize("max_tokens", [40, 12, 3])
def test_a_chunked_bank_matches_the_unchunked_bank(max_tokens, prompt_kind):
    """max_tokens 40: chunks of whole runs; 12 and 3: slices of one run's rows (3: one row per pass). A deep
    prompt's L prefix positions count as tokens of the row, as an input prompt's do."""
    bb, obj, data = encoder_task()
    cfg = TrainingConfig(steps=4, batch_size=4, eval_every=2, lr=0.05, early_step=2, precision="fp32")
    runs = bank_runs(bb, teacher=True, prompt_kind=prompt_kind)
    whole = train_runs(bb, obj, data, data, runs, cfg, kd=PandaConfig(), log=lambda m: None)
    lines = []
    chunked = train_runs(bb, obj, data, data, runs, TrainingConfig(**{**cfg.__dict__, "max_tokens": max_tokens}),
                         kd=PandaConfig(), log=lines.append)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(b.best_prompt, a.best_prompt, rtol=1e-5, atol=1e-6)
        assert [c["dev_score"] for c in a.curve] == [c["dev_score"] for c in b.curve]
        losses_a = [c["train_loss"] for c in a.curve[1:]]
        losses_b = [c["train_loss"] for c in b.curve[1:]]
        assert losses_b == pytest.approx(losses_a, rel=1e-5)
    assert not any("out of memory" in m for m in lines)


def test_plan_chunks_cuts_by_tokens():
    P = memory.Piece
    assert memory.plan_chunks(3, 4, 10, None) == [[P(0, 0, 4), P(1, 0, 4), P(2, 0, 4)]]
    assert memory.plan_chunks(3, 4, 10, 80) == [[P(0, 0, 4), P(1, 0, 4)], [P(2, 0, 4)]]
    assert memory.plan_chunks(2, 4, 10, 25) == [[P(0, 0, 2)], [P(0, 2, 4)], [P(1, 0, 2)], [P(1, 2, 4)]]
    assert memory.plan_chunks(1, 3, 10, 1) == [[P(0, 0, 1)], [P(0, 1, 2)], [P(0, 2, 3)]]


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
def test_out_of_memory_halves_the_chunk_and_the_results_match(monkeypatch, prompt_kind):
    """A device that holds at most 9 rows per pass: the 16-row step fails, is retried at half, and every run
    ends where an unchunked run ends (up to float rounding)."""
    bb, obj, data = encoder_task()
    cfg = TrainingConfig(steps=3, batch_size=4, eval_every=3, lr=0.05, early_step=1, precision="fp32")
    runs = bank_runs(bb, prompt_kind=prompt_kind)
    whole = train_runs(bb, obj, data, data, runs, cfg, log=lambda m: None)
    forward = obj.forward
    passes = []

    def small_device(prompts, split, idx):
        passes.append(len(idx))
        if len(idx) > 9:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(prompts, split, idx)

    monkeypatch.setattr(obj, "forward", small_device)
    lines = []
    chunked = train_runs(bb, obj, data, data, runs, cfg, log=lines.append)
    halvings = [m for m in lines if "out of memory" in m]
    assert len(halvings) == 1 and "retrying with at most" in halvings[0], lines
    assert passes[0] == 16 and max(passes[1:]) <= 8
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(b.best_prompt, a.best_prompt, rtol=1e-5, atol=1e-6)


def test_out_of_memory_at_a_single_row_is_an_error(monkeypatch):
    bb, obj, data = encoder_task()

    def no_memory(prompts, split, idx):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(obj, "forward", no_memory)
    cfg = TrainingConfig(steps=1, batch_size=2, eval_every=1, early_step=1, precision="fp32", max_tokens=1)
    with pytest.raises(MemoryError, match="single row"):
        train_runs(bb, obj, data, data, bank_runs(bb, 1), cfg, log=lambda m: None)


def test_scoring_copies_back_once_and_matches_per_prompt_scores():
    bb, obj, data = encoder_task()
    prompts = torch.randn(3, L, bb.embed_dim, generator=torch.Generator().manual_seed(1))
    together = scoring.predict_bank(bb, obj.head, prompts, data, batch_size=6)
    assert together.device.type == "cpu" and together.shape == (3, len(data), 2)
    for k in range(3):
        alone = scoring.predict_bank(bb, obj.head, prompts[k:k + 1], data, batch_size=6)
        torch.testing.assert_close(together[k], alone[0], rtol=1e-5, atol=1e-5)


def test_scoring_out_of_memory_halves_the_batch_and_splits_the_bank(monkeypatch, capsys):
    """A device that holds at most 2 rows per pass: 3 prompts at batch 8 fail, the batch halves down to 2 and
    the bank is split; the logits equal the unconstrained ones."""
    bb, obj, data = encoder_task()
    prompts = torch.randn(3, L, bb.embed_dim, generator=torch.Generator().manual_seed(2))
    expected = scoring.predict_bank(bb, obj.head, prompts, data, batch_size=8)
    logits = bb.logits

    def small_device(p, batch, head):
        if p.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return logits(p, batch, head)

    monkeypatch.setattr(bb, "logits", small_device)
    got = scoring.predict_bank(bb, obj.head, prompts, data, batch_size=8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert "retrying with at most 4" in capsys.readouterr().err
