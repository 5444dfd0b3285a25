"""Do a study's targets learn? Per target: its own prompt's test score (the baseline every gain is measured
against, per seed and mean) against a constant majority-class prediction on the same test split, in the
task's score (macro-F1 for the default study's targets, whose majority class is over 60 %), and accuracy
beside it. "learns" = mean over seeds >= majority + 15 points (the deep-prompt issue's requirement; +10 before).

    python bench/learns.py [results/default]      # after the study ran; prints a markdown table
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from promptgrid.engine.scoring import task_score  # noqa: E402
from promptgrid.pipeline.plugins import load_builtins  # noqa: E402
from promptgrid.storage import layout  # noqa: E402

#: points over the majority baseline a target's own prompt must reach
MARGIN = 15


def learns_table(study_dir: Path) -> pd.DataFrame:
    load_builtins()
    from promptgrid.config import StudyConfig

    cfg = StudyConfig.from_dict(json.loads((study_dir / "config.json").read_text()))
    rows = []
    for backbone in cfg.backbones:
        for target in cfg.targets:
            task = cfg.tasks[target]
            test = pd.read_parquet(study_dir / layout.data(target, "test"))
            gold = torch.as_tensor(test["label"].to_numpy())
            majority = torch.full_like(gold, int(gold.bincount().argmax()))
            runs = pd.read_parquet(study_dir / layout.train_runs(backbone, target)).sort_values("seed")
            base = task_score(majority, gold, task.score, len(task.labels))
            rows.append({"backbone": backbone, "target": target, "source task": task.source_task,
                         "test n": len(test), "majority share": round(100 * float((gold == majority).float().mean()), 1),
                         "score": task.score, "majority baseline": round(base, 1),
                         "baseline per seed": " / ".join(f"{v:.1f}" for v in runs["score"]),
                         "baseline mean": round(float(runs["score"].mean()), 1),
                         "learns": bool(runs["score"].mean() >= base + MARGIN)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results" / "default"
    print(learns_table(folder).to_markdown(index=False))
