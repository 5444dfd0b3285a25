"""Files in and out: atomic writes, prompts as safetensors, parquet tables with provenance.

Every write goes to a temporary file in the same folder and is renamed into place, so a killed
job never leaves a half-written output that a rerun would take as done.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from promptgrid.errors import InputError, MissingResource

if TYPE_CHECKING:
    # torch where prompts are read or written (table-only jobs start without it); pandas and pyarrow where a
    # table is: Snakemake imports this module while it builds the DAG, in a process that may lack them
    # (a catalog lint, promptgrid used as a module)
    import pandas as pd
    import torch


PROVENANCE_KEY = b"promptgrid"


class PromptFileError(InputError):
    """A prompt file is missing, corrupt, or of the wrong shape; the message names the file."""


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ---------------------------------------------------------------- parquet
def write_table(df: pd.DataFrame, path, meta: dict) -> None:
    """Write ``df`` as parquet atomically, with ``meta`` (JSON) in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata({**existing, PROVENANCE_KEY: json.dumps(meta, default=str).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise MissingResource(f"table {path} does not exist")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"table {path} is not a readable parquet file: {err}") from None


def read_table_meta(path) -> dict:
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    raw = md.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


# ---------------------------------------------------------------- prompts
def save_prompt(path, prompt: torch.Tensor, meta: dict) -> None:
    """Save one prompt (L, d) as safetensors; ``meta`` values are stored as strings (JSON for non-strings)."""
    import torch
    from safetensors.torch import save_file

    if prompt.dim() != 2:
        raise ValueError(f"a prompt is (L, d); got shape {tuple(prompt.shape)}")
    str_meta = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in meta.items()}
    with atomic_path(path) as tmp:
        save_file({"prompt": prompt.detach().to(torch.float32).contiguous().cpu()}, str(tmp), metadata=str_meta)


def load_prompt(path, expect_dim: Optional[int] = None, expect_length: Optional[int] = None):
    """Load a prompt saved by :func:`save_prompt`. Returns (tensor (L, d), metadata dict)."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"prompt file {path} does not exist")
    if path.stat().st_size == 0:
        raise PromptFileError(f"prompt file {path} is empty")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
            if "prompt" not in fh.keys():
                raise PromptFileError(f"prompt file {path} has no 'prompt' tensor (keys: {list(fh.keys())})")
            prompt = fh.get_tensor("prompt")
    except PromptFileError:
        raise
    except Exception as err:  # safetensors raises its own error types for truncated headers
        raise PromptFileError(f"prompt file {path} is corrupt or truncated: {err}") from None
    meta = {}
    for k, v in raw_meta.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    if prompt.dim() != 2:
        raise PromptFileError(f"prompt file {path}: expected an (L, d) prompt, got shape {tuple(prompt.shape)}")
    if expect_dim is not None and prompt.shape[1] != expect_dim:
        raise PromptFileError(f"prompt file {path}: prompt width {prompt.shape[1]} does not match the backbone's "
                              f"embedding size {expect_dim} (was it trained on another backbone? its metadata "
                              f"says backbone={meta.get('backbone')!r})")
    if expect_length is not None and prompt.shape[0] != expect_length:
        raise PromptFileError(f"prompt file {path}: prompt length {prompt.shape[0]} != configured length {expect_length}")
    if not torch.isfinite(prompt).all():
        raise PromptFileError(f"prompt file {path} holds NaN or infinite values")
    return prompt, meta


def load_torch_checkpoint(path) -> dict:
    """Load our own training checkpoint; never unpickles arbitrary objects."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def save_torch_checkpoint(path, state: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
