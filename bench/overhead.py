"""Per-job overhead: process start + imports + model load, as a share of the default study's wall time.

Measured here, in fresh processes alternated with a bare interpreter (`python -c pass`):
`python -c 'import promptgrid.jobs'` and the same plus load_backbone (MiniLM). Read from the logs of
a finished default study (results/default/logs): each job's "[promptgrid <verb>] finished in X s"
(from the CLI's start, so imports are in it; the bare interpreter start is added) and, for jobs
that load the model, "[load] backbone minilm in X s".

Share = sum over jobs of (import + logged load) / sum of (logged wall + interpreter start), each job's
overhead capped at its wall (today's import time and the logged times were taken under different load).
Snakemake's own scheduling between jobs is not in either.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import common as C

LOGS = C.ROOT / "results/default/logs"
LOAD = ("import time, sys; t0 = time.perf_counter(); import promptgrid.jobs; t1 = time.perf_counter(); "
        "from promptgrid.backbones import load_backbone; from promptgrid.config import load_config, default_cache_dir; "
        "cfg = load_config('config.yaml'); load_backbone('minilm', cfg.backbones['minilm'], default_cache_dir()); "
        "print(t1 - t0, time.perf_counter() - t1)")


def python(code: str) -> tuple:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=C.ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout


def read_logs() -> list:
    """One dict per finished job: verb, wall (logged s), load (logged s or 0), log path."""
    jobs = []
    for path in sorted(LOGS.rglob("*.log")) if LOGS.exists() else []:
        text = path.read_text(errors="replace")
        done = re.findall(r"\[promptgrid ([\w-]+)\] finished in ([\d.]+)s", text)
        if not done:
            continue
        loads = re.findall(r"\[load\] backbone \S+ in ([\d.]+)s", text)
        jobs.append({"verb": done[-1][0], "wall": float(done[-1][1]), "load": sum(map(float, loads)),
                     "log": str(path.relative_to(C.ROOT))})
    return jobs


def run(quick: bool) -> dict:
    repeats = 3 if quick else 6

    def bare(r):
        return {"s": python("pass")[0]}

    def imports(r):
        return {"s": python("import promptgrid.jobs")[0]}

    def load(r):
        seconds, stdout = python(LOAD)
        t_import, t_load = map(float, stdout.split())
        return {"s": seconds, "import": t_import, "load": t_load}

    raw = C.alternate({"bare": bare, "import": imports, "load": load}, repeats)
    s = {k: C.stats(C.col(v, "s")) for k, v in raw.items()}
    load_s = C.stats(C.col(raw["load"], "load"))
    out = {"repeats": repeats, "python_start": s["bare"], "import_jobs": s["import"], "load_backbone": load_s,
           "start_import_load": s["load"]}
    rows = [["`python -c pass` (interpreter start)", C.triple(s["bare"])],
            ["`python -c 'import promptgrid.jobs'`", C.triple(s["import"])],
            ["load_backbone(minilm), in that process", C.triple(load_s)],
            ["start + import + load, one process", C.triple(s["load"])]]
    jobs = read_logs()
    out["jobs"] = len(jobs)
    if jobs:
        start, imp = s["bare"]["median"], s["import"]["median"]
        total_wall = sum(j["wall"] for j in jobs) + start * len(jobs)
        # a job's overhead cannot exceed its wall (today's import time vs the logs' may differ in load)
        cost = lambda j, load: min(imp + load, j["wall"] + start)
        logged = sum(cost(j, j["load"]) for j in jobs)
        measured = sum(cost(j, load_s["median"] if j["load"] else 0.0) for j in jobs)
        by_verb = {}
        for j in jobs:
            v = by_verb.setdefault(j["verb"], {"jobs": 0, "wall": 0.0, "overhead": 0.0})
            v["jobs"] += 1
            v["wall"] += j["wall"] + start
            v["overhead"] += cost(j, j["load"])
        out.update({"study_wall_s": total_wall, "overhead_s": logged, "share": logged / total_wall,
                    "share_measured_load": measured / total_wall, "by_verb": by_verb})
        out["goal"] = {"share": out["share"], "met": out["share"] <= 0.10}
        rows.append([f"default study: {len(jobs)} finished jobs, summed wall (logs)", f"{total_wall:.0f} s"])
        rows.append(["of which start + import (measured) + model load (logs)",
                     f"{logged:.0f} s = **{100 * out['share']:.1f}%**"])
        rows.append(["same with today's measured load time instead of the logged one",
                     f"{measured:.0f} s = {100 * out['share_measured_load']:.1f}%"])
        verbs = ", ".join(f"{k} {v['jobs']} ({v['overhead'] / v['wall'] * 100:.0f}%)"
                          for k, v in sorted(by_verb.items()))
        rows.append(["per verb: jobs (overhead share)", verbs])
    else:
        out["goal"] = {"share": None, "met": None}
        rows.append(["default study logs", "none under results/default/logs: run the default study first"])
    out["table"] = C.md_table(["what", "seconds min / median / max"], rows)
    print(out["table"])
    return out


if __name__ == "__main__":
    run("--quick" in sys.argv)
