# deploy/local/supervise.sh — what deploy/local/run and deploy/local/cluster share: the local stack
# started and exported, services run in sessions of their own and watched, and everything stopped
# by PID on a signal or when a service exits by itself.
# shellcheck shell=bash
#
#   cd "$(dirname "$0")/../.." || exit 1; PROG=run; . deploy/local/supervise.sh
#
# Contract:
#  - Sourced from the repo root (ROOT is the current directory). Sets BUILD (default build), BIN
#    ($CHATFLOW_BIN, relative to ROOT when not absolute; default $ROOT/$BUILD), STACK, STOP_GRACE
#    ($CHATFLOW_STOP_GRACE, default 30 s) and exports BUILD and CHATFLOW_BIN=$BIN, which the stack
#    reads. say / die print "$PROG: ..." (die on stderr, then exit 1).
#  - need_binaries NAME...: dies unless every $BIN/NAME is executable.
#  - stack_start: deploy/local/stack up (on failure: stack down, die), sets STACK_DIR and exports
#    its stack.env into this shell.
#  - service_start NAME CMD...: CMD in a session of its own (a Ctrl-C in the terminal reaches the
#    script only, which then stops the services in order), stdin /dev/null, output on this
#    terminal; with SERVICE_OUTPUT_PREFIX=1 each line of it starts with "NAME | " (several
#    services of one kind on one terminal). LAST_PID is its PID (CMD itself: setsid and env exec
#    in place); "NAME:PID" is appended to SERVICES.
#  - running PID: alive and not a zombie.
#  - all_live ROUNDS PORT...: up to ROUNDS half-second rounds until every
#    http://127.0.0.1:PORT/health/live answers 2xx; 1 when they do not, or as soon as a service
#    has exited.
#  - watch_services: returns once a service exits by itself, saying which ("the NAME exited by
#    itself").
#  - shutdown RC, which install_traps puts on SIGINT (after a newline: the terminal's ^C), SIGTERM
#    and SIGHUP with RC 0: SIGTERM to every service at once, up to STOP_GRACE seconds, SIGKILL to what is
#    left (RC becomes 1), deploy/local/stack down (RC 1 when it fails), exit RC. Runs once.
#  - Services are signalled in the reverse of their start order and reported in it too, so the
#    ones started first (consumers, which serve the others) are named last.

ROOT=$PWD
BUILD=${BUILD:-build}
case "${CHATFLOW_BIN:-}" in
    /*) BIN=$CHATFLOW_BIN ;;
    '') BIN="$ROOT/$BUILD" ;;
    *) BIN="$ROOT/$CHATFLOW_BIN" ;;
esac
STACK="$ROOT/deploy/local/stack"
STOP_GRACE=${CHATFLOW_STOP_GRACE:-30}
export BUILD CHATFLOW_BIN="$BIN"

SERVICES=()
LAST_PID=

say() { echo "$PROG: $*"; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

need_binaries() {
    local b
    for b in "$@"; do
        [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build it: make BUILD=$BUILD all)"
    done
}

stack_start() {
    "$STACK" up || { "$STACK" down >/dev/null 2>&1; die "the local stack did not start"; }
    STACK_DIR=${CHATFLOW_STACK_DIR:-$BUILD/local}
    case "$STACK_DIR" in /*) ;; *) STACK_DIR="$ROOT/$STACK_DIR" ;; esac
    set -a
    # shellcheck disable=SC1091
    . "$STACK_DIR/stack.env"
    set +a
}

# Alive and not a zombie (an exited child stays a zombie until waited for).
running() {
    local state
    [ -n "$1" ] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# SERVICES' PIDs (or names), last started first.
service_pids() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do echo "${SERVICES[i]#*:}"; done
}

service_start() {
    local name=$1
    shift
    # setsid: a session of its own (see the contract). Without job control, setsid execs in
    # place, so $! is the service itself.
    if [ "${SERVICE_OUTPUT_PREFIX:-0}" = 1 ]; then
        # The prefixing sed stays in this script's session: it ignores the terminal's Ctrl-C and
        # hang-up so that it still relays the service's shutdown lines; it ends at the service's
        # exit (end of its output).
        setsid "$@" </dev/null > >(trap '' INT HUP; exec sed -u "s/^/$name | /") 2>&1 &
    else
        setsid "$@" </dev/null &
    fi
    LAST_PID=$!
    SERVICES+=("$name:$LAST_PID")
}

all_live() {
    local rounds=$1 port ready pid
    shift
    for _ in $(seq 1 "$rounds"); do
        ready=0
        for port in "$@"; do
            curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/health/live" && ready=$((ready + 1))
        done
        [ $ready -eq $# ] && return 0
        for pid in $(service_pids); do running "$pid" || return 1; done
        sleep 0.5
    done
    return 1
}

# SIGTERM to all, a grace period, then SIGKILL; 1 when one had to be killed.
stop_services() {
    local pid rc=0 pids alive
    pids=$(service_pids)
    for pid in $pids; do
        running "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for _ in $(seq 1 $((STOP_GRACE * 10))); do
        alive=0
        for pid in $pids; do running "$pid" && { alive=1; break; }; done
        [ $alive -eq 1 ] || break
        sleep 0.1
    done
    for pid in $pids; do
        if running "$pid"; then
            say "pid $pid did not stop within ${STOP_GRACE}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            rc=1
        fi
        wait "$pid" 2>/dev/null
    done
    return $rc
}

shutting_down=0
shutdown() {
    local rc=$1
    [ $shutting_down -eq 1 ] && return
    shutting_down=1
    trap '' INT TERM HUP
    say "stopping the services"
    stop_services || rc=1
    say "stopping the local stack"
    "$STACK" down || rc=1
    exit "$rc"
}
# Called by the script once it has something to stop (before its first service_start).
install_traps() {
    trap 'echo; shutdown 0' INT
    trap 'shutdown 0' TERM HUP
}

# A signal runs its trap, which exits; so this returns only when a service exited by itself.
watch_services() {
    local pid all i
    while :; do
        all=1
        for pid in $(service_pids); do running "$pid" || { all=0; break; }; done
        [ $all -eq 1 ] || break
        # shellcheck disable=SC2046
        wait -n $(service_pids) 2>/dev/null
    done
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        running "${SERVICES[i]#*:}" || say "the ${SERVICES[i]%%:*} exited by itself"
    done
}
