#!/usr/bin/env bash
# test/bench/broadcast.sh — the consumer's broadcaster (consumer/broadcast.c) fanning out to
# 20 rooms x 50 subscribers, next to a bare libwebsockets fan-out of the same frames, measured in
# the same run. A benchmark, not a test: it asserts nothing about speed.
#
#   BUILD=build test/bench/broadcast.sh [--events N] [--repeat K]
#
#   broadcaster: CHATFLOW_BENCH_EVENTS=N $BUILD/test/it_broadcast_bench (N events per room, 1000:
#                1,000,000 deliveries; it also checks every subscriber got every event once, in order)
#   baseline:    $BUILD/bench/bench_ws_fanout --events N (the same sockets, clients and flow
#                control; frames rendered before the clock starts, no queues, no metrics)
# The two run alternately K times (3), everything in one process each on 127.0.0.1; the medians
# of deliveries/s and of the service thread's CPU per delivery are kept. No server outlives its
# run. Prints a table and one JSON line (also in $BUILD/bench/broadcast.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
EVENTS=1000
REPEAT=3
usage() { echo "usage: $0 [--events N] [--repeat K]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
        --events) EVENTS=$2 ;;
        --repeat) REPEAT=$2 ;;
        *) usage ;;
    esac
    shift 2
done
[[ "$EVENTS" =~ ^[0-9]+$ && "$REPEAT" =~ ^[0-9]+$ && "$EVENTS" -ge 1 && "$REPEAT" -ge 1 ]] || usage
for bin in test/it_broadcast_bench bench/bench_ws_fanout; do
    [ -x "$BUILD/$bin" ] || { echo "missing $BUILD/$bin: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }
OUT="$BUILD/bench"
mkdir -p "$OUT"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

RUNS="$OUT/broadcast-runs.jsonl"
: >"$RUNS"
for k in $(seq 1 "$REPEAT"); do
    echo "broadcast: round $k of $REPEAT: broadcaster, then bare lws fan-out ($EVENTS events per room) ..." >&2
    log="$OUT/broadcast-$k.log"
    CHATFLOW_BENCH_EVENTS=$EVENTS "$BUILD/test/it_broadcast_bench" >"$log" 2>&1 ||
        { echo "broadcast: it_broadcast_bench failed:" >&2; grep -E '^not ok|^#' "$log" >&2; exit 1; }
    rate=$(sed -n 's/^# broadcast: .* = \([0-9]*\) deliveries\/s.*/\1/p' "$log")
    cpu=$(sed -n 's/^# broadcast service thread: .* = \([0-9.]*\) us per delivery.*/\1/p' "$log")
    [ -n "$rate" ] || { echo "broadcast: no figure in $log" >&2; exit 1; }
    jq -cn --arg r "$rate" --arg c "${cpu:-0}" '{what: "broadcaster", deliveries_per_s: ($r|tonumber), cpu_us_per_delivery: ($c|tonumber)}' >>"$RUNS"
    base=$("$BUILD/bench/bench_ws_fanout" --events "$EVENTS") || { echo "broadcast: bench_ws_fanout failed" >&2; exit 1; }
    jq -c '{what: "bare", deliveries_per_s, cpu_us_per_delivery: .server_cpu_us_per_delivery}' <<<"$base" >>"$RUNS"
done

RESULT=$(jq -sc --arg events "$EVENTS" --arg repeat "$REPEAT" --arg load "$LOAD" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def of($w): map(select(.what == $w));
    {load_average: $load, rooms: 20, subscribers_per_room: 50, events_per_room: ($events|tonumber),
     repeat: ($repeat|tonumber),
     broadcaster: {deliveries_per_s: (of("broadcaster") | map(.deliveries_per_s) | median),
                   cpu_us_per_delivery: (of("broadcaster") | map(.cpu_us_per_delivery) | median),
                   runs: (of("broadcaster") | map(.deliveries_per_s))},
     bare: {deliveries_per_s: (of("bare") | map(.deliveries_per_s) | median),
            cpu_us_per_delivery: (of("bare") | map(.cpu_us_per_delivery) | median),
            runs: (of("bare") | map(.deliveries_per_s))}}
    | .ratio = .broadcaster.deliveries_per_s / .bare.deliveries_per_s' "$RUNS")

f() { jq -r "$1" <<<"$RESULT"; }
printf '\n%-58s %s\n' "metric (median of $REPEAT; load average at start: $LOAD)" "value"
printf '%-58s %.0f deliveries/s (runs: %s)\n' "broadcaster, 20 rooms x 50 subscribers" "$(f .broadcaster.deliveries_per_s)" "$(f '.broadcaster.runs | join(", ")')"
printf '%-58s %.0f deliveries/s (runs: %s)\n' "bare lws fan-out, same frames and clients" "$(f .bare.deliveries_per_s)" "$(f '.bare.runs | join(", ")')"
printf '%-58s %.2f\n' "ratio broadcaster / bare" "$(f .ratio)"
printf '%-58s %s / %s us\n' "service thread CPU per delivery: broadcaster / bare" "$(f .broadcaster.cpu_us_per_delivery)" "$(f .bare.cpu_us_per_delivery)"
echo "$RESULT" | tee "$OUT/broadcast.json"
