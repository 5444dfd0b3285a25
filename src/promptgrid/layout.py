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


TABLES = ("transfer", "similarity", "curves", "correlation", "retrieval", "metric_comparison", "summary")


def table(name: str) -> str:
    return f"tables/{name}.parquet"


def figure(name: str, ext: str) -> str:
    return f"figures/{name}.{ext}"


def log(name: str) -> str:
    return f"logs/{name}.log"
