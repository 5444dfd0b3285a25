"""Task data: reading (BIG-bench, Hugging Face ``datasets``, local files), normalising and splitting.

The package's own error type lives here so every data module raises the same one.
"""
from __future__ import annotations

from promptgrid.errors import InputError, MissingResource


class DataError(InputError):
    """Task data is missing or malformed; the message names the file (or dataset), row and column. An
    :class:`~promptgrid.errors.InputError` (so a ``ValueError``): the command exits 2."""


class DataNotFound(DataError, MissingResource):
    """A task's data file or dataset is not there or cannot be reached; the message names it. A missing
    resource (also a :class:`DataError`): the command exits 3."""
