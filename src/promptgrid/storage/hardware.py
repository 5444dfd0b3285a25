"""What machine a job ran on, read without importing torch (table-only jobs start without it).

Provenance records it on every output, because the same config can compute differently on another
CPU generation: ``training.precision: auto`` resolves to bf16 only where bf16 is fast, and even IEEE
fp32 kernels differ (AVX2 vs AVX-512 code paths) in their rounding.
"""
from __future__ import annotations

import functools
import platform
from importlib import metadata
from pathlib import Path

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
def machine() -> dict:
    """The record provenance keeps: CPU, its numeric flags, the torch build and the Python version."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "absent"
    info = cpu_info()
    return {"cpu": info["model"], "cpu_family": info["family"], "cpu_model": info["model_number"],
            "cpu_flags": info["flags"], "torch": torch_version, "python": platform.python_version()}
