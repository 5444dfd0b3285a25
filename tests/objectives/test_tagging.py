"""Span QA and NER as word tagging on encoder / masked-LM backbones (promptgrid.objectives.tagging)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_models import liven, tiny_backbone, tiny_model, tokenizer

from promptgrid.config import BackboneConfig, TaskConfig, TrainingConfig
from promptgrid.data.formats import (
    CONLL2003_NER_LABELS,
    answer_word_span,
    context_words,
    read_conll,
    read_squad,
    squad_frame,
)
from promptgrid.engine.training import RunSpec, train_runs
from promptgrid.methods.panda import PandaConfig
from promptgrid.models.loading import wrap_model
from promptgrid.objectives.tag_split import best_span, ner_label_text
from promptgrid.objectives.tagging import TaggingObjective
from promptgrid.objectives.text_scores import text2text_score

FIX = Path(__file__).parents[1] / "fixtures" / "generation"
KINDS = ["encoder", "masked_lm"]
L = 4  # prompt length; masked LM: 2 + L + max_length <= the tiny models' 128 positions


def backbone(kind, max_length=112, seed=0, lively=False):
    cfg = BackboneConfig(model="tiny", kind=kind, max_length=max_length)
    bb = wrap_model(f"tiny-{kind}", cfg, tiny_model(kind, seed), tokenizer())
    return liven(bb) if lively else bb  # larger random weights: tag scores differ between words and prompts


def squad_cfg(**kw):
    return TaskConfig(source="local", path=str(FIX / "squad.jsonl"), kind="span_qa", **kw)


def conll_cfg(**kw):
    return TaskConfig(source="local", path=str(FIX / "conll2003.jsonl"), kind="ner", **kw)


def bank(bb, k, seed=0, scale=1.0):
    return torch.randn(k, L, bb.embed_dim, generator=torch.Generator().manual_seed(seed)) * scale


def one_hot_logits(tags, n_tags, scale=10.0):
    return F.one_hot(torch.tensor(tags, dtype=torch.long), n_tags).float() * scale


# ---------------------------------------------------------------- words, spans, alignment


def test_context_words_and_answer_word_spans_by_hand():
    ctx = "It rises about 2,850 kilometres, after the Volga."
    words, starts = context_words(ctx)
    assert words == ["It", "rises", "about", "2", ",", "850", "kilometres", ",", "after", "the", "Volga", "."]
    assert starts == [0, 3, 9, 15, 16, 17, 21, 31, 33, 39, 43, 48]
    assert answer_word_span(ctx, starts, words, "2,850 kilometres", 15) == [3, 6]
    assert answer_word_span(ctx, starts, words, " the Volga", 38) == [9, 10]  # outer spaces dropped
    assert answer_word_span(ctx, starts, words, "the Volga", 3) == [9, 10]  # wrong start: first occurrence
    assert answer_word_span(ctx, starts, words, "Danube", 0) is None
    assert answer_word_span(ctx, starts, words, "ises", 4) == [1, 1]  # part of a word: the whole word

    df = read_squad(FIX / "squad.jsonl")
    assert list(df.columns) == ["id", "text", "targets", "context", "question", "words", "word_starts",
                                "answer_word_spans"]
    first = df.iloc[0]
    assert first["words"][11:15] == ["after", "the", "Volga", "."]
    # "the Volga" at 56, "Volga" at 60, the third answer repeats the first
    assert first["answer_word_spans"] == [[12, 13], [13, 13]]
    assert first["question"] == "Which river in Europe is longer than the Danube?"
    record = pd.DataFrame({"id": ["r"], "context": ["Anna met Bob."], "question": ["Who?"],
                           "answers": [{"text": ["Anna", "Carl"], "answer_start": [-1, -1]}]})
    assert squad_frame(record)["answer_word_spans"][0] == [[0, 0]]  # ReCoRD-style -1: looked up; Carl absent
    conll = read_conll(FIX / "conll2003.jsonl")
    assert conll["tags"][1] == ["B-PER", "I-PER"] and conll["tokens"][1] == ["Maria", "Lindqvist"]


def test_label_texts():
    assert [ner_label_text(t) for t in CONLL2003_NER_LABELS] == [
        "outside", "begin person", "inside person", "begin organization", "inside organization", "begin location",
        "inside location", "begin miscellaneous", "inside miscellaneous"]
    assert ner_label_text("I-WORK_OF_ART") == "inside work of art"
    obj = TaggingObjective(backbone("masked_lm"), conll_cfg(labels={"O": "nothing"}))
    assert obj.label_texts[0] == "nothing" and obj.score_name == "ner_f1"
    # "begin person" -> [begin, person]; scores average the two tokens' logits
    tok = tokenizer()
    assert obj.label_token_ids[1] == tok(" begin person", add_special_tokens=False)["input_ids"]
    assert len(obj.label_token_ids[1]) == 2
    assert TaggingObjective(backbone("encoder"), squad_cfg()).score_name == "squad_f1"
    assert TaggingObjective(backbone("encoder"), squad_cfg(score="squad_em")).score_name == "squad_em"
    with pytest.raises(Exception, match="encoder or masked_lm"):
        TaggingObjective(tiny_backbone("causal_lm"), squad_cfg())


@pytest.mark.parametrize("kind", KINDS)
def test_ner_word_alignment_by_hand(kind):
    bb = backbone(kind)
    obj = TaggingObjective(bb, conll_cfg())
    split = obj.encode(read_conll(FIX / "conll2003.jsonl"))
    tok = tokenizer()
    tokens = tok.convert_ids_to_tokens(split.ids[0])
    want = ["[CLS]", "germany", "'", "s", "siemens", "ag", "said", "on", "tuesday", "it", "would", "cut", "2", ",",
            "000", "jobs", "in", "munich", ".", "[SEP]"]
    # Germany 's Siemens AG said on Tuesday it would cut 2,000 jobs in Munich .
    pos = [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 17, 18]
    if kind == "masked_lm":  # [CLS] goes before [MASK] and the prompt, not in ids
        want, pos = want[1:], [p - 1 for p in pos]
    assert tokens == want
    assert split.word_pos[0] == pos
    assert split.tags[0] == [5, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]  # the raw ner_tags
    assert split.ids[0] == bb.input_ids([" ".join(split.words[0])])[0]  # the backbone's own layout
    # Maria Lindqvist: lindqvist is three pieces, its first one tagged
    assert tok.convert_ids_to_tokens(split.ids[1])[split.word_pos[1][1]] == "lin"
    # after prompted_inputs, each word position (shifted by what comes before the tokens) holds its first piece
    batch = bb.collate([split.ids[0]])
    embeds, _ = bb.prompted_inputs(bank(bb, 1), batch)
    offset = embeds.shape[1] - batch.input_ids.shape[1]
    assert offset == L + (2 if kind == "masked_lm" else 0)
    for p in split.word_pos[0]:
        assert torch.equal(embeds[0, offset + p], bb.embed_layer.weight[split.ids[0][p]])


@pytest.mark.parametrize("kind", KINDS)
def test_qa_alignment_and_truncation_by_hand(kind):
    frame = squad_frame(pd.DataFrame({
        "id": ["a", "b"], "context": ["Anna met Bob in Oslo.", "Anna met Bob in Oslo, then Carl met Dora in Rome."],
        "question": ["Who met Bob?", "Where did Carl meet Dora?"],
        "answers": [{"text": ["Anna"], "answer_start": [0]}, {"text": ["Rome"], "answer_start": [44]}]}))
    obj = TaggingObjective(backbone(kind), squad_cfg())
    split = obj.encode(frame)
    tokens = tokenizer().convert_ids_to_tokens(split.ids[0])
    want = ["[CLS]", "who", "met", "bob", "?", "[SEP]", "anna", "met", "bob", "in", "oslo", ".", "[SEP]"]
    pos = [6, 7, 8, 9, 10, 11]
    if kind == "masked_lm":
        want, pos = want[1:], [p - 1 for p in pos]
    assert tokens == want and split.word_pos[0] == pos
    assert split.tags[0] == [1, 0, 0, 0, 0, 0] and split.answer_cut == [False, False]
    assert split.tags[1][-2:] == [1, 0]  # "Rome ."
    # max_length 16: [CLS] where did carl meet dora ? [SEP] = 8, closing [SEP] 1 -> 7 context tokens
    short = TaggingObjective(backbone(kind, max_length=16), squad_cfg())
    cut = short.encode(frame)
    # kept: Anna met Bob in Oslo , then | dropped: Carl met Dora in Rome .
    assert len(cut.word_pos[1]) == 7 and cut.n_dropped == [0, 6]
    assert len(cut.ids[1]) == (16 if kind == "encoder" else 15)
    assert cut.answer_cut == [False, True] and cut.tags[1] == [0] * 7  # trained on all-"other"
    # an answer reaching past the cut is passed over for the first gold answer that fits
    two = frame.iloc[[1]].copy()
    two["answer_word_spans"] = [[[6, 7], [4, 4]]]  # "then Carl" (cut after "then"), "Oslo"
    other = short.encode(two)
    assert other.answer_cut == [False] and other.tags[0] == [0, 0, 0, 0, 1, 0, 0]
    # the question keeps at most half the budget: 13 tokens of room, 6 for the question
    raw = pd.DataFrame({"id": ["c"], "context": ["Anna met Bob."], "answers": [{"text": ["Anna"], "answer_start": [0]}],
                        "question": ["one two three four five six seven eight nine ten"]})
    q = short.encode(squad_frame(raw))
    assert tokenizer().convert_ids_to_tokens(q.ids[0])[:8 - (kind == "masked_lm")][-7:] == \
        ["one", "two", "three", "four", "five", "six", "[SEP]"]


def test_gold_qa_tags_reproduce_the_gold_answer_text():
    frame = read_squad(FIX / "squad.jsonl")
    for kind in KINDS:
        obj = TaggingObjective(backbone(kind), squad_cfg())
        split = obj.encode(frame)
        assert not any(split.answer_cut) and split.n_dropped == [0] * len(frame)  # everything fits in 112 tokens
        for i in range(len(split)):
            tags = split.tags[i]
            first, last = tags.index(1), len(tags) - 1 - tags[::-1].index(1)
            assert tags[first: last + 1] == [1] * (last - first + 1) and sum(tags) == last - first + 1
            starts, words = split.word_starts[i], split.words[i]
            text = split.contexts[i][starts[first]: starts[last] + len(words[last])]
            assert text == split.targets[i][0]
            # decoding the gold tags gives the same text, and it scores 100
            assert obj.decode(split, i, one_hot_logits(tags, 2)) == text
    assert split.targets[2][0] == "about 2,850 kilometres"  # punctuation inside the answer survives


# ---------------------------------------------------------------- span search


def test_best_span_equals_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        s = rng.normal(size=n) + rng.normal()  # sometimes mostly positive, sometimes mostly negative
        spans = [(i, j) for i in range(n) for j in range(i, min(n, i + m))]
        brute = max(spans, key=lambda ij: s[ij[0]: ij[1] + 1].sum())
        got = best_span(s, m)
        assert got == brute, (trial, n, m)
        assert got[1] - got[0] + 1 <= m
    assert best_span([], 30) is None
    assert best_span([-3.0, -1.0, -2.0], 30) == (1, 1)  # all negative: the single best word
    assert best_span([1.0, 1.0, 1.0, 1.0], 2) == (0, 1)  # length cap; tie -> earliest
    assert best_span([2.0, -1.0, 2.0], 30) == (0, 2)


# ---------------------------------------------------------------- scores, loss, gradients


@pytest.mark.parametrize("kind", KINDS)
def test_tag_scores_are_the_heads_scores(kind):
    bb = backbone(kind, lively=True)
    obj = TaggingObjective(bb, conll_cfg())
    split = obj.encode(read_conll(FIX / "conll2003.jsonl"))
    idx = [0, 1, 4]
    prompts = bank(bb, 3)
    with torch.no_grad():
        logits, mask = obj.word_logits(prompts, split, idx)
        assert logits.shape == (3, 15, 9) and mask.shape == (3, 15) and mask.dtype == torch.bool
        assert mask.sum(1).tolist() == [15, 2, 11]
        for b, i in enumerate(idx):  # each example alone, unpadded, through the plain model
            batch = bb.collate([split.ids[i]])
            embeds, attn = bb.prompted_inputs(prompts[b: b + 1], batch)
            offset = embeds.shape[1] - batch.input_ids.shape[1]
            at = torch.tensor(split.word_pos[i]) + offset
            if kind == "masked_lm":
                full = bb.model(inputs_embeds=embeds, attention_mask=attn).logits[0, at]  # (n, V)
                want = torch.stack([full[:, ids].mean(-1) for ids in obj.label_token_ids], -1)
            else:
                hidden = bb.model(inputs_embeds=embeds, attention_mask=attn).last_hidden_state[0, at]
                want = bb.cfg.temperature * F.normalize(hidden, dim=-1) @ obj.label_embeddings.T
            n = len(split.word_pos[i])
            torch.testing.assert_close(logits[b, :n], want, rtol=1e-4, atol=1e-4)
        assert logits[0].std() > 0.1  # the scores vary, so the comparison means something


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["ner", "span_qa"])
def test_loss_shape_value_and_gradients_reach_only_the_prompt(kind, task):
    bb = backbone(kind)
    obj = TaggingObjective(bb, conll_cfg() if task == "ner" else squad_cfg())
    split = obj.encode(read_conll(FIX / "conll2003.jsonl") if task == "ner" else read_squad(FIX / "squad.jsonl"))
    prompt = torch.nn.Parameter(bank(bb, 1)[0])
    idx = [0, 1, 2]
    loss, (logits, mask) = obj.forward(prompt.expand(3, -1, -1), split, idx)
    assert loss.shape == (3,) and logits.shape[:2] == mask.shape and logits.shape[2] == obj.n_tags
    # by hand: mean cross-entropy of the gold tags over each example's words
    for b, i in enumerate(idx):
        n = len(split.tags[i])
        want = F.cross_entropy(logits[b, :n], torch.tensor(split.tags[i]))
        assert loss[b].item() == pytest.approx(want.item(), rel=1e-5)
    loss.sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in bb.model.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["ner", "span_qa"])
def test_a_bank_of_prompts_equals_separate_calls(kind, task):
    bb = backbone(kind, lively=True)
    obj = TaggingObjective(bb, conll_cfg() if task == "ner" else squad_cfg())
    frame = read_conll(FIX / "conll2003.jsonl") if task == "ner" else read_squad(FIX / "squad.jsonl")
    split = obj.encode(frame)
    prompts = bank(bb, 3, seed=4, scale=3.0)
    together = obj.predict(prompts, split, batch_size=8)  # 2 examples x 3 prompts per forward pass
    alone = [obj.predict(prompts[k: k + 1], split, batch_size=8)[0] for k in range(3)]
    assert together == alone
    assert len({tuple(p) for p in together}) > 1  # the prompts disagree, so the check means something
    scores = obj.score(prompts, split, batch_size=8)
    assert scores == [text2text_score(obj.score_name, p, split.targets) for p in alone]
    assert scores == [obj.score(prompts[k: k + 1], split, batch_size=64)[0] for k in range(3)]
    assert all(0.0 <= s <= 100.0 for s in scores)
    bf16 = obj.score(prompts, split, batch_size=8, precision="bf16")  # autocast of the frozen model
    assert len(bf16) == 3 and all(0.0 <= s <= 100.0 for s in bf16)
    # training rows: several prompts in one batch give each row the loss it gets alone
    idx = [0, 3, 5, 0, 3, 5]
    rows = prompts[torch.tensor([0, 0, 0, 2, 2, 2])]
    with torch.no_grad():
        loss, _ = obj.forward(rows, split, idx)
        for k, sl in ((0, slice(0, 3)), (2, slice(3, 6))):
            alone_loss, _ = obj.forward(prompts[k].expand(3, -1, -1), split, idx[sl])
            torch.testing.assert_close(loss[sl], alone_loss, rtol=1e-5, atol=1e-5)


def test_kd_is_zero_for_identical_outputs_and_matches_by_hand():
    obj = TaggingObjective(backbone("encoder"), conll_cfg())
    s = torch.tensor([[[0.0, 0.0], [5.0, 5.0]], [[1.0, 2.0], [0.0, 0.0]]])  # (B=2, W=2, C=2)
    t = torch.tensor([[[1.0, 3.0], [9.0, 9.0]], [[1.0, 2.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    mse, kl = PandaConfig(kd_loss="mse"), PandaConfig(kd_loss="kl", kd_temperature=2.0)
    for cfg in (mse, kl):
        assert obj.kd((s, mask), (s, mask), cfg).tolist() == [0.0, 0.0]
    # mse: row 0 only word 0 counts: ((0-1)^2 + (0-3)^2) / 2 = 5; row 1 identical
    assert obj.kd((s, mask), (t, mask), mse).tolist() == [5.0, 0.0]
    # kl at T=2: KL(softmax([.5, 1.5]) || softmax([0, 0])) * 4 on word 0 of row 0
    p = torch.softmax(torch.tensor([0.5, 1.5]), -1)
    want = (p * (p.log() - np.log(0.5))).sum() * 4
    got = obj.kd((s, mask), (t, mask), kl)
    assert got[0].item() == pytest.approx(want.item(), rel=1e-5) and got[1].item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- metric


def test_perfect_and_known_wrong_predictions_score_by_hand():
    bb = backbone("masked_lm")
    ner = TaggingObjective(bb, conll_cfg())
    frame = read_conll(FIX / "conll2003.jsonl")
    split = ner.encode(frame)
    perfect = [ner.decode(split, i, one_hot_logits(split.tags[i], 9)) for i in range(len(split))]
    assert perfect == [t[0] for t in split.targets]
    assert text2text_score("ner_f1", perfect, split.targets) == 100.0
    # row 0 gold: LOC Germany, ORG Siemens AG, LOC Munich. Predict Siemens AG as PER and Munich as O:
    # tp 1 (Germany) of 2 predicted and 3 gold -> P 1/2, R 1/3, F1 0.4
    wrong = [5, 0, 1, 2] + [0] * 11
    pred = ner.decode(split, 0, one_hot_logits(wrong, 9))
    assert pred == "LOC: Germany; PER: Siemens AG"
    assert text2text_score("ner_f1", [pred], split.targets[:1]) == pytest.approx(40.0)
    # an I- tag after O starts an entity (conlleval), as bio_entities reads gold tags
    assert ner.decode(split, 1, one_hot_logits([2, 2], 9)) == "PER: Maria Lindqvist"

    qa = TaggingObjective(bb, squad_cfg())
    qsplit = qa.encode(read_squad(FIX / "squad.jsonl"))
    # row 0 words 11..13 = "after the Volga": log-odds +5 there, -5 elsewhere
    n = len(qsplit.word_pos[0])
    logits = torch.zeros(n, 2)
    logits[:, 1] = -5.0
    logits[11:14, 1] = 5.0
    pred = qa.decode(qsplit, 0, logits)
    assert pred == "after the Volga"
    # vs "the Volga" / "Volga": [after, volga] vs [volga] -> P 1/2, R 1 -> F1 2/3; EM 0
    assert text2text_score("squad_f1", [pred], qsplit.targets[:1]) == pytest.approx(100 * 2 / 3)
    assert text2text_score("squad_em", [pred], qsplit.targets[:1]) == 0.0
    golds = [qa.decode(qsplit, i, one_hot_logits(qsplit.tags[i], 2)) for i in range(len(qsplit))]
    assert text2text_score("squad_em", golds, qsplit.targets) == 100.0
    # the span cap: 40 positive words predict only max_answer_words of them
    capped = TaggingObjective(bb, squad_cfg())
    capped.max_answer_words = 2
    assert capped.decode(qsplit, 0, one_hot_logits([1] * n, 2)) == "The Danube"


def test_truncated_ner_words_are_predicted_outside():
    obj = TaggingObjective(backbone("encoder", max_length=8), conll_cfg())
    split = obj.encode(read_conll(FIX / "conll2003.jsonl"))
    # [CLS] germany ' s siemens ag said [SEP]: 5 words (Germany 's Siemens AG said) fit
    assert len(split.word_pos[0]) == 5 and split.n_dropped[0] == 10 and len(split.tags[0]) == 5
    pred = obj.decode(split, 0, one_hot_logits(split.tags[0], 9))
    assert pred == "LOC: Germany; ORG: Siemens AG"  # Munich was dropped: never predicted


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["ner", "span_qa"])
def test_prompt_training_lowers_the_tagging_loss(kind, task):
    # at the default init (std 0.02) a tiny random BERT barely lets a prompt move word outputs
    bb = backbone(kind, lively=True)
    obj = TaggingObjective(bb, conll_cfg() if task == "ner" else squad_cfg())
    split = obj.encode(read_conll(FIX / "conll2003.jsonl") if task == "ner" else read_squad(FIX / "squad.jsonl"))
    prompt = torch.nn.Parameter(bank(bb, 1)[0])
    opt = torch.optim.Adam([prompt], lr=0.3)
    idx = list(range(6))
    losses = []
    for _ in range(8):
        loss, _ = obj.forward(prompt.expand(len(idx), -1, -1), split, idx)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        losses.append(loss.mean().item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("kind", KINDS)
def test_the_training_engine_runs_a_tagging_bank_with_panda_kd(kind):
    bb = backbone(kind)
    obj = TaggingObjective(bb, conll_cfg())
    data = obj.encode(read_conll(FIX / "conll2003.jsonl"))
    init = bank(bb, 2, scale=0.1)
    runs = [RunSpec("a", 0, init[0]), RunSpec("b", 1, init[1], teacher=init[0] * 20, beta=5.0)]
    cfg = TrainingConfig(steps=4, batch_size=4, eval_every=2, eval_batch_size=8, lr=0.05, early_step=2, precision="fp32")
    results = train_runs(bb, obj, data, data, runs, cfg, kd=PandaConfig(), log=lambda m: None)
    assert [r.run_id for r in results] == ["a", "b"]
    for r in results:
        assert [c["step"] for c in r.curve] == [0, 2, 4]
        assert all(0.0 <= c["dev_score"] <= 100.0 for c in r.curve)
        assert r.best_prompt.shape == (L, bb.embed_dim) and r.last_step == 4
    # the same bank with b's teacher taken away: a is untouched, b trains differently, so the KD term acts
    no_kd = [runs[0], RunSpec("b", 1, init[1])]
    plain = train_runs(bb, obj, data, data, no_kd, cfg, kd=PandaConfig(), log=lambda m: None)
    assert torch.equal(plain[0].early_prompt, results[0].early_prompt)
    assert not torch.equal(plain[1].early_prompt, results[1].early_prompt)


def test_make_objective_hands_tagging_tasks_to_tagging():
    from promptgrid.objectives.factory import make_objective

    for kind in KINDS:
        assert isinstance(make_objective(backbone(kind), squad_cfg()), TaggingObjective)
        assert isinstance(make_objective(backbone(kind), conll_cfg()), TaggingObjective)


def test_tag_names_from_config_and_unknown_tags_named(tmp_path):
    obj = TaggingObjective(backbone("masked_lm"), conll_cfg(tag_names=["O", "B-PER", "I-PER"]))
    frame = read_conll(FIX / "conll2003.jsonl")
    assert obj.encode(frame.iloc[[1]]).tags == [[1, 2]]  # Maria Lindqvist
    with pytest.raises(ValueError, match=r"example '0' has tags \['B-LOC', 'B-ORG', 'I-ORG'\]"):
        obj.encode(frame.iloc[[0]])
    with pytest.raises(ValueError, match="prepare the task again"):
        obj.encode(frame[["id", "text", "targets"]])
    # the tagging columns survive the parquet round trip of split files
    from promptgrid.data.splits import load_split, write_splits

    qa = read_squad(FIX / "squad.jsonl")
    write_splits({"train": qa, "dev": qa, "test": qa}, tmp_path, {"config_hash": "x"})
    back = load_split(tmp_path / "train.parquet", squad_cfg())
    assert back["answer_word_spans"].tolist() == qa["answer_word_spans"].tolist()
    assert type(back["answer_word_spans"][0][0][0]) is int and back["word_starts"][0][:3] == [0, 4, 11]
    qobj = TaggingObjective(backbone("encoder"), squad_cfg())
    a, b = qobj.encode(qa), qobj.encode(back)
    assert a.ids == b.ids and a.word_pos == b.word_pos and a.tags == b.tags
