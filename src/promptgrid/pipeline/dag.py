"""What the Snakemake rules need while Snakemake builds the DAG: the validated config, and every rule's
inputs, outputs and config hash — so the ``.smk`` files only wire (paths come from
:mod:`promptgrid.storage.layout`, hashes from :mod:`promptgrid.config.stages`, what exists from the
registries).

``Workflow.from_snakemake(config, configfiles, ...)`` is the one call ``workflow/rules/common.smk``
makes: it refuses a config merged from two study files, loads the plugins the config names, checks the
config (schema with the registries' names, then the typed loader, then the inputs on disk), writes the
resolved ``config.json`` every job reads and the report captions, and returns the helper the rules use.
Building it imports no torch, pandas or numpy (``tests/workflow/test_module.py`` blocks them), so a Snakemake
without promptgrid installed can parse, lint and dry-run the workflow from a checkout's ``src/``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from promptgrid.config import StudyConfig, schema_errors
from promptgrid.config.stages import stage_hash
from promptgrid.errors import InputError
from promptgrid.pipeline import checks, plugins
from promptgrid.registry import FIGURES, METHODS, SIMILARITIES, SOURCES
from promptgrid.storage import layout
from promptgrid.storage.files import atomic_write_text


class SchemaError(InputError):
    """The raw config breaks the JSON schema; the message lists every offending key."""


class Workflow:
    """The study's DAG, seen from the rules: ``W.R(rel)`` is a path in the study folder."""

    def __init__(self, cfg: StudyConfig, config_json: str):
        self.cfg, self.config_json = cfg, config_json
        self.root = str(cfg.study_dir)

    @classmethod
    def from_snakemake(cls, raw: dict, configfiles: list, cli_configfiles: tuple = (), replaced: bool = False,
                       model_stack: bool = True) -> Workflow:
        """``configfiles``: every file Snakemake read the config from (``workflow.configfiles``);
        ``cli_configfiles`` those given with ``--configfile``, ``replaced`` whether ``--replace-workflow-config``
        was; ``model_stack`` False skips the checks that import torch (promptgrid is not installed where
        Snakemake runs: its jobs check them)."""
        checks.check_one_study(configfiles, cli_configfiles, replaced)
        plugins.load(raw)
        errors = schema_errors(raw)
        if errors:
            raise SchemaError("invalid study config:\n  " + "\n  ".join(errors))
        cfg = StudyConfig.from_dict(raw)
        checks.check_inputs_exist(cfg, model_stack)
        if model_stack:
            checks.check_task_kinds(cfg)
        checks.check_cross_model(cfg)
        checks.check_study_dir(cfg, [str(Path(f).resolve()) for f in configfiles])
        workflow = cls(cfg, checks.write_resolved_config(cfg))
        workflow.write_captions()
        return workflow

    def R(self, rel: str) -> str:
        """Path of an output inside results/<study>/."""
        return f"{self.root}/{rel}"

    def hash(self, stage: str, **names) -> str:
        return stage_hash(self.cfg, stage, **names)

    # -- names the rules iterate over
    @property
    def backbones(self) -> list:
        return list(self.cfg.backbones)

    @property
    def tasks(self) -> list:
        return self.cfg.trained_tasks

    def methods(self, trains: Optional[bool] = None) -> list:
        return [m for m in self.cfg.transfer.methods if trains is None or METHODS[m].trains == trains]

    def model_metrics(self, per_target: Optional[bool] = None) -> list:
        return [m for m in self.cfg.metrics.names if SIMILARITIES[m].scope == "model"
                and (per_target is None or SIMILARITIES[m].per_target == per_target)]

    def has_prompt_metrics(self) -> bool:
        return any(SIMILARITIES[m].scope == "prompt" for m in self.cfg.metrics.names)

    @staticmethod
    def alternatives(names) -> str:
        """A wildcard constraint matching exactly these names (never the empty pattern)."""
        import re

        return "|".join(map(re.escape, names)) or "__none__"

    @property
    def fetched_sources(self) -> list:
        return self.cfg.fetched_sources

    @staticmethod
    def source_pin(source: str) -> str:
        """The pinned artifact, as the fetch rule's param: a new pin reruns the fetch and what reads it."""
        art = SOURCES.require(source).artifact
        return f"{art.registry}:{art.pin}:{art.filename}:{art.sha256}"

    # -- inputs
    def prepare_inputs(self, task: str) -> dict:
        """A local data file is an input of its task's prepare job (a changed file reruns it); so is the stamp of
        the fetch job that put its source's artifact into the cache."""
        tcfg = self.cfg.tasks[task]
        inputs = {"local": tcfg.path} if tcfg.source == "local" else {}
        if tcfg.source in self.cfg.fetched_sources:
            inputs["source"] = self.R(layout.source_stamp(tcfg.source))
        return inputs

    def task_data(self, task: str) -> list:
        return [self.R(layout.data(task, s)) for s in layout.SPLITS]

    def train_inputs(self, backbone: str, task: str) -> list:
        """The task's splits, plus the adapter files when its prompt is imported from a local PEFT folder."""
        adapter = self.cfg.tasks[task].peft_adapters.get(backbone)
        folder = Path(os.path.expanduser(adapter)) if adapter else None
        extra = [str(folder / f) for f in ("adapter_config.json", "adapter_model.safetensors")] \
            if folder is not None and folder.exists() else []
        return self.task_data(task) + extra

    def task_prompts(self, backbone: str, task: str, early: bool = False) -> list:
        return [self.R(layout.task_prompt(backbone, task, s, early)) for s in self.cfg.seeds]

    def all_task_prompts(self, backbone: str, early: bool = False) -> list:
        return [p for t in self.tasks for p in self.task_prompts(backbone, t, early)]

    def source_prompts(self, backbone: str) -> list:
        return [p for s in self.cfg.sources for p in self.task_prompts(backbone, s)]

    def transfer_inputs(self, backbone: str, method: str, target: str) -> list:
        """What a method into a target reads: the target's data, the sources' prompts (and, for a trained method,
        the target's own), and the similarity parts and other methods' runs its spec names."""
        spec = METHODS.require(method)
        inputs = self.task_data(target) + self.source_prompts(backbone)
        if spec.trains:  # its runs are compared with the target's own prompt (and SPoT reads its early one)
            inputs += self.task_prompts(backbone, target) + self.task_prompts(backbone, target, early=True)
        inputs += [self.R(layout.similarity_part(backbone, m, target)) for m in spec.reads_similarity(self.cfg)]
        inputs += [self.R(layout.method_runs(backbone, m, target)) for m in spec.reads_methods]
        return list(dict.fromkeys(inputs))

    def collect_inputs(self) -> list:
        parts = []
        for b in self.backbones:
            parts += [self.R(p) for p in layout.similarity_parts(self.cfg, b)]
            parts += [self.R(layout.train_runs(b, t)) for t in self.tasks]
            parts += [self.R(layout.train_curves(b, t)) for t in self.tasks]
            for m in self.methods():
                parts += [self.R(layout.method_runs(b, m, t)) for t in self.cfg.targets]
                if METHODS[m].trains:
                    parts += [self.R(layout.method_curves(b, m, t)) for t in self.cfg.targets]
        return parts + [self.R(p) for p in layout.cross_parts(self.cfg)]

    def collect_outputs(self) -> dict:
        """The tables ``collect`` writes: transfer, similarity, curves, gains, and cross_model for a study with a
        ``cross_model`` section."""
        names = ["transfer", "similarity", "curves", "gains"]
        names += [layout.CROSS_TABLE] if self.cfg.cross_model is not None else []
        return {name: self.R(layout.table(name)) for name in names}

    def projectors(self) -> list:
        """The registered projectors the study's ``cross_model`` trains (none without one)."""
        return [] if self.cfg.cross_model is None else list(self.cfg.cross_model.projectors)

    def fits(self) -> list:
        return [] if self.cfg.cross_model is None else list(self.cfg.cross_model.fits)

    def cross_model_inputs(self, fit: str) -> list:
        """A's prompts of every task; B's baselines of the held-out tasks; B's prompts of the projector's tasks
        (the distance fit) or their data (the task fit)."""
        cm = self.cfg.cross_model
        a, b = cm.source_backbone, cm.target_backbone
        train_tasks = checks.projector_tasks(self.cfg)
        inputs = [p for t in train_tasks + list(cm.held_out) for p in self.task_prompts(a, t)]
        inputs += [self.R(layout.train_runs(b, t)) for t in cm.held_out]
        inputs += [d for t in cm.held_out for d in self.task_data(t)]
        if fit == "distance":
            inputs += [p for t in train_tasks for p in self.task_prompts(b, t)]
        else:
            inputs += [d for t in train_tasks for d in self.task_data(t)]
        return inputs

    # -- outputs
    def prompt_outputs(self, backbone: str, task: Optional[str] = None, early: bool = False) -> list:
        """The task prompts a train job writes: every seed of ``task``, or of every trained task."""
        tasks = self.tasks if task is None else [task]
        return [self.R(layout.task_prompt(backbone, t, s, early)) for t in tasks for s in self.cfg.seeds]

    def figure_outputs(self, kind: str, ext: str, backbone: str = "{backbone}") -> list:
        return [self.R(p) for p in layout.figure_files(self.cfg, backbone, kind, ext)]

    def report_entries(self, kind: str) -> list:
        """(png path with {backbone}, caption file, labels) of every variant of a figure kind, for report()."""
        spec = FIGURES.require(kind)
        return [(self.R(layout.figure_file("{backbone}", kind, v, "png")),
                 os.path.abspath(self.R(layout.caption(kind, v))), spec.labels(self.cfg, v))
                for v in spec.variants(self.cfg)]

    def figure_inputs(self, kind: str) -> list:
        return [self.R(layout.table(t)) for t in FIGURES.require(kind).tables]

    @staticmethod
    def figure_category(kind: str) -> str:
        return FIGURES.require(kind).category

    def figure_kinds(self) -> list:
        return [spec.name for spec in FIGURES.ordered() if spec.variants(self.cfg)]

    def peft_outputs(self) -> list:
        """PEFT has no masked-LM task whose outputs match promptgrid's, and PEFT 0.21 gives a seq2seq decoder's
        layers other layers' prefixes (promptgrid.models.peft_io), so those are not exported."""
        deep = self.cfg.prompt.kind == "deep"
        return [self.R(layout.peft_bank(b)) for b, bb in self.cfg.backbones.items()
                if bb.kind != "masked_lm" and not (deep and bb.kind == "seq2seq")]

    def final_outputs(self) -> list:
        out = [self.R(layout.table(t)) for t in layout.TABLES] + self.peft_outputs()
        out += [f for kind in self.figure_kinds() for b in FIGURES.require(kind).drawn_for(self.cfg)
                for ext in ("png", "pdf") for f in self.figure_outputs(kind, ext, b)]
        if self.cfg.cross_model is not None:
            out += [self.R(layout.table(layout.CROSS_TABLE))]
        return out

    def write_captions(self) -> None:
        """Every figure variant's report caption, from its figure kind's text (rewritten only on change)."""
        for spec in FIGURES.ordered():
            for v in spec.variants(self.cfg):
                path = Path(self.R(layout.caption(spec.name, v)))
                text = spec.caption(self.cfg, v).strip() + "\n"
                if not path.exists() or path.read_text() != text:
                    atomic_write_text(path, text)
