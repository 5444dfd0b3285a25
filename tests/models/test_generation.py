import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_models import lively, tiny_backbone

from promptgrid.data import DataError
from promptgrid.data.formats import bio_entities, conll_frame, linearize_entities, read_conll, read_squad, squad_frame
from promptgrid.models.generation import generate, greedy_token_ids, seq2seq_loss, stop_token_ids
from promptgrid.objectives.text_scores import (
    ner_scores,
    normalize_answer,
    parse_entities,
    squad_exact_match,
    squad_f1,
    squad_scores,
    text2text_score,
)

FIX = Path(__file__).parents[1] / "fixtures" / "generation"
TEXTS = ["sentence: Paris is big .", "sentence: John Smith met Mary at the bank in Bonn yesterday .", "question: who ?"]


# ---------------------------------------------------------------- metrics


def test_squad_normalisation_em_and_f1_by_hand():
    assert normalize_answer("The  Black Sea!") == "black sea"
    assert normalize_answer("An oil-based ink.") == "oilbased ink"  # official: punctuation dropped, not spaced
    assert squad_exact_match("the Volga", ["Volga"]) == 1.0
    assert squad_exact_match("Volga River", ["the Volga"]) == 0.0
    # [volga, river] vs [volga]: P 1/2, R 1 -> 2/3
    assert squad_f1("Volga River", ["the Volga"]) == pytest.approx(2 / 3)
    # "2,850" -> "2850"; P = R = 2/3
    assert squad_f1("about 2,850 km", ["about 2,850 kilometres"]) == pytest.approx(2 / 3)
    # max over golds: 1/2 ("roughly 180"), 2/3 ("180"), P 1 R 2/3 -> 0.8 ("roughly 180 copies")
    assert squad_f1("180 copies", ["roughly 180", "180", "roughly 180 copies"]) == pytest.approx(0.8)
    assert squad_f1("An apple", ["the"]) == 0.0  # gold normalises to nothing
    assert squad_f1("the", ["a"]) == 1.0  # both empty
    scores = squad_scores(["the Volga", "Volga River", "1455"], [["Volga"], ["the Volga"], ["about 1455", "1455"]])
    assert scores["exact_match"] == pytest.approx(100 * 2 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    assert text2text_score("squad_f1", ["x"], [["x"]]) == 100.0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        squad_scores(["a", "b"], [["a"]])


def test_bio_entities_and_linearisation():
    toks = ["John", "Smith", "flew", "Paris", "Bonn", "via", "New", "York", "Air", "."]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O", "I-ORG", "I-ORG", "I-MISC", "O"]
    ents = bio_entities(toks, tags)
    # adjacent B-LOC B-LOC are two entities; an I- after O starts one; a type change splits
    assert ents == [("PER", "John Smith"), ("LOC", "Paris"), ("LOC", "Bonn"), ("ORG", "New York"), ("MISC", "Air")]
    assert linearize_entities(ents[:2]) == "PER: John Smith; LOC: Paris"
    assert linearize_entities([]) == "none"
    with pytest.raises(ValueError, match="E-PER"):
        bio_entities(["x"], ["E-PER"])


def test_parse_entities_is_robust_to_malformed_and_detokenised_output():
    # an uncased WordPiece tokenizer decodes "PER: U.S. Army" as "per : u. s. army"
    assert parse_entities("per : u. s. army ; loc : paris") == [("PER", "u.s.army"), ("LOC", "paris")]
    assert parse_entities("PER: U.S. Army") == [("PER", "u.s.army")]
    assert parse_entities("none") == []
    assert parse_entities("garbage; : x; ORG:; the answer is PER: Bob;\nMISC: Euro 96") == [("MISC", "euro 96")]
    assert parse_entities("") == [] and parse_entities(None) == []


def test_ner_f1_on_a_hand_made_prediction():
    gold = ["LOC: Germany; ORG: Siemens AG; LOC: Munich", "none", "LOC: Paris; LOC: Bonn", "PER: Maria Lindqvist"]
    pred = ["loc : germany ; org : siemens ag ; per : munich",  # tp 2, fp 1 (wrong type), fn 1
            "none",  # nothing either side
            "LOC: Paris; LOC: Paris; garbage text; : ;ORG:",  # tp 1, fp 1 (repeat), fn 1 (Bonn)
            ""]  # fn 1
    s = ner_scores(pred, [[g] for g in gold])  # targets as frame lists
    assert s["precision"] == pytest.approx(60.0)  # 3 / 5
    assert s["recall"] == pytest.approx(50.0)  # 3 / 6
    assert s["f1"] == pytest.approx(100 * 2 * 0.6 * 0.5 / 1.1)
    assert text2text_score("ner_f1", pred, gold) == pytest.approx(s["f1"])
    assert ner_scores(["PER: bob"], ["PER: Bob"], case_sensitive=True)["f1"] == 0.0
    assert ner_scores(["none"], ["none"])["f1"] == 100.0
    with pytest.raises(ValueError, match="unknown text-to-text score"):
        text2text_score("bleu", [], [])


# ---------------------------------------------------------------- readers


def test_squad_fixture_is_in_hub_format_and_reads_from_jsonl_and_parquet():
    records = [json.loads(line) for line in (FIX / "squad.jsonl").read_text().splitlines()]
    for r in records:
        assert set(r) == {"id", "title", "context", "question", "answers"}
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][start:start + len(text)] == text
    df = read_squad(FIX / "squad.jsonl")
    assert list(df.columns[:3]) == ["id", "text", "targets"] and len(df) == 14  # then the tagging columns
    first = df.iloc[0]
    assert first["id"] == "dcaad5e3ef4eff194dcb9ba3"
    assert first["text"].startswith("context: The Danube is the second-longest river in Europe, after the Volga.")
    assert first["text"].endswith(" question: Which river in Europe is longer than the Danube?")
    assert list(first["targets"]) == ["the Volga", "Volga"]  # the duplicate third answer dropped
    pq = read_squad(FIX / "squad.parquet")  # answers: struct of int32/str arrays
    assert pq["id"].tolist() == df["id"].tolist() and pq["text"].tolist() == df["text"].tolist()
    assert [list(t) for t in pq["targets"]] == [list(t) for t in df["targets"]]


def test_conll_fixture_reads_to_linearised_entities():
    df = read_conll(FIX / "conll2003.jsonl")
    assert len(df) == 15
    by_id = df.set_index("id")
    assert by_id.loc["0", "text"] == "sentence: Germany 's Siemens AG said on Tuesday it would cut 2,000 jobs in Munich ."
    assert list(by_id.loc["0", "targets"]) == ["LOC: Germany; ORG: Siemens AG; LOC: Munich"]
    assert list(by_id.loc["5", "targets"]) == ["none"]
    assert list(by_id.loc["8", "targets"]) == ["PER: SAMPRAS; PER: IVANISEVIC; LOC: CINCINNATI"]
    assert list(by_id.loc["13", "targets"]) == ["ORG: Arsenal; ORG: Chelsea"]
    pq = read_conll(FIX / "conll2003.parquet")
    assert [list(t) for t in pq["targets"]] == [list(t) for t in df["targets"]]
    # gold linearisations score 100 against themselves through the parser
    assert ner_scores([t[0] for t in df["targets"]], df["targets"].tolist())["f1"] == 100.0


def test_readers_name_the_culprit():
    raw = pd.DataFrame({"id": ["a", "b"], "tokens": [["x", "y"], ["z"]], "ner_tags": [[0, 1], [9]]})
    with pytest.raises(DataError, match=r"conll2003 row 2 \(id 'b'\).*ner_tags.*9"):
        conll_frame(raw)
    raw.loc[1, "ner_tags"] = [0, 0]
    with pytest.raises(DataError, match=r"row 2 .*1 tokens but 2 ner_tags"):
        conll_frame(raw)
    assert conll_frame(pd.DataFrame({"id": [1], "tokens": [["Bob"]], "ner_tags": [["B-PER"]]}))["targets"][0] == \
        ["PER: Bob"]
    squad = pd.DataFrame({"id": ["q1"], "context": ["c"], "question": ["q"],
                          "answers": [{"text": [], "answer_start": []}]})
    with pytest.raises(DataError, match=r"row 1 \(id 'q1'\): no answer"):
        squad_frame(squad)
    assert list(squad_frame(squad, no_answer="unanswerable")["targets"][0]) == ["unanswerable"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['answers'\]"):
        squad_frame(squad.drop(columns="answers"))


# ---------------------------------------------------------------- decoding


def _manual_causal(bb, prompt, text, steps):
    """Argmax continuation by full recomputation, one unpadded example: [prompt][template(text)][new...]."""
    ids = bb.input_ids([text])[0]
    embeds = torch.cat([prompt, bb.embed_layer(torch.tensor(ids))], 0).unsqueeze(0)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = bb.model(inputs_embeds=embeds).logits[0, -1]
            out.append(int(logits.argmax()))
            embeds = torch.cat([embeds, bb.embed_layer(torch.tensor([[out[-1]]]))], 1)
    return out


def _manual_seq2seq(bb, prompt, text, steps):
    ids = torch.tensor(bb.input_ids([text])[0])
    embeds = torch.cat([prompt, bb.embed_layer(ids)], 0).unsqueeze(0)
    dec = [bb.model.config.decoder_start_token_id]
    with torch.no_grad():
        for _ in range(steps):
            logits = bb.model(inputs_embeds=embeds, decoder_input_ids=torch.tensor([dec])).logits[0, -1]
            dec.append(int(logits.argmax()))
    return dec[1:]


@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_greedy_decoding_equals_manual_argmax_and_is_deterministic(kind):
    bb = lively(kind)
    prompts = torch.randn(3, 4, bb.embed_dim, generator=torch.Generator().manual_seed(1))
    ids = greedy_token_ids(bb, prompts, TEXTS, max_new_tokens=3)
    manual = _manual_causal if kind == "causal_lm" else _manual_seq2seq
    for b, text in enumerate(TEXTS):  # rows of different lengths: the batched path pads, the manual one does not
        assert len(ids[b]) >= 2
        assert ids[b][:2] == manual(bb, prompts[b], text, 2)
    assert len({tuple(i) for i in ids}) > 1  # the outputs depend on the input, so the check means something
    out = generate(bb, prompts, TEXTS, max_new_tokens=3)
    assert out == generate(bb, prompts, TEXTS, max_new_tokens=3)
    assert all(isinstance(s, str) for s in out) and len(out) == 3
    assert out[0] == bb.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    # one row at a time gives the same as the padded batch
    assert greedy_token_ids(bb, prompts[1:2], TEXTS[1:2], 3) == ids[1:2]


@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_generation_stops_at_eos(kind):
    bb = lively(kind)
    assert stop_token_ids(bb) == [2 if kind == "causal_lm" else 102]  # the BERT tokenizer has no EOS: config's
    prompts = torch.randn(3, 4, bb.embed_dim, generator=torch.Generator().manual_seed(1))
    free = greedy_token_ids(bb, prompts, TEXTS, max_new_tokens=4)
    stop = free[0][1]  # make row 0's second token the EOS: row 0 stops there, the others go on
    bb.model.config.eos_token_id = bb.model.generation_config.eos_token_id = stop
    stopped = greedy_token_ids(bb, prompts, TEXTS, max_new_tokens=4)
    assert stopped[0] == free[0][:1]
    for b in range(3):
        assert stopped[b] == (free[b][:free[b].index(stop)] if stop in free[b] else free[b])
    assert greedy_token_ids(bb, prompts, TEXTS, max_new_tokens=0) == [[], [], []]


def test_text_to_text_needs_a_generative_backbone():
    bb = tiny_backbone("encoder")
    with pytest.raises(Exception, match="causal_lm or seq2seq"):
        generate(bb, torch.zeros(1, 2, bb.embed_dim), ["x"], 2)


# ---------------------------------------------------------------- loss


def test_causal_loss_matches_a_manual_log_likelihood():
    bb = lively("causal_lm")
    prompts = torch.randn(2, 3, bb.embed_dim, generator=torch.Generator().manual_seed(2))
    texts, targets = TEXTS[:2], ["LOC: Paris", "PER: John Smith; LOC: Bonn"]
    loss = seq2seq_loss(bb, prompts, texts, targets)
    assert loss.shape == (2,)
    for b in range(2):
        ctx = bb.input_ids([texts[b]])[0]
        tgt = bb.tokenizer(" " + targets[b], add_special_tokens=False)["input_ids"] + [stop_token_ids(bb)[0]]
        embeds = torch.cat([prompts[b], bb.embed_layer(torch.tensor(ctx + tgt))], 0).unsqueeze(0)
        logp = torch.log_softmax(bb.model(inputs_embeds=embeds).logits[0].float(), -1)
        start = prompts.shape[1] + len(ctx)
        nll = -sum(logp[start - 1 + j, t] for j, t in enumerate(tgt)) / len(tgt)
        assert loss[b].item() == pytest.approx(nll.item(), rel=1e-4)


@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_prompt_training_lowers_the_text_to_text_loss(kind):
    bb = tiny_backbone(kind)
    frame = read_conll(FIX / "conll2003.jsonl").iloc[[0, 4]]
    texts, targets = frame["text"].tolist(), [t[0] for t in frame["targets"]]
    prompt = torch.nn.Parameter(torch.randn(1, 4, bb.embed_dim, generator=torch.Generator().manual_seed(0)) * 0.1)
    opt = torch.optim.Adam([prompt], lr=0.05)
    losses = []
    for _ in range(5):
        loss = seq2seq_loss(bb, prompt.expand(2, -1, -1), texts, targets, max_target_length=12)
        assert loss.shape == (2,)
        opt.zero_grad()
        loss.mean().backward()
        assert prompt.grad is not None and prompt.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.mean().item())
    assert losses[-1] < losses[0]
    assert not any(p.grad is not None for p in bb.model.parameters())  # the backbone stays frozen
