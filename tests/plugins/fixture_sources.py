"""Two data sources written as a study plugin, the way a researcher adds one: this file alone, named in the
study's ``plugins:``. ``fixture`` serves one of the tiny study's own files through a registry of its own (a
fetcher that copies from tests/fixtures), pinned and hashed like any package; ``gone`` is a PyPI package
that does not exist, so its fetch fails the way a source the registry dropped does."""
import shutil
from pathlib import Path

from promptgrid.data import artifacts
from promptgrid.data.readers import read_local
from promptgrid.registry import SOURCES, Artifact, SourceSpec, SourceTask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "tiny"
SENTIMENT = {"positive": "positive", "negative": "negative", "neutral": "neutral", "ambivalent": "ambivalent"}


def serve_fixture(art, folder):
    """The 'fixture' registry: the file of that name in tests/fixtures/data/tiny."""
    path = folder / art.filename
    shutil.copyfile(FIXTURES / art.filename, path)
    return path


artifacts.FETCHERS.setdefault("fixture", serve_fixture)


def read(task, path, cache_dir):
    return read_local(path), f"fixture file {path}"


SOURCES.add(SourceSpec(
    name="fixture", order=900, read=read, licence="the project's own", summary="the tiny study's hotel sentences",
    artifact=Artifact("fixture", "tiny-hotels", "1.0", "hotels.jsonl",
                      "293fd8e63744f3a65fee149326f1778534fe5e295c471ff9b9325018d2fd0de6"),
    tasks={"hotels": SourceTask(SENTIMENT, "sentiment", 160)}, fields=("input", "label", "id")))

SOURCES.add(SourceSpec(
    name="gone", order=901, read=read, licence="none", summary="a package the registry does not serve",
    artifact=Artifact("pypi", "promptgrid-no-such-package-4c1f", "0.0.1",
                      "promptgrid_no_such_package_4c1f-0.0.1-py3-none-any.whl", "ab" * 32),
    tasks={"reviews": SourceTask(SENTIMENT, "sentiment", 160)}, fields=("input", "label", "id")))
