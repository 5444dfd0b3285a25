"""Training and applying cross-model prompt projectors (Su et al., "On Transferability of Prompt Tuning",
§cross-model).

A projector g maps a soft prompt of backbone A, ``P_a (L, d_a)``, to a prompt of backbone B,
``g(P_a) (L, d_b)``; every projector also takes a batch ``(N, L, d_a) -> (N, L, d_b)``. The projectors
themselves are registered (:data:`promptgrid.registry.PROJECTORS`, one file each in
:mod:`promptgrid.engine.projectors`, or a study's plugin); :func:`make_projector` builds one by name.

Two ways to fit one (the ``cross_model.fits`` of a study, :data:`FITS`):
- ``distance`` (Su et al.'s Distance Minimizing, :func:`train_distance`):
  ``min_g mean_n ||g(P_a^n) - P_b^n||_F^2`` over tasks with prompts on both models.
- ``task`` (Su et al.'s Task Tuning, :func:`train_task`): ``min_g`` the task loss of the frozen backbone B
  given the prompt ``g(P_a)``, P_a frozen, visiting the training tasks round-robin.

Both are seeded and deterministic on CPU: the same seed, data and thread count give the same weights.

How they optimise is a recipe (``cross_model.recipe``, :data:`RECIPES`): ``quick`` (Adam at ``cross_model.lr`` for a
set number of steps) or ``su``, Su et al.'s released code (thunlp/Prompt-Transferability at 2d15de5,
Prompt-Transferability-1.0/): ``transformers.AdamW(lr=0.005, eps=1e-06, weight_decay=0.0)``
(tools/train_tool_cross.py:176) at a constant lr (StepLR with gamma ``lr_multiplier`` = 1, :208-214), batches of 16
for 1024 epochs (config/crossPromptRoberta.config:2-3), each epoch drawing the same number of examples from every
training task (dataset/crossDataset.py:23, 53-63: every task cut to the smallest one's size). Their mixture is 14
tasks (config/crossPromptRoberta.config:31) that are not to be had offline; a study fits on its own trained tasks.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from promptgrid.config.sections import CROSS_MODEL_FITS as FITS
from promptgrid.engine.scoring import EncodedSplit, batch_indices
from promptgrid.models.backbones import Backbone, TaskHead
from promptgrid.models.precision import precision_scope
from promptgrid.registry import PROJECTORS

__all__ = ["FITS", "RECIPES", "SU_RECIPE", "Projector", "ProjectionTask", "Recipe", "distance_epoch_steps",
           "distance_loss", "make_optimizer", "make_projector", "project", "task_epoch_steps", "train_distance",
           "train_task"]


@dataclass(frozen=True)
class Recipe:
    """How a projector is optimised: the optimiser (``adam`` | ``adamw``), its settings, and the batch size of an
    epoch-based fit (``None``: the fit's own; ``lr`` ``None``: ``cross_model.lr``)."""

    optimizer: str
    lr: Optional[float] = None
    eps: float = 1e-8
    weight_decay: float = 0.0
    batch_size: Optional[int] = None


#: Su et al.'s projector training (tools/train_tool_cross.py:176; config/crossPromptRoberta.config:2-3); the
#: epochs are ``cross_model.epochs`` (default 1024, theirs)
SU_RECIPE = Recipe("adamw", lr=5e-3, eps=1e-6, weight_decay=0.0, batch_size=16)
#: ``cross_model.recipe`` -> Recipe (quick: Adam at cross_model.lr, promptgrid's earlier and default fit)
RECIPES = {"quick": Recipe("adam"), "su": SU_RECIPE}


def make_optimizer(params, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``; ``lr`` is used where the recipe fixes none."""
    lr = recipe.lr if recipe.lr is not None else lr
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":  # transformers.AdamW(correct_bias=True) is torch's AdamW
        return torch.optim.AdamW(params, lr=lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown projector optimizer {recipe.optimizer!r}; known: adam, adamw")


def distance_epoch_steps(n_pairs: int, batch_size: int) -> int:
    """Steps of one pass over ``n_pairs`` prompt pairs in batches of ``batch_size`` (the last one may be short)."""
    return max(1, math.ceil(n_pairs / batch_size))


def task_epoch_steps(n_examples: dict, n_prompts: dict, batch_size: int) -> int:
    """Steps of one Task Tuning epoch as Su et al. draw it: every training task cut to the smallest one's size
    (dataset/crossDataset.py:23, 61), paired with each of its A prompts, in batches of ``batch_size``.
    n_examples / n_prompts: {task: train examples / A prompts}."""
    smallest = min(n_examples.values())
    return max(1, math.ceil(smallest * sum(n_prompts[t] for t in n_examples) / batch_size))


class Projector(torch.nn.Module):
    """A registered projector's map (``body``, from its spec's ``build``) with the contract every projector
    keeps: input (L, d_a) or (N, L, d_a), output (L, d_b) or (N, L, d_b), computed in float32.
    Its parameters are the body's (``state_dict`` keys ``body.<name>``)."""

    def __init__(self, name: str, length: int, d_a: int, d_b: int, body: torch.nn.Module):
        super().__init__()
        self.name, self.length, self.d_a, self.d_b = name, length, d_a, d_b
        self.body = body

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        single = prompts.dim() == 2
        p = prompts.unsqueeze(0) if single else prompts
        if p.dim() != 3 or tuple(p.shape[1:]) != (self.length, self.d_a):
            raise ValueError(f"projector {self.name!r} takes prompts (L={self.length}, d_a={self.d_a}) or "
                             f"(N, {self.length}, {self.d_a}); got {tuple(prompts.shape)}")
        out = self.body(p.float())
        if tuple(out.shape) != (len(p), self.length, self.d_b):
            raise ValueError(f"projector {self.name!r} returned {tuple(out.shape)} for {tuple(p.shape)}; "
                             f"expected ({len(p)}, {self.length}, {self.d_b})")
        return out[0] if single else out


def make_projector(name: str, length: int, d_a: int, d_b: int, hidden: int = 768, seed: int = 0,
                   out_scale: float = 1.0) -> Projector:
    """The registered projector ``name``, untrained; its initial weights depend on ``seed`` alone (the global
    RNG is left untouched)."""
    spec = PROJECTORS.require(name)
    if min(length, d_a, d_b) < 1:
        raise ValueError(f"projector sizes must be >= 1, got L={length}, d_a={d_a}, d_b={d_b}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        body = spec.build(length, d_a, d_b, hidden=hidden, out_scale=out_scale)
    return Projector(name, length, d_a, d_b, body)


@torch.no_grad()
def project(projector: torch.nn.Module, prompts_a: torch.Tensor) -> torch.Tensor:
    """g(P_a) without gradients: (L, d_a) -> (L, d_b) or (N, L, d_a) -> (N, L, d_b)."""
    was_training = projector.training
    projector.eval()
    try:
        return projector(prompts_a).detach().clone()
    finally:
        projector.train(was_training)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def distance_loss(projected: torch.Tensor, prompts_b: torch.Tensor) -> torch.Tensor:
    """mean_n ||projected_n - prompts_b_n||_F^2 for (N, L, d_b) tensors."""
    return ((projected - prompts_b) ** 2).sum(dim=(1, 2)).mean()


def train_distance(projector: torch.nn.Module, prompts_a: torch.Tensor, prompts_b: torch.Tensor, steps: int,
                   lr: float, seed: int, batch_size: Optional[int] = None, log: Callable[[str], None] = _log,
                   label: str = "distance", recipe: Recipe = RECIPES["quick"]) -> list:
    """Distance Minimizing: fit g so that g(P_a^n) ~ P_b^n. Returns the training loss of each step.

    prompts_a (N, L, d_a) and prompts_b (N, L, d_b) are paired row by row (the same task, and seed,
    on the two backbones). The recipe's optimiser (default Adam at ``lr``) on :func:`distance_loss`; full batch
    unless ``batch_size`` < N, in which case step n uses a seeded minibatch (a pure function of seed and n).
    """
    if prompts_a.dim() != 3 or prompts_b.dim() != 3 or prompts_a.shape[:2] != prompts_b.shape[:2]:
        raise ValueError(f"{label}: prompts_a (N, L, d_a) and prompts_b (N, L, d_b) must pair up row by row; "
                         f"got {tuple(prompts_a.shape)} and {tuple(prompts_b.shape)}")
    if len(prompts_a) == 0:
        raise ValueError(f"{label}: no prompt pairs to train on")
    a, b = prompts_a.detach().float(), prompts_b.detach().float()
    n = len(a)
    bs = n if not batch_size or batch_size >= n else batch_size
    optimizer = make_optimizer(projector.parameters(), recipe, lr)
    projector.train()
    losses = []
    for step in range(steps):
        idx = batch_indices(n, bs, seed, step) if bs < n else torch.arange(n)
        loss = distance_loss(projector(a[idx]), b[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step == 0 or (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
            log(f"[{label}] step {step + 1}/{steps} loss {losses[-1]:.4f}")
    projector.eval()
    return losses


@dataclass
class ProjectionTask:
    """One training task of Task Tuning on backbone B: its label head and encoded train split."""

    head: TaskHead
    data: EncodedSplit


def train_task(projector: torch.nn.Module, backbone: Backbone, tasks: dict, prompts_a: dict, steps: int, lr: float,
               seed: int, batch_size: int = 8, precision: str = "fp32", log: Callable[[str], None] = _log,
               label: str = "task", recipe: Recipe = RECIPES["quick"]) -> list:
    """Task Tuning: fit g to minimise backbone B's cross-entropy with the prompt g(P_a). Returns step losses.

    tasks: {name: :class:`ProjectionTask`} on backbone B; prompts_a: {name: (S, L, d_a)}, the frozen
    A prompts of that task (e.g. one per seed). Step n takes the n-th (task, prompt) item of a
    round-robin schedule, tasks alternating fastest (t1 s1, t2 s1, ..., t1 s2, ...), and a batch of
    ``batch_size`` examples of that task; the k-th visit to a task uses its batch k of data seed
    ``seed`` (:func:`promptgrid.engine.scoring.batch_indices`). Backbone and P_a stay frozen; only the
    projector's parameters get gradients (the recipe's optimiser; default Adam at ``lr``).
    """
    names = [t for t in tasks if t in prompts_a]
    missing = [t for t in tasks if t not in prompts_a]
    if missing:
        raise ValueError(f"{label}: no A prompts given for training task(s) {missing}")
    if not names:
        raise ValueError(f"{label}: no training tasks")
    prompts_a = {t: (prompts_a[t].unsqueeze(0) if prompts_a[t].dim() == 2 else prompts_a[t]).detach().float()
                 for t in names}
    for t in names:
        if len(tasks[t].data) == 0:
            raise ValueError(f"{label}: training task {t!r} has no examples")
    most = max(len(prompts_a[t]) for t in names)
    schedule = [(t, j) for j in range(most) for t in names if j < len(prompts_a[t])]
    visits = dict.fromkeys(names, 0)
    optimizer = make_optimizer(projector.parameters(), recipe, lr)
    projector.train()
    losses = []
    for step in range(steps):
        t, j = schedule[step % len(schedule)]
        task = tasks[t]
        idx = batch_indices(len(task.data), batch_size, seed, visits[t]).tolist()
        visits[t] += 1
        batch = backbone.collate([task.data.ids[i] for i in idx])
        prompt_b = projector(prompts_a[t][j])  # (L, d_b)
        with precision_scope(precision, backbone.device):
            logits = backbone.logits(prompt_b.unsqueeze(0).expand(len(idx), -1, -1), batch, task.head).float()
        loss = F.cross_entropy(logits, task.data.labels[idx].to(logits.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{label}: loss became {losses[-1]} at step {step + 1} (task {t!r}); "
                                     f"lower cross_model.lr")
        if step == 0 or (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
            log(f"[{label}] step {step + 1}/{steps} task {t} loss {losses[-1]:.4f}")
    projector.eval()
    return losses
