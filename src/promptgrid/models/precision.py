"""One precision rule for every job that runs a model (training, scoring, zero-shot, metrics, projectors).

``training.precision``:

- ``fp32``: IEEE fp32. torch has process-wide knobs that let "fp32" GEMMs run in a lower precision
  (oneDNN's ``bf16``/``tf32`` on CPU: on a CPU with AMX it then runs every fp32 GEMM in bf16; TF32 on
  CUDA and cuDNN). Loading a backbone sets every one of them to ``ieee``, and an fp32 scope holds them
  there, so no earlier job, test or library in the process can leave fp32 computing in bf16.
- ``bf16``: the frozen model's forward passes run under ``torch.autocast(bfloat16)``; the prompts
  (the master copy), their gradients and the optimiser state stay fp32. Inside the scope oneDNN's
  remaining fp32 GEMMs may run in bf16 too; on leaving it every knob is back where it was.
- ``auto``: bf16 where the hardware computes bf16 fast (a CUDA GPU with native bf16; a CPU with
  AMX-BF16 or AVX512-BF16), fp32 elsewhere: on an AVX2-only CPU a bf16 GEMM runs ~100x slower than
  fp32 (bench/README.md, section 1c). Each job resolves it on the node that runs it and records the
  result in its outputs' provenance; checkpoints carry the resolved value, so a run never resumes
  under another precision.

``training.attention`` (``auto | eager | sdpa``) is a speed choice, not a precision: both compute the
same attention up to float rounding. ``auto`` is eager on a CPU and SDPA on a GPU.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import torch

from promptgrid.storage import hardware

#: torch's fp32 GEMM / convolution precision knobs (the torch >= 2.9 API; never mixed with the legacy
#: ``allow_tf32`` / ``set_float32_matmul_precision``, which torch refuses to read back once mixed)
KNOBS = ("mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn", "cuda.matmul", "cudnn.conv", "cudnn.rnn")
#: values that keep IEEE fp32 ("none" inherits the global setting, itself "none" = IEEE by default)
IEEE_VALUES = ("ieee", "none")

DeviceLike = Union[str, torch.device]


def _knob(path: str):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if hasattr(obj, "fp32_precision") else None


def knob_settings() -> dict:
    """{knob: value} of every fp32 precision knob this torch build has, plus the global one."""
    values = {path: _knob(path).fp32_precision for path in KNOBS if _knob(path) is not None}
    if hasattr(torch.backends, "fp32_precision"):
        values["global"] = torch.backends.fp32_precision
    return values


def lowered_knobs() -> dict:
    """The knobs that would let an fp32 GEMM or convolution compute in bf16 or TF32 (empty: IEEE fp32)."""
    return {k: v for k, v in knob_settings().items() if v not in IEEE_VALUES}


def _restore(values: dict) -> None:
    for path, value in values.items():
        if path == "global":
            torch.backends.fp32_precision = value
        else:
            _knob(path).fp32_precision = value


def use_ieee_fp32() -> None:
    """Set every fp32 knob to IEEE, process-wide (what loading a backbone does)."""
    _restore({k: "ieee" for k in knob_settings()})


def device_type(device: DeviceLike) -> str:
    return torch.device(device).type


def fast_bf16(device: DeviceLike = "cpu", cpu: Optional[dict] = None) -> bool:
    """Whether ``device`` computes bf16 matmuls natively (``cpu``: a /proc/cpuinfo record, for tests)."""
    if device_type(device) == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if cpu is not None:
        return hardware.cpu_has_fast_bf16(cpu)
    # /proc/cpuinfo can hide flags in some containers; torch asks cpuid itself
    torch_says = any(getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported",
                                                                     "_is_amx_tile_supported"))
    return hardware.cpu_has_fast_bf16(hardware.cpu_info()) or torch_says


def resolve_precision(configured: str, device: DeviceLike = "cpu", cpu: Optional[dict] = None) -> str:
    """``fp32`` or ``bf16``: the configured value, with ``auto`` decided by :func:`fast_bf16`."""
    if configured in ("fp32", "bf16"):
        return configured
    if configured != "auto":
        raise ValueError(f"unknown precision {configured!r}; choose fp32, bf16 or auto")
    return "bf16" if fast_bf16(device, cpu) else "fp32"


def resolve_attention(configured: str, device: DeviceLike = "cpu") -> str:
    """``eager`` or ``sdpa``; ``auto``: eager on a CPU (faster there at these sequence lengths,
    bench/README.md section 1c), SDPA (flash / memory-efficient kernels) on a GPU."""
    if configured in ("eager", "sdpa"):
        return configured
    if configured != "auto":
        raise ValueError(f"unknown attention {configured!r}; choose auto, eager or sdpa")
    return "sdpa" if device_type(device) == "cuda" else "eager"


@contextlib.contextmanager
def precision_scope(precision: str, device: DeviceLike = "cpu") -> Iterator[str]:
    """Run the model's forward passes inside under ``precision`` (see the module docstring); yields
    the resolved precision. Knobs are restored on exit, so nothing is left set in the process."""
    effective = resolve_precision(precision, device)
    before = knob_settings()
    try:
        if effective == "bf16":
            dev = device_type(device)
            if dev == "cpu" and _knob("mkldnn.matmul") is not None:
                torch.backends.mkldnn.matmul.fp32_precision = "bf16"
            with torch.autocast(dev, dtype=torch.bfloat16):
                yield effective
        else:
            use_ieee_fp32()
            yield effective
    finally:
        _restore(before)


@dataclass(frozen=True)
class Compute:
    """How a job computes, resolved on its node: what provenance records and checkpoints are keyed by."""

    precision_configured: str
    precision: str  # fp32 | bf16
    attention: str  # eager | sdpa
    device: str

    @classmethod
    def resolve(cls, precision: str, attention: str, device: DeviceLike = "cpu") -> Compute:
        return cls(precision, resolve_precision(precision, device), resolve_attention(attention, device),
                   str(torch.device(device)))

    def record(self) -> dict:
        gpu = None
        if device_type(self.device) == "cuda" and torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(torch.device(self.device))
        return {"precision": self.precision, "precision_configured": self.precision_configured,
                "attention": self.attention, "device": self.device, "gpu": gpu,
                "torch": torch.__version__, "cpu": hardware.cpu_label(hardware.cpu_info())}
