"""PANDA: a fresh target prompt distilled from the vanilla-transferred prompt, weighted by the PANDA metric.

Two presets (``transfer.panda.preset``): ``metric`` (the default) sets the KD weight beta of each pair from the
PANDA metric, as the paper describes; ``authors`` runs PANDA as WHU-ZQH/PANDA's released code does: beta fixed
at 0.1, the loss ``task + 0.1 * beta * MSE(student logits, teacher logits) / B`` and learning rate 7e-3 (the
vanilla transfer and the baselines keep ``training.lr``; the authors' scripts use 1e-2 there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from promptgrid.config.fields import ConfigError, Section, setting
from promptgrid.config.sections import SIMILARITY_METRICS
from promptgrid.registry import METHODS, MethodSpec, RunPlan

PRESETS = ("metric", "authors")
#: what ``preset: authors`` sets where the study leaves the key unset: WHU-ZQH/PANDA, p-tuning-v2/arguments.py
#: (``beta`` default 0.1, never overridden by the run scripts) and run_cb_bert-panda.sh (``lr=7e-3``)
AUTHORS_BETA, AUTHORS_LR = 0.1, 7e-3
#: what ``preset: authors`` requires: the authors' trainer_base.py has only this loss and this weighting
AUTHORS_FIXED = {"kd_loss": "mse", "kd_weighting": "authors"}


@dataclass
class PandaConfig(Section):
    """``transfer.panda``."""

    #: keys added after studies ran: hashed only when they differ from these values, so that the transfer hashes
    #: of earlier studies stand (read by ``StudyConfig.section_hash``)
    HASH_NEUTRAL: ClassVar[dict] = {"preset": "metric", "lr": None}

    kd_loss: str = setting("mse", choices=("mse", "kl"), what="KD loss", help="mse (authors' code) | kl")
    kd_temperature: float = setting(2.0, gt=0, help="KL temperature")
    beta: Optional[float] = setting(None, ge=0, help="fixed KD weight (ablation); None: from the metric "
                                                     "(preset authors: 0.1)")
    beta_metric: str = setting("panda_sim", choices=SIMILARITY_METRICS,
                               help="similarity metric giving T(s, t) for beta")
    beta_scale: float = setting(1.0, ge=0, help="beta = beta_scale * clip(T, 0, 1)")
    kd_weighting: str = setting("authors", choices=("authors", "per_example"), help=(
        "authors: loss = task loss + 0.1 * beta * KD / batch_size, as WHU-ZQH/PANDA's trainer_base.py weights it (KD "
        "= the MSE of the label logits averaged over the batch) | per_example: task loss + beta * KD (promptgrid's "
        "earlier weighting, 80-160x stronger at batch 8-16)"))
    preset: str = setting("metric", choices=PRESETS, what="PANDA preset", help=(
        "metric: beta per pair from beta_metric (the paper's idea; the keys above as set) | authors: as "
        "WHU-ZQH/PANDA's code runs it: beta 0.1 and lr 7e-3 unless set here, kd_loss mse, kd_weighting authors "
        "(run the study with prompt.kind deep and training.lr 0.01 for the authors' P-tuning v2 setting)"))
    lr: Optional[float] = setting(None, gt=0, help="learning rate of PANDA's runs; None: training.lr (preset "
                                                   "authors: 7e-3)")

    def check(self):
        if self.preset != "authors":
            return
        for key, want in AUTHORS_FIXED.items():
            if getattr(self, key) != want:
                raise ConfigError(key, f"preset 'authors' distils with {key} {want!r}, the only one WHU-ZQH/PANDA's "
                                       f"code has; remove {key} or use preset 'metric'")
        # resolved here, so that the config the jobs record and hash says what ran
        if self.beta is None:
            self.beta = AUTHORS_BETA
        if self.lr is None:
            self.lr = AUTHORS_LR


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


def kd_weight(beta: float, cfg: PandaConfig, batch_size: int) -> float:
    """The weight of the per-example KD loss in a run's loss (the engine averages per-example losses over
    the batch): beta, or 0.1 * beta / batch_size under the authors' weighting."""
    return beta * 0.1 / batch_size if cfg.kd_weighting == "authors" else beta


def panda_runs(teachers: dict, fresh_inits: dict, similarities: dict, cfg: PandaConfig, batch_size: int) -> list:
    """Student = fresh prompt (the baseline's init for that seed); teacher = the vanilla-transfer prompt.

    teachers: {(source, seed): (L, d)}; fresh_inits: {seed: (L, d)}; similarities: {source: T(s, t)}.
    Each run's ``beta`` is its KD weight (:func:`kd_weight` of the pair's beta).
    """
    from promptgrid.engine.training import RunSpec

    return [RunSpec(f"{src}/seed{seed}", seed, fresh_inits[seed].clone(), teacher=teacher.clone(),
                    beta=kd_weight(panda_beta(similarities.get(src), cfg), cfg, batch_size))
            for (src, seed), teacher in teachers.items()]


def plan(ctx, backbone: str, target: str) -> RunPlan:
    """One run per (source, seed): the target's fresh initial prompt, taught by vanilla's best prompt of that
    (source, seed) with weight beta from the source's similarity to the target (or fixed), at ``cfg.lr``."""
    cfg = ctx.cfg.transfer.panda
    teachers = {(s, seed): ctx.transfer_prompt(backbone, "vanilla", target, s, seed)
                for s in ctx.cfg.sources for seed in ctx.cfg.seeds}
    sims = ctx.similarities(backbone, target, cfg.beta_metric) if cfg.beta is None else {}
    inits = {seed: ctx.fresh_init(backbone, target, seed) for seed in ctx.cfg.seeds}
    runs = panda_runs(teachers, inits, sims, cfg, ctx.cfg.training.batch_size)
    betas = [panda_beta(sims.get(src), cfg) for src, _ in teachers]
    return RunPlan(runs, list(teachers), {"beta": betas, "kd_weight": [r.beta for r in runs]}, kd=cfg, lr=cfg.lr)


def _reads_similarity(cfg) -> list:
    return [cfg.transfer.panda.beta_metric] if cfg.transfer.panda.beta is None else []


METHODS.add(MethodSpec(
    name="panda", order=4, colour=(0.8353, 0.3686, 0.0), config=PandaConfig, plan=plan,
    reads_similarity=_reads_similarity, reads_methods=("vanilla",), compared_with="vanilla",
    summary="a fresh target prompt distilled from the vanilla-transferred prompt, weighted by predicted "
            "transferability",
    paper="PANDA (Zhong et al. 2022): KD from the vanilla-transfer teacher, weighted 0.1 * beta * MSE / batch as in "
          "the authors' code; beta per pair from the PANDA metric (preset metric) or fixed at 0.1 with lr 7e-3 as "
          "the authors ran it (preset authors)"))
