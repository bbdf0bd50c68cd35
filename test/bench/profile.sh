#!/usr/bin/env bash
# test/bench/profile.sh — where the consumer's CPU goes, per message, while it drains a backlog:
# Linux perf on the running process, next to the bare receive + delete client of the same run.
# A benchmark, not a test: it asserts nothing.
#
#   BUILD=build test/bench/profile.sh [--messages N] [--method copy|unnest]
#
# Steps (127.0.0.1, ports picked free, everything stopped by PID at exit):
#   1. a private stack (PostgreSQL + fauxqs) in $BUILD/bench-stacks/profile, schema migrated;
#   2. the baseline: bench_sqs_ceiling, whose drain phase (bare ReceiveMessage + DeleteMessageBatch,
#      one call in flight per room) reports its CPU per message;
#   3. N messages queued over 20 rooms; chatflow-consumer started under `perf record` (sampling at
#      1999 Hz, every thread) until every row is committed; its CPU time and context switches
#      (voluntary + involuntary, every thread) read from /proc just before it is stopped;
#   4. printed: CPU and context switches per message, the share of samples by library (the
#      kernel's split into scheduling, network and the rest), and the hottest functions.
# PERF_RECORD_ARGS adds perf record options (e.g. "--call-graph dwarf,16384" to see who calls
# what: perf report -i $BUILD/bench/profile-consumer.data --children). Needs perf (Debian linux-perf) and the right to profile a process you started (root here, or
# kernel.perf_event_paranoid <= 1). Output in $BUILD/bench/profile-consumer.{txt,json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
export BUILD ROOT CHATFLOW_BIN="$ROOT/$BUILD"
MESSAGES=20000
METHOD=copy
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) MESSAGES=$2; shift 2 ;;
        --method) METHOD=$2; shift 2 ;;
        *) echo "usage: $0 [--messages N] [--method copy|unnest]" >&2; exit 2 ;;
    esac
done
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
for bin in chatflow-consumer bench/bench_sqs_ceiling bench/bench_consumer_fill; do
    [ -x "$BUILD/$bin" ] || { echo "missing $BUILD/$bin: run make BUILD=$BUILD all" >&2; exit 1; }
done

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
. "$ROOT/test/bench/lib.sh"
export CHATFLOW_STACK_DIR="$ROOT/$BUILD/bench-stacks/profile"
CONSUMER_PID='' RECORD_PID=''
cleanup() {
    [ -n "$CONSUMER_PID" ] && kill "$CONSUMER_PID" 2>/dev/null
    [ -n "$RECORD_PID" ] && wait "$RECORD_PID" 2>/dev/null
    deploy/local/stack down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_stack_up profile || exit 1

echo "baseline: bare ReceiveMessage + DeleteMessageBatch, 20 rooms, $MESSAGES messages ..." >&2
CEILING=$("$BUILD/bench/bench_sqs_ceiling" --messages "$MESSAGES" --rooms 20 --body-bytes 330 | tail -1)

echo "consumer ($METHOD) under perf: $MESSAGES queued messages over 20 rooms ..." >&2
sql "TRUNCATE messages, user_activity"
"$BUILD/bench/bench_consumer_fill" --messages "$MESSAGES" --rooms 20 --copy-file /dev/null >/dev/null
LOG="$OUT/profile-consumer.log"
read -r -a EXTRA_RECORD_ARGS <<<"${PERF_RECORD_ARGS:-}" # options, split at blanks
CHATFLOW_DB_WRITE_METHOD=$METHOD CHATFLOW_WS_PORT=0 CHATFLOW_ADMIN_PORT=0 CHATFLOW_WS_BIND=127.0.0.1 \
    CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_RECEIVE_WAIT_S=1 CHATFLOW_QUEUE_DEPTH_INTERVAL_S=0 \
    perf record -F 1999 "${EXTRA_RECORD_ARGS[@]}" -q -o "$OUT/profile-consumer.data" -- "$BUILD/chatflow-consumer" \
    >"$LOG" 2>&1 &
RECORD_PID=$!
for _ in $(seq 1 100); do
    CONSUMER_PID=$(pgrep -P "$RECORD_PID" -f chatflow-consumer || true)
    [ -n "$CONSUMER_PID" ] && break
    sleep 0.05
done
[ -n "$CONSUMER_PID" ] || { echo "consumer did not start under perf: $LOG" >&2; exit 1; }
n=0
while [ "$n" -lt "$MESSAGES" ]; do
    sleep 0.1
    n=$(sql "select count(*) from messages")
    kill -0 "$CONSUMER_PID" 2>/dev/null || { echo "consumer died: $LOG" >&2; exit 1; }
done
TICKS=$(awk '{print $14 + $15}' "/proc/$CONSUMER_PID/stat")
SWITCHES=$(cat /proc/"$CONSUMER_PID"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s + 0}')
kill -TERM "$CONSUMER_PID"
wait "$RECORD_PID" || true
CONSUMER_PID='' RECORD_PID=''
TASK_MS=$(awk -v t="$TICKS" -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz * 1000}')

REPORT="perf report -i $OUT/profile-consumer.data --stdio --no-children -q"
# Share of samples per shared object, and of the kernel's samples per kind of work.
DSO=$($REPORT --sort dso 2>/dev/null | awk '$1 ~ /%$/ {sub(/%/, "", $1); print $1 "\t" $2}')
KERNEL=$($REPORT --sort dso,sym 2>/dev/null | awk '$2 == "[kernel.kallsyms]" {sub(/%/, "", $1); print $1 "\t" $4}' |
    awk -F'\t' '
        $2 ~ /sched|switch|futex|wake|idle|pick_|enqueue|dequeue|update_curr|finish_task|rcu|hrtimer|timerqueue|tick/ {s += $1; next}
        $2 ~ /tcp|ip_|sock|skb|net_|inet|__dev|loopback|dst_|neigh|nf_|sk_|napi|raw_spin_unlock_irqrestore/ {n += $1; next}
        {o += $1}
        END {printf "%.1f\t%.1f\t%.1f\n", s, n, o}')
TOP=$($REPORT --sort dso,sym 2>/dev/null | awk '$1 ~ /%$/ && ++n <= 25')

{
    printf 'consumer (%s) draining %d messages over 20 rooms, perf at 1999 Hz\n' "$METHOD" "$MESSAGES"
    printf 'CPU per message: consumer %.1f us; bare receive + delete client %s us (ratio %.2f)\n' \
        "$(awk -v t="$TASK_MS" -v n="$MESSAGES" 'BEGIN {print t * 1000 / n}')" \
        "$(jq -r '.drain_cpu_us_per_msg' <<<"$CEILING")" \
        "$(awk -v t="$TASK_MS" -v n="$MESSAGES" -v b="$(jq -r '.drain_cpu_us_per_msg' <<<"$CEILING")" 'BEGIN {print t * 1000 / n / b}')"
    printf 'context switches per message: %.2f\n' "$(awk -v s="$SWITCHES" -v n="$MESSAGES" 'BEGIN {print s / n}')"
    printf '\nshare of samples by library:\n'
    printf '%s\n' "$DSO" | awk -F'\t' '{printf "  %5.1f %%  %s\n", $1, $2}'
    IFS=$'\t' read -r k_sched k_net k_other <<<"$KERNEL"
    printf '  of the kernel: scheduling and wake-ups %s %%, network %s %%, other %s %% (of all samples)\n' \
        "$k_sched" "$k_net" "$k_other"
    printf '\nhottest functions (share of all samples, library, function):\n%s\n' "$TOP"
} | tee "$OUT/profile-consumer.txt"

jq -cn --argjson ceiling "$CEILING" --arg m "$METHOD" --arg n "$MESSAGES" --arg t "$TASK_MS" \
    --arg s "$SWITCHES" --arg k "$KERNEL" --arg d "$DSO" \
    '{method: $m, messages: ($n|tonumber), cpu_us_per_message: (($t|tonumber) * 1000 / ($n|tonumber)),
      baseline_cpu_us_per_message: $ceiling.drain_cpu_us_per_msg,
      context_switches_per_message: (($s|tonumber) / ($n|tonumber)),
      kernel_pct: ($k | split("\t") | {scheduling: (.[0]|tonumber), network: (.[1]|tonumber), other: (.[2]|tonumber)}),
      dso_pct: ($d | split("\n") | map(select(length > 0) | split("\t") | {(.[1]): (.[0]|tonumber)}) | add)}' \
    >"$OUT/profile-consumer.json"
