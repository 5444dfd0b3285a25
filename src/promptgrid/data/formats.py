"""Text-to-text tasks (SQuAD span QA, CoNLL NER): data readers, metrics, greedy decoding and the
teacher-forced loss, all with the soft prompt prepended the same way as :mod:`promptgrid.models.backbones`.

Normalised text-to-text frame, one row per example:

============  ==========  ==================================================================
column        dtype       meaning
============  ==========  ==================================================================
``id``        str         the record's own ``id``
``text``      str         model input: ``"context: … question: …"`` / ``"sentence: …"``
``targets``   list[str]   acceptable outputs, the first one is the training target
                          (SQuAD: the gold answers, duplicates dropped; NER: one string, the
                          entity list linearised as ``"PER: John Smith; LOC: Paris"`` or ``"none"``)
============  ==========  ==================================================================

Extra columns, after those three, for word-level tagging (:mod:`promptgrid.objectives.tagging`); the
generation path ignores them:

=====  =====================  ===============  ===================================================
frame  column                 dtype            meaning
=====  =====================  ===============  ===================================================
SQuAD  ``context``            str              the record's context, unstripped (offsets refer to
                                               it)
SQuAD  ``question``           str              the question, stripped
SQuAD  ``words``              list[str]        the context's words (:func:`context_words`: runs
                                               of word characters, and each other non-space
                                               character)
SQuAD  ``word_starts``        list[int]        character offset of each word in ``context``
SQuAD  ``answer_word_spans``  list[list[int]]  ``[first, last]`` word (inclusive) of each gold
                                               answer in record order, duplicates dropped; an
                                               answer whose ``answer_start`` does not point at
                                               its text is looked up as the text's first
                                               occurrence, and left out if the text is not in
                                               the context at all (so it may be empty)
CoNLL  ``tokens``             list[str]        the sentence's tokens
CoNLL  ``tags``               list[str]        their BIO tag names
=====  =====================  ===============  ===================================================

The question comes *after* the context because backbones truncate inputs on the left
(``Backbone.encode_text`` keeps the last ``max_length`` tokens): a long context loses its start,
never the question.

Decoding layout is the scoring layout: causal LMs see ``[prompt][answer_template(text)]`` and
then the target tokens (``" " + target`` and EOS); seq2seq models see ``[prompt][text]`` in the
encoder and ``target + EOS`` in the decoder, started from ``decoder_start_token_id``. EOS is the
first of the tokenizer's EOS, the generation config's EOS and the model config's EOS (then
``[SEP]``); decoding stops at any of them.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from promptgrid.data import DataError
from promptgrid.data.readers import read_local
from promptgrid.lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

TEXT2TEXT_COLUMNS = ("id", "text", "targets")


CONLL2003_NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


NO_ENTITIES = "none"


def _as_list(value) -> Optional[list]:
    """Lists from JSON and numpy arrays from parquet alike; None if neither."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _require_columns(raw: pd.DataFrame, needed: Sequence[str], source: str) -> None:
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(raw.columns)}")


def _where(source: str, row: int, rid) -> str:
    return f"{source} row {row} (id {rid!r})"


SQUAD_EXTRA_COLUMNS = ("context", "question", "words", "word_starts", "answer_word_spans")


CONLL_EXTRA_COLUMNS = ("tokens", "tags")


_WORD = re.compile(r"\w+|[^\w\s]")


def _frame(rows: list, extra: Sequence[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(TEXT2TEXT_COLUMNS) + list(extra))
    df["id"] = df["id"].astype(str)
    df["text"] = df["text"].astype(str)
    return df


def context_words(context: str) -> tuple:
    """(words, starts): the words of ``context`` and their character offsets. A word is a run of
    word characters or one other non-space character, so punctuation is its own word and an
    answer like "2,850" or "the Volga" (without the sentence's full stop) is a run of whole words."""
    found = [(m.group(), m.start()) for m in _WORD.finditer(context)]
    return [w for w, _ in found], [s for _, s in found]


def answer_word_span(context: str, starts: Sequence[int], words: Sequence[str], text: str,
                     answer_start: Optional[int]) -> Optional[list]:
    """``[first, last]`` (inclusive) indices of the words that the answer ``text`` covers, found at
    ``answer_start`` (character offset in ``context``) or, if the text is not there, at its first
    occurrence; None if the text is not in the context or covers no word."""
    core = text.strip()
    if not core:
        return None
    if answer_start is not None and 0 <= answer_start and context[answer_start: answer_start + len(text)] == text:
        begin = answer_start + (len(text) - len(text.lstrip()))
    else:
        begin = context.find(core)
        if begin < 0:
            return None
    end = begin + len(core)
    covered = [i for i, (s, w) in enumerate(zip(starts, words)) if s < end and s + len(w) > begin]
    return [covered[0], covered[-1]] if covered else None


def squad_frame(raw: pd.DataFrame, source: str = "squad", no_answer: Optional[str] = None) -> pd.DataFrame:
    """SQuAD records (``id``, ``title``, ``context``, ``question``, ``answers: {text, answer_start}``)
    to the text-to-text frame, with the tagging columns ``context``, ``question``, ``words``,
    ``word_starts`` and ``answer_word_spans`` (module docstring). A record without answers
    (SQuAD 2.0) raises unless ``no_answer`` gives the target string to use for it; its
    ``answer_word_spans`` is empty."""
    _require_columns(raw, ("id", "context", "question", "answers"), source)
    rows = []
    for row, rec in enumerate(raw.itertuples(index=False), 1):
        where = _where(source, row, rec.id)
        context, question = rec.context, rec.question
        for col, val in (("context", context), ("question", question)):
            if not isinstance(val, str) or not val.strip():
                raise DataError(f"{where}: column '{col}' is empty or not a string ({val!r})")
        answers = rec.answers
        texts = _as_list(answers.get("text")) if isinstance(answers, dict) else None
        if texts is None:
            raise DataError(f"{where}: column 'answers' must be a mapping with a 'text' list; got {answers!r}")
        starts = _as_list(answers.get("answer_start", []))
        if starts is not None and len(starts) != len(texts):
            raise DataError(f"{where}: column 'answers' has {len(texts)} texts but {len(starts)} answer_start values")
        if any(not isinstance(t, str) for t in texts):
            raise DataError(f"{where}: column 'answers' holds a non-string answer text: {texts!r}")
        targets = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
        if not targets:
            if no_answer is None:
                raise DataError(f"{where}: no answer (SQuAD 2.0 unanswerable?); pass no_answer= to keep it")
            targets = [no_answer]
        words, word_starts = context_words(context)
        spans = []
        for i, text in enumerate(texts):
            start = starts[i] if starts is not None else None
            start = int(start) if isinstance(start, (int, np.integer)) and not isinstance(start, bool) else None
            span = answer_word_span(context, word_starts, words, text, start)
            if span is not None and span not in spans:
                spans.append(span)
        rows.append((str(rec.id), f"context: {context.strip()} question: {question.strip()}", targets,
                     context, question.strip(), words, word_starts, spans))
    return _frame(rows, SQUAD_EXTRA_COLUMNS)


def bio_entities(tokens: Sequence[str], tags: Sequence[str]) -> list:
    """Entity spans [(type, text)] in sentence order from BIO tags (IOB2; an ``I-X`` that does not
    continue an ``X`` entity starts one, as conlleval does). Span text = its tokens joined by spaces."""
    entities, cur_type, cur = [], None, []
    for tok, tag in zip(tokens, tags):
        if tag == "O":
            prefix, typ = "O", None
        else:
            prefix, _, typ = tag.partition("-")
            if prefix not in ("B", "I") or not typ:
                raise DataError(f"tag {tag!r} is not O, B-<type> or I-<type>")
        if cur and (prefix != "I" or typ != cur_type):
            entities.append((cur_type, " ".join(cur)))
            cur, cur_type = [], None
        if typ is not None:
            cur.append(tok)
            cur_type = typ
    if cur:
        entities.append((cur_type, " ".join(cur)))
    return entities


def linearize_entities(entities: Sequence) -> str:
    """[(type, text)] -> ``"PER: John Smith; LOC: Paris"``; no entities -> ``"none"``."""
    return "; ".join(f"{t}: {s}" for t, s in entities) if entities else NO_ENTITIES


def conll_frame(raw: pd.DataFrame, source: str = "conll2003",
                label_names: Sequence[str] = CONLL2003_NER_LABELS) -> pd.DataFrame:
    """CoNLL-2003 records (``id``, ``tokens``, ``ner_tags`` as indices into ``label_names``; tag
    strings are accepted too) to the text-to-text frame, with the tagging columns ``tokens`` and
    ``tags`` (tag names); other columns (pos/chunk tags) are ignored."""
    _require_columns(raw, ("id", "tokens", "ner_tags"), source)
    for name in label_names:
        if name != "O" and (name[:2] not in ("B-", "I-") or len(name) < 3):
            raise ValueError(f"label_names: {name!r} is not O, B-<type> or I-<type>")
    rows = []
    for row, rec in enumerate(raw.itertuples(index=False), 1):
        where = _where(source, row, rec.id)
        tokens, tags = _as_list(rec.tokens), _as_list(rec.ner_tags)
        if tokens is None or tags is None:
            raise DataError(f"{where}: 'tokens' and 'ner_tags' must be lists; got {rec.tokens!r}, {rec.ner_tags!r}")
        if not tokens:
            raise DataError(f"{where}: column 'tokens' is empty")
        if len(tokens) != len(tags):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} ner_tags")
        names = []
        for tag in tags:
            if isinstance(tag, str) and tag in label_names:
                names.append(tag)
            elif isinstance(tag, (int, np.integer)) and not isinstance(tag, bool) and 0 <= tag < len(label_names):
                names.append(label_names[int(tag)])
            else:
                raise DataError(f"{where}: column 'ner_tags' has {tag!r}, not an index into (or a name of) "
                                f"the {len(label_names)} labels {list(label_names)}")
        tokens = [str(t) for t in tokens]
        target = linearize_entities(bio_entities(tokens, names))
        rows.append((str(rec.id), "sentence: " + " ".join(tokens), [target], tokens, names))
    return _frame(rows, CONLL_EXTRA_COLUMNS)


def read_squad(path, no_answer: Optional[str] = None) -> pd.DataFrame:
    """A SQuAD-format .jsonl / .json / .parquet file -> text-to-text frame."""
    return squad_frame(read_local(path), source=f"data file {path}", no_answer=no_answer)


def read_conll(path, label_names: Sequence[str] = CONLL2003_NER_LABELS) -> pd.DataFrame:
    """A CoNLL-2003-format .jsonl / .json / .parquet file -> text-to-text frame."""
    return conll_frame(read_local(path), source=f"data file {path}", label_names=label_names)
