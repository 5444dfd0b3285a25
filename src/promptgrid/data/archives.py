"""Reading files inside a source's artifact without unpacking it: a wheel or zip, a tarball (.tar.gz, .tgz,
.tar.bz2, .tar.xz), a Debian package (.deb: an ``ar`` archive around ``data.tar.*``), or a plain file.

Each reader of :mod:`promptgrid.data.sources` asks for the member it parses; a missing member is a
:class:`DataError` naming the artifact and listing what it holds nearby.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

from promptgrid.data import DataError

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def _kind(name: str) -> str:
    name = name.lower()
    if name.endswith((".whl", ".zip")):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(".deb"):
        return "deb"
    return "file"


def _deb_data(path: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` member of a Debian package, opened (the ``ar`` container is parsed here)."""
    blob = path.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise DataError(f"{path} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        pos += 60 + size + (size % 2)
    raise DataError(f"{path} holds no data.tar member")


def iter_members(path, prefix: str = "") -> Iterator[Tuple[str, bytes]]:
    """(name, bytes) of every file in the artifact whose name starts with ``prefix``, in archive order."""
    path = Path(path)
    kind = _kind(path.name)
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    yield name, zf.read(name)
    elif kind in ("tar", "deb"):
        tf = _deb_data(path) if kind == "deb" else tarfile.open(path)
        with tf:
            for m in tf:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if m.isfile() and name.startswith(prefix):
                    yield name, tf.extractfile(m).read()
    else:
        yield path.name, path.read_bytes()


def member(path, name: str) -> bytes:
    """The bytes of member ``name`` (its full path inside the artifact)."""
    for got, data in iter_members(path, name):
        if got == name:
            return data
    folder = name.rsplit("/", 1)[0] if "/" in name else ""
    near = sorted(n for n, _ in iter_members(path, folder))[:10]
    raise DataError(f"{Path(path).name} has no member {name!r}" + (f"; beside it: {near}" if near else ""))


def decompress(name: str, data: bytes) -> bytes:
    """``data`` uncompressed when ``name`` ends in .gz, .bz2 or .xz (a single compressed file, not a tarball)."""
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".bz2"):
        return bz2.decompress(data)
    if name.endswith(".xz"):
        return lzma.decompress(data)
    return data


def open_tar_bytes(data: bytes) -> tarfile.TarFile:
    """A tarball held in memory (a tarball inside a tarball, as in VADER's source archive)."""
    return tarfile.open(fileobj=io.BytesIO(data))
