"""Where every file of a study lives, relative to ``results/<study>/``: the one owner of every path.

The Snakemake rules (``workflow/rules/*.smk``) and the ``promptgrid`` verbs both take their paths from
here, so the two can never disagree; a rule passes Snakemake wildcards (``"{backbone}"``) where a verb
passes names. Paths that depend on what a study runs (similarity parts, figure files) read the
registries (:mod:`promptgrid.registry`).
"""
from __future__ import annotations

from promptgrid.registry import FIGURES, SIMILARITIES

SPLITS = ("train", "dev", "test")
TABLES = ("transfer", "gains", "similarity", "curves", "correlation", "retrieval", "metric_comparison", "summary",
          "findings")
#: tables the correlate job also writes as CSV (to download) and as an HTML page (shown in the HTML report)
CSV_TABLES = ("findings", "correlation", "retrieval", "summary")


# ---------------------------------------------------------------- data and prompts
def source_stamp(source: str) -> str:
    """Which pinned file of a data source the study used (the fetch job's output; the file is in the cache)."""
    return f"sources/{source}.json"


def data(task: str, split: str) -> str:
    return f"data/{task}/{split}.parquet"


def task_prompt(backbone: str, task: str, seed, early: bool = False) -> str:
    return f"prompts/{backbone}/task/{task}/seed{seed}{'.early' if early else ''}.safetensors"


def transfer_prompt(backbone: str, method: str, target: str, source: str, seed) -> str:
    return f"prompts/{backbone}/{method}/{target}/{source}/seed{seed}.safetensors"


def prompt_cache(name: str, backbone: str, task: str, seed) -> str:
    """Something computed once per trained prompt and reused (e.g. ON's ``on_mask``)."""
    return f"cache/{name}/{backbone}/{task}/seed{seed}.safetensors"


def checkpoint(kind: str, backbone: str, task: str) -> str:
    return f"checkpoints/{backbone}/{kind}/{task}.pt"


def peft_bank(backbone: str) -> str:
    return f"peft/{backbone}"


# ---------------------------------------------------------------- per-job parts
def train_runs(backbone: str, task: str) -> str:
    return f"parts/{backbone}/train/{task}.runs.parquet"


def train_curves(backbone: str, task: str) -> str:
    return f"parts/{backbone}/train/{task}.curves.parquet"


def method_runs(backbone: str, method: str, target: str) -> str:
    """Runs of a transfer method into a target (zeroshot too: its scores)."""
    return f"parts/{backbone}/{method}/{target}.runs.parquet"


def method_curves(backbone: str, method: str, target: str) -> str:
    return f"parts/{backbone}/{method}/{target}.curves.parquet"


def prompt_similarity(backbone: str) -> str:
    """Every prompt-only similarity of a backbone, final and early prompts: one job, one part."""
    return f"parts/{backbone}/similarity/prompt.parquet"


def model_similarity(backbone: str, metric: str, target: str = None) -> str:
    """A model-based similarity's part: one per backbone, or one per target (``target`` given) for a metric
    that reads the target's inputs (``SimilaritySpec.per_target``)."""
    if target is not None:
        return f"parts/{backbone}/similarity/{metric}/{target}.parquet"
    return f"parts/{backbone}/similarity/{metric}.parquet"


def similarity_part(backbone: str, metric: str, target: str) -> str:
    """The part that holds ``metric``'s value for pairs into ``target``."""
    spec = SIMILARITIES.require(metric)
    if spec.scope == "prompt":
        return prompt_similarity(backbone)
    return model_similarity(backbone, metric, target if spec.per_target else None)


def similarity_parts(cfg, backbone: str) -> list:
    """Every similarity part of a backbone the study's ``metrics.names`` ask for."""
    names = list(cfg.metrics.names)
    parts = [prompt_similarity(backbone)] if any(SIMILARITIES[m].scope == "prompt" for m in names) else []
    for m in names:
        if SIMILARITIES[m].scope == "model":
            targets = cfg.targets if SIMILARITIES[m].per_target else [None]
            parts += [model_similarity(backbone, m, t) for t in targets]
    return parts


# ---------------------------------------------------------------- tables, figures, report, logs
def table(name: str, ext: str = "parquet") -> str:
    return f"tables/{name}.{ext}"


def figure_stem(backbone: str, kind: str, variant=None) -> str:
    """A figure without its extension (its job writes ``.png`` and ``.pdf``)."""
    return f"figures/{backbone}/{kind}{'' if variant is None else '_' + str(variant)}"


def figure_file(backbone: str, kind: str, variant, ext: str) -> str:
    return f"{figure_stem(backbone, kind, variant)}.{ext}"


def figure_files(cfg, backbone: str, kind: str, ext: str) -> list:
    return [figure_file(backbone, kind, v, ext) for v in FIGURES.require(kind).variants(cfg)]


def caption(kind: str, variant=None) -> str:
    """The report caption of one figure variant (written at DAG build from the figure kind's text)."""
    return f"report/captions/{kind}{'' if variant is None else '_' + str(variant)}.rst"


def log(*parts: str) -> str:
    """A job's log: ``log("train", "{backbone}")`` -> logs/train/{backbone}.log."""
    return "logs/" + "/".join(parts) + ".log"


def benchmark(rule: str, *parts: str) -> str:
    """A model job's Snakemake benchmark (wall seconds, max RSS in MB, CPU time; one row per run), per rule as the
    profiles' set-resources are: ``benchmark("train_prompt", "{backbone}", "{task}")`` ->
    benchmarks/train_prompt/{backbone}/{task}.tsv. Not an output: no table or hash reads it."""
    return "benchmarks/" + "/".join((rule, *parts)) + ".tsv"


# ---------------------------------------------------------------- cross-model transfer (Su et al. projectors)
#: one job per (projector, fit) of ``cross_model``: its parts, the projector, the projected prompts; ``collect``
#: gathers the parts into tables/cross_model.parquet, the figure kind ``cross_model`` draws it
CROSS_TABLE = "cross_model"
#: how a projected prompt is used on backbone B: as it is (zeroshot), or as the initial prompt of a run (init)
CROSS_MODES = ("zeroshot", "init")


def cross_pair(cfg) -> str:
    return f"{cfg.cross_model.source_backbone}_to_{cfg.cross_model.target_backbone}"


def cross_part(cfg, projector: str, fit: str) -> str:
    return f"parts/crossmodel/{cross_pair(cfg)}/{projector}_{fit}.parquet"


def cross_curves(cfg, projector: str, fit: str) -> str:
    return f"parts/crossmodel/{cross_pair(cfg)}/{projector}_{fit}.curves.parquet"


def cross_parts(cfg) -> list:
    """The result part of every (projector, fit) job of the study's ``cross_model`` (none without one)."""
    cm = cfg.cross_model
    return [] if cm is None else [cross_part(cfg, p, f) for p in cm.projectors for f in cm.fits]


def projector_file(cfg, projector: str, fit: str) -> str:
    return f"projectors/{cross_pair(cfg)}/{projector}_{fit}.safetensors"


def projected_prompt(cfg, projector: str, fit: str, mode: str, task: str, seed) -> str:
    """mode zeroshot: g(P_a) itself; mode init: the prompt tuned on B from g(P_a)."""
    b = cfg.cross_model.target_backbone
    return f"prompts/{b}/crossmodel/{cross_pair(cfg)}/{projector}_{fit}/{mode}/{task}/seed{seed}.safetensors"


def cross_job_outputs(cfg, projector: str, fit: str) -> list:
    """Every file one cross-model job writes."""
    return ([cross_part(cfg, projector, fit), cross_curves(cfg, projector, fit), projector_file(cfg, projector, fit)]
            + [projected_prompt(cfg, projector, fit, m, t, s) for m in CROSS_MODES
               for t in cfg.cross_model.held_out for s in cfg.seeds])


# ---------------------------------------------------------------- devices
def gpu_locks() -> str:
    """The folder of the workstation GPU picker's lock files, one per GPU (:mod:`promptgrid.models.devices`)."""
    return ".gpu-locks"
