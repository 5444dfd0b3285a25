"""Task data: load examples from a data source (a registry package, a Hugging Face dataset, a local file),
normalise them, split them deterministically, and write / re-read the splits.

Normalised schema -- one DataFrame per split (``train``, ``dev``, ``test``), columns in this order:

==============  =======  ======================================================================
column          dtype    meaning
==============  =======  ======================================================================
``id``          str      stable example id: the ``id_field`` column if configured, else the
                         record's 0-based position in its source (BIG-bench: the example's own
                         ``id`` if it has one, else its index in ``task.json``)
``text``        str      the configured ``text_fields`` joined with ``"\n"``; never blank
``label``       int64    index of the raw label in ``TaskConfig.labels`` (config order), 0..C-1
``label_text``  str      verbalizer text, ``TaskConfig.labels[raw label]``
==============  =======  ======================================================================

Raw labels are compared as strings with the (string) keys of ``TaskConfig.labels``; integral
floats read as ints (``1.0`` -> ``"1"``) and booleans as ``"True"``/``"False"``.

Other task kinds:

- ``regression``: the same four columns, but ``label`` is the gold score (float64, inside
  ``TaskConfig.label_range``) and ``label_text`` its spelling (``"3.8"``).
- ``span_qa`` / ``ner``: the text-to-text frame of :mod:`promptgrid.models.generation` (``id``, ``text``,
  ``targets``: list[str]) built from SQuAD-format / CoNLL-format records by ``squad_frame`` /
  ``conll_frame``, plus any other columns those readers add; list columns survive the parquet
  round trip and come back from :func:`load_split` as Python lists.

Split: h = sha256(f"{name}:{id}") read as a number in [0, 1); an example goes to test if
h < test_fraction, to dev if h < test_fraction + dev_fraction, else to train. Each split is then
ordered by h and cut to its cap (max_train / max_dev / max_test). The result depends only on the
task name and the ids, not on the order of rows in the file (when ids are row positions,
reordering the file changes the ids, so give an ``id_field`` if the file order may change).

Bad data raises :class:`DataError`, naming the file (or dataset), the row (1-based record number
in file order) with its id, and the column or value at fault.

BIG-bench task files carry a canary string that must never reach published outputs: only the
``input`` (and other text fields) and the label of each example are kept, and texts or metadata
containing a canary are refused.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from promptgrid.config import TaskConfig
from promptgrid.data import DataError
from promptgrid.data.readers import load_raw, source_fields
from promptgrid.storage.files import read_table, write_table

SPLITS = ("train", "dev", "test")


COLUMNS = ("id", "text", "label", "label_text")


TEXT_COLUMNS = ("id", "text", "targets")  # = generation.TEXT2TEXT_COLUMNS


TEXT_KINDS = ("span_qa", "ner")


# Every BIG-bench canary reads "... canary GUID <guid>"; matching the phrase avoids copying a GUID here.
_CANARY_MARK = "canary guid"


# ---------------------------------------------------------------- normalise and split
def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def _as_key(v) -> Optional[str]:
    """A raw label or id as the string compared with config keys."""
    if _is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _plain(v):
    """numpy scalars as Python values, so messages read 5 rather than np.int64(5)."""
    return v.item() if isinstance(v, np.generic) else v


def _as_text(v) -> str:
    return "" if _is_missing(v) else str(v)


def normalise(raw, task: TaskConfig, source: str) -> pd.DataFrame:
    """Raw records (list of dicts or DataFrame) -> the normalised (id, text, label, label_text) frame.

    ``source`` names the file or dataset in error messages.
    """
    df = raw if isinstance(raw, pd.DataFrame) else pd.DataFrame.from_records(list(raw))
    text_fields, label_field, id_field = source_fields(task)
    if len(df) == 0:
        raise DataError(f"{source} is empty (no rows)")
    for col in [*text_fields, label_field] + ([id_field] if id_field else []):
        if col not in df.columns:
            raise DataError(f"{source}: column '{col}' is missing (columns present: {[str(c) for c in df.columns]})")
    rows = np.arange(1, len(df) + 1)

    if id_field:
        ids = pd.Series([_as_key(v) for v in df[id_field]], dtype=object)
        blank = ids.isna() | (ids.fillna("").str.strip() == "")
        if blank.any():
            i = int(np.flatnonzero(blank.to_numpy())[0])
            raise DataError(f"{source} row {rows[i]}: empty id in column '{id_field}'")
    else:
        ids = pd.Series([str(i) for i in range(len(df))], dtype=object)
    _check_unique_ids(ids, rows, source, id_field)

    parts = [[_as_text(v) for v in df[f]] for f in text_fields]
    text = ["\n".join(p) for p in zip(*parts)]
    blank = np.array([not t.strip() for t in text])
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        where = f"{source} row {rows[i]} (id {ids[i]!r}): empty text in {text_fields} ({int(blank.sum())} such rows)"
        if task.empty_text == "error" or blank.all():
            raise DataError(where)
        # real data sets hold the odd blank example (BIG-bench reviews_sentence_en has one); dropping it is
        # what a researcher wants, said once in the job log
        print(f"warning: dropping {int(blank.sum())} rows with empty text; first: {where}", file=sys.stderr)
        keep = ~blank
        df, ids, rows = df[keep].reset_index(drop=True), ids[keep].reset_index(drop=True), rows[keep]
        text = [t for t, k in zip(text, keep) if k]

    if task.kind == "regression":
        out = pd.DataFrame({"id": ids.tolist(), "text": text, **_regression_labels(df[label_field], task, source,
                                                                                   rows, ids, label_field)})
        _refuse_canary(out, source)
        return out
    keys = [_as_key(v) for v in df[label_field]]
    order = {k: j for j, k in enumerate(task.labels)}
    bad = np.array([k not in order for k in keys])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source} row {rows[i]} (id {ids[i]!r}): label {_plain(df[label_field].iloc[i])!r} in column "
                        f"'{label_field}' is not one of the configured labels {list(task.labels)} "
                        f"({int(bad.sum())} rows affected; tasks.<name>.labels maps raw values to label texts)")

    out = pd.DataFrame({
        "id": ids.tolist(),
        "text": text,
        "label": np.array([order[k] for k in keys], dtype=np.int64),
        "label_text": [task.labels[k] for k in keys],
    })
    _refuse_canary(out, source)
    return out


def _check_unique_ids(ids: pd.Series, rows: np.ndarray, source: str, id_field) -> None:
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids[dup].iloc[0]
        at = rows[(ids == first).to_numpy()].tolist()
        raise DataError(f"{source}: duplicate id {first!r} at rows {at} ({int(dup.sum())} rows share an id); "
                        f"ids in column '{id_field}' must be unique")


def _as_score(v) -> Optional[float]:
    if _is_missing(v) or isinstance(v, (bool, np.bool_)):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _regression_labels(values: pd.Series, task: TaskConfig, source: str, rows, ids, label_field: str) -> dict:
    """Gold scores of a regression task: {'label': float64 array, 'label_text': spellings}."""
    lo, hi = task.label_range
    scores = [_as_score(v) for v in values]
    bad = np.array([x is None or not lo <= x <= hi for x in scores])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source} row {rows[i]} (id {ids[i]!r}): label {_plain(values.iloc[i])!r} in column "
                        f"'{label_field}' is not a number in label_range [{lo:g}, {hi:g}] ({int(bad.sum())} rows "
                        f"affected; set tasks.<name>.label_range)")
    return {"label": np.array(scores, dtype=np.float64), "label_text": [f"{x:g}" for x in scores]}


def text2text_examples(raw: pd.DataFrame, task: TaskConfig, source: str) -> pd.DataFrame:
    """Raw SQuAD-format (span_qa) or CoNLL-format (ner) records -> the text-to-text frame.

    The id is the ``id_field`` column if configured, else an ``id`` column, else the row position.
    ReCoRD-layout records (``passage``, ``query``, ``answers`` list) read as context, question, answers.
    NER tags are the ``ner_tags`` column, else the ``label_field`` column; integer tags index
    ``tag_names``, else the HF dataset's ClassLabel names of that column, else CoNLL-2003's.
    """
    from promptgrid.data.formats import CONLL2003_NER_LABELS, conll_frame, squad_frame

    class_names = dict(raw.attrs.get("class_names") or {})
    raw = raw.copy()
    if task.id_field:
        if task.id_field not in raw.columns:
            raise DataError(f"{source}: column '{task.id_field}' is missing (columns present: "
                            f"{[str(c) for c in raw.columns]})")
        raw["id"] = [_as_key(v) for v in raw[task.id_field]]
    elif "id" not in raw.columns:
        raw["id"] = [str(i) for i in range(len(raw))]
    if len(raw) == 0:
        raise DataError(f"{source} is empty (no rows)")
    if task.kind == "span_qa":
        if not {"context", "question"} & set(raw.columns) and {"passage", "query", "answers"} <= set(raw.columns):
            # ReCoRD layout (super_glue/record): answers is a plain list, the query holds an @placeholder
            answers = [[str(a) for a in (v.tolist() if isinstance(v, np.ndarray) else v or [])]
                       for v in raw["answers"]]
            raw = raw.assign(context=raw["passage"], question=raw["query"], answers=[
                {"text": a, "answer_start": [str(p).find(x) for x in a]} for a, p in zip(answers, raw["passage"])])
        df = squad_frame(raw, source=source)
    else:
        tags = "ner_tags"
        if tags not in raw.columns and "entities" in raw.columns and "tokens" in raw.columns:
            # entity-span layout (DFKI-SLT/conll04, SpERT format): [{type, start, end}], end exclusive
            span_tags = [_bio_from_spans(t, e, f"{source} row {i} (id {rid!r})")
                         for i, (t, e, rid) in enumerate(zip(raw["tokens"], raw["entities"], raw["id"]), 1)]
            raw = raw.assign(ner_tags=span_tags)
            seen = sorted({t for row in span_tags for t in row if t != "O"}, key=lambda t: (t[2:], t[0]))
            class_names[tags] = ["O"] + seen
        if tags not in raw.columns and task.label_field in raw.columns:
            raw = raw.rename(columns={task.label_field: tags})
            class_names.setdefault(tags, class_names.get(task.label_field))
        names = task.tag_names or class_names.get(tags) or list(CONLL2003_NER_LABELS)
        df = conll_frame(raw, source=source, label_names=names)
    _check_unique_ids(df["id"], np.arange(1, len(df) + 1), source, task.id_field or "id")
    _refuse_canary(df, source)
    return df


def _bio_from_spans(tokens, entities, where: str) -> list:
    """BIO tag names for ``tokens`` from entity spans ``[{type, start, end}]`` (token indices, end exclusive)."""
    tokens = list(tokens.tolist() if isinstance(tokens, np.ndarray) else tokens or [])
    entities = list(entities.tolist() if isinstance(entities, np.ndarray) else entities or [])
    tags = ["O"] * len(tokens)
    for ent in entities:
        if not isinstance(ent, dict) or not {"type", "start", "end"} <= set(ent):
            raise DataError(f"{where}: column 'entities' needs {{type, start, end}} mappings; got {ent!r}")
        typ, start, end = ent["type"], ent["start"], ent["end"]
        if not (isinstance(start, (int, np.integer)) and isinstance(end, (int, np.integer))
                and 0 <= start < end <= len(tokens)) or not str(typ):
            raise DataError(f"{where}: entity {ent!r} does not fit the {len(tokens)} tokens (end is exclusive)")
        tags[start] = f"B-{typ}"
        for i in range(start + 1, end):
            tags[i] = f"I-{typ}"
    return tags


def _refuse_canary(df: pd.DataFrame, source: str) -> None:
    hit = df["text"].str.lower().str.contains(_CANARY_MARK, regex=False).to_numpy()
    if hit.any():
        i = int(np.flatnonzero(hit)[0])
        raise DataError(f"{source} id {df['id'].iloc[i]!r}: the text holds a BIG-bench canary string, "
                        f"which must not be copied into outputs")


def split_hash(name: str, ids) -> np.ndarray:
    """(n,) float64 in [0, 1): the top 53 bits of sha256(f"{name}:{id}") for each id."""
    return np.array([(int.from_bytes(hashlib.sha256(f"{name}:{i}".encode()).digest()[:8], "big") >> 11) / 2.0**53
                     for i in ids], dtype=np.float64)


def split_examples(df: pd.DataFrame, name: str, task: TaskConfig) -> dict:
    """Deterministic hash split of a normalised frame into {'train','dev','test'} frames, capped."""
    h = split_hash(name, df["id"])
    which = np.where(h < task.test_fraction, "test",
                     np.where(h < task.test_fraction + task.dev_fraction, "dev", "train"))
    caps = {"train": task.max_train, "dev": task.max_dev, "test": task.max_test}
    keyed = df.assign(_h=h)
    out = {}
    for split in SPLITS:
        part = keyed[which == split].sort_values("_h", kind="stable").head(caps[split])
        if part.empty:
            knob = {"train": "lower dev_fraction / test_fraction", "dev": "raise dev_fraction",
                    "test": "raise test_fraction"}[split]
            raise DataError(f"task '{name}': the {split} split is empty after hashing {len(df)} examples "
                            f"(dev_fraction={task.dev_fraction}, test_fraction={task.test_fraction}, "
                            f"max_{split}={caps[split]}); {knob} or max_{split} under tasks.{name}, or add examples")
        out[split] = part.drop(columns="_h").reset_index(drop=True)
    return out


def prepare_task(task: TaskConfig, name: str, cache_dir) -> dict:
    """Load -> normalise -> split: {'train','dev','test'} normalised DataFrames for task ``name``."""
    raw, source = load_raw(task, cache_dir)
    if task.kind in TEXT_KINDS:
        return split_examples(text2text_examples(raw, task, source), name, task)
    return split_examples(normalise(raw, task, source), name, task)


# ---------------------------------------------------------------- split files
def write_splits(splits: dict, out_dir, meta: dict) -> dict:
    """Write ``<out_dir>/{train,dev,test}.parquet`` (``meta`` + split name and size in the metadata)."""
    if any(_CANARY_MARK in json.dumps(v, default=str).lower() for v in meta.values()):
        raise DataError("split metadata holds a BIG-bench canary string, which must not be copied into outputs")
    paths = {}
    for split in SPLITS:
        if split not in splits:
            raise DataError(f"write_splits: no '{split}' split (got {sorted(splits)})")
        df = splits[split]
        text2text = "targets" in df.columns  # span_qa / ner: every column is kept, the required ones first
        required = TEXT_COLUMNS if text2text else COLUMNS
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise DataError(f"write_splits: the {split} split lacks columns {missing} (has {list(df.columns)})")
        _refuse_canary(df, f"{split} split")
        paths[split] = Path(out_dir) / f"{split}.parquet"
        columns = list(required) + ([c for c in df.columns if c not in required] if text2text else [])
        write_table(df[columns].reset_index(drop=True), paths[split],
                    {**meta, "split": split, "n_examples": int(len(df))})
    return paths


def _python(v):
    """Parquet list / struct cells (numpy arrays, dicts of them) as plain Python lists and dicts."""
    if isinstance(v, np.ndarray):
        return [_python(x) for x in v.tolist()] if v.dtype != object else [_python(x) for x in v]
    if isinstance(v, (list, tuple)):
        return [_python(x) for x in v]
    if isinstance(v, dict):
        return {k: _python(x) for k, x in v.items()}
    return v.item() if isinstance(v, np.generic) else v


def load_split(path, task: TaskConfig) -> pd.DataFrame:
    """Read a split written by :func:`write_splits` and check it against ``task``'s labels."""
    path = Path(path)
    df = read_table(path)
    for col in (TEXT_COLUMNS if task.kind in TEXT_KINDS else COLUMNS):
        if col not in df.columns:
            raise DataError(f"split file {path}: column '{col}' is missing (columns present: {list(df.columns)})")
    if len(df) == 0:
        raise DataError(f"split file {path} has no rows")
    if task.kind in TEXT_KINDS:
        return _load_text_split(df, path)
    if task.kind == "regression":
        return _load_regression_split(df, path, task)
    if not pd.api.types.is_integer_dtype(df["label"]):
        raise DataError(f"split file {path}: column 'label' has dtype {df['label'].dtype}, expected integers")
    label = df["label"].to_numpy(dtype=np.int64)
    n = len(task.labels)
    bad = (label < 0) | (label >= n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"split file {path} row {i + 1} (id {df['id'].iloc[i]!r}): label {label[i]} is outside "
                        f"0..{n - 1} for the configured labels {task.label_texts}")
    expected = np.array(task.label_texts, dtype=object)[label]
    off = df["label_text"].astype(str).to_numpy() != expected
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(f"split file {path} row {i + 1} (id {df['id'].iloc[i]!r}): label_text "
                        f"{df['label_text'].iloc[i]!r} != configured text {expected[i]!r} of label {label[i]}; "
                        f"the task's labels changed since the split was written, so prepare it again")
    return pd.DataFrame({"id": [str(v) for v in df["id"]], "text": [str(v) for v in df["text"]],
                         "label": label, "label_text": [str(v) for v in df["label_text"]]})


def _load_text_split(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    out = pd.DataFrame({"id": [str(v) for v in df["id"]], "text": [str(v) for v in df["text"]]})
    targets = [_python(v) for v in df["targets"]]
    for i, t in enumerate(targets):
        if not isinstance(t, list) or not t or not all(isinstance(x, str) for x in t):
            raise DataError(f"split file {path} row {i + 1} (id {out['id'].iloc[i]!r}): column 'targets' must be a "
                            f"non-empty list of strings; got {t!r}")
    out["targets"] = targets
    for col in df.columns:
        if col not in TEXT_COLUMNS:
            out[col] = [_python(v) for v in df[col]]
    return out


def _load_regression_split(df: pd.DataFrame, path: Path, task: TaskConfig) -> pd.DataFrame:
    if not pd.api.types.is_numeric_dtype(df["label"]) or pd.api.types.is_bool_dtype(df["label"]):
        raise DataError(f"split file {path}: column 'label' has dtype {df['label'].dtype}, expected scores")
    label = df["label"].to_numpy(dtype=np.float64)
    lo, hi = task.label_range
    bad = ~np.isfinite(label) | (label < lo) | (label > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"split file {path} row {i + 1} (id {df['id'].iloc[i]!r}): label {label[i]!r} is outside "
                        f"label_range [{lo:g}, {hi:g}]; the task's label_range changed since the split was "
                        f"written, so prepare it again")
    return pd.DataFrame({"id": [str(v) for v in df["id"]], "text": [str(v) for v in df["text"]],
                         "label": label, "label_text": [str(v) for v in df["label_text"]]})
