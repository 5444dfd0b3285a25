"""PEFT adapters as source prompts (tasks.<name>.peft_adapters): config checks at DAG build, and the train verb
importing instead of training (PromptTuning: input prompts, PrefixTuning: deep prompts)."""
import copy
import json
from pathlib import Path

import pandas as pd
import peft
import pytest
import torch
import yaml
from tiny_models import tiny_model, tokenizer

from promptgrid.config import ConfigError, StudyConfig
from promptgrid.models.peft_io import import_peft
from promptgrid.pipeline.checks import check_inputs_exist
from promptgrid.storage.files import load_prompt

WORDS = ["great", "awful", "fine", "bad", "lovely", "poor", "nice", "terrible"]


def _write_task(path: Path, n: int = 40) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i}", "input": f"the film was {WORDS[i % 8]} number {i}",
                                 "label": "pos" if i % 2 == 0 else "neg"}) + "\n")


def _raw(tmp_path: Path, model_dir: Path, adapters: dict | None = None) -> dict:
    def task(f):
        return {"source": "local", "path": str(tmp_path / f), "labels": {"pos": "good", "neg": "bad"},
                          "dev_fraction": 0.25, "test_fraction": 0.25}
    raw = {
        "study": "peft-sources", "results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"),
        "backbones": {"enc": {"model": str(model_dir), "kind": "encoder", "max_length": 16}},
        "tasks": {"a": task("a.jsonl"), "b": task("b.jsonl"), "c": task("c.jsonl")},
        "sources": ["a", "b"], "targets": ["c"], "seeds": [0, 1],
        "prompt": {"length": 4},
        "training": {"steps": 2, "batch_size": 4, "eval_every": 1, "checkpoint_every": 1, "early_step": 1,
                     "precision": "fp32"},
        "transfer": {"methods": ["zeroshot", "vanilla"]},
        "metrics": {"names": ["cos_avg"]},
    }
    if adapters:
        raw["tasks"]["a"]["peft_adapters"] = adapters
    return raw


@pytest.fixture
def setup(tmp_path):
    model_dir = tmp_path / "tiny-enc"
    tiny_model("encoder", seed=0).save_pretrained(model_dir)
    tokenizer().save_pretrained(model_dir)
    for f in ("a", "b", "c"):
        _write_task(tmp_path / f"{f}.jsonl")
    return tmp_path, model_dir


def _export(tmp_path, model_dir, length=4) -> tuple:
    from promptgrid.config import BackboneConfig
    from promptgrid.models.loading import load_backbone
    from promptgrid.models.peft_io import export_peft

    bb = load_backbone("enc", BackboneConfig(model=str(model_dir), kind="encoder", max_length=16), tmp_path / "cache",
                       attention="sdpa")
    torch.manual_seed(3)
    prompt = 0.1 * torch.randn(length, bb.embed_dim)
    folder = tmp_path / f"adapter{length}"
    export_peft(prompt, bb, folder, {"note": "test"})
    return prompt, folder


def _prepare_and_train(config: Path):
    """Run the prepare and train verbs of tasks a, b, c of the study at ``config``; returns ``verb(name, *args)``,
    which runs one more verb on it and asserts it succeeds."""
    from promptgrid.cli import main

    def verb(*args):
        assert main([args[0], "--config", str(config), *args[1:]]) == 0, args

    for task in ("a", "b", "c"):
        verb("prepare", "--task", task)
        verb("train", "--backbone", "enc", "--task", task)
    return verb


def test_config_refuses_unknown_backbone_and_imported_targets(setup):
    tmp_path, model_dir = setup
    with pytest.raises(ConfigError, match=r"tasks\.a\.peft_adapters\.nope'?: backbone 'nope' is not defined"):
        StudyConfig.from_dict(_raw(tmp_path, model_dir, {"nope": "x/y"}))
    raw = _raw(tmp_path, model_dir)
    raw["tasks"]["c"]["peft_adapters"] = {"enc": "x/y"}
    with pytest.raises(ConfigError, match=r"tasks\.c\.peft_adapters'?: task 'c' is a target"):
        StudyConfig.from_dict(raw)


def test_dag_build_checks_local_adapters(setup):
    tmp_path, model_dir = setup
    with pytest.raises(ConfigError, match="neither an existing adapter folder nor a hub id"):
        check_inputs_exist(StudyConfig.from_dict(_raw(tmp_path, model_dir, {"enc": str(tmp_path / "missing")})))
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="lacks adapter_model.safetensors"):
        check_inputs_exist(StudyConfig.from_dict(_raw(tmp_path, model_dir, {"enc": str(empty)})))
    _, folder6 = _export(tmp_path, model_dir, length=6)
    with pytest.raises(ConfigError, match="has 6 virtual tokens, prompt.length is 4"):
        check_inputs_exist(StudyConfig.from_dict(_raw(tmp_path, model_dir, {"enc": str(folder6)})))
    # a hub id is left to the job (this machine has no hub); a right-sized local folder passes
    check_inputs_exist(StudyConfig.from_dict(_raw(tmp_path, model_dir, {"enc": "someone/prompt-bank"})))
    _, folder4 = _export(tmp_path, model_dir, length=4)
    check_inputs_exist(StudyConfig.from_dict(_raw(tmp_path, model_dir, {"enc": str(folder4)})))


def test_train_verb_imports_the_adapter_and_transfer_uses_it(setup):
    from promptgrid.pipeline.context import Study

    tmp_path, model_dir = setup
    prompt, folder = _export(tmp_path, model_dir)
    raw = _raw(tmp_path, model_dir, {"enc": str(folder)})
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    verb = _prepare_and_train(config)
    out = tmp_path / "results" / "peft-sources"
    for seed in (0, 1):
        for early in ("", ".early"):
            got, meta = load_prompt(out / f"prompts/enc/task/a/seed{seed}{early}.safetensors")
            assert torch.equal(got, prompt)
            assert meta["imported_from"] == str(folder)
    runs = pd.read_parquet(out / "parts/enc/train/a.runs.parquet")
    study = Study.from_file(config)
    objective = study.objective("enc", "a")
    expect_test = objective.score(prompt[None], study.encoded("enc", "a", "test"), 64, "fp32")[0]
    expect_dev = objective.score(prompt[None], study.encoded("enc", "a", "dev"), 64, "fp32")[0]
    assert runs.seed.tolist() == [0, 1] and (runs.best_step == 0).all()
    assert runs.score.tolist() == pytest.approx([expect_test] * 2)
    assert runs.best_dev.tolist() == pytest.approx([expect_dev] * 2)
    # trained task b is unaffected: its prompt moved away from its init
    runs_b = pd.read_parquet(out / "parts/enc/train/b.runs.parquet")
    assert runs_b.last_step.tolist() == [2, 2]

    verb("transfer", "--backbone", "enc", "--method", "zeroshot", "--target", "c")
    zs = pd.read_parquet(out / "parts/enc/zeroshot/c.runs.parquet")
    row = zs[(zs.source == "a") & (zs.seed == 0)]
    expect_c = study.objective("enc", "c").score(prompt[None], study.encoded("enc", "c", "test"), 64, "fp32")[0]
    assert row.score.item() == pytest.approx(expect_c)


# ---------------------------------------------------------------- deep prompts from PrefixTuning adapters
def _prefix_adapter(tmp_path, length=4):
    torch.manual_seed(5)
    pm = peft.get_peft_model(copy.deepcopy(tiny_model("encoder", seed=0)),
                             peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=length))
    folder = tmp_path / "prefix-adapter"
    pm.save_pretrained(str(folder))
    return pm.prompt_encoder["default"].embedding.weight.detach().clone(), folder


def _config(tmp_path, model_dir, adapter, kind):
    raw = _raw(tmp_path, model_dir, {"enc": str(adapter)})
    raw["prompt"] = {"length": 4, "kind": kind, "init": "random"} if kind == "deep" else {"length": 4}
    config = tmp_path / f"study-{kind}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config


def test_prefix_adapter_is_a_deep_source_prompt_and_the_bank_exports(setup):
    tmp_path, model_dir = setup
    weight, folder = _prefix_adapter(tmp_path)
    config = _config(tmp_path, model_dir, folder, "deep")
    verb = _prepare_and_train(config)
    out = tmp_path / "results" / "peft-sources"
    got, meta = load_prompt(out / "prompts/enc/task/a/seed0.safetensors")
    assert got.shape == (4, 64) and torch.equal(got, weight)
    assert meta["imported_from"] == str(folder)
    verb("export-peft-bank", "--backbone", "enc", "--out", str(tmp_path / "bank"))
    exported = json.loads((tmp_path / "bank/b/seed1/adapter_config.json").read_text())
    assert (exported["peft_type"], exported["num_layers"], exported["token_dim"]) == ("PREFIX_TUNING", 2, 16)
    # a local backbone: the adapter names its folder; the card says the prompts are prefixes and which were imported
    assert (exported["base_model_name_or_path"], exported["revision"]) == (str(model_dir.resolve()), None)
    card = (tmp_path / "bank/README.md").read_text()
    assert "- prefix-tuning" in card and f"Imported, not trained here: `{folder}`" in card
    assert "library_name: peft" in card and "base_model:" not in card  # no hub model behind a local folder
    back, _ = load_prompt(out / "prompts/enc/task/a/seed1.safetensors")
    assert torch.equal(import_peft(tmp_path / "bank/a/seed1", expect_dim=64, kind="deep")[0], back)


def test_adapter_of_the_other_kind_is_refused_naming_the_key(setup):
    from promptgrid.models.peft_io import export_peft
    from promptgrid.pipeline.context import Study
    from promptgrid.pipeline.train import train

    tmp_path, model_dir = setup
    _, folder = _prefix_adapter(tmp_path)
    config = _config(tmp_path, model_dir, folder, "input")
    study = Study.from_file(config)
    with pytest.raises(ConfigError, match=r"tasks\.a\.peft_adapters\.enc'?: adapter .* is a PEFT PREFIX_TUNING adapter, "
                                          r"which holds deep prompts, but the study's prompt.kind is 'input'"):
        train(study, "enc", "a")
    shallow = export_peft(torch.zeros(4, 16), study.backbone("enc"), tmp_path / "shallow", {})
    study = Study.from_file(_config(tmp_path, model_dir, shallow, "deep"))
    with pytest.raises(ConfigError, match=r"PROMPT_TUNING adapter, which holds input prompts, but the study's "
                                          r"prompt.kind is 'deep', whose prompts come from PREFIX_TUNING adapters"):
        train(study, "enc", "a")
