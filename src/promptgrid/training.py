"""Prompt tuning of K runs at once through a prompt bank, with dev evaluation, best-checkpoint
selection, early stopping and atomic, bit-exact resumable checkpoints.

All runs in one call train on the same task (one objective, one encoded dataset: see
:mod:`promptgrid.objectives` for what an objective computes per task kind). Run k's
examples for step n are fixed by its data seed alone (``batch_indices``), so runs that share a seed
see the same batches: a transfer run and the baseline it is compared with differ only in their
initial prompt. Because the data order is a pure function of (seed, step), resuming needs only the
bank, the optimizer state and the bookkeeping, and reproduces an uninterrupted run bit for bit.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from promptgrid.backbones import Backbone, TaskHead
from promptgrid.config import PandaConfig, TrainingConfig
from promptgrid.io import load_torch_checkpoint, save_torch_checkpoint
from promptgrid.precision import precision_scope
from promptgrid.prompt import PromptBank


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
def task_score(pred: torch.Tensor, gold: torch.Tensor, metric: str, n_labels: int) -> float:
    """Score on a 0-100 scale. pred, gold: (N,)."""
    if metric == "accuracy":
        return 100.0 * (pred == gold).float().mean().item()
    if metric == "macro_f1":
        f1s = []
        for c in range(n_labels):
            tp = ((pred == c) & (gold == c)).sum().item()
            fp = ((pred == c) & (gold != c)).sum().item()
            fn = ((pred != c) & (gold == c)).sum().item()
            if tp + fp + fn == 0:
                continue
            f1s.append(2 * tp / (2 * tp + fp + fn))
        return 100.0 * sum(f1s) / max(len(f1s), 1)
    raise ValueError(f"unknown task metric {metric!r}")


def bank_chunks(lengths: list, K: int, batch_size: int):
    """Batches for evaluating K prompts together: examples sorted by length (little padding), each batch
    all K prompts on a chunk of examples. Yields (example indices (n,), prompt_index (K*n,)); row j of a
    batch is example idx[j % n] under prompt j // n."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunk = max(1, batch_size // K) if K <= batch_size else 1
    for start in range(0, len(order), chunk):
        idx = order[start: start + chunk]
        yield idx, torch.arange(K).repeat_interleave(len(idx))


@torch.inference_mode()
def predict_bank(backbone: Backbone, head: TaskHead, prompts: torch.Tensor, data: EncodedSplit,
                 batch_size: int = 64, precision: str = "fp32") -> torch.Tensor:
    """Logits of every prompt on every example: prompts (K, L, d) -> (K, N, C).

    Examples are sorted by length so each padded batch wastes little; every batch holds all K
    prompts for a chunk of examples, so a job evaluating many prompts loads and pads the data once.
    """
    K, N = prompts.shape[0], len(data)
    out = torch.empty(K, N, head.n_labels)
    for idx, prompt_index in bank_chunks([len(ids) for ids in data.ids], K, batch_size):
        rows = [data.ids[i] for i in idx] * K
        batch = backbone.collate(rows)
        with precision_scope(precision, backbone.device):
            logits = backbone.logits(prompts[prompt_index], batch, head).float()
        out[:, idx, :] = logits.view(K, len(idx), -1)
    return out


def score_bank(backbone, head, prompts, data: EncodedSplit, metric: str, batch_size: int = 64,
               precision: str = "fp32") -> list:
    """Task score (0-100) of each of K prompts on ``data``."""
    logits = predict_bank(backbone, head, prompts, data, batch_size, precision)
    return [task_score(logits[k].argmax(-1), data.labels, metric, head.n_labels) for k in range(prompts.shape[0])]


# ---------------------------------------------------------------- training
@dataclass
class RunSpec:
    """One prompt-tuning run inside a bank."""

    run_id: str
    seed: int  # data-order seed
    init: torch.Tensor  # (L, d)
    teacher: Optional[torch.Tensor] = None  # (L, d) frozen PANDA teacher prompt
    beta: float = 0.0  # KD weight


@dataclass
class RunResult:
    run_id: str
    best_prompt: torch.Tensor  # (L, d)
    best_dev: float
    best_step: int
    early_prompt: torch.Tensor  # (L, d) prompt at cfg.early_step
    curve: list = field(default_factory=list)  # dicts: step, dev_score, train_loss
    last_step: int = 0


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, cfg: PandaConfig) -> torch.Tensor:
    """Per-example distillation loss (B,). student, teacher: (B, C) label logits."""
    if cfg.kd_loss == "mse":
        return ((student - teacher) ** 2).mean(-1)
    T = cfg.kd_temperature
    return F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                    reduction="none").sum(-1) * T * T


def masked_kd_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, cfg: PandaConfig) -> torch.Tensor:
    """Per-example distillation loss (B,) averaged over the real positions. student, teacher: (B, T, C)
    logits per position (target tokens, words); mask: (B, T), 1 where a position is real."""
    per_position = kd_loss(student, teacher, cfg)
    m = mask.to(per_position.device, per_position.dtype)
    return (per_position * m).sum(1) / m.sum(1).clamp(min=1)


def make_optimizer(params, cfg: TrainingConfig):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    from transformers.optimization import Adafactor

    # SPoT's setting: constant lr, no relative step. Adafactor's update clipping uses the whole
    # parameter's RMS, so runs sharing a bank are not fully independent under it.
    return Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay, relative_step=False,
                     scale_parameter=False, warmup_init=False)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_runs(backbone: Backbone, objective, train, dev, runs: list, cfg: TrainingConfig,
               metric: Optional[str] = None, kd: Optional[PandaConfig] = None,
               checkpoint: Optional[Path] = None, checkpoint_key: str = "", label: str = "train",
               log: Callable[[str], None] = _log) -> list:
    """Prompt-tune ``runs`` jointly; return a :class:`RunResult` per run (its best dev checkpoint).

    ``objective`` (:mod:`promptgrid.objectives`) gives the per-example loss, the PANDA
    distillation loss and the dev score; ``train`` and ``dev`` are splits it encoded. Each step
    gathers every active run's batch into one forward pass, row b using its run's prompt. The
    older form ``train_runs(backbone, head, train, dev, runs, cfg, metric)``, with a
    :class:`TaskHead` and a metric, trains a classification task as before.

    Every ``cfg.checkpoint_every`` steps the full state is written atomically to ``checkpoint``; if
    that file exists (and ``checkpoint_key`` matches) training resumes from it.
    """
    if isinstance(objective, TaskHead):
        from promptgrid.objectives import ClassificationObjective

        objective = ClassificationObjective(backbone, objective, metric or "accuracy")
    elif metric is not None and metric != objective.metric:
        raise ValueError(f"metric {metric!r} given with an objective whose metric is {objective.metric!r}")
    if len(train) == 0 or len(dev) == 0:
        raise ValueError(f"{label}: empty train or dev split")
    K = len(runs)
    bank = PromptBank(torch.stack([r.init for r in runs]))
    teachers = None
    if any(r.teacher is not None for r in runs):
        if kd is None:
            raise ValueError("teacher prompts given without a KD config")
        teachers = torch.stack([r.teacher if r.teacher is not None else r.init for r in runs]).float()
        betas = torch.tensor([r.beta for r in runs], dtype=torch.float32)
    optimizer = make_optimizer(bank.parameters(), cfg)
    state = dict(step=0, best_dev=[-math.inf] * K, best_step=[0] * K, best_prompt=bank.prompts.detach().clone(),
                 early_prompt=bank.prompts.detach().clone(), curves=[[] for _ in range(K)],
                 bad_evals=[0] * K, active=[True] * K, running=[0.0] * K, n_running=0)

    if checkpoint is not None and Path(checkpoint).exists():
        saved = load_torch_checkpoint(checkpoint)
        if saved.get("key") != checkpoint_key or saved["bank"].shape != bank.prompts.shape:
            log(f"[{label}] ignoring checkpoint {checkpoint}: it belongs to another configuration")
        else:
            with torch.no_grad():
                bank.prompts.copy_(saved["bank"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            log(f"[{label}] resumed from {checkpoint} at step {state['step']}")

    def evaluate(step: int, losses: list) -> None:
        active = [k for k in range(K) if state["active"][k]]
        if not active:
            return
        scores = objective.score(bank.prompts.detach()[active], dev, cfg.eval_batch_size, cfg.precision)
        for k, s in zip(active, scores):
            state["curves"][k].append({"step": step, "dev_score": s, "train_loss": losses[k]})
            if s > state["best_dev"][k]:
                state["best_dev"][k], state["best_step"][k], state["bad_evals"][k] = s, step, 0
                state["best_prompt"][k] = bank.prompts.detach()[k].clone()
            else:
                state["bad_evals"][k] += 1
                if cfg.early_stop and state["bad_evals"][k] >= cfg.early_stop:
                    state["active"][k] = False
        elapsed = time.time() - t_start
        done = max(step - start_step, 1)
        eta = elapsed / done * (cfg.steps - step)
        mean_dev = sum(scores) / len(scores)
        mean_loss = [losses[k] for k in active if not math.isnan(losses[k])]
        log(f"[{label}] step {step}/{cfg.steps} loss {sum(mean_loss) / max(len(mean_loss), 1):.4f} "
            f"dev {mean_dev:.2f} best {max(state['best_dev'][k] for k in active):.2f} "
            f"active {sum(state['active'])}/{K} {elapsed / done:.2f}s/step ETA {eta:.0f}s")

    t_start = time.time()
    start_step = state["step"]
    if state["step"] == 0:
        evaluate(0, [math.nan] * K)
        if cfg.early_step == 0:
            state["early_prompt"] = bank.prompts.detach().clone()
    while state["step"] < cfg.steps and any(state["active"]):
        step = state["step"]
        active = [k for k in range(K) if state["active"][k]]
        examples, prompt_index = [], []
        for k in active:
            idx = batch_indices(len(train), cfg.batch_size, runs[k].seed, step).tolist()
            examples.extend(idx)
            prompt_index.extend([k] * len(idx))
        prompt_index = torch.tensor(prompt_index)
        with precision_scope(cfg.precision, backbone.device):
            per_example, outputs = objective.forward(bank(prompt_index), train, examples)
        if teachers is not None:
            with torch.no_grad(), precision_scope(cfg.precision, backbone.device):
                _, teacher_outputs = objective.forward(teachers[prompt_index], train, examples)
            per_example = per_example + betas[prompt_index] * objective.kd(outputs, teacher_outputs, kd)
        # mean within each run, summed over runs: each run's gradient is what it would get alone
        loss = per_example.view(len(active), -1).mean(1)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        for j, k in enumerate(active):
            state["running"][k] += loss[j].item()
        state["n_running"] += 1
        state["step"] = step = step + 1
        if step == cfg.early_step:
            state["early_prompt"] = bank.prompts.detach().clone()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            evaluate(step, [r / max(state["n_running"], 1) for r in state["running"]])
            state["running"], state["n_running"] = [0.0] * K, 0
        if checkpoint is not None and (step % cfg.checkpoint_every == 0) and step < cfg.steps:
            save_torch_checkpoint(checkpoint, {"key": checkpoint_key, "bank": bank.prompts.detach().clone(),
                                               "optimizer": optimizer.state_dict(), "state": state})
    if state["step"] < cfg.early_step:  # stopped early for every run before the early step
        state["early_prompt"] = state["best_prompt"].clone()
    log(f"[{label}] done: {K} runs, steps {state['step']}, best dev "
        + ", ".join(f"{runs[k].run_id}={state['best_dev'][k]:.1f}@{state['best_step'][k]}" for k in range(K))
        + f", {time.time() - t_start:.1f}s")
    return [RunResult(runs[k].run_id, state["best_prompt"][k].clone(), state["best_dev"][k], state["best_step"][k],
                      state["early_prompt"][k].clone(), state["curves"][k], state["step"]) for k in range(K)]
