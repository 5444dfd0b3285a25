"""scripts/setup.sh picks the torch build for the machine: a fake ``nvidia-smi`` on an otherwise empty PATH
stands for the NVIDIA driver (or its absence), and ``--print-torch-plan`` says what setup would install and
why, without installing anything. ``--check-torch`` says which build .venv has and warns when it cannot use
the GPUs the driver lists. Bash only, no pip: each case takes milliseconds."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"
BASH = shutil.which("bash") or "/bin/bash"
WHEELS = "https://download.pytorch.org/whl"


def smi_header(cuda: str) -> str:
    """The first lines of ``nvidia-smi`` as a driver for CUDA ``cuda`` prints them."""
    return ("Mon Dec  7 10:00:00 2026\n"
            "+-----------------------------------------------------------------------------------------+\n"
            f"| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: {cuda}     |\n"
            "|-----------------------------------------+------------------------+----------------------+\n")


def fake_nvidia_smi(folder: Path, header: str = "", gpus: int = 0, rc: int = 0) -> Path:
    """An ``nvidia-smi`` that prints ``header`` (and exits ``rc``), or with -L lists ``gpus`` GPUs. Only shell
    builtins: the PATH holds nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:04d})\\n" for i in range(gpus))
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nif [ \"$1\" = -L ]; then printf '{listing}'; exit {rc}; fi\n"
                      f"printf '%s' '{header}'\nexit {rc}\n")
    script.chmod(0o755)
    return folder


def plan(path: Path, **env) -> dict:
    """``setup.sh --print-torch-plan`` with only ``path`` on the PATH: {"spec", "index", "why"}."""
    out = subprocess.run([BASH, str(SETUP), "--print-torch-plan"], env={"PATH": str(path), **env},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert list(fields) == ["torch spec", "torch index", "why"], out.stdout
    return {"spec": fields["torch spec"].strip(), "index": fields["torch index"].strip().split(" (")[0],
            "why": fields["why"].strip()}


@pytest.mark.parametrize("cuda, build", [
    ("12.8", "cu128"),  # exactly a build
    ("12.9", "cu128"),  # the newest build the driver runs
    ("13.0", "cu130"),
    ("13.2", "cu130"),  # a driver newer than every build runs the newest
    ("12.6", "cu126"),
    ("12.4", "cu126"),  # older than every CUDA 12 build: minor-version compatibility
])
def test_a_driver_gets_the_cuda_build_it_runs(tmp_path, cuda, build):
    got = plan(fake_nvidia_smi(tmp_path, smi_header(cuda)))
    assert got["spec"] == "torch==2.13.0"  # TORCH_SPEC's default stays the version, the index picks the build
    assert got["index"] == f"{WHEELS}/{build}"
    assert got["why"].startswith(f"nvidia-smi: an NVIDIA driver for CUDA {cuda}")
    assert f"the CUDA {build[2:-1]}.{build[-1]} build" in got["why"]


def test_a_driver_too_old_for_every_build_gets_the_cpu_build_and_a_warning(tmp_path):
    got = plan(fake_nvidia_smi(tmp_path, smi_header("11.8")))
    assert got["index"] == f"{WHEELS}/cpu"
    assert got["why"].startswith("WARNING: nvidia-smi: an NVIDIA driver for CUDA 11.8, older than every CUDA build "
                                 "of torch (12.6, 12.8, 13.0): the CPU build. Update the driver")


def test_no_driver_gets_the_cpu_build(tmp_path):
    # no nvidia-smi at all (a laptop, a CI runner, a cluster login node)
    empty = tmp_path / "empty"
    empty.mkdir()
    got = plan(empty)
    assert got["index"] == f"{WHEELS}/cpu"
    assert got["why"].startswith("no nvidia-smi on the PATH, so no NVIDIA driver: the CPU build (on a cluster login "
                                 "node, run the setup on a GPU node instead, or set TORCH_INDEX_URL=")
    # nvidia-smi installed but the driver not loaded: it fails
    broken = fake_nvidia_smi(tmp_path / "broken", "NVIDIA-SMI has failed because it could not communicate with the "
                                                  "NVIDIA driver.\nMake sure that the latest driver is loaded.\n", rc=9)
    got = plan(broken)
    assert got["index"] == f"{WHEELS}/cpu"
    assert got["why"].startswith("nvidia-smi fails (NVIDIA-SMI has failed because it could not communicate with the "
                                 "NVIDIA driver.), so no working NVIDIA driver: the CPU build")
    # a header without a CUDA version (a driver too old to print one)
    assert plan(fake_nvidia_smi(tmp_path / "old", "| NVIDIA-SMI 340.108  Driver Version: 340.108 |\n"))["index"] == \
        f"{WHEELS}/cpu"


def test_the_knobs_override_the_detection(tmp_path):
    gpu = fake_nvidia_smi(tmp_path, smi_header("12.8"))
    got = plan(gpu, TORCH_INDEX_URL="https://mirror.example.org/torch/cu126", TORCH_SPEC="torch==2.12.1")
    assert got == {"spec": "torch==2.12.1", "index": "https://mirror.example.org/torch/cu126",
                   "why": "TORCH_INDEX_URL"}
    got = plan(gpu, TORCH_INDEX_URL="none")
    assert got["index"] == "none" and got["why"] == "TORCH_INDEX_URL=none: pip's configured indexes only"


def test_macos_takes_pypis_torch(tmp_path):
    got = plan(fake_nvidia_smi(tmp_path, smi_header("12.8")), OSTYPE="darwin23")
    assert got["index"] == "none" and got["why"].startswith("macOS")


def test_setup_uses_the_plan_the_lock_and_reports_the_build():
    """The install lines use what the tests above check (the plan's index, the lock), and the build check closes
    the setup: a reading of the script, since running it is minutes of pip."""
    text = SETUP.read_text()
    commands = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    torch_line = next(i for i, ln in enumerate(commands) if '"$TORCH_SPEC"' in ln)
    install = " ".join(commands[torch_line - 1:torch_line + 1])
    assert "-c envs/constraints.txt" in install and '${index[@]+"${index[@]}"}' in install
    assert 'quiet pip install -q --disable-pip-version-check -c envs/constraints.txt -e ".[test]"' in commands
    assert commands.index("torch_plan") < torch_line < commands.index("check_torch || true  # its warning is the "
                                                                      "message: the CPU build still runs everything")


# ---------------------------------------------------------------- the build .venv has
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .venv: run bash scripts/setup.sh")
def test_check_torch_warns_when_the_driver_lists_gpus_torch_cannot_use(tmp_path):
    """With a fake driver listing 2 GPUs and CUDA_VISIBLE_DEVICES hiding every real one, torch sees none: the
    check names the build and warns on stderr with status 1; without a driver it only names the build."""
    base = {"PATH": f"{fake_nvidia_smi(tmp_path, smi_header('12.8'), gpus=2)}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([BASH, str(SETUP), "--check-torch"], env=base, capture_output=True, text=True, timeout=120)
    version = subprocess.run([str(VENV_PYTHON), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith(f"torch {version}: the ")
    assert out.stderr.startswith(f"WARNING: nvidia-smi lists 2 GPU(s), but torch {version} cannot use them (")
    assert "every job\n         would compute on the CPU" in out.stderr
    quiet = subprocess.run([BASH, str(SETUP), "--check-torch"], env={**base, "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=120)
    if shutil.which("nvidia-smi", path="/usr/bin:/bin") is None:  # a real driver would answer for itself
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
        assert quiet.stdout.startswith(f"torch {version}: the ")
