import math

import pytest
import torch

from promptgrid.config import PandaConfig, SpotConfig
from promptgrid.transfer import panda_beta, panda_runs, spot_topk_init, vanilla_runs, zeroshot_scores


def test_zeroshot_scores_one_call_for_all_prompts():
    prompts = {("a", 0): torch.zeros(2, 3), ("b", 0): torch.ones(2, 3), ("a", 1): 2 * torch.ones(2, 3)}
    calls = []

    def score(bank):
        calls.append(bank.shape)
        return [float(p.sum()) for p in bank]

    assert zeroshot_scores(score, prompts) == {("a", 0): 0.0, ("b", 0): 6.0, ("a", 1): 12.0}
    assert calls == [(3, 2, 3)]


def test_vanilla_runs_copy_the_source_prompt_and_its_seed():
    src = {("a", 1): torch.ones(2, 3)}
    [run] = vanilla_runs(src)
    assert (run.run_id, run.seed) == ("a/seed1", 1) and torch.equal(run.init, src[("a", 1)])
    run.init += 1
    assert torch.equal(src[("a", 1)], torch.ones(2, 3))  # a copy, not a view


def test_panda_beta_mapping():
    cfg = PandaConfig(beta_scale=2.0)
    assert panda_beta(0.25, cfg) == 0.5
    assert panda_beta(-0.3, cfg) == 0.0  # never anti-distillation
    assert panda_beta(3.0, cfg) == 2.0   # T clipped to 1
    assert panda_beta(float("nan"), cfg) == 0.0 and panda_beta(None, cfg) == 0.0
    assert panda_beta(0.9, PandaConfig(beta=0.1)) == 0.1  # fixed-beta ablation


def test_panda_runs_student_is_fresh_teacher_is_vanilla():
    teachers = {("a", 0): torch.full((2, 3), 5.0), ("b", 0): torch.full((2, 3), 7.0)}
    inits = {0: torch.zeros(2, 3)}
    runs = panda_runs(teachers, inits, {"a": 0.5, "b": 0.2}, PandaConfig())
    assert [r.beta for r in runs] == [0.5, 0.2]
    assert all(torch.equal(r.init, inits[0]) for r in runs)
    assert torch.equal(runs[1].teacher, teachers[("b", 0)])


def test_spot_topk_weighted_average():
    prompts = {("a", 0): torch.full((1, 2), 1.0), ("b", 0): torch.full((1, 2), 3.0),
               ("c", 0): torch.full((1, 2), 100.0), ("a", 1): torch.zeros(1, 2)}
    sims = {"a": 0.2, "b": 0.6, "c": 0.1}
    init, mix = spot_topk_init(prompts, sims, seed=0, cfg=SpotConfig(k=2))
    assert [s for s, _ in mix] == ["b", "a"]
    assert [w for _, w in mix] == pytest.approx([0.75, 0.25])
    assert torch.allclose(init, torch.full((1, 2), 0.75 * 3 + 0.25 * 1))
    with pytest.raises(ValueError, match="seed 5"):
        spot_topk_init(prompts, sims, seed=5, cfg=SpotConfig(k=2))
