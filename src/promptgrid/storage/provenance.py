"""What every output records about where it came from: config hash, seeds, code version, packages, the
machine, and (for jobs that ran a model) how it computed.
"""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # imported where prompts are read or written: table-only jobs start without torch
    pass


# ---------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


PACKAGES = ("torch", "transformers", "datasets", "pandas", "pyarrow", "safetensors", "snakemake", "numpy")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(config_hash: str, seed=None, backbone_revision: Optional[str] = None, config: Optional[dict] = None,
               **extra) -> dict:
    """What an output came from: config hash (and config), seed, backbone revision, code and package versions,
    and the machine (CPU, its numeric flags, torch build). Jobs that run a model add ``compute``
    (:class:`promptgrid.models.precision.Compute`: the precision and attention that ran)."""
    from promptgrid import __version__
    from promptgrid.storage.hardware import machine

    record = {
        "config_hash": config_hash,
        "seed": seed,
        "backbone_revision": backbone_revision,
        "promptgrid_version": __version__,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "machine": machine(),
    }
    if config is not None:
        record["config"] = config
    record.update(extra)
    return record


def merge_compute(metas: list) -> dict:
    """How the model jobs behind a gathered table computed: for each ``compute`` field (precision,
    attention, device, gpu, torch, cpu) the sorted distinct values over ``metas`` (provenance dicts of
    the parts). One value each means the whole table ran one way; more is worth a look."""
    merged: dict = {}
    for meta in metas:
        for key, value in (meta.get("compute") or {}).items():
            if value is not None:
                merged.setdefault(key, set()).add(str(value))
    return {key: sorted(values) for key, values in merged.items()}


def compute_line(compute: dict, machine: Optional[dict] = None) -> str:
    """One line for ``promptgrid summarize``: what precision ran, configured how, on what hardware."""
    if not compute:
        return "Computed: no model job recorded how it computed (outputs from before precision was recorded)."
    join = lambda key: " + ".join(compute.get(key) or ["?"])  # noqa: E731
    where = join("gpu") if compute.get("gpu") else join("cpu")
    return (f"Computed in {join('precision')} (training.precision: {join('precision_configured')}), attention "
            f"{join('attention')}, on {join('device')}: {where}; torch {join('torch')}.")
