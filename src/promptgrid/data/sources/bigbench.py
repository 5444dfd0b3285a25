"""BIG-bench (Srivastava et al. 2022) from its PyPI source archive, for users who have the archive.

PyPI stopped serving ``bigbench==1.0.0`` in December 2026 (only a 0.0.1 stub is left), so the fetch job
fails on a machine without it, naming the file and where to put it: ``<cache>/sources/pypi/
bigbench-1.0.0.tar.gz`` (or ``<cache>/bigbench-1.0.0.tar.gz``, where promptgrid kept it before). No hash of
the archive was recorded while it was served; its sha256 is written into every prepared task's provenance.

The reader indexes the archive's task files once, extracts one task's ``task.json`` and reads its
multiple-choice records. A task is named by its folder under ``bigbench/benchmark_tasks``, e.g.
``multiemo/hotels_text_en``; its labels are the keys of ``target_scores``, so the study gives them.
"""
from __future__ import annotations

import difflib
import json
import tarfile
import zlib
from pathlib import Path
from typing import Optional

from promptgrid.data import DataError
from promptgrid.data.artifacts import file_lock
from promptgrid.errors import MissingResource
from promptgrid.lazy import lazy_module
from promptgrid.registry import SOURCES, Artifact, SourceSpec
from promptgrid.storage.files import atomic_write_bytes, atomic_write_text

pd = lazy_module("pandas")

BIGBENCH_VERSION = "1.0.0"


BIGBENCH_ARCHIVE = f"bigbench-{BIGBENCH_VERSION}.tar.gz"


ARTIFACT = Artifact("pypi", "bigbench", BIGBENCH_VERSION, BIGBENCH_ARCHIVE, None, binary=False,
                    also_at=(BIGBENCH_ARCHIVE,))


_BB_PREFIX = f"bigbench-{BIGBENCH_VERSION}/bigbench/benchmark_tasks/"


_BB_SUFFIX = "/task.json"


def _index_path(cache_dir) -> Path:
    return Path(cache_dir) / "bigbench" / "index.json"


def _archive_stamp(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_index(archive: Path, cache_dir) -> Optional[dict]:
    path = _index_path(cache_dir)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc["tasks"] if doc.get("stamp") == _archive_stamp(archive) else None


def bigbench_index(archive, cache_dir, _want: Optional[str] = None):
    """Task path -> [offset, size] of its task.json in the uncompressed tar stream.

    Built by one streaming pass over the archive (~6 s) and cached as ``cache_dir/bigbench/index.json``
    (keyed by the archive's name, size and mtime). With ``_want``, returns (index, bytes of that
    task's task.json or None) so the first extraction rides along with the indexing pass.
    """
    archive = Path(archive)
    index = _read_index(archive, cache_dir)
    data = None
    if index is None:
        with file_lock(_index_path(cache_dir).with_name(".index.lock")):
            index = _read_index(archive, cache_dir)  # built by another job while we waited?
            if index is None:
                index = {}
                with tarfile.open(archive, "r|gz") as tf:
                    for m in tf:
                        if m.isfile() and m.name.startswith(_BB_PREFIX) and m.name.endswith(_BB_SUFFIX):
                            task = m.name[len(_BB_PREFIX):-len(_BB_SUFFIX)]
                            index[task] = [m.offset_data, m.size]
                            if task == _want:
                                data = tf.extractfile(m).read()
                if not index:
                    raise DataError(f"{archive} holds no '{_BB_PREFIX}<task>{_BB_SUFFIX}' files; is it the "
                                    f"BIG-bench {BIGBENCH_VERSION} source archive?")
                atomic_write_text(_index_path(cache_dir),
                                  json.dumps({"stamp": _archive_stamp(archive), "tasks": index}))
    return (index, data) if _want is not None else index


def _read_tar_member(archive: Path, offset: int, size: int) -> bytes:
    """Bytes [offset, offset+size) of the decompressed archive, plus a check of the tar header before them."""
    start, end = offset - tarfile.BLOCKSIZE, offset + size
    d = zlib.decompressobj(31)  # gzip wrapper; a plain zlib loop is ~20% faster than GzipFile.seek
    pos, chunks = 0, []
    with open(archive, "rb") as fh:
        while pos < end:
            buf = d.unconsumed_tail or fh.read(1 << 20)
            if not buf:
                break
            out = d.decompress(buf, 1 << 24)
            if pos + len(out) > start:
                chunks.append(out[max(0, start - pos):end - pos])
            pos += len(out)
    blob = b"".join(chunks)
    try:
        header = tarfile.TarInfo.frombuf(blob[:tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        header = None
    if header is None or header.size != size or len(blob) != end - start:
        raise DataError(f"the BIG-bench member index does not match {archive} at offset {offset}; "
                        f"delete the index.json beside the extracted tasks and retry")
    return blob[tarfile.BLOCKSIZE:]


def extract_bigbench_task(archive, task_path: str, cache_dir) -> Path:
    """Extract one task's ``task.json`` to ``cache_dir/bigbench/<task_path>/task.json`` (cached, atomic).

    ``task_path`` is a folder under ``bigbench/benchmark_tasks``, e.g. ``'multiemo/products_text_en'``.
    """
    task_path = str(task_path).strip("/")
    if not task_path or any(part in ("", ".", "..") for part in task_path.split("/")):
        raise DataError(f"BIG-bench task path {task_path!r} is not a folder name like 'multiemo/hotels_text_en'")
    out = Path(cache_dir) / "bigbench" / task_path / "task.json"
    if out.exists():
        return out
    archive = Path(archive)
    if not archive.exists():
        raise MissingResource(f"BIG-bench archive {archive} does not exist")
    index, data = bigbench_index(archive, cache_dir, _want=task_path)
    if task_path not in index:
        subtasks = sorted(t for t in index if t.startswith(task_path + "/"))
        leaf = task_path.rsplit("/", 1)[-1]
        near = difflib.get_close_matches(task_path, list(index), n=5, cutoff=0.6)
        near += sorted(t for t in index if leaf in t and t not in near)[:5 - len(near)]
        hint = (f"it has subtasks: {subtasks[:12]}" if subtasks else
                f"did you mean {near}?" if near else f"see {_index_path(cache_dir)} for all {len(index)} task paths")
        raise DataError(f"BIG-bench task '{task_path}' is not in {archive.name}; {hint}")
    if data is None:
        data = _read_tar_member(archive, *index[task_path])
    atomic_write_bytes(out, data)
    return out


def bigbench_records(task_json) -> list:
    """Raw records of a multiple-choice BIG-bench task: example fields + ``id`` + ``label``.

    The raw label is the ``target_scores`` key with the highest score; a tie is an error, as the
    label would be arbitrary. Task-level fields (the canary among them) are dropped.
    """
    path = Path(task_json)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"BIG-bench file {path} is not valid JSON: {err}") from None
    examples = doc.get("examples") if isinstance(doc, dict) else None
    if not examples:
        raise DataError(f"BIG-bench file {path} has no examples (a parent task? name one of its subtasks, "
                        f"'<task>/<subtask>')")
    records = []
    for i, ex in enumerate(examples):
        scores = ex.get("target_scores")
        if not isinstance(scores, dict) or not scores:
            raise DataError(f"BIG-bench file {path} example {i}: no 'target_scores' (a generative task? "
                            f"promptgrid needs multiple-choice tasks)")
        best = max(scores.values())
        top = [k for k, v in scores.items() if v == best]
        if len(top) != 1:
            raise DataError(f"BIG-bench file {path} example {i}: labels {top} share the top score {best}, "
                            f"so the label is ambiguous")
        rec = {k: v for k, v in ex.items() if k not in ("target_scores", "target", "id")}
        rec["id"] = str(ex.get("id", i))
        rec["label"] = top[0]
        records.append(rec)
    return records


def _bigbench_subtasks(task_path: str, cache_dir) -> list:
    try:
        tasks = json.loads(_index_path(cache_dir).read_text())["tasks"]
    except (OSError, json.JSONDecodeError, KeyError):
        return []
    return sorted(t for t in tasks if t.startswith(task_path.strip("/") + "/"))[:12]


def read(task, path, cache_dir):
    """The records of one BIG-bench task, extracted from the archive at ``path`` once into the cache."""
    task_json = Path(cache_dir) / "bigbench" / task.path.strip("/") / "task.json"
    if not task_json.exists():
        task_json = extract_bigbench_task(path, task.path, cache_dir)
    try:
        records = bigbench_records(task_json)
    except DataError as err:
        subtasks = _bigbench_subtasks(task.path, cache_dir)
        if subtasks and "has no examples" in str(err):
            raise DataError(f"{err}; subtasks of '{task.path}': {subtasks}") from None
        raise
    return pd.DataFrame.from_records(records), f"BIG-bench file {task_json}"


SOURCES.add(SourceSpec(
    name="bigbench", order=100, read=read, artifact=ARTIFACT, licence="Apache-2.0",
    summary="BIG-bench 1.0.0 multiple-choice tasks from its source archive (no longer on PyPI: bring the archive)",
    fields=(None, "label", "id"),
))
