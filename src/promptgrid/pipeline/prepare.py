"""The prepare verb: normalise and split one task's data.
"""
from __future__ import annotations

import time

from promptgrid.errors import UnknownName
from promptgrid.pipeline.context import Study


# ---------------------------------------------------------------- verbs
def prepare(study: Study, task: str) -> None:
    from promptgrid.data.readers import source_record
    from promptgrid.data.splits import prepare_task, write_splits

    cfg = study.cfg
    if task not in cfg.tasks:
        raise UnknownName(f"unknown task {task!r}; the config defines {sorted(cfg.tasks)}")
    t0 = time.time()
    splits = prepare_task(cfg.tasks[task], task, cfg.cache_path)
    h = study.stage_hash("prepare", task=task)
    data_source = source_record(cfg.tasks[task], cfg.cache_path)  # package, version and sha256 of the data
    write_splits(splits, study.path(f"data/{task}"), study.meta(h, task=task, data_source=data_source))
    print(f"[prepare] {task}: " + ", ".join(f"{k}={len(v)}" for k, v in splits.items())
          + f" in {time.time() - t0:.1f}s", flush=True)
