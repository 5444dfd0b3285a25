"""PEFT prompt banks: export prompts as PEFT adapters (input prompts: PromptTuning, deep prompts: PrefixTuning),
import adapters as prompts.
"""
from __future__ import annotations

from pathlib import Path

from promptgrid.pipeline.context import Study
from promptgrid.storage import layout
from promptgrid.storage.files import load_prompt, save_prompt


# ---------------------------------------------------------------- PEFT prompt bank
def export_peft(study: Study, backbone: str, prompt, out) -> None:
    """One prompt file of the study's kind -> a PEFT adapter folder that PeftModel.from_pretrained loads."""
    from promptgrid.models.peft_io import export_peft as export

    bb = study.backbone(backbone)
    prompt_file, out = Path(prompt), Path(out)
    prompt, meta = load_prompt(prompt_file, expect_dim=study.prompt_width(backbone))
    export(prompt, bb, out, meta)
    print(f"[export-peft] {prompt_file} -> {out}", flush=True)


def export_peft_bank(study: Study, backbone: str, out) -> None:
    """Every task prompt of the study (every seed) as PEFT adapters: <out>/<task>/seed<k>/."""
    from promptgrid.models.peft_io import export_peft as export

    out_dir = Path(out)
    bb = study.backbone(backbone)
    width = study.prompt_width(backbone)  # d for input prompts, D for deep ones
    n = 0
    for task in study.cfg.trained_tasks:
        for seed in study.cfg.seeds:
            prompt, meta = load_prompt(study.path(layout.task_prompt(backbone, task, seed)), expect_dim=width)
            export(prompt, bb, out_dir / task / f"seed{seed}", meta)
            n += 1
    print(f"[export-peft] {n} adapters under {out_dir}", flush=True)


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
