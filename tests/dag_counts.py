"""What a dry run schedules: the 'Job stats' table read back, and the grid formula a study must match."""
import re

from promptgrid.config import StudyConfig
from promptgrid.registry import FIGURES, METHODS, SIMILARITIES, SOURCES


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def expected_counts(cfg: StudyConfig) -> dict:
    """The grid formula: what one study must schedule from scratch."""
    B, T = len(cfg.backbones), len(cfg.targets)
    methods = cfg.transfer.methods
    trained = [m for m in methods if METHODS[m].trains]
    evaluating = [m for m in methods if not METHODS[m].trains]
    model = [m for m in cfg.metrics.names if SIMILARITIES[m].scope == "model"]
    per_target = [m for m in model if SIMILARITIES[m].per_target]
    # jobs.per_backbone: one train / evaluate / per-target-similarity job per backbone instead of per task
    grouped = cfg.jobs.per_backbone
    counts = {"prepare_task": len(cfg.trained_tasks)}
    fetched = {cfg.tasks[t].source for t in cfg.trained_tasks if SOURCES[cfg.tasks[t].source].artifact is not None}
    if fetched:  # one fetch job per data source with a pinned file
        counts["fetch_source"] = len(fetched)
    if grouped:
        counts["train_backbone"] = B
    else:
        counts["train_prompt"] = B * len(cfg.trained_tasks)
    if evaluating:
        counts.update({"evaluate_backbone": B * len(evaluating)} if grouped else {"evaluate": B * T * len(evaluating)})
    if trained:
        counts["transfer"] = B * T * len(trained)
    if len(model) < len(cfg.metrics.names):
        counts["prompt_similarity"] = B
    if len(model) > len(per_target):
        counts["model_similarity"] = B * (len(model) - len(per_target))
    if per_target:
        counts.update({"model_similarity_backbone": B * len(per_target)} if grouped
                      else {"model_similarity_target": B * T * len(per_target)})
    counts.update(collect=1, correlate=1, all=1)
    if cfg.cross_model is not None:
        xm = cfg.cross_model
        counts.update(cross_model=len(xm.projectors) * len(xm.fits))  # collect gathers them; fig_cross_model below
    n_peft = sum(bb.kind != "masked_lm" for bb in cfg.backbones.values())
    if n_peft:
        counts["export_peft"] = n_peft
    for spec in FIGURES.ordered():
        if spec.variants(cfg):  # one job per backbone it is drawn for (cross_model: backbone B only)
            counts[f"fig_{spec.name}"] = B if spec.backbones is None else len(spec.drawn_for(cfg))
    return counts
