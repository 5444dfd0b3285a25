"""Classification: cross-entropy over the rank-classification logits of the label texts; accuracy or
macro-F1.
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from promptgrid.config import TaskConfig
from promptgrid.engine import scoring, training
from promptgrid.engine.training import KDSettings
from promptgrid.models.backbones import Backbone, TaskHead, to_device


# ====================================================================== classification
class ClassificationObjective:
    """Cross-entropy over the label texts' rank-classification logits; accuracy or macro-F1.

    Exactly the engine's historical path: ``encode`` is :func:`promptgrid.engine.scoring.encode_split`,
    ``score`` is :func:`promptgrid.engine.scoring.score_bank` and ``kd`` is
    :func:`promptgrid.engine.training.kd_loss`, so results are bit-identical to calling those directly.
    """

    def __init__(self, backbone: Backbone, head: TaskHead, score_name: str = "accuracy"):
        self.backbone, self.head, self.score_name = backbone, head, score_name

    @classmethod
    def from_config(cls, backbone: Backbone, task_cfg: TaskConfig) -> ClassificationObjective:
        return cls(backbone, backbone.task_head(task_cfg.label_texts), task_cfg.score)

    def encode(self, frame: pd.DataFrame) -> scoring.EncodedSplit:
        return scoring.encode_split(self.backbone, frame["text"], frame["label"])

    def forward(self, prompts: torch.Tensor, split, idx):
        batch = self.backbone.collate([split.ids[i] for i in idx])
        logits = self.backbone.logits(prompts, batch, self.head).float()
        return F.cross_entropy(logits, to_device(split.labels[idx], logits.device), reduction="none"), logits

    def kd(self, student_out, teacher_out, panda_cfg: KDSettings) -> torch.Tensor:
        return training.kd_loss(student_out, teacher_out, panda_cfg)

    def score(self, prompts: torch.Tensor, split, batch_size: int = 64, precision: str = "fp32") -> list:
        # looked up on the module at call time, so tools that wrap scoring.score_bank (bench/) see every call
        return scoring.score_bank(self.backbone, self.head, prompts, split, self.score_name, batch_size, precision)
