"""Where every output of a study lives, relative to ``results/<study>/``.

The Snakemake rules and the ``promptgrid`` verbs both take their paths from here, so the two can
never disagree.
"""
from __future__ import annotations

SPLITS = ("train", "dev", "test")
TRAINED_METHODS = ("vanilla", "panda", "spot_topk")


def data(task: str, split: str) -> str:
    return f"data/{task}/{split}.parquet"


def task_prompt(backbone: str, task: str, seed, early: bool = False) -> str:
    return f"prompts/{backbone}/task/{task}/seed{seed}{'.early' if early else ''}.safetensors"


def transfer_prompt(backbone: str, method: str, target: str, source: str, seed) -> str:
    return f"prompts/{backbone}/{method}/{target}/{source}/seed{seed}.safetensors"


def train_runs(backbone: str, task: str) -> str:
    return f"parts/{backbone}/train/{task}.runs.parquet"


def train_curves(backbone: str, task: str) -> str:
    return f"parts/{backbone}/train/{task}.curves.parquet"


def zeroshot_part(backbone: str, target: str) -> str:
    return f"parts/{backbone}/zeroshot/{target}.parquet"


def method_runs(backbone: str, method: str, target: str) -> str:
    return f"parts/{backbone}/{method}/{target}.runs.parquet"


def method_curves(backbone: str, method: str, target: str) -> str:
    return f"parts/{backbone}/{method}/{target}.curves.parquet"


def prompt_similarity(backbone: str) -> str:
    return f"parts/{backbone}/similarity/prompt.parquet"


def on_mask(backbone: str, task: str, seed, early: bool = False) -> str:
    return f"masks/{backbone}/{task}/seed{seed}{'.early' if early else ''}.safetensors"


def on_similarity(backbone: str) -> str:
    return f"parts/{backbone}/similarity/on.parquet"


def panda_similarity(backbone: str, target: str) -> str:
    return f"parts/{backbone}/similarity/panda/{target}.parquet"


def checkpoint(kind: str, backbone: str, task: str) -> str:
    return f"checkpoints/{backbone}/{kind}/{task}.pt"


TABLES = ("transfer", "gains", "similarity", "curves", "correlation", "retrieval", "metric_comparison", "summary")


def table(name: str) -> str:
    return f"tables/{name}.parquet"


def figure(name: str, ext: str) -> str:
    return f"figures/{name}.{ext}"


def log(name: str) -> str:
    return f"logs/{name}.log"


FIGURE_KINDS = ("gain_heatmap", "relative_performance", "similarity_heatmap", "metric_scatter", "correlation_bars",
                "topk_curves", "learning_curves", "method_bars")
# spot_topk mixes several sources, so it has no per-source rows to correlate with a metric
METHODS_WITH_PER_SOURCE_ROWS = ("zeroshot", "vanilla", "panda")


def figure_variants(cfg, kind: str) -> list:
    """The variants a figure job draws (None: a single unsuffixed figure). Rules and jobs share this list."""
    methods = list(cfg.transfer.methods)
    per_source = [m for m in methods if m in METHODS_WITH_PER_SOURCE_ROWS]
    prompt_metrics = [m for m in cfg.metrics.names if m not in ("on", "panda")]
    return {
        "gain_heatmap": methods,
        "relative_performance": [None] if "zeroshot" in methods else [],
        "similarity_heatmap": list(cfg.metrics.names) + [f"early_{m}" for m in prompt_metrics],
        "metric_scatter": [f"{m}_{metric}" for m in per_source for metric in cfg.metrics.names],
        "correlation_bars": per_source,
        "topk_curves": per_source,
        "learning_curves": list(cfg.targets),
        "method_bars": [None],
    }[kind]


def figure_files(cfg, backbone: str, kind: str, ext: str) -> list:
    return [f"figures/{backbone}/{kind}{'' if v is None else '_' + v}.{ext}" for v in figure_variants(cfg, kind)]
