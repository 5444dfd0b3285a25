
import re

import pytest
import torch
from tiny_models import liven, tiny_backbone

from promptgrid.config import PromptConfig, TrainingConfig
from promptgrid.engine import training
from promptgrid.engine.scoring import batch_indices, encode_split, predict_bank, score_bank, task_score
from promptgrid.engine.training import RunSpec, kd_loss, train_runs
from promptgrid.methods.panda import PandaConfig
from promptgrid.models.prefix import random_deep_prompt
from promptgrid.models.prompt import PromptBank, init_prompt, weighted_average
from promptgrid.objectives.classification import ClassificationObjective

POS = ["great lovely wonderful", "lovely great stay", "wonderful and great", "great great", "so lovely"]
NEG = ["awful terrible bad", "bad awful stay", "terrible and bad", "awful awful", "so terrible"]


@pytest.fixture(scope="module")
def toy():
    bb = tiny_backbone("encoder", seed=1, temperature=10.0)
    head = bb.task_head(["positive", "negative"])
    texts = POS + NEG
    labels = [0] * len(POS) + [1] * len(NEG)
    data = encode_split(bb, texts, labels)
    return bb, head, data


def test_batch_indices_are_a_pure_function_of_seed_and_step():
    a = batch_indices(10, 4, seed=3, step=5)
    assert torch.equal(a, batch_indices(10, 4, seed=3, step=5))
    assert not torch.equal(a, batch_indices(10, 4, seed=4, step=5))
    # one epoch covers every example exactly once
    epoch = torch.cat([batch_indices(12, 4, 0, s) for s in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))


def test_task_score_accuracy_and_macro_f1():
    pred = torch.tensor([0, 0, 1, 1, 2])
    gold = torch.tensor([0, 1, 1, 1, 0])
    assert task_score(pred, gold, "accuracy", 3) == pytest.approx(60.0)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp0 fn1 -> 0.8; class 2: tp0 fp1 -> 0
    assert task_score(pred, gold, "macro_f1", 3) == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)


def test_predict_bank_matches_one_prompt_at_a_time(toy):
    bb, head, data = toy
    prompts = torch.randn(3, 4, bb.embed_dim)
    together = predict_bank(bb, head, prompts, data, batch_size=8)
    for k in range(3):
        alone = predict_bank(bb, head, prompts[k:k + 1], data, batch_size=8)
        torch.testing.assert_close(together[k], alone[0], atol=1e-5, rtol=1e-5)


def test_training_learns_a_separable_task(minilm):
    bb = minilm
    head = bb.task_head(["no", "yes"])  # inverted on purpose: the prompt must learn to flip the encoder's prior
    data = encode_split(bb, POS + NEG, [0] * len(POS) + [1] * len(NEG))
    cfg = TrainingConfig(lr=0.1, steps=30, batch_size=4, eval_every=10, checkpoint_every=10, early_step=10, precision="fp32")
    init = init_prompt(PromptConfig(length=4), bb.embed_layer.weight, seed=0)
    [res] = train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, [RunSpec("r", 0, init)], cfg, log=lambda m: None)
    assert [p["step"] for p in res.curve] == [0, 10, 20, 30]
    assert res.best_dev == 100.0
    assert res.curve[0]["dev_score"] < 100.0
    assert res.curve[-1]["train_loss"] < res.curve[1]["train_loss"]
    # best prompt reproduces its dev score
    assert score_bank(bb, head, res.best_prompt[None], data, "accuracy")[0] == res.best_dev
    assert not torch.equal(res.early_prompt, init)


def start_prompts(bb, prompt_kind, n):
    """n initial prompts: sampled vocabulary rows (L, d), or N(0, 1) deep prompts (L, D)."""
    if prompt_kind == "deep":
        return [random_deep_prompt(4, bb.deep_width, 1.0, seed=s) for s in range(n)]
    return [init_prompt(PromptConfig(length=4), bb.embed_layer.weight, seed=s) for s in range(n)]


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
@pytest.mark.parametrize("optimizer, lr", [("adamw", 0.05), ("sgd", 2.0), ("adafactor", 0.05)])
def test_bank_runs_are_independent(optimizer, lr, prompt_kind):
    """Each of K runs trained in one bank equals that run trained alone, for every optimiser.

    The runs really learn here (livened weights, a separable task): their prompts move and their dev
    scores change, and the test asserts both, so it cannot pass by comparing initial prompts. Tolerance:
    the bank pads every run's examples to one length and runs them in one GEMM, alone they run in a
    smaller one; padded positions are masked out exactly, so the forward passes agree to fp32 rounding
    (~1e-7 relative), and 8 optimiser steps of size <= lr keep the prompts within 1e-5 of each other.
    A coupled bank (Adafactor clipping over the whole (K, L, d) bank) differs by ~lr, 1000x more.
    """
    bb = liven(tiny_backbone("encoder", seed=1, temperature=10.0), std=0.3, seed=2)
    head = bb.task_head(["positive", "negative"])
    data = encode_split(bb, POS + NEG, [0] * len(POS) + [1] * len(NEG))
    objective = ClassificationObjective(bb, head, "accuracy")
    cfg = TrainingConfig(optimizer=optimizer, lr=lr, weight_decay=0.0, steps=8, batch_size=4, eval_every=2,
                         checkpoint_every=8, early_step=2, precision="fp32")
    inits = start_prompts(bb, prompt_kind, 3)
    runs = [RunSpec(f"r{s}", s, inits[s]) for s in range(3)]
    together = train_runs(bb, objective, data, data, runs, cfg, log=lambda m: None)
    for k, run in enumerate(runs):
        alone = train_runs(bb, objective, data, data, [run], cfg, log=lambda m: None)[0]
        dev = [p["dev_score"] for p in alone.curve]
        assert len(set(dev)) > 1, f"{optimizer}: run {k}'s dev score never changed: {dev}"
        assert (alone.early_prompt - inits[k]).abs().max() > 100 * 1e-5, f"{optimizer}: run {k} did not move"
        torch.testing.assert_close(together[k].early_prompt, alone.early_prompt, atol=1e-5, rtol=0)
        torch.testing.assert_close(together[k].best_prompt, alone.best_prompt, atol=1e-5, rtol=0)
        assert [p["dev_score"] for p in together[k].curve] == dev
        assert together[k].best_step == alone.best_step


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
def test_resume_is_bit_identical(toy, tmp_path, monkeypatch, prompt_kind):
    bb, head, data = toy
    cfg = TrainingConfig(lr=0.1, steps=12, batch_size=4, eval_every=3, checkpoint_every=4, early_step=4, precision="fp32")
    init = start_prompts(bb, prompt_kind, 1)[0]
    runs = [RunSpec("a", 0, init), RunSpec("b", 1, init * 0.5)]
    full = train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, runs, cfg, log=lambda m: None)

    ckpt = tmp_path / "ckpt.pt"
    real_save = training.save_torch_checkpoint
    saves = []

    def crash_after_second_save(path, state):
        real_save(path, state)
        saves.append(state["state"]["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(training, "save_torch_checkpoint", crash_after_second_save)
    with pytest.raises(KeyboardInterrupt):
        train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, runs, cfg, checkpoint=ckpt, checkpoint_key="k", log=lambda m: None)
    assert saves == [4, 8] and ckpt.exists()
    monkeypatch.setattr(training, "save_torch_checkpoint", real_save)
    logs = []
    resumed = train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, runs, cfg, checkpoint=ckpt, checkpoint_key="k",
                         log=logs.append)
    assert any("resumed" in m and "step 8" in m for m in logs)
    for f, r in zip(full, resumed):
        assert torch.equal(f.best_prompt, r.best_prompt)
        assert str(f.curve) == str(r.curve)  # str(): the step-0 loss is NaN, and NaN != NaN
    # a checkpoint of another configuration is ignored, not trusted
    logs.clear()
    train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, runs, cfg, checkpoint=ckpt, checkpoint_key="other", log=logs.append)
    assert any("ignoring checkpoint" in m for m in logs)


def test_early_stop_stops_a_run(toy):
    bb, head, data = toy
    cfg = TrainingConfig(lr=1e-9, steps=40, batch_size=4, eval_every=2, early_stop=2, checkpoint_every=10,
                         early_step=2, precision="fp32")
    init = init_prompt(PromptConfig(length=4), bb.embed_layer.weight, seed=0)
    [res] = train_runs(bb, ClassificationObjective(bb, head, "accuracy"), data, data, [RunSpec("r", 0, init)], cfg, log=lambda m: None)
    assert res.last_step == 4  # evals at 0, 2, 4: two without improvement


def test_kd_losses():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 4.0], [0.0, 0.0]])
    assert kd_loss(s, t, PandaConfig(kd_loss="mse")).tolist() == [2.0, 0.0]
    kl = kd_loss(s, t, PandaConfig(kd_loss="kl", kd_temperature=1.0))
    p_t = torch.softmax(t[0], -1)
    expected = (p_t * (p_t.log() - torch.log_softmax(s[0], -1))).sum()
    assert kl[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)


def test_prompt_init_kinds():
    emb = torch.arange(40000 * 3, dtype=torch.float32).view(40000, 3)
    cfg = PromptConfig(length=5, init="vocab", vocab_top=100)
    p = init_prompt(cfg, emb, seed=0)
    rows = (p[:, 0] / 3).long()
    assert p.shape == (5, 3) and rows.min() >= 1000 and rows.max() < 1100 and len(set(rows.tolist())) == 5
    assert torch.equal(p, init_prompt(cfg, emb, seed=0))
    lab = init_prompt(PromptConfig(length=5, init="labels"), emb, seed=0, label_token_ids=[[1, 3], [5]])
    assert lab[0].tolist() == emb[[1, 3]].mean(0).tolist() and lab[1].tolist() == emb[5].tolist()
    rnd = init_prompt(PromptConfig(length=5, init="random", random_std=0.5), emb, seed=1)
    assert 0.2 < rnd.std().item() < 0.9
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        init_prompt(PromptConfig(length=5, init="file", init_file="x"), emb, 0, from_file=torch.zeros(4, 3))
    w = weighted_average(torch.stack([torch.ones(2, 3), 3 * torch.ones(2, 3)]), torch.tensor([1.0, 3.0]))
    assert torch.allclose(w, torch.full((2, 3), 2.5))
    bank = PromptBank(torch.stack([torch.zeros(2, 3), torch.ones(2, 3)]))
    assert bank(torch.tensor([1, 0, 1]))[:, 0, 0].tolist() == [1.0, 0.0, 1.0]


def test_two_runs_of_a_deep_bank_share_no_prefix():
    """Row b of a batch sees only its own run's prefix: the loss of run 0's rows has no gradient in run 1's
    parameter, and a bank's logits equal each prompt's alone."""
    bb = liven(tiny_backbone("encoder", seed=1, temperature=10.0), std=0.3, seed=2)
    head = bb.task_head(["positive", "negative"])
    data = encode_split(bb, POS + NEG, [0] * len(POS) + [1] * len(NEG))
    bank = PromptBank(torch.stack(start_prompts(bb, "deep", 2)))
    objective = ClassificationObjective(bb, head, "accuracy")
    per_example, _ = objective.forward(bank(torch.tensor([0, 0, 1, 1])), data, [0, 5, 1, 6])
    per_example[:2].sum().backward()
    assert bank.runs[0].grad.abs().sum() > 0
    assert bank.runs[1].grad is None or bank.runs[1].grad.abs().sum() == 0
    together = predict_bank(bb, head, bank.prompts.detach(), data, batch_size=8)
    for k in range(2):
        alone = predict_bank(bb, head, bank.prompts.detach()[k:k + 1], data, batch_size=8)
        torch.testing.assert_close(together[k], alone[0], atol=1e-5, rtol=1e-5)
    assert (together[0] - together[1]).abs().max() > 1e-3  # the two prefixes do differ in what they score


# ---------------------------------------------------------------- progress lines between evaluations
PROGRESS = re.compile(r"\[(?P<label>[^\]]+)\] step (?P<step>\d+)/(?P<steps>\d+) loss (?P<loss>[\d.]+) "
                      r"(?P<rate>[\d.]+) examples/s ETA (?P<eta>\d+)s$")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedObjective:
    """The classification objective, each training forward costing ``seconds`` of fake time; it records each
    step's mean loss over the bank's rows (the runs' batches are the same size, so that is the mean of the runs'
    losses). Scoring delegates to the objective unchanged and costs no fake time."""

    def __init__(self, inner, clock: FakeClock, seconds: float):
        self.inner, self.clock, self.seconds, self.step_losses = inner, clock, seconds, []

    def forward(self, prompts, split, idx):
        self.clock.now += self.seconds
        per_example, outputs = self.inner.forward(prompts, split, idx)
        self.step_losses.append(per_example.detach().mean().item())
        return per_example, outputs

    def __getattr__(self, name):
        return getattr(self.inner, name)


def timed_training(toy, seconds_per_step: float, steps: int = 30, eval_every: int = 15, n_runs: int = 2):
    bb, head, data = toy
    clock = FakeClock()
    objective = TimedObjective(ClassificationObjective(bb, head, "accuracy"), clock, seconds_per_step)
    cfg = TrainingConfig(lr=0.1, steps=steps, batch_size=4, eval_every=eval_every, checkpoint_every=steps,
                         early_step=2, precision="fp32")
    init = init_prompt(PromptConfig(length=4), bb.embed_layer.weight, seed=0)
    runs = [RunSpec(f"r{k}", k, init) for k in range(n_runs)]
    lines = []  # (fake time, line)
    results = train_runs(bb, objective, data, data, runs, cfg, label="train t", clock=clock,
                         log=lambda m: lines.append((clock.now, m)))
    return lines, objective.step_losses, results


def test_progress_lines_between_evaluations(toy, monkeypatch):
    """12 s per step, evaluations every 15 steps (180 s apart): a progress line at least every 30 s, whose step,
    loss (the mean since the last line), examples/s and ETA are what the steps did."""
    monkeypatch.delenv("PROMPTGRID_PROGRESS_S", raising=False)
    lines, step_losses, _ = timed_training(toy, seconds_per_step=12.0)
    assert len(step_losses) == 30
    progress = [(t, PROGRESS.match(m)) for t, m in lines if PROGRESS.match(m)]
    evals = [(t, m) for t, m in lines if re.search(r"step \d+/30 .* dev ", m)]
    # the default interval is 20 s: a line every second step, none at the evaluation steps 15 and 30
    assert [int(p["step"]) for _, p in progress] == [2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29]
    assert len(evals) == 3
    times = sorted(t for t, _ in progress + evals)
    assert max(b - a for a, b in zip(times, times[1:])) <= 30.0
    line_steps = [0, 15, 30] + [int(p["step"]) for _, p in progress]
    for _, p in progress:
        step = int(p["step"])
        previous = max(s for s in line_steps if s < step)  # the last line: an evaluation or progress
        assert p["label"] == "train t" and p["steps"] == "30"
        since = step_losses[previous:step]  # steps previous+1 .. step
        assert float(p["loss"]) == pytest.approx(sum(since) / len(since), abs=1e-4)
        assert float(p["rate"]) == pytest.approx(2 * 4 / 12.0, abs=0.01)  # 2 runs x batch 4 per 12 s
        assert int(p["eta"]) == pytest.approx(12.0 * (30 - step), abs=1)
    assert "examples/s" in lines[-1][1] and "done: 2 runs, steps 30" in lines[-1][1]
    rate = float(re.search(r"([\d.]+) examples/s", lines[-1][1]).group(1))
    assert rate == pytest.approx(2 * 4 / 12.0, abs=0.01)


def test_no_progress_lines_when_evaluations_come_often_enough(toy, monkeypatch):
    monkeypatch.delenv("PROMPTGRID_PROGRESS_S", raising=False)
    lines, _, _ = timed_training(toy, seconds_per_step=3.9, steps=10, eval_every=5)  # 19.5 s between evaluations
    assert not [m for _, m in lines if PROGRESS.match(m)]
    assert len([m for _, m in lines if re.search(r"step \d+/10 .* dev ", m)]) == 3  # evaluations at 0, 5, 10
    assert "done:" in lines[-1][1]


def test_progress_lines_change_no_result(toy, monkeypatch):
    """A line every step (PROMPTGRID_PROGRESS_S=0) reads the loss sums from the device: the prompts, curves and
    scores are the same as with no line at all."""
    monkeypatch.setenv("PROMPTGRID_PROGRESS_S", "0")
    lines, _, every = timed_training(toy, seconds_per_step=1.0, steps=8, eval_every=4)
    assert [int(PROGRESS.match(m)["step"]) for _, m in lines if PROGRESS.match(m)] == [1, 2, 3, 5, 6, 7]
    monkeypatch.delenv("PROMPTGRID_PROGRESS_S")
    lines, _, quiet = timed_training(toy, seconds_per_step=1.0, steps=8, eval_every=4)
    assert not [m for _, m in lines if PROGRESS.match(m)]
    for a, b in zip(every, quiet):
        assert torch.equal(a.best_prompt, b.best_prompt) and torch.equal(a.early_prompt, b.early_prompt)
        assert str(a.curve) == str(b.curve)


@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_progress_interval_refuses_a_bad_value(monkeypatch, value):
    from promptgrid.errors import InputError

    monkeypatch.setenv("PROMPTGRID_PROGRESS_S", value)
    with pytest.raises(InputError, match=f"PROMPTGRID_PROGRESS_S='{value}'"):
        training.progress_interval()
    monkeypatch.setenv("PROMPTGRID_PROGRESS_S", "7.5")
    assert training.progress_interval() == 7.5
