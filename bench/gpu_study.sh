#!/usr/bin/env bash
# Run a bundled study end to end on this machine (its GPU) and time the Snakemake run.
#
#   bash bench/gpu_study.sh BUNDLE_DIR [SNAKEMAKE ARGS...]
#
# BUNDLE_DIR: `promptgrid bundle --config studies/bigbench-21x9.yaml --out DIR --dtype bf16` (config.yaml,
# weights and prepared splits inside, so nothing is fetched). Runs from the repository root, with the carried
# wheels and promptgrid's source on the paths (bench/gpu_env.sh):
#
#   snakemake --directory BUNDLE_DIR --configfile BUNDLE_DIR/config.yaml --cores 16 --scheduler greedy [ARGS]
#
# The default workflow profile applies (one thread per model job, no GPU resource: model jobs share the one
# GPU, up to 16 at a time); ARGS go last and override, e.g. --workflow-profile profiles/gpu --resources gpu=4.
# The greedy scheduler needs no ILP solver (pulp is not carried). Writes to $OUT (default bench/gpu-out):
# study.log (Snakemake's output) and study.json (wall time, exit code, jobs); prints a one-line summary last.
set -uo pipefail
GOAL_S=420  # the issue's goal: bigbench-21x9 end to end in <= 7 min

if [ $# -lt 1 ]; then
    echo "usage: bash bench/gpu_study.sh BUNDLE_DIR [SNAKEMAKE ARGS...]" >&2
    exit 2
fi
bundle=$(cd "$1" 2>/dev/null && pwd) || { echo "gpu_study.sh: bundle folder '$1' does not exist" >&2; exit 2; }
shift
if [ ! -f "$bundle/config.yaml" ]; then
    echo "gpu_study.sh: $bundle/config.yaml not found; write the bundle with: promptgrid bundle --config" \
         "studies/bigbench-21x9.yaml --out $bundle --dtype bf16" >&2
    exit 2
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 2
. bench/gpu_env.sh
pg_env "$repo" || exit 2
py=${PYTHON:-python3}
out=${OUT:-$repo/bench/gpu-out}
mkdir -p "$out"
log=$out/study.log
args=(--directory "$bundle" --configfile "$bundle/config.yaml" --cores 16 --scheduler greedy "$@")

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "# $(date '+%Y-%m-%d %H:%M:%S') on ${gpu:-no GPU}: snakemake ${args[*]}" > "$log"
start=$(date +%s.%N)
"$py" -m snakemake "${args[@]}" >> "$log" 2>&1
rc=$?
end=$(date +%s.%N)

"$py" - "$bundle" "$log" "$out/study.json" "$start" "$end" "$rc" "$GOAL_S" "$gpu" "${args[@]}" <<'EOF'
import json, re, sys, time
from pathlib import Path

import yaml

bundle, log, dest, start, end, rc, goal, gpu = sys.argv[1:9]
wall, rc, goal = float(end) - float(start), int(rc), float(goal)
text = Path(log).read_text(errors="replace")
study = (yaml.safe_load((Path(bundle) / "config.yaml").read_text()) or {}).get("study", Path(bundle).name)
progress = re.findall(r"(\d+) of (\d+) steps \((\d+)%\) done", text)
done, total = (int(progress[-1][0]), int(progress[-1][1])) if progress else (0, None)
nothing = "Nothing to be done" in text
dry = "This was a dry-run" in text
info = {"study": study, "bundle": bundle, "exit_code": rc, "wall_s": wall, "jobs_done": done, "jobs_total": total,
        "nothing_to_do": nothing, "dry_run": dry, "goal_s": goal,
        "met": study == "bigbench-21x9" and rc == 0 and not (nothing or dry) and wall <= goal,
        "snakemake_args": sys.argv[9:], "gpu": gpu or None, "date": time.strftime("%Y-%m-%d %H:%M")}
Path(dest).write_text(json.dumps(info, indent=1))
if rc != 0:
    print("\n".join(text.splitlines()[-40:]))
state = ("FAILED (exit %d; see study.log)" % rc if rc else "DRY RUN" if dry
         else "NOTHING RAN (results already in the bundle)" if nothing
         else "goal for bigbench-21x9 <= %.0f min: %s" % (goal / 60, "met" if info["met"] else "NOT met")
         if study == "bigbench-21x9" else "no goal for this study")
print(f"study {study}: snakemake {done}/{total if total is not None else '?'} jobs in {wall:.1f} s "
      f"({wall / 60:.2f} min) on {gpu or 'no GPU named'}; {state}")
EOF
exit $rc
