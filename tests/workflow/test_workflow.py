"""The Snakemake workflow itself: lint, DAG job counts against the grid formula, config errors at DAG build."""
import subprocess

import pytest
import yaml
from dag_counts import expected_counts, job_counts

from promptgrid.config import StudyConfig
from promptgrid.pipeline.plugins import load_config_with_plugins


def snakemake(repo, env, *args, timeout=300):
    return subprocess.run(["snakemake", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


STUDIES = ["config.yaml", "tests/studies/tiny.yaml", "studies/registry-21x9.yaml", "studies/bigbench-21x9.yaml",
           "studies/panda-21x9.yaml", "studies/panda-21x9-input.yaml", "studies/panda-offline.yaml",
           "studies/spot.yaml", "studies/su.yaml", "studies/cross-model.yaml"]


@pytest.mark.parametrize("study", STUDIES)
def test_dry_run_job_counts_match_grid_formula(repo, venv_env, tmp_path, study):
    cfg = load_config_with_plugins(repo / study)
    args = ["-n", "--quiet", "rules", "--config", f"results_dir={tmp_path}"]
    if study != "config.yaml":
        args += ["--configfile", study]
    out = snakemake(repo, venv_env, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = job_counts(out.stdout + out.stderr)
    expected = expected_counts(cfg)
    expected["total"] = sum(expected.values())
    assert counts == expected


def test_default_grid_size(repo):
    cfg = StudyConfig.from_dict(yaml.safe_load((repo / "config.yaml").read_text()))
    assert (len(cfg.sources), len(cfg.targets), len(cfg.seeds)) == (6, 6, 2) and cfg.prompt.kind == "deep"
    from promptgrid.registry import SOURCES

    # only sources Python fetches itself (pip, npm tarballs over HTTPS), pinned and hashed: no Debian, no files
    assert all(SOURCES[t.source].artifact is not None and SOURCES[t.source].artifact.registry in ("pypi", "npm")
               and SOURCES[t.source].artifact.sha256 for t in cfg.tasks.values())
    families = [cfg.tasks[s].family for s in cfg.sources]
    assert all(families.count(cfg.tasks[t].family) >= 2 for t in cfg.targets)  # each target's family: 2+ sources
    assert len(set(families)) >= 3  # two families and an unrelated control at least
    assert cfg.analysis.outcome == "auc_gain"  # fixed before the first run (README)
    big = StudyConfig.from_dict(yaml.safe_load((repo / "studies/bigbench-21x9.yaml").read_text()))
    assert (len(big.sources), len(big.targets)) == (21, 9)
    grid = StudyConfig.from_dict(yaml.safe_load((repo / "studies/registry-21x9.yaml").read_text()))
    assert (len(grid.sources), len(grid.targets)) == (21, 9) and set(grid.targets) <= set(grid.sources)
    families = [grid.tasks[t].family for t in grid.sources]
    assert sum(families.count(f) >= 3 for f in set(families)) >= 3  # at least three families of three tasks
    # every source from a registry package (no local files, no hub, no BIG-bench), none of them Debian-only
    from promptgrid.registry import SOURCES

    arts = [SOURCES[grid.tasks[t].source].artifact for t in grid.sources]
    assert all(a is not None and a.sha256 and a.registry in ("pypi", "npm") for a in arts)


def test_lint_passes(repo, venv_env, tmp_path):
    out = snakemake(repo, venv_env, "--lint", "--config", f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Congratulations" in out.stdout + out.stderr


@pytest.mark.parametrize("override, key", [
    ("training={'lrr': 0.1}", "training.lrr"),
    ("sources=['movie','no_such_task']", "sources[1]"),
    ("bogus_key=1", "bogus_key"),
])
def test_bad_config_fails_at_dag_build_naming_the_key(repo, venv_env, tmp_path, override, key):
    out = snakemake(repo, venv_env, "-n", "--config", f"results_dir={tmp_path}", override)
    assert out.returncode != 0
    assert f"config key '{key}'" in out.stdout + out.stderr
    assert not list(tmp_path.glob("*/logs"))  # nothing ran


def test_grouping_from_the_slurm_profile_keeps_the_dag(repo, venv_env, tmp_path):
    """The profile's groups put figure jobs into one cluster job; the set of jobs must not change."""
    profile = yaml.safe_load((repo / "profiles/slurm/config.yaml").read_text())
    groups = [f"{rule}={group}" for rule, group in profile["groups"].items()]
    components = [f"{g}={n}" for g, n in profile["group-components"].items()]
    base = ["-n", "--quiet", "rules", "--config", f"results_dir={tmp_path}"]
    plain = job_counts(snakemake(repo, venv_env, *base).stdout)
    grouped = snakemake(repo, venv_env, *base, "--groups", *groups, "--group-components", *components)
    assert grouped.returncode == 0, grouped.stderr[-2000:]
    assert job_counts(grouped.stdout + grouped.stderr) == plain
