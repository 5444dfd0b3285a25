"""NER records in the other hub layouts the PANDA grid uses: entity spans (DFKI-SLT/conll04, SpERT
format) and a `tags` column with its own tag names (tner/ontonotes5)."""
import pandas as pd
import pytest

from promptgrid.config import TaskConfig
from promptgrid.data import DataError
from promptgrid.data.splits import text2text_examples


def _task(**kw):
    return TaskConfig(source="local", path="x.jsonl", kind="ner", **kw)


def test_entity_spans_become_bio_tags_and_targets():
    raw = pd.DataFrame({
        "tokens": [["John", "Smith", "lives", "in", "New", "York", "."], ["Nothing", "here"]],
        "entities": [[{"type": "Peop", "start": 0, "end": 2}, {"type": "Loc", "start": 4, "end": 6}], []],
        "relations": [[{"type": "Live_In", "head": 0, "tail": 1}], []],
    })
    df = text2text_examples(raw, _task(), "conll04 fixture")
    assert df["id"].tolist() == ["0", "1"]
    assert df["tags"].tolist()[0] == ["B-Peop", "I-Peop", "O", "O", "B-Loc", "I-Loc", "O"]
    assert df["targets"].tolist() == [["Peop: John Smith; Loc: New York"], ["none"]]


def test_entity_span_outside_the_sentence_names_the_row():
    raw = pd.DataFrame({"id": ["a", "b"], "tokens": [["x", "y"], ["z"]],
                        "entities": [[], [{"type": "Org", "start": 0, "end": 2}]]})
    with pytest.raises(DataError, match=r"conll04 fixture row 2 \(id 'b'\).*does not fit the 1 tokens"):
        text2text_examples(raw, _task(), "conll04 fixture")


def test_tags_column_with_its_own_names():
    raw = pd.DataFrame({"tokens": [["Paris", "is", "big"]], "tags": [[1, 0, 0]]})
    df = text2text_examples(raw, _task(label_field="tags", tag_names=["O", "B-GPE", "I-GPE"]), "ontonotes fixture")
    assert df["targets"].tolist() == [["GPE: Paris"]]
    with pytest.raises(DataError, match="ontonotes fixture.*ner_tags' has 1"):
        text2text_examples(raw, _task(label_field="tags", tag_names=["O"]), "ontonotes fixture")
