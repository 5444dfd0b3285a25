"""What a job pays before its work starts: table-only verbs must not import torch, and every job's log
times it from the process start (bench/overhead.py reads these lines)."""
import re
import subprocess
import sys


def test_table_and_figure_modules_start_without_torch(repo, venv_env):
    code = ("import sys; import promptgrid.pipeline, promptgrid.data, promptgrid.analysis, promptgrid.figures, "
            "promptgrid.cli; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=venv_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_job_logs_time_from_process_start(repo, venv_env):
    out = subprocess.run(["promptgrid", "check", "--config", "config.yaml"], cwd=repo, env=venv_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    started = float(re.search(r"\[promptgrid check\] started in ([\d.]+)s", out.stderr).group(1))
    finished = float(re.search(r"\[promptgrid check\] finished in ([\d.]+)s", out.stderr).group(1))
    # the interpreter start and the imports are in both: neither can be 0 on any machine
    assert 0.0 < started <= finished < 60.0


def test_process_age_counts_from_this_process_start():
    import time

    from promptgrid.cli import _process_age

    before = _process_age()
    time.sleep(0.3)
    after = _process_age()
    assert before is not None and before > 0
    assert 0.2 <= after - before < 5.0
