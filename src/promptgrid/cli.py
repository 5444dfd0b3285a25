"""The ``promptgrid`` command: one verb per pipeline stage, each what one Snakemake rule runs.

Every study verb takes ``--config`` (the study's resolved ``config.json``), loads the plugins it names,
and calls one function of :mod:`promptgrid.pipeline` with a :class:`~promptgrid.pipeline.context.Study`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Optional

#: verb -> (module, function, the arguments it takes, those that take several values, help)
VERBS = {
    "fetch": ("fetch", "fetch", ("source",), ("source",),
              "put data sources' pinned files into the machine's cache, once, checked against their sha256"),
    "prepare": ("prepare", "prepare", ("task",), (), "normalise and split one task"),
    "train": ("train", "train", ("backbone", "task"), ("task",), "train a task's own prompt for every seed"),
    "transfer": ("transfer", "transfer", ("backbone", "target", "method"), ("target",),
                 "run one transfer method from every source into a target"),
    "prompt-similarity": ("similarity", "prompt_similarity", ("backbone",), (),
                          "every prompt-only similarity metric for every (source, target) pair"),
    "model-similarity": ("similarity", "model_similarity", ("backbone", "metric", "target?"), ("target",),
                         "one model-based similarity metric for every pair (or every source into each target)"),
    "collect": ("tables", "collect", (), (),
                "gather parts into tables/transfer, similarity, curves and gains (and cross_model)"),
    "correlate": ("tables", "correlate", (), (), "correlations, metric comparison, retrieval and summary tables"),
    "summarize": ("tables", "summarize", (), (), "print which metric predicts gains best"),
    "figure": ("figures", "figure", ("kind", "backbone"), (), "draw every variant of one figure kind"),
    "project": ("crossmodel", "project", ("projector", "fit"), (),
                "cross-model transfer: fit one registered projector one way (distance or task) and evaluate it "
                "on the held-out tasks"),
    "export-peft": ("peft", "export_peft", ("backbone", "prompt", "out"), (),
                    "export a prompt as a PEFT PromptTuning adapter folder"),
    "export-peft-bank": ("peft", "export_peft_bank", ("backbone", "out"), (),
                         "export every task prompt of a backbone as PEFT adapters"),
    "import-peft": ("peft", "import_peft", ("backbone", "adapter", "out"), (),
                    "import a PEFT PromptTuning adapter as a task prompt"),
}
_MODEL_MODULES = ("torch", "promptgrid.models.backbones", "promptgrid.objectives.factory", "promptgrid.engine.training")
_TABLE_MODULES = ("promptgrid.analysis.gains", "promptgrid.analysis.correlation", "promptgrid.analysis.summary")
#: what each verb imports before its work starts; the "started in" log line times them (per-job overhead).
#: Table and figure verbs start without torch.
VERB_MODULES = {
    "prepare": ("promptgrid.data.splits",),
    "prompt-similarity": ("torch", "promptgrid.similarity.prompt_math"),
    "collect": _TABLE_MODULES, "correlate": _TABLE_MODULES, "summarize": _TABLE_MODULES,
    "figure": ("promptgrid.figures.style",), "check": (), "sources": (), "fetch": ("promptgrid.data.artifacts",),
}


def _threads() -> None:
    # a job gets what Snakemake/SLURM gave it; torch would otherwise oversubscribe shared nodes
    n = os.environ.get("PROMPTGRID_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
    if n:
        import torch

        torch.set_num_threads(int(n))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptgrid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    sp = sub.add_parser("check", help="validate a study config and print its grid")
    sp.add_argument("config")
    sub.add_parser("sources", help="list the registered data sources, their pinned packages and their tasks")
    sp = sub.add_parser("bundle", help="write one folder an offline node runs the study's model jobs from "
                                       "(prepared splits, safetensors weights, tokenizer, config)")
    sp.add_argument("--config", required=True, help="study config (YAML, or the resolved config.json)")
    sp.add_argument("--out", required=True, help="the bundle folder to write (must not exist, or be empty)")
    sp.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="how the weights are stored: fp32 (bit-identical results) or bf16 (half the size, "
                         "upcast on load)")
    sp.add_argument("--prepare", action="store_true",
                    help="prepare tasks whose splits are missing or out of date first, instead of refusing")
    for name, (_, _, args, many, help_text) in VERBS.items():
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--config", required=True, help="study config (YAML, or the resolved config.json)")
        for a in args:
            optional = a.endswith("?")
            a = a.rstrip("?")
            sp.add_argument(f"--{a}", required=not optional, nargs="+" if a in many else None,
                            help="one or more, handled in one process" if a in many else None)
    return p


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
    for module in ("promptgrid.pipeline.context", *VERB_MODULES.get(args.verb, _MODEL_MODULES)):
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
    if args.verb == "sources":
        from promptgrid.data.catalog import sources_markdown
        from promptgrid.pipeline.plugins import load_builtins

        load_builtins()
        print(sources_markdown())
        return 0
    if args.verb == "bundle":
        from promptgrid.pipeline.bundle import bundle

        bundle(args.config, args.out, dtype=args.dtype, prepare=args.prepare)
        return 0
    from promptgrid.pipeline.plugins import load_config_with_plugins

    if args.verb == "check":
        cfg = load_config_with_plugins(args.config)
        print(f"study {cfg.study}: {len(cfg.backbones)} backbones, {len(cfg.sources)} sources x "
              f"{len(cfg.targets)} targets, seeds {cfg.seeds}, methods {cfg.transfer.methods}, "
              f"metrics {cfg.metrics.names}")
        return 0
    from promptgrid.pipeline.context import Study

    module, function, arg_names, many, _ = VERBS[args.verb]
    fn = getattr(importlib.import_module(f"promptgrid.pipeline.{module}"), function)
    study = Study.from_file(args.config)
    kwargs = {a.rstrip("?"): getattr(args, a.rstrip("?")) for a in arg_names}
    several = [a for a in many if kwargs.get(a) is not None]
    if several:  # the job's Study caches the model: loaded once for every task / target it handles
        name = several[0]
        for value in _each(kwargs.pop(name), args.verb):
            fn(study, **kwargs, **{name: value})
        return 0
    result = fn(study, **kwargs)
    if args.verb == "summarize":
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
