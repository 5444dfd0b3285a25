"""The ``promptgrid`` command: one verb per pipeline stage, each what one Snakemake rule runs.

Every study verb takes ``--config`` (the study's resolved ``config.json``), loads the plugins it names,
and calls one function of :mod:`promptgrid.pipeline` with a :class:`~promptgrid.pipeline.context.Study`.

Exit codes (:mod:`promptgrid.errors`): 2 for bad input (a usage error, an ``InputError`` such as a
``ConfigError``), 3 for a missing resource (``FileNotFoundError``, ``MissingResource``), 1 for anything else,
which is a bug or the machine's fault and always prints its traceback. ``--debug`` or ``PROMPTGRID_DEBUG=1``
prints the traceback of every error.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from typing import Optional

from promptgrid.errors import InputError

#: the top-level help (plain text: argparse prints it as is, so no Sphinx roles)
DESCRIPTION = """\
Run one stage of a promptgrid study (soft-prompt transferability). Each verb is what one rule of the
Snakemake workflow runs; run the whole study with snakemake, or one stage by hand with a verb.

Every study verb takes --config: the study's YAML file, or the config.json the workflow resolved."""
EPILOG = """\
exit codes:
  0  done
  1  internal error: a bug, or the machine's (a CUDA error...); the traceback is always printed
  2  bad input: a usage error, a config value, a data row, a file of the wrong shape
  3  missing resource: a model, a data file, a fetched artifact or a hub object that is not there

environment:
  PROMPTGRID_DEBUG=1   print the traceback of every error (as --debug does)
  PROMPTGRID_THREADS   torch threads of a job (default: SLURM_CPUS_PER_TASK, else torch's own)"""
DEBUG_HINT = "(run with --debug or PROMPTGRID_DEBUG=1 for the traceback)"

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
    "pin": ("pin", "pin", ("out?",), (),
            "write the study with its hub models and datasets pinned to their resolved commits (a new file, "
            "<config>.pinned.yaml, unless --out names one; comments kept)"),
    "upload-bank": ("bank", "upload_bank", ("backbone", "bank", "repo", "private!"), (),
                    "upload a prompt bank folder (export-peft-bank's, card included) to a hub model repo "
                    "(--private: a new repo is private)"),
}
_MODEL_MODULES = ("torch", "promptgrid.models.backbones", "promptgrid.objectives.factory", "promptgrid.engine.training")
_TABLE_MODULES = ("promptgrid.analysis.gains", "promptgrid.analysis.correlation", "promptgrid.analysis.summary")
#: what each verb imports before its work starts; the "started in" log line times them (per-job overhead).
#: Table and figure verbs start without torch.
VERB_MODULES = {
    "pin": ("promptgrid.storage.hub",), "upload-bank": ("promptgrid.storage.hub",),
    "prepare": ("promptgrid.data.splits",),
    "prompt-similarity": ("torch", "promptgrid.similarity.prompt_math"),
    "collect": _TABLE_MODULES, "correlate": _TABLE_MODULES, "summarize": _TABLE_MODULES,
    "figure": ("promptgrid.figures.style",), "check": (), "sources": (), "fetch": ("promptgrid.data.artifacts",),
}


def _threads() -> None:
    # a job gets what Snakemake/SLURM gave it; torch would otherwise oversubscribe shared nodes
    name = "PROMPTGRID_THREADS" if os.environ.get("PROMPTGRID_THREADS") else "SLURM_CPUS_PER_TASK"
    n = os.environ.get(name)
    if n:
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"environment variable {name}={n!r}: give a whole number of threads >= 1")
        import torch

        torch.set_num_threads(int(n))


def version() -> str:
    """The installed distribution's version; the package's own where promptgrid runs from a source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("promptgrid")
    except PackageNotFoundError:
        from promptgrid import __version__

        return __version__


def debug_from_env() -> bool:
    return os.environ.get("PROMPTGRID_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptgrid", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"promptgrid {version()}")
    p.add_argument("--debug", action="store_true",
                   help="print the full traceback of every error (or set PROMPTGRID_DEBUG=1)")
    # every verb takes --debug after it too; SUPPRESS keeps a verb's parser from resetting the global flag
    verb_flags = argparse.ArgumentParser(add_help=False)
    verb_flags.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="print the full traceback of every error")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    sp = sub.add_parser("check", parents=[verb_flags], help="validate a study config and print its grid")
    sp.add_argument("--config", help="study config (YAML, or the resolved config.json)")
    sp.add_argument("config_positional", nargs="?", metavar="CONFIG",
                    help="deprecated: the config as a positional argument; use --config")
    sub.add_parser("sources", parents=[verb_flags],
                   help="list the registered data sources, their pinned packages and their tasks")
    sp = sub.add_parser("bundle", parents=[verb_flags],
                        help="write one folder an offline node runs the study's model jobs from "
                             "(prepared splits, safetensors weights, tokenizer, config)")
    sp.add_argument("--config", required=True, help="study config (YAML, or the resolved config.json)")
    sp.add_argument("--out", required=True, help="the bundle folder to write (must not exist, or be empty)")
    sp.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="how the weights are stored: fp32 (bit-identical results) or bf16 (half the size, "
                         "upcast on load)")
    sp.add_argument("--prepare", action="store_true",
                    help="prepare tasks whose splits are missing or out of date first, instead of refusing")
    for name, (_, _, args, many, help_text) in VERBS.items():
        sp = sub.add_parser(name, parents=[verb_flags], help=help_text)
        sp.add_argument("--config", required=True, help="study config (YAML, or the resolved config.json)")
        for a in args:
            if a.endswith("!"):  # a switch
                sp.add_argument(f"--{a.rstrip('!')}", action="store_true")
                continue
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


def _check_config_argument(parser: argparse.ArgumentParser, args) -> None:
    """``check`` took its config positionally before it took ``--config`` as every verb does: still accepted,
    with a deprecation note on stderr."""
    if args.verb != "check":
        return
    positional = args.config_positional
    if positional is not None:
        if args.config is not None and args.config != positional:
            parser.error(f"check: give the config once, as --config (got --config {args.config} and {positional})")
        print(f"promptgrid check: the positional config is deprecated; use: promptgrid check --config {positional}",
              file=sys.stderr)
        args.config = positional
    if args.config is None:
        parser.error("check: the following arguments are required: --config")


def exit_code(err: BaseException) -> int:
    """The exit code of an error that ended a verb: 3 missing resource, 2 bad input, 1 anything else (a bug)."""
    if isinstance(err, FileNotFoundError):  # MissingResource included
        return 3
    return 2 if isinstance(err, InputError) else 1  # ConfigError, SchemaError, DataError... are InputErrors


def report_error(verb: str, err: BaseException, debug: bool) -> int:
    """Print what stopped ``verb`` to stderr and return its exit code. Bad input and missing resources get one
    line (and the traceback under debug); anything else is a bug and always gets its traceback."""
    code = exit_code(err)
    if code == 1 or debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    if code == 1:
        print(f"promptgrid {verb}: internal error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    else:
        print(f"promptgrid {verb}: error: {err}", file=sys.stderr)
        if not debug:
            print(DEBUG_HINT, file=sys.stderr)
        sys.stderr.flush()
    return code


def main(argv=None) -> int:
    t0 = time.time()
    # run as the command (argv None), this process is the job: time it from its start
    offset = (_process_age() or 0.0) if argv is None else 0.0
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here (argparse)
    _check_config_argument(parser, args)
    debug = args.debug or debug_from_env()
    try:
        _threads()
        for module in ("promptgrid.pipeline.context", *VERB_MODULES.get(args.verb, _MODEL_MODULES)):
            importlib.import_module(module)
        print(f"[promptgrid {args.verb}] started in {offset + time.time() - t0:.1f}s (interpreter and imports)",
              file=sys.stderr, flush=True)
        code = dispatch(args)
    except Exception as err:  # noqa: BLE001 -- every error becomes an exit code; KeyboardInterrupt passes
        return report_error(args.verb, err, debug)
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
    kwargs = {a.rstrip("?!"): getattr(args, a.rstrip("?!")) for a in arg_names}
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
