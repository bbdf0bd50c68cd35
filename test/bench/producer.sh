#!/usr/bin/env bash
# test/bench/producer.sh — the producer's throughput against fauxqs, next to the emulator's own
# SendMessageBatch ceiling measured in the same run. A benchmark, not a test: it asserts nothing.
#
#   BUILD=build test/bench/producer.sh [--messages N] [--connections C] [--window W]
#
# Steps (all on 127.0.0.1, ports picked free, everything stopped by PID at exit):
#   1. a private SQS stack (deploy/local/stack up --sqs-only in $BUILD/bench-stacks/producer);
#   2. the ceiling: $BUILD/bench/bench_sqs_ceiling — bare SendMessageBatch of 10, one request in
#      flight per room, 20 rooms, bodies the size of a producer message;
#   3. chatflow-producer (rate limit off) driven by chatflow-loadgen: C connections over 20 rooms,
#      W unacked frames each, N messages, no warm-up;
#   4. reads the producer's /metrics (SQS requests) and /proc/<pid>/stat (CPU) before and after.
# Prints a table and one JSON line (also in $BUILD/bench/producer.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
export BUILD ROOT CHATFLOW_BIN="$ROOT/$BUILD"
MESSAGES=100000
CONNECTIONS=100
WINDOW=50
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) MESSAGES=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        *) echo "usage: $0 [--messages N] [--connections C] [--window W]" >&2; exit 2 ;;
    esac
done
for bin in chatflow-producer chatflow-loadgen chatflow-sqs bench/bench_sqs_ceiling; do
    [ -x "$BUILD/$bin" ] || { echo "missing $BUILD/$bin: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
export CHATFLOW_STACK_DIR="$ROOT/$BUILD/bench-stacks/producer"
PRODUCER_PID=
cleanup() {
    [ -n "$PRODUCER_PID" ] && kill "$PRODUCER_PID" 2>/dev/null && wait "$PRODUCER_PID" 2>/dev/null
    deploy/local/stack down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deploy/local/stack up --sqs-only >"$OUT/producer-stack.log" 2>&1 || { tail "$OUT/producer-stack.log"; exit 1; }
set -a; . "$CHATFLOW_STACK_DIR/stack.env"; set +a

echo "ceiling: bare SendMessageBatch, 20 rooms, $MESSAGES messages ..." >&2
CEILING=$("$BUILD/bench/bench_sqs_ceiling" --messages "$MESSAGES" --rooms 20 --body-bytes 330 | tail -1)
CEILING_RATE=$(jq -r '.send_msgs_per_s' <<<"$CEILING")

"$BUILD/chatflow-producer" --ws-port 0 --admin-port 0 --ws-bind 127.0.0.1 --admin-bind 127.0.0.1 \
    --rate-limit-per-minute 0 --log-level info --max-connections 20000 \
    >"$OUT/producer.log" 2>&1 &
PRODUCER_PID=$!
for _ in $(seq 1 100); do grep -q "listening ws=" "$OUT/producer.log" 2>/dev/null && break; sleep 0.1; done
WS_PORT=$(sed -n 's/.*listening ws=\([0-9]*\) admin=.*/\1/p' "$OUT/producer.log")
ADMIN_PORT=$(sed -n 's/.*listening ws=[0-9]* admin=\([0-9]*\).*/\1/p' "$OUT/producer.log")
[ -n "$WS_PORT" ] && [ -n "$ADMIN_PORT" ] || { echo "producer did not start"; cat "$OUT/producer.log"; exit 1; }
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/health/ready" && break; sleep 0.1; done

sqs_requests() {
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^chatflow_sqs_requests_total/ {s += $NF} END {printf "%d\n", s}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PRODUCER_PID/stat"; }
TICKS_PER_S=$(getconf CLK_TCK)

REQ0=$(sqs_requests); CPU0=$(cpu_ticks)
echo "producer: $CONNECTIONS connections x window $WINDOW, $MESSAGES messages ..." >&2
"$BUILD/chatflow-loadgen" --port "$WS_PORT" --messages "$MESSAGES" --connections "$CONNECTIONS" \
    --window "$WINDOW" --warmup-connections 0 --rooms 20 --quiet --out-dir "$OUT/producer-loadgen" \
    --json "$OUT/producer-loadgen.json" >"$OUT/producer-loadgen.txt" 2>&1 || echo "loadgen exited $? (failures counted below)" >&2
REQ1=$(sqs_requests); CPU1=$(cpu_ticks)

R="$OUT/producer-loadgen.json"
ACKED=$(jq -r '.acked // .main.acked' "$R")
RATE=$(jq -r '(.throughputPerSecond // .main.throughputPerSecond)' "$R")
P50=$(jq -r '(.ackLatency // .main.ackLatency).p50Ms' "$R")
P99=$(jq -r '(.ackLatency // .main.ackLatency).p99Ms' "$R")
FAILED=$(jq -r '.failed // .main.failed' "$R")
REQ_PER_MSG=$(awk -v r=$((REQ1 - REQ0)) -v n="$ACKED" 'BEGIN {printf "%.3f", n ? r / n : 0}')
CPU_US=$(awk -v t=$((CPU1 - CPU0)) -v hz="$TICKS_PER_S" -v n="$ACKED" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')
RATIO=$(awk -v a="$RATE" -v b="$CEILING_RATE" 'BEGIN {printf "%.2f", b ? a / b : 0}')

printf '\n%-44s %s\n' "metric" "value"
printf '%-44s %s\n' "messages acked / failed" "$ACKED / $FAILED"
printf '%-44s %.0f msg/s\n' "producer sustained acked throughput" "$RATE"
printf '%-44s %.0f msg/s\n' "ceiling: bare SendMessageBatch (same run)" "$CEILING_RATE"
printf '%-44s %s\n' "ratio producer / ceiling" "$RATIO"
printf '%-44s %s\n' "SQS requests per message" "$REQ_PER_MSG"
printf '%-44s %s / %s ms\n' "ack latency p50 / p99" "$P50" "$P99"
printf '%-44s %s us\n' "producer CPU per message (user+sys)" "$CPU_US"
jq -cn --argjson ceiling "$CEILING" --arg rate "$RATE" --arg ratio "$RATIO" --arg rpm "$REQ_PER_MSG" \
    --arg p50 "$P50" --arg p99 "$P99" --arg cpu "$CPU_US" --arg acked "$ACKED" --arg c "$CONNECTIONS" --arg w "$WINDOW" \
    '{connections: ($c|tonumber), window: ($w|tonumber), acked: ($acked|tonumber), producer_msgs_per_s: ($rate|tonumber),
      ceiling: $ceiling, ratio: ($ratio|tonumber), sqs_requests_per_message: ($rpm|tonumber),
      ack_p50_ms: ($p50|tonumber), ack_p99_ms: ($p99|tonumber), cpu_us_per_message: ($cpu|tonumber)}' | tee "$OUT/producer.json"
