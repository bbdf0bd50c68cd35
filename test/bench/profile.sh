#!/usr/bin/env bash
# test/bench/profile.sh — where a service's CPU goes, per message, under load: Linux perf on the
# running process, next to the bare SQS client of the same run doing the same SQS work.
# A benchmark, not a test: it asserts nothing.
#
#   BUILD=build test/bench/profile.sh [--service consumer|producer] [--messages N]
#                                     [--method copy|unnest]
#
# Steps (127.0.0.1, ports picked free, everything stopped by PID at exit):
#   1. a private stack (PostgreSQL + fauxqs + Redis) in $BUILD/bench-stacks/profile, migrated;
#   2. the baseline: bench_sqs_ceiling with N messages over 20 rooms, which reports the bare
#      client's CPU per message sent (SendMessageBatch of 10: the producer's SQS work) and per
#      message received and deleted (the consumer's);
#   3. consumer: N messages queued over 20 rooms, chatflow-consumer started under `perf record`
#      (1999 Hz, every thread) until every row is committed (the cluster bus on, as in
#      production; --method picks the write method). producer: chatflow-producer under
#      `perf record`, driven by chatflow-loadgen (100 connections x window 50, N messages);
#   4. the service's CPU time and context switches (voluntary + involuntary, every thread) read
#      from /proc just before it is stopped; printed: CPU and context switches per message and
#      the ratio to the baseline, the share of samples by library, the hottest functions.
# PERF_RECORD_ARGS adds perf record options (e.g. "--call-graph dwarf,16384" to see who calls
# what: perf report -i $BUILD/bench/profile-SERVICE.data --children). Needs perf (Debian
# linux-perf) and the right to profile a process you started (root here, or
# kernel.perf_event_paranoid <= 1). Output in $BUILD/bench/profile-SERVICE.{txt,json,data}.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
export BUILD ROOT CHATFLOW_BIN="$ROOT/$BUILD"
SERVICE=consumer
MESSAGES=20000
METHOD=copy
while [ $# -gt 0 ]; do
    case "$1" in
        --service) SERVICE=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --method) METHOD=$2; shift 2 ;;
        *) echo "usage: $0 [--service consumer|producer] [--messages N] [--method copy|unnest]" >&2; exit 2 ;;
    esac
done
case "$SERVICE" in consumer | producer) ;; *) echo "--service: consumer or producer" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
for bin in chatflow-consumer chatflow-producer chatflow-loadgen bench/bench_sqs_ceiling bench/bench_consumer_fill; do
    [ -x "$BUILD/$bin" ] || { echo "missing $BUILD/$bin: run make BUILD=$BUILD all" >&2; exit 1; }
done

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
. "$ROOT/test/bench/lib.sh"
export CHATFLOW_STACK_DIR="$ROOT/$BUILD/bench-stacks/profile"
SERVICE_PID='' RECORD_PID=''
cleanup() {
    [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null
    [ -n "$RECORD_PID" ] && wait "$RECORD_PID" 2>/dev/null
    deploy/local/stack down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_stack_up profile || exit 1

echo "baseline: bare SendMessageBatch, ReceiveMessage + DeleteMessageBatch, 20 rooms, $MESSAGES messages ..." >&2
CEILING=$("$BUILD/bench/bench_sqs_ceiling" --messages "$MESSAGES" --rooms 20 --body-bytes 330 | tail -1)
read -r -a EXTRA_RECORD_ARGS <<<"${PERF_RECORD_ARGS:-}" # options, split at blanks
LOG="$OUT/profile-$SERVICE.log"
DATA="$OUT/profile-$SERVICE.data"

# start_under_perf BINARY: the service under perf record, its PID in SERVICE_PID.
start_under_perf() {
    perf record -F 1999 "${EXTRA_RECORD_ARGS[@]}" -q -o "$DATA" -- "$BUILD/$1" >"$LOG" 2>&1 &
    RECORD_PID=$!
    for _ in $(seq 1 100); do
        SERVICE_PID=$(pgrep -P "$RECORD_PID" -f "$1" || true)
        [ -n "$SERVICE_PID" ] && break
        sleep 0.05
    done
    [ -n "$SERVICE_PID" ] || { echo "$1 did not start under perf: $LOG" >&2; exit 1; }
}

# threads_of PID: per group of threads (named by the services: cf-poll-N, cf-writer, cf-bus-sub,
# cf-pub-N, ...; the digits folded, so the 20 pollers are one line), tab-separated: the name, how
# many threads, their CPU ticks and their context switches (voluntary + involuntary).
threads_of() {
    local t comm ticks sw
    for t in /proc/"$1"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        ticks=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) || continue
        sw=$(awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s + 0}' "$t/status" 2>/dev/null)
        printf '%s\t%s\t%s\n' "${comm//[0-9]/}" "$ticks" "${sw:-0}"
    done | awk -F'\t' '{n[$1]++; c[$1] += $2; s[$1] += $3} END {for (k in n) printf "%s\t%d\t%d\t%d\n", k, n[k], c[k], s[k]}' |
        sort -t$'\t' -k3,3nr
}

# The service's CPU (TASK_MS), context switches (SWITCHES) and the same by thread group (THREADS)
# so far; then it is stopped.
read_and_stop() {
    local ticks
    ticks=$(awk '{print $14 + $15}' "/proc/$SERVICE_PID/stat")
    SWITCHES=$(cat /proc/"$SERVICE_PID"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s + 0}')
    TASK_MS=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz * 1000}')
    THREADS=$(threads_of "$SERVICE_PID")
    kill -TERM "$SERVICE_PID"
    wait "$RECORD_PID" || true
    SERVICE_PID='' RECORD_PID=''
}

profile_consumer() {
    echo "consumer ($METHOD) under perf: $MESSAGES queued messages over 20 rooms ..." >&2
    sql "TRUNCATE messages, user_activity"
    "$BUILD/bench/bench_consumer_fill" --messages "$MESSAGES" --rooms 20 --copy-file /dev/null >/dev/null
    export CHATFLOW_DB_WRITE_METHOD=$METHOD CHATFLOW_WS_PORT=0 CHATFLOW_ADMIN_PORT=0 \
        CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_RECEIVE_WAIT_S=1 \
        CHATFLOW_QUEUE_DEPTH_INTERVAL_S=0
    start_under_perf chatflow-consumer
    local n=0
    while [ "$n" -lt "$MESSAGES" ]; do
        sleep 0.1
        n=$(sql "select count(*) from messages")
        kill -0 "$SERVICE_PID" 2>/dev/null || { echo "consumer died: $LOG" >&2; exit 1; }
    done
    read_and_stop
    BASELINE=$(jq -r '.drain_cpu_us_per_msg' <<<"$CEILING")
    WHAT="consumer ($METHOD) draining $MESSAGES messages over 20 rooms"
    BASELINE_WHAT="bare receive + delete client"
}

profile_producer() {
    echo "producer under perf: 100 connections x window 50, $MESSAGES messages ..." >&2
    export CHATFLOW_WS_PORT=0 CHATFLOW_ADMIN_PORT=0 CHATFLOW_WS_BIND=127.0.0.1 \
        CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_RATE_LIMIT_PER_MINUTE=0 CHATFLOW_MAX_CONNECTIONS=20000
    start_under_perf chatflow-producer
    local port=""
    for _ in $(seq 1 100); do
        port=$(sed -n 's/.*listening ws=\([0-9]*\) admin=.*/\1/p' "$LOG")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "producer did not start: $LOG" >&2; exit 1; }
    "$BUILD/chatflow-loadgen" --port "$port" --messages "$MESSAGES" --connections 100 --window 50 \
        --warmup-connections 0 --rooms 20 --quiet --out-dir "$OUT/profile-loadgen" \
        --json "$OUT/profile-loadgen.json" >"$OUT/profile-loadgen.txt" 2>&1 ||
        echo "loadgen exited $? (see $OUT/profile-loadgen.txt)" >&2
    read_and_stop
    BASELINE=$(jq -r '.send_cpu_us_per_msg' <<<"$CEILING")
    WHAT="producer taking $MESSAGES messages from 100 connections x window 50"
    BASELINE_WHAT="bare SendMessageBatch client"
}

"profile_$SERVICE"

REPORT="perf report -i $DATA --stdio --no-children -q"
# Share of samples per shared object. (On this VM the kernel's own split is not readable: most of
# its samples land in pvm_irq_enable, the paravirtual interrupt switch.)
DSO=$($REPORT --sort dso 2>/dev/null | awk '$1 ~ /%$/ {sub(/%/, "", $1); print $1 "\t" $2}')
TOP=$($REPORT --sort dso,sym 2>/dev/null | awk '$1 ~ /%$/ && ++n <= 25')
PER_MSG=$(awk -v t="$TASK_MS" -v n="$MESSAGES" 'BEGIN {printf "%.1f", t * 1000 / n}')

{
    printf '%s, perf at 1999 Hz\n' "$WHAT"
    printf 'CPU per message: %s %s us; %s %s us (ratio %.2f)\n' "$SERVICE" "$PER_MSG" \
        "$BASELINE_WHAT" "$BASELINE" "$(awk -v a="$PER_MSG" -v b="$BASELINE" 'BEGIN {print a / b}')"
    printf 'context switches per message: %.2f\n' "$(awk -v s="$SWITCHES" -v n="$MESSAGES" 'BEGIN {print s / n}')"
    printf '\nby thread (from /proc: share of the CPU time, context switches per message):\n'
    printf '%s\n' "$THREADS" | awk -F'\t' -v n="$MESSAGES" '{t += $3; r[NR] = $0} END {
        for (i = 1; i <= NR; i++) { split(r[i], f, "\t");
            printf "  %-16s x%-3d %5.1f %%  %6.2f switches/msg\n", f[1], f[2], t ? 100 * f[3] / t : 0, f[4] / n } }'
    printf '\nshare of samples by library:\n'
    printf '%s\n' "$DSO" | awk -F'\t' '{printf "  %5.1f %%  %s\n", $1, $2}'
    printf '\nhottest functions (share of all samples, library, function):\n%s\n' "$TOP"
} | tee "$OUT/profile-$SERVICE.txt"

jq -cn --arg svc "$SERVICE" --arg m "$METHOD" --arg n "$MESSAGES" --arg c "$PER_MSG" \
    --arg b "$BASELINE" --arg s "$SWITCHES" --arg d "$DSO" --arg t "$THREADS" \
    '{service: $svc, method: (if $svc == "consumer" then $m else null end), messages: ($n|tonumber),
      cpu_us_per_message: ($c|tonumber), baseline_cpu_us_per_message: ($b|tonumber),
      context_switches_per_message: (($s|tonumber) / ($n|tonumber)),
      threads: ($t | split("\n") | map(select(length > 0) | split("\t")
                | {name: .[0], threads: (.[1]|tonumber), cpu_ticks: (.[2]|tonumber),
                   switches_per_message: ((.[3]|tonumber) / ($n|tonumber))})),
      dso_pct: ($d | split("\n") | map(select(length > 0) | split("\t") | {(.[1]): (.[0]|tonumber)}) | add)}' \
    >"$OUT/profile-$SERVICE.json"
