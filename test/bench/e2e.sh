#!/usr/bin/env bash
# test/bench/e2e.sh — the whole system end to end (loadgen -> producer -> fauxqs -> consumer ->
# subscribers + PostgreSQL), next to the emulator's own ceiling measured in the same run. A
# benchmark: it asserts nothing about speed, but it fails (exit 1) when the run was not clean.
#
#   BUILD=build test/bench/e2e.sh [--messages N] [--ceiling-messages N] [--paced-messages N]
#                                 [--connections C] [--window W]
#
# Steps (all on 127.0.0.1, ports picked free at run time, everything stopped by PID on exit):
#   1. a private stack (PostgreSQL + fauxqs, $BUILD/test-stacks/bench-e2e), empty schema;
#   2. the ceiling: $BUILD/bench/bench_sqs_ceiling on queues of its own — SendMessageBatch of 10,
#      then ReceiveMessage + DeleteMessageBatch, one call in flight per room, 20 rooms, bodies the
#      size of a producer message, N messages by default (fauxqs drains a deep backlog more slowly:
#      3.6k msg/s at 500,000 against 5.0k at 100,000 here, so the ceiling is taken at the run's own
#      depth), and 200 single-message send -> receive -> delete probes (the latency floor);
#   3. chatflow-producer and chatflow-consumer with their defaults (test/lib/services.sh);
#   4. the main run: chatflow-loadgen --subscribe, N messages (500000), C connections x window W,
#      no warm-up, as fast as the windows allow: end-to-end throughput (first send to last
#      broadcast), end-to-end latency (send -> broadcast received), CPU per message of each process;
#   5. checks, each fatal: every message acked, none failed; zero broadcasts lost, duplicated or out
#      of order; PostgreSQL holds exactly the acked messageIds, row count = acked count;
#   6. the paced run: chatflow-loadgen --rate R with R = half the main run's end-to-end throughput,
#      P messages (30000): end-to-end latency below saturation, and where it went (each service's
#      latency histograms scraped before and after, summarised by test/lib/prom_quantiles.py:
#      producer queue wait, SendMessageBatch, ack; consumer stages queued / write / bus / settle);
#      then P/2 messages at R/2 (a quarter of the throughput); the same checks for both.
# Prints a table and one JSON line (also in $BUILD/bench/e2e.json).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
BUILD=${BUILD:-build}
export TEST_NAME=bench-e2e TEST_LOGDIR="$ROOT/$BUILD/bench/e2e"
# shellcheck source=../lib/common.sh
. test/lib/common.sh
# shellcheck source=../lib/services.sh
. test/lib/services.sh

MESSAGES=500000
CEILING_MESSAGES=
PACED_MESSAGES=30000
CONNECTIONS=64
WINDOW=20
usage() {
    echo "usage: $0 [--messages N] [--ceiling-messages N] [--paced-messages N (0: no paced run)]" \
        "[--connections C] [--window W]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
        --messages) MESSAGES=$2 ;;
        --ceiling-messages) CEILING_MESSAGES=$2 ;;
        --paced-messages) PACED_MESSAGES=$2 ;;
        --connections) CONNECTIONS=$2 ;;
        --window) WINDOW=$2 ;;
        *) usage ;;
    esac
    shift 2
done
for v in "$MESSAGES" "$PACED_MESSAGES" "$CONNECTIONS" "$WINDOW" ${CEILING_MESSAGES:+"$CEILING_MESSAGES"}; do
    [[ "$v" =~ ^[0-9]+$ ]] || usage
done
[ -n "$CEILING_MESSAGES" ] || CEILING_MESSAGES=$MESSAGES
[ "$CEILING_MESSAGES" -ge 20 ] || CEILING_MESSAGES=20
for b in chatflow-producer chatflow-consumer chatflow-loadgen chatflow-sqs bench/bench_sqs_ceiling; do
    [ -x "$CHATFLOW_BIN/$b" ] || { echo "missing $CHATFLOW_BIN/$b: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
say() { echo "e2e: $*" >&2; }
die() { echo "e2e: FAILED: $*" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
us_per_msg() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}'; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

say "private stack (PostgreSQL + fauxqs), logs in $TEST_LOGDIR"
private_stack_up bench-e2e || die "the private stack did not start"
on_exit "private_stack down --purge >/dev/null 2>&1"
psql -XAtq -c "drop schema public cascade; create schema public" >/dev/null 2>&1

say "ceiling: bare SendMessageBatch, then ReceiveMessage + DeleteMessageBatch, 20 rooms, $CEILING_MESSAGES messages; 200 probes"
CEILING=$("$CHATFLOW_BIN/bench/bench_sqs_ceiling" --messages "$CEILING_MESSAGES" --rooms 20 --body-bytes 330 \
    --probes 200 | tail -1)
jq -e .serial_ceiling_msgs_per_s >/dev/null 2>&1 <<<"$CEILING" || die "bench_sqs_ceiling gave no figures"
SERIAL=$(jq -r .serial_ceiling_msgs_per_s <<<"$CEILING")

say "starting the consumer and the producer"
services_start || die "the services did not start (logs in $TEST_LOGDIR)"
services_wait_ready 60 || die "the services did not become ready"
FAUXQS_PID=$CHATFLOW_FAUXQS_PID

ACKED_ALL="$TEST_LOGDIR/acked-all.txt"
: >"$ACKED_ALL"

# scrape NAME: both services' /metrics into $TEST_LOGDIR/NAME-{producer,consumer}.prom.
scrape() {
    curl -sf --max-time 5 "http://127.0.0.1:$PRODUCER_ADMIN_PORT/metrics" >"$TEST_LOGDIR/$1-producer.prom" || :
    curl -sf --max-time 5 "http://127.0.0.1:$CONSUMER_ADMIN_PORT/metrics" >"$TEST_LOGDIR/$1-consumer.prom" || :
}

# stage_quantiles RUN: where the run's messages spent their time, from the services' own histograms
# between the scrapes before and after it (test/lib/prom_quantiles.py: count, mean, p50/p90/p99 per
# series): the producer's queue wait (linger), SendMessageBatch and ack; the consumer's stages
# (queued in SQS, write, bus, settle), its SQS calls and flushes. {} when a scrape failed.
stage_quantiles() {
    local dir=$TEST_LOGDIR run=$1 p c
    p=$(python3 test/lib/prom_quantiles.py "$dir/$run-before-producer.prom" "$dir/$run-after-producer.prom" \
        chatflow_publish_queue_wait_seconds chatflow_sqs_request_duration_seconds chatflow_ack_latency_seconds) || p='{}'
    c=$(python3 test/lib/prom_quantiles.py "$dir/$run-before-consumer.prom" "$dir/$run-after-consumer.prom" \
        chatflow_consumer_stage_seconds chatflow_sqs_request_duration_seconds chatflow_db_flush_duration_seconds \
        chatflow_end_to_end_latency_seconds) || c='{}'
    jq -cn --argjson p "$p" --argjson c "$c" '{producer: $p, consumer: $c}'
}

# run_load NAME MESSAGES RATE: one loadgen run; leaves its report in $TEST_LOGDIR/NAME.json and
# prints a JSON line: the report's figures, the CPU per message of each process, and the checks.
run_load() {
    local name=$1 n=$2 rate=$3 rc p0 c0 f0 p1 c1 f1
    # Broadcasts can trail the acks by the whole backlog: wait for them up to ~4x the time the
    # emulator alone needs for N messages, and at least 2 minutes.
    local drain
    drain=$(awk -v n="$n" -v r="$SERIAL" 'BEGIN {d = 120 + 4 * n / (r > 0 ? r : 100); print (d > 3600 ? 3600 : int(d))}')
    p0=$(cpu_ticks "$PRODUCER_PID"); c0=$(cpu_ticks "$CONSUMER_PID"); f0=$(cpu_ticks "$FAUXQS_PID")
    scrape "$name-before"
    "$CHATFLOW_BIN/chatflow-loadgen" --port "$PRODUCER_WS_PORT" --consumer-port "$CONSUMER_WS_PORT" \
        --consumer-admin "http://127.0.0.1:$CONSUMER_ADMIN_PORT" --messages "$n" --connections "$CONNECTIONS" \
        --window "$WINDOW" --rate "$rate" --warmup-connections 0 --subscribe --drain-timeout "$drain" \
        --out-dir "$TEST_LOGDIR/$name" --json "$TEST_LOGDIR/$name.json" \
        --acked-ids "$TEST_LOGDIR/$name-acked.txt" >"$TEST_LOGDIR/$name.txt"
    rc=$?
    p1=$(cpu_ticks "$PRODUCER_PID"); c1=$(cpu_ticks "$CONSUMER_PID"); f1=$(cpu_ticks "$FAUXQS_PID")
    scrape "$name-after"
    [ -s "$TEST_LOGDIR/$name.json" ] || die "$name: the load generator wrote no report (exit $rc, see $TEST_LOGDIR/$name.txt)"
    cat "$TEST_LOGDIR/$name-acked.txt" >>"$ACKED_ALL"
    local acked want rows=0
    acked=$(wc -l <"$TEST_LOGDIR/$name-acked.txt")
    want=$(wc -l <"$ACKED_ALL")
    for _ in $(seq 1 240); do
        rows=$(psql -XAtq -c "select count(*) from messages" 2>/dev/null || echo 0)
        [ "$rows" -ge "$want" ] && break
        sleep 0.5
    done
    local result missing extra
    result=$(psql -XAtq -v ON_ERROR_STOP=1 <<SQL
create temp table acked(message_id uuid primary key);
\copy acked from '$ACKED_ALL'
select (select count(*) from acked a where not exists (select 1 from messages m where m.message_id = a.message_id))
    || ' ' || (select count(*) from messages m where not exists (select 1 from acked a where a.message_id = m.message_id))
    || ' ' || (select count(*) from messages);
SQL
    )
    read -r missing extra rows <<<"$result"
    local stages
    stages=$(stage_quantiles "$name")
    jq -c --argjson stages "$stages" --arg name "$name" --arg rc "$rc" --arg acked "$acked" --arg rows "${rows:-0}" --arg want "$want" \
        --arg missing "${missing:-0}" --arg extra "${extra:-0}" \
        --arg pcpu "$(us_per_msg $((p1 - p0)) "$acked")" --arg ccpu "$(us_per_msg $((c1 - c0)) "$acked")" \
        --arg fcpu "$(us_per_msg $((f1 - f0)) "$acked")" \
        '{run: $name, loadgen_exit: ($rc|tonumber), messages: .sent, acked: .acked, failed: .failed,
          retries: .retries, reconnections: .reconnections, connections: .connections, window: .window, rate: .rate,
          ack_throughput_msgs_per_s: .throughputPerSecond, e2e_seconds: .endToEnd.wallTimeSeconds,
          e2e_msgs_per_s: .endToEnd.throughputPerSecond,
          e2e_p50_ms: .endToEndLatency.p50Ms, e2e_p99_ms: .endToEndLatency.p99Ms, e2e_max_ms: .endToEndLatency.maxMs,
          ack_p50_ms: .ackLatency.p50Ms, ack_p99_ms: .ackLatency.p99Ms,
          broadcasts: .broadcasts, acked_ids: ($acked|tonumber), db_rows_total: ($rows|tonumber),
          db_rows_expected: ($want|tonumber), db_missing: ($missing|tonumber), db_extra: ($extra|tonumber),
          cpu_us_per_message: {producer: ($pcpu|tonumber), consumer: ($ccpu|tonumber), fauxqs: ($fcpu|tonumber)},
          stages: $stages}' \
        "$TEST_LOGDIR/$name.json"
}

# check_clean RUN_JSON: every figure the issue requires, each one fatal.
check_clean() {
    local r=$1 name bad
    name=$(jq -r .run <<<"$r")
    bad=$(jq -r '[
        (if .acked != .messages then "acked \(.acked) of \(.messages)" else empty end),
        (if .failed != 0 then "\(.failed) failed" else empty end),
        (if .broadcasts.lost != 0 then "\(.broadcasts.lost) broadcasts lost" else empty end),
        (if .broadcasts.duplicated != 0 then "\(.broadcasts.duplicated) broadcasts duplicated" else empty end),
        (if .broadcasts.outOfOrder != 0 then "\(.broadcasts.outOfOrder) broadcasts out of order" else empty end),
        (if .db_missing != 0 then "\(.db_missing) acked ids not in messages" else empty end),
        (if .db_extra != 0 then "\(.db_extra) rows never acked" else empty end),
        (if .db_rows_total != .db_rows_expected then "\(.db_rows_total) rows for \(.db_rows_expected) acked" else empty end),
        (if .loadgen_exit != 0 then "loadgen exit \(.loadgen_exit)" else empty end)
      ] | join("; ")' <<<"$r")
    [ -z "$bad" ] || die "$name run not clean: $bad (report: $TEST_LOGDIR/$name.txt)"
    say "$name run clean: $(jq -r '"\(.acked) acked, \(.broadcasts.received) broadcasts, 0 lost / 0 duplicated / 0 out of order, \(.db_rows_total) rows"' <<<"$r")"
}

say "main run: $MESSAGES messages, $CONNECTIONS connections x window $WINDOW, subscribed to every room (progress below)"
MAIN=$(run_load main "$MESSAGES" 0) || exit 1
check_clean "$MAIN"

PACED=null PACED_QUARTER=null
if [ "$PACED_MESSAGES" -gt 0 ]; then
    RATE=$(jq -r '.e2e_msgs_per_s / 2 | floor' <<<"$MAIN")
    [ "$RATE" -ge 1 ] || RATE=1
    say "paced run: $PACED_MESSAGES messages at $RATE msg/s (half the main run's end-to-end throughput)"
    PACED=$(run_load paced "$PACED_MESSAGES" "$RATE") || exit 1
    check_clean "$PACED"
    # The same at a quarter of the throughput, half the messages: on fauxqs a room is a serial
    # receive -> commit -> delete cycle (one message per FIFO group per receive), so whether the
    # half-load tail is that cycle running out of headroom shows as the tail shrinking here.
    QUARTER=$(( RATE / 2 > 0 ? RATE / 2 : 1 ))
    say "paced run at a quarter: $(( PACED_MESSAGES / 2 )) messages at $QUARTER msg/s"
    PACED_QUARTER=$(run_load paced-quarter $(( PACED_MESSAGES / 2 > 0 ? PACED_MESSAGES / 2 : 1 )) "$QUARTER") || exit 1
    check_clean "$PACED_QUARTER"
fi

RESULT=$(jq -cn --argjson ceiling "$CEILING" --argjson main "$MAIN" --argjson paced "$PACED" \
    --argjson quarter "$PACED_QUARTER" --arg load "$LOAD" \
    '{load_average: $load, ceiling: $ceiling, main: $main, paced: $paced, paced_quarter: $quarter,
      e2e_ratio_to_serial_ceiling: ($main.e2e_msgs_per_s / $ceiling.serial_ceiling_msgs_per_s),
      e2e_ratio_to_drain_ceiling: ($main.e2e_msgs_per_s / $ceiling.drain_msgs_per_s)}')

f() { jq -r "$1" <<<"$RESULT"; }
printf '\n%-58s %s\n' "metric (load average at start: $LOAD)" "value"
printf '%-58s %s\n' "main run: messages acked / failed / retries" "$(f '"\(.main.acked) / \(.main.failed) / \(.main.retries)"')"
printf '%-58s %s\n' "broadcasts received / lost / duplicated / out of order" \
    "$(f '"\(.main.broadcasts.received) / \(.main.broadcasts.lost) / \(.main.broadcasts.duplicated) / \(.main.broadcasts.outOfOrder)"')"
printf '%-58s %s\n' "database rows / acked" "$(f '"\(.main.db_rows_total) / \(.main.acked)"')"
printf '%-58s %.0f msg/s (%.1f s)\n' "end-to-end throughput (first send to last broadcast)" "$(f .main.e2e_msgs_per_s)" "$(f .main.e2e_seconds)"
printf '%-58s %.0f msg/s\n' "ceiling: bare send, then receive + delete (serial)" "$(f .ceiling.serial_ceiling_msgs_per_s)"
printf '%-58s %.2f\n' "ratio end to end / serial ceiling" "$(f .e2e_ratio_to_serial_ceiling)"
printf '%-58s %.0f / %.0f ms\n' "end-to-end latency p50 / p99 (saturated)" "$(f .main.e2e_p50_ms)" "$(f .main.e2e_p99_ms)"
printf '%-58s %.0f msg/s\n' "producer acked throughput in the main run" "$(f .main.ack_throughput_msgs_per_s)"
printf '%-58s %s us\n' "CPU per message: producer / consumer / fauxqs" \
    "$(f '"\(.main.cpu_us_per_message.producer) / \(.main.cpu_us_per_message.consumer) / \(.main.cpu_us_per_message.fauxqs)"')"
if [ "$PACED" != null ]; then
    printf '%-58s %.1f / %.1f ms\n' "paced at $(f .paced.rate) msg/s: end-to-end latency p50 / p99" "$(f .paced.e2e_p50_ms)" "$(f .paced.e2e_p99_ms)"
    printf '%-58s %.1f / %.1f ms\n' "paced at $(f .paced_quarter.rate) msg/s (a quarter): p50 / p99" "$(f .paced_quarter.e2e_p50_ms)" "$(f .paced_quarter.e2e_p99_ms)"
    echo "  where the paced run's time went (each service's histograms; p50 / p99 ms, interpolated in buckets):"
    f '.paced.stages | to_entries[] | .key as $svc | .value | to_entries[]
       | select(.value.count > 0)
       | "    \($svc) \(.key): n=\(.value.count) p50 \(.value.p50_ms) / p99 \(.value.p99_ms)"'
fi
printf '%-58s %.2f / %.2f ms\n' "probe: one message send -> receive -> delete p50 / p99" "$(f .ceiling.probe_p50_ms)" "$(f .ceiling.probe_p99_ms)"
echo "$RESULT" | tee "$OUT/e2e.json"
