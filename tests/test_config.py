import copy

import pytest
import yaml

from promptgrid.config import ConfigError, StudyConfig, load_config, schema_errors


@pytest.fixture
def raw(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_default_config_loads(raw):
    cfg = StudyConfig.from_dict(raw)
    assert cfg.study == "default"
    assert cfg.backbones["minilm"].kind == "encoder"
    assert len(cfg.sources) == 6 and len(cfg.targets) == 3
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
    errors = schema_errors(bad, repo / "workflow/schemas/config.schema.yaml")
    assert errors == [f"config key 'training.lrr': unknown key (allowed here: {sorted(errors and __import__('yaml').safe_load((repo / 'workflow/schemas/config.schema.yaml').read_text())['properties']['training']['properties'])})"]
    assert schema_errors(raw, repo / "workflow/schemas/config.schema.yaml") == []


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
