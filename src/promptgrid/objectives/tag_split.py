"""What word tagging needs besides the objective: tag names and their label texts, the best answer span,
and ``TagSplit``, a tokenized split with its word-to-token alignment.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from promptgrid.errors import InputError
from promptgrid.models.backbones import BackboneError

QA_TAGS = ("other", "answer")


ENTITY_NAMES = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}


BIO_WORDS = {"B": "begin", "I": "inside"}


OUTSIDE_TEXT = "outside"


DEFAULT_MAX_ANSWER_WORDS = 30


DEFAULT_MAX_QUESTION_TOKENS = 64


def ner_label_text(tag: str) -> str:
    """The label text of a BIO tag: ``B-PER`` -> ``"begin person"``, ``I-ORG`` -> ``"inside
    organization"``, ``O`` -> ``"outside"``; unknown types lower-cased (``B-WORK_OF_ART`` ->
    ``"begin work of art"``)."""
    if tag == "O":
        return OUTSIDE_TEXT
    prefix, _, typ = tag.partition("-")
    if prefix not in BIO_WORDS or not typ:
        raise InputError(f"tag {tag!r} is not O, B-<type> or I-<type>")
    name = ENTITY_NAMES.get(typ.upper(), typ.lower().replace("_", " ").replace("-", " "))
    return f"{BIO_WORDS[prefix]} {name}"


def best_span(scores, max_len: int) -> Optional[tuple]:
    """Inclusive word indices (first, last) of the contiguous span of 1..``max_len`` words whose
    summed ``scores`` (n,) is largest; None if n == 0. Exact: every (start, length) is compared,
    through prefix sums, in O(n * max_len). Ties go to the shorter span, then the earlier one."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    if n == 0:
        return None
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    best, arg = -np.inf, None
    for length in range(1, min(max_len, n) + 1):
        sums = prefix[length:] - prefix[:-length]  # sums[i] = s[i] + ... + s[i + length - 1]
        i = int(np.argmax(sums))
        if sums[i] > best:
            best, arg = sums[i], (i, i + length - 1)
    return arg


@dataclass
class TagSplit:
    """An encoded tagging split, one entry per example.

    ``ids``: model-input token ids in the backbone's layout (what ``backbone.input_ids`` would give:
    masked LMs without the leading [CLS]), list[list[int]]; ``word_pos``: index into ``ids`` of each
    tagged word's first sub-token (kept words only); ``tags``: gold tag index per kept word;
    ``words``: every taggable word (sentence tokens / context words), kept or not; ``targets``:
    the gold strings scored against; ``contexts`` / ``word_starts``: span QA only, to turn a word
    span back into text; ``answer_cut``: span QA, every gold answer lies (partly) in dropped words.
    """

    ids: list
    word_pos: list
    tags: list
    words: list
    targets: list
    contexts: Optional[list] = None
    word_starts: Optional[list] = None
    answer_cut: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_dropped(self) -> list:
        """Words per example that did not fit in ``max_length``."""
        return [len(w) - len(p) for w, p in zip(self.words, self.word_pos)]


class HeadInputCaught(Exception):
    """Carries the input of the output-embedding layer out of a masked LM's forward pass."""

    def __init__(self, value):
        super().__init__("head input captured")
        self.value = value


def special_layout(tokenizer, pair: bool) -> list:
    """The special tokens around one or two sequences, read off the tokenizer: [prefix, (middle,)
    suffix] id lists, e.g. BERT ``[[CLS]], [[SEP]], [[SEP]]`` for a pair."""
    enc = tokenizer("a", "b", return_special_tokens_mask=True) if pair else \
        tokenizer("a", return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    content = [i for i, m in enumerate(special) if not m]
    if len(content) != (2 if pair else 1):
        raise BackboneError(f"cannot read the tokenizer's special-token layout from {ids} / {special}")
    parts, prev = [], 0
    for c in content:
        parts.append(list(ids[prev:c]))
        prev = c + 1
    parts.append(list(ids[prev:]))
    return parts


def require_columns(frame: pd.DataFrame, needed: Sequence[str], kind: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"{kind} tagging needs the frame columns {list(needed)} that "
                         f"promptgrid.models.generation's readers write; {missing} missing (split written by an older "
                         f"promptgrid? prepare the task again)")
