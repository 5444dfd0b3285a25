"""Raw records of a task from its data source (:data:`promptgrid.registry.SOURCES`), and the two readers of
files a study names itself: a Hugging Face dataset (hub id or local builder) and a local .jsonl / .json /
.csv / .tsv / .parquet file.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Optional

from promptgrid.config import TaskConfig
from promptgrid.data import DataError, DataNotFound
from promptgrid.data.artifacts import SourceUnavailable, cached_artifact, describe, sha256_of
from promptgrid.lazy import lazy_module
from promptgrid.registry import SOURCES

pd = lazy_module("pandas")

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
#: ``datasets``' packaged builders: an hf task whose path is one of these reads local data_files, not the hub
HF_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "xml", "sql", "webdataset", "imagefolder",
               "audiofolder", "videofolder", "pdffolder", "niftifolder", "cache", "generator", "spark")


# ---------------------------------------------------------------- Hugging Face and local files
def read_hf(task: TaskConfig) -> pd.DataFrame:
    """``datasets.load_dataset(path, name=hf_config, data_files=data_files, split=hf_split, revision=...)`` as a
    DataFrame.

    One code path for a hub id and for a local builder ('json', 'csv', 'parquet') with data_files. A hub dataset
    is read at the commit its ``hf_revision`` resolves to (:func:`hub_dataset_commit`), the one provenance
    records; where neither the hub nor the HF cache knows it, at ``hf_revision`` as given.
    A ClassLabel label column is turned into its names when the configured labels are those names.
    """
    import datasets

    where = hf_name(task)
    revision = (hub_dataset_commit(task.path, task.hf_revision) or task.hf_revision) if is_hub_dataset(task) else None
    try:
        ds = datasets.load_dataset(task.path, name=task.hf_config, data_files=task.data_files, split=task.hf_split,
                                   revision=revision)
    except Exception as err:  # datasets raises many types (hub, file, builder errors); add which dataset
        raise DataError(f"could not load {where}: {type(err).__name__}: {err}") from err
    df = ds.to_pandas()
    df.attrs["class_names"] = _class_label_names(ds.features)
    feature = ds.features.get(task.label_field)
    if isinstance(feature, datasets.ClassLabel) and task.label_field in df.columns:
        wanted = set(task.labels)
        if wanted <= set(feature.names) and not wanted <= {str(i) for i in range(feature.num_classes)}:
            names = feature.names
            df[task.label_field] = [names[v] if 0 <= v < len(names) else v for v in df[task.label_field]]
    return df


def _class_label_names(features) -> dict:
    """Column -> names of its ClassLabel, for ClassLabel columns and lists (Sequence / List) of them."""
    import datasets

    out = {}
    for col, feat in features.items():
        for _ in range(4):  # a ClassLabel, or a list of them, possibly nested
            if isinstance(feat, list):
                feat = feat[0] if feat else None
            elif not isinstance(feat, datasets.ClassLabel):
                feat = getattr(feat, "feature", None)
            if isinstance(feat, datasets.ClassLabel) or feat is None:
                break
        if isinstance(feat, datasets.ClassLabel):
            out[col] = list(feat.names)
    return out


def hf_name(task: TaskConfig) -> str:
    parts = [f"config {task.hf_config!r}" if task.hf_config else "",
             f"data_files {task.data_files!r}" if task.data_files else "", f"split {task.hf_split!r}",
             f"revision {task.hf_revision!r}" if task.hf_revision else ""]
    return f"Hugging Face dataset {task.path!r} ({', '.join(p for p in parts if p)})"


def is_hub_dataset(task: TaskConfig) -> bool:
    """An ``hf`` task that names a hub dataset (not a packaged builder such as 'json', nor a local folder)."""
    return task.source == "hf" and task.path not in HF_BUILDERS and not Path(os.path.expanduser(task.path)).exists()


@functools.lru_cache(maxsize=64)
def hub_dataset_commit(path: str, revision: Optional[str]) -> Optional[str]:
    """The commit hub dataset ``path`` at ``revision`` resolves to (:func:`promptgrid.storage.hub.resolve_commit`),
    once per process, so the data a job reads and the commit its provenance records are the same; None (with a
    warning) where neither the hub nor the HF cache knows it. A revision the dataset lacks is a :class:`DataError`."""
    import warnings

    from promptgrid.errors import MissingResource
    from promptgrid.storage.hub import resolve_commit

    try:
        return resolve_commit(path, "dataset", revision)
    except MissingResource as err:
        warnings.warn(f"{err}; provenance records the dataset's revision unresolved", stacklevel=2)
        return None
    except ValueError as err:  # InputError: a malformed id, a revision the dataset lacks
        raise DataError(str(err)) from None


def read_local(path) -> pd.DataFrame:
    """Read a .jsonl / .json / .csv / .tsv / .parquet file of records with pandas.

    CSV/TSV cells are read as strings (empty cells stay ""), so ids and labels keep their spelling.
    A .json file holds a list of records, or a mapping with the list under 'examples' or 'data'.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise DataError(f"data file {path}: unsupported extension {suffix!r}; use one of {list(LOCAL_SUFFIXES)}")
    if not path.exists():
        raise DataNotFound(f"data file {path} does not exist (relative paths start at {Path.cwd()})")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    if suffix == ".jsonl":
        records = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"data file {path} line {lineno} is not valid JSON: {err}") from None
                if not isinstance(rec, dict):
                    raise DataError(f"data file {path} line {lineno} is a {type(rec).__name__}, not a JSON object")
                records.append(rec)
        df = pd.DataFrame.from_records(records)
    elif suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"data file {path} is not valid JSON: {err}") from None
        if isinstance(doc, dict):
            doc = doc.get("examples", doc.get("data"))
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise DataError(f"data file {path} must hold a list of records (or a mapping with it under "
                            f"'examples' or 'data')")
        df = pd.DataFrame.from_records(doc)
    elif suffix in (".csv", ".tsv"):
        try:
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise DataError(f"data file {path} is empty") from None
        except pd.errors.ParserError as err:
            raise DataError(f"data file {path} is not valid {suffix[1:].upper()}: {err}") from None
    else:
        df = pd.read_parquet(path)
    if len(df) == 0:
        raise DataError(f"data file {path} is empty (no rows)")
    return df


def source_fields(task: TaskConfig) -> tuple:
    """(text columns, label column, id column) of the raw frame: the source's own where it fixes them
    (a registry source yields ``text``, ``label``, ``id``), else the task's ``text_fields`` etc."""
    fields = SOURCES.require(task.source).fields
    if fields is None:
        return list(task.text_fields), task.label_field, task.id_field
    text, label, ident = fields
    return ([text] if text else list(task.text_fields)), label, ident


def source_record(task: TaskConfig, cache_dir) -> dict:
    """What a prepared task records about its data (provenance): the source; for a hub dataset the configured
    revision and the commit it resolved to; for a pinned artifact its registry, package, version, file and sha256
    (for a source with no pinned hash, the file's own; a pinned file was checked when it was read, so it is not
    hashed again here)."""
    spec = SOURCES.require(task.source)
    art = spec.artifact
    if art is None:
        if is_hub_dataset(task):  # what read_hf read: the same resolution, cached for the process
            return {"source": spec.name, "path": task.path, "revision": task.hf_revision,
                    "commit": hub_dataset_commit(task.path, task.hf_revision)}
        return {"source": spec.name, "path": task.path}
    path = None if art.sha256 else cached_artifact(art, cache_dir, spec.name)
    return {"source": spec.name, "path": task.path, "registry": art.registry, "package": art.package,
            "version": art.version, "file": art.filename,
            "sha256": art.sha256 or (sha256_of(path) if path is not None else None), "pinned": bool(art.sha256)}


def load_raw(task: TaskConfig, cache_dir):
    """Raw records of ``task`` and a name for them in messages: (DataFrame, source name).

    A source with an artifact reads it from the cache, verified; the workflow's fetch job put it there
    (``promptgrid fetch``), so a missing one is an error saying so, never a download here.
    """
    spec = SOURCES.require(task.source)
    path = None
    if spec.artifact is not None:
        path = cached_artifact(spec.artifact, cache_dir, spec.name)
        if path is None:
            raise SourceUnavailable(f"data source '{spec.name}': {describe(spec.artifact)} is not in the cache "
                                    f"{cache_dir}: its fetch job puts it there (snakemake runs it; by hand: "
                                    f"promptgrid fetch --config <study> --source {spec.name})")
    return spec.read(task, path, cache_dir)
