"""VADER's human-rated sentiment snippets (Hutto & Gilbert 2014), from the source archive of ``vaderSentiment``.

Four domains, each rated -4..4 by 20 people; the mean rating is cut into positive (>= +0.5) and negative
(<= -0.5), and the snippets in between are dropped. The wheel lacks ``additional_resources/``: only the
source archive holds the data.
"""
from __future__ import annotations

from promptgrid.data.archives import member, open_tar_bytes
from promptgrid.data.sources.common import records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("pypi", "vaderSentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
                    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", binary=False)
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
FILES = {"tweets": "tweets", "movie": "movieReviewSnippets", "amazon": "amazonReviewSnippets",
         "nyt": "nytEditorialSnippets"}
CUT = 0.5  # |mean rating| below this is neither positive nor negative
LABELS = {"positive": "positive", "negative": "negative"}


def read(task, path, cache_dir):
    """Rows ``id <tab> mean rating <tab> text`` (latin-1) -> id, text, label (positive / negative)."""
    name = f"hutto_ICWSM_2014/{FILES[task.path]}_GroundTruth.txt"
    where = f"{ARTIFACT.filename}: {name}"
    with open_tar_bytes(member(path, INNER)) as inner:
        raw = inner.extractfile(name).read().decode("latin-1")
    ids, texts, labels = [], [], []
    for line in raw.splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        rating = float(parts[1])
        if abs(rating) >= CUT:
            ids.append(parts[0])
            texts.append(parts[2])
            labels.append("positive" if rating > 0 else "negative")
    return records_frame(texts, labels, where, ids=ids), where


SOURCES.add(SourceSpec(
    name="vader", order=10, read=read, artifact=ARTIFACT, licence="MIT",
    summary="VADER sentiment snippets (Hutto & Gilbert 2014): tweets, movie reviews, Amazon reviews, NYT "
            "editorials; mean human rating cut at +-0.5",
    tasks={
        "tweets": SourceTask(LABELS, "sentiment", 3432, "tweets"),
        "movie": SourceTask(LABELS, "sentiment", 10070, "movie review snippets"),
        "amazon": SourceTask(LABELS, "sentiment", 2977, "Amazon product review snippets"),
        "nyt": SourceTask(LABELS, "sentiment", 2931, "New York Times editorial snippets"),
    },
))
