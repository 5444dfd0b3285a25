"""The one seam promptgrid reaches the Hugging Face hub through: resolving a model's or a dataset's revision to the
commit it points at (what provenance records and ``promptgrid pin`` writes), and creating and uploading a repo
(``promptgrid upload-bank``).

The client is ``huggingface_hub.HfApi`` unless a test (or a caller) hands another object with the same methods
(:class:`HubClient`) to :func:`using_hub_client`. Where the hub cannot be reached (offline, ``HF_HUB_OFFLINE``),
the commit comes from the local HF cache: a download records the commit a revision resolved to in
``<cache>/<type>s--<owner>--<name>/refs/<revision>``, and keeps the files under ``snapshots/<commit>/``.

Errors: a malformed repo id, or a revision the repo does not have, is an :class:`~promptgrid.errors.InputError`;
a repo that is not there (or private, or gated), or a hub that cannot be reached with nothing cached, is a
:class:`~promptgrid.errors.MissingResource`.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator, Optional, Protocol

from promptgrid.errors import InputError, MissingResource

#: a full git commit id: the only revision that names one state of a repo for good
COMMIT = re.compile(r"[0-9a-f]{40}")
REPO_TYPES = ("model", "dataset")


class HubClient(Protocol):
    """What promptgrid calls on ``huggingface_hub.HfApi`` (a fake in tests). ``*_info(...).sha`` is a commit."""

    def model_info(self, repo_id: str, *, revision: Optional[str] = None): ...

    def dataset_info(self, repo_id: str, *, revision: Optional[str] = None): ...

    def create_repo(self, repo_id: str, *, private: Optional[bool] = None, repo_type: Optional[str] = None,
                    exist_ok: bool = False): ...

    def upload_folder(self, *, repo_id: str, folder_path, commit_message: Optional[str] = None,
                      repo_type: Optional[str] = None): ...


_client: Optional[HubClient] = None


def hub_client() -> HubClient:
    """The client set by :func:`using_hub_client`, else a fresh ``huggingface_hub.HfApi``."""
    if _client is not None:
        return _client
    from huggingface_hub import HfApi

    return HfApi()


@contextlib.contextmanager
def using_hub_client(client: HubClient) -> Iterator[HubClient]:
    """Every hub call inside the ``with`` goes to ``client`` (tests: a fake that answers without a network)."""
    global _client
    previous, _client = _client, client
    try:
        yield client
    finally:
        _client = previous


def is_commit(revision: Optional[str]) -> bool:
    return isinstance(revision, str) and COMMIT.fullmatch(revision) is not None


def check_repo_id(repo_id: str, what: str = "hub repo") -> None:
    """Raise :class:`InputError` naming ``repo_id`` unless it is a valid hub id (``name`` or ``owner/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InputError(f"{what} {repo_id!r} is not a hub id: {err}") from None


def cache_folder(repo_id: str, repo_type: str = "model", cache_dir=None) -> Path:
    """Where the HF cache keeps ``repo_id`` (``cache_dir``: the HF hub cache, ``$HF_HUB_CACHE`` by default)."""
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE  # read at call time: HF_HOME / HF_HUB_CACHE as the process set them
    return Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def cached_commit(repo_id: str, repo_type: str = "model", revision: Optional[str] = None,
                  cache_dir=None) -> Optional[str]:
    """The commit ``revision`` (default ``main``) resolved to when ``repo_id`` was last downloaded into the HF
    cache, or None: a commit revision counts only if its snapshot folder is there."""
    folder = cache_folder(repo_id, repo_type, cache_dir)
    revision = revision or "main"
    if is_commit(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        if is_commit(commit) and (folder / "snapshots" / commit).is_dir():
            return commit
    return None


def resolve_commit(repo_id: str, repo_type: str = "model", revision: Optional[str] = None,
                   cache_dir=None) -> str:
    """The commit that ``revision`` (a branch, tag or commit; None: ``main``) of hub ``repo_id`` points at.

    A full commit id is returned as is, without a network. Otherwise the hub is asked (``model_info`` /
    ``dataset_info``); where it cannot be reached, the HF cache answers (module docstring).
    """
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type is one of {REPO_TYPES}, not {repo_type!r}")
    what = f"hub {repo_type} {repo_id!r}"
    check_repo_id(repo_id, f"{repo_type} id")
    if is_commit(revision):
        return revision
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    at = revision or "main"
    try:
        info = getattr(hub_client(), f"{repo_type}_info")(repo_id, revision=revision)
    except RevisionNotFoundError:
        raise InputError(f"{what} has no revision {at!r} (a branch, a tag or a full commit id)") from None
    except RepositoryNotFoundError as err:
        raise MissingResource(f"{what} is not on the hub, or is private or gated ({type(err).__name__}); a private "
                              f"or gated repo needs a token (`hf auth login`)") from None
    except Exception as err:  # offline, no network, a proxy: the cache may still know the commit
        commit = cached_commit(repo_id, repo_type, revision, cache_dir)
        if commit is not None:
            return commit
        first = (str(err).splitlines() or [""])[0]
        raise MissingResource(f"cannot resolve {what} at {at!r}: the hub cannot be reached ({type(err).__name__}: "
                              f"{first}) and the HF cache {cache_folder(repo_id, repo_type, cache_dir)} holds no "
                              f"download of it") from None
    sha = getattr(info, "sha", None)
    if not is_commit(sha):
        raise MissingResource(f"the hub answered for {what} at {at!r} without a commit id (sha={sha!r})")
    return sha
