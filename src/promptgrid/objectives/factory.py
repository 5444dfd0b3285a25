"""What prompt tuning optimises and how a prompt is scored, per task kind: one ``Objective`` each.

The training engine (:func:`promptgrid.engine.training.train_runs`) and the jobs talk to a task only
through this duck-typed interface, so every kind runs through the same prompt-bank grid:

- ``score_name: str`` -- the task's score (``tasks.<name>.score``: accuracy, macro_f1, ...), 0-100;
- ``encode(frame) -> split`` -- a prepared split (:func:`promptgrid.data.splits.load_split`) made ready
  for the backbone. Every split has ``__len__`` and ``ids`` (per example, the backbone's model-input
  token ids, list[list[int]]), which the PANDA metric feeds to the model;
- ``forward(prompts (B, L, d), split, idx) -> (loss (B,), kd_outputs)`` -- the per-example task loss
  of examples ``split[idx]`` (row b uses ``prompts[b]``), differentiable in the prompts, and what
  PANDA distils: label logits (B, C) for classification, the logit of the high over the low word
  (B,) for regression, ``(token logits (B, T, V), target mask (B, T))`` for text-to-text;
- ``kd(student_out, teacher_out, panda_cfg) -> (B,)`` -- the per-example distillation loss;
- ``score(prompts (K, L, d), split, batch_size, precision) -> list of K floats`` -- the task's score
  of each prompt of a bank on the whole split.

``make_objective(backbone, task_cfg)`` picks the objective:

==============  ===================  ===================================================
task kind       backbone kinds       objective
==============  ===================  ===================================================
classification  all                  :class:`ClassificationObjective` (rank classification
                                     over the label texts, :mod:`promptgrid.models.backbones`)
regression      all                  :class:`RegressionObjective` (rank classification over a
                                     low and a high word)
span_qa, ner    causal_lm, seq2seq   :class:`TextObjective` (teacher-forced loss, greedy
                                     generation, :mod:`promptgrid.models.generation`)
span_qa, ner    encoder, masked_lm   :class:`~promptgrid.objectives.tagging.TaggingObjective`
==============  ===================  ===================================================
"""

from __future__ import annotations

from typing import Optional

from promptgrid.config import BACKBONE_KINDS, TASK_KINDS, TaskConfig
from promptgrid.models.backbones import Backbone, TaskHead
from promptgrid.objectives import ObjectiveError
from promptgrid.objectives.classification import ClassificationObjective
from promptgrid.objectives.regression import RegressionObjective
from promptgrid.objectives.tagging import TaggingObjective
from promptgrid.objectives.text import TextObjective
from promptgrid.protocols import Objective

_TEXT_TO_TEXT = {"causal_lm": TextObjective, "seq2seq": TextObjective, "encoder": TaggingObjective,
                 "masked_lm": TaggingObjective}
_PATHS = {"classification": dict.fromkeys(BACKBONE_KINDS, ClassificationObjective),
          "regression": dict.fromkeys(BACKBONE_KINDS, RegressionObjective),
          "span_qa": _TEXT_TO_TEXT, "ner": _TEXT_TO_TEXT}
#: task kind -> backbone kind -> the objective that runs it (the table above); a missing pair has no path. Keyed by
#: the one list of task kinds (``promptgrid.config.TASK_KINDS``): a kind added there without an entry here fails
#: on import, naming it
OBJECTIVES = {kind: dict(_PATHS[kind]) for kind in TASK_KINDS}


def unsupported(backbone_kind: str, task_kind: str) -> Optional[str]:
    """Why ``task_kind`` cannot run on a ``backbone_kind`` backbone, or None if it can."""
    if backbone_kind in OBJECTIVES.get(task_kind, {}):
        return None
    return f"no {task_kind} objective is registered for {backbone_kind} backbones"


def make_objective(backbone: Backbone, task_cfg: TaskConfig, task: Optional[str] = None,
                   head: Optional[TaskHead] = None) -> Objective:
    """The objective of ``task_cfg``'s kind on ``backbone`` (see the module docstring). ``head``: an
    already computed label head for classification / regression (built from the label words if None)."""
    why = unsupported(backbone.kind, task_cfg.kind)
    if why:
        raise ObjectiveError(f"task {task or '?'!r} is a {task_cfg.kind} task and backbone '{backbone.name}' is a "
                             f"{backbone.kind} model: {why}")
    cls = OBJECTIVES[task_cfg.kind][backbone.kind]
    if cls is ClassificationObjective:
        if head is None:
            return ClassificationObjective.from_config(backbone, task_cfg)
        return ClassificationObjective(backbone, head, task_cfg.score)
    if cls is RegressionObjective:
        return RegressionObjective(backbone, task_cfg, head=head)
    return cls(backbone, task_cfg)
