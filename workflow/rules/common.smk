# Config validation, output paths and input functions shared by every stage.
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from promptgrid import layout
from promptgrid.config import ConfigError, StudyConfig, schema_errors
from promptgrid.workflow import check_study_dir, check_inputs_exist, check_task_kinds, write_resolved_config

min_version("9.0")

_schema = workflow.source_path("../schemas/config.schema.yaml")
_errors = schema_errors(config, _schema)
if _errors:
    raise WorkflowError("invalid study config:\n  " + "\n  ".join(_errors))
validate(config, "../schemas/config.schema.yaml")
try:
    CFG = StudyConfig.from_dict(config)
    check_inputs_exist(CFG)
    check_task_kinds(CFG)
    check_study_dir(CFG, [str(Path(f).resolve()) for f in workflow.configfiles])
except (ConfigError, FileNotFoundError, ValueError) as err:
    raise WorkflowError(f"invalid study config: {err}")

STUDY_DIR = str(CFG.study_dir)
CONFIG_JSON = write_resolved_config(CFG)
BACKBONES = list(CFG.backbones)
TASKS = CFG.trained_tasks
METHODS = CFG.transfer.methods
TRAINED_METHODS = [m for m in METHODS if m in layout.TRAINED_METHODS]
PROMPT_METRICS = [m for m in CFG.metrics.names if m not in ("on", "panda")]
SEEDS = CFG.seeds
ENV = "../../envs/promptgrid.yaml"


wildcard_constraints:
    backbone="|".join(map(re.escape, BACKBONES)),
    task="|".join(map(re.escape, CFG.tasks)),
    target="|".join(map(re.escape, CFG.targets)),
    method="|".join(TRAINED_METHODS) or "__none__",
    seed=r"\d+",


def R(rel):
    """Path of an output inside results/<study>/."""
    return f"{STUDY_DIR}/{rel}"


def stage_hash(*sections, task=None, backbone=None):
    """Rerun trigger: a job reruns only when the config parts it reads change."""
    return CFG.section_hash(*sections, task=task, backbone=backbone)


def method_sections(method):
    """The transfer settings a method reads (vanilla reads none)."""
    return {"spot_topk": ["transfer.spot_topk"], "panda": ["transfer.panda"]}.get(method, [])


def task_data(task):
    return [R(layout.data(task, s)) for s in layout.SPLITS]


def train_inputs(backbone, task):
    """The task's splits, plus the adapter files when its prompt is imported from a local PEFT folder."""
    adapter = CFG.tasks[task].peft_adapters.get(backbone)
    folder = Path(os.path.expanduser(adapter)) if adapter else None
    extra = [str(folder / f) for f in ("adapter_config.json", "adapter_model.safetensors")] \
        if folder is not None and folder.exists() else []
    return task_data(task) + extra


def task_prompts(backbone, task, early=False):
    return [R(layout.task_prompt(backbone, task, s, early)) for s in SEEDS]


def source_prompts(backbone):
    return [p for s in CFG.sources for p in task_prompts(backbone, s)]


def all_task_prompts(backbone, early=False):
    return [p for t in TASKS for p in task_prompts(backbone, t, early)]


def similarity_part(backbone, target, metric):
    if metric == "panda":
        return R(layout.panda_similarity(backbone, target))
    if metric == "on":
        return R(layout.on_similarity(backbone))
    return R(layout.prompt_similarity(backbone))


def transfer_inputs(w):
    """What a trained transfer method into a target reads."""
    inputs = task_data(w.target) + task_prompts(w.backbone, w.target)
    if w.method == "vanilla":
        inputs += source_prompts(w.backbone)
    elif w.method == "spot_topk":
        inputs += source_prompts(w.backbone)
        inputs.append(similarity_part(w.backbone, w.target, CFG.transfer.spot_topk.metric))
    elif w.method == "panda":
        inputs.append(R(layout.method_runs(w.backbone, "vanilla", w.target)))
        if CFG.transfer.panda.beta is None:
            inputs.append(similarity_part(w.backbone, w.target, CFG.transfer.panda.beta_metric))
    return inputs


def transfer_outputs(method, target):
    sources = [f"top{CFG.transfer.spot_topk.k}"] if method == "spot_topk" else CFG.sources
    return sources


def similarity_parts():
    parts = []
    for b in BACKBONES:
        if PROMPT_METRICS:
            parts.append(R(layout.prompt_similarity(b)))
        if "on" in CFG.metrics.names:
            parts.append(R(layout.on_similarity(b)))
        if "panda" in CFG.metrics.names:
            parts += [R(layout.panda_similarity(b, t)) for t in CFG.targets]
    return parts


def collect_inputs():
    parts = similarity_parts()
    for b in BACKBONES:
        parts += [R(layout.train_runs(b, t)) for t in TASKS] + [R(layout.train_curves(b, t)) for t in TASKS]
        if "zeroshot" in METHODS:
            parts += [R(layout.zeroshot_part(b, t)) for t in CFG.targets]
        for m in TRAINED_METHODS:
            parts += [R(layout.method_runs(b, m, t)) for t in CFG.targets]
            parts += [R(layout.method_curves(b, m, t)) for t in CFG.targets]
    return parts


def figure_outputs_of(kind, ext, **report_kwargs):
    """Output paths of one figure rule, with {backbone} left as a wildcard; PNGs go into the report."""
    paths = [R(p) for p in layout.figure_files(CFG, "{backbone}", kind, ext)]
    if report_kwargs:
        paths = [report(p, subcategory="{backbone}", **report_kwargs) for p in paths]
    return paths


def figure_outputs():
    """Every figure of the study, PNG and PDF."""
    return [R(p) for b in BACKBONES for kind in layout.FIGURE_KINDS if layout.figure_variants(CFG, kind)
            for ext in ("png", "pdf") for p in layout.figure_files(CFG, b, kind, ext)]


def peft_outputs():
    """PEFT has no masked-LM prompt-tuning task whose outputs match promptgrid's, so those are not exported."""
    return [R(f"peft/{b}") for b, bb in CFG.backbones.items() if bb.kind != "masked_lm"]


def final_outputs():
    tables = [R(layout.table(t)) for t in layout.TABLES] + peft_outputs()
    cross = []
    if CROSS is not None:
        from promptgrid import jobs_crossmodel

        cross = [R(jobs_crossmodel.table_file())] + [R(f) for f in jobs_crossmodel.figure_files()]
    return tables + figure_outputs() + cross


# Cross-model transfer (Su et al. projectors) is wired in workflow/rules/crossmodel.smk when the
# config has a cross_model section.
CROSS = CFG.cross_model
if CROSS is not None:
    from promptgrid import jobs_crossmodel as XM

    try:
        XM.check_cross_model(CFG)
    except ConfigError as err:
        raise WorkflowError(f"invalid study config: {err}")
    XM_TRAIN_TASKS = XM.projector_tasks(CFG)


def cross_model_inputs(w):
    """A's prompts of every task; B's prompts of the training tasks (distance) and its baselines."""
    a, b = CROSS.source_backbone, CROSS.target_backbone
    inputs = [p for t in XM_TRAIN_TASKS + list(CROSS.held_out) for p in task_prompts(a, t)]
    inputs += [R(layout.train_runs(b, t)) for t in CROSS.held_out]
    inputs += [d for t in CROSS.held_out for d in task_data(t)]
    if w.objective == "distance":
        inputs += [p for t in XM_TRAIN_TASKS for p in task_prompts(b, t)]
    else:
        inputs += [d for t in XM_TRAIN_TASKS for d in task_data(t)]
    return inputs

