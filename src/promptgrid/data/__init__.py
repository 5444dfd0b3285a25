"""Task data: reading (BIG-bench, Hugging Face ``datasets``, local files), normalising and splitting.

The package's own error type lives here so every data module raises the same one.
"""
from __future__ import annotations


class DataError(ValueError):
    """Task data is missing or malformed; the message names the file (or dataset), row and column."""
