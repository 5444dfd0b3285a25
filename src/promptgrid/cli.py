"""The ``promptgrid`` command: one verb per pipeline stage, each what one Snakemake rule runs."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional


def _threads() -> None:
    # a job gets what Snakemake/SLURM gave it; torch would otherwise oversubscribe shared nodes
    n = os.environ.get("PROMPTGRID_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
    if n:
        import torch

        torch.set_num_threads(int(n))


def _study(args):
    from promptgrid.jobs import Study

    return Study.from_file(args.config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptgrid", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(name, help_text, *args, many=()):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--config", required=True, help="study config (YAML, or the resolved config.json)")
        for a in args:
            sp.add_argument(f"--{a}", required=True, nargs="+" if a in many else None,
                            help="one or more, handled in one process" if a in many else None)
        return sp

    sp = sub.add_parser("check", help="validate a study config and print its grid")
    sp.add_argument("config")
    sub.add_parser("fetch-bigbench", help="download the BIG-bench source archive into the cache, once")
    verb("prepare", "normalise and split one task", "task")
    verb("train", "train a task's own prompt for every seed", "backbone", "task", many=("task",))
    verb("zeroshot", "evaluate every source prompt on a target", "backbone", "target", many=("target",))
    verb("transfer", "train every transfer run of a method into a target", "backbone", "target", "method")
    verb("prompt-metrics", "prompt-only similarity metrics for every pair", "backbone")
    verb("on-metric", "ON: overlap of activated neurons, masks cached per prompt", "backbone")
    verb("panda-metric", "PANDA metric for every source into a target", "backbone", "target", many=("target",))
    verb("collect", "gather parts into tables/transfer, similarity and curves")
    verb("correlate", "correlations, metric comparison, retrieval and summary tables")
    sp = verb("figure", "draw one figure kind", "kind", "backbone")
    sp.add_argument("--out", required=True, help="output prefix; .png and .pdf are written")
    sp.add_argument("--method", default=None)
    sp.add_argument("--metric", default=None)
    sp.add_argument("--target", default=None)
    verb("summarize", "print which metric predicts gains best")
    verb("cross-model", "train one cross-model projector and evaluate it on the held-out tasks", "projector",
         "objective")
    verb("cross-model-table", "gather the cross-model parts into tables/cross_model.parquet")
    sp = verb("cross-model-figure", "draw the cross-model gain bars")
    sp.add_argument("--out", required=True, help="output prefix; .png and .pdf are written")
    sp = verb("export-peft", "export a prompt as a PEFT PromptTuning adapter folder", "backbone", "prompt", "out")
    sp = verb("import-peft", "import a PEFT PromptTuning adapter as a task prompt", "backbone", "adapter", "out")
    sp = verb("export-peft-bank", "export every task prompt of a backbone as PEFT adapters", "backbone", "out")
    return p


_MODEL_MODULES = ("torch", "promptgrid.backbones", "promptgrid.objectives", "promptgrid.training")
#: what each verb imports before its work starts; the "started in" log line times them (per-job overhead)
VERB_MODULES = {
    "prepare": ("promptgrid.tasks",),
    "prompt-metrics": ("torch", "promptgrid.metrics"),
    "collect": ("promptgrid.analysis",), "correlate": ("promptgrid.analysis",),
    "summarize": ("promptgrid.analysis",),
    "figure": ("promptgrid.plots",), "cross-model-figure": ("promptgrid.plots",),
    "cross-model-table": (), "check": (), "fetch-bigbench": ("promptgrid.tasks",),
}


def _process_age() -> Optional[float]:
    """Seconds since this process started (Linux /proc), so a job's logged times include the interpreter
    start and every import; None where /proc is missing."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def main(argv=None) -> int:
    t0 = time.time()
    # run as the command (argv None), this process is the job: time it from its start
    offset = (_process_age() or 0.0) if argv is None else 0.0
    args = build_parser().parse_args(argv)
    _threads()
    import importlib

    for module in ("promptgrid.jobs", *VERB_MODULES.get(args.verb, _MODEL_MODULES)):
        importlib.import_module(module)
    from promptgrid.config import ConfigError

    print(f"[promptgrid {args.verb}] started in {offset + time.time() - t0:.1f}s (interpreter and imports)",
          file=sys.stderr, flush=True)
    try:
        code = dispatch(args)
    except (ConfigError, FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        print(f"promptgrid {args.verb}: error: {err}", file=sys.stderr)
        return 2
    print(f"[promptgrid {args.verb}] finished in {offset + time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    return code or 0


def _each(names: list, verb: str):
    """Yield each name, with a progress line when one job handles several."""
    t0 = time.time()
    for i, name in enumerate(names):
        if len(names) > 1:
            eta = "" if i == 0 else f", ETA {(time.time() - t0) / i * (len(names) - i):.0f}s"
            print(f"[{verb}] {i + 1}/{len(names)}: {name}{eta}", flush=True)
        yield name


def dispatch(args) -> int:
    from promptgrid import jobs

    if args.verb == "fetch-bigbench":
        from promptgrid.config import default_cache_dir
        from promptgrid.tasks import bigbench_archive

        path = bigbench_archive(default_cache_dir())
        print(f"BIG-bench archive: {path} ({path.stat().st_size / 1e6:.0f} MB)")
        return 0
    if args.verb == "check":
        from promptgrid.config import load_config

        cfg = load_config(args.config)
        print(f"study {cfg.study}: {len(cfg.backbones)} backbones, {len(cfg.sources)} sources x "
              f"{len(cfg.targets)} targets, seeds {cfg.seeds}, methods {cfg.transfer.methods}, "
              f"metrics {cfg.metrics.names}")
        return 0
    study = _study(args)
    if args.verb == "prepare":
        jobs.prepare(study, args.task)
    elif args.verb == "train":
        for task in _each(args.task, "train"):  # the Study caches the model: loaded once for all tasks
            jobs.train(study, args.backbone, task)
    elif args.verb == "zeroshot":
        for target in _each(args.target, "zeroshot"):
            jobs.zeroshot(study, args.backbone, target)
    elif args.verb == "transfer":
        jobs.transfer(study, args.backbone, args.target, args.method)
    elif args.verb == "prompt-metrics":
        jobs.prompt_metrics(study, args.backbone)
    elif args.verb == "on-metric":
        jobs.on_metric(study, args.backbone)
    elif args.verb == "panda-metric":
        for target in _each(args.target, "panda-metric"):
            jobs.panda_metric(study, args.backbone, target)
    elif args.verb == "collect":
        jobs.collect(study)
    elif args.verb == "correlate":
        jobs.correlate(study)
    elif args.verb == "figure":
        jobs.figure(study, args.kind, args.backbone, Path(args.out), method=args.method, metric=args.metric,
                    target=args.target)
    elif args.verb.startswith("cross-model"):
        from promptgrid import jobs_crossmodel

        if args.verb == "cross-model":
            jobs_crossmodel.cross_model(study, args.projector, args.objective)
        elif args.verb == "cross-model-table":
            jobs_crossmodel.cross_model_table(study)
        else:
            jobs_crossmodel.cross_model_figure(study, Path(args.out))
    elif args.verb == "summarize":
        print(jobs.summarize(study))
    elif args.verb == "export-peft":
        jobs.export_peft(study, args.backbone, Path(args.prompt), Path(args.out))
    elif args.verb == "export-peft-bank":
        jobs.export_peft_bank(study, args.backbone, Path(args.out))
    elif args.verb == "import-peft":
        jobs.import_peft(study, args.backbone, Path(args.adapter), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
