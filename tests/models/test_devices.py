"""Device resolution and the workstation GPU picker (promptgrid.models.devices), on CPU with faked GPU counts.

flock locks belong to an open file description, so "jobs" competing for GPUs are separate processes here.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from promptgrid.errors import InputError
from promptgrid.models import devices
from promptgrid.models.devices import pick_gpu, resolve_device, set_deterministic
from promptgrid.storage import hardware

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def release_held_gpus():
    """A pick made in this process holds its lock for the life of the process: drop it after each test."""
    yield
    for _, fh in devices._HELD.values():
        fh.close()
    devices._HELD.clear()


def resolve(configured, env=None, cuda_count=0, lock_dir=None, node_gpus=(), build=("2.13.0+cpu", None)):
    """resolve_device with a faked torch; the node's driver lists ``node_gpus`` (by default none, so the real
    node's GPUs never reach these tests)."""
    lines: list = []
    device = resolve_device(configured, lock_dir, env=env or {}, cuda_count=cuda_count, log=lines.append,
                            node_gpus=node_gpus, build=build)
    return device, lines


@pytest.fixture(autouse=True)
def fresh_machine_record(monkeypatch):
    """A GPU note made by one test must not reach another's provenance."""
    monkeypatch.setattr(hardware, "_UNUSABLE_GPU", [])


# ---------------------------------------------------------------- settings and the log line
def test_env_overrides_config_and_is_logged():
    device, lines = resolve("cuda:1", env={"PROMPTGRID_DEVICE": "cpu"}, cuda_count=2)
    assert device == "cpu"
    assert lines == ["[device] CUDA_VISIBLE_DEVICES=unset; torch sees 2 CUDA device(s); device cpu "
                     "(PROMPTGRID_DEVICE=cpu)"]
    device, lines = resolve("cpu", env={"PROMPTGRID_DEVICE": "cuda:1"}, cuda_count=2)
    assert device == "cuda:1"
    assert lines[-1].endswith("device cuda:1 (PROMPTGRID_DEVICE=cuda:1; as configured)")


@pytest.mark.parametrize("env, configured, key", [
    ({"PROMPTGRID_DEVICE": "gpu"}, "auto", "PROMPTGRID_DEVICE='gpu'"),
    ({"PROMPTGRID_DEVICE": "cuda:x"}, "auto", "PROMPTGRID_DEVICE='cuda:x'"),
    ({}, "cuda0", "training.device='cuda0'"),
])
def test_bad_values_name_their_key(env, configured, key):
    with pytest.raises(ValueError, match=f"^{key}: must be auto, cpu, cuda or cuda:N$"):
        resolve(configured, env=env, cuda_count=1)


def test_cpu_stays_cpu_with_gpus_visible():
    device, lines = resolve("cpu", env={"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "7"}, cuda_count=1)
    assert device == "cpu"
    assert lines == ["[device] CUDA_VISIBLE_DEVICES=0; torch sees 1 CUDA device(s); device cpu (training.device=cpu)"]


def test_explicit_index():
    assert resolve("cuda:1", cuda_count=2)[0] == "cuda:1"
    with pytest.raises(ValueError, match=r"^training.device='cuda:2' but torch sees only 2 CUDA device\(s\)"):
        resolve("cuda:2", cuda_count=2)
    with pytest.raises(ValueError, match=r"^PROMPTGRID_DEVICE='cuda:0' but torch sees no CUDA device"):
        resolve("auto", env={"PROMPTGRID_DEVICE": "cuda:0"}, cuda_count=0)


def test_cuda_without_cuda_is_an_error():
    with pytest.raises(ValueError, match=r"^training.device='cuda' but torch sees no CUDA device \("
                                         r"CUDA_VISIBLE_DEVICES='0'"):
        resolve("cuda", env={"CUDA_VISIBLE_DEVICES": "0"}, cuda_count=0)


def test_auto_without_cuda_names_the_ids_it_was_given():
    device, lines = resolve("auto", env={"CUDA_VISIBLE_DEVICES": "2,3", "SLURM_JOB_ID": "9"}, cuda_count=0)
    assert device == "cpu"
    assert len(lines) == 2
    assert lines[0].startswith("[device] CUDA_VISIBLE_DEVICES names GPU id(s) 2, 3 but torch sees no CUDA device")
    assert lines[1] == ("[device] CUDA_VISIBLE_DEVICES=2,3; torch sees 0 CUDA device(s); device cpu "
                        "(training.device=auto)")
    # nothing named: only the summary line
    assert resolve("auto", cuda_count=0)[1] == [
        "[device] CUDA_VISIBLE_DEVICES=unset; torch sees 0 CUDA device(s); device cpu (training.device=auto)"]


# ---------------------------------------------------------------- a GPU on the node that torch cannot use
H100S = ["GPU 0: NVIDIA H100 80GB HBM3", "GPU 1: NVIDIA H100 80GB HBM3"]
CPU_ONLY = "2 NVIDIA GPU(s) on this node (NVIDIA H100 80GB HBM3), but torch 2.13.0+cpu is a CPU-only build"


@pytest.mark.parametrize("cvd", [None, "", "0,1", "GPU-5d1f", "-1"])
def test_a_gpu_torch_cannot_use_is_a_loud_warning_whatever_cuda_visible_devices_is(cvd):
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    device, lines = resolve("auto", env=env, node_gpus=H100S)
    assert device == "cpu"
    warning = [ln for ln in lines if ln.startswith("[device] WARNING: ")]
    assert warning == [f"[device] WARNING: {CPU_ONLY}: this job computes on the CPU. To compute on the GPU, "
                       f"{hardware.GPU_FIX}; to compute on the CPU without this warning, set training.device=cpu"]
    assert lines[-1].endswith("device cpu (training.device=auto)")  # the usual summary line still closes it
    # ... and the job's outputs carry it: their provenance's machine record
    assert hardware.machine()["gpu_unusable"] == CPU_ONLY


def test_a_cuda_build_that_sees_no_gpu_names_cuda_visible_devices_and_the_driver():
    _, lines = resolve("auto", env={"CUDA_VISIBLE_DEVICES": ""}, node_gpus=H100S[:1], build=("2.13.0+cu130", "13.0"))
    assert lines[0] == ("[device] WARNING: 1 NVIDIA GPU(s) on this node (NVIDIA H100 80GB HBM3), but torch "
                        "2.13.0+cu130 (built for CUDA 13.0) sees none of them: CUDA_VISIBLE_DEVICES='' hides them, "
                        "or the NVIDIA driver is older than CUDA 13.0: this job computes on the CPU. To compute on "
                        f"the GPU, {hardware.GPU_FIX}; to compute on the CPU without this warning, set "
                        "training.device=cpu")


def test_no_gpu_on_the_node_no_warning_and_no_record():
    device, lines = resolve("auto", env={"CUDA_VISIBLE_DEVICES": "0"}, node_gpus=[])
    assert device == "cpu" and not [ln for ln in lines if "WARNING" in ln]
    assert "gpu_unusable" not in hardware.machine()


def test_the_node_is_asked_only_when_auto_ends_on_the_cpu(monkeypatch):
    asked = []
    monkeypatch.setattr(hardware, "nvidia_gpus", lambda: asked.append(1) or H100S)
    lines: list = []
    # training.device: cpu is the user's choice, and a torch that sees a GPU uses it: nothing to ask
    assert resolve_device("cpu", env={}, cuda_count=0, log=lines.append) == "cpu"
    assert resolve_device("auto", env={}, cuda_count=1, log=lines.append) == "cuda:0"
    assert asked == [] and not [ln for ln in lines if "WARNING" in ln]
    assert resolve_device("auto", env={}, cuda_count=0, log=lines.append, build=("2.13.0+cpu", None)) == "cpu"
    assert asked == [1] and lines[-2].startswith(f"[device] WARNING: {CPU_ONLY}: ")


def test_cuda_on_a_node_whose_gpu_torch_cannot_use_names_the_fix():
    with pytest.raises(InputError, match=r"^training.device='cuda' but torch sees no CUDA device .*: use auto or "
                                         r"cpu to compute on the CPU\. 2 NVIDIA GPU\(s\) on this node .* is a "
                                         r"CPU-only build: install a CUDA build of torch"):
        resolve("cuda", node_gpus=H100S)


def fake_nvidia_smi(folder: Path, listing: str, rc: int = 0) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 64\nprintf '%s' '{listing}'\nexit {rc}\n")
    script.chmod(0o755)
    return str(script)


def test_nvidia_gpus_reads_nvidia_smi_then_the_drivers_proc_folder(tmp_path):
    smi = fake_nvidia_smi(tmp_path / "bin", "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1a2b)\n"
                                            "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-3c4d)\n")
    assert hardware.nvidia_gpus(smi) == ["GPU 0: NVIDIA A100-SXM4-40GB", "GPU 1: NVIDIA A100-SXM4-40GB"]
    # a driver that is not loaded, or a GPU it cannot reach: nvidia-smi fails, and no GPU is usable, whatever it
    # printed before failing
    broken = fake_nvidia_smi(tmp_path / "broken", "NVIDIA-SMI has failed because it could not communicate with "
                                                  "the NVIDIA driver.\n", rc=9)
    assert hardware.nvidia_gpus(broken) == []
    lost = fake_nvidia_smi(tmp_path / "lost", "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1a2b)\nUnable to determine "
                                              "the device handle for gpu 0000:41:00.0: Unknown Error\n", rc=15)
    assert hardware.nvidia_gpus(lost) == []
    # no nvidia-smi installed: the driver's own list, one folder per GPU
    proc = tmp_path / "proc"
    for address in ("0000:41:00.0", "0000:01:00.0"):
        (proc / address).mkdir(parents=True)
    assert hardware.nvidia_gpus(str(tmp_path / "absent"), proc) == ["GPU at PCI 0000:01:00.0",
                                                                   "GPU at PCI 0000:41:00.0"]
    assert hardware.nvidia_gpus(str(tmp_path / "absent"), tmp_path / "no-driver") == []


def test_summarize_counts_the_outputs_computed_beside_an_unusable_gpu():
    ran = {"device": ["cpu"]}  # a part's compute record: its job ran a model
    metas = [{"machine": {"gpu_unusable": CPU_ONLY}, "compute": ran}, {"machine": {"cpu": "x"}, "compute": ran},
             {"machine": {"gpu_unusable": CPU_ONLY}, "compute": ran},
             {"machine": {"cpu": "x"}}]  # prompt similarities: no model, so not counted
    summary = hardware.unusable_gpu_summary(metas)
    assert summary == {"outputs": 2, "of": 3, "reasons": [CPU_ONLY]}
    assert hardware.unusable_gpu_warning(summary) == (
        f"WARNING: 2 of 3 model-job outputs were computed on the CPU of a node with an NVIDIA GPU that torch could "
        f"not use ({CPU_ONLY}). To compute on the GPU, {hardware.GPU_FIX}.")
    assert hardware.unusable_gpu_warning(hardware.unusable_gpu_summary(metas[1:2])) == ""
    assert hardware.unusable_gpu_warning(None) == ""  # tables written before the record


def test_summarize_ends_with_the_warning(tmp_path, monkeypatch):
    """``promptgrid summarize`` reads the count from the summary table's provenance (collect counts the parts,
    correlate passes it on)."""
    import types

    import pandas as pd

    from promptgrid.pipeline import tables
    from promptgrid.storage import layout
    from promptgrid.storage.files import write_table

    study = types.SimpleNamespace(path=lambda rel: tmp_path / rel,
                                  cfg=types.SimpleNamespace(analysis=types.SimpleNamespace(outcome="gain")))
    monkeypatch.setattr(tables, "findings_text", lambda df: "FINDINGS")
    monkeypatch.setattr(tables, "summary_text_for", lambda df: "SUMMARY")
    counted = hardware.unusable_gpu_summary([{"machine": {"gpu_unusable": CPU_ONLY}, "compute": {"device": ["cpu"]}},
                                             {"machine": {}, "compute": {"device": ["cpu"]}}])
    for name in ("summary", "findings"):
        (tmp_path / layout.table(name)).parent.mkdir(parents=True, exist_ok=True)
        write_table(pd.DataFrame({"x": [1]}), tmp_path / layout.table(name), {"compute": {}, "gpu_unusable": counted})
    text = tables.summarize(study).split("\n\n")
    assert text[0] == "Outcome: gain (analysis.outcome)." and text[1:3] == ["FINDINGS", "SUMMARY"]
    assert text[-1] == hardware.unusable_gpu_warning(counted) and text[-1].startswith("WARNING: 1 of 2 model-job ")
    write_table(pd.DataFrame({"x": [1]}), tmp_path / layout.table("summary"), {"compute": {}})
    assert "WARNING" not in tables.summarize(study)


@pytest.mark.parametrize("configured", ["auto", "cuda"])
def test_scheduler_gpus_take_the_first_without_locks(configured, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "5,6", "SLURM_JOB_ID": "123"}
    device, lines = resolve(configured, env=env, cuda_count=2, lock_dir=tmp_path / "locks")
    assert device == "cuda:0"
    assert lines == [f"[device] CUDA_VISIBLE_DEVICES=5,6; torch sees 2 CUDA device(s); device cuda:0 "
                     f"(training.device={configured}; the first GPU SLURM gave this job)"]
    assert not (tmp_path / "locks").exists()


def test_one_gpu_needs_no_lock(tmp_path):
    device, lines = resolve("auto", cuda_count=1, lock_dir=tmp_path / "locks")
    assert device == "cuda:0"
    assert lines[-1].endswith("(training.device=auto; the only GPU visible)")
    assert not (tmp_path / "locks").exists()


def test_several_gpus_need_a_lock_dir():
    with pytest.raises(ValueError, match="a lock folder is needed"):
        resolve("auto", cuda_count=2)


def test_picker_locks_by_visible_id_and_keeps_its_pick(tmp_path):
    # a user's own CUDA_VISIBLE_DEVICES (no scheduler): pick among those, locks named by the real ids
    env = {"CUDA_VISIBLE_DEVICES": "5,7"}
    device, lines = resolve("auto", env=env, cuda_count=2, lock_dir=tmp_path)
    assert device == "cuda:0"
    assert lines[-1].endswith(f"device cuda:0 (training.device=auto; picked a free GPU of 2 (lock in {tmp_path}))")
    host = socket.gethostname()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{host}.gpu5.lock"]
    assert (tmp_path / f"{host}.gpu5.lock").read_text().startswith(f"pid {os.getpid()} on {host}")
    # one process is one job: asking again keeps the GPU it holds instead of taking a second one
    assert resolve("cuda", env=env, cuda_count=2, lock_dir=tmp_path)[0] == "cuda:0"
    assert pick_gpu(tmp_path, ["5", "7"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{host}.gpu5.lock"]


# ---------------------------------------------------------------- the picker across processes ("jobs")
JOB = """
import sys
from promptgrid.models.devices import resolve_device
device = resolve_device("auto", sys.argv[1], env={}, cuda_count=2, poll_s=0.05, wait_log_s=0.3)
print("GOT", device, flush=True)
sys.stdin.read()  # hold the GPU until the test closes stdin (or kills the job)
"""


class Job:
    """A "job" process resolving its device with 2 fake GPUs; holds what it got until its stdin closes."""

    def __init__(self, lock_dir: Path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-c", JOB, str(lock_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, bufsize=0)
        self.buffer = b""

    def next_line(self, timeout_s: float = 30) -> str:
        """The job's next output line (read unbuffered: select must not miss lines Python already read)."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"job {self.proc.pid} printed no whole line in {timeout_s} s: {self.buffer!r}"
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, f"job {self.proc.pid} ended (exit {self.proc.wait()}) after {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()

    def device(self) -> str:
        while not (line := self.next_line()).startswith("GOT "):
            pass
        return line.removeprefix("GOT ")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


def test_jobs_get_different_gpus_and_a_dead_job_frees_its_gpu(tmp_path):
    jobs: list = []

    def start() -> Job:
        jobs.append(Job(tmp_path))
        return jobs[-1]

    try:
        a = start()
        assert a.device() == "cuda:0"
        b = start()
        assert b.device() == "cuda:1"
        # both GPUs taken: a third job waits, saying so, and gets nothing yet
        c = start()
        waiting = c.next_line()
        assert waiting.startswith(f"[device] all 2 GPUs are taken by other jobs (locks in {tmp_path}); waiting")
        assert c.proc.poll() is None
        # the holder of cuda:0 dies without cleaning up: the kernel drops its lock, the waiting job gets it
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        t0 = time.monotonic()
        assert c.device() == "cuda:0"
        assert time.monotonic() - t0 < 10
        # a job that ends normally frees its GPU too
        b.proc.stdin.close()
        assert b.proc.wait(timeout=30) == 0
        assert start().device() == "cuda:1"
    finally:
        for job in jobs:
            job.close()


# ---------------------------------------------------------------- determinism switches
@pytest.fixture
def restore_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = before[2]


def test_set_deterministic_is_a_no_op_on_cpu(restore_determinism):
    torch.use_deterministic_algorithms(False)
    set_deterministic("cpu")
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert not torch.are_deterministic_algorithms_enabled()


def test_set_deterministic_on_gpu(restore_determinism, monkeypatch):
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    set_deterministic("cuda:1")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.benchmark is False
    # a workspace the user chose is kept
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    set_deterministic("cuda")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


# ---------------------------------------------------------------- the GPU profiles
REPO = SRC.parent
#: the verbs that load a backbone and run it: a rule whose shell runs one of them is a model rule
MODEL_VERBS = {"train", "transfer", "model-similarity", "project"}


def rule_verbs() -> dict:
    """Every named rule of workflow/rules/*.smk -> the promptgrid verb its shell runs."""
    import re

    verbs: dict = {}
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            if m := re.match(r"\s*rule (\w+):", line):
                rule = m.group(1)
            elif re.match(r"\s*rule:", line):
                rule = None  # the figure rules, named fig_<kind> from the registry
            elif rule and (m := re.search(r"promptgrid ([a-z-]+) --config", line)):
                verbs[rule] = m.group(1)
    return verbs


def test_gpu_profiles_ask_a_gpu_for_exactly_the_model_rules():
    import yaml

    from promptgrid.pipeline.plugins import load
    from promptgrid.registry import FIGURES

    load()
    verbs = rule_verbs()
    model_rules = {r for r, v in verbs.items() if v in MODEL_VERBS}
    assert {"train_prompt", "train_backbone", "evaluate", "evaluate_backbone", "transfer", "model_similarity",
            "model_similarity_target", "model_similarity_backbone", "cross_model"} == model_rules
    known = set(verbs) | {f"fig_{kind}" for kind in FIGURES} | {"all"}
    for name in ("gpu", "slurm-gpu"):
        profile = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
        named = set(profile["set-resources"]) | set(profile["set-threads"]) | set(profile.get("groups", {}))
        assert named <= known, f"profiles/{name} names rules that do not exist: {sorted(named - known)}"
        asks = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
        assert asks == model_rules, f"profiles/{name}: {sorted(asks ^ model_rules)}"
        assert all(profile["set-resources"][r]["gpu"] == 1 for r in model_rules)
    # which partition a GPU job goes to is the site profile's (profiles/site-template): the tracked workflow
    # profile names none, and no site value
    slurm_gpu = (REPO / "profiles/slurm-gpu/config.yaml").read_text()
    slurm = yaml.safe_load(slurm_gpu)
    assert "CHANGE_ME" not in slurm_gpu
    assert not [r for r, res in slurm["set-resources"].items() if "slurm_partition" in res or "slurm_account" in res]
    # a CPU profile never asks for a GPU: the SLURM plugin would turn it into sbatch --gpus
    for name in ("default", "slurm", "slurm-ci"):
        text = (REPO / "profiles" / name / "config.yaml").read_text()
        profile = yaml.safe_load(text)
        assert not any("gpu" in res for res in (profile.get("set-resources") or {}).values()), name


# ---------------------------------------------------------------- on a real GPU (pytest -m gpu)
@pytest.mark.gpu
def test_on_a_real_gpu(tmp_path, restore_determinism):
    """torch's own device count: auto and cuda resolve to cuda:0 (this process is the only job holding a lock
    in tmp_path), an index past the last GPU is refused, and after set_deterministic an op that sums with
    atomics by default (index_add_) repeats bit for bit."""
    env = {k: v for k, v in os.environ.items() if k != "PROMPTGRID_DEVICE"}
    n = torch.cuda.device_count()
    lines: list = []
    assert resolve_device("auto", tmp_path, env=env, log=lines.append) == "cuda:0"
    assert f"; torch sees {n} CUDA device(s); device cuda:0 (training.device=auto; " in lines[-1]
    assert resolve_device("cuda", tmp_path, env=env, log=lines.append) == "cuda:0"
    with pytest.raises(ValueError, match=f"torch sees only {n} CUDA device"):
        resolve_device(f"cuda:{n}", tmp_path, env=env, log=lines.append)
    set_deterministic("cuda:0")
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(1 << 16, 64, generator=gen).cuda()
    index = torch.randint(0, 8, (1 << 16,), generator=gen).cuda()
    sums = [torch.zeros(8, 64, device="cuda").index_add_(0, index, values) for _ in range(3)]
    assert all(torch.equal(sums[0], s) for s in sums[1:])
    reference = torch.zeros(8, 64, dtype=torch.float64).index_add_(0, index.cpu(), values.cpu().double())
    torch.testing.assert_close(sums[0].cpu().double(), reference, rtol=1e-5, atol=1e-3)
