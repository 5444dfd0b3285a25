#!/usr/bin/env bash
# Everything a lent GPU session measures, in one call (a session has 15 device minutes, start-up included):
#
#   bash bench/gpu_all.sh BUNDLE_DIR        (carry .whl and BUNDLE_DIR)
#
# 1. bench/gpu_run.sh: wheels, env.txt, bench/gpu.py (bank vs sequential PEFT loops; TFLOP/s share)   <= BENCH_S
# 2. pytest -m gpu: the engine on CUDA agrees with the CPU, fp32 keeps TF32 off, reruns are bit-identical  <= TESTS_S
# 3. bench/gpu_study.sh BUNDLE_DIR: the bundled study end to end, Snakemake wall time                    <= STUDY_S
# Each part has its own time limit, so a slow part cannot take the others' results with it; all output goes
# to $OUT (env.txt, bench.log, gpu.json, gpu.md, pytest_gpu.log, study.log, study.json).
set -uo pipefail
bundle=$(cd "${1:?usage: bash bench/gpu_all.sh BUNDLE_DIR}" && pwd) || exit 2
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 2
out=${OUT:-$repo/bench/gpu-out}
mkdir -p "$out"
export OUT=$out PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

echo "== bench (limit ${BENCH_S:=220} s)"
timeout -k 5 "$BENCH_S" bash bench/gpu_run.sh ${BENCH_ARGS:-} > "$out/run.txt" 2>&1
echo "bench exit $?"; tail -40 "$out/run.txt"

. bench/gpu_env.sh
pg_env "$repo" > /dev/null 2>&1
tok=$(dirname "$(ls "$bundle"/models/*/tokenizer.json | head -1)")
echo "== pytest -m gpu (limit ${TESTS_S:=60} s)"
PROMPTGRID_TEST_TOKENIZER=$tok timeout -k 5 "$TESTS_S" "$py" -m pytest -q -m gpu -p no:cacheprovider -rs \
    tests/models/test_gpu.py tests/models/test_devices.py > "$out/pytest_gpu.log" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|skipped|^FAILED|^E " "$out/pytest_gpu.log" | head -12

echo "== study (limit ${STUDY_S:=320} s)"
timeout -k 5 "$STUDY_S" bash bench/gpu_study.sh "$bundle" > "$out/study.txt" 2>&1
rc=$?
echo "study exit $rc"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    grep -E "steps \([0-9]+%\) done" "$out/study.log" | tail -1
    echo "study: stopped at the ${STUDY_S} s limit"
fi
tail -3 "$out/study.txt"
