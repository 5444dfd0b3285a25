"""Scaling: how a study's wall time grows with sources x targets x seeds x models.

Computed, not run: per-run costs measured by the other benchmarks (seconds per training row-token in
a bank of K runs, from `bank`; seconds per evaluated row-token, from `zeroshot`; start + import +
model load per job, from `overhead`; the default study's logged wall of the jobs that load no
model, from `overhead`) are applied to each study's grid:

- train: one job per (model, task), a bank of `seeds` runs, `steps` steps of `batch` rows;
- zeroshot: one job per (model, target), sources x seeds prompts on the test split;
- with `jobs.per_backbone` the train, zeroshot and PANDA-metric jobs of a model are one job each
  (one model load);
- vanilla / panda / spot_topk: one job per (model, target), a bank of sources x seeds runs
  (spot_topk: seeds runs); panda's teacher forward adds half a step;
- dev evaluations every `eval_every` steps (plus step 0) and one test scoring per run.

Rows are `L + max_length` tokens (an upper bound: shorter inputs are padded less). Other models are
scaled by their matmul weights (12 h^2 per layer) relative to MiniLM, at MiniLM's measured rate.
N nodes: stages run one after another; within a stage, jobs spread over N nodes like this one.
"""
from __future__ import annotations

import json

import common as C

MINILM_N = 12 * 384 ** 2 * 6
BERT = {"google/bert_uncased_L-2_H-128_A-2": (2, 128), "google/bert_uncased_L-4_H-512_A-8": (4, 512),
        "google/bert_uncased_L-8_H-512_A-8": (8, 512), "google-bert/bert-base-uncased": (12, 768),
        "google-bert/bert-large-uncased": (24, 1024)}
NODES = (1, 8, 64)
STAGES = (("prepare",), ("train",), ("zeroshot", "vanilla", "spot_topk", "prompt-metrics", "on-metric"),
          ("panda-metric",), ("panda",), ("collect",), ("correlate",), ("figure",))


def model_scale(bcfg) -> float:
    if bcfg.model in BERT:
        layers, h = BERT[bcfg.model]
        return 12 * h * h * layers / MINILM_N
    return 1.0


def per_row_token(bank: dict, K: int) -> float:
    """Seconds per training row-token in a bank of K runs (nearest measured K)."""
    sizes = sorted(bank["sizes"], key=lambda k: abs(int(k) - K))
    v = bank["sizes"][sizes[0]]
    return v["train_s_per_run_step"] / (bank["batch"] * bank["tokens"])


def study_jobs(cfg, m: dict) -> list:
    """(stage verb, seconds) of every job of a study."""
    tr = cfg.training
    jobs = []
    verbs_logged = m["overhead"].get("by_verb", {})
    other = {v: d["wall"] / d["jobs"] for v, d in verbs_logged.items()}
    load = m["overhead"]["start_import_load"]["median"]
    e_tok = m["zeroshot"]["eval_s_per_prompt_example"] / m["zeroshot"]["tokens"]
    S, _T, E = len(cfg.sources), len(cfg.targets), len(cfg.seeds)
    trained = cfg.trained_tasks
    for name, b in cfg.backbones.items():
        scale, tok = model_scale(b), cfg.prompt.length + b.max_length
        def dev(t):
            return cfg.tasks[t].max_dev
        def test(t):
            return cfg.tasks[t].max_test

        def bank_job(K, task, step_factor=1.0):
            c = per_row_token(m["bank"], K) * scale
            steps = tr.steps * K * tr.batch_size * tok * c * step_factor
            evals = (tr.steps // tr.eval_every + 1) * K * dev(task) * tok * e_tok * scale
            return load + steps + evals + K * test(task) * tok * e_tok * scale

        jobs += [("prepare", other.get("prepare", 0.0)) for _ in trained] if name == list(cfg.backbones)[0] else []
        per_model = []  # jobs.per_backbone: these verbs run once per model, loading it once
        per_model.append([("train", bank_job(E, t)) for t in trained])
        methods = cfg.transfer.methods
        zeroshot, panda_metric = [], []
        for t in cfg.targets:
            if "zeroshot" in methods:
                zeroshot.append(("zeroshot", load + S * E * test(t) * tok * e_tok * scale))
            if "vanilla" in methods or "panda" in methods:
                jobs.append(("vanilla", bank_job(S * E, t)))
            if "spot_topk" in methods:
                jobs.append(("spot_topk", bank_job(E, t)))
            if "panda" in methods:
                jobs.append(("panda", bank_job(S * E, t, 1.5)))
                panda_metric.append(("panda-metric",
                                     load + (S + 1) * E * cfg.metrics.panda_examples * tok * e_tok * scale))
        for group in (*per_model, zeroshot, panda_metric):
            if group and cfg.jobs.per_backbone:
                jobs.append((group[0][0], load + sum(sec - load for _, sec in group)))
            else:
                jobs += group
        jobs += [("prompt-metrics", other.get("prompt-metrics", load)), ("on-metric", other.get("on-metric", load))]
        jobs += [("figure", other.get("figure", 0.0)) for _ in range(8)]
    jobs += [("collect", other.get("collect", 0.0)), ("correlate", other.get("correlate", 0.0))]
    return jobs


def wall(jobs: list, nodes: int) -> float:
    total = 0.0
    for stage in STAGES:
        times = sorted((s for v, s in jobs if v in stage), reverse=True)
        # greedy longest-first onto `nodes` machines
        load = [0.0] * min(nodes, max(len(times), 1))
        for s in times:
            load[load.index(min(load))] += s
        total += max(load) if times else 0.0
    return total


def human(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    if seconds < 86400 * 365:
        return f"{seconds / 86400:.0f} d"
    return f"{seconds / 86400 / 365:.0f} years"


def run(quick: bool, measured: dict | None = None) -> dict:
    m = measured or json.loads((C.ROOT / "bench/results.json").read_text())["benchmarks"]
    m = {k: v for k, v in m.items()}
    m["bank"] = {**m["bank"], "batch": C.study().training.batch_size,
                 "tokens": C.study().prompt.length + C.study().backbones["minilm"].max_length}
    m["zeroshot"] = {**m["zeroshot"], "tokens": m["bank"]["tokens"]}
    studies = {"default": "config.yaml", "bigbench-21x9": "studies/bigbench-21x9.yaml",
               "panda-21x9": "studies/panda-21x9.yaml"}
    dag = m.get("dag", {}).get("studies", {})
    out, rows = {"studies": {}}, []
    for name, path in studies.items():
        cfg = C.study(path)
        jobs = study_jobs(cfg, m)
        methods = cfg.transfer.methods
        pairs = len(cfg.sources) * len(cfg.targets) * len(cfg.seeds)
        runs = (len(cfg.trained_tasks) * len(cfg.seeds) + pairs * (("vanilla" in methods or "panda" in methods)
                + ("panda" in methods)) + len(cfg.targets) * len(cfg.seeds) * ("spot_topk" in methods))
        est = {n: wall(jobs, n) for n in NODES}
        out["studies"][name] = {"models": len(cfg.backbones), "sources": len(cfg.sources), "targets": len(cfg.targets),
                                "seeds": len(cfg.seeds), "steps": cfg.training.steps, "jobs_model": len(jobs),
                                "jobs_dag": dag.get(name, {}).get("jobs"), "wall_s": est,
                                "training_runs": runs * len(cfg.backbones)}
        rows.append([name, f"{len(cfg.sources)} x {len(cfg.targets)} x {len(cfg.seeds)} x {len(cfg.backbones)}",
                     cfg.training.steps, runs * len(cfg.backbones),
                     f"{len(jobs)}" + (f" ({dag[name]['jobs']})" if dag.get(name, {}).get("jobs") else "")]
                    + [human(est[n]) for n in NODES])
    logged = m["overhead"].get("study_wall_s")
    out["default_logged_s"] = logged
    out["table"] = C.md_table(["study", "sources x targets x seeds x models", "steps", "training runs",
                               "jobs modelled (dry run)"] + [f"{n} node{'s' if n > 1 else ''}" for n in NODES], rows)
    print(out["table"])
    if logged:
        print(f"default study, summed job wall from its logs: {human(logged)} "
              f"(model: {human(out['studies']['default']['wall_s'][1])})")
    return out
