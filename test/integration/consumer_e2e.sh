#!/usr/bin/env bash
# consumer_e2e — the real chain: chatflow-loadgen -> chatflow-producer -> fauxqs -> chatflow-consumer
# -> PostgreSQL, on a private stack. Every message the producer acked is stored exactly once,
# user_activity agrees with the table, the queues drain, the metrics API answers for the run's
# window, and the consumer stops cleanly on SIGTERM. (The loadgen's broadcast matching is reported
# as a note: subscriber delivery has tests of its own.)
# test-passes: asan tsan
set -u
. "$(dirname "$0")/../lib/common.sh"
. "$ROOT/test/lib/services.sh"

MESSAGES=${CONSUMER_E2E_MESSAGES:-3000}

for b in chatflow-producer chatflow-consumer chatflow-loadgen; do
    [ -x "$CHATFLOW_BIN/$b" ] || { tap_fail "$b is built"; finish; }
done
private_stack_up consumer_e2e || { tap_fail "private stack started"; finish; }
on_exit "private_stack down --purge >/dev/null 2>&1"
# The private stack's data may survive an earlier run that was interrupted: start empty.
psql -XAtq -c "drop schema public cascade; create schema public" >/dev/null 2>&1
services_start -- CHATFLOW_RECEIVE_WAIT_S=2 || { tap_fail "producer and consumer started"; finish; }
services_wait_ready 60 || { tap_fail "services ready"; finish; }
tap_ok "private stack, producer and consumer up"

start_ms=$(date +%s%3N)
"$CHATFLOW_BIN/chatflow-loadgen" --port "$PRODUCER_WS_PORT" --consumer-port "$CONSUMER_WS_PORT" \
    --consumer-admin "http://127.0.0.1:$CONSUMER_ADMIN_PORT" --messages "$MESSAGES" --connections 20 \
    --warmup-connections 0 --subscribe --drain-timeout 20 --quiet --out-dir "$TEST_LOGDIR/loadgen" \
    --json "$TEST_LOGDIR/report.json" --acked-ids "$TEST_LOGDIR/acked-ids.txt" >"$TEST_LOGDIR/loadgen.log" 2>&1
rc=$?
end_ms=$(date +%s%3N)
acked=$(wc -l <"$TEST_LOGDIR/acked-ids.txt" 2>/dev/null || echo 0)
tap_is "$acked" "$MESSAGES" "the producer acked all $MESSAGES messages (loadgen exit $rc)"

rows=0
for _ in $(seq 1 120); do
    rows=$(psql -XAtq -c "select count(*) from messages" 2>/dev/null || echo 0)
    [ "$rows" -ge "$acked" ] && break
    sleep 0.5
done
result=$(psql -XAtq -v ON_ERROR_STOP=1 <<SQL
create temp table acked(message_id uuid primary key);
\copy acked from '$TEST_LOGDIR/acked-ids.txt'
select (select count(*) from acked a where not exists (select 1 from messages m where m.message_id = a.message_id))
    || ' ' || (select count(*) from messages m where not exists (select 1 from acked a where a.message_id = m.message_id))
    || ' ' || (select count(*) from messages)
    || ' ' || (select coalesce(sum(message_count), 0) from user_activity);
SQL
)
read -r missing extra total activity <<<"$result"
tap_is "${missing:-?}" 0 "every acked messageId is in messages"
tap_is "${extra:-?}" 0 "no row that was not acked"
tap_is "${total:-?}" "$acked" "one row per acked message"
tap_is "${activity:-?}" "$acked" "user_activity counts each message once"
tap_is "$(psql -XAtq -c "select count(*) from messages where message_type not in ('TEXT','JOIN','LEAVE') or username !~ '^user[0-9]+$' or sequence_number is null or room_id !~ '^[A-Za-z0-9_-]{1,64}$'")" 0 \
    "stored rows carry valid types, usernames, room ids and sequence numbers"

depth=$("$CHATFLOW_BIN/chatflow-sqs" stats 2>/dev/null | awk 'NR>1 && $1 ~ /^chatflow-room-[0-9]+\.fifo$/ {s += $2 + $3} END {print s + 0}')
tap_is "$depth" 0 "the room queues are drained"

code=$(curl -s -o "$TEST_LOGDIR/api.json" -w '%{http_code}' \
    "http://127.0.0.1:$CONSUMER_ADMIN_PORT/api/metrics/all?testStartTime=$((start_ms - 60000))&testEndTime=$((end_ms + 60000))")
tap_is "$code" 200 "GET /api/metrics/all for the run's window answers 200"
count=$(jq -r '.coreQueries.activeUsers.resultCount' "$TEST_LOGDIR/api.json" 2>/dev/null ||
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["coreQueries"]["activeUsers"]["resultCount"])' "$TEST_LOGDIR/api.json")
want=$(psql -XAtq -c "select count(distinct user_id) from messages")
tap_is "$count" "$want" "its active-user count matches the table"
# Rooms are string ids (room.h): the busiest room comes back as a JSON string, and its count is
# that of the rows stored under exactly that id.
room=$(jq -r '.coreQueries.roomMessages.roomId | if type == "string" then . else "not a string: \(.)" end' "$TEST_LOGDIR/api.json" 2>/dev/null)
room_count=$(jq -r '.coreQueries.roomMessages.resultCount' "$TEST_LOGDIR/api.json" 2>/dev/null)
want=$(psql -XAtq -v room="$room" <<<"select count(*) from messages where room_id = :'room'" 2>/dev/null)
tap_is "$room_count ($room)" "$want ($room)" "its busiest room is a string id whose count matches the table"

note "loadgen: $(grep -m1 -E 'broadcasts:' "$TEST_LOGDIR/loadgen.log" | sed 's/^ *//')"

stop_bg consumer TERM 30
tap_is "$?" 0 "SIGTERM: the consumer exits 0"
finish
