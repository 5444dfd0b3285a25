# Sourced by bench/gpu_run.sh and bench/gpu_study.sh on the GPU machine (bash). pg_env REPO:
#   - installs the wheels carried in REPO/.whl (bench/gpu_wheels.sh fetches them; PG_WHEELS names another
#     folder) into /tmp/site (PG_SITE), the recipe of
#     the device README: the packages the machine's image lacks (snakemake and its needs, jsonschema);
#   - puts /tmp/site and REPO/src first on PYTHONPATH (no pip install of promptgrid itself);
#   - puts a `promptgrid` command on PATH (the rules call it; it runs `python -m promptgrid.cli`), in /tmp/pg-bin
#     (PG_BIN).
# PYTHON (default python3, the image's interpreter with torch) is the Python everything runs under.
pg_env() {
    local repo=$1 py=${PYTHON:-python3} site=${PG_SITE:-/tmp/site} bin=${PG_BIN:-/tmp/pg-bin}
    local folder=${PG_WHEELS:-$1/.whl}
    local wheels=("$folder"/*.whl)
    if [ -e "${wheels[0]}" ]; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "${wheels[@]}" || { echo "pg_env: installing the ${#wheels[@]} wheels of $folder failed" >&2; return 1; }
        export PYTHONPATH="$site:$repo/src${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "pg_env: no wheels in $folder (run bench/gpu_wheels.sh here and carry .whl); using what $py has" >&2
        export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
    mkdir -p "$bin"
    printf '#!/bin/sh\nexec %s -m promptgrid.cli "$@"\n' "$(command -v "$py")" > "$bin/promptgrid"
    chmod +x "$bin/promptgrid"
    export PATH="$bin:$PATH" PYTHONUNBUFFERED=1
}
