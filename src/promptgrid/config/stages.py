"""Which config sections feed each stage's hash: one table, read by the rules and by the verbs.

A rule passes the hash as a param (``params: cfg_hash=...``), so Snakemake reruns a job exactly when a
section it reads changes; the verb records the same hash in its outputs' provenance and keys its
training checkpoints by it. Upstream changes need no entry here: they reach a job through its input
files. ``prompt.kind`` is in every hash a prompt reaches (a metric's definition depends on it; hashed only when
``deep``, so earlier studies keep their hashes). ``training.attention`` is in no hash (a speed choice); the configured ``training.precision`` is
in the hash of every stage that runs a model (through ``training`` or explicitly).
"""
from __future__ import annotations

from typing import Optional

from promptgrid.registry import METHODS, SIMILARITIES

#: stage -> (config sections it reads, whether its hash includes the task's config, the backbone's config)
STAGES = {
    "fetch": ((), False, False),  # what it fetches is pinned in the source's own file, not in the config
    "prepare": ((), True, False),
    "train": (("prompt", "training", "seeds"), True, True),
    "transfer": (("prompt", "training", "seeds", "sources"), True, True),  # + the method's own section
    "prompt_similarity": (("seeds", "sources", "targets", "metrics.names", "prompt.kind"), False, True),
    "model_similarity": (("seeds", "sources", "targets", "training.precision", "prompt.kind"), False, True),  # + the metric's keys
    "collect": (("seeds", "sources", "targets", "transfer.methods", "metrics.names", "training.early_step",
                 "analysis.early_step"), False, False),
    "correlate": (("analysis", "seeds", "sources", "targets", "transfer.methods", "metrics.names"), False, False),
    "cross_model": (("prompt", "training", "seeds", "cross_model"), False, False),  # + both backbones and tasks
}


def stage_sections(cfg, stage: str, method: Optional[str] = None, metric: Optional[str] = None) -> list:
    """The config keys (``section`` or ``section.key``) whose values decide ``stage``'s outputs."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    sections = list(STAGES[stage][0])
    if stage == "transfer":
        if METHODS.require(method).config is not None:
            sections.append(f"transfer.{method}")
    elif stage == "model_similarity":
        sections += list(SIMILARITIES.require(metric).config_sections)
    elif stage == "cross_model":
        cm = cfg.cross_model
        sections += [f"backbones.{cm.source_backbone}", f"backbones.{cm.target_backbone}"]
        sections += [f"tasks.{t}" for t in dict.fromkeys(list(cfg.trained_tasks) + list(cm.held_out))]
    return sections


def stage_hash(cfg, stage: str, *, task: Optional[str] = None, backbone: Optional[str] = None,
               method: Optional[str] = None, metric: Optional[str] = None) -> str:
    """The hash of the config parts ``stage`` reads, for one task (target) and backbone where it has them."""
    _, per_task, per_backbone = STAGES[stage]
    if per_task and task is None:
        raise ValueError(f"stage {stage!r} reads a task's config: give task=")
    if per_backbone and backbone is None:
        raise ValueError(f"stage {stage!r} reads a backbone's config: give backbone=")
    return cfg.section_hash(*stage_sections(cfg, stage, method, metric), task=task if per_task else None,
                            backbone=backbone if per_backbone else None)
