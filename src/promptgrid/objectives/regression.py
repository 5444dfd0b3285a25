"""Regression as rank classification over a low and a high label word: prediction = min + (max - min) *
sigmoid(logit(high) - logit(low)); Pearson or Spearman.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from promptgrid import pearson as correlation
from promptgrid.config import TaskConfig
from promptgrid.engine import scoring
from promptgrid.engine.training import KDSettings
from promptgrid.models.backbones import Backbone, TaskHead, to_device
from promptgrid.objectives import ObjectiveError


# ====================================================================== regression
@dataclass
class ScoreSplit:
    """A tokenized regression split: ``ids`` per example and gold scores ``labels`` (N,) float."""

    ids: list
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


def pearson(pred, gold) -> float:
    """Pearson r of predictions and gold scores (N,); a constant prediction (r undefined) scores 0."""
    r = correlation.pearson(pred, gold)
    return 0.0 if math.isnan(r) else r


def spearman(pred, gold) -> float:
    """Spearman rho of predictions and gold scores (N,); 0 where it is undefined."""
    r = correlation.spearman(pred, gold)
    return 0.0 if math.isnan(r) else r


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
        self.backbone, self.score_name = backbone, task_cfg.score
        self.head = head if head is not None else backbone.task_head(task_cfg.label_texts)
        self.low, self.high = task_cfg.label_range
        if self.score_name not in ("pearson", "spearman"):
            raise ObjectiveError(f"unknown regression score {self.score_name!r}; choose pearson or spearman")

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
        target = ((to_device(split.labels[idx], z.device) - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        return (torch.sigmoid(z) - target) ** 2, z

    def kd(self, student_out, teacher_out, panda_cfg: KDSettings) -> torch.Tensor:
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
        logits = scoring.predict_bank(self.backbone, self.head, prompts, split, batch_size, precision)
        return self.to_score(logits[..., 1] - logits[..., 0])

    def score(self, prompts: torch.Tensor, split: ScoreSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        preds = self.predict(prompts, split, batch_size, precision)
        corr = pearson if self.score_name == "pearson" else spearman
        gold = split.labels.numpy()
        return [100.0 * corr(preds[k].numpy(), gold) for k in range(preds.shape[0])]
