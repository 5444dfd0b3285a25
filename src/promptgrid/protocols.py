"""The typed contracts between the layers, as ``Protocol``s a reader and a type checker can see.

Each names what one side hands the other and nothing more:

* :class:`MethodContext`: what a transfer method's ``plan`` / ``evaluate`` (``promptgrid.registry.MethodSpec``)
  may ask of the job that runs it (the pipeline's ``Study`` is the implementation);
* :class:`Objective`: what prompt tuning optimises and how a prompt is scored, per task kind
  (``promptgrid.objectives``: classification, regression, text-to-text, tagging);
* :class:`SourceReader`: a data source's parser (``SourceSpec.read``, one file per source in
  ``promptgrid.data.sources``);
* :class:`Predictor`: a frozen backbone that turns prompts and a batch into the logits and pooled states the
  objectives and the model-based similarities read (``promptgrid.models.backbones``, one class per kind).

This module sits in the bottom layer with the registries and imports nothing from promptgrid; torch and
pandas appear in annotations only. ``tests/structure/test_protocols.py`` checks that every implementation has every
member.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import torch


@runtime_checkable
class Objective(Protocol):
    """One task kind on one backbone. ``split`` is whatever ``encode`` returned (``len(split)`` examples, each with
    its model-input token ids in ``split.ids``)."""

    def encode(self, frame: pd.DataFrame) -> Any:
        """A prepared split (rows: id, input, target, ...) made ready for the backbone."""

    def forward(self, prompts: torch.Tensor, split: Any, idx: Sequence[int]) -> tuple:
        """prompts (B, L, d), row b for example ``split[idx[b]]`` -> (per-example task loss (B,), kd_outputs):
        the loss is differentiable in the prompts; kd_outputs is what PANDA distils (label logits (B, C) for
        classification, (B,) for regression, (token logits (B, T, V), target mask (B, T)) for text)."""

    def kd(self, student_out: Any, teacher_out: Any, panda_cfg: Any) -> torch.Tensor:
        """The per-example distillation loss (B,) between two ``forward`` outputs."""

    def score(self, prompts: torch.Tensor, split: Any, batch_size: int = 64, precision: str = "fp32") -> list:
        """prompts (K, L, d) -> the task's score (0-100) of each of the K prompts on the whole split."""


@runtime_checkable
class MethodContext(Protocol):
    """What a method's ``plan(ctx, backbone, target)`` or ``evaluate(ctx, backbone, target)`` may use. Prompts are
    (L, d) float tensors on the CPU, or (L, D) under ``prompt.kind: deep`` (:mod:`promptgrid.models.prefix`);
    ``source_prompts`` maps (source, seed) to one."""

    cfg: Any  # the study's typed config (promptgrid.config.StudyConfig)

    @property
    def precision(self) -> str:
        """The compute precision every forward pass of the job runs in (fp32, bf16, ...)."""

    def backbone(self, name: str) -> Predictor:
        """The loaded, frozen backbone of that name (loaded once per job)."""

    def objective(self, backbone: str, task: str) -> Objective:
        """The task's objective on that backbone."""

    def encoded(self, backbone: str, task: str, split: str, limit: Optional[int] = None) -> Any:
        """A prepared split (train / dev / test) of the task, encoded for the backbone."""

    def task_prompt(self, backbone: str, task: str, seed: int, early: bool = False) -> torch.Tensor:
        """The task's own trained prompt of that seed (its early checkpoint if ``early``), (L, d)."""

    def fresh_init(self, backbone: str, task: str, seed: int) -> torch.Tensor:
        """The prompt a run of that seed starts from when it starts from nothing, (L, d)."""

    def source_prompts(self, backbone: str, exclude: Iterable[str] = (), early: bool = False) -> dict:
        """{(source, seed): (L, d) prompt} of every source task of the study."""

    def transfer_prompt(self, backbone: str, method: str, target: str, source: str, seed: int) -> torch.Tensor:
        """The final prompt of another method's run (the methods a spec ``reads_methods``), (L, d)."""

    def similarities(self, backbone: str, target: str, metric: str) -> dict:
        """{source: value} of a similarity metric into ``target`` (the metrics a spec ``reads_similarity``)."""

    def prompt_cache(self, name: str, backbone: str, task: str, seed: int,
                     make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A derived prompt computed once per study and stored (``make()`` computes it the first time)."""


@runtime_checkable
class SourceReader(Protocol):
    """``SourceSpec.read``: the records of one task of a data source from its fetched file."""

    def __call__(self, task: Any, path: Optional[Path], cache_dir: Path) -> tuple:
        """(records, description): records a list of dicts with the source's ``fields`` (text, label, id by
        default), description a short string for provenance (which file, which member, which rows)."""


@runtime_checkable
class Predictor(Protocol):
    """A frozen backbone of one kind (encoder, masked LM, causal LM, seq2seq) with soft prompts in front of its
    input (L, d) or in every layer's attention (deep prompts, (L, D): the width says which). ``batch`` is what
    ``collate`` returns: token ids (B, T) and an attention mask (B, T)."""

    @property
    def embed_dim(self) -> int:
        """d, the width of an input prompt vector."""

    @property
    def prefix_geometry(self) -> Any:
        """Where a deep prompt's keys and values go: n_layers, n_heads, head_dim (promptgrid.models.prefix)."""

    def prompt_width(self, kind: str) -> int:
        """The width of a stored prompt of ``kind``: d (input) or D = n_layers * 2 * n_heads * head_dim (deep)."""

    @property
    def device(self) -> torch.device:
        """Where its weights are (prompts and batches are moved there)."""

    def input_ids(self, texts: Sequence[str]) -> list:
        """Model-input token ids per text (special tokens included), list[list[int]]."""

    def collate(self, id_lists: Sequence[Sequence[int]]) -> Any:
        """Pad token-id lists into one batch."""

    def task_head(self, label_texts: Sequence[str]) -> Any:
        """What scores the label texts (rank classification): built once per task."""

    def logits(self, prompts: torch.Tensor, batch: Any, head: Any) -> torch.Tensor:
        """prompts (B, L, d), a batch of B examples -> label logits (B, C)."""

    def pooled(self, prompts: torch.Tensor, batch: Any) -> torch.Tensor:
        """prompts (B, L, d), a batch -> one pooled hidden state per example (B, d)."""
