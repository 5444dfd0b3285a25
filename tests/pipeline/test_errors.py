"""Bad input gets a clear error naming the culprit. One case per row of the README's error table
(the data-file cases live in test_tasks.py, the config-key cases in test_config.py and
test_workflow.py, which checks that they surface while the DAG is built)."""
import copy
import json

import pytest
import torch
import yaml

from promptgrid.config import BackboneConfig, ConfigError, StudyConfig
from promptgrid.errors import InputError
from promptgrid.models.backbones import BackboneError
from promptgrid.models.loading import load_backbone
from promptgrid.pipeline.checks import check_inputs_exist, check_study_dir
from promptgrid.storage.files import PromptFileError, load_prompt, save_prompt


@pytest.fixture
def raw(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


@pytest.fixture
def good_prompt(tmp_path):
    path = tmp_path / "p.safetensors"
    save_prompt(path, torch.randn(4, 8), {"backbone": "minilm", "task": "t"})
    return path


def test_corrupt_prompt_file_names_the_file(tmp_path):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a safetensors file" * 3)
    with pytest.raises(PromptFileError, match=r"corrupt\.safetensors is corrupt or truncated"):
        load_prompt(bad)


def test_truncated_prompt_file_names_the_file(good_prompt, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good_prompt.read_bytes()[:-40])
    with pytest.raises(PromptFileError, match=r"cut\.safetensors is corrupt or truncated"):
        load_prompt(cut)


def test_empty_prompt_file(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(PromptFileError, match=r"empty\.safetensors is empty"):
        load_prompt(tmp_path / "empty.safetensors")


def test_prompt_of_wrong_shape_for_backbone(good_prompt):
    with pytest.raises(PromptFileError, match=r"p\.safetensors: prompt width 8 does not match the backbone's "
                                              r"embedding size 384.*backbone='minilm'"):
        load_prompt(good_prompt, expect_dim=384)
    with pytest.raises(PromptFileError, match=r"prompt length 4 != configured length 20"):
        load_prompt(good_prompt, expect_length=20)


def test_prompt_file_with_nan(tmp_path):
    path = tmp_path / "nan.safetensors"
    save_prompt(path, torch.full((2, 3), float("nan")), {})
    with pytest.raises(PromptFileError, match="NaN"):
        load_prompt(path)


def test_backbone_that_cannot_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = BackboneConfig(model="some-org/not-on-this-machine", kind="encoder")
    with pytest.raises(BackboneError) as err:
        load_backbone("bert_hub", cfg, tmp_path)
    msg = str(err.value)
    assert "backbone 'bert_hub'" in msg and "some-org/not-on-this-machine" in msg and "offline" in msg


def test_unknown_backbone_in_cross_model(raw):
    bad = copy.deepcopy(raw)
    bad["cross_model"] = {"source_backbone": "minilm", "target_backbone": "gpt9", "held_out": ["medicine_text"]}
    with pytest.raises(ConfigError, match=r"config key 'cross_model.target_backbone': backbone 'gpt9' is not defined"):
        StudyConfig.from_dict(bad)


def test_unknown_backbone_on_the_command_line(repo, tmp_path):
    from promptgrid.pipeline.context import Study

    study = Study(StudyConfig.from_dict(yaml.safe_load((repo / "config.yaml").read_text())))
    with pytest.raises(KeyError, match=r"unknown backbone 'bert'.*\['minilm'\]") as err:
        study.backbone("bert")
    assert isinstance(err.value, InputError)  # bad input: the command exits 2, not 1 with a traceback


def test_missing_local_model_folder_fails_at_dag_build(raw):
    bad = copy.deepcopy(raw)
    bad["backbones"]["minilm"]["model"] = "./models/not-here"
    with pytest.raises(ConfigError, match=r"config key 'backbones.minilm.model'.*does not exist"):
        check_inputs_exist(StudyConfig.from_dict(bad))


def test_missing_local_data_file_fails_at_dag_build(raw):
    bad = copy.deepcopy(raw)
    bad["tasks"]["fever"] = {"source": "local", "path": "data/nowhere.jsonl", "labels": {"a": "a", "b": "b"}}
    with pytest.raises(ConfigError, match=r"config key 'tasks.fever.path': data file data/nowhere.jsonl does not exist"):
        check_inputs_exist(StudyConfig.from_dict(bad))


def test_missing_init_prompt_file(raw):
    bad = copy.deepcopy(raw)
    bad["prompt"] = {"init": "file", "init_file": "prompts/none.safetensors"}
    with pytest.raises(ConfigError, match=r"config key 'prompt.init_file'.*does not exist"):
        check_inputs_exist(StudyConfig.from_dict(bad))


def test_unwritable_results_dir(raw, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = copy.deepcopy(raw)
    bad["results_dir"] = str(blocker / "results")
    with pytest.raises(ConfigError, match=r"config key 'results_dir': cannot write to .*a-file/results"):
        check_study_dir(StudyConfig.from_dict(bad), ["/x/config.yaml"])


def test_two_studies_writing_the_same_paths(raw, tmp_path):
    raw = copy.deepcopy(raw)
    raw["results_dir"] = str(tmp_path)
    cfg = StudyConfig.from_dict(raw)
    check_study_dir(cfg, ["/studies/a.yaml"])
    check_study_dir(cfg, ["/studies/a.yaml"])  # the same study again is fine
    with pytest.raises(ConfigError, match=r"config key 'study'.*already holds the study written by "
                                          r"\['/studies/a.yaml'\].*Rename 'study'"):
        check_study_dir(cfg, ["/studies/b.yaml"])
    origin = json.loads((tmp_path / "default/.study-origin.json").read_text())
    assert origin == {"config_files": ["/studies/a.yaml"]}


def test_label_text_changed_since_prepare(tmp_path):
    import pandas as pd

    from promptgrid.config import TaskConfig
    from promptgrid.data import DataError
    from promptgrid.data.splits import load_split
    from promptgrid.storage.files import write_table

    write_table(pd.DataFrame({"id": ["1"], "text": ["x"], "label": [0], "label_text": ["good"]}),
                tmp_path / "train.parquet", {})
    task = TaskConfig(source="local", path="x", labels={"pos": "positive", "neg": "negative"})
    with pytest.raises(DataError, match=r"train\.parquet row 1 \(id '1'\)"):
        load_split(tmp_path / "train.parquet", task)
