#!/usr/bin/env bash
# The first command on a lent GPU machine, from the repository root (carry .whl):
#
#   bash bench/gpu_run.sh [bench/gpu.py ARGS...]
#
# 1. installs the carried wheels (bench/gpu_env.sh) and checks that what bench/gpu_study.sh needs imports,
#    so a broken wheel set shows up here and not in the study's call (the bench itself needs none of them);
# 2. runs bench/gpu.py (< 3 min on one H100), which prints its table last.
# Writes to $OUT (default bench/gpu-out): env.txt (GPU, driver, package versions), bench.log, gpu.json, gpu.md.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 2
. bench/gpu_env.sh
py=${PYTHON:-python3}
out=${OUT:-$repo/bench/gpu-out}
mkdir -p "$out"
export OUT=$out PYTHONUNBUFFERED=1

wheels_ok=yes
pg_env "$repo" || wheels_ok=no
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
    "$py" - <<'EOF'
import importlib, importlib.metadata as md
for name in ("torch", "transformers", "peft", "numpy", "pandas", "pyarrow", "seaborn", "packaging", "typing_extensions",
             "snakemake", "jsonschema", "sqlmodel", "pydantic", "sqlalchemy", "yaml"):
    try:
        mod = importlib.import_module(name)
        try:
            version = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:  # import name != distribution name (yaml: PyYAML)
            version = getattr(mod, "__version__", "?")
        print(f"{name} {version} {getattr(mod, '__file__', '')}")
    except Exception as err:  # report every missing piece, not just the first
        print(f"{name} MISSING: {type(err).__name__}: {err}")
EOF
    "$py" -m snakemake --version 2>&1 | sed 's/^/snakemake --version: /'
} > "$out/env.txt" 2>&1
if [ "$wheels_ok" = no ] || grep -q "MISSING" "$out/env.txt"; then
    echo "gpu_run.sh: the study's packages are incomplete (see env.txt):"
    grep "MISSING" "$out/env.txt"
fi
head -2 "$out/env.txt"

"$py" bench/gpu.py --out "$out" "$@" 2>&1 | tee "$out/bench.log"
