"""Soft prompts: initialisation and the prompt bank.

A :class:`PromptBank` holds K prompts, one (L, d) parameter per run. A batch carries a
``prompt_index`` (B,) saying which prompt each example uses, so K runs (seeds, sources, methods)
train or evaluate in the same forward pass while staying independent: each run's loss only reaches its
own prompt, and because each prompt is its own parameter every optimiser treats the runs apart —
including Adafactor, whose update clipping and factored second moments use a parameter's whole RMS (one
(K, L, d) parameter would couple a 48-run transfer bank's updates to each other).
"""
from __future__ import annotations

from typing import Optional

import torch

from promptgrid.config import PromptConfig
from promptgrid.errors import InputError


class PromptBank(torch.nn.Module):
    """K trainable prompts, one parameter each: ``runs[k]`` (L, d); ``prompts`` is their stack (K, L, d)."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        if init.dim() != 3:
            raise ValueError(f"a prompt bank is (K, L, d); got {tuple(init.shape)}")
        self.runs = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone().float()) for p in init])

    @property
    def size(self) -> int:
        return len(self.runs)

    @property
    def prompts(self) -> torch.Tensor:
        """(K, L, d), differentiable: gradients reach each run's own parameter."""
        return torch.stack(list(self.runs))

    def load(self, prompts: torch.Tensor) -> None:
        """Overwrite the K prompts with ``prompts`` (K, L, d) (a resumed checkpoint)."""
        with torch.no_grad():
            for p, new in zip(self.runs, prompts):
                p.copy_(new)

    def forward(self, prompt_index: torch.Tensor) -> torch.Tensor:
        """Gather the prompt of each example: prompt_index (B,) -> (B, L, d)."""
        return self.prompts[prompt_index]


def init_prompt(cfg: PromptConfig, embedding: torch.Tensor, seed: int, label_token_ids: Optional[list] = None,
                from_file: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One initial prompt (L, d).

    embedding: the frozen input embedding matrix (V, d).
    vocab: rows of ``embedding`` sampled without replacement from the first ``vocab_top`` ids (SPoT
      samples the 5,000 most frequent tokens; BPE/WordPiece ids are roughly frequency-ordered, after the
      special tokens, which we skip).
    labels: the mean embedding of each label's tokens in turn, backing off to sampled vocabulary (SPoT).
    random: N(0, random_std^2).
    file: a prompt loaded by the caller, checked for shape.
    """
    gen = torch.Generator().manual_seed(int(seed))
    V, d = embedding.shape
    L = cfg.length
    if cfg.init == "file":
        if from_file is None:
            raise ValueError("init 'file' needs the loaded prompt")
        if tuple(from_file.shape) != (L, d):
            raise InputError(f"init prompt {cfg.init_file} has shape {tuple(from_file.shape)}; expected ({L}, {d})")
        return from_file.detach().clone().float()
    if cfg.init == "random":
        return torch.randn(L, d, generator=gen) * cfg.random_std
    first = min(1000, V // 10) if V > 2000 else 0  # skip the special/unused ids at the start of the vocab
    top = min(V, first + cfg.vocab_top)
    rows = first + torch.randperm(top - first, generator=gen)[:L]
    prompt = embedding[rows].detach().clone().float()
    if cfg.init == "labels" and label_token_ids:
        for i, ids in enumerate(label_token_ids[:L]):
            prompt[i] = embedding[torch.tensor(ids)].float().mean(0)
    return prompt


def weighted_average(prompts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """SPoT multi-source init: sum_r w_r P_r with weights normalised to 1. prompts (R, L, d), weights (R,)."""
    w = weights.float().clamp(min=0)
    if w.sum() <= 0:
        w = torch.ones_like(w)
    w = w / w.sum()
    return (prompts.float() * w.view(-1, 1, 1)).sum(0)
