"""PEFT prompt banks: export prompts as PEFT adapters (input prompts: PromptTuning, deep prompts: PrefixTuning),
with a card (:mod:`promptgrid.pipeline.bank`), and import adapters as prompts.

An adapter names its base model as PEFT resolves it: a hub backbone's id and commit, a ``pypi:`` or local
model's folder (:func:`promptgrid.models.loading.base_model_reference`).
"""
from __future__ import annotations

from pathlib import Path

from promptgrid.pipeline.context import Study
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt, save_prompt


# ---------------------------------------------------------------- PEFT prompt bank
def base_model(study: Study, backbone: str) -> tuple:
    """``(base_model_name_or_path, revision)`` the study's adapters of ``backbone`` name."""
    from promptgrid.models.loading import base_model_reference

    bb = study.backbone(backbone)
    return base_model_reference(backbone, bb.cfg, study.cfg.cache_path, bb.revision)


def export_peft(study: Study, backbone: str, prompt, out) -> None:
    """One prompt file of the study's kind -> a PEFT adapter folder that PeftModel.from_pretrained loads."""
    from promptgrid.models.peft_io import export_peft as export

    bb = study.backbone(backbone)
    prompt_file, out = Path(prompt), Path(out)
    prompt, meta = load_prompt(prompt_file, expect_dim=study.prompt_width(backbone))
    export(prompt, bb, out, meta, base_model=base_model(study, backbone))
    print(f"[export-peft] {prompt_file} -> {out}", flush=True)


def export_peft_bank(study: Study, backbone: str, out) -> None:
    """Every task prompt of the study (every seed) as PEFT adapters, <out>/<task>/seed<k>/, and the bank's card
    (README.md, bank.json: :mod:`promptgrid.pipeline.bank`)."""
    from promptgrid.models.peft_io import export_peft as export
    from promptgrid.pipeline.bank import bank_entry, write_card

    out_dir = Path(out)
    bb = study.backbone(backbone)
    base = base_model(study, backbone)
    width = study.prompt_width(backbone)  # d for input prompts, D for deep ones
    entries = []
    for task in study.cfg.trained_tasks:
        for seed in study.cfg.seeds:
            prompt, meta = load_prompt(study.path(layout.task_prompt(backbone, task, seed)), expect_dim=width)
            folder = f"{task}/seed{seed}"
            export(prompt, bb, out_dir / folder, meta, base_model=base)
            entries.append(bank_entry(study, backbone, task, seed, meta, folder))
    card = write_card(study, backbone, out_dir, entries, base)
    print(f"[export-peft] {len(entries)} adapters under {out_dir} (base model {base[0]}"
          f"{'@' + base[1] if base[1] else ''}); card {card}", flush=True)


def import_peft(study: Study, backbone: str, adapter, out) -> None:
    """A PEFT adapter of the study's prompt kind (PromptTuning: input, PrefixTuning: deep) -> a promptgrid prompt
    file (e.g. to use as a source or an init)."""
    from promptgrid.models.peft_io import import_peft as load

    adapter, out = Path(adapter), Path(out)
    bb = study.backbone(backbone)
    kind = study.cfg.prompt.kind
    prompt, meta = load(adapter, expect_dim=study.prompt_width(backbone), kind=kind,
                        n_layers=bb.prefix_geometry.n_layers if kind == "deep" else None)
    save_prompt(out, prompt, {**meta, "imported_from": str(adapter), "backbone": backbone})
    print(f"[import-peft] {adapter} -> {out} ({tuple(prompt.shape)})", flush=True)
