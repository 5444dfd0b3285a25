"""Span QA and NER on encoder and masked-LM backbones, as word tagging by a prompt-only model.

BERT-type backbones cannot generate text, so span QA and NER run as word tagging: the first
sub-token of each input word gets a score for each tag, read off the frozen model with no new
trainable parameters -- only the soft prompt (L, d) is trained, as everywhere in promptgrid, so
a tagging prompt is the same kind of object as a classification prompt and transfers, mixes and
feeds the PANDA metric the same way (a linear tagging head would be a second set of task
parameters that prompt transfer knows nothing about).

Tag scores of a word, from its first sub-token's position (rank classification over the tags'
label texts, as :mod:`promptgrid.models.backbones` scores sentence labels):

- ``masked_lm``: the MLM head's logits of the label text's tokens at that position (the token
  itself is not masked), averaged over the label's tokens (``" " + text``, no special tokens, the
  tokenization of :meth:`promptgrid.models.backbones.MaskedLMBackbone.task_head`; for one-token labels
  this is exactly its logit). The MLM head is run only up to its vocabulary projection, which
  is then taken for the label tokens alone (a (B, T, V) logit tensor of a 30k vocabulary is large).
- ``encoder``: temperature x cosine of the token's last hidden state with each label text's
  embedding (:meth:`promptgrid.models.backbones.EncoderBackbone.task_head`).

The prompt goes in exactly as ``backbone.prompted_inputs`` puts it (encoder: ``P [CLS] x [SEP]``;
masked LM: ``[CLS] [MASK] P x [SEP]``, the classification layout, so a prompt sees the same context
in both uses); word positions are counted in ``ids`` and shifted by however many positions
``prompted_inputs`` put before the tokens.

Tasks (TaskConfig.kind):

- ``ner``: one tag per word, the BIO tags of ``tag_names`` (default CoNLL-2003's). Label texts:
  ``B-X`` -> ``"begin <name>"``, ``I-X`` -> ``"inside <name>"``, ``O`` -> ``"outside"`` (the words
  that BIO abbreviates; ``"person"`` alone would give B-PER and I-PER one label), with
  PER/ORG/LOC/MISC named person/organization/location/miscellaneous and other types lower-cased.
  ``TaskConfig.labels`` may map tag names to other texts. Prediction: argmax per word -> BIO tags
  -> entities (:func:`promptgrid.data.formats.bio_entities`) -> their linearisation, scored by
  ``ner_f1`` against the frame's ``targets`` exactly as generated entity lists are.
- ``span_qa``: input ``question [SEP] context``; tags {``other``, ``answer``} over the context
  words only (label texts ``"other"`` / ``"answer"``, or ``TaskConfig.labels``). Prediction: the
  contiguous span of 1..``max_answer_words`` (default 30) words with the largest sum of log-odds
  logit(answer) - logit(other), found exactly (:func:`best_span`); its text is the context
  from the span's first to its last character, scored by ``squad_f1`` / ``squad_em`` against
  every gold answer. Words are those of :func:`promptgrid.models.generation.context_words`
  (punctuation is its own word), so a span's text reproduces the gold answer.

Loss: cross-entropy of the gold tag per tagged word, mean over the example's words: (B,).

Truncation: an input keeps at most the backbone's ``max_length`` tokens (special tokens
included, as ``Backbone.encode_text`` counts). The question keeps its first
``max_question_tokens`` (default 64, at most half of that budget); context words (sentence
words for NER) are kept from the start while their sub-tokens fit, and the rest are dropped
whole. Dropped words are never predicted (NER: tagged ``O``; QA: never in the span) but the gold
``targets`` stay whole, so truncation costs score honestly. A QA example whose every gold
answer reaches into the dropped words is marked ``answer_cut`` and trained on all-``other``
tags (the answer is not in what the model sees); the gold span trained on is the first gold
answer that fits.

PANDA distils the word tag logits: ``(logits (B, W, C), mask (B, W))``; ``mse`` is the squared
difference averaged over the C tags, ``kl`` KL(teacher || student) at temperature T times T^2,
each averaged over the example's tagged words.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from promptgrid.data.formats import (
    CONLL2003_NER_LABELS,
    CONLL_EXTRA_COLUMNS,
    SQUAD_EXTRA_COLUMNS,
    bio_entities,
    linearize_entities,
)
from promptgrid.engine import scoring, training
from promptgrid.errors import InputError
from promptgrid.models.backbones import Backbone, BackboneError, to_device
from promptgrid.models.precision import precision_scope
from promptgrid.objectives import TAGGING_BACKBONES
from promptgrid.objectives.tag_split import (
    DEFAULT_MAX_ANSWER_WORDS,
    DEFAULT_MAX_QUESTION_TOKENS,
    QA_TAGS,
    HeadInputCaught,
    TagSplit,
    best_span,
    ner_label_text,
    require_columns,
    special_layout,
)
from promptgrid.objectives.text_scores import text2text_score


class TaggingObjective:
    """Span QA / NER as word tagging on ``encoder`` and ``masked_lm`` backbones (module docstring).

    The duck-typed objective of :mod:`promptgrid.objectives`: ``score_name``, ``encode``,
    ``forward``, ``kd``, ``score``. No parameters besides the prompt: tag scores come from the
    frozen model's own head (masked LM) or its label-text embeddings (encoder).
    """

    def __init__(self, backbone: Backbone, task_cfg):
        if backbone.kind not in TAGGING_BACKBONES:
            raise BackboneError(f"backbone '{backbone.name}' is a {backbone.kind} model; tagging needs an encoder or "
                                f"masked_lm backbone")
        self.backbone, self.kind = backbone, task_cfg.kind
        if self.kind == "ner":
            self.score_name = "ner_f1"
            self.tag_names = [str(t) for t in (getattr(task_cfg, "tag_names", None) or CONLL2003_NER_LABELS)]
            if "O" not in self.tag_names:
                raise InputError(f"tag_names {self.tag_names} has no 'O' tag")
            default_text = ner_label_text
        elif self.kind == "span_qa":
            self.score_name = "squad_em" if getattr(task_cfg, "score", None) == "squad_em" else "squad_f1"
            self.tag_names = list(QA_TAGS)
            default_text = str
        else:
            raise ValueError(f"tagging runs span_qa and ner tasks, not {self.kind!r}")
        if len(set(self.tag_names)) != len(self.tag_names):
            raise InputError(f"tag_names {self.tag_names} repeats a tag")
        overrides = dict(getattr(task_cfg, "labels", None) or {})
        self.label_texts = [str(overrides.get(t, default_text(t))) for t in self.tag_names]
        self.tag_index = {t: c for c, t in enumerate(self.tag_names)}
        self.max_answer_words = int(getattr(task_cfg, "max_answer_words", None) or DEFAULT_MAX_ANSWER_WORDS)
        self.max_question_tokens = int(getattr(task_cfg, "max_question_tokens", None) or DEFAULT_MAX_QUESTION_TOKENS)
        tok = backbone.tokenizer
        if backbone.kind == "masked_lm":
            label_ids = [tok(" " + t, add_special_tokens=False)["input_ids"] for t in self.label_texts]
            for t, ids in zip(self.label_texts, label_ids):
                if not ids:
                    raise BackboneError(f"backbone '{backbone.name}': label text {t!r} tokenizes to nothing")
            if len({tuple(i) for i in label_ids}) != len(label_ids):
                raise BackboneError(f"backbone '{backbone.name}': two of the label texts {self.label_texts} have the "
                                    f"same tokens; tagging needs distinct label texts")
            unique = sorted({i for ids in label_ids for i in ids})
            # (C, U): row c averages the logits of label c's tokens among the U distinct label tokens
            avg = torch.zeros(len(label_ids), len(unique))
            for c, ids in enumerate(label_ids):
                for i in ids:
                    avg[c, unique.index(i)] += 1.0 / len(ids)
            self.label_token_ids, self._label_avg = label_ids, avg.to(backbone.device)
            self._unique_ids = torch.tensor(unique, dtype=torch.long, device=backbone.device)
        else:
            self.label_embeddings = backbone.task_head(self.label_texts).label_embeddings  # (C, h), unit norm
        # masked LMs: backbone.input_ids drops the leading [CLS] (prompted_inputs puts it before the prompt)
        self._drop_first = backbone.kind == "masked_lm" and tok.cls_token_id is not None
        self._layout = special_layout(tok, pair=self.kind == "span_qa")
        if self._drop_first and not self._layout[0]:
            raise BackboneError(f"backbone '{backbone.name}': the tokenizer puts no special token first, but the "
                                f"masked-LM layout drops the first token")
        self._pieces_cache: dict = {}

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    # ------------------------------------------------------------ encoding
    def _pieces(self, words: Sequence[str], space_before: Sequence[bool]) -> list:
        """Sub-token ids of each word as it reads in running text (a leading space where the text has
        one: BPE vocabularies spell mid-sentence words differently); a word that tokenizes to
        nothing (a lone zero-width character) becomes [UNK] so that every word has a position."""
        texts = [(" " if sp else "") + w for w, sp in zip(words, space_before)]
        todo = list(dict.fromkeys(t for t in texts if t not in self._pieces_cache))
        if todo:
            for t, ids in zip(todo, self.backbone.tokenizer(todo, add_special_tokens=False)["input_ids"]):
                self._pieces_cache[t] = list(ids)
        unk = self.backbone.tokenizer.unk_token_id
        unk = unk if unk is not None else self.backbone.pad_id
        return [self._pieces_cache[t] or [unk] for t in texts]

    def _assemble(self, before: list, pieces: list) -> tuple:
        """Token ids of ``before`` (already laid out with its special tokens) + as many whole words
        as fit + the closing special tokens, and each kept word's first sub-token position."""
        suffix = self._layout[-1]
        room = self.backbone.cfg.max_length - len(before) - len(suffix)
        ids, pos = list(before), []
        for p in pieces:
            if len(p) > room:
                break  # drop this word and every later one: the kept words stay one contiguous run
            pos.append(len(ids))
            ids.extend(p)
            room -= len(p)
        ids.extend(suffix)
        if self._drop_first:
            ids, pos = ids[1:], [q - 1 for q in pos]
        return ids, pos

    def encode(self, frame: pd.DataFrame) -> TagSplit:
        """Tokenize a span_qa / ner frame (:mod:`promptgrid.models.generation`, with its tagging columns)."""
        targets = [[str(x) for x in t] for t in frame["targets"]]
        if self.kind == "ner":
            require_columns(frame, CONLL_EXTRA_COLUMNS, "ner")
            split = TagSplit([], [], [], [], targets)
            for row, (tokens, tags) in enumerate(zip(frame["tokens"], frame["tags"])):
                tokens, tags = [str(t) for t in tokens], [str(t) for t in tags]
                unknown = sorted(set(tags) - set(self.tag_index))
                if unknown:
                    raise InputError(f"ner tagging: example {frame['id'].iloc[row]!r} has tags {unknown} outside "
                                     f"tag_names {self.tag_names}; set tasks.<name>.tag_names")
                ids, pos = self._assemble(self._layout[0], self._pieces(tokens, [True] * len(tokens)))
                split.ids.append(ids)
                split.word_pos.append(pos)
                split.tags.append([self.tag_index[t] for t in tags[: len(pos)]])
                split.words.append(tokens)
            return split
        require_columns(frame, SQUAD_EXTRA_COLUMNS, "span_qa")
        split = TagSplit([], [], [], [], targets, contexts=[], word_starts=[])
        prefix, middle, suffix = self._layout
        budget = self.backbone.cfg.max_length - len(prefix) - len(middle) - len(suffix)
        max_q = max(0, min(self.max_question_tokens, budget // 2))
        tok = self.backbone.tokenizer
        for context, question, words, starts, spans in zip(frame["context"], frame["question"], frame["words"],
                                                           frame["word_starts"], frame["answer_word_spans"]):
            context, words, starts = str(context), [str(w) for w in words], [int(s) for s in starts]
            space = [s == 0 or context[s - 1].isspace() for s in starts]
            space[:1] = [True]  # the first context word follows a special token
            q_ids = tok(str(question), add_special_tokens=False)["input_ids"][:max_q]
            ids, pos = self._assemble(prefix + q_ids + middle, self._pieces(words, space))
            gold = [0] * len(pos)
            fits = [(int(a), int(b)) for a, b in spans if int(b) < len(pos)]
            if fits:
                first, last = fits[0]
                gold[first: last + 1] = [1] * (last - first + 1)
            split.ids.append(ids)
            split.word_pos.append(pos)
            split.tags.append(gold)
            split.words.append(words)
            split.contexts.append(context)
            split.word_starts.append(starts)
            split.answer_cut.append(bool(len(spans)) and not fits)
        return split

    # ------------------------------------------------------------ scoring
    def _states(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S, h'): the encoder's last hidden state, or for a masked LM the input of its
        vocabulary projection (after the MLM head's transform), caught by a pre-hook that stops the
        forward pass before the (B, S, V) projection."""
        model = self.backbone.model
        if self.backbone.kind == "encoder":
            return model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

        def catch(module, args):
            raise HeadInputCaught(args[0])

        handle = model.get_output_embeddings().register_forward_pre_hook(catch)
        try:
            model(inputs_embeds=embeds, attention_mask=mask)
        except HeadInputCaught as caught:
            return caught.value
        finally:
            handle.remove()
        raise BackboneError(f"backbone '{self.backbone.name}': its forward pass never called its output embeddings")

    def _tag_scores(self, states: torch.Tensor) -> torch.Tensor:
        """(B, W, C) float tag scores from the word states (B, W, h')."""
        if self.backbone.kind == "encoder":
            return self.backbone.cfg.temperature * F.normalize(states.float(), dim=-1) @ self.label_embeddings.T
        out = self.backbone.model.get_output_embeddings()
        bias = out.bias[self._unique_ids] if getattr(out, "bias", None) is not None else None
        token_logits = F.linear(states, out.weight[self._unique_ids], bias).float()  # (B, W, U)
        return token_logits @ self._label_avg.T

    def word_logits(self, prompts: torch.Tensor, split: TagSplit, idx: Sequence[int]) -> tuple:
        """Tag logits of examples ``split[idx]`` under prompts (B, L, d), row b using prompts[b]:
        (logits (B, W, C) float, mask (B, W) bool), W = most kept words of a row; word w of row b
        is real where mask[b, w]."""
        idx = list(idx)
        if prompts.dim() != 3 or prompts.shape[0] != len(idx):
            raise ValueError(f"prompts must be (B, L, d) with B = {len(idx)} examples; got {tuple(prompts.shape)}")
        batch = self.backbone.collate([split.ids[i] for i in idx])
        embeds, attn = self.backbone.prompted_inputs(prompts, batch)
        offset = embeds.shape[1] - batch.input_ids.shape[1]  # positions prompted_inputs put before the tokens
        B, W = len(idx), max(1, max(len(split.word_pos[i]) for i in idx))
        pos = torch.zeros(B, W, dtype=torch.long)
        mask = torch.zeros(B, W, dtype=torch.bool)
        for b, i in enumerate(idx):
            n = len(split.word_pos[i])
            pos[b, :n] = torch.tensor(split.word_pos[i], dtype=torch.long)
            mask[b, :n] = True
        states = self._states(embeds, attn)
        picked = states[torch.arange(B, device=states.device).unsqueeze(1), to_device(pos + offset, states.device)]
        return self._tag_scores(picked), to_device(mask, states.device)

    def forward(self, prompts: torch.Tensor, split: TagSplit, idx):
        """(loss (B,), (logits (B, W, C), mask (B, W))): per-example mean over tagged words of the
        gold tag's cross-entropy, differentiable in prompts (B, L, d)."""
        idx = list(idx)
        logits, mask = self.word_logits(prompts, split, idx)
        gold = torch.zeros(mask.shape, dtype=torch.long)
        for b, i in enumerate(idx):
            gold[b, : len(split.tags[i])] = torch.tensor(split.tags[i], dtype=torch.long)
        nll = F.cross_entropy(logits.transpose(1, 2), to_device(gold, logits.device), reduction="none")  # (B, W)
        m = mask.to(nll.device, nll.dtype)
        return (nll * m).sum(1) / m.sum(1).clamp(min=1), (logits, mask)

    def kd(self, student_out, teacher_out, panda_cfg) -> torch.Tensor:
        """Per-example distillation loss (B,) between (logits (B, W, C), mask (B, W)) pairs."""
        (s, mask), (t, _) = student_out, teacher_out
        return training.masked_kd_loss(s, t, mask, panda_cfg)

    def decode(self, split: TagSplit, i: int, logits: torch.Tensor) -> str:
        """The prediction (a text scored against ``split.targets[i]``) from example i's tag logits
        (n_kept, C): span QA, the best span's text; NER, the linearised entities."""
        logits = logits.float().cpu()
        if self.kind == "ner":
            tags = [self.tag_names[c] for c in logits.argmax(-1).tolist()]
            tags += ["O"] * (len(split.words[i]) - len(tags))  # dropped words: no entity
            return linearize_entities(bio_entities(split.words[i], tags))
        span = best_span((logits[:, 1] - logits[:, 0]).double().numpy(), self.max_answer_words)
        if span is None:
            return ""
        first, last = span
        starts, words = split.word_starts[i], split.words[i]
        return split.contexts[i][starts[first]: starts[last] + len(words[last])]

    @torch.inference_mode()
    def predict(self, prompts: torch.Tensor, split: TagSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        """Predictions of every prompt of the bank (K, L, d) on every example: K lists of N strings.

        As in :func:`promptgrid.engine.scoring.predict_bank`, examples go by length and each batch holds
        all K prompts for a chunk of n examples (row j uses prompt j // n).
        """
        K, N = prompts.shape[0], len(split)
        out = [[""] * N for _ in range(K)]
        for idx, prompt_index in scoring.bank_chunks([len(ids) for ids in split.ids], K, batch_size):
            with precision_scope(precision, self.backbone.device):
                logits, _ = self.word_logits(prompts[prompt_index], split, idx * K)
            logits = logits.float()
            for j, i in enumerate(idx * K):
                out[j // len(idx)][i] = self.decode(split, i, logits[j, : len(split.word_pos[i])])
        return out

    def score(self, prompts: torch.Tensor, split: TagSplit, batch_size: int = 64, precision: str = "fp32") -> list:
        """The task's score (0-100) of each of K prompts (K, L, d) on the split."""
        return [text2text_score(self.score_name, preds, split.targets)
                for preds in self.predict(prompts, split, batch_size, precision)]
