#!/usr/bin/env bash
# test/bench/queries.sh — the consumer's four core queries (protocol.md §5, consumer/api.c) on 1M rows,
# each next to the same query without its indexes, measured in the same run. A benchmark, not a
# test: it asserts nothing about speed.
#
#   BUILD=build test/bench/queries.sh [--rows N] [--repeat K]
#
# Steps (all on 127.0.0.1, ports picked free at run time, everything stopped by PID on exit):
#   1. a private stack (PostgreSQL + fauxqs, $BUILD/test-stacks/bench-queries), schema migrated;
#   2. N rows (1000000) in messages, generated in SQL (generate_series, seeded random()): 20 rooms,
#      userId uniform 1..100000, 90/5/5 % TEXT/JOIN/LEAVE, client timestamps evenly over 2 hours;
#      user_activity aggregated from them; VACUUM ANALYZE (what autovacuum would have done);
#   3. two consumers on the same database: one as configured, one started with
#      PGOPTIONS='-c enable_indexscan=off -c enable_bitmapscan=off -c enable_indexonlyscan=off'
#      (the baseline: the same statements, planned without their indexes); only their APIs are
#      used: the second stands by for the shards (their leases are the first's), which the API
#      does not mind;
#   4. K times (11), alternating the two, GET /api/metrics/all for two windows — the second hour
#      (half the rows: one 500K-message load test) and 5 minutes of it — without roomId/userId, so
#      the API picks the window's busiest room and most active user, as it does for the load
#      generator; each core query's executionTimeMs (the consumer's own timing of
#      the prepared statement, round trip included) is taken, and the median of the K runs kept;
#   5. search (GET /api/rooms/{id}/search, the pg_trgm index of migration 0006): a selective word
#      (one row in 1,000 is made to mention it) and a common one (one row in 5), in the busiest
#      room, 50 requests each on both consumers (SEARCH_REPEAT), timed by curl: p50 and p99.
# Prints a table and one JSON line (also in $BUILD/bench/queries.json).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
BUILD=${BUILD:-build}
export TEST_NAME=bench-queries TEST_LOGDIR="$ROOT/$BUILD/bench/queries"
# shellcheck source=../lib/common.sh
. test/lib/common.sh

ROWS=1000000
REPEAT=11
usage() { echo "usage: $0 [--rows N] [--repeat K]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
        --rows) ROWS=$2 ;;
        --repeat) REPEAT=$2 ;;
        *) usage ;;
    esac
    shift 2
done
[[ "$ROWS" =~ ^[0-9]+$ && "$REPEAT" =~ ^[0-9]+$ && "$ROWS" -ge 1000 && "$REPEAT" -ge 1 ]] || usage
for b in chatflow-consumer chatflow-sqs; do
    [ -x "$CHATFLOW_BIN/$b" ] || { echo "missing $CHATFLOW_BIN/$b: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }
OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
say() { echo "queries: $*" >&2; }
die() { echo "queries: FAILED: $*" >&2; exit 1; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

say "private stack (PostgreSQL + fauxqs), logs in $TEST_LOGDIR"
private_stack_up bench-queries || die "the private stack did not start"
on_exit "private_stack down --purge >/dev/null 2>&1"
psql -XAtq -c "drop schema public cascade; create schema public" >/dev/null 2>&1
CHATFLOW_MIGRATIONS_DIR="$ROOT/db/migrations" "$CHATFLOW_BIN/chatflow-consumer" --migrate \
    >"$TEST_LOGDIR/migrate.log" 2>&1 || die "migrations failed (see $TEST_LOGDIR/migrate.log)"

# Client timestamps evenly over 2 hours from T0, one row every 7.2 s / (N / 1M).
T0='2026-01-01 00:00:00+00'
STEP_US=$((7200000000 / ROWS))
say "generating $ROWS rows in messages and their user_activity"
g0=$(date +%s.%N)
psql -XAtq -v ON_ERROR_STOP=1 >/dev/null <<SQL || die "row generation failed"
select setseed(0.42);
insert into messages (message_id, room_id, user_id, username, message_text, message_type, server_id,
                      client_ip, sequence_number, client_timestamp, received_at, created_at)
select gen_random_uuid(), r.room, r.usr, 'user' || r.usr,
       (array['Hello everyone!', 'How is it going?', 'LGTM', 'Merged, thanks', 'Pizza is here'])[1 + i % 5],
       case when r.t < 0.90 then 'TEXT' when r.t < 0.95 then 'JOIN' else 'LEAVE' end, 'bench', '127.0.0.1', i,
       r.ts, r.ts + interval '5 ms', r.ts + interval '10 ms'
from generate_series(1, $ROWS) i
cross join lateral (select 1 + floor(random() * 20)::int as room, 1 + floor(random() * 100000)::int as usr,
                           random() as t, timestamptz '$T0' + (i - 1)::bigint * $STEP_US * interval '1 us' as ts) r;
-- one row in 1,000 mentions a rare word: a selective search (GET /api/rooms/{id}/search)
update messages set message_text = 'the deploy runbook is on the wiki, page ' || (sequence_number % 97)
where sequence_number % 1000 = 0;
insert into user_activity (user_id, room_id, first_activity, last_activity, message_count)
select user_id, room_id, min(client_timestamp), max(client_timestamp), count(*) from messages group by 1, 2;
SQL
psql -XAtq -v ON_ERROR_STOP=1 -c "vacuum analyze messages" -c "vacuum analyze user_activity" >/dev/null
g1=$(date +%s.%N)
GEN_S=$(awk -v a="$g0" -v b="$g1" 'BEGIN {printf "%.1f", b - a}')
STATS=$(psql -XAtq -F ' ' -c "select (select count(*) from messages), (select count(*) from user_activity),
    pg_total_relation_size('messages')")
read -r N_MSG N_ACT MSG_BYTES <<<"$STATS"
[ "$N_MSG" -eq "$ROWS" ] || die "messages holds $N_MSG rows, not $ROWS"

# The windows (epoch ms) and the room and user the queries are asked about.
T0_MS=$(date -d "$T0" +%s%3N)
W1_START=$((T0_MS + 3600000)); W1_END=$((T0_MS + 7200000))
W2_START=$((T0_MS + 5400000)); W2_END=$((W2_START + 300000))

# start_consumer NAME [VAR=value...]: a consumer serving the API on free loopback ports (started
# with start_bg, so stopped by PID on exit); its admin port is left in ADMIN_PORT.
start_consumer() {
    local name=$1 ws
    shift
    ws=$(free_port); ADMIN_PORT=$(free_port)
    start_bg "$name" env CHATFLOW_WS_PORT="$ws" CHATFLOW_ADMIN_PORT="$ADMIN_PORT" CHATFLOW_WS_BIND=127.0.0.1 \
        CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_QUEUE_DEPTH_INTERVAL_S=0 "$@" "$CHATFLOW_BIN/chatflow-consumer"
    wait_http "http://127.0.0.1:$ADMIN_PORT/health/live" 60 || die "consumer $name did not start (see $(bg_log "$name"))"
}
say "starting two consumers: indexed, and planned without indexes (PGOPTIONS)"
start_consumer indexed
IDX_PORT=$ADMIN_PORT
start_consumer noindex PGOPTIONS='-c enable_indexscan=off -c enable_bitmapscan=off -c enable_indexonlyscan=off'
NOIDX_PORT=$ADMIN_PORT

# api PORT START END: the four core queries' {name: [ms, resultCount]} and the room and user the
# API picked, as one JSON line.
api() {
    curl -sf --max-time 120 "http://127.0.0.1:$1/api/metrics/all?testStartTime=$2&testEndTime=$3" |
        jq -c '.coreQueries | {room: .roomMessages.roomId, user: .userHistory.userId,
                               q: with_entries(.value = [.value.executionTimeMs, .value.resultCount])}'
}

RUNS="$TEST_LOGDIR/runs.jsonl"
: >"$RUNS"
say "$REPEAT rounds of GET /api/metrics/all, 2 windows x 2 consumers"
for k in $(seq 1 "$REPEAT"); do
    for w in test5min:$W2_START:$W2_END testhour:$W1_START:$W1_END; do
        IFS=: read -r wname ws we <<<"$w"
        for c in indexed:$IDX_PORT noindex:$NOIDX_PORT; do
            r=$(api "${c#*:}" "$ws" "$we") || die "GET /api/metrics/all on the ${c%%:*} consumer failed"
            jq -c --arg w "$wname" --arg c "${c%%:*}" --arg k "$k" '{round: ($k|tonumber), window: $w, consumer: $c} + .' \
                <<<"$r" >>"$RUNS"
        done
    done
done

# Search over message text (migration 0006's pg_trgm index), timed through the API (round trip
# included) on both consumers: a selective word (1 row in 1,000) and a common one (1 in 5), in the
# room the core queries picked; SEARCH_REPEAT requests each, p50 and p99 (nearest rank).
SEARCH_REPEAT=${SEARCH_REPEAT:-50}
ROOM=$(head -1 "$RUNS" | jq -r .room)
say "search: $SEARCH_REPEAT requests per query and consumer, room $ROOM"
search_ms() {
    curl -sf --max-time 60 -o /dev/null -w '%{time_total}\n' \
        "http://127.0.0.1:$1/api/rooms/$ROOM/search?q=$2&limit=20" | awk '{printf "%.3f\n", $1 * 1000}'
}
SEARCH='[]'
for q in runbook pizza; do
    matches=$(psql -XAtq -c "select count(*) from messages where room_id = '$ROOM' and message_text ilike '%$q%'")
    for c in indexed:$IDX_PORT noindex:$NOIDX_PORT; do
        times=$(for _ in $(seq 1 "$SEARCH_REPEAT"); do search_ms "${c#*:}" "$q" || die "search on ${c%%:*} failed"; done |
            jq -sc 'sort')
        SEARCH=$(jq -c --arg q "$q" --arg c "${c%%:*}" --arg m "$matches" --argjson t "$times" \
            '. + [{query: $q, consumer: $c, matches: ($m|tonumber), requests: ($t | length),
                   p50_ms: $t[(($t | length) * 0.5 | ceil) - 1], p99_ms: $t[(($t | length) * 0.99 | ceil) - 1]}]' <<<"$SEARCH")
    done
done

# Median of each (window, query, consumer); result counts must agree between the two consumers.
RESULT=$(jq -sc --arg rows "$N_MSG" --arg act "$N_ACT" --arg bytes "$MSG_BYTES" --arg gen "$GEN_S" \
    --arg repeat "$REPEAT" --arg load "$LOAD" --arg room "$ROOM" --argjson search "$SEARCH" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    . as $all
    | [ ("test5min", "testhour") as $w | ("roomMessages", "userHistory", "activeUsers", "userRooms") as $q
        | ($all | map(select(.window == $w))) as $runs
        | { window: $w, query: $q, room_id: $runs[0].room, user_id: $runs[0].user,
            indexed_ms: ($runs | map(select(.consumer == "indexed") | .q[$q][0]) | median),
            noindex_ms: ($runs | map(select(.consumer == "noindex") | .q[$q][0]) | median),
            result_count: ($runs | map(select(.consumer == "indexed") | .q[$q][1]) | .[0]),
            counts_agree: ($runs | map([.q[$q][1], .room, .user]) | unique | length == 1) }
        | .speedup = (if .indexed_ms > 0 then .noindex_ms / .indexed_ms else null end) ]
    | {load_average: $load, rows: ($rows|tonumber), user_activity_rows: ($act|tonumber),
       messages_total_bytes: ($bytes|tonumber), generate_seconds: ($gen|tonumber), repeat: ($repeat|tonumber),
       queries: .,
       search: {room_id: $room, runs: ($search | group_by(.query) | map({query: .[0].query, matches: .[0].matches,
                requests: .[0].requests,
                indexed: (map(select(.consumer == "indexed"))[0] | {p50_ms, p99_ms}),
                noindex: (map(select(.consumer == "noindex"))[0] | {p50_ms, p99_ms})}))}}' "$RUNS")
jq -e '[.queries[].counts_agree] | all' >/dev/null <<<"$RESULT" ||
    die "the runs disagree on a result count, room or user (see $RUNS)"

printf '\n%s rows in messages, %s in user_activity (%s MB with indexes), generated in %s s; median of %s; load %s\n' \
    "$N_MSG" "$N_ACT" "$((MSG_BYTES / 1048576))" "$GEN_S" "$REPEAT" "$LOAD"
printf '%-10s %-14s %-13s %9s %12s %13s %9s\n' window query "room / user" results "indexed ms" "no-index ms" speedup
jq -r '.queries[] | [.window, .query, "\(.room_id) / \(.user_id)", .result_count, (.indexed_ms * 100 | round / 100),
    (.noindex_ms * 100 | round / 100), ((.speedup // 0) * 10 | round / 10)] | @tsv' <<<"$RESULT" |
    while IFS=$'\t' read -r w q ru n a b s; do
        printf '%-10s %-14s %-13s %9s %12s %13s %8sx\n' "$w" "$q" "$ru" "$n" "$a" "$b" "$s"
    done
jq -r '.search.room_id as $r | .search.runs[] | "search q=\(.query) in room \($r): \(.matches) matches; indexed p50 / p99 \(.indexed.p50_ms) / \(.indexed.p99_ms) ms; without indexes \(.noindex.p50_ms) / \(.noindex.p99_ms) ms"' <<<"$RESULT"
echo "$RESULT" | tee "$OUT/queries.json"
