"""Runs jobs on a real single-node SLURM cluster (scripts/slurm-local.sh) with profiles/slurm-ci.

Opt-in: needs root and PROMPTGRID_SLURM_TESTS=1 (CI sets both); Debian 12 packages are installed
by the start script when missing. Every Snakemake run here really goes through sbatch, and each one
takes 30-60 s on 2 cores: Snakemake starts inside every SLURM job again, and the plugin polls squeue
after 5 s, then every 15, 25, ... s until some job finishes.

    PROMPTGRID_SLURM_TESTS=1 timeout 900 .venv/bin/pytest -q -x tests/workflow/test_slurm.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
CI_PROFILE = REPO / "profiles" / "slurm-ci"
GPU_PROFILE = REPO / "profiles" / "slurm-gpu"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RUN_TIMEOUT_S = 300  # one Snakemake run; `timeout -k` kills it (and its lock) if the plugin hangs
PARTITION = "debug"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not (hasattr(os, "geteuid") and os.geteuid() == 0 and os.environ.get("PROMPTGRID_SLURM_TESTS") == "1"),
        reason="starts a local SLURM cluster: needs root and PROMPTGRID_SLURM_TESTS=1",
    ),
]


def clean_env() -> dict[str, str]:
    """os.environ without SLURM_* (a pytest run inside an allocation would leak its job into ours),
    with this interpreter's bin folder first on PATH so jobs find promptgrid and snakemake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def squeue_all() -> dict[str, dict[str, str]]:
    """Every job slurmctld still knows (finished ones for MinJobAge): id -> name, state, comment."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k"],
        env=clean_env(), capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        jobid, name, state, comment = line.strip().split("|", 3)
        jobs[jobid] = {"name": name, "state": state, "comment": comment}
    return jobs


def wait_for_state(jobid: str, timeout_s: float = 60) -> str:
    """Poll until job `jobid` has left PENDING/RUNNING/COMPLETING; return its final state."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        state = squeue_all().get(jobid, {}).get("state", "unknown")
        if state not in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "unknown"}:
            return state
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {jobid} still {state} after {timeout_s} s")


def write_workflow(workdir: Path, snakefile: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(snakefile))


def start_snakemake(workdir: Path, *extra_args: str, profile: Path = CI_PROFILE, site: Path = None,
                    timeout_s: int = RUN_TIMEOUT_S) -> subprocess.Popen:
    """Start `snakemake [--profile <site>] --workflow-profile <profile> --executor slurm` in `workdir`; log in
    snakemake.log."""
    cmd = ["timeout", "-k", "10", str(timeout_s), str(SNAKEMAKE), *(["--profile", str(site)] if site else []),
           "--workflow-profile", str(profile), "--executor", "slurm", *extra_args]
    with open(workdir / "snakemake.log", "w") as log:
        return subprocess.Popen(cmd, cwd=workdir, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)


def finish_snakemake(proc: subprocess.Popen, workdir: Path, timeout_s: int = RUN_TIMEOUT_S) -> str:
    """Wait for the run; fail with the log's tail (and the SLURM logs' names) unless it succeeded."""
    try:
        rc = proc.wait(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:  # `timeout -k` should have ended it first
        proc.kill()
        rc = proc.wait()
    log = (workdir / "snakemake.log").read_text()
    if rc != 0:
        slurm_logs = sorted(str(p.relative_to(workdir)) for p in (workdir / ".snakemake").rglob("slurm_logs/**/*.log"))
        raise AssertionError(f"snakemake in {workdir} exited {rc} (124: timed out)\n"
                             f"--- last lines of snakemake.log:\n{log[-6000:]}\n--- SLURM logs: {slurm_logs}")
    return log


def run_snakemake(workdir: Path, *extra_args: str, profile: Path = CI_PROFILE, site: Path = None,
                  timeout_s: int = RUN_TIMEOUT_S) -> str:
    return finish_snakemake(start_snakemake(workdir, *extra_args, profile=profile, site=site, timeout_s=timeout_s),
                            workdir, timeout_s)


def slurm_ids_in(path: Path) -> str:
    """The $SLURM_JOB_ID a test rule wrote into its output ("job=<id> ..."); "" if it ran outside SLURM."""
    first = path.read_text().split()[0]
    assert first.startswith("job="), f"{path}: {first!r}"
    return first.removeprefix("job=")


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the local cluster (1 fake GPU unless PROMPTGRID_SLURM_FAKE_GPUS says otherwise) and stop it when
    the test session ends, unless it was already running before. Not at the end of this module: once SLURM is
    installed, every later Snakemake start imports the SLURM executor plugin, which asks `scontrol show config`
    and, with no controller to answer, waits out its 10 s timeout (measured: a 14 s dry run takes 6 s with the
    cluster up)."""
    env = clean_env()
    env.setdefault("PROMPTGRID_SLURM_FAKE_GPUS", "1")
    was_running = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True).returncode == 0
    started = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"scripts/slurm-local.sh start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    print(f"\nslurm-local.sh start took {time.monotonic() - started:.1f} s")
    yield {"fake_gpus": int(env["PROMPTGRID_SLURM_FAKE_GPUS"])}
    if not was_running:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def test_sbatch_wrap_job_runs(slurm_cluster, tmp_path):
    out = tmp_path / "wrap.out"
    r = subprocess.run(
        ["sbatch", "--parsable", "-p", PARTITION, "--mem", "100", "-t", "2", "-o", str(out),
         "--wrap", 'echo "job=$SLURM_JOB_ID partition=$SLURM_JOB_PARTITION"'],
        env=clean_env(), capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    jobid = r.stdout.strip().split(";")[0]
    assert wait_for_state(jobid) == "COMPLETED"
    assert out.read_text().strip() == f"job={jobid} partition={PARTITION}"


def test_fake_gpu_is_scheduled(slurm_cluster, tmp_path):
    if slurm_cluster["fake_gpus"] < 1:
        pytest.skip("cluster started without fake GPUs")
    out = tmp_path / "gpu.out"
    r = subprocess.run(
        ["sbatch", "--parsable", "-p", PARTITION, "--mem", "100", "-t", "2", "--gpus=1", "-o", str(out),
         "--wrap", 'echo "gpus=$CUDA_VISIBLE_DEVICES"'],
        env=clean_env(), capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert wait_for_state(r.stdout.strip().split(";")[0]) == "COMPLETED"
    assert out.read_text().strip() == "gpus=0"


def test_snakemake_runs_rules_and_a_group_through_sbatch(slurm_cluster, tmp_path):
    # two figure rules named as in the CI profile's `groups`, so that the profile's own mapping and
    # group-components put both into one SLURM job
    groups = yaml.safe_load((CI_PROFILE / "config.yaml").read_text())["groups"]
    fig_a, fig_b = sorted(rule for rule, group in groups.items() if group == "figures")[:2]
    write_workflow(tmp_path, f"""
        localrules: all

        rule all:
            input: "a.txt", "fig_a.txt", "fig_b.txt"

        rule make_a:
            output: "a.txt"
            shell: "echo job=$SLURM_JOB_ID > {{output}}"

        rule {fig_a}:
            input: "a.txt"
            output: "fig_a.txt"
            shell: "echo job=$SLURM_JOB_ID > {{output}}"

        rule {fig_b}:
            input: "a.txt"
            output: "fig_b.txt"
            shell: "echo job=$SLURM_JOB_ID > {{output}}"
        """)
    run_snakemake(tmp_path)

    job_a = slurm_ids_in(tmp_path / "a.txt")
    job_fig = slurm_ids_in(tmp_path / "fig_a.txt")
    assert job_a and job_fig and job_a != job_fig
    assert slurm_ids_in(tmp_path / "fig_b.txt") == job_fig, "the figure rules did not share one SLURM job"

    jobs = squeue_all()
    assert jobs[job_a]["comment"] == "rule_make_a"
    assert jobs[job_fig]["comment"].startswith("rule_figures")
    assert jobs[job_a]["state"] == jobs[job_fig]["state"] == "COMPLETED"
    # the plugin names every job of a run promptgrid_<run uuid> and polls squeue by that name
    assert jobs[job_a]["name"] == jobs[job_fig]["name"]
    assert jobs[job_a]["name"].startswith("promptgrid_")

    logs = tmp_path / ".snakemake" / "slurm_logs"
    assert (logs / "rule_make_a" / f"{job_a}.log").is_file()
    assert len(list(logs.glob(f"group_figures*/{job_fig}.log"))) == 1


def test_cancelled_job_is_retried(slurm_cluster, tmp_path):
    write_workflow(tmp_path, """
        localrules: all

        rule all:
            input: "slept.txt"

        rule sleeper:
            output: "slept.txt"
            resources:
                sleep_s=lambda wildcards, attempt: 600 if attempt == 1 else 1,
                attempt_no=lambda wildcards, attempt: attempt,
            shell: "sleep {resources.sleep_s}; echo job=$SLURM_JOB_ID attempt={resources.attempt_no} > {output}"
        """)
    proc = start_snakemake(tmp_path)
    deadline = time.monotonic() + 120
    cancelled = None
    while cancelled is None and time.monotonic() < deadline and proc.poll() is None:
        running = [jobid for jobid, job in squeue_all().items()
                   if job["comment"] == "rule_sleeper" and job["state"] == "RUNNING"]
        if running:
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], env=clean_env(), check=True, timeout=30)
        else:
            time.sleep(0.5)
    if cancelled is None:
        proc.kill()
        pytest.fail(f"rule sleeper never ran:\n{(tmp_path / 'snakemake.log').read_text()[-4000:]}")

    log = finish_snakemake(proc, tmp_path)

    text = (tmp_path / "slept.txt").read_text().split()
    assert text[1] == "attempt=2"
    retried = slurm_ids_in(tmp_path / "slept.txt")
    assert retried != cancelled
    jobs = squeue_all()
    assert jobs[cancelled]["state"] == "CANCELLED"
    assert jobs[retried]["state"] == "COMPLETED"
    assert jobs[retried]["comment"] == "rule_sleeper"
    assert jobs[retried]["name"] == jobs[cancelled]["name"]  # same Snakemake run
    assert f"'{cancelled}'" in log and "CANCELLED" in log  # the plugin saw the cancel, then retried


def write_tiny_study(workdir: Path, study: str) -> tuple[Path, dict]:
    """The tiny real study (tests/studies/tiny.yaml, cut to one seed, zeroshot + vanilla and two prompt
    metrics so it fits CI) as workdir/study.yaml, its results under workdir/results; returns the file and
    the config."""
    raw = yaml.safe_load((REPO / "tests/studies/tiny.yaml").read_text())
    raw.update(study=study, seeds=[0], results_dir=str(workdir / "results"))
    # relative paths in a study are read from the working directory: the copy runs elsewhere
    raw["plugins"] = [str(REPO / p) for p in raw.get("plugins", [])]
    for task in raw["tasks"].values():  # the fixture files
        task["path"] = str(REPO / task["path"])
    raw["transfer"] = {"methods": ["zeroshot", "vanilla"]}
    raw["metrics"] = {"names": ["cos_avg", "max"]}
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "study.yaml"
    configfile.write_text(yaml.safe_dump(raw, sort_keys=False))
    return configfile, raw


def run_tiny_study(workdir: Path, timeout_s: int = 900) -> tuple[str, Path]:
    """The tiny real study through the local cluster; returns the log and the study's results folder."""
    configfile, raw = write_tiny_study(workdir, "tiny-slurm")
    log = run_snakemake(workdir, "--snakefile", str(REPO / "Snakefile"), "--configfile", str(configfile),
                        timeout_s=timeout_s)
    return log, workdir / "results" / raw["study"]


def local_gpu_profiles(folder: Path) -> tuple[Path, Path]:
    """The GPU run's two profiles, as a user makes them, in folder/: a site profile from profiles/site-template
    with the local cluster's values (no account: the plugin validates one with sacctmgr, which needs slurmdbd;
    one partition, debug, with the fake GPUs; the CI profile's fast status checks), and profiles/slurm-gpu
    with the CI profile's job caps and memory that fits the test node. Returns (site, workflow)."""
    template = REPO / "profiles" / "site-template"
    site = yaml.safe_load((template / "config.yaml").read_text())
    ci = yaml.safe_load((CI_PROFILE / "config.yaml").read_text())
    for key in ("jobs", "latency-wait", "slurm-status-command", "slurm-init-seconds-before-status-checks",
                "slurm-keep-successful-logs"):
        site[key] = ci[key]
    del site["default-resources"]["slurm_account"]
    site["default-resources"]["mem_mb"] = ci["default-resources"]["mem_mb"]
    partitions = yaml.safe_load((template / site["slurm-partition-config"]).read_text())
    assert set(partitions["partitions"]) == {"CHANGE_ME", "CHANGE_ME_GPU"}, partitions
    partitions = {"partitions": {PARTITION: {"max_gpu": 1}}}
    profile = yaml.safe_load((GPU_PROFILE / "config.yaml").read_text())
    for key in ("cores", "resources"):
        profile[key] = ci[key]
    profile.update({"retries": 0, "keep-going": False})
    for resources in profile["set-resources"].values():
        resources["mem_mb"] = 2000
    for name, values in (("site", site), ("workflow", profile)):
        text = yaml.safe_dump(values, sort_keys=False)
        assert "CHANGE_ME" not in text, f"a SITE value of the {name} profile has no local value here"
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "config.yaml").write_text(text)
    (folder / "site" / "partitions.yaml").write_text(yaml.safe_dump(partitions))
    return folder / "site", folder / "workflow"


def test_tiny_study_through_slurm(slurm_cluster, tmp_path):
    import pandas as pd

    log, out = run_tiny_study(tmp_path)
    transfer = pd.read_parquet(out / "tables/transfer.parquet")
    assert set(zip(transfer.source, transfer.target, transfer.method)) == {
        (s, t, m) for s in ("hotels", "intent") for t in ("medicine", "reviews") for m in ("zeroshot", "vanilla")}
    assert transfer.score.between(0, 100).all()
    similarity = pd.read_parquet(out / "tables/similarity.parquet")
    assert set(similarity.metric) == {"cos_avg", "max", "early_cos_avg", "early_max"}
    assert (out / "figures/minilm/gain_heatmap_vanilla.png").stat().st_size > 1000
    # the model jobs really went through sbatch: the plugin's per-job logs and slurmctld's job list
    slurm_logs = tmp_path / ".snakemake/slurm_logs"
    for rule in ("prepare_task", "train_prompt", "evaluate", "transfer", "prompt_similarity", "correlate"):
        assert list((slurm_logs / f"rule_{rule}").rglob("*.log")), rule
    comments = {j["comment"] for j in squeue_all().values() if j["state"] == "COMPLETED"}
    assert any(c.startswith("rule_train_prompt") for c in comments)
    assert any(c.startswith("group_figures") or "figures" in c for c in comments) or \
        list(slurm_logs.glob("group_figures*"))


def test_model_job_on_a_gpu_partition_logs_its_device(slurm_cluster, tmp_path):
    """One train_prompt job of the tiny study through a site profile and profiles/slurm-gpu: the site's partitions
    file sends it to the partition with GPUs, SLURM gives it a (fake) GPU, and the job logs the
    CUDA_VISIBLE_DEVICES it got and the device it resolved (the CPU: torch sees no CUDA)."""
    if slurm_cluster["fake_gpus"] < 1:
        pytest.skip("cluster started without fake GPUs")
    profile = yaml.safe_load((GPU_PROFILE / "config.yaml").read_text())
    assert profile["set-resources"]["train_prompt"]["gpu"] == 1
    configfile, raw = write_tiny_study(tmp_path, "tiny-slurm-gpu")
    out = tmp_path / "results" / raw["study"]
    task = raw["sources"][0]
    target = out / f"parts/minilm/train/{task}.runs.parquet"
    common = ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(configfile)]
    # the task's data on this machine first (not a model job): only the training job goes through SLURM
    # (targets before --configfile, which takes every argument after it)
    data = [str(out / f"data/{task}/{split}.parquet") for split in ("train", "dev", "test")]
    prep = subprocess.run([str(SNAKEMAKE), *data, "--cores", "1", *common], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert prep.returncode == 0, prep.stdout[-3000:] + prep.stderr[-3000:]

    site, workflow = local_gpu_profiles(tmp_path / "profiles")
    run_snakemake(tmp_path, str(target), *common, profile=workflow, site=site)

    job_logs = list((tmp_path / ".snakemake/slurm_logs/rule_train_prompt").rglob("*.log"))
    assert len(job_logs) == 1, job_logs
    jobid = job_logs[0].stem
    # the job asked SLURM for one GPU (sbatch --gpus=1 from the profile's `gpu: 1`)
    shown = subprocess.run(["scontrol", "-o", "show", "job", jobid], env=clean_env(), capture_output=True,
                           text=True, check=True, timeout=30).stdout
    assert "TresPerJob=gres:gpu:1" in shown and "Partition=debug" in shown, shown
    # ... and the job logged the GPU SLURM gave it (one of the fake ones) and the device it chose
    log = (out / f"logs/train/minilm/{task}.log").read_text()
    given = re.search(r"^\[device\] CUDA_VISIBLE_DEVICES=(\S+); torch sees 0 CUDA device\(s\); device cpu "
                      r"\(training.device=auto\)$", log, re.MULTILINE)
    assert given, log[:3000]
    assert given.group(1) in {str(i) for i in range(slurm_cluster["fake_gpus"])}, given.group(0)
    assert (f"[device] CUDA_VISIBLE_DEVICES names GPU id(s) {given.group(1)} but torch sees no CUDA device"
            in log), log[:3000]
    assert target.is_file()
