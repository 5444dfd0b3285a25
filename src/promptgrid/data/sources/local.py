"""Examples in a local file the study names (``tasks.<name>.path``): .jsonl, .json, .csv, .tsv or .parquet.

The file is an input of its task's prepare job, so editing it reruns that job; the task says which
columns hold the text, the label and the id (``text_fields``, ``label_field``, ``id_field``).
"""
from __future__ import annotations

from promptgrid.data.readers import read_local
from promptgrid.registry import SOURCES, SourceSpec


def read(task, path, cache_dir):
    return read_local(task.path), f"data file {task.path}"


SOURCES.add(SourceSpec(name="local", order=1, read=read, licence="the file's own", fields=None,
                       summary="a local .jsonl / .json / .csv / .tsv / .parquet file named by the study"))
