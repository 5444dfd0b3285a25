#!/usr/bin/env bash
# slurm-local.sh: a throw-away single-node SLURM cluster for promptgrid's SLURM tests and demos.
#
#   scripts/slurm-local.sh start    install (if missing) and start slurmctld + slurmd (+ munged)
#   scripts/slurm-local.sh stop     cancel all jobs, stop the daemons this script started
#   scripts/slurm-local.sh status   exit 0 and show sinfo/squeue if running, exit 3 if not
#
# Needs root and Debian 12 packages (Slurm 22.05); no systemd (daemons are started by hand).
# Settings (environment):
#   PROMPTGRID_SLURM_DIR          state, spool, logs, pid files      (default /tmp/promptgrid-slurm)
#   PROMPTGRID_SLURM_AUTH         munge | none                       (default munge)
#   PROMPTGRID_SLURM_FAKE_GPUS    N > 0: advertise N fake "gpu" GRES (default 0)
#   PROMPTGRID_SLURM_CPUS         CPUs of the node                   (default: nproc)
#   PROMPTGRID_SLURM_MIN_JOB_AGE  seconds finished jobs stay in squeue (default 3600)
#   PROMPTGRID_SLURM_FORCE=1      overwrite an /etc/slurm/slurm.conf this script did not write
#
# Job status without slurmdbd: there is no accounting database, so `sacct` fails and Snakemake's
# slurm plugin must poll with `squeue --states=all` (profiles/slurm-ci sets
# slurm-status-command: squeue). That only sees finished jobs while they are younger than
# MinJobAge, and the plugin silently switches back to sacct when MinJobAge < 3 x
# slurm-init-seconds-before-status-checks, hence the large MinJobAge.
set -euo pipefail

STATE_DIR=${PROMPTGRID_SLURM_DIR:-/tmp/promptgrid-slurm}
AUTH=${PROMPTGRID_SLURM_AUTH:-munge}
FAKE_GPUS=${PROMPTGRID_SLURM_FAKE_GPUS:-0}
NODE_CPUS=${PROMPTGRID_SLURM_CPUS:-$(nproc)}
MIN_JOB_AGE=${PROMPTGRID_SLURM_MIN_JOB_AGE:-3600}
# The jobstep executor of the Snakemake plugin drops every SLURM_* variable (SLURM_CONF too)
# before its nested `srun`, so the config must live at the compiled-in default path.
SLURM_ETC=/etc/slurm
SLURM_CONF_PATH=$SLURM_ETC/slurm.conf
MARKER="# written by promptgrid scripts/slurm-local.sh"
NODE=localhost
PARTITION=debug
unset SLURM_CONF

say() { echo "[slurm-local] $*" >&2; }
die() { say "error: $*"; exit 1; }

case "$AUTH" in munge|none) ;; *) die "PROMPTGRID_SLURM_AUTH must be munge or none, not '$AUTH'" ;; esac
[[ "$FAKE_GPUS" =~ ^[0-9]+$ ]] || die "PROMPTGRID_SLURM_FAKE_GPUS must be an integer, not '$FAKE_GPUS'"
[[ "$NODE_CPUS" =~ ^[1-9][0-9]*$ ]] || die "PROMPTGRID_SLURM_CPUS must be a positive integer, not '$NODE_CPUS'"

pid_alive() {  # pid_alive FILE: the pid in FILE is a live process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

ensure_packages() {
    local wanted="slurmctld slurmd slurm-client" missing="" pkg
    [ "$AUTH" = munge ] && wanted="$wanted munge"
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || die "missing packages:$missing, and no apt-get to install them"
    say "installing:$missing"
    apt-get update -qq
    # the packages start nothing here (no systemd; policy-rc.d blocks invoke-rc.d): start() does
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

render_conf() {  # prints slurm.conf (no side effects: start compares it with the running one)
    local mem_mb gres_types="" gres_node=""
    # RealMemory above the real memory puts the node in INVAL state, so advertise 80 %.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    if [ "$FAKE_GPUS" -gt 0 ]; then
        # gres/gpu needs device files: with a bare Count= slurmd reports 0 GPUs and the node goes
        # INVAL. Character devices aliasing /dev/null (major 1, minor 3) are enough.
        gres_types="GresTypes=gpu"
        gres_node="Gres=gpu:$FAKE_GPUS"
    fi
    cat <<EOF
$MARKER
ClusterName=promptgrid
SlurmctldHost=$NODE
AuthType=auth/$AUTH
CredType=cred/$AUTH
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
# no cgroups in containers: plain process tracking, no task affinity
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job lacking --mem gets the whole node's memory and jobs run one at a time
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
ReturnToService=2
# reject at submission what can never run here (e.g. more CPUs than the node has) instead of
# leaving it PENDING (Reason=PartitionConfig) forever while Snakemake waits
EnforcePartLimits=ALL
# scancel: SIGKILL 5 s after SIGTERM (default 30 s) keeps the cancel-and-retry test short
KillWait=5
# finished jobs stay visible to "squeue --states=all" (the status source without slurmdbd)
MinJobAge=$MIN_JOB_AGE
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$mem_mb $gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

write_gres() {
    local i
    if [ "$FAKE_GPUS" -gt 0 ]; then
        mkdir -p "$STATE_DIR/dev"
        for i in $(seq 0 $((FAKE_GPUS - 1))); do
            [ -c "$STATE_DIR/dev/fakegpu$i" ] || mknod "$STATE_DIR/dev/fakegpu$i" c 1 3
        done
        echo "NodeName=$NODE Name=gpu File=$STATE_DIR/dev/fakegpu[0-$((FAKE_GPUS - 1))]" \
            > "$SLURM_ETC/gres.conf"
    else
        rm -f "$SLURM_ETC/gres.conf"
    fi
}

start_munge() {
    [ "$AUTH" = munge ] || return 0
    pid_alive /run/munge/munged.pid && return 0   # someone's munged is fine, don't own it
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE_DIR/munged.ours"   # stop only kills the munged we started
    munge -n | unmunge >/dev/null || die "munge does not round-trip; see /var/log/munge/munged.log"
}

wait_node_ready() {
    local i state=""
    for i in $(seq 1 120); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
        case "$state" in
            idle*|mixed*|allocated*|completing*) say "node $NODE is $state"; return 0 ;;
            down*|drain*|fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    say "node $NODE not ready after 60 s (state: ${state:-unknown}); last log lines:"
    scontrol show node "$NODE" 2>/dev/null | grep -i reason >&2 || true
    tail -n 15 "$STATE_DIR"/log/*.log >&2 || true
    return 1
}

daemons_running() {
    pid_alive "$STATE_DIR/slurmctld.pid" && pid_alive "$STATE_DIR/slurmd.pid"
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root)"
    ensure_packages
    mkdir -p "$SLURM_ETC" "$STATE_DIR"/{state,spool,log}
    local new_conf
    new_conf=$(render_conf)
    if [ -f "$SLURM_CONF_PATH" ] && ! grep -qF "$MARKER" "$SLURM_CONF_PATH" \
            && [ "${PROMPTGRID_SLURM_FORCE:-0}" != 1 ]; then
        die "$SLURM_CONF_PATH was not written by this script; set PROMPTGRID_SLURM_FORCE=1 to replace it"
    fi
    if daemons_running; then
        if [ "$new_conf" = "$(cat "$SLURM_CONF_PATH" 2>/dev/null)" ]; then
            say "already running with the same configuration"
            wait_node_ready
            return
        fi
        say "running with another configuration: restarting"
        stop
    elif pid_alive "$STATE_DIR/slurmctld.pid" || pid_alive "$STATE_DIR/slurmd.pid"; then
        say "only one of slurmctld/slurmd is running: restarting both"
        stop
    fi
    printf '%s\n' "$new_conf" > "$SLURM_CONF_PATH"
    write_gres
    start_munge
    # -c: start from an empty state (no jobs left over from an earlier run)
    slurmctld -c
    # -N: register under our NodeName instead of the machine's hostname
    slurmd -N "$NODE"
    wait_node_ready
    say "ready: partition $PARTITION, $NODE_CPUS CPUs, $FAKE_GPUS fake GPUs, config $SLURM_CONF_PATH"
}

stop_pids() {  # stop_pids NAME=PIDFILE...: SIGTERM all at once, SIGKILL what is left after 10 s
    local entry name f pid i alive
    local -a names=() pids=() files=()
    for entry in "$@"; do
        name=${entry%%=*} f=${entry#*=}
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            names+=("$name") pids+=("$pid")
        fi
        files+=("$f")
    done
    for i in $(seq 1 100); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} (${pids[$i]}) ignored SIGTERM for 10 s: SIGKILL"
            kill -9 "${pids[$i]}" 2>/dev/null || true
        fi
    done
    rm -f "${files[@]}"
}

stop() {
    local i ids
    if pid_alive "$STATE_DIR/slurmctld.pid"; then
        # cancel every job (any user) and let slurmd reap its slurmstepd processes before we stop it
        ids=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            for i in $(seq 1 40); do
                [ -z "$(squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    stop_pids slurmd="$STATE_DIR/slurmd.pid" slurmctld="$STATE_DIR/slurmctld.pid"
    if [ -f "$STATE_DIR/munged.ours" ]; then
        stop_pids munged=/run/munge/munged.pid
        rm -f "$STATE_DIR/munged.ours"
    fi
    say "stopped"
}

status() {
    if daemons_running; then
        echo "slurmctld pid $(cat "$STATE_DIR/slurmctld.pid"), slurmd pid $(cat "$STATE_DIR/slurmd.pid")"
        sinfo
        squeue --states=all -o '%.8i %.12P %.40j %.10T %.10M %k'
    else
        echo "not running (state dir $STATE_DIR)"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
