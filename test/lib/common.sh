# test/lib/common.sh — helpers for integration test scripts (test/integration/*.sh).
# shellcheck shell=bash
#
#   . "$(dirname "$0")/../lib/common.sh"
#
# Contract:
#  - Output follows test/run: tap_ok / tap_fail print "ok - ..." / "not ok - ..." and count;
#    note prints "# ..."; finish exits 0 when nothing failed, 1 otherwise.
#  - Processes started with start_bg and a private stack started with private_stack_up are
#    stopped by PID when the script exits, pass or fail (an EXIT trap installed here; INT/TERM
#    make the script exit so the trap runs). Scripts add their own cleanup with on_exit, never
#    with their own `trap ... EXIT` (it would replace this one).
#  - ROOT, BUILD and CHATFLOW_BIN default as test/run sets them, so a script also runs alone:
#    BUILD=build/me test/integration/x.sh (it then needs a stack's environment for shared services).
#  - Ports are picked free on 127.0.0.1 at run time; nothing here listens on other addresses.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-build}
case "${CHATFLOW_BIN:-}" in
    /*) ;;
    '') CHATFLOW_BIN="$ROOT/$BUILD" ;;
    *) CHATFLOW_BIN="$ROOT/$CHATFLOW_BIN" ;;
esac
export ROOT BUILD CHATFLOW_BIN
TEST_NAME=${TEST_NAME:-$(basename "$0" .sh)}
TEST_LOGDIR=${TEST_LOGDIR:-$ROOT/$BUILD/test-logs/$TEST_NAME}
mkdir -p "$TEST_LOGDIR"

TAP_PASSED=0
TAP_FAILED=0

tap_ok() {
    echo "ok - $*"
    TAP_PASSED=$((TAP_PASSED + 1))
}

tap_fail() {
    echo "not ok - $*"
    TAP_FAILED=$((TAP_FAILED + 1))
}

note() { echo "# $*"; }

# tap_check DESCRIPTION CMD...: ok when CMD exits 0; on failure shows the last lines it printed.
tap_check() {
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then
        tap_ok "$desc"
    else
        tap_fail "$desc (exit $?: $*)"
        [ -n "$out" ] && printf '%s\n' "$out" | tail -5 | sed 's/^/#   /'
    fi
    return 0
}

# tap_is GOT WANT DESCRIPTION: ok when the two strings are equal.
tap_is() {
    if [ "$1" = "$2" ]; then
        tap_ok "$3"
    else
        tap_fail "$3"
        note "  got:  '$1'"
        note "  want: '$2'"
    fi
}

# Exit status of the script: 0 when nothing failed.
finish() {
    note "$TAP_PASSED passed, $TAP_FAILED failed"
    [ "$TAP_FAILED" -eq 0 ] && exit 0
    exit 1
}

# ---------------------------------------------------------------- ports and waiting

# Anything listening on 127.0.0.1:PORT?
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a free loopback port below the kernel's ephemeral range (so no outgoing connection can
# hold it), chosen at random so concurrent tests rarely pick the same one.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    echo "free_port: no free port found" >&2
    return 1
}

# wait_port PORT [TIMEOUT_S=30]: until something accepts connections on 127.0.0.1:PORT.
wait_port() {
    local port=$1 timeout=${2:-30}
    for _ in $(seq 1 $((timeout * 10))); do
        port_in_use "$port" && return 0
        sleep 0.1
    done
    echo "wait_port: nothing listens on 127.0.0.1:$port after ${timeout}s" >&2
    return 1
}

# wait_http URL [TIMEOUT_S=30]: until URL answers with a 2xx status.
wait_http() {
    local url=$1 timeout=${2:-30}
    for _ in $(seq 1 $((timeout * 5))); do
        curl -sf -o /dev/null --max-time 2 "$url" && return 0
        sleep 0.2
    done
    echo "wait_http: $url did not answer 2xx within ${timeout}s" >&2
    return 1
}

# ---------------------------------------------------------------- background processes

declare -A BG_PIDS=()

# pid_running PID: alive and not a zombie (an exited child stays a zombie until waited for).
pid_running() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

BG_PID=

# start_bg NAME CMD...: runs CMD in the background, output to $TEST_LOGDIR/NAME.log; its PID is
# left in BG_PID and BG_PIDS[NAME]. It gets a session of its own, so stopping it stops whatever it
# started too (the whole process group, found by its PID). Stopped on exit, pass or fail.
start_bg() {
    local name=$1
    shift
    # Without job control, setsid execs in place: $! is the command itself.
    setsid "$@" </dev/null >"$TEST_LOGDIR/$name.log" 2>&1 &
    BG_PID=$!
    BG_PIDS[$name]=$BG_PID
}

# bg_log NAME: the log file of a process started with start_bg.
bg_log() { echo "$TEST_LOGDIR/$1.log"; }

# stop_bg NAME [SIGNAL=TERM] [GRACE_S=10]: signals the process group, waits, then SIGKILLs.
# Returns the process's exit status (128+n when killed by signal n).
stop_bg() {
    local name=$1 sig=${2:-TERM} grace=${3:-10} pid rc=0
    pid=${BG_PIDS[$name]:-}
    [ -n "$pid" ] || return 0
    kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 10))); do
        pid_running "$pid" || break
        sleep 0.1
    done
    if pid_running "$pid"; then
        note "$name (pid $pid) ignored SIG$sig for ${grace}s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    # Whatever else is left in its group (children that outlived it).
    kill -KILL -- "-$pid" 2>/dev/null || true
    unset "BG_PIDS[$name]"
    return $rc
}

# bg_alive NAME: is it still running?
bg_alive() {
    local pid=${BG_PIDS[$1]:-}
    [ -n "$pid" ] && pid_running "$pid"
}

# ---------------------------------------------------------------- private stack

PRIVATE_STACK_DIR=

# private_stack_up NAME [up options]: a stack of its own in $BUILD/test-stacks/NAME, for tests
# that break a dependency on purpose. Exports its stack.env into this shell (replacing the shared
# stack's endpoints). Stopped on exit, pass or fail. Returns non-zero when it did not start.
private_stack_up() {
    local name=$1
    shift
    PRIVATE_STACK_DIR="$ROOT/$BUILD/test-stacks/$name"
    if ! private_stack up "$@" >"$TEST_LOGDIR/stack-$name.log" 2>&1; then
        note "private stack $name did not start:"
        tail -10 "$TEST_LOGDIR/stack-$name.log" | sed 's/^/#   /'
        return 1
    fi
    private_stack_env
}

# private_stack CMD...: runs deploy/local/stack CMD on the private stack (stop-pg, restart-sqs, ...).
private_stack() {
    [ -n "$PRIVATE_STACK_DIR" ] || { echo "private_stack: no private stack (private_stack_up first)" >&2; return 1; }
    CHATFLOW_STACK_DIR="$PRIVATE_STACK_DIR" BUILD="$BUILD" CHATFLOW_BIN="$CHATFLOW_BIN" \
        "$ROOT/deploy/local/stack" "$@"
}

# private_stack_env: re-exports the private stack's stack.env (after a component restarted).
private_stack_env() {
    set -a
    # shellcheck disable=SC1091
    . "$PRIVATE_STACK_DIR/stack.env"
    set +a
    unset CHATFLOW_REDIS_URL # opt-in per test, as in test/run
}

private_stack_down() {
    [ -n "$PRIVATE_STACK_DIR" ] || return 0
    private_stack down >>"$TEST_LOGDIR/stack-$(basename "$PRIVATE_STACK_DIR").log" 2>&1 ||
        note "private stack down failed (see $TEST_LOGDIR)"
    PRIVATE_STACK_DIR=
}

# ---------------------------------------------------------------- cleanup on exit

EXIT_HOOKS=()

# on_exit CMD: run CMD (a string, eval'd) at exit, before the background processes are stopped.
on_exit() { EXIT_HOOKS+=("$1"); }

common_cleanup() {
    local rc=$? hook name
    set +e
    for hook in "${EXIT_HOOKS[@]}"; do eval "$hook"; done
    for name in "${!BG_PIDS[@]}"; do stop_bg "$name" TERM 10 >/dev/null 2>&1; done
    private_stack_down
    exit $rc
}
trap common_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
