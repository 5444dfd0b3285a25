"""jobs.per_backbone: one job trains every task (and scores every target) after loading the model once.
It must give the same prompts and scores, bit for bit, as one fresh process per task."""
import subprocess

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from promptgrid.pipeline.plugins import load_config_with_plugins
from promptgrid.storage import layout


def _study(repo, tmp_path, name, per_backbone):
    raw = yaml.safe_load((repo / "tests/studies/tiny.yaml").read_text())
    raw.update(study=name, results_dir=str(tmp_path / "results"), sources=["hotels", "intent"],
               targets=["medicine"], jobs={"per_backbone": per_backbone})
    raw["training"]["steps"] = 4
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, load_config_with_plugins(path)


def test_one_job_per_backbone_equals_one_process_per_task(repo, venv_env, tmp_path):
    from promptgrid.cli import main
    from promptgrid.models import loading

    grouped, cfg = _study(repo, tmp_path, "grouped", True)
    single, _ = _study(repo, tmp_path, "single", False)
    tasks = cfg.trained_tasks
    for task in tasks:  # data only; both studies read the same splits
        assert main(["prepare", "--config", str(grouped), "--task", task]) == 0
        assert main(["prepare", "--config", str(single), "--task", task]) == 0

    # grouped: one call per verb, as the per-backbone rules run them
    loading._load_cached.cache_clear()  # a job starts without a loaded model
    assert main(["train", "--config", str(grouped), "--backbone", "minilm", "--task", *tasks]) == 0
    assert main(["transfer", "--config", str(grouped), "--backbone", "minilm", "--method", "zeroshot",
                 "--target", *cfg.targets]) == 0
    assert main(["model-similarity", "--config", str(grouped), "--backbone", "minilm", "--metric", "panda_sim",
                 "--target", *cfg.targets]) == 0

    # one fresh process per task / target, as the per-task rules run them
    def job(*args):
        out = subprocess.run(["promptgrid", args[0], "--config", str(single), *args[1:]], env=venv_env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]

    for task in tasks:
        job("train", "--backbone", "minilm", "--task", task)
    for target in cfg.targets:
        job("transfer", "--backbone", "minilm", "--method", "zeroshot", "--target", target)
        job("model-similarity", "--backbone", "minilm", "--metric", "panda_sim", "--target", target)

    a, b = tmp_path / "results/grouped", tmp_path / "results/single"
    for task in tasks:
        for seed in cfg.seeds:
            for suffix in ("", ".early"):
                rel = f"prompts/minilm/task/{task}/seed{seed}{suffix}.safetensors"
                pa, pb = load_file(a / rel)["prompt"], load_file(b / rel)["prompt"]
                assert pa.abs().sum() > 0
                assert pa.equal(pb), rel
        ra, rb = (pd.read_parquet(d / f"parts/minilm/train/{task}.runs.parquet") for d in (a, b))
        pd.testing.assert_frame_equal(ra, rb)
        assert ra["score"].between(0, 100).all() and len(ra) == len(cfg.seeds)
    for rel in (layout.method_runs("minilm", "zeroshot", "medicine"),
                layout.model_similarity("minilm", "panda_sim", "medicine")):
        da, db = pd.read_parquet(a / rel), pd.read_parquet(b / rel)
        assert len(da) > 0
        pd.testing.assert_frame_equal(da, db)


@pytest.mark.parametrize("per_backbone", [True, False])
def test_dry_run_switches_rules_with_jobs_per_backbone(repo, venv_env, tmp_path, per_backbone):
    study, _ = _study(repo, tmp_path, "dry", per_backbone)
    out = subprocess.run(["snakemake", "-n", "--quiet", "rules", "--configfile", str(study)],
                         cwd=repo, env=venv_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    grouped_rules = ("train_backbone", "evaluate_backbone", "model_similarity_backbone")
    per_task_rules = ("train_prompt", "evaluate", "model_similarity_target")
    for rule in grouped_rules:
        assert (f"\n{rule} " in text) == per_backbone, rule
    for rule in per_task_rules:
        assert (f"\n{rule} " in text) != per_backbone, rule
