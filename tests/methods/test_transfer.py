"""The built-in transfer methods' plans, on a fake study: which runs each method hands the engine."""
import math
from types import SimpleNamespace

import pytest
import torch

from promptgrid.methods import panda, spot_topk, vanilla, zeroshot
from promptgrid.methods.panda import PandaConfig, panda_beta
from promptgrid.methods.spot_topk import SpotConfig, spot_topk_init
from promptgrid.registry import METHODS

SOURCES, SEEDS = ["a", "b"], [0, 1]


class FakeStudy:
    """What a method reads of a study, with prompts that say where they came from."""

    def __init__(self, transfer=None, sims=None):
        self.cfg = SimpleNamespace(sources=SOURCES, seeds=SEEDS, transfer=transfer, prompt=SimpleNamespace(kind="input"),
                                   training=SimpleNamespace(eval_batch_size=4, batch_size=8))
        self.sims, self.precision, self.read = sims or {}, "fp32", []

    def source_prompts(self, backbone, exclude=()):
        return {(s, seed): torch.full((2, 3), 10.0 * (SOURCES.index(s) + 1) + seed) for s in SOURCES
                if s not in exclude for seed in SEEDS}

    def transfer_prompt(self, backbone, method, target, source, seed):
        self.read.append((method, target, source, seed))
        return torch.full((2, 3), 100.0 * (SOURCES.index(source) + 1) + seed)

    def fresh_init(self, backbone, target, seed):
        return torch.full((2, 3), -float(seed))

    def similarities(self, backbone, target, metric):
        self.read.append(("similarity", target, metric))
        return self.sims


def test_every_builtin_method_is_registered_with_what_the_figures_need():
    for name in ("zeroshot", "vanilla", "spot_topk", "panda"):
        spec = METHODS[name]
        assert len(spec.colour) == 3 and spec.summary and spec.paper
        assert spec.trains == (name != "zeroshot")
    assert [s.name for s in METHODS.ordered()][:4] == ["zeroshot", "vanilla", "spot_topk", "panda"]


def test_vanilla_starts_each_run_from_its_source_prompt_with_that_seeds_data():
    plan = vanilla.plan(FakeStudy(), "bb", "t")
    assert plan.pairs == [(s, seed) for s in SOURCES for seed in SEEDS] and plan.kd is None
    for run, (s, seed) in zip(plan.runs, plan.pairs):
        assert run.seed == seed and run.run_id == f"{s}/seed{seed}" and run.teacher is None
        assert torch.equal(run.init, torch.full((2, 3), 10.0 * (SOURCES.index(s) + 1) + seed))


@pytest.mark.parametrize("weighting, factor", [("authors", 0.1 / 8), ("per_example", 1.0)])
def test_panda_students_start_fresh_and_learn_from_vanillas_prompt_of_the_same_pair(weighting, factor):
    ctx = FakeStudy(SimpleNamespace(panda=PandaConfig(beta_scale=2.0, kd_weighting=weighting)),
                    sims={"a": 0.25, "b": -0.3})
    plan = panda.plan(ctx, "bb", "t")
    assert plan.kd is ctx.cfg.transfer.panda
    for run, (s, seed) in zip(plan.runs, plan.pairs):
        assert torch.equal(run.init, torch.full((2, 3), -float(seed)))  # the target's own fresh init
        # the teacher is vanilla's best prompt of this very (source, seed), loaded from its run
        assert torch.equal(run.teacher, torch.full((2, 3), 100.0 * (SOURCES.index(s) + 1) + seed))
        assert ("vanilla", "t", s, seed) in ctx.read
    assert plan.extra["beta"] == [0.5, 0.5, 0.0, 0.0]  # 2 x 0.25; a negative similarity never anti-distils
    # the authors' code adds 0.1 * beta * MSE(logits) / batch_size to the batch's loss; the engine weights
    # each example's KD by the run's beta and averages over the batch, so the run's weight is that factor
    assert [r.beta for r in plan.runs] == pytest.approx([0.5 * factor, 0.5 * factor, 0.0, 0.0])
    assert plan.extra["kd_weight"] == [r.beta for r in plan.runs]
    assert ("similarity", "t", "panda_sim") in ctx.read


def test_panda_beta_mapping():
    cfg = PandaConfig(beta_scale=2.0)
    assert panda_beta(0.25, cfg) == 0.5
    assert panda_beta(-0.3, cfg) == 0.0  # never anti-distillation
    assert panda_beta(3.0, cfg) == 2.0   # T clipped to 1
    assert panda_beta(math.nan, cfg) == 0.0 and panda_beta(None, cfg) == 0.0
    assert panda_beta(0.9, PandaConfig(beta=0.1)) == 0.1  # fixed-beta ablation
    assert PandaConfig(beta_metric="panda").beta_metric == "panda_sim"  # the old spelling still means the metric


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


def test_spot_topk_ranks_sources_by_the_targets_early_prompt():
    ctx = FakeStudy(SimpleNamespace(spot_topk=SpotConfig(k=1, metric="e_con")))
    # the target's early prompt of each seed sits next to source a (seed 0) or source b (seed 1)
    early = {0: torch.full((2, 3), 10.5), 1: torch.full((2, 3), 21.2)}

    def task_prompt(backbone, task, seed, early_checkpoint=False):
        assert task == "t" and early_checkpoint, "SPoT top-k must read the target's early prompt"
        return early[seed]

    ctx.task_prompt = lambda backbone, task, seed, early=False: task_prompt(backbone, task, seed, early)

    plan = spot_topk.plan(ctx, "bb", "t")
    assert plan.pairs == [("top1", 0), ("top1", 1)]
    assert torch.equal(plan.runs[0].init, torch.full((2, 3), 10.0))  # source a of seed 0: nearest to early[0]
    assert torch.equal(plan.runs[1].init, torch.full((2, 3), 21.0))  # source b of seed 1
    assert '"a"' in plan.extra["mixture"][0] and '"b"' in plan.extra["mixture"][1]
    assert not any(r[0] == "similarity" for r in ctx.read)  # a prompt-only metric needs no similarity part


def test_zeroshot_scores_every_source_prompt_in_one_call():
    calls = []

    class Objective:
        def score(self, bank, split, batch_size, precision):
            calls.append(tuple(bank.shape))
            return [float(p.mean()) for p in bank]

    ctx = FakeStudy()
    ctx.objective = lambda backbone, target: Objective()
    ctx.encoded = lambda backbone, target, split: "test split"
    scores = zeroshot.evaluate(ctx, "bb", "t")
    assert calls == [(4, 2, 3)]
    assert scores == {("a", 0): 10.0, ("a", 1): 11.0, ("b", 0): 20.0, ("b", 1): 21.0}
