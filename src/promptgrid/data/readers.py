"""Raw records of a task from any source: BIG-bench, a Hugging Face dataset (hub id or local builder), or a
local .jsonl / .json / .csv / .tsv / .parquet file.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from promptgrid.config import TaskConfig
from promptgrid.data import DataError
from promptgrid.data.bigbench import _bigbench_subtasks, bigbench_archive, bigbench_records, extract_bigbench_task

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


# ---------------------------------------------------------------- Hugging Face and local files
def read_hf(task: TaskConfig) -> pd.DataFrame:
    """``datasets.load_dataset(path, name=hf_config, data_files=data_files, split=hf_split)`` as a DataFrame.

    One code path for a hub id and for a local builder ('json', 'csv', 'parquet') with data_files.
    A ClassLabel label column is turned into its names when the configured labels are those names.
    """
    import datasets

    where = _hf_name(task)
    try:
        ds = datasets.load_dataset(task.path, name=task.hf_config, data_files=task.data_files, split=task.hf_split)
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


def _hf_name(task: TaskConfig) -> str:
    parts = [f"config {task.hf_config!r}" if task.hf_config else "",
             f"data_files {task.data_files!r}" if task.data_files else "", f"split {task.hf_split!r}"]
    return f"Hugging Face dataset {task.path!r} ({', '.join(p for p in parts if p)})"


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
        raise DataError(f"data file {path} does not exist (relative paths start at {Path.cwd()})")
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


def load_raw(task: TaskConfig, cache_dir, *, archive=None):
    """Raw records of ``task`` and a name for them in messages: (DataFrame, source name).

    BIG-bench tasks are extracted from ``archive`` (default: :func:`bigbench_archive`, which downloads
    it once) unless already in ``cache_dir``.
    """
    if task.source == "bigbench":
        task_json = Path(cache_dir) / "bigbench" / task.path.strip("/") / "task.json"
        if not task_json.exists():
            task_json = extract_bigbench_task(archive or bigbench_archive(cache_dir), task.path, cache_dir)
        try:
            records = bigbench_records(task_json)
        except DataError as err:
            subtasks = _bigbench_subtasks(task.path, cache_dir)
            if subtasks and "has no examples" in str(err):
                raise DataError(f"{err}; subtasks of '{task.path}': {subtasks}") from None
            raise
        return pd.DataFrame.from_records(records), f"BIG-bench file {task_json}"
    if task.source == "hf":
        return read_hf(task), _hf_name(task)
    return read_local(task.path), f"data file {task.path}"
