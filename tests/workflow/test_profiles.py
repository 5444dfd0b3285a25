"""Profiles: the tracked workflow profiles carry no site value, the SLURM ones size every rule SLURM runs, and a
global site profile made from profiles/site-template combined with profiles/slurm-gpu gets its account and
partitions to sbatch (Snakemake takes each key from one profile, the workflow profile winning, so the two must
not share a key). The sbatch check runs the real SLURM plugin against stand-in SLURM commands that record
their arguments."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PROFILES = REPO / "profiles"
TEMPLATE = PROFILES / "site-template"
#: the tracked workflow profiles (slurm-ci is the test cluster's own, site and workflow in one)
WORKFLOW_PROFILES = ("default", "gpu", "slurm", "slurm-gpu")
#: what belongs to a site: Snakemake would drop the template's value if a workflow profile set the key too
SITE_KEYS = {"default-resources", "jobs", "latency-wait", "slurm-partition-config", "slurm-status-command",
             "slurm-init-seconds-before-status-checks", "slurm-status-attempts", "slurm-qos", "slurm-logdir",
             "slurm-keep-successful-logs", "slurm-requeue", "slurm-no-account"}
#: rules Snakemake runs in its own process, never through sbatch
LOCAL_RULES = {"all", "collect", "fetch_source"}


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def workflow_rules() -> set:
    """Every rule name the rule files can define (any study), and each figure kind's fig_<kind>."""
    from promptgrid.pipeline.plugins import load_builtins
    from promptgrid.registry import FIGURES

    load_builtins()
    text = "\n".join(p.read_text() for p in (REPO / "workflow").rglob("*.smk")) + (REPO / "workflow/Snakefile").read_text()
    return set(re.findall(r"^\s*rule (\w+):", text, re.M)) | {f"fig_{kind}" for kind in FIGURES}


def test_tracked_workflow_profiles_carry_no_site_value():
    for name in WORKFLOW_PROFILES:
        values = profile(name)
        if name.startswith("slurm"):
            assert not SITE_KEYS & set(values), f"profiles/{name} sets site keys {sorted(SITE_KEYS & set(values))}"
        flat = yaml.safe_dump(values)
        for site_value in ("slurm_account", "slurm_partition", "CHANGE_ME"):
            assert site_value not in flat, f"profiles/{name} holds {site_value}"
    site = profile("site-template")
    assert site["default-resources"]["slurm_account"] == "'CHANGE_ME'"
    assert (TEMPLATE / site["slurm-partition-config"]).is_file()
    partitions = yaml.safe_load((TEMPLATE / site["slurm-partition-config"]).read_text())["partitions"]
    assert {p: limits.get("max_gpu", 0) for p, limits in partitions.items()} == {"CHANGE_ME": 0, "CHANGE_ME_GPU": 4}


def test_cores_are_forced_only_by_the_ci_profile():
    """A workstation run uses every core (one-thread model jobs side by side, the fastest on CPUs); a GPU
    workstation uses profiles/gpu; only the test cluster's profile pins 2 cores."""
    assert profile("default")["cores"] == "all"
    assert "cores" not in profile("gpu")
    assert profile("slurm-ci")["cores"] == 2


def test_slurm_profiles_size_every_rule_slurm_runs():
    """Without a default-resources of their own, the SLURM profiles give each rule SLURM runs its runtime and
    memory; the local rules really are local."""
    rules = workflow_rules()
    text = "\n".join(p.read_text() for p in (REPO / "workflow").rglob("*.smk"))
    for rule in LOCAL_RULES:
        block = re.search(rf"^\s*rule {rule}:\n(.*?)(?=^\s*rule |\Z)", text + (REPO / "workflow/Snakefile").read_text(),
                          re.M | re.S)
        assert block and "localrule: True" in block.group(1), rule
    for name in ("slurm", "slurm-gpu"):
        sized = {r for r, res in profile(name)["set-resources"].items() if {"runtime", "mem_mb"} <= set(res)}
        assert rules - LOCAL_RULES <= sized, f"profiles/{name}: {sorted(rules - LOCAL_RULES - sized)} unsized"
        assert set(profile(name)["set-resources"]) <= rules | {"collect"}, name


FAKE_SLURM = """#!/bin/sh
# a stand-in for every SLURM command: record the call, answer as a cluster that accepts everything
echo "$(basename "$0") $*" >> "$FAKE_SLURM_LOG"
case "$(basename "$0")" in
  sbatch) echo 4242 ;;
  squeue) echo "4242|COMPLETED" ;;
  sacct) echo "4242|COMPLETED|0:0" ;;
  sacctmgr|sshare) echo siteacct ;;
  sinfo) echo "cpu*" ;;
esac
"""


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a real SLURM is on PATH")
def test_site_profile_values_reach_sbatch_beside_the_gpu_workflow_profile(tmp_path):
    """--profile <site> --workflow-profile profiles/slurm-gpu: each job is submitted with the site's account,
    the partition its partitions file picks (a GPU job to the GPU partition, a CPU job to the CPU one), and the
    workflow profile's GPU, CPUs, memory and runtime for its rule."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fake").write_text(FAKE_SLURM)
    (bin_dir / "fake").chmod(0o755)
    for command in ("sbatch", "squeue", "sacct", "sacctmgr", "sshare", "sinfo", "scontrol", "scancel"):
        (bin_dir / command).symlink_to("fake")
    site = tmp_path / "site"
    site.mkdir()
    text = (TEMPLATE / "config.yaml").read_text().replace("'CHANGE_ME'", "'siteacct'")
    text = re.sub(r"^slurm-init-seconds-before-status-checks: \d+", "slurm-init-seconds-before-status-checks: 1",
                  text, flags=re.M)
    (site / "config.yaml").write_text(re.sub(r"^latency-wait: \d+", "latency-wait: 0", text, flags=re.M))
    (site / "partitions.yaml").write_text((TEMPLATE / "partitions.yaml").read_text()
                                          .replace("CHANGE_ME_GPU", "gpu").replace("CHANGE_ME", "cpu"))
    work = tmp_path / "work"  # two rules named as promptgrid's: a model rule and a data rule
    work.mkdir()
    (work / "Snakefile").write_text(textwrap.dedent("""\
        rule all:
            input: "a.txt", "b.txt"
            localrule: True

        rule train_prompt:
            output: "a.txt"
            shell: "touch {output}"

        rule prepare_task:
            output: "b.txt"
            shell: "touch {output}"
        """))
    log = tmp_path / "slurm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               FAKE_SLURM_LOG=str(log))
    # the jobs never run (sbatch is a stand-in), so the run fails once they report done without outputs
    run = subprocess.run(["snakemake", "--profile", str(site), "--workflow-profile", str(PROFILES / "slurm-gpu"),
                          "--retries", "0"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    calls = [line.split(" --wrap", 1)[0] for line in log.read_text().splitlines() if line.startswith("sbatch ")]
    submitted = {re.search(r"--comment rule_(\w+)", c).group(1): c for c in calls}
    assert set(submitted) == {"train_prompt", "prepare_task"}, (calls, run.stderr[-2000:])
    train, prepare = submitted["train_prompt"], submitted["prepare_task"]
    for option in ("-A siteacct", "-p gpu", "-t 240", "--mem 8000", "--cpus-per-task=2", "--gpus=1"):
        assert f" {option}" in train, (option, train)
    for option in ("-A siteacct", "-p cpu", "-t 30", "--mem 4000", "--cpus-per-task=1"):
        assert f" {option}" in prepare, (option, prepare)
    assert "--gpus" not in prepare
