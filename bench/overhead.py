"""Per-job overhead: process start + imports + model load, as a share of the default study's wall time.

Read from the logs of a finished default study (results/default/logs). Every job logs, timed from its
own process start (Linux /proc): "[promptgrid <verb>] started in X s (interpreter and imports)" once the
interpreter is up and the verb's modules are imported, "[load] backbone minilm in X s" for a model load,
and "[promptgrid <verb>] finished in X s" at the end. A job's overhead is started + load; the share is
the sum of overheads over the sum of job walls. Snakemake's own scheduling between jobs is in neither.
For context the same pieces are also measured here in fresh processes, alternated with a bare
interpreter (`python -c pass`): the jobs module, the model-job imports, and load_backbone (MiniLM).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import common as C

LOGS = C.ROOT / "results/default/logs"
LOAD = ("import time, sys; t0 = time.perf_counter(); import promptgrid.pipeline; t1 = time.perf_counter(); "
        "from promptgrid.models.backbones import load_backbone; from promptgrid.config import load_config, default_cache_dir; "
        "cfg = load_config('config.yaml'); load_backbone('minilm', cfg.backbones['minilm'], default_cache_dir()); "
        "print(t1 - t0, time.perf_counter() - t1)")


def python(code: str) -> tuple:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=C.ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout


def read_logs() -> list:
    """One dict per finished job: verb, wall, startup (interpreter + imports) and load (model), in logged s."""
    jobs = []
    for path in sorted(LOGS.rglob("*.log")) if LOGS.exists() else []:
        text = path.read_text(errors="replace")
        done = re.findall(r"\[promptgrid ([\w-]+)\] finished in ([\d.]+)s", text)
        started = re.findall(r"\[promptgrid [\w-]+\] started in ([\d.]+)s", text)
        if not done:
            continue
        loads = re.findall(r"\[load\] backbone \S+ in ([\d.]+)s", text)
        jobs.append({"verb": done[-1][0], "wall": float(done[-1][1]), "load": sum(map(float, loads)),
                     "startup": float(started[-1]) if started else None, "log": str(path.relative_to(C.ROOT))})
    return jobs


def run(quick: bool) -> dict:
    repeats = 3 if quick else 6

    def bare(r):
        return {"s": python("pass")[0]}

    def imports(r):
        return {"s": python("import promptgrid.pipeline")[0]}

    def load(r):
        seconds, stdout = python(LOAD)
        t_import, t_load = map(float, stdout.split())
        return {"s": seconds, "import": t_import, "load": t_load}

    def model_imports(r):
        return {"s": python("import promptgrid.pipeline, promptgrid.engine.training, promptgrid.objectives")[0]}

    raw = C.alternate({"bare": bare, "import": imports, "model_import": model_imports, "load": load}, repeats)
    s = {k: C.stats(C.col(v, "s")) for k, v in raw.items()}
    load_s = C.stats(C.col(raw["load"], "load"))
    out = {"repeats": repeats, "python_start": s["bare"], "import_jobs": s["import"],
           "import_model_job": s["model_import"], "load_backbone": load_s, "start_import_load": s["load"]}
    rows = [["`python -c pass` (interpreter start)", C.triple(s["bare"])],
            ["`python -c 'import promptgrid.pipeline'` (table and figure jobs start without torch)",
             C.triple(s["import"])],
            ["the same plus training and objectives (torch): what a model job imports", C.triple(s["model_import"])],
            ["load_backbone(minilm) after `import promptgrid.pipeline` (transformers' import is most of it)",
             C.triple(load_s)],
            ["start + import + load, one process", C.triple(s["load"])]]
    jobs = read_logs()
    out["jobs"] = len(jobs)
    if jobs:
        start = s["bare"]["median"]
        old_logs = any(j["startup"] is None for j in jobs)
        for j in jobs:
            if j["startup"] is None:  # logs from before the CLI timed its own start: add measured costs
                j["startup"] = start + (s["model_import"] if j["load"] else s["import"])["median"]
                j["wall"] += start
            # a job's overhead cannot exceed its wall
            j["overhead"] = min(j["startup"] + j["load"], j["wall"])
        total_wall = sum(j["wall"] for j in jobs)
        overhead = sum(j["overhead"] for j in jobs)
        by_verb = {}
        for j in jobs:
            v = by_verb.setdefault(j["verb"], {"jobs": 0, "wall": 0.0, "overhead": 0.0})
            v["jobs"] += 1
            v["wall"] += j["wall"]
            v["overhead"] += j["overhead"]
        out.update({"study_wall_s": total_wall, "overhead_s": overhead, "share": overhead / total_wall,
                    "by_verb": by_verb, "from_old_logs": old_logs})
        out["goal"] = {"share": out["share"], "met": out["share"] <= 0.10}
        rows.append([f"default study: {len(jobs)} finished jobs, summed wall (logs)", f"{total_wall:.0f} s"])
        what = "start + import (measured today) + model load (logs)" if old_logs else \
            "start + imports + model load (all from the logs)"
        rows.append([f"of which {what}", f"{overhead:.0f} s = **{100 * out['share']:.1f}%**"])
        verbs = ", ".join(f"{k} {v['jobs']} ({v['overhead'] / v['wall'] * 100:.0f}% of {v['wall']:.0f} s)"
                          for k, v in sorted(by_verb.items()))
        rows.append(["per verb: jobs (overhead share of their wall)", verbs])
    else:
        out["goal"] = {"share": None, "met": None}
        rows.append(["default study logs", "none under results/default/logs: run the default study first"])
    out["table"] = C.md_table(["what", "seconds min / median / max"], rows)
    print(out["table"])
    return out


if __name__ == "__main__":
    run("--quick" in sys.argv)
