"""Text-to-text tasks (SQuAD span QA, CoNLL NER): data readers, metrics, greedy decoding and the
teacher-forced loss, all with the soft prompt prepended the same way as :mod:`promptgrid.backbones`.

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

Extra columns, after those three, for word-level tagging (:mod:`promptgrid.tagging`); the
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

import inspect
import re
import string
from collections import Counter
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from promptgrid.backbones import Backbone, BackboneError
from promptgrid.tasks import DataError, read_local

TEXT2TEXT_COLUMNS = ("id", "text", "targets")
CONLL2003_NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
NO_ENTITIES = "none"
TEXT_METRICS = ("squad_em", "squad_f1", "ner_f1")

# ====================================================================== readers


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
                raise ValueError(f"tag {tag!r} is not O, B-<type> or I-<type>")
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


# ====================================================================== metrics

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


def text2text_score(metric: str, predictions: Sequence[str], targets: Sequence) -> float:
    """The dev/test score (0-100) of generated texts: ``squad_em``, ``squad_f1`` or ``ner_f1``."""
    if metric == "squad_em":
        return squad_scores(predictions, targets)["exact_match"]
    if metric == "squad_f1":
        return squad_scores(predictions, targets)["f1"]
    if metric == "ner_f1":
        return ner_scores(predictions, targets)["f1"]
    raise ValueError(f"unknown text-to-text metric {metric!r}; choose one of {list(TEXT_METRICS)}")


def _check_lengths(predictions, targets) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} target lists")


# ====================================================================== decoding and loss


def stop_token_ids(backbone: Backbone) -> list:
    """Token ids that end a generation; the first is the EOS appended to training targets."""
    model, tok = backbone.model, backbone.tokenizer
    ids = []
    gen_cfg = getattr(model, "generation_config", None)
    for value in (tok.eos_token_id, getattr(gen_cfg, "eos_token_id", None), getattr(model.config, "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    if not ids and tok.sep_token_id is not None:
        ids.append(int(tok.sep_token_id))
    if not ids:
        raise BackboneError(f"backbone '{backbone.name}': neither tokenizer nor model config defines an EOS token")
    return ids


def _decoder_start_id(backbone: Backbone) -> int:
    model = backbone.model
    for cfg in (model.config, getattr(model, "generation_config", None)):
        v = getattr(cfg, "decoder_start_token_id", None)
        if v is not None:
            return int(v)
    return backbone.pad_id


def _target_ids(backbone: Backbone, target: str, max_target_length: Optional[int], eos: int) -> list:
    text = " " + target if backbone.kind == "causal_lm" else target
    ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_target_length is not None:
        ids = ids[: max(max_target_length - 1, 0)]
    return ids + [eos]


def _check_family(backbone: Backbone) -> None:
    if backbone.kind not in ("causal_lm", "seq2seq"):
        raise BackboneError(f"backbone '{backbone.name}' is a {backbone.kind!r} model; text-to-text tasks need "
                            f"a causal_lm or seq2seq backbone")


def _check_batch(prompts: torch.Tensor, n: int, what: str) -> None:
    if prompts.dim() != 3 or prompts.shape[0] != n:
        raise ValueError(f"prompts must be (B, L, d) with B = {n} {what}; got {tuple(prompts.shape)}")


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _causal_logits_at(model, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, **kwargs):
    """Model output whose ``logits`` (B, K, V) are taken at the sorted, unique ``positions`` (K,) only
    (``logits_to_keep`` where the model has it: full-sequence logits of a 50k vocabulary are large)."""
    if _keeps_logits(model):
        out = model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=positions, **kwargs)
        if out.logits.shape[1] == positions.numel():
            return out
    out = model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
    out.logits = out.logits[:, positions]
    return out


def greedy_token_ids(backbone: Backbone, prompts: torch.Tensor, texts: Sequence[str],
                     max_new_tokens: int = 32) -> list:
    """Greedy continuation token ids per example (stop token excluded). prompts: (B, L, d)."""
    _check_family(backbone)
    texts = list(texts)
    _check_batch(prompts, len(texts), "texts")
    if max_new_tokens < 1 or not texts:
        return [[] for _ in texts]
    model = backbone.model
    stop_ids = stop_token_ids(backbone)
    stops = torch.tensor(stop_ids)
    batch = backbone.collate(backbone.input_ids(texts))
    B = len(texts)
    out_ids = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    with torch.inference_mode():
        embeds, mask = backbone.prompted_inputs(prompts, batch)
        if backbone.kind == "causal_lm":
            # right-padded [prompt][tokens][pad]: the scoring layout. Row b's last real position is
            # lengths[b] - 1; new tokens go after the pads, masked pads hidden, positions continuing
            # from lengths[b] so they match an unpadded run.
            lengths = mask.sum(1)
            keep, inverse = torch.unique(lengths - 1, sorted=True, return_inverse=True)
            out = _causal_logits_at(model, embeds, mask, keep, use_cache=True)
            logits = out.logits[torch.arange(B), inverse]
            position = lengths.clone()
        else:
            enc = model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            cur = torch.full((B, 1), _decoder_start_id(backbone), dtype=torch.long)
            out = model(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=cur, use_cache=True)
            logits = out.logits[:, -1]
        for step in range(max_new_tokens):
            nxt = logits.float().argmax(-1)
            for b in (~done).nonzero().flatten().tolist():
                if not bool(torch.isin(nxt[b], stops)):
                    out_ids[b].append(int(nxt[b]))
            done |= torch.isin(nxt, stops)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            nxt = nxt.masked_fill(done, stop_ids[0]).unsqueeze(1)  # finished rows idle on EOS
            if backbone.kind == "causal_lm":
                mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype)], dim=1)
                out = model(inputs_embeds=backbone.embed_layer(nxt), attention_mask=mask,
                            position_ids=position.unsqueeze(1), past_key_values=out.past_key_values, use_cache=True)
                position = position + 1
            else:
                out = model(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=nxt,
                            past_key_values=out.past_key_values, use_cache=True)
            logits = out.logits[:, -1]
    return out_ids


def generate(backbone: Backbone, prompts: torch.Tensor, texts: Sequence[str], max_new_tokens: int = 32) -> list:
    """Greedy generations (list of B strings, special tokens dropped) for prompts (B, L, d) and B
    input texts; the caller batches. Deterministic: no sampling anywhere."""
    ids = greedy_token_ids(backbone, prompts, texts, max_new_tokens)
    return [backbone.tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]


def seq2seq_loss(backbone: Backbone, prompts: torch.Tensor, texts: Sequence[str], targets: Sequence[str],
                 max_target_length: Optional[int] = None) -> torch.Tensor:
    """Per-example teacher-forced cross-entropy (B,), the mean over the target's tokens (EOS
    included) of -log p(token | prompt, input, previous target tokens). prompts: (B, L, d), one
    target string per example (a frame's ``targets[0]``). Differentiable in ``prompts``.
    ``max_target_length`` caps the target tokens (EOS included)."""
    targets = list(targets)
    bad = [t for t in targets if not isinstance(t, str)]
    if bad:
        raise ValueError(f"targets must be one string per example (pick targets[0] of a frame row); got {bad[0]!r}")
    return teacher_forced(backbone, prompts, texts, targets, max_target_length)[0]


def teacher_forced(backbone: Backbone, prompts: torch.Tensor, texts, targets, max_target_length: Optional[int] = None):
    """Teacher-forced pass over the targets, keeping the logits (PANDA distils them).

    Returns (loss (B,), token logits (B, T, V) float, mask (B, T)): the loss is the mean over each
    target's tokens (EOS included) of -log p(token | prompt, input, previous target tokens); row b's
    logits at target position j predict its j-th target token; ``mask`` marks the real target positions.
    prompts: (B, L, d), one target string per example. Differentiable in ``prompts``.
    """
    _check_family(backbone)
    texts, targets = list(texts), list(targets)
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    _check_batch(prompts, len(texts), "texts")
    model = backbone.model
    B, L = prompts.shape[:2]
    eos = stop_token_ids(backbone)[0]
    tgt = [_target_ids(backbone, t, max_target_length, eos) for t in targets]
    T = max(len(t) for t in tgt)
    mask = torch.zeros(B, T)
    for b, t in enumerate(tgt):
        mask[b, :len(t)] = 1.0
    if backbone.kind == "causal_lm":
        ctx = backbone.input_ids(texts)
        packed = backbone.collate([c + t for c, t in zip(ctx, tgt)])
        embeds, attn = backbone.prompted_inputs(prompts, packed)
        rows, cols, pos, gold = [], [], [], []
        for b, (c, t) in enumerate(zip(ctx, tgt)):
            start = L + len(c)
            rows += [b] * len(t)
            cols += range(len(t))
            pos += range(start - 1, start - 1 + len(t))  # token at position p is predicted at p - 1
            gold += t
        pos = torch.tensor(pos)
        keep, inverse = torch.unique(pos, sorted=True, return_inverse=True)
        logits = _causal_logits_at(model, embeds, attn, keep).logits
        rows_t = torch.tensor(rows)
        token_logits = logits[rows_t, inverse].float()
        nll = F.cross_entropy(token_logits, torch.tensor(gold), reduction="none")
        per_example = torch.zeros(B, dtype=nll.dtype).index_add(0, rows_t, nll)
        loss = per_example / torch.tensor([len(t) for t in tgt], dtype=nll.dtype)
        out = token_logits.new_zeros(B, T, token_logits.shape[-1])
        out = out.index_put((rows_t, torch.tensor(cols)), token_logits)
        return loss, out, mask
    batch = backbone.collate(backbone.input_ids(texts))
    embeds, attn = backbone.prompted_inputs(prompts, batch)
    labels = backbone.collate(tgt)
    label_ids = labels.input_ids.masked_fill(labels.attention_mask == 0, -100)
    enc = model.get_encoder()(inputs_embeds=embeds, attention_mask=attn).last_hidden_state
    logits = model(encoder_outputs=(enc,), attention_mask=attn, labels=label_ids).logits.float()
    nll = F.cross_entropy(logits.transpose(1, 2), label_ids, ignore_index=-100, reduction="none")
    return nll.sum(1) / labels.attention_mask.sum(1).to(nll.dtype), logits, labels.attention_mask.float()


