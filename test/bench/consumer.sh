#!/usr/bin/env bash
# test/bench/consumer.sh — the consumer's persistence and drain rates against fauxqs and PostgreSQL,
# each next to its ceiling measured in the same run. A benchmark, not a test: it asserts nothing.
#
#   BUILD=build test/bench/consumer.sh [--messages N] [--methods "copy unnest"]
#
# Steps (all on 127.0.0.1, ports picked free, everything stopped by PID at exit):
#   1. a private stack (PostgreSQL + fauxqs) in $BUILD/bench-stacks/consumer, schema migrated;
#   2. SQS ceiling: $BUILD/bench/bench_sqs_ceiling — bare ReceiveMessage + DeleteMessageBatch, one
#      call in flight per room, 20 rooms (fauxqs hands out one message per FIFO group per receive);
#   3. writer alone: $BUILD/bench/bench_consumer_writer — rows/s of each flush method at flush sizes
#      20 (what group commit gathers from 20 rooms on fauxqs), 100 and 1000;
#   4. per method: the 20 room queues filled with N messages (bench_consumer_fill, which also writes
#      the same rows as a COPY file), then chatflow-consumer started and timed until all N rows are
#      committed (and so deleted): its drain rate = its persist rate; per-room rates from created_at;
#   5. plain COPY of the same N rows into a table shaped like messages (same indexes), same server;
#   6. the spill path: N messages queued, the database made read-only (what a failover onto a
#      reader looks like), the consumer started and timed until every message was moved to the
#      spill queue (its live rate while the database is unavailable); then the database made
#      writable again and timed until the drainer has stored all N (the catch-up rate).
# Prints a table and one JSON line (also in $BUILD/bench/consumer.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
export BUILD ROOT CHATFLOW_BIN="$ROOT/$BUILD"
MESSAGES=20000
METHODS="copy unnest"
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) MESSAGES=$2; shift 2 ;;
        --methods) METHODS=$2; shift 2 ;;
        *) echo "usage: $0 [--messages N] [--methods \"copy unnest\"]" >&2; exit 2 ;;
    esac
done
for bin in chatflow-consumer chatflow-sqs bench/bench_sqs_ceiling bench/bench_consumer_fill bench/bench_consumer_writer; do
    [ -x "$BUILD/$bin" ] || { echo "missing $BUILD/$bin: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
. "$ROOT/test/bench/lib.sh"
export CHATFLOW_STACK_DIR="$ROOT/$BUILD/bench-stacks/consumer"
CONSUMER_PID=
cleanup() {
    [ -n "$CONSUMER_PID" ] && kill "$CONSUMER_PID" 2>/dev/null && wait "$CONSUMER_PID" 2>/dev/null
    deploy/local/stack down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_stack_up consumer || exit 1
now() { date +%s.%N; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

echo "ceiling: bare ReceiveMessage + DeleteMessageBatch, 20 rooms, $MESSAGES messages ..." >&2
CEILING=$("$BUILD/bench/bench_sqs_ceiling" --messages "$MESSAGES" --rooms 20 --body-bytes 330 | tail -1)
CEILING_DRAIN=$(jq -r '.drain_msgs_per_s' <<<"$CEILING")

echo "writer alone: flush methods x flush sizes ..." >&2
WRITER="[]"
for method in copy unnest; do
    for batch in 20 100 1000; do
        rows=$((batch * 100)); [ "$rows" -gt 20000 ] && rows=20000
        r=$("$BUILD/bench/bench_consumer_writer" --database-url "$DATABASE_URL" --method "$method" --batch "$batch" --rows "$rows")
        WRITER=$(jq -c --argjson r "$r" '. + [$r]' <<<"$WRITER")
    done
done
sql "TRUNCATE messages, user_activity"

run_consumer() { # method -> JSON
    local method=$1 log="$OUT/consumer-$1.log" admin t0 t1 n=0
    sql "TRUNCATE messages, user_activity"
    "$BUILD/bench/bench_consumer_fill" --messages "$MESSAGES" --rooms 20 --copy-file "$OUT/consumer-rows.copy" >/dev/null
    local fq0 fq1
    fq0=$(awk '{print $14 + $15}' "/proc/$CHATFLOW_FAUXQS_PID/stat")
    t0=$(now)
    CHATFLOW_DB_WRITE_METHOD=$method CHATFLOW_WS_PORT=0 CHATFLOW_ADMIN_PORT=0 CHATFLOW_WS_BIND=127.0.0.1 \
        CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_RECEIVE_WAIT_S=1 CHATFLOW_QUEUE_DEPTH_INTERVAL_S=0 \
        "$BUILD/chatflow-consumer" >"$log" 2>&1 &
    CONSUMER_PID=$!
    while [ "$n" -lt "$MESSAGES" ]; do
        sleep 0.1
        n=$(sql "select count(*) from messages")
        kill -0 "$CONSUMER_PID" 2>/dev/null || { echo "consumer died: $log" >&2; exit 1; }
    done
    t1=$(now)
    local ticks
    ticks=$(awk '{print $14 + $15}' "/proc/$CONSUMER_PID/stat")
    fq1=$(awk '{print $14 + $15}' "/proc/$CHATFLOW_FAUXQS_PID/stat")
    admin=$(sed -n 's/.*; admin on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
    local metrics
    metrics=$(curl -sf "http://127.0.0.1:$admin/metrics")
    kill -TERM "$CONSUMER_PID"; wait "$CONSUMER_PID" || true; CONSUMER_PID=
    local flushes rows_sum flush_sum
    flushes=$(awk '/^chatflow_db_batch_size_count/ {print $2}' <<<"$metrics")
    rows_sum=$(awk '/^chatflow_db_batch_size_sum/ {print $2}' <<<"$metrics")
    flush_sum=$(awk '/^chatflow_db_flush_duration_seconds_sum/ {print $2}' <<<"$metrics")
    local rooms
    rooms=$(sql "select min(r), max(r) from (select count(*) / extract(epoch from max(created_at) - to_timestamp($t0)) r
                 from messages group by room_id) x" | tr '|' ' ')
    jq -cn --arg m "$method" --arg n "$MESSAGES" --arg s "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
        --arg f "$flushes" --arg rs "$rows_sum" --arg fs "$flush_sum" --arg rooms "$rooms" \
        --arg cpu "$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$MESSAGES" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')" \
        --arg fq "$(awk -v t=$((fq1 - fq0)) -v hz="$(getconf CLK_TCK)" -v n="$MESSAGES" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')" \
        '{method: $m, cpu_us_per_message: ($cpu|tonumber), fauxqs_cpu_us_per_message: ($fq|tonumber), messages: ($n|tonumber), seconds: ($s|tonumber), msgs_per_s: (($n|tonumber) / ($s|tonumber)),
          flushes: ($f|tonumber), mean_flush_rows: (($rs|tonumber) / ($f|tonumber)),
          mean_flush_ms: (($fs|tonumber) * 1000 / ($f|tonumber)),
          room_min_msgs_per_s: ($rooms|split(" ")[0]|tonumber), room_max_msgs_per_s: ($rooms|split(" ")[1]|tonumber)}'
}

# The spill path (spill.h) next to the normal path: rate while the database refuses writes, then
# the drainer's catch-up rate once it takes them again.
run_spill() {
    local log="$OUT/consumer-spill.log" admin t0 t1 t2 spilled=0 n=0 db
    sql "TRUNCATE messages, user_activity"
    "$BUILD/bench/bench_consumer_fill" --messages "$MESSAGES" --rooms 20 --copy-file /dev/null >/dev/null
    db=$(sql "select current_database()")
    sql "ALTER DATABASE \"$db\" SET default_transaction_read_only = on"
    t0=$(now)
    CHATFLOW_WS_PORT=0 CHATFLOW_ADMIN_PORT=0 CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 \
        CHATFLOW_RECEIVE_WAIT_S=1 CHATFLOW_QUEUE_DEPTH_INTERVAL_S=0 "$BUILD/chatflow-consumer" >"$log" 2>&1 &
    CONSUMER_PID=$!
    until admin=$(sed -n 's/.*; admin on [0-9.]*:\([0-9]*\).*/\1/p' "$log") && [ -n "$admin" ]; do
        sleep 0.05
        kill -0 "$CONSUMER_PID" 2>/dev/null || { echo "consumer died: $log" >&2; exit 1; }
    done
    metric() { curl -sf "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m {print int($2)}'; }
    while [ "${spilled:-0}" -lt "$MESSAGES" ]; do
        sleep 0.1
        spilled=$(metric chatflow_spill_messages_total)
        kill -0 "$CONSUMER_PID" 2>/dev/null || { echo "consumer died: $log" >&2; exit 1; }
    done
    t1=$(now)
    # A session option outranks the database's setting: this session may write the reset.
    PGOPTIONS="-c default_transaction_read_only=off" sql "ALTER DATABASE \"$db\" RESET default_transaction_read_only"
    while [ "$n" -lt "$MESSAGES" ]; do
        sleep 0.1
        n=$(sql "select count(*) from messages")
        kill -0 "$CONSUMER_PID" 2>/dev/null || { echo "consumer died: $log" >&2; exit 1; }
    done
    t2=$(now)
    kill -TERM "$CONSUMER_PID"; wait "$CONSUMER_PID" || true; CONSUMER_PID=
    jq -cn --arg n "$MESSAGES" --arg s1 "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
        --arg s2 "$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b - a}')" \
        '{messages: ($n|tonumber), spill_seconds: ($s1|tonumber), spill_msgs_per_s: (($n|tonumber) / ($s1|tonumber)),
          drain_seconds: ($s2|tonumber), drain_msgs_per_s: (($n|tonumber) / ($s2|tonumber))}'
}

RUNS="[]"
for method in $METHODS; do
    echo "consumer ($method): $MESSAGES queued messages over 20 rooms ..." >&2
    RUNS=$(jq -c --argjson r "$(run_consumer "$method")" '. + [$r]' <<<"$RUNS")
done

echo "spill path: $MESSAGES queued messages, database read-only, then writable ..." >&2
SPILL=$(run_spill)

echo "plain COPY of the same rows ..." >&2
sql "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE messages INCLUDING ALL)"
c0=$(now)
psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy bench_copy (message_id, room_id, user_id, username, message_text, message_type, server_id, client_ip, sequence_number, client_timestamp, received_at) from '$OUT/consumer-rows.copy'"
c1=$(now)
COPY_RATE=$(awk -v n="$MESSAGES" -v a="$c0" -v b="$c1" 'BEGIN {printf "%.0f", n / (b - a)}')
sql "DROP TABLE bench_copy"

printf '\n%-52s %s\n' "metric (load average at start: $LOAD)" "value"
printf '%-52s %.0f msg/s\n' "ceiling: bare receive+delete, 20 rooms" "$CEILING_DRAIN"
printf '%-52s %s us\n' "  its CPU per message (the consumer's baseline)" "$(jq -r '.drain_cpu_us_per_msg' <<<"$CEILING")"
printf '%-52s %s rows/s\n' "plain COPY of the same rows (same indexes)" "$COPY_RATE"
jq -r --arg ceil "$CEILING_DRAIN" --arg copy "$COPY_RATE" '.[] |
    "consumer (\(.method)): drain = persist rate          \(.msgs_per_s|floor) msg/s",
    "  ratio to receive+delete ceiling                  \(.msgs_per_s / ($ceil|tonumber) * 100 | floor / 100)",
    "  ratio to plain COPY                              \(.msgs_per_s / ($copy|tonumber) * 1000 | floor / 1000)",
    "  per room min / max                               \(.room_min_msgs_per_s|floor) / \(.room_max_msgs_per_s|floor) msg/s",
    "  flushes, mean rows per flush, mean flush time    \(.flushes), \(.mean_flush_rows * 10 | floor / 10), \(.mean_flush_ms * 10 | floor / 10) ms",
    "  CPU per message: consumer / fauxqs               \(.cpu_us_per_message) / \(.fauxqs_cpu_us_per_message) us"' <<<"$RUNS"
jq -r --argjson c "$(jq '.[0].msgs_per_s' <<<"$RUNS")" '
    "spill path: database read-only, moved to the spill queue  \(.spill_msgs_per_s|floor) msg/s (ratio to the normal drain \(.spill_msgs_per_s / $c * 100 | floor / 100))",
    "  then writable again: drainer catch-up                \(.drain_msgs_per_s|floor) msg/s (ratio \(.drain_msgs_per_s / $c * 100 | floor / 100))"' <<<"$SPILL"
jq -r '.[] | "writer alone (\(.method), flush of \(.batch))                 \(.rows_per_s) rows/s"' <<<"$WRITER"
jq -cn --argjson ceiling "$CEILING" --argjson runs "$RUNS" --argjson writer "$WRITER" --arg copy "$COPY_RATE" --arg load "$LOAD" \
    --argjson spill "$SPILL" \
    '{load_average: $load, ceiling: $ceiling, plain_copy_rows_per_s: ($copy|tonumber), consumer: $runs, writer_alone: $writer,
      spill: $spill}' |
    tee "$OUT/consumer.json"
