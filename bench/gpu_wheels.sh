#!/usr/bin/env bash
# Fetch the wheels of bench/gpu_wheels.txt into .whl/ (ignored by git; carry it to the GPU machine), for
# Python 3.12 on x86-64, with the recipe of the device README. Run here, from anywhere, with network (PyPI).
#   bash bench/gpu_wheels.sh            # PYTHON=... picks the pip (default python3)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
dest=$repo/.whl
mkdir -p "$dest"
mapfile -t pins < <(grep -v '^\s*#' "$repo/bench/gpu_wheels.txt" | grep -v '^\s*$')
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
    -d "$dest" "${pins[@]}"
# one version per package: a second one stops the whole install there
extra=$(cd "$dest" && ls *.whl | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/' | tr '_' '-' | tr 'A-Z' 'a-z' | sort \
        | comm -23 - <(printf '%s\n' "${pins[@]}" | tr '_' '-' | tr 'A-Z' 'a-z' | sort))
if [ -n "$extra" ]; then
    echo "gpu_wheels.sh: $dest holds wheels not in bench/gpu_wheels.txt (remove them): $extra" >&2
    exit 1
fi
echo "gpu_wheels.sh: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"
