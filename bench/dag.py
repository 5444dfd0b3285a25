"""DAG build: `snakemake -n` wall time per study, results written to a temporary folder.

The default study is the reference; the goal is for studies/panda-21x9.yaml (<= 20 s). Quick mode
leaves out bigbench-21x9.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common as C

STUDIES = {"default": None, "bigbench-21x9": "studies/bigbench-21x9.yaml", "panda-21x9": "studies/panda-21x9.yaml"}
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def dry_run(configfile, results: str) -> tuple:
    """(seconds, job count) of a dry run."""
    cmd = [str(SNAKEMAKE), "-n", "--nolock", "--quiet", "rules", "--cores", "2"]
    if configfile:
        cmd += ["--configfile", configfile]
    cmd += ["--config", f"results_dir={results}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    total = re.search(r"^total\s+(\d+)", out.stdout + out.stderr, re.M)
    return seconds, int(total.group(1)) if total else None


def run(quick: bool) -> dict:
    repeats = 2 if quick else 4
    tmp = tempfile.mkdtemp(prefix="pg-bench-dag-")
    variants = {name: (lambda cf: lambda r: dict(zip(("s", "jobs"), dry_run(cf, tmp))))(cf)
                for name, cf in STUDIES.items() if not (quick and name == "bigbench-21x9")}
    raw = C.alternate(variants, repeats)
    out = {"repeats": repeats, "studies": {}}
    rows = []
    for name, v in raw.items():
        s = C.stats(C.col(v, "s"))
        out["studies"][name] = {"seconds": s, "jobs": v[0]["jobs"]}
        rows.append([name, v[0]["jobs"], C.triple(s, 1), f"{v[0]['jobs'] / s['median']:.0f}"])
    p = out["studies"]["panda-21x9"]["seconds"]["median"]
    out["goal"] = {"panda_s": p, "met": p <= 20}
    out["table"] = C.md_table(["study", "jobs", "`snakemake -n` s (min / median / max)", "jobs/s"], rows)
    print(out["table"])
    return out


if __name__ == "__main__":
    run("--quick" in sys.argv)
