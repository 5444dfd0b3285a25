"""Cross-model prompt projectors (Su et al., "On Transferability of Prompt Tuning", §cross-model).

A projector g maps a soft prompt of backbone A, ``P_a (L, d_a)``, to a prompt of backbone B,
``g(P_a) (L, d_b)``. Every projector also takes a batch ``(N, L, d_a) -> (N, L, d_b)``.

- :class:`LinearProjector`: one linear map applied to each prompt token on its own,
  ``g(P)_i = W P_i + b`` with ``W (d_b, d_a)``, ``b (d_b,)``; token i of the output only sees token i
  of the input. The baseline a two-layer projector has to beat.
- :class:`MLPProjector`: Su et al.'s v1, which mixes all tokens:
  ``g(P) = LayerNorm_rows(reshape(W2 tanh(W1 vec(P) + b1) + b2, (L, d_b)))``.

Two ways to train one (:func:`train_distance`, :func:`train_task`):
- Distance Minimizing: ``min_g mean_n ||g(P_a^n) - P_b^n||_F^2`` over tasks with prompts on both models.
- Task Tuning: ``min_g`` the task loss of the frozen backbone B given the prompt ``g(P_a)``, P_a frozen,
  visiting the training tasks round-robin.

Both are seeded and deterministic on CPU: the same seed, data and thread count give the same weights.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from promptgrid.engine.scoring import EncodedSplit, batch_indices
from promptgrid.models.backbones import Backbone, TaskHead
from promptgrid.models.precision import precision_scope

PROJECTORS = ("linear", "mlp")


class _Projector(torch.nn.Module):
    """Shape checks shared by the projectors: input (L, d_a) or (N, L, d_a)."""

    def __init__(self, length: int, d_a: int, d_b: int):
        super().__init__()
        if min(length, d_a, d_b) < 1:
            raise ValueError(f"projector sizes must be >= 1, got L={length}, d_a={d_a}, d_b={d_b}")
        self.length, self.d_a, self.d_b = length, d_a, d_b

    def _batched(self, prompts: torch.Tensor):
        single = prompts.dim() == 2
        p = prompts.unsqueeze(0) if single else prompts
        if p.dim() != 3 or tuple(p.shape[1:]) != (self.length, self.d_a):
            raise ValueError(f"{type(self).__name__} takes prompts (L={self.length}, d_a={self.d_a}) or "
                             f"(N, {self.length}, {self.d_a}); got {tuple(prompts.shape)}")
        return p.float(), single

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        p, single = self._batched(prompts)
        out = self._project(p)
        return out[0] if single else out

    def _project(self, p: torch.Tensor) -> torch.Tensor:  # (N, L, d_a) -> (N, L, d_b)
        raise NotImplementedError


class LinearProjector(_Projector):
    """Per-token linear map: ``g(P)_i = W P_i + b`` for i = 1..L.

    Parameters: ``linear.weight`` W (d_b, d_a), ``linear.bias`` b (d_b,), shared by all L positions
    (so ``length`` only fixes the accepted input shape). (N, L, d_a) -> (N, L, d_b).
    """

    def __init__(self, length: int, d_a: int, d_b: int):
        super().__init__(length, d_a, d_b)
        self.linear = torch.nn.Linear(d_a, d_b)

    def _project(self, p):
        return self.linear(p)


class MLPProjector(_Projector):
    """Su et al. v1: ``g(P) = LayerNorm_rows(W2 tanh(W1 vec(P) + b1) + b2)`` reshaped to (L, d_b).

    Shapes, for one prompt P (L, d_a):
    - ``x = vec(P)`` (L*d_a,), row-major: token i fills ``x[i*d_a:(i+1)*d_a]``;
    - ``h = tanh(W1 x + b1)`` (hidden,), ``fc1.weight`` W1 (hidden, L*d_a), ``fc1.bias`` b1 (hidden,);
    - ``y = W2 h + b2`` (L*d_b,), ``fc2.weight`` W2 (L*d_b, hidden), ``fc2.bias`` b2 (L*d_b,);
    - ``Y = y.reshape(L, d_b)`` (row-major again), and each row is layer-normalised on its own:
      ``g(P)_i = (Y_i - mean(Y_i)) / sqrt(var(Y_i) + eps) * gamma + beta`` with the biased variance
      over the d_b entries, ``norm.weight`` gamma (d_b,), ``norm.bias`` beta (d_b,), eps = 1e-5.

    ``out_scale`` initialises gamma (torch's default is 1). Without it every projected row has unit
    standard deviation, which suits BERT-type models (their embeddings pass a LayerNorm anyway) but is
    about 8x the embedding scale of a Llama-type model such as SmolLM2; the job passes backbone B's
    typical embedding-row std so task tuning starts from prompts of the right size.
    """

    def __init__(self, length: int, d_a: int, d_b: int, hidden: int = 768, out_scale: float = 1.0,
                 eps: float = 1e-5):
        super().__init__(length, d_a, d_b)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.hidden = hidden
        self.fc1 = torch.nn.Linear(length * d_a, hidden)
        self.fc2 = torch.nn.Linear(hidden, length * d_b)
        self.norm = torch.nn.LayerNorm(d_b, eps=eps)
        with torch.no_grad():
            self.norm.weight.fill_(out_scale)

    def _project(self, p):
        n = p.shape[0]
        y = self.fc2(torch.tanh(self.fc1(p.reshape(n, -1))))
        return self.norm(y.view(n, self.length, self.d_b))


def make_projector(kind: str, length: int, d_a: int, d_b: int, hidden: int = 768, seed: int = 0,
                   out_scale: float = 1.0) -> _Projector:
    """A projector whose initial weights depend on ``seed`` alone (the global RNG is left untouched)."""
    if kind not in PROJECTORS:
        raise ValueError(f"unknown projector {kind!r}; choose one of {list(PROJECTORS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "linear":
            return LinearProjector(length, d_a, d_b)
        return MLPProjector(length, d_a, d_b, hidden=hidden, out_scale=out_scale)


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
                   label: str = "distance") -> list:
    """Distance Minimizing: fit g so that g(P_a^n) ~ P_b^n. Returns the training loss of each step.

    prompts_a (N, L, d_a) and prompts_b (N, L, d_b) are paired row by row (the same task, and seed,
    on the two backbones). Adam on :func:`distance_loss`; full batch unless ``batch_size`` < N, in
    which case step n uses a seeded minibatch (a pure function of seed and n).
    """
    if prompts_a.dim() != 3 or prompts_b.dim() != 3 or prompts_a.shape[:2] != prompts_b.shape[:2]:
        raise ValueError(f"{label}: prompts_a (N, L, d_a) and prompts_b (N, L, d_b) must pair up row by row; "
                         f"got {tuple(prompts_a.shape)} and {tuple(prompts_b.shape)}")
    if len(prompts_a) == 0:
        raise ValueError(f"{label}: no prompt pairs to train on")
    a, b = prompts_a.detach().float(), prompts_b.detach().float()
    n = len(a)
    bs = n if not batch_size or batch_size >= n else batch_size
    optimizer = torch.optim.Adam(projector.parameters(), lr=lr)
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
               label: str = "task") -> list:
    """Task Tuning: fit g to minimise backbone B's cross-entropy with the prompt g(P_a). Returns step losses.

    tasks: {name: :class:`ProjectionTask`} on backbone B; prompts_a: {name: (S, L, d_a)}, the frozen
    A prompts of that task (e.g. one per seed). Step n takes the n-th (task, prompt) item of a
    round-robin schedule, tasks alternating fastest (t1 s1, t2 s1, ..., t1 s2, ...), and a batch of
    ``batch_size`` examples of that task; the k-th visit to a task uses its batch k of data seed
    ``seed`` (:func:`promptgrid.engine.scoring.batch_indices`). Backbone and P_a stay frozen; only the
    projector's parameters get gradients (Adam, ``lr``).
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
    optimizer = torch.optim.Adam(projector.parameters(), lr=lr)
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
