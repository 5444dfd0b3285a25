"""bench/run.py's report helpers: the machine line and the under-load flag of each table."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import run as bench_run  # noqa: E402


def test_own_threads_are_not_load_but_other_jobs_are():
    cores = os.cpu_count()
    assert not bench_run.under_load(float(cores))  # the benchmark alone keeps one thread per core busy
    assert bench_run.under_load(cores + 1.0)
    stamp = bench_run.stamp({"loadavg": [0.1, cores + 1.0], "quick": True, "date": "d", "seconds": 3})
    assert stamp.endswith("**under load**_") and stamp.startswith("_quick run, d, 3 s")
    assert "under load" not in bench_run.stamp({"loadavg": [0.1, float(cores)], "quick": False, "date": "d",
                                                "seconds": 3})


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_machine_line_names_the_cpu_generation():
    info = Path("/proc/cpuinfo").read_text()
    family = next(line.split(":")[1].strip() for line in info.splitlines() if line.startswith("cpu family"))
    assert f"(family {family}, model " in bench_run.machine()["cpu"]
