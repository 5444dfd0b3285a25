"""Checks and files that the Snakemake workflow needs while it builds the DAG (before any job runs)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from promptgrid.config import ConfigError, StudyConfig
from promptgrid.errors import InputError
from promptgrid.storage.files import atomic_write_text

ORIGIN_FILE = ".study-origin.json"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class MergedStudyError(InputError):
    """Snakemake merged a ``configfile:`` directive's study with the one given by ``--configfile``."""


def check_one_study(configfiles: list, cli_configfiles: list, replaced: bool = False) -> None:
    """Fail when the config is a merge of two studies: Snakemake loads a ``configfile:`` directive's file and then
    updates it with ``--configfile``, so the default study's tasks, sources and targets join the given study's
    (snakedeploy's outer Snakefile has such a directive). Several ``--configfile`` files are the user's own
    choice, and ``--replace-workflow-config`` drops the directive's study: neither is refused."""
    given = {str(Path(f).resolve()) for f in cli_configfiles}
    directive = [str(f) for f in configfiles if str(Path(f).resolve()) not in given]
    if not given or not directive or replaced:
        return
    cli = ", ".join(str(f) for f in cli_configfiles)
    raise MergedStudyError(
        f"two study files were merged: {', '.join(directive)} (read by a configfile: directive) and "
        f"{cli} (--configfile). Snakemake updates the first with the second, so the first study's tasks and "
        f"pairs would run too. Guard the directive with `if not workflow.overwrite_configfiles:` (snakedeploy "
        f"writes it unguarded), run with --replace-workflow-config, or put the study into {directive[0]}")


def check_inputs_exist(cfg: StudyConfig, model_stack: bool = True) -> None:
    """Fail at DAG build on inputs that are local and missing: data files, model folders, prompt files.

    Hub ids are not checked here: a study that needs the hub fails in the job that loads it. ``model_stack``
    False (Snakemake builds the DAG from a checkout, without promptgrid installed: no torch) skips what needs
    it, the models and the type of a PEFT adapter: the jobs check them.
    """
    for name, task in cfg.tasks.items():
        if task.source == "local" and not Path(os.path.expanduser(task.path)).exists():
            raise ConfigError(f"tasks.{name}.path", f"data file {task.path} does not exist")
        if task.source == "hf" and task.data_files and not any(Path().glob(task.data_files)) \
                and not Path(os.path.expanduser(task.data_files)).exists():
            raise ConfigError(f"tasks.{name}.data_files", f"no file matches {task.data_files}")
    if model_stack:
        from promptgrid.models.backbones import BackboneError
        from promptgrid.models.loading import resolve_model
        from promptgrid.models.peft_io import PEFT_TYPES

        for name, bb in cfg.backbones.items():
            try:
                resolve_model(name, bb)
            except BackboneError as err:
                raise ConfigError(f"backbones.{name}.model", str(err)) from None
    for name, task in cfg.tasks.items():
        for bname, adapter in task.peft_adapters.items():
            key = f"tasks.{name}.peft_adapters.{bname}"
            folder = Path(os.path.expanduser(adapter))
            if folder.exists():
                missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (folder / f).exists()]
                if missing:
                    raise ConfigError(key, f"PEFT adapter folder {adapter} lacks {', '.join(missing)}")
                try:
                    adapter_cfg = json.loads((folder / "adapter_config.json").read_text())
                    n_virtual, peft_type = adapter_cfg.get("num_virtual_tokens"), adapter_cfg.get("peft_type")
                except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
                    raise ConfigError(key, f"{folder / 'adapter_config.json'} is not a JSON object: {err}") from None
                held = PEFT_TYPES.get(peft_type) if model_stack else None
                if held is not None and held != cfg.prompt.kind:
                    raise ConfigError(key, f"adapter {adapter} is a PEFT {peft_type} adapter, which holds {held} "
                                           f"prompts, but prompt.kind is {cfg.prompt.kind!r}")
                if n_virtual is not None and n_virtual != cfg.prompt.length:
                    raise ConfigError(key, f"adapter {adapter} has {n_virtual} virtual tokens, prompt.length is "
                                           f"{cfg.prompt.length}; transfer banks need one length")
            elif not HUB_ID.fullmatch(adapter):
                raise ConfigError(key, f"{adapter!r} is neither an existing adapter folder nor a hub id (owner/name)")
    if cfg.prompt.init == "file" and not Path(cfg.prompt.init_file).exists():
        raise ConfigError("prompt.init_file", f"prompt file {cfg.prompt.init_file} does not exist")


def check_task_kinds(cfg: StudyConfig) -> None:
    """Fail at DAG build when a trained task's kind has no path on one of the backbones (span_qa / ner
    on encoder and masked_lm backbones need ``promptgrid.objectives.tagging``)."""
    from promptgrid.objectives.factory import unsupported

    for name in cfg.trained_tasks:
        task = cfg.tasks[name]
        for bname, bb in cfg.backbones.items():
            why = unsupported(bb.kind, task.kind)
            if why:
                raise ConfigError(f"tasks.{name}.kind", f"task '{name}' is a {task.kind} task, which backbone "
                                                        f"'{bname}' ({bb.kind}) cannot run: {why}")


def check_study_dir(cfg: StudyConfig, config_files: list) -> None:
    """Refuse to let two different study configs write into the same results/<study>/ folder."""
    root = cfg.study_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError("results_dir", f"cannot write to {root}: {err.strerror}") from None
    origin = root / ORIGIN_FILE
    mine = sorted(config_files)
    if origin.exists() and mine:
        theirs = json.loads(origin.read_text()).get("config_files", [])
        # resolved again: a path recorded before a file became a link to another (config.yaml) is the same file
        if theirs and sorted(str(Path(f).resolve()) for f in theirs) != mine:
            raise ConfigError("study", f"{root} already holds the study written by {theirs}; this config "
                                       f"({mine}) uses the same study name. Rename 'study' or remove {root}")
    if mine:
        atomic_write_text(origin, json.dumps({"config_files": mine}, indent=1))


def write_resolved_config(cfg: StudyConfig) -> str:
    """Write the validated config (defaults filled in) where every job reads it; rewrite only on change."""
    path = cfg.study_dir / "config.json"
    text = json.dumps(cfg.to_dict(), indent=1)  # key order is meaningful: labels are listed in class order
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return str(path)


def check_cross_model(cfg: StudyConfig, required: bool = False) -> None:
    """What the config dataclass cannot check on its own: a projector needs tasks to learn from.
    ``required``: a cross-model job runs, so the section must exist."""
    cm = cfg.cross_model
    if cm is None:
        if required:
            raise ConfigError("cross_model", "this study has no cross_model section")
        return
    if not projector_tasks(cfg):
        raise ConfigError("cross_model.held_out", f"holds out every trained task ({cfg.trained_tasks}); "
                                                  f"the projector needs at least one task to train on")
    if cm.source_backbone == cm.target_backbone:
        raise ConfigError("cross_model.target_backbone", "must differ from source_backbone")
    if "task" in cm.fits:
        other = [t for t in projector_tasks(cfg) if cfg.tasks[t].kind != "classification"]
        if other:
            raise ConfigError("cross_model.fits", f"the 'task' fit trains the projector through classification "
                                                  f"heads; tasks {other} are not classification tasks (hold them "
                                                  f"out or use 'distance')")


def projector_tasks(cfg: StudyConfig) -> list:
    """Trained tasks the projector learns from: every task with a prompt on both models, less the held-out ones."""
    return [t for t in cfg.trained_tasks if t not in cfg.cross_model.held_out]
