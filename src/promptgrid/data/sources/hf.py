"""A Hugging Face dataset: a hub id (on machines that reach the hub; pin ``hf_config``, ``hf_split`` and
``hf_revision``, which ``promptgrid pin`` sets to the commit), or a local builder ('json', 'csv', 'parquet') with
``data_files``, through the same ``datasets.load_dataset`` call. A hub id is read at the commit its revision
resolves to, which the prepared task's provenance records (:func:`promptgrid.data.readers.source_record`).
"""
from __future__ import annotations

from promptgrid.data.readers import hf_name, read_hf
from promptgrid.registry import SOURCES, SourceSpec


def read(task, path, cache_dir):
    return read_hf(task), hf_name(task)


SOURCES.add(SourceSpec(name="hf", order=2, read=read, licence="the dataset's own", fields=None,
                       summary="a Hugging Face dataset: hub id, or a local builder with data_files"))
