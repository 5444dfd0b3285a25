"""What the source readers share: turning parsed texts and labels into the raw frame a source yields."""
from __future__ import annotations

import io
import re
from typing import Optional, Sequence

from promptgrid.data import DataError
from promptgrid.lazy import lazy_module

pd = lazy_module("pandas")


def records_frame(texts: Sequence, labels: Sequence, where: str, ids: Optional[Sequence] = None) -> pd.DataFrame:
    """The raw frame of a registry source: columns ``id``, ``text``, ``label`` (strings).

    Texts are stripped and whitespace runs collapsed; empty texts are dropped, and so is every repeat of
    a text already seen (the first one stays), so one sentence never lands in two splits. The id is the
    record's position in the source file (or ``ids``), kept through the dropping, so it is stable.
    """
    if len(texts) != len(labels):
        raise DataError(f"{where}: {len(texts)} texts but {len(labels)} labels")
    ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    rows, seen = [], set()
    for i, t, y in zip(ids, texts, labels):
        text = re.sub(r"\s+", " ", "" if t is None or (isinstance(t, float) and t != t) else str(t)).strip()
        if not text or text in seen or y is None:
            continue
        seen.add(text)
        rows.append((i, text, str(y)))
    if not rows:
        raise DataError(f"{where}: no examples")
    return pd.DataFrame(rows, columns=["id", "text", "label"])


def read_csv_bytes(data: bytes, where: str, **kwargs) -> pd.DataFrame:
    """A CSV held in memory; a parse error names the file."""
    try:
        return pd.read_csv(io.BytesIO(data), **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{where} is not the CSV promptgrid expects: {err}") from None


def need_columns(df: pd.DataFrame, columns: Sequence, where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: columns {missing} are missing (present: {list(map(str, df.columns))})")
