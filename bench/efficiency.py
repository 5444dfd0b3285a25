"""Efficiency: achieved FLOP/s of promptgrid training steps over the machine's measured GEMM rate.

A prompt-tuning step needs no weight gradients: forward 2N + backward to the inputs 2N FLOPs per
token, N = the encoder's matmul weights (no embeddings). Attention adds, per layer, QK^T and AV
(4 B T^2 h forward, twice that backward). Tokens are the padded batch (what the GEMMs compute).
The GEMM rates are torch.mm at MiniLM's FFN shape over 1024 tokens (1024 x 384 x 1536): IEEE fp32 (what
a ``training.precision: fp32`` step runs, and the efficiency baseline), fp32 tensors with oneDNN's bf16
setting (part of ``bf16``), and bf16 tensors; all alternated in the same run with the steps.
Steps are measured with training.train_runs on amazon (max_length 32, L = 16), for the bank
sizes the default study runs: K = 1 (8 rows), K = 2 (a train job: 2 seeds), K = 12 (a transfer job).
"""
from __future__ import annotations

import time

import common as C
import torch

TASK = "amazon"
GEMM = (1024, 384, 1536)  # tokens x hidden x FFN width


def matmul_params(model) -> int:
    """N: weights of the encoder's Linear layers (embeddings, norms, biases and the pooler left out)."""
    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "pooler" not in name)


def step_flops(n_params: int, hidden: int, layers: int, rows: int, tokens: int) -> float:
    """FLOPs of one prompt-tuning step on a (rows, tokens) padded batch."""
    linear = 4 * n_params * rows * tokens
    attention = 3 * layers * 4 * rows * tokens ** 2 * hidden
    return linear + attention


def gemm_rate(kind: str, reps: int) -> float:
    """FLOP/s of torch.mm: ``ieee`` (fp32), ``knob`` (fp32 with oneDNN's bf16 setting), ``bf16`` tensors."""
    m, k, n = GEMM
    a, b = torch.randn(m, k), torch.randn(k, n)
    if kind == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
    with C.onednn_knob("bf16" if kind == "knob" else "ieee"):
        torch.mm(a, b)  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        return reps * 2 * m * k * n / (time.perf_counter() - t0)


def run(quick: bool) -> dict:
    steps, repeats = (4, 2) if quick else (10, 4)
    bb = C.backbone()
    head = bb.task_head(C.study().tasks[TASK].label_texts)
    train, dev = C.encoded(bb, TASK, "train"), C.encoded(bb, TASK, "dev")
    dev = C.scoring.EncodedSplit(dev.ids[:8], dev.labels[:8])  # evaluation is subtracted anyway
    cfg = C.train_cfg(steps, precision="fp32")  # the efficiency of an IEEE fp32 step
    mcfg = bb.model.config
    n_params, L = matmul_params(bb.model), C.study().prompt.length

    def flops_of(K: int) -> float:
        total = 0.0
        for step in range(steps):
            rows = [train.ids[i] for k in range(K) for i in C.scoring.batch_indices(len(train), cfg.batch_size, k, step)]
            total += step_flops(n_params, mcfg.hidden_size, mcfg.num_hidden_layers, len(rows),
                                L + max(len(r) for r in rows))
        return total

    def step_variant(K):
        flops = flops_of(K)

        def fn(r):
            seconds, _, _ = C.timed_train(bb, head, train, dev, cfg, list(range(K)))
            return {"s": seconds, "flops": flops / seconds}
        return fn

    def gemm_variant(kind):
        # bf16 without native support runs ~1 GFLOP/s: one call is then already a second
        reps = 2 if kind == "bf16" and not C.fast_bf16() else 5 if quick else 10
        return lambda r: {"flops": gemm_rate(kind, reps)}

    C.timed_train(bb, head, train, dev, C.train_cfg(2, precision="fp32"), [0])  # warm-up
    raw = C.alternate({"gemm_fp32": gemm_variant("ieee"), "gemm_knob": gemm_variant("knob"),
                       "gemm_bf16": gemm_variant("bf16"),
                       "K1": step_variant(1), "K2": step_variant(2), "K12": step_variant(12)}, repeats)
    rates = {k: C.stats(C.col(v, "flops")) for k, v in raw.items()}
    out = {"n_params": n_params, "steps": steps, "repeats": repeats, "gflops": {
        k: {q: v[q] / 1e9 for q in ("min", "median", "max")} for k, v in rates.items()}}
    shape = "x".join(map(str, GEMM))
    rows = [[f"torch.mm {shape}, IEEE fp32", C.triple(out["gflops"]["gemm_fp32"], 1), ""],
            [f"torch.mm {shape}, fp32 with oneDNN fp32_precision=bf16", C.triple(out["gflops"]["gemm_knob"], 1), ""],
            [f"torch.mm {shape}, bf16 tensors", C.triple(out["gflops"]["gemm_bf16"], 1), ""]]
    out["efficiency"] = {}
    # each repeat's step rate over the GEMM rate of the same repeat (measured moments apart), then the median
    def paired(K, gemm):
        return C.stats(a["flops"] / b["flops"] for a, b in zip(raw[f"K{K}"], raw[gemm]))["median"]
    for K in (1, 2, 12):
        e = out["efficiency"][f"K{K}"] = {"vs_fp32": paired(K, "gemm_fp32")}
        rows.append([f"promptgrid fp32 step, bank K={K} ({K * cfg.batch_size} rows x {L}+{bb.cfg.max_length} tokens)",
                     C.triple(out["gflops"][f"K{K}"], 1), f"{100 * e['vs_fp32']:.0f}%"])
    # judged on K = 12: the transfer jobs, where the default study spends most of its training steps
    k12 = out["efficiency"]["K12"]["vs_fp32"]
    out["goal"] = {"transfer_job_vs_fp32": k12, "met": k12 >= 0.6}
    out["table"] = C.md_table(["what", "GFLOP/s min / median / max", "of the IEEE fp32 GEMM rate (paired median)"],
                              rows)
    print(f"N (matmul weights) = {n_params / 1e6:.2f} M")
    print(out["table"])
    return out


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
