"""What machine a job ran on, read without importing torch (table-only jobs start without it).

Provenance records it on every output, because the same config can compute differently on another
CPU generation: ``training.precision: auto`` resolves to bf16 only where bf16 is fast, and even IEEE
fp32 kernels differ (AVX2 vs AVX-512 code paths) in their rounding.

It also records a GPU the job could not use: a model job that computed on the CPU of a node whose NVIDIA
driver lists GPUs (:func:`nvidia_gpus`, asked without torch) notes why (:func:`note_unusable_gpu`), its
outputs carry the note, and ``promptgrid summarize`` counts them (:func:`unusable_gpu_summary`).
"""
from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional

#: the CPU flags that decide which GEMM kernels run and whether bf16 is fast; the full list is long and
#: says nothing more about numerics or speed
NUMERIC_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16",
                     "asimd", "sve", "bf16")
#: a CPU with either computes bf16 matmuls natively (AVX512-BF16 dot products, AMX tiles)
FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def parse_cpuinfo(text: str) -> dict:
    """The first processor's model name, vendor, family, model number and numeric flags from
    /proc/cpuinfo text (x86 and Arm spellings)."""
    fields: dict = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # only the first processor: the others repeat it
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {
        "model": fields.get("model name") or fields.get("cpu model") or platform.processor() or "unknown",
        "vendor": fields.get("vendor_id") or fields.get("cpu implementer") or "unknown",
        "family": fields.get("cpu family") or fields.get("cpu architecture") or "",
        "model_number": fields.get("model") or fields.get("cpu part") or "",
        "flags": [f for f in NUMERIC_CPU_FLAGS if f in flags],
    }


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """This machine's CPU (see :func:`parse_cpuinfo`); on systems without /proc, what ``platform`` says."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {"model": platform.processor() or platform.machine() or "unknown", "vendor": "unknown",
                "family": "", "model_number": "", "flags": []}


def cpu_label(info: dict) -> str:
    """One line for logs and summaries: 'AMD EPYC (family 25, model 17; avx512f avx512_bf16)'."""
    ident = ", ".join(p for p in (f"family {info['family']}" if info.get("family") else "",
                                  f"model {info['model_number']}" if info.get("model_number") else "") if p)
    flags = " ".join(info.get("flags") or []) or "no AVX2"
    return f"{info['model']} ({ident}{'; ' if ident else ''}{flags})"


def cpu_has_fast_bf16(info: dict) -> bool:
    return any(f in (info.get("flags") or []) for f in FAST_BF16_CPU_FLAGS)


@functools.lru_cache(maxsize=1)
def _static_machine() -> dict:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "absent"
    info = cpu_info()
    return {"cpu": info["model"], "cpu_family": info["family"], "cpu_model": info["model_number"],
            "cpu_flags": info["flags"], "torch": torch_version, "python": platform.python_version()}


def machine() -> dict:
    """The record provenance keeps: CPU, its numeric flags, the torch build and the Python version, plus
    ``gpu_unusable`` (why) when this job computed on the CPU beside a GPU torch could not use."""
    record = dict(_static_machine())
    if _UNUSABLE_GPU:
        record["gpu_unusable"] = _UNUSABLE_GPU[-1]
    return record


# ---------------------------------------------------------------- GPUs torch cannot use
#: one folder per GPU the NVIDIA kernel driver drives (Linux); read where nvidia-smi is not installed
NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")
#: the README section a GPU warning points to
GPU_FIX = ("install a CUDA build of torch where the jobs run: `bash scripts/setup.sh` run on a GPU node picks the "
           "one its driver runs; elsewhere set TORCH_INDEX_URL (README: GPUs)")

# why this process computed on the CPU beside a GPU torch could not use; at most one entry, set by
# promptgrid.models.devices when it resolves the job's device
_UNUSABLE_GPU: list = []


def nvidia_gpus(smi: Optional[str] = "nvidia-smi", proc_dir: Path = NVIDIA_PROC_GPUS) -> list:
    """The NVIDIA GPUs of this node as its driver lists them, asked without torch: ``nvidia-smi -L`` lines
    ("GPU 0: NVIDIA H100 80GB HBM3", the UUID dropped) or, where ``smi`` is not on the PATH, one "GPU at PCI
    <address>" per folder of the driver's ``proc_dir``. [] without a working NVIDIA driver.
    CUDA_VISIBLE_DEVICES does not change the answer (nvidia-smi ignores it); a scheduler's device cgroup does."""
    exe = shutil.which(smi) if smi else None
    if exe:
        try:
            out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):  # a hung or broken driver: no GPU torch could use either
            return []
        if out.returncode != 0:
            return []
        return [ln.split(" (UUID")[0].strip() for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
    try:
        return [f"GPU at PCI {p.name}" for p in sorted(proc_dir.iterdir())]
    except OSError:
        return []


def note_unusable_gpu(reason: str) -> None:
    """Record in this process's :func:`machine` that its model computed on the CPU beside a GPU, and why."""
    _UNUSABLE_GPU[:] = [reason]


def unusable_gpu_summary(metas: list) -> dict:
    """How many of ``metas`` (provenance dicts of a table's parts) that ran a model (those with a ``compute``
    record) computed on the CPU beside a GPU torch could not use: ``{"outputs": n, "of": m, "reasons": [...]}``."""
    ran = [meta for meta in metas if meta.get("compute")]
    found = [r for r in ((meta.get("machine") or {}).get("gpu_unusable") for meta in ran) if r]
    return {"outputs": len(found), "of": len(ran), "reasons": sorted(set(found))}


def unusable_gpu_warning(summary: Optional[dict]) -> str:
    """The loud line ``promptgrid summarize`` and ``collect`` print for :func:`unusable_gpu_summary`; ""
    when every output computed where it could (or the table predates the record)."""
    if not summary or not summary.get("outputs"):
        return ""
    return (f"WARNING: {summary['outputs']} of {summary['of']} model-job outputs were computed on the CPU of a "
            f"node with an NVIDIA GPU that torch could not use ({'; '.join(summary.get('reasons') or [])}). "
            f"To compute on the GPU, {GPU_FIX}.")
