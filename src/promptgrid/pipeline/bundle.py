"""The bundle verb: one folder that a node with no network runs a study's model jobs from.

A bundle is a Snakemake working directory (``snakemake --directory DIR --configfile DIR/config.yaml``):

==================================  ===================================================================
``config.yaml``                     the study config; each backbone's ``model`` is ``./models/<b>-<dtype>``,
                                    ``results_dir: results`` and ``cache_dir: cache`` (all relative, so the
                                    folder can move); every other key as in the original
``models/<backbone>-<dtype>/``      ``save_pretrained`` output: ``config.json``, ``model.safetensors`` (fp32, or
                                    bf16 at half the size), the tokenizer files; nothing else
``results/<study>/data/<task>/``    the prepared splits, byte copies of the study's own: the prepare stage's
                                    outputs exist, so it never runs (it is the only stage that reads raw
                                    archives, ``datasets`` or the hub)
``results/<study>/sources/``        the fetch jobs' stamps (which pinned file each data source was), so no
                                    fetch job runs on the node
``<relative input paths>``          files the config names and the DAG build checks (plugins, local data
                                    files, ``data_files``, ``prompt.init_file``, PEFT adapter folders), at the
                                    same relative path, so their config values and hashes stay as they were
``bundle.json``                     the manifest: dtype, each backbone's original model and revision, what was
                                    checked, the config hashes, and the size and sha256 of every file
==================================  ===================================================================

A job loads the bundled weights with the backbone's ``dtype`` (float32 unless the study says otherwise), so a
bf16 bundle is upcast on load and the compute path is the original's; an fp32 bundle holds the original
weights bit for bit. The bundle is written into a temporary folder beside ``DIR`` and renamed into place.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from promptgrid.errors import InputError
from promptgrid.pipeline.context import Study
from promptgrid.storage import layout
from promptgrid.storage.files import atomic_write_text, read_table, read_table_meta

#: --dtype -> the torch dtype name the weights are stored in
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
CONFIG, MANIFEST, RESULTS, CACHE = "config.yaml", "bundle.json", "results", "cache"
FORMAT = 1
#: weight formats a bundle never holds: safetensors only (no pickles), and no second copy of the weights
NOT_SAFETENSORS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".gguf")
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: texts per task on which the bundled tokenizer must give the original's token ids
PROBE_TEXTS = 64


class BundleError(InputError):
    """The study cannot be bundled as it stands; the message names the task, file or config key. Bad input:
    the command exits 2."""


def model_folder(backbone: str, dtype: str) -> str:
    """A bundled backbone's folder, relative to the bundle. The dtype is part of the name, so the model
    stages of an fp32 and a bf16 bundle hash differently and their results are never taken for each other's."""
    return f"models/{backbone}-{dtype}"


def run_command(out) -> str:
    return f"snakemake --directory {out} --configfile {Path(out) / CONFIG} --cores N"


# ---------------------------------------------------------------- the verb
def bundle(config, out, dtype: str = "fp32", prepare: bool = False) -> dict:
    """Write the bundle of study ``config`` to folder ``out``; returns its manifest.

    ``prepare``: prepare tasks whose splits are missing or out of date first (as the prepare rule would,
    into the study's own results folder); without it such a task is an error naming the task and file.
    """
    import yaml

    if dtype not in DTYPES:
        raise BundleError(f"--dtype {dtype!r}: choose one of {list(DTYPES)}")
    study = Study.from_file(config)
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"--out {out} exists and is not an empty folder; remove it or choose another")
    splits = _prepared_splits(study, config, prepare)
    raw = _raw_config(Path(config))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        t0 = time.time()
        _copy_source_stamps(study, tmp / RESULTS / study.cfg.study)
        for task, paths in splits.items():
            for split, src in paths.items():
                dest = tmp / RESULTS / study.cfg.study / layout.data(task, split)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
        carried = _carry_inputs(raw, study.cfg, tmp)
        probes = _probe_texts(study, splits)
        backbones = {}
        for name, bcfg in study.cfg.backbones.items():
            folder = model_folder(name, dtype)
            backbones[name] = {"folder": folder, **_save_backbone(name, bcfg, study.cfg.cache_path, tmp / folder,
                                                                  dtype, probes)}
            entry = raw["backbones"][name]
            entry["model"] = f"./{folder}"
            entry.pop("revision", None)  # a hub revision means nothing to a folder
            entry.pop("gguf_file", None)  # the folder holds the dequantised weights as safetensors
        raw["results_dir"], raw["cache_dir"] = RESULTS, CACHE
        text = (f"# promptgrid bundle of study '{study.cfg.study}' ({dtype} weights), written from {config}.\n"
                f"# Run it from any folder, no network needed: {run_command('<this folder>')}\n"
                + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        changed = [("results_dir",), ("cache_dir",)] + [("backbones", b, k) for b in backbones for k in (
            "model", "revision", "gguf_file")] + [v["key"][:1] if v["key"][0] == "plugins" else v["key"]
                                                  for v in carried.values() if v["to"] != v["from"]]
        bundled = _check_config(study, text, changed)
        atomic_write_text(tmp / CONFIG, text)
        manifest = _manifest(study, bundled, config, dtype, backbones, carried, tmp)
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    mb = manifest["total_bytes"] / 1e6
    for name, b in backbones.items():
        print(f"[bundle] {name}: {b['original_revision']} -> {b['folder']} ({dtype}, {b['weight_bytes'] / 1e6:.1f} MB "
              f"of weights; {b['weights_check']}; tokenizer identical on {b['tokenizer_probes']} texts)", flush=True)
    print(f"[bundle] wrote {out}: {mb:.1f} MB, {len(splits)} tasks' splits, in {time.time() - t0:.1f}s. On the node: "
          f"{run_command(out)}", flush=True)
    return manifest


# ---------------------------------------------------------------- the prepared splits
def _prepared_splits(study: Study, config, prepare: bool) -> dict:
    """{task: {split: path}} of every trained task; missing or stale splits prepared (``prepare``) or refused."""
    out, fetched = {}, set()
    for task in study.cfg.trained_tasks:
        paths = {s: study.path(layout.data(task, s)) for s in layout.SPLITS}
        problem = _split_problem(study, task, paths)
        if problem and prepare:
            from promptgrid.pipeline.fetch import fetch
            from promptgrid.pipeline.prepare import prepare as prepare_task

            print(f"[bundle] preparing task '{task}': {problem}", flush=True)
            source = study.cfg.tasks[task].source
            if source in study.cfg.fetched_sources and source not in fetched:
                fetch(study, source)  # its pinned file into the cache, once per source
                fetched.add(source)
            prepare_task(study, task)
            problem = _split_problem(study, task, paths)
        if problem:
            raise BundleError(f"task '{task}': {problem}. Prepare it first (promptgrid prepare --config {config} "
                              f"--task {task}, or the prepare_task rule), or run promptgrid bundle with --prepare")
        out[task] = paths
    return out


def _copy_source_stamps(study: Study, root: Path) -> None:
    """The fetch jobs' stamps, so the bundled study's prepare jobs are up to date and no fetch runs on the node.
    Copied with their mtime, older than the splits copied after them; a missing one is written first."""
    from promptgrid.pipeline.fetch import fetch

    for source in study.cfg.fetched_sources:
        stamp = study.path(layout.source_stamp(source))
        if not stamp.exists():
            fetch(study, source)
        dest = root / layout.source_stamp(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(stamp, dest)


def _split_problem(study: Study, task: str, paths: dict):
    """Why the task's prepared splits cannot be bundled as they are, or None."""
    want = study.stage_hash("prepare", task=task)
    for path in paths.values():
        if not path.exists():
            return f"prepared split {path} is missing"
        have = read_table_meta(path).get("config_hash")
        if have != want:
            return (f"prepared split {path} was written for another config of the task (config hash {have}; the "
                    f"config's is {want})")
    return None


def _probe_texts(study: Study, splits: dict) -> list:
    """Texts the bundled tokenizer must tokenise as the original does: every label text and answer, and the
    first training inputs of every task."""
    texts = []
    for task, paths in splits.items():
        tcfg = study.cfg.tasks[task]
        if tcfg.kind in ("classification", "regression"):
            texts += list(tcfg.label_texts)
        df = read_table(paths["train"]).head(PROBE_TEXTS)
        texts += [str(t) for t in df["text"]]
        if "targets" in df.columns:
            texts += [str(x) for ts in df["targets"] for x in list(ts)]
    return list(dict.fromkeys(texts))


# ---------------------------------------------------------------- the models
def _save_backbone(name: str, bcfg, cache_dir: Path, folder: Path, dtype: str, probes: list) -> dict:
    """Save backbone ``name`` into ``folder`` as safetensors in ``dtype``, reload it the way a job does and
    check it: the weights are the original's (rounded to bf16 for bf16), the tokenizer gives the same ids."""
    import torch

    # the loader every job uses; a private helper because load_backbone caches and wraps the model
    from promptgrid.models.loading import load_hf_model

    torch.manual_seed(0)  # as Study.backbone: any weight the checkpoint lacks is initialised as a job's would be
    model, tokenizer, revision = load_hf_model(name, bcfg, cache_dir)
    stored = getattr(torch, DTYPES[dtype])
    # as Module.to does: floating tensors take the stored dtype, integer buffers keep theirs
    expected = {k: v.detach().to(stored) if v.is_floating_point() else v.detach()
                for k, v in model.state_dict().items()}
    model.to(stored)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stray = sorted(f.name for f in folder.rglob("*") if f.suffix in NOT_SAFETENSORS)
    if stray:
        raise BundleError(f"backbone '{name}': saving {bcfg.model!r} wrote {stray}; a bundle holds safetensors only")
    del model
    bundled = dataclasses.replace(bcfg, model=str(folder), revision=None, gguf_file=None)
    reloaded, tok2, _ = load_hf_model(name, bundled, cache_dir)
    got = reloaded.state_dict()
    compute = getattr(torch, bcfg.dtype)
    if set(got) != set(expected):
        raise BundleError(f"backbone '{name}': the bundled model's tensors differ from the original's: "
                          f"{sorted(set(got) ^ set(expected))[:5]}")
    for key, value in expected.items():
        if got[key].dtype.is_floating_point and got[key].dtype != compute:
            raise BundleError(f"backbone '{name}': tensor {key} loads as {got[key].dtype}, not {compute}")
        if not torch.equal(got[key], value.to(got[key].dtype)):
            raise BundleError(f"backbone '{name}': tensor {key} of the bundled model differs from the original's")
    ids = tokenizer(probes, verbose=False)["input_ids"] if probes else []
    specials = ("pad_token_id", "eos_token_id", "bos_token_id", "cls_token_id", "sep_token_id", "mask_token_id")
    if (tok2(probes, verbose=False)["input_ids"] if probes else []) != ids or len(tok2) != len(tokenizer) or any(
            getattr(tok2, s, None) != getattr(tokenizer, s, None) for s in specials):
        raise BundleError(f"backbone '{name}': the saved tokenizer of {bcfg.model!r} does not tokenise as the "
                          f"original does")
    weights = sorted(folder.rglob("*.safetensors"))
    return {"original_model": bcfg.model, "original_revision": revision,
            **({"original_hub_revision": bcfg.revision} if bcfg.revision else {}),
            **({"original_gguf_file": bcfg.gguf_file} if bcfg.gguf_file else {}),
            "kind": bcfg.kind, "stored_dtype": DTYPES[dtype], "compute_dtype": bcfg.dtype,
            "parameters": int(sum(v.numel() for v in expected.values())),
            "weight_bytes": sum(f.stat().st_size for f in weights),
            "weights_check": "bit-identical to the original" if dtype == "fp32" else
                             "the original rounded to bf16, upcast on load",
            "tokenizer_probes": len(probes)}


# ---------------------------------------------------------------- the inputs the config names
def _carry_inputs(raw: dict, cfg, root: Path) -> dict:
    """Copy every local file the DAG build or a model job reads into the bundle; returns {config key: record}.

    A relative path inside the working directory is copied to the same relative path, so its config value
    (and every config hash) stays; any other path is copied under ``inputs/<key>/`` and its value rewritten
    (the hashes of the stages that read it change; the manifest lists them).
    """
    carried: dict = {}
    plugins = list(raw.get("plugins") or [])
    for i, path in enumerate(plugins):
        plugins[i] = _carry(path, ("plugins", i), root, carried)
    if plugins:
        raw["plugins"] = plugins
    for name, task in cfg.tasks.items():
        entry = raw["tasks"].setdefault(name, {})
        if task.source == "local":
            entry["path"] = _carry(task.path, ("tasks", name, "path"), root, carried)
        if task.source == "hf" and task.data_files:
            entry["data_files"] = _carry(task.data_files, ("tasks", name, "data_files"), root, carried, pattern=True)
        for bname, adapter in task.peft_adapters.items():
            key = ("tasks", name, "peft_adapters", bname)
            if not Path(os.path.expanduser(adapter)).is_dir():
                raise BundleError(f"config key '{_dotted(key)}': {adapter!r} is no local folder (a hub id?); a "
                                  f"bundle carries local adapter folders only: download it and name the folder")
            entry.setdefault("peft_adapters", dict(task.peft_adapters))[bname] = _carry(adapter, key, root, carried,
                                                                                          only=PEFT_FILES)
    if cfg.prompt.init == "file":
        raw.setdefault("prompt", {})["init_file"] = _carry(cfg.prompt.init_file, ("prompt", "init_file"), root,
                                                           carried)
    return carried


def _carry(value: str, key: tuple, root: Path, carried: dict, pattern: bool = False, only=()) -> str:
    """Copy the file, folder (``only`` those files of it) or glob ``pattern`` ``value`` into ``root``; returns
    the value the bundled config uses."""
    expanded = os.path.expanduser(value)
    norm = Path(os.path.normpath(expanded))
    inside = not norm.is_absolute() and norm.parts[:1] != ("..",)
    sources = sorted(Path(p) for p in glob.glob(expanded)) if pattern else [Path(expanded)]
    if not sources or not all(p.exists() for p in sources):
        raise BundleError(f"config key '{_dotted(key)}': {value} does not exist (relative paths start at "
                          f"{Path.cwd()})")
    base = Path("inputs") / _dotted(key)
    for src in sources:
        dest = root / (Path(os.path.normpath(src)) if inside else base / src.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            dest.mkdir(exist_ok=True)
            for f in (only or [p.name for p in src.iterdir() if p.is_file()]):
                shutil.copy2(src / f, dest / f)
        else:
            shutil.copy2(src, dest)  # keeps the mtime: a local data file stays older than its copied splits
    new = value if inside else f"./{(base / norm.name).as_posix()}"
    carried[_dotted(key)] = {"from": value, "to": new, "files": [str(p) for p in sources], "key": list(key)}
    return new


def _dotted(key) -> str:
    """("plugins", 0) -> plugins[0]; ("tasks", "x", "path") -> tasks.x.path"""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in key).lstrip(".")


# ---------------------------------------------------------------- config and manifest
def _raw_config(path: Path) -> dict:
    import yaml

    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _check_config(study: Study, text: str, changed: list):
    """The bundled config as read back from ``text``; it must equal the original but at the ``changed`` keys."""
    import yaml

    from promptgrid.config import StudyConfig

    bundled = StudyConfig.from_dict(yaml.safe_load(text))
    mine, theirs = bundled.to_dict(), study.cfg.to_dict()
    for key in changed:
        for d in (mine, theirs):
            for part in key[:-1]:
                d = d.get(part, {}) if isinstance(d, dict) else {}
            if isinstance(d, dict):
                d.pop(key[-1], None)
    where = _first_difference(theirs, mine, ())
    if where is not None:
        raise BundleError(f"config key '{_dotted(where)}' reads back differently from the bundled config.yaml "
                          f"(a value YAML does not round-trip?); the bundle would not be the same study")
    return bundled


def _first_difference(a, b, path: tuple):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return path + (k,)
            found = _first_difference(a[k], b[k], path + (k,))
            if found is not None:
                return found
        return None if list(a) == list(b) else path  # key order is meaning: labels are listed in class order
    return None if a == b and type(a) is type(b) else path


def _stage_hashes(cfg) -> dict:
    """{"prepare/<task>" | "train/<backbone>/<task>" | "collect" | "correlate": hash} of a config."""
    from promptgrid.config.stages import stage_hash

    out = {f"prepare/{t}": stage_hash(cfg, "prepare", task=t) for t in cfg.trained_tasks}
    out.update({f"train/{b}/{t}": stage_hash(cfg, "train", task=t, backbone=b) for b in cfg.backbones
                for t in cfg.trained_tasks})
    out.update({s: stage_hash(cfg, s) for s in ("collect", "correlate")})
    return out


def _manifest(study: Study, bundled, config, dtype: str, backbones: dict, carried: dict, root: Path) -> dict:
    from promptgrid import __version__
    from promptgrid.storage.provenance import git_commit

    files = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        files[f.relative_to(root).as_posix()] = {"bytes": f.stat().st_size, "sha256": digest.hexdigest()}
    original, mine = _stage_hashes(study.cfg), _stage_hashes(bundled)
    return {
        "format": FORMAT, "study": study.cfg.study, "dtype": dtype, "source_config": str(Path(config).absolute()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "promptgrid_version": __version__, "git_commit": git_commit(),
        "run": run_command("<bundle>"), "backbones": backbones, "tasks": list(study.cfg.trained_tasks),
        "carried": carried,
        # the model stages hash each backbone's config, whose model is now the bundled folder
        "config_hashes": {k: {"original": original[k], "bundle": mine[k]} for k in original},
        "total_bytes": sum(v["bytes"] for v in files.values()), "files": files,
    }
