"""What prompt tuning optimises and how a prompt is scored, per task kind: one ``Objective`` each.

The training engine (:func:`promptgrid.training.train_runs`) and the jobs talk to a task only
through this duck-typed interface, so every kind runs through the same prompt-bank grid:

- ``metric: str`` -- the task metric, a 0-100 score;
- ``encode(frame) -> split`` -- a prepared split (:func:`promptgrid.tasks.load_split`) made ready
  for the backbone. Every split has ``__len__`` and ``ids`` (per example, the backbone's model-input
  token ids, list[list[int]]), which the PANDA metric feeds to the model;
- ``forward(prompts (B, L, d), split, idx) -> (loss (B,), kd_outputs)`` -- the per-example task loss
  of examples ``split[idx]`` (row b uses ``prompts[b]``), differentiable in the prompts, and what
  PANDA distils: label logits (B, C) for classification, the logit of the high over the low word
  (B,) for regression, ``(token logits (B, T, V), target mask (B, T))`` for text-to-text;
- ``kd(student_out, teacher_out, panda_cfg) -> (B,)`` -- the per-example distillation loss;
- ``score(prompts (K, L, d), split, batch_size, precision) -> list of K floats`` -- the task metric
  of each prompt of a bank on the whole split.

``make_objective(backbone, task_cfg)`` picks the objective:

==============  ===================  ===================================================
task kind       backbone kinds       objective
==============  ===================  ===================================================
classification  all                  :class:`ClassificationObjective` (rank classification
                                     over the label texts, :mod:`promptgrid.backbones`)
regression      all                  :class:`RegressionObjective` (rank classification over a
                                     low and a high word)
span_qa, ner    causal_lm, seq2seq   :class:`TextObjective` (teacher-forced loss, greedy
                                     generation, :mod:`promptgrid.generation`)
span_qa, ner    encoder, masked_lm   ``promptgrid.tagging.TaggingObjective``
==============  ===================  ===================================================
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from promptgrid import training
from promptgrid.backbones import Backbone, TaskHead
from promptgrid.config import PandaConfig, TaskConfig
from promptgrid.generation import teacher_forced
from promptgrid.precision import precision_scope

TEXT_BACKBONES = ("causal_lm", "seq2seq")
TAGGING_BACKBONES = ("encoder", "masked_lm")


class ObjectiveError(ValueError):
    """A task kind has no path on a backbone kind; the message names both."""


# ====================================================================== classification
class ClassificationObjective:
    """Cross-entropy over the label texts' rank-classification logits; accuracy or macro-F1.

    Exactly the engine's historical path: ``encode`` is :func:`promptgrid.training.encode_split`,
    ``score`` is :func:`promptgrid.training.score_bank` and ``kd`` is
    :func:`promptgrid.training.kd_loss`, so results are bit-identical to calling those directly.
    """

    def __init__(self, backbone: Backbone, head: TaskHead, metric: str = "accuracy"):
        self.backbone, self.head, self.metric = backbone, head, metric

    @classmethod
    def from_config(cls, backbone: Backbone, task_cfg: TaskConfig) -> "ClassificationObjective":
        return cls(backbone, backbone.task_head(task_cfg.label_texts), task_cfg.metric)

    def encode(self, frame: pd.DataFrame) -> training.EncodedSplit:
        return training.encode_split(self.backbone, frame["text"], frame["label"])

    def forward(self, prompts: torch.Tensor, split, idx):
        batch = self.backbone.collate([split.ids[i] for i in idx])
        logits = self.backbone.logits(prompts, batch, self.head).float()
        return F.cross_entropy(logits, split.labels[idx], reduction="none"), logits

    def kd(self, student_out, teacher_out, panda_cfg: PandaConfig) -> torch.Tensor:
        return training.kd_loss(student_out, teacher_out, panda_cfg)

    def score(self, prompts: torch.Tensor, split, batch_size: int = 64, precision: str = "fp32") -> list:
        # looked up on the module at call time, so tools that wrap training.score_bank (bench/) see every call
        return training.score_bank(self.backbone, self.head, prompts, split, self.metric, batch_size, precision)


# ====================================================================== regression
@dataclass
class ScoreSplit:
    """A tokenized regression split: ``ids`` per example and gold scores ``labels`` (N,) float."""

    ids: list
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


def pearson(pred, gold) -> float:
    """Pearson r of two (N,) arrays; 0.0 where it is undefined (a constant side)."""
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if len(pred) < 2:
        return 0.0
    a, b = pred - pred.mean(), gold - gold.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def spearman(pred, gold) -> float:
    """Spearman rho (Pearson r of average ranks); 0.0 where it is undefined."""
    return pearson(pd.Series(np.asarray(pred, dtype=np.float64)).rank().to_numpy(),
                   pd.Series(np.asarray(gold, dtype=np.float64)).rank().to_numpy())


class RegressionObjective:
    """Rank classification over two label words, read as a score (STS-B and the like).

    z = logit(high word) - logit(low word) from the backbone's rank-classification logits, so it
    works on every backbone kind; prediction = min + (max - min) * sigmoid(z) with
    [min, max] = ``label_range``; loss = (sigmoid(z) - (y - min) / (max - min))^2, the MSE on the
    [0, 1] scale; score = 100 * Pearson r (or Spearman rho) of predictions and gold scores, which
    can be negative, and is 0 when the predictions are constant. PANDA distils z: ``mse`` compares
    the two predictions on the [0, 1] scale, ``kl`` the two Bernoulli distributions sigmoid(z / T).
    """

    def __init__(self, backbone: Backbone, task_cfg: TaskConfig, head: Optional[TaskHead] = None):
        if len(task_cfg.label_texts) != 2:
            raise ObjectiveError(f"a regression task needs exactly two label words (low, high); got "
                                 f"{task_cfg.label_texts}")
        self.backbone, self.metric = backbone, task_cfg.metric
        self.head = head if head is not None else backbone.task_head(task_cfg.label_texts)
        self.low, self.high = task_cfg.label_range
        if self.metric not in ("pearson", "spearman"):
            raise ObjectiveError(f"unknown regression metric {self.metric!r}; choose pearson or spearman")

    def encode(self, frame: pd.DataFrame) -> ScoreSplit:
        return ScoreSplit(self.backbone.input_ids(list(frame["text"])),
                          torch.as_tensor(np.asarray(frame["label"], dtype=np.float32)))

    def to_score(self, z: torch.Tensor) -> torch.Tensor:
        """Predicted score(s) from z = logit(high) - logit(low)."""
        return self.low + (self.high - self.low) * torch.sigmoid(z)

    def forward(self, prompts: torch.Tensor, split: ScoreSplit, idx):
        batch = self.backbone.collate([split.ids[i] for i in idx])
        logits = self.backbone.logits(prompts, batch, self.head).float()
        z = logits[:, 1] - logits[:, 0]
        target = ((split.labels[idx] - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        return (torch.sigmoid(z) - target) ** 2, z

    def kd(self, student_out, teacher_out, panda_cfg: PandaConfig) -> torch.Tensor:
        if panda_cfg.kd_loss == "mse":
            return (torch.sigmoid(student_out) - torch.sigmoid(teacher_out)) ** 2
        T = panda_cfg.kd_temperature
        s, t = student_out / T, teacher_out / T
        p_t = torch.sigmoid(t)
        kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
        return kl * T * T

    def predict(self, prompts: torch.Tensor, split: ScoreSplit, batch_size: int = 64,
                precision: str = "fp32") -> torch.Tensor:
        """Predicted scores (K, N) of every prompt of the bank on every example."""
        logits = training.predict_bank(self.backbone, self.head, prompts, split, batch_size, precision)
        return self.to_score(logits[..., 1] - logits[..., 0])

    def score(self, prompts: torch.Tensor, split: ScoreSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        preds = self.predict(prompts, split, batch_size, precision)
        corr = pearson if self.metric == "pearson" else spearman
        gold = split.labels.numpy()
        return [100.0 * corr(preds[k].numpy(), gold) for k in range(preds.shape[0])]


# ====================================================================== text to text
@dataclass
class TextSplit:
    """A text-to-text split: ``ids`` (model-input token ids, as generation builds them), the input
    ``texts`` and the acceptable ``targets`` per example (the first one is trained on)."""

    ids: list
    texts: list
    targets: list

    def __len__(self) -> int:
        return len(self.ids)


class TextObjective:
    """Span QA and NER as text to text on causal_lm / seq2seq backbones (:mod:`promptgrid.generation`).

    Loss: teacher-forced cross-entropy of ``targets[0]`` (+ EOS), mean over its tokens, capped at
    ``max_new_tokens`` target tokens. Score: greedy generation of up to ``max_new_tokens`` tokens,
    scored by ``text2text_score`` (squad_f1 / squad_em against every acceptable answer, ner_f1).
    PANDA distils the teacher-forced token logits over the vocabulary at the target positions:
    ``mse`` is the mean squared difference over the vocabulary, ``kl`` KL(teacher || student) at
    temperature T times T^2, each averaged over the target tokens.
    """

    def __init__(self, backbone: Backbone, task_cfg: TaskConfig):
        if backbone.kind not in TEXT_BACKBONES:
            raise ObjectiveError(f"backbone '{backbone.name}' is a {backbone.kind} model; text-to-text "
                                 f"{task_cfg.kind} needs a causal_lm or seq2seq backbone")
        from promptgrid.generation import TEXT_METRICS

        if task_cfg.metric not in TEXT_METRICS:
            raise ObjectiveError(f"unknown text-to-text metric {task_cfg.metric!r}; choose one of {list(TEXT_METRICS)}")
        self.backbone, self.metric, self.max_new_tokens = backbone, task_cfg.metric, task_cfg.max_new_tokens

    def encode(self, frame: pd.DataFrame) -> TextSplit:
        texts = [str(t) for t in frame["text"]]
        targets = [[str(x) for x in t] for t in frame["targets"]]
        return TextSplit(self.backbone.input_ids(texts), texts, targets)

    def forward(self, prompts: torch.Tensor, split: TextSplit, idx):
        loss, logits, mask = teacher_forced(self.backbone, prompts, [split.texts[i] for i in idx],
                                            [split.targets[i][0] for i in idx], self.max_new_tokens)
        return loss, (logits, mask)

    def kd(self, student_out, teacher_out, panda_cfg: PandaConfig) -> torch.Tensor:
        (s, mask), (t, _) = student_out, teacher_out
        return training.masked_kd_loss(s, t, mask, panda_cfg)

    def predict(self, prompts: torch.Tensor, split: TextSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        """Greedy generations of every prompt on every example: K lists of N strings.

        As in :func:`promptgrid.training.predict_bank`, examples go by length and each batch holds
        all K prompts for a chunk of examples.
        """
        from promptgrid.generation import generate

        K, N = prompts.shape[0], len(split)
        out = [[""] * N for _ in range(K)]
        for idx, prompt_index in training.bank_chunks([len(ids) for ids in split.ids], K, batch_size):
            texts = [split.texts[i] for i in idx] * K
            with precision_scope(precision, self.backbone.device):
                texts_out = generate(self.backbone, prompts[prompt_index], texts, self.max_new_tokens)
            for j, text in enumerate(texts_out):
                out[j // len(idx)][idx[j % len(idx)]] = text
        return out

    def score(self, prompts: torch.Tensor, split: TextSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        from promptgrid.generation import text2text_score

        return [text2text_score(self.metric, preds, split.targets)
                for preds in self.predict(prompts, split, batch_size, precision)]


# ====================================================================== dispatch
def _tagging_objective():
    """``promptgrid.tagging.TaggingObjective``, or the reason it cannot be had."""
    try:
        module = importlib.import_module("promptgrid.tagging")
    except ImportError as err:
        return None, f"promptgrid.tagging cannot be imported ({err})"
    cls = getattr(module, "TaggingObjective", None)
    if cls is None:
        return None, "promptgrid.tagging has no TaggingObjective"
    return cls, None


def unsupported(backbone_kind: str, task_kind: str) -> Optional[str]:
    """Why ``task_kind`` cannot run on a ``backbone_kind`` backbone, or None if it can."""
    if task_kind in ("classification", "regression") or backbone_kind in TEXT_BACKBONES:
        return None
    if backbone_kind in TAGGING_BACKBONES:
        _, why = _tagging_objective()
        return None if why is None else f"{task_kind} on {backbone_kind} backbones needs tagging: {why}"
    return f"no {task_kind} path for {backbone_kind} backbones"


def make_objective(backbone: Backbone, task_cfg: TaskConfig, task: Optional[str] = None,
                   head: Optional[TaskHead] = None):
    """The objective of ``task_cfg``'s kind on ``backbone`` (see the module docstring). ``head``: an
    already computed label head for classification / regression (built from the label words if None)."""
    kind = task_cfg.kind
    if kind == "classification":
        if head is None:
            return ClassificationObjective.from_config(backbone, task_cfg)
        return ClassificationObjective(backbone, head, task_cfg.metric)
    if kind == "regression":
        return RegressionObjective(backbone, task_cfg, head=head)
    if kind not in ("span_qa", "ner"):
        raise ObjectiveError(f"task {task or '?'!r}: unknown task kind {kind!r}")
    if backbone.kind in TEXT_BACKBONES:
        return TextObjective(backbone, task_cfg)
    cls, why = _tagging_objective() if backbone.kind in TAGGING_BACKBONES else (None, "no path for this kind")
    if cls is None:
        raise ObjectiveError(f"task {task or '?'!r} is a {kind} task and backbone '{backbone.name}' is a "
                             f"{backbone.kind} model: {why}")
    return cls(backbone, task_cfg)
