"""PANDA: a fresh target prompt distilled from the vanilla-transferred prompt, weighted by the PANDA metric."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from promptgrid.config.sections import ConfigError, check_similarity
from promptgrid.registry import METHODS, MethodSpec, RunPlan


@dataclass
class PandaConfig:
    """``transfer.panda``."""

    kd_loss: str = field(default="mse", metadata={"help": "mse (authors' code) | kl"})
    kd_temperature: float = field(default=2.0, metadata={"help": "KL temperature"})
    beta: Optional[float] = field(default=None, metadata={"help": "fixed KD weight (ablation); None: from the metric"})
    beta_metric: str = field(default="panda_sim", metadata={"help": "similarity metric giving T(s, t) for beta"})
    beta_scale: float = field(default=1.0, metadata={"help": "beta = beta_scale * clip(T, 0, 1)"})

    SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
        "kd_loss": {"enum": ["mse", "kl"]}, "kd_temperature": {"type": "number", "exclusiveMinimum": 0},
        "beta": {"type": ["number", "null"], "minimum": 0}, "beta_metric": {"$ref": "#/$defs/metric_name"},
        "beta_scale": {"type": "number", "minimum": 0}}}

    def __post_init__(self):
        if self.kd_loss not in ("mse", "kl"):
            raise ConfigError("kd_loss", f"unknown KD loss {self.kd_loss!r}; choose mse or kl")
        self.beta_metric = check_similarity(self.beta_metric, "beta_metric")


def panda_beta(similarity: Optional[float], cfg: PandaConfig) -> float:
    """KD weight for a pair. Fixed ``cfg.beta`` if set (ablation), else beta_scale * clip(T(s, t), 0, 1).

    The paper lets the predicted transferability control the KD weight but does not give the
    mapping; the authors' code fixes it. Clipping keeps a negative similarity from turning
    distillation into anti-distillation.
    """
    if cfg.beta is not None:
        return float(cfg.beta)
    if similarity is None or similarity != similarity:  # NaN
        return 0.0
    return float(cfg.beta_scale * min(max(similarity, 0.0), 1.0))


def panda_runs(teachers: dict, fresh_inits: dict, similarities: dict, cfg: PandaConfig) -> list:
    """Student = fresh prompt (the baseline's init for that seed); teacher = the vanilla-transfer prompt.

    teachers: {(source, seed): (L, d)}; fresh_inits: {seed: (L, d)}; similarities: {source: T(s, t)}.
    """
    from promptgrid.engine.training import RunSpec

    return [RunSpec(f"{src}/seed{seed}", seed, fresh_inits[seed].clone(), teacher=teacher.clone(),
                    beta=panda_beta(similarities.get(src), cfg))
            for (src, seed), teacher in teachers.items()]


def plan(ctx, backbone: str, target: str) -> RunPlan:
    """One run per (source, seed): the target's fresh initial prompt, taught by vanilla's best prompt of that
    (source, seed) with weight beta from the source's similarity to the target."""
    cfg = ctx.cfg.transfer.panda
    teachers = {(s, seed): ctx.transfer_prompt(backbone, "vanilla", target, s, seed)
                for s in ctx.cfg.sources for seed in ctx.cfg.seeds}
    sims = ctx.similarities(backbone, target, cfg.beta_metric) if cfg.beta is None else {}
    inits = {seed: ctx.fresh_init(backbone, target, seed) for seed in ctx.cfg.seeds}
    runs = panda_runs(teachers, inits, sims, cfg)
    return RunPlan(runs, list(teachers), {"beta": [r.beta for r in runs]}, kd=cfg)


def _reads_similarity(cfg) -> list:
    return [cfg.transfer.panda.beta_metric] if cfg.transfer.panda.beta is None else []


METHODS.add(MethodSpec(
    name="panda", order=4, colour=(0.8353, 0.3686, 0.0), config=PandaConfig, plan=plan,
    reads_similarity=_reads_similarity, reads_methods=("vanilla",),
    summary="a fresh target prompt distilled from the vanilla-transferred prompt, weighted by predicted "
            "transferability",
    paper="PANDA (Zhong et al. 2022): KD from the vanilla-transfer teacher, beta from the PANDA metric"))
