"""Scores of text-to-text predictions (0-100): SQuAD exact match and token F1 against every acceptable
answer, and entity-level NER F1 over linearised ``type: span`` entities.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

#: the task scores (``tasks.<name>.score``) of generated texts
TEXT_SCORES = ("squad_em", "squad_f1", "ner_f1")


_PUNCT = set(string.punctuation)


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lowercase, drop punctuation, drop articles, squash spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def squad_exact_match(prediction: str, gold_answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in gold_answers))


def _token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        # SQuAD 2.0 script: an empty side scores 1 only if both are empty (v1.1 gave 0 for "the" vs "the")
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, gold_answers: Sequence[str]) -> float:
    """Bag-of-tokens F1 (0-1) after normalisation, max over the gold answers."""
    return max((_token_f1(prediction, g) for g in gold_answers), default=0.0)


def squad_scores(predictions: Sequence[str], targets: Sequence[Sequence[str]]) -> dict:
    """Corpus means, 0-100: ``{"exact_match": …, "f1": …}``."""
    _check_lengths(predictions, targets)
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = [squad_exact_match(p, g) for p, g in zip(predictions, targets)]
    f1 = [squad_f1(p, g) for p, g in zip(predictions, targets)]
    return {"exact_match": 100 * sum(em) / len(em), "f1": 100 * sum(f1) / len(f1)}


def _norm_span(s: str, case_sensitive: bool) -> str:
    # detokenisers disagree on spaces around punctuation ("U.S." vs "u. s."): drop them on both sides
    s = " ".join(s.split())
    s = re.sub(r"\s*([^\w\s])\s*", r"\1", s)
    return s if case_sensitive else s.casefold()


def parse_entities(text: str, case_sensitive: bool = False) -> list:
    """A (possibly malformed) linearisation back to [(TYPE, span)]. Pieces are split on ';' or
    newlines and at their first ':'; pieces without a type or a span, and ``none``, are dropped.
    Types are upper-cased; spans are whitespace-normalised (and casefolded unless case_sensitive)."""
    out = []
    for piece in re.split(r"[;\n]", text or ""):
        typ, sep, span = piece.partition(":")
        typ, span = typ.strip().upper(), _norm_span(span, case_sensitive)
        if not sep or not typ or not span or " " in typ:
            continue
        out.append((typ, span))
    return out


def ner_scores(predictions: Sequence[str], targets: Sequence, case_sensitive: bool = False) -> dict:
    """Entity-level micro precision / recall / F1 (0-100) over (type, span) pairs, counted as
    multisets per example. ``targets[i]`` is the gold linearisation or a list whose first item is."""
    _check_lengths(predictions, targets)
    tp = n_pred = n_gold = 0
    for pred, gold in zip(predictions, targets):
        if not isinstance(gold, str):
            gold = list(gold)[0]
        p = Counter(parse_entities(pred, case_sensitive))
        g = Counter(parse_entities(gold, case_sensitive))
        tp += sum((p & g).values())
        n_pred += sum(p.values())
        n_gold += sum(g.values())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    if n_pred == 0 and n_gold == 0:  # nothing to find and nothing claimed
        precision = recall = f1 = 1.0
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


def text2text_score(score_name: str, predictions: Sequence[str], targets: Sequence) -> float:
    """The dev/test score (0-100) of generated texts: ``squad_em``, ``squad_f1`` or ``ner_f1``."""
    if score_name == "squad_em":
        return squad_scores(predictions, targets)["exact_match"]
    if score_name == "squad_f1":
        return squad_scores(predictions, targets)["f1"]
    if score_name == "ner_f1":
        return ner_scores(predictions, targets)["f1"]
    raise ValueError(f"unknown text-to-text score {score_name!r}; choose one of {list(TEXT_SCORES)}")


def _check_lengths(predictions, targets) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} target lists")
