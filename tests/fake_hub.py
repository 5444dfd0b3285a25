"""A fake Hugging Face hub for tests without a network: a client that answers ``*_info`` from a table and records
every call (promptgrid.storage.hub's seam), and a fake HF cache folder laid out as huggingface_hub lays it out."""
import importlib
from pathlib import Path
from types import SimpleNamespace

from huggingface_hub import errors as hub_errors
from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

# the HTTP library huggingface_hub's errors carry a response of (httpx, or httpx2 in huggingface_hub 2.x)
httpx = importlib.import_module(hub_errors.Response.__module__.split(".")[0])

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40


def _response(url: str) -> httpx.Response:
    return httpx.Response(404, request=httpx.Request("GET", url))


class FakeHub:
    """``commits``: (repo_type, repo_id, revision or 'main') -> commit. ``offline``: every info call fails as
    ``HF_HUB_OFFLINE`` makes ``HfApi`` fail. ``calls``: (method, args) in order."""

    def __init__(self, commits: dict, offline: bool = False):
        self.commits, self.offline, self.calls = dict(commits), offline, []

    def _info(self, repo_type, repo_id, revision):
        self.calls.append((f"{repo_type}_info", repo_id, revision))
        url = f"https://huggingface.co/api/{repo_type}s/{repo_id}"
        if self.offline:
            raise OfflineModeIsEnabled(f"Cannot reach {url}: offline mode is enabled.")
        if not any(t == repo_type and r == repo_id for t, r, _ in self.commits):
            raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: {url}",
                                          response=_response(url))
        sha = self.commits.get((repo_type, repo_id, revision or "main"))
        if sha is None:
            raise RevisionNotFoundError(f"404 Client Error: Revision Not Found for url: {url}/revision/{revision}",
                                        response=_response(url))
        return SimpleNamespace(id=repo_id, sha=sha)

    def model_info(self, repo_id, *, revision=None, **_):
        return self._info("model", repo_id, revision)

    def dataset_info(self, repo_id, *, revision=None, **_):
        return self._info("dataset", repo_id, revision)

    def create_repo(self, repo_id, *, private=None, repo_type=None, exist_ok=False, **_):
        self.calls.append(("create_repo", repo_id, {"private": private, "repo_type": repo_type, "exist_ok": exist_ok}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, repo_type=None, **_):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, {"folder_path": str(folder_path), "repo_type": repo_type,
                                                      "commit_message": commit_message, "files": files}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{SHA_C}")


def cache_snapshot(cache: Path, repo_id: str, commit: str, repo_type: str = "model", ref: str = "") -> Path:
    """Create ``snapshots/<commit>/`` of ``repo_id`` in the fake HF cache ``cache`` (and ``refs/<ref>`` -> it);
    returns the snapshot folder, for the test to fill."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    if ref:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snapshot
