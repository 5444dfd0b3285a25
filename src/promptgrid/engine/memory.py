"""Memory-aware banks: how many tokens one forward pass of a bank may hold, how a step's rows are cut into
chunks under that budget, and halving the budget when the device runs out of memory.

A training step of K runs at batch B holds K·B rows of (L + T) tokens. On a GPU the activations that
backward needs grow with that token count, so a large bank (a 64-source transfer, a long prompt, a
large model) may not fit in one pass. The bank is then cut into chunks of whole runs (or, when one run
alone is too big, of a run's rows); each chunk runs forward and backward on its own and the gradients
add up before the single optimiser step. A run's gradient comes from its own rows only, so the chunked
step computes what the unchunked one does, up to the float rounding of different GEMM shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

#: share of the free device memory a bank's activations may take (the rest: weights, optimiser, allocator slack)
FREE_MEMORY_SHARE = 0.5
#: activation bytes per token per layer for backward, in units of hidden size (Korthikanti et al. 2022:
#: 34·h at 16 bits without the attention-score term, which fused SDPA kernels do not store)
ACTIVATION_UNITS = 34


def auto_token_budget(model: torch.nn.Module, device: torch.device, precision: str) -> Optional[int]:
    """Tokens one training forward pass may hold on ``device``: None (no limit) on a CPU, whose memory
    the OS manages; on a GPU, :data:`FREE_MEMORY_SHARE` of its free memory over the activation bytes a
    token costs in this model (layers x hidden x :data:`ACTIVATION_UNITS` x bytes per element / 2)."""
    if device.type != "cuda":
        return None
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None) or 12
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or 768
    per_token = layers * hidden * ACTIVATION_UNITS * (1 if precision == "bf16" else 2)
    free, _ = torch.cuda.mem_get_info(device)
    # what torch's allocator holds but does not use is free to this process too (mem_get_info counts it as taken)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, int(free * FREE_MEMORY_SHARE // per_token))


@dataclass(frozen=True)
class Piece:
    """Rows ``lo:hi`` of the ``run``-th active run of a step (a whole run when lo == 0 and hi == its rows)."""

    run: int
    lo: int
    hi: int


def plan_chunks(n_runs: int, rows_per_run: int, tokens_per_row: int, budget: Optional[int]) -> list:
    """Cut a step of ``n_runs`` runs x ``rows_per_run`` rows of ``tokens_per_row`` tokens into chunks
    (lists of :class:`Piece`) of at most ``budget`` tokens each; None: one chunk. Whole runs while one
    fits, else slices of a run's rows (at least one row per chunk, whatever the budget)."""
    whole = [Piece(j, 0, rows_per_run) for j in range(n_runs)]
    if budget is None or n_runs * rows_per_run * tokens_per_row <= budget:
        return [whole]
    runs_per_chunk = budget // (rows_per_run * tokens_per_row)
    if runs_per_chunk >= 1:
        return [whole[i: i + runs_per_chunk] for i in range(0, n_runs, runs_per_chunk)]
    rows = max(1, budget // tokens_per_row)
    return [[Piece(j, lo, min(lo + rows, rows_per_run))] for j in range(n_runs)
            for lo in range(0, rows_per_run, rows)]


def halve(budget: Optional[int], used: int, what: str, log: Callable[[str], None]) -> int:
    """The budget after an out-of-memory error in a pass of ``used`` tokens (raises below one row)."""
    new = max(1, min(budget or used, used) // 2)
    if budget is not None and budget <= 1:
        raise MemoryError(f"{what}: out of memory with a single row per forward pass")
    log(f"[memory] {what}: out of memory at {used} tokens per forward pass; retrying with at most {new}")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return new
