"""On a CUDA GPU (marker ``gpu``; skipped elsewhere): the engine computes there, agrees with the CPU, and
repeats itself bit for bit. Run on a lent GPU with ``pytest -m gpu``."""
import pandas as pd
import pytest
import torch
from tiny_models import tiny_model, tokenizer

from promptgrid.config import BackboneConfig, TrainingConfig
from promptgrid.engine.training import RunSpec, train_runs
from promptgrid.models.devices import set_deterministic
from promptgrid.models.loading import wrap_model
from promptgrid.models.precision import knob_settings, precision_scope
from promptgrid.objectives.classification import ClassificationObjective

pytestmark = pytest.mark.gpu
TEXTS = ["a great film", "awful, boring and long", "fine", "the best thing i have seen in years", "meh", "no"]


def task(device, kind="encoder"):
    cfg = BackboneConfig(model="tiny", kind=kind, max_length=32)
    bb = wrap_model(f"tiny-{kind}", cfg, tiny_model(kind), tokenizer(), device=device)
    obj = ClassificationObjective(bb, bb.task_head(["bad", "good"]))
    data = obj.encode(pd.DataFrame({"text": TEXTS * 4, "label": [1, 0, 1, 1, 0, 0] * 4}))
    return bb, obj, data


def runs(dim, k=3):
    inits = torch.randn(k, 4, dim, generator=torch.Generator().manual_seed(0))
    return [RunSpec(f"r{i}", i, inits[i]) for i in range(k)]


@pytest.mark.parametrize("kind", ["encoder", "masked_lm", "causal_lm", "seq2seq"])
def test_fp32_on_the_gpu_matches_the_cpu(kind):
    """fp32 is IEEE fp32 on the GPU too (TF32 off): a short bank agrees with the CPU to float rounding."""
    cfg = TrainingConfig(steps=4, batch_size=4, eval_every=2, early_step=2, lr=0.05, precision="fp32")
    out = {}
    for device in ("cpu", "cuda"):
        bb, obj, data = task(device, kind)
        assert bb.device.type == device
        out[device] = train_runs(bb, obj, data, data, runs(bb.embed_dim), cfg, log=lambda m: None)
    for a, b in zip(out["cpu"], out["cuda"]):
        torch.testing.assert_close(b.best_prompt, a.best_prompt, rtol=1e-4, atol=1e-5)
        assert b.best_prompt.device.type == "cpu"


def test_fp32_scope_turns_tf32_off():
    with precision_scope("fp32", "cuda"):
        assert knob_settings().get("cuda.matmul") == "ieee"


def test_bf16_on_the_gpu_repeats_bit_for_bit_and_stays_near_fp32():
    set_deterministic("cuda")
    cfg = TrainingConfig(steps=4, batch_size=4, eval_every=2, early_step=2, lr=0.05, precision="bf16")
    bb, obj, data = task("cuda")
    first = train_runs(bb, obj, data, data, runs(bb.embed_dim), cfg, log=lambda m: None)
    again = train_runs(bb, obj, data, data, runs(bb.embed_dim), cfg, log=lambda m: None)
    for a, b in zip(first, again):
        assert torch.equal(a.best_prompt, b.best_prompt)
    fp32 = train_runs(bb, obj, data, data, runs(bb.embed_dim), TrainingConfig(**{**cfg.__dict__, "precision": "fp32"}),
                      log=lambda m: None)
    for a, b in zip(first, fp32):
        torch.testing.assert_close(a.best_prompt, b.best_prompt, rtol=0.05, atol=2e-2)


def test_sdpa_attention_reruns_bit_for_bit_under_deterministic_mode():
    """What the README's determinism section states for SDPA (the GPU default): a rerun of the same job on
    the same GPU gives the same prompts, bit for bit."""
    set_deterministic("cuda")
    cfg = BackboneConfig(model="tiny", kind="encoder", max_length=32)
    model = tiny_model("encoder")
    model.config._attn_implementation = "sdpa"
    bb = wrap_model("tiny-sdpa", cfg, model, tokenizer(), device="cuda")
    obj = ClassificationObjective(bb, bb.task_head(["bad", "good"]))
    data = obj.encode(pd.DataFrame({"text": TEXTS * 4, "label": [1, 0, 1, 1, 0, 0] * 4}))
    tcfg = TrainingConfig(steps=4, batch_size=4, eval_every=2, early_step=2, lr=0.05, precision="bf16")
    first = train_runs(bb, obj, data, data, runs(bb.embed_dim), tcfg, log=lambda m: None)
    again = train_runs(bb, obj, data, data, runs(bb.embed_dim), tcfg, log=lambda m: None)
    for a, b in zip(first, again):
        assert torch.equal(a.best_prompt, b.best_prompt)
