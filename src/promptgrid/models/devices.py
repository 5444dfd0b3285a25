"""Which device a job computes on: ``training.device`` (or ``PROMPTGRID_DEVICE``) resolved on the node.

``auto`` and ``cuda`` follow whoever handed out the GPUs:

* a batch scheduler (SLURM: ``sbatch --gpus=1``) sets ``CUDA_VISIBLE_DEVICES`` to the GPUs of the job, so
  the job takes ``cuda:0``, the first of them;
* on a workstation nobody does, so with several GPUs visible each job takes a free one with a lock file per
  GPU (``fcntl.flock``): Snakemake's ``--resources gpu=G`` keeps at most G model jobs running, and the locks
  keep two of them off the same GPU. The lock lives as long as its open file, i.e. until the job's process
  ends, however it ends (the kernel drops it when a killed job's descriptors close).

Every resolution logs one ``[device]`` line with ``CUDA_VISIBLE_DEVICES`` as the job got it and the device
chosen, so a job log shows which GPU a result came from.

A job that ends up on the CPU under ``auto`` asks the node's NVIDIA driver, without torch, whether it has GPUs
(:func:`promptgrid.storage.hardware.nvidia_gpus`). If so, torch could not use them (a CPU-only torch build, a
driver older than torch's CUDA, or a ``CUDA_VISIBLE_DEVICES`` that hides them): the job logs a
``[device] WARNING`` line saying which and how to fix it, and its outputs' provenance records it, which
``promptgrid summarize`` counts.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from promptgrid.errors import InputError
from promptgrid.storage import hardware

ENV_DEVICE = "PROMPTGRID_DEVICE"
CONFIG_KEY = "training.device"
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:(\d+))?")
#: variables a batch scheduler sets inside a job; with one of them, CUDA_VISIBLE_DEVICES is the job's GPUs
SCHEDULER_JOB_VARS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
#: seconds between two "every GPU is taken" lines while a job waits for one
WAIT_LOG_S = 30.0

# lock dir -> (GPU index, open lock file): held for the life of the process, never closed on purpose
_HELD: dict = {}


def parse_device(value: str, key: str) -> tuple:
    """``(kind, index)`` of a device setting: ("auto", None), ("cpu", None), ("cuda", None), ("cuda", N)."""
    m = DEVICE_PATTERN.fullmatch(str(value).strip())
    if m is None:
        raise InputError(f"{key}={value!r}: must be auto, cpu, cuda or cuda:N")
    kind = str(value).strip().split(":")[0]
    return kind, (int(m.group(2)) if m.group(2) is not None else None)


def visible_ids(cvd: Optional[str]) -> list:
    """The GPU ids (or UUIDs) ``CUDA_VISIBLE_DEVICES`` names, in order; [] when unset or empty."""
    if not cvd:
        return []
    return [p.strip() for p in cvd.split(",") if p.strip()]


def _torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torch_build() -> tuple:
    """(torch version, the CUDA version it was built for or None for a CPU-only build)."""
    import torch

    return torch.__version__, torch.version.cuda


def unusable_gpu_reason(gpus: Sequence[str], version: str, cuda: Optional[str], cvd: Optional[str]) -> str:
    """Why torch sees none of the node's ``gpus`` (``nvidia-smi -L`` lines), for a torch ``version`` built for
    CUDA ``cuda`` (None: CPU-only) and the job's CUDA_VISIBLE_DEVICES ``cvd`` (None: unset)."""
    names = sorted({re.sub(r"^GPU \d+:\s*", "", g) for g in gpus})
    on_node = f"{len(gpus)} NVIDIA GPU(s) on this node ({', '.join(names)})"
    if cuda is None:
        return f"{on_node}, but torch {version} is a CPU-only build"
    shown = "unset" if cvd is None else repr(cvd)
    return (f"{on_node}, but torch {version} (built for CUDA {cuda}) sees none of them: CUDA_VISIBLE_DEVICES={shown} "
            f"hides them, or the NVIDIA driver is older than CUDA {cuda}")


def resolve_device(configured: str, lock_dir: Optional[Path] = None, *, env: Optional[Mapping] = None,
                   cuda_count: Optional[int] = None, log: Callable = print, poll_s: float = 1.0,
                   wait_log_s: float = WAIT_LOG_S, node_gpus: Optional[Sequence[str]] = None,
                   build: Optional[tuple] = None) -> str:
    """The device this job computes on, "cpu" or "cuda:<i>" (an index among the GPUs torch sees).

    ``configured``: ``training.device`` (auto | cpu | cuda | cuda:N); ``PROMPTGRID_DEVICE`` in ``env``
    (default ``os.environ``) replaces it. ``lock_dir``: where the workstation picker keeps one lock file
    per GPU (needed only when several GPUs are visible and no scheduler chose one). ``cuda_count``: the
    number of CUDA devices torch sees (0: no CUDA), for tests; by default asked from torch.
    ``poll_s`` / ``wait_log_s``: how often a job that finds every GPU taken retries / says so.
    ``node_gpus``: the GPUs the node's driver lists, asked only when torch sees none (default
    :func:`promptgrid.storage.hardware.nvidia_gpus`); ``build``: (torch version, CUDA version or None), default
    :func:`torch_build`. Both are for tests.
    """
    env = os.environ if env is None else env
    key, value = (ENV_DEVICE, env[ENV_DEVICE]) if env.get(ENV_DEVICE) else (CONFIG_KEY, configured)
    kind, index = parse_device(value, key)
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    ids = visible_ids(cvd)
    count = _torch_cuda_count() if cuda_count is None else int(cuda_count)
    scheduler = next((v for v in SCHEDULER_JOB_VARS if env.get(v)), None)
    how = ""
    if kind == "cpu":
        device = "cpu"
    elif count == 0:
        gpus = hardware.nvidia_gpus() if node_gpus is None else list(node_gpus)
        reason = unusable_gpu_reason(gpus, *(build or torch_build()), cvd) if gpus else ""
        if kind == "cuda":
            raise InputError(f"{key}={value!r} but torch sees no CUDA device (CUDA_VISIBLE_DEVICES="
                             f"{'unset' if cvd is None else repr(cvd)}; torch built without CUDA, no driver, or "
                             f"no GPU given to this job): use auto or cpu to compute on the CPU"
                             + (f". {reason}: {hardware.GPU_FIX}" if reason else ""))
        device = "cpu"
        if ids:
            log(f"[device] CUDA_VISIBLE_DEVICES names GPU id(s) {', '.join(ids)} but torch sees no CUDA device "
                f"(a CPU-only torch build or no driver on this node): computing on the CPU")
        if reason:
            # loud on purpose: a GPU study computing on the CPU runs for days instead of hours
            log(f"[device] WARNING: {reason}: this job computes on the CPU. To compute on the GPU, "
                f"{hardware.GPU_FIX}; to compute on the CPU without this warning, set {key}=cpu")
            hardware.note_unusable_gpu(reason)
    elif index is not None:
        if index >= count:
            raise InputError(f"{key}={value!r} but torch sees only {count} CUDA device(s) (cuda:0..cuda:{count - 1}"
                             f"; CUDA_VISIBLE_DEVICES={'unset' if cvd is None else repr(cvd)})")
        device, how = f"cuda:{index}", "as configured"
    elif ids and scheduler:
        device, how = "cuda:0", f"the first GPU {scheduler.split('_')[0]} gave this job"
    elif count > 1:
        if lock_dir is None:
            raise ValueError(f"{key}={value!r} with {count} GPUs visible and no scheduler: a lock folder is "
                             f"needed to pick a free GPU (resolve_device(..., lock_dir=...))")
        picked = pick_gpu(Path(lock_dir), [ids[i] if i < len(ids) else str(i) for i in range(count)], log=log,
                          poll_s=poll_s, wait_log_s=wait_log_s)
        device, how = f"cuda:{picked}", f"picked a free GPU of {count} (lock in {lock_dir})"
    else:
        device, how = "cuda:0", "the only GPU visible"
    log(f"[device] CUDA_VISIBLE_DEVICES={'unset' if cvd is None else cvd}; torch sees {count} CUDA device(s); "
        f"device {device} ({key}={value}{'; ' + how if how else ''})")
    return device


def _lock_name(gpu_id: str) -> str:
    # host in the name: a study folder on a shared file system may be used from several GPU machines
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", gpu_id)
    return f"{socket.gethostname()}.gpu{safe}.lock"


def _try_lock(path: Path):
    """An open file holding an exclusive flock on ``path``, or None if another process holds it."""
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    # who holds it, for a person looking at the folder; the lock itself is the flock, not the text
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    return fh


def pick_gpu(lock_dir: Path, gpu_ids: list, *, log: Callable = print, poll_s: float = 1.0,
             wait_log_s: float = WAIT_LOG_S) -> int:
    """Lock a free GPU of ``gpu_ids`` (the ids of cuda:0, cuda:1, ...) and return its index; wait while every
    one is taken. The lock is kept (its file stays open) until this process exits. A process picks once:
    asking again returns the GPU it already holds."""
    key = str(Path(lock_dir).resolve())
    if key in _HELD:
        return _HELD[key][0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    started = last_log = time.monotonic()
    while True:
        for i, gpu_id in enumerate(gpu_ids):
            fh = _try_lock(lock_dir / _lock_name(gpu_id))
            if fh is not None:
                _HELD[key] = (i, fh)
                return i
        now = time.monotonic()
        if now - last_log >= wait_log_s:
            log(f"[device] all {len(gpu_ids)} GPUs are taken by other jobs (locks in {lock_dir}); waiting "
                f"{now - started:.0f}s so far")
            last_log = now
        time.sleep(poll_s)


def set_deterministic(device: str) -> None:
    """Make GPU kernels repeatable: cuBLAS with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless
    already set) and torch's deterministic algorithms (warnings, not errors, where an op has none). Call it
    before the first CUDA operation: cuBLAS reads the variable when it creates its handle. No-op on CPU,
    whose kernels are repeatable already."""
    if not str(device).startswith("cuda"):
        return
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False  # autotuning may pick a different kernel per run
