"""Encoded splits, the data order of a run, and scoring a bank of K prompts on a split in one pass.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from promptgrid.models.backbones import Backbone, TaskHead, to_device
from promptgrid.models.precision import precision_scope


# ---------------------------------------------------------------- data
@dataclass
class EncodedSplit:
    """A tokenized split: ``ids`` per example (already formatted for the backbone), ``labels`` (N,)."""

    ids: list
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


def encode_split(backbone: Backbone, texts, labels) -> EncodedSplit:
    return EncodedSplit(backbone.input_ids(list(texts)), torch.as_tensor(list(labels), dtype=torch.long))


def batch_indices(n_examples: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Example indices (batch_size,) of ``step`` for data seed ``seed``: epochs of seeded permutations."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_examples)
        perm = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.extend(perm[offset: offset + batch_size - len(out)].tolist())
    return torch.tensor(out, dtype=torch.long)


# ---------------------------------------------------------------- scoring
def task_score(pred: torch.Tensor, gold: torch.Tensor, score_name: str, n_labels: int) -> float:
    """Score on a 0-100 scale. pred, gold: (N,)."""
    if score_name == "accuracy":
        return 100.0 * (pred == gold).float().mean().item()
    if score_name == "macro_f1":
        f1s = []
        for c in range(n_labels):
            tp = ((pred == c) & (gold == c)).sum().item()
            fp = ((pred == c) & (gold != c)).sum().item()
            fn = ((pred != c) & (gold == c)).sum().item()
            if tp + fp + fn == 0:
                continue
            f1s.append(2 * tp / (2 * tp + fp + fn))
        return 100.0 * sum(f1s) / max(len(f1s), 1)
    raise ValueError(f"unknown task score {score_name!r}")


def bank_chunks(lengths: list, K: int, batch_size: int):
    """Batches for evaluating K prompts together: examples sorted by length (little padding), each batch
    all K prompts on a chunk of examples. Yields (example indices (n,), prompt_index (K*n,)); row j of a
    batch is example idx[j % n] under prompt j // n."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunk = max(1, batch_size // K) if K <= batch_size else 1
    for start in range(0, len(order), chunk):
        idx = order[start: start + chunk]
        yield idx, torch.arange(K).repeat_interleave(len(idx))


def predict_bank(backbone: Backbone, head: TaskHead, prompts: torch.Tensor, data: EncodedSplit,
                 batch_size: int = 64, precision: str = "fp32") -> torch.Tensor:
    """Logits of every prompt on every example: prompts (K, L, d) -> (K, N, C).

    Examples are sorted by length so each padded batch wastes little; every batch holds all K
    prompts for a chunk of examples, so a job evaluating many prompts loads and pads the data once.
    Out of device memory, the batch is halved (and, below K rows, the bank split in two) and the
    prediction rerun, down to one row per pass; the logits do not depend on how they were batched.
    """
    try:
        return _predict_bank(backbone, head, prompts, data, batch_size, precision)
    except torch.OutOfMemoryError:
        if batch_size <= 1 and prompts.shape[0] <= 1:
            raise MemoryError("scoring: out of memory with a single row per forward pass") from None
        smaller = max(1, batch_size // 2)
        print(f"[memory] scoring: out of memory at {batch_size} rows per forward pass; retrying with at most "
              f"{smaller}", file=sys.stderr, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    K = prompts.shape[0]
    if smaller >= K:
        return predict_bank(backbone, head, prompts, data, smaller, precision)
    half = (K + 1) // 2
    return torch.cat([predict_bank(backbone, head, prompts[:half], data, smaller, precision),
                      predict_bank(backbone, head, prompts[half:], data, smaller, precision)])


@torch.inference_mode()
def _predict_bank(backbone: Backbone, head: TaskHead, prompts: torch.Tensor, data: EncodedSplit,
                  batch_size: int, precision: str) -> torch.Tensor:
    K, N = prompts.shape[0], len(data)
    device = backbone.device
    prompts = prompts.to(device)
    # filled on the device and copied back once: no host sync per batch
    out = torch.empty(K, N, head.n_labels, device=device)
    for idx, prompt_index in bank_chunks([len(ids) for ids in data.ids], K, batch_size):
        rows = [data.ids[i] for i in idx] * K
        batch = backbone.collate(rows)
        with precision_scope(precision, device):
            logits = backbone.logits(prompts[to_device(prompt_index, device)], batch, head).float()
        # indices built on the host go over without blocking (a pageable copy would wait for the GPU's queue)
        out[:, to_device(torch.tensor(idx), device), :] = logits.view(K, len(idx), -1)
    return out.cpu()


def score_bank(backbone, head, prompts, data: EncodedSplit, score_name: str, batch_size: int = 64,
               precision: str = "fp32") -> list:
    """Task score (0-100) of each of K prompts on ``data``."""
    logits = predict_bank(backbone, head, prompts, data, batch_size, precision)
    return [task_score(logits[k].argmax(-1), data.labels, score_name, head.n_labels) for k in range(prompts.shape[0])]
