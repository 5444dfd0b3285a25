"""The similarity verbs: every prompt-only metric of a backbone in one job, each model-based metric in its own.

Generic over the similarity registry (:data:`promptgrid.registry.SIMILARITIES`): prompt-only metrics
give all (source, target) prompt pairs at once through their ``matrix``, for the final and the early
prompts (SPoT's early task embeddings, written as ``early_<metric>``), deep prompts per key/value block
(:mod:`promptgrid.similarity.prompt_math`); model-based metrics compute
their own values through the study (``SimilaritySpec.compute``). Every value is averaged over all seed
pairs.
"""
from __future__ import annotations

import pandas as pd

from promptgrid.errors import InputError
from promptgrid.pipeline.context import Study
from promptgrid.registry import SIMILARITIES
from promptgrid.storage import layout
from promptgrid.storage.files import write_table

SIMILARITY_COLUMNS = ["backbone", "source", "target", "metric", "value", "std", "n_pairs"]


def _rows(backbone: str, values: dict) -> list:
    """values {(source, target, metric): SeedPairStat} -> table rows."""
    return [{"backbone": backbone, "source": s, "target": t, "metric": m, "value": st.mean, "std": st.std,
             "n_pairs": st.n} for (s, t, m), st in values.items()]


def prompt_similarity(study: Study, backbone: str) -> None:
    """Every configured prompt-only metric for every (source, target) pair, final and early prompts."""
    from promptgrid.similarity.prompt_math import prompt_blocks
    from promptgrid.similarity.seed_pairs import seed_pair_similarity

    cfg = study.cfg
    names = [m for m in cfg.metrics.names if SIMILARITIES[m].scope == "prompt"]
    # prompt-only metrics never run the model, so for input prompts the job skips loading it (per-job overhead);
    # deep prompts are compared per key/value block, and how many blocks there are is the backbone's geometry
    deep = cfg.prompt.kind == "deep"
    blocks = prompt_blocks(study.backbone(backbone), cfg.prompt.kind) if deep else 1
    values = {}
    for early in (False, True):
        prompts = {t: {seed: study.task_prompt(backbone, t, seed, early, load_model=deep) for seed in cfg.seeds}
                   for t in cfg.trained_tasks}
        widths = {(t, seed): p.shape[1] for t, by_seed in prompts.items() for seed, p in by_seed.items()}
        if len(set(widths.values())) > 1:
            raise InputError(f"prompts of backbone {backbone!r} differ in width: {widths}; were some trained on "
                             f"another backbone?")
        for metric in names:
            name = f"early_{metric}" if early else metric
            values.update({(s, t, name): seed_pair_similarity(prompts[s], prompts[t], metric, blocks)
                           for s in cfg.sources for t in cfg.targets})
    h = study.stage_hash("prompt_similarity", backbone=backbone)
    write_table(pd.DataFrame(_rows(backbone, values), columns=SIMILARITY_COLUMNS),
                study.path(layout.prompt_similarity(backbone)), study.meta(h, seed=cfg.seeds, backbone=backbone))
    print(f"[similarity] {backbone}: {len(values)} values ({len(names)} prompt metrics x 2 checkpoints)", flush=True)


def model_similarity(study: Study, backbone: str, metric: str, target: str = None) -> None:
    """One model-based metric of a backbone: every (source, target) pair, or every source into ``target``
    for a metric that reads the target's inputs."""
    spec = SIMILARITIES.require(metric)
    if spec.scope != "model":
        raise InputError(f"{metric!r} is a prompt-only metric: the prompt-similarity job computes it")
    if spec.per_target and target is None:
        raise InputError(f"{metric!r} is computed per target: give the target")
    values = spec.compute(study, backbone, target) if spec.per_target else spec.compute(study, backbone)
    h = study.stage_hash("model_similarity", backbone=backbone, metric=metric)
    write_table(pd.DataFrame(_rows(backbone, values), columns=SIMILARITY_COLUMNS),
                study.path(layout.model_similarity(backbone, metric, target)),
                study.meta(h, seed=study.cfg.seeds, backbone=backbone))
    print(f"[similarity] {backbone}/{metric}{'/' + target if target else ''}: {len(values)} values", flush=True)
