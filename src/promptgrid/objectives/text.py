"""Span QA and NER as text to text on causal LM and seq2seq backbones: teacher-forced loss, greedy
decoding, SQuAD / entity F1.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from promptgrid.config import TaskConfig
from promptgrid.engine import scoring, training
from promptgrid.engine.training import KDSettings
from promptgrid.models.backbones import Backbone
from promptgrid.models.generation import teacher_forced
from promptgrid.models.precision import precision_scope
from promptgrid.objectives import TEXT_BACKBONES, ObjectiveError


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
    """Span QA and NER as text to text on causal_lm / seq2seq backbones (:mod:`promptgrid.models.generation`).

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
        from promptgrid.objectives.text_scores import TEXT_SCORES

        if task_cfg.score not in TEXT_SCORES:
            raise ObjectiveError(f"unknown text-to-text score {task_cfg.score!r}; choose one of {list(TEXT_SCORES)}")
        self.backbone, self.score_name, self.max_new_tokens = backbone, task_cfg.score, task_cfg.max_new_tokens

    def encode(self, frame: pd.DataFrame) -> TextSplit:
        texts = [str(t) for t in frame["text"]]
        targets = [[str(x) for x in t] for t in frame["targets"]]
        return TextSplit(self.backbone.input_ids(texts), texts, targets)

    def forward(self, prompts: torch.Tensor, split: TextSplit, idx):
        loss, logits, mask = teacher_forced(self.backbone, prompts, [split.texts[i] for i in idx],
                                            [split.targets[i][0] for i in idx], self.max_new_tokens)
        return loss, (logits, mask)

    def kd(self, student_out, teacher_out, panda_cfg: KDSettings) -> torch.Tensor:
        (s, mask), (t, _) = student_out, teacher_out
        return training.masked_kd_loss(s, t, mask, panda_cfg)

    def predict(self, prompts: torch.Tensor, split: TextSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        """Greedy generations of every prompt on every example: K lists of N strings.

        As in :func:`promptgrid.engine.scoring.predict_bank`, examples go by length and each batch holds
        all K prompts for a chunk of examples.
        """
        from promptgrid.models.generation import generate

        K, N = prompts.shape[0], len(split)
        out = [[""] * N for _ in range(K)]
        for idx, prompt_index in scoring.bank_chunks([len(ids) for ids in split.ids], K, batch_size):
            texts = [split.texts[i] for i in idx] * K
            with precision_scope(precision, self.backbone.device):
                texts_out = generate(self.backbone, prompts[prompt_index], texts, self.max_new_tokens)
            for j, text in enumerate(texts_out):
                out[j // len(idx)][idx[j % len(idx)]] = text
        return out

    def score(self, prompts: torch.Tensor, split: TextSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        from promptgrid.objectives.text_scores import text2text_score

        return [text2text_score(self.score_name, preds, split.targets)
                for preds in self.predict(prompts, split, batch_size, precision)]
