"""The report of ``bench/gpu.py``: the device line, the goals, the markdown table, and writing both files."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

GOAL_SPEEDUP, GOAL_SHARE = 8.0, 0.40


def machine(device: torch.device, gemm_square) -> dict:
    """GPU (or CPU), torch and CUDA, the libraries, the host CPU; ``gemm_square()`` -> (n, TFLOP/s) of an n^3
    GEMM in the bench's dtype, for scale (KINDS.md: ~790 TFLOP/s at 8192^3 bf16 on an H100 here)."""
    import peft
    import transformers

    from promptgrid.storage.hardware import cpu_info, cpu_label

    m = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda, "transformers":
         transformers.__version__, "peft": peft.__version__, "python": platform.python_version(),
         "cpu": cpu_label(cpu_info()), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        m.update(gpu=p.name, sms=p.multi_processor_count, gpu_gib=p.total_memory / 2 ** 30,
                 capability=f"{p.major}.{p.minor}")
    m["gemm_square_n"], m["gemm_square_tflops"] = gemm_square()
    return m


def device_line(m: dict) -> str:
    what = (f"{m['gpu']} ({m['sms']} SMs, {m['gpu_gib']:.0f} GiB, sm_{m['capability'].replace('.', '')})"
            if "gpu" in m else f"CPU only ({m['cores']} cores)")
    return (f"Device: {what}; torch {m['torch']} (CUDA {m['cuda']}), transformers {m['transformers']}, peft "
            f"{m['peft']}, Python {m['python']}; host CPU {m['cpu']}; {m['gemm_square_n']}^3 GEMM "
            f"{m['gemm_square_tflops']:.3g} TFLOP/s; {m['date']}.")


def goals(models: dict) -> dict:
    """The issue's two bench goals: judged at the best K (speed-up on BERT-base, GEMM share on BERT-large)."""
    out = {}
    if "base" in models:
        K, e = max(models["base"]["sizes"].items(), key=lambda kv: kv[1]["speedup"])
        out["speedup_base"] = {"K": K, "value": e["speedup"], "target": GOAL_SPEEDUP, "met": e["speedup"] >= GOAL_SPEEDUP}
    if "large" in models:
        K, e = max(models["large"]["sizes"].items(), key=lambda kv: kv[1]["gemm_share"])
        out["gemm_share_large"] = {"K": K, "value": e["gemm_share"], "target": GOAL_SHARE,
                                   "met": e["gemm_share"] >= GOAL_SHARE}
    return out


HEADER = ("| model | K | bank ex/s | PEFT ex/s (K runs in turn) | bank / PEFT | bank TFLOP/s | GEMM TFLOP/s (same "
          "shapes) | share of GEMM | passes x rows per step | max loss diff | min update cos |")


def table(result: dict) -> str:
    s = result["setup"]
    lines = [device_line(result["machine"]),
             f"Setup: {s['mode']}; {s['precision']}; prompt length {s['prompt_length']}, {s['tokens']} real-text tokens "
             f"per row, batch {s['batch']} per run, {s['steps']} steps per run (step 0 not timed), SDPA; bank: median of "
             f"{s['repeats']}; "
             f"{result['seconds']:.0f} s in all.", "", HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for name, m in result["models"].items():
        for K, e in m["sizes"].items():
            lines.append(f"| {name} | {K} | {e['bank_examples_per_s']:,.1f} | {e['peft_examples_per_s']:,.1f} | "
                         f"{e['speedup']:.2f}x | {e['bank_tflops']:.3g} | {e['gemm_tflops']:.3g} | "
                         f"{100 * e['gemm_share']:.0f}% | {e['passes_per_step']:.0f} x {e['rows_per_pass']} | "
                         f"{e['max_loss_diff']:.4f} | {e['update_cosine_min']:.3f} |")
    lines.append("")
    g = result["goals"]
    if "speedup_base" in g:
        x = g["speedup_base"]
        lines.append(f"Goal: bank / sequential PEFT on BERT-base >= {x['target']:.0f}x at the best K <= 64: "
                     f"{x['value']:.2f}x at K={x['K']}: {'met' if x['met'] else 'NOT met'}.")
    if "gemm_share_large" in g:
        x = g["gemm_share_large"]
        lines.append(f"Goal: GEMM share of a banked BERT-large step >= {100 * x['target']:.0f}%: "
                     f"{100 * x['value']:.0f}% at K={x['K']}: {'met' if x['met'] else 'NOT met'}.")
    return "\n".join(lines)


def write(out: Path, result: dict) -> None:
    """``gpu.json`` (every number) and ``gpu.md`` (the table), atomically."""
    from promptgrid.storage.files import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gpu.json", json.dumps(result, indent=1, default=str))
    atomic_write_text(out / "gpu.md", table(result) + "\n")
