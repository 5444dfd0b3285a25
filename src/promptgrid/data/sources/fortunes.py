"""Topic classification over Debian's ``fortunes`` package (the BSD fortune-mod cookie files): each file
``/usr/share/games/fortunes/<category>`` holds quips, quotations and jokes separated by lines ``%`` (latin-1).

Task ``topics``: items of five sizeable, topically distinct categories (computers, politics, science, work,
men-women), label = the category file. Only items of at most 300 characters are kept (stripped, before
whitespace is collapsed): the long ones are stories and poems that no short-input model reads whole, and the
short ones are the bulk of every category. Line breaks, attributions ("-- Mark Twain") and all are kept as text.
"""
from __future__ import annotations

import re

from promptgrid.data.archives import member
from promptgrid.data.sources.common import records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

# ``apt-get download fortunes=1:1.99.1-7.3`` (the epoch is part of Debian's version) saves the pool file
# pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb as fortunes_1%3a1.99.1-7.3_all.deb; the fetch renames it
ARTIFACT = Artifact("debian", "fortunes", "1:1.99.1-7.3", "fortunes_1.99.1-7.3_all.deb",
                    "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5")
FOLDER = "usr/share/games/fortunes/"
#: category file -> label text; class order by size. "men-women" is jokes about couples, hence its word
TOPICS = {"computers": "computers", "politics": "politics", "work": "work", "men-women": "relationships",
          "science": "science"}
MAX_CHARS = 300
SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


def read(task, path, cache_dir):
    """Each category file -> id (``category:position`` in the file), text (the item), label (the category)."""
    where = f"{ARTIFACT.filename}: {FOLDER}{{{','.join(TOPICS)}}}"
    ids, texts, labels = [], [], []
    for category in TOPICS:
        raw = member(path, FOLDER + category).decode("latin-1")
        for i, item in enumerate(SEPARATOR.split(raw)):
            item = item.strip()
            if item and len(item) <= MAX_CHARS:
                ids.append(f"{category}:{i}")
                texts.append(item)
                labels.append(category)
    return records_frame(texts, labels, where, ids=ids), where


SOURCES.add(SourceSpec(
    name="fortunes", order=90, read=read, artifact=ARTIFACT, licence="BSD",
    summary="Debian fortune cookies (fortune-mod), short items of five categories as a topic task",
    tasks={
        "topics": SourceTask(TOPICS, "topic", 3039, "short quips and quotations: computers, politics, work, "
                             "men and women, science"),
    },
    optional="Debian mirrors serve only the current version of a package, so this pinned .deb will one day "
             "be gone from them (then only a cached copy works), and apt-get exists only on Debian-based "
             "machines: a study that must run everywhere should not depend on this source",
))
