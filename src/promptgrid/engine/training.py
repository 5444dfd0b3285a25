"""Prompt tuning of K runs at once through a prompt bank, with dev evaluation, best-checkpoint
selection, early stopping and atomic, bit-exact resumable checkpoints.

All runs in one call train on the same task (one objective, one encoded dataset: see
:mod:`promptgrid.objectives.factory` for what an objective computes per task kind). Run k's
examples for step n are fixed by its data seed alone (``batch_indices``), so runs that share a seed
see the same batches: a transfer run and the baseline it is compared with differ only in their
initial prompt. Because the data order is a pure function of (seed, step), resuming needs only the
bank, the optimizer state and the bookkeeping, and reproduces an uninterrupted run bit for bit.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch
import torch.nn.functional as F

from promptgrid.config import TrainingConfig
from promptgrid.engine import memory
from promptgrid.engine.scoring import batch_indices
from promptgrid.errors import InputError
from promptgrid.models.backbones import Backbone, to_device
from promptgrid.models.precision import precision_scope
from promptgrid.models.prompt import PromptBank
from promptgrid.storage.files import load_torch_checkpoint, save_torch_checkpoint


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


class KDSettings(Protocol):
    """What distillation reads of a method's settings (PANDA's ``transfer.panda``)."""

    kd_loss: str  # mse | kl
    kd_temperature: float


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, cfg: KDSettings) -> torch.Tensor:
    """Per-example distillation loss (B,). student, teacher: (B, C) label logits."""
    if cfg.kd_loss == "mse":
        return ((student - teacher) ** 2).mean(-1)
    T = cfg.kd_temperature
    return F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                    reduction="none").sum(-1) * T * T


def masked_kd_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, cfg: KDSettings) -> torch.Tensor:
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

    # SPoT's setting: constant lr, no relative step. Adafactor's update clipping and factored moments use
    # a parameter's whole RMS: each run is its own parameter (PromptBank), so runs stay independent.
    return Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay, relative_step=False,
                     scale_parameter=False, warmup_init=False)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: seconds between progress lines while a bank trains between evaluations (``PROMPTGRID_PROGRESS_S`` overrides):
#: a long ``eval_every`` must not leave a job's log silent for an hour
PROGRESS_S = 20.0


def progress_interval() -> float:
    """Seconds between progress lines: ``PROMPTGRID_PROGRESS_S`` if set (0 prints one every step), else
    :data:`PROGRESS_S`."""
    value = os.environ.get("PROMPTGRID_PROGRESS_S", "").strip()
    if not value:
        return PROGRESS_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise InputError(f"environment variable PROMPTGRID_PROGRESS_S={value!r}: give seconds >= 0")
    return seconds


class Progress:
    """A log line every ``interval`` seconds of ``clock`` between evaluations: the step, the mean training loss
    since the last line (over the active runs' steps), the examples per second since the last line and the ETA
    of the whole call (from its mean time per step, evaluations included).

    The loss is read from the bank's running sums (K,) on the device once per line, never per step, so a GPU
    step loop does not wait for the device more often than one ``.item()`` per line.
    """

    def __init__(self, label: str, steps: int, start_step: int, running_sum: float,
                 clock: Callable[[], float], interval: float, log: Callable[[str], None]):
        self.label, self.steps, self.start_step = label, steps, start_step
        self.clock, self.interval, self.log = clock, interval, log
        self.t_start = clock()
        self.restart(running_sum)

    def restart(self, running_sum: float = 0.0) -> None:
        """Count from now: after an evaluation line (which zeroes the running sums) or at the start."""
        self.t_line, self.loss_mark, self.rows, self.examples = self.clock(), running_sum, 0, 0

    def step(self, step: int, rows: int, examples: int, running: torch.Tensor) -> None:
        """After ``step`` trained ``rows`` runs on ``examples`` examples; running: (K,) summed losses."""
        self.rows, self.examples = self.rows + rows, self.examples + examples
        now = self.clock()
        if now - self.t_line < self.interval:
            return
        total = float(running.sum())  # the line's one device sync
        loss = (total - self.loss_mark) / max(self.rows, 1)
        rate = self.examples / max(now - self.t_line, 1e-9)
        eta = (now - self.t_start) / max(step - self.start_step, 1) * (self.steps - step)
        self.log(f"[{self.label}] step {step}/{self.steps} loss {loss:.4f} {rate:.2f} examples/s ETA {eta:.0f}s")
        self.restart(total)


#: 2: one optimiser parameter per run (a checkpoint of the single-parameter bank cannot be resumed)
CHECKPOINT_FORMAT = 2


@dataclass
class BankState:
    """The bookkeeping of a bank of K runs: everything a checkpoint needs besides the prompts and the
    optimiser. Stored as a plain dict of tensors, numbers and lists, so ``torch.load(weights_only=True)``
    reads it back."""

    step: int
    best_dev: list  # K floats
    best_step: list  # K ints
    best_prompt: torch.Tensor  # (K, L, d) each run's best dev checkpoint
    early_prompt: torch.Tensor  # (K, L, d) at cfg.early_step
    curves: list  # K lists of {step, dev_score, train_loss}
    bad_evals: list  # K ints: evaluations since the last improvement
    active: list  # K bools: runs still training (early stopping)
    running: list  # K floats: summed loss since the last evaluation
    n_running: int

    @classmethod
    def start(cls, prompts: torch.Tensor) -> BankState:
        K = prompts.shape[0]
        prompts = prompts.detach().cpu()  # the bookkeeping stays on the host, wherever the bank computes
        return cls(step=0, best_dev=[-math.inf] * K, best_step=[0] * K, best_prompt=prompts.clone(),
                   early_prompt=prompts.clone(), curves=[[] for _ in range(K)], bad_evals=[0] * K,
                   active=[True] * K, running=[0.0] * K, n_running=0)

    def active_runs(self) -> list:
        return [k for k, on in enumerate(self.active) if on]

    def record(self, step: int, scores: list, prompts: torch.Tensor, early_stop: int) -> None:
        """Dev scores of the active runs at ``step``; prompts (K, L, d) are the bank now."""
        losses = [r / max(self.n_running, 1) for r in self.running] if step else [math.nan] * len(self.active)
        for k, s in zip(self.active_runs(), scores):
            self.curves[k].append({"step": step, "dev_score": s, "train_loss": losses[k]})
            if s > self.best_dev[k]:
                self.best_dev[k], self.best_step[k], self.bad_evals[k] = s, step, 0
                self.best_prompt[k] = prompts[k].clone()
            else:
                self.bad_evals[k] += 1
                if early_stop and self.bad_evals[k] >= early_stop:
                    self.active[k] = False
        self.running, self.n_running = [0.0] * len(self.active), 0

    def results(self, runs: list) -> list:
        return [RunResult(run.run_id, self.best_prompt[k].clone(), self.best_dev[k], self.best_step[k],
                          self.early_prompt[k].clone(), self.curves[k], self.step) for k, run in enumerate(runs)]


def train_runs(backbone: Backbone, objective, train, dev, runs: list, cfg: TrainingConfig,
               kd: Optional[KDSettings] = None,
               checkpoint: Optional[Path] = None, checkpoint_key: str = "", label: str = "train",
               log: Callable[[str], None] = _log, clock: Callable[[], float] = time.monotonic) -> list:
    """Prompt-tune ``runs`` jointly; return a :class:`RunResult` per run (its best dev checkpoint).

    ``objective`` (:mod:`promptgrid.objectives.factory`) gives the per-example loss, the PANDA
    distillation loss and the dev score; ``train`` and ``dev`` are splits it encoded. Each step
    gathers every active run's batch into one forward pass, row b using its run's prompt.

    The bank, the teachers and the batches live on ``backbone.device``; the step loop never waits for
    the device (losses add up there and are read at evaluations and progress lines). Under
    ``cfg.max_tokens`` (or, on a GPU, a budget from its free memory) a step is cut into chunks
    (:mod:`promptgrid.engine.memory`), and an out-of-memory error halves the budget and reruns the step.

    Every ``cfg.checkpoint_every`` steps the full state is written atomically to ``checkpoint``; if
    that file exists (and ``checkpoint_key`` matches) training resumes from it.

    ``log`` gets a line per evaluation, a :class:`Progress` line every :func:`progress_interval` seconds of
    ``clock`` between them, and a summary line at the end.
    """
    if len(train) == 0 or len(dev) == 0:
        raise InputError(f"{label}: empty train or dev split")
    K, device = len(runs), backbone.device
    bank = PromptBank(torch.stack([r.init for r in runs])).to(device)
    teachers = None
    if any(r.teacher is not None for r in runs):
        if kd is None:
            raise ValueError("teacher prompts given without a KD config")
        teachers = torch.stack([r.teacher if r.teacher is not None else r.init for r in runs]).float().to(device)
        betas = torch.tensor([r.beta for r in runs], dtype=torch.float32, device=device)
    optimizer = make_optimizer(bank.parameters(), cfg)
    state = BankState.start(bank.prompts)
    if checkpoint is not None and Path(checkpoint).exists():
        saved = load_torch_checkpoint(checkpoint)
        if (saved.get("key") != checkpoint_key or saved.get("format") != CHECKPOINT_FORMAT
                or saved["bank"].shape != bank.prompts.shape):
            log(f"[{label}] ignoring checkpoint {checkpoint}: it belongs to another configuration")
        else:
            bank.load(saved["bank"])
            optimizer.load_state_dict(saved["optimizer"])
            state = BankState(**saved["state"])
            log(f"[{label}] resumed from {checkpoint} at step {state.step}")
    # summed training loss of each run since the last evaluation, on the device (float64 as the host sums were)
    running = torch.tensor(state.running, dtype=torch.float64, device=device)
    budget = cfg.max_tokens or memory.auto_token_budget(backbone.model, device, cfg.precision)
    t_start, start_step, n_examples = clock(), state.step, 0
    progress = Progress(label, cfg.steps, start_step, sum(state.running), clock, progress_interval(), log)

    def sync_running() -> None:
        state.running = running.tolist()

    def evaluate(step: int) -> None:
        active = state.active_runs()
        if not active:
            return
        sync_running()
        scores = objective.score(bank.prompts.detach()[active], dev, cfg.eval_batch_size, cfg.precision)
        mean_loss = [state.running[k] / max(state.n_running, 1) for k in active] if step else []
        state.record(step, scores, bank.prompts.detach().cpu(), cfg.early_stop)
        running.zero_()
        elapsed, done = clock() - t_start, max(step - start_step, 1)
        log(f"[{label}] step {step}/{cfg.steps} loss {sum(mean_loss) / max(len(mean_loss), 1):.4f} "
            f"dev {sum(scores) / len(scores):.2f} best {max(state.best_dev[k] for k in active):.2f} "
            f"active {sum(state.active)}/{K} {elapsed / done:.2f}s/step ETA {elapsed / done * (cfg.steps - step):.0f}s")

    def run_chunk(pieces: list, active: list, examples: list) -> torch.Tensor:
        """Forward and backward of some runs' rows; returns each piece's loss contribution (n_pieces,)."""
        rows = [examples[p.run][p.lo:p.hi] for p in pieces]
        flat = [i for r in rows for i in r]
        prompt_index = to_device(torch.tensor([active[p.run] for p, r in zip(pieces, rows) for _ in r]), device)
        with precision_scope(cfg.precision, device):
            per_example, outputs = objective.forward(bank(prompt_index), train, flat)
        if teachers is not None:
            with torch.no_grad(), precision_scope(cfg.precision, device):
                _, teacher_outputs = objective.forward(teachers[prompt_index], train, flat)
            per_example = per_example + betas[prompt_index] * objective.kd(outputs, teacher_outputs, kd)
        if all(p.lo == 0 and p.hi == len(examples[p.run]) for p in pieces):
            # mean within each run, summed over runs: each run's gradient is what it would get alone
            loss = per_example.view(len(pieces), -1).mean(1)
        else:  # slices of one run: their sums over the run's batch size add up to its mean
            sizes = [len(r) for r in rows]
            loss = torch.stack([part.sum() for part in per_example.split(sizes)]) / len(examples[pieces[0].run])
        loss.sum().backward()
        return loss.detach()

    if state.step == 0:
        evaluate(0)
        if cfg.early_step == 0:
            state.early_prompt = bank.prompts.detach().cpu().clone()
    while state.step < cfg.steps and any(state.active):
        active = state.active_runs()
        examples = [batch_indices(len(train), cfg.batch_size, runs[k].seed, state.step).tolist() for k in active]
        longest = max((len(train.ids[i]) for ex in examples for i in ex), default=0) if hasattr(train, "ids") else 0
        tokens_per_row = bank.runs[0].shape[0] + longest
        while True:
            chunks = memory.plan_chunks(len(active), cfg.batch_size, tokens_per_row, budget)
            optimizer.zero_grad(set_to_none=True)
            try:
                step_loss = torch.zeros(len(active), dtype=torch.float64, device=device)
                for pieces in chunks:  # a chunk is a contiguous range of runs, or a slice of one run
                    first = pieces[0].run
                    step_loss[first: first + len(pieces)] += run_chunk(pieces, active, examples).to(torch.float64)
                break
            except torch.OutOfMemoryError:
                used = max(sum(p.hi - p.lo for p in c) for c in chunks) * tokens_per_row
                budget = memory.halve(budget, used, label, log)
        optimizer.step()
        if len(active) == K:
            running += step_loss
        else:
            running.index_add_(0, to_device(torch.tensor(active), device), step_loss)
        state.n_running += 1
        state.step += 1
        if state.step == cfg.early_step:
            state.early_prompt = bank.prompts.detach().cpu().clone()
        step_examples = sum(len(ex) for ex in examples)
        n_examples += step_examples
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            evaluate(state.step)
            progress.restart()  # the evaluation zeroed the running sums and printed a line
        else:
            progress.step(state.step, len(active), step_examples, running)
        if checkpoint is not None and state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
            sync_running()
            save_torch_checkpoint(checkpoint, {"key": checkpoint_key, "format": CHECKPOINT_FORMAT,
                                               "bank": bank.prompts.detach().cpu().clone(),
                                               "optimizer": optimizer.state_dict(),
                                               "state": dataclasses.asdict(state)})
    if state.step < cfg.early_step:  # stopped early for every run before the early step
        state.early_prompt = state.best_prompt.clone()
    elapsed = clock() - t_start
    log(f"[{label}] done: {K} runs, steps {state.step}, best dev "
        + ", ".join(f"{runs[k].run_id}={state.best_dev[k]:.1f}@{state.best_step[k]}" for k in range(K))
        + f", {elapsed:.1f}s, {n_examples / max(elapsed, 1e-9):.2f} examples/s")
    return state.results(runs)
