#!/usr/bin/env bash
# loadgen_e2e — chatflow-loadgen against the real stack (producer, fauxqs, consumer, PostgreSQL on
# a private stack), a few thousand messages with subscribers on every room: the run is clean (every
# message acked, every broadcast received once and in order), PostgreSQL holds exactly the acked
# messages, and every part of the report is there and agrees with itself — the text report, the
# JSON, the per-message CSV (one row per message), the series (at least 30 buckets), the chart, the consumer's
# /api/metrics/all for the window, progress on stderr. Also: usage on bad flags, and a quick clear
# error against a producer that is not there. Then a run over rooms named by string ids
# (--room-ids, several on one queue shard): clean, reported by id, stored under those ids; and
# clear errors for ids that are not room ids. Then identity tokens (protocol.md §8): the services
# restarted with CHATFLOW_AUTH=on (HS256 secret, issuer, audience), --tokens --subscribe is clean
# with one verified user per sender connection (stored as that user; resends of messages over
# the producer's per-user rate limit go out on their own user's connection and are stored once),
# a run without --tokens or with another secret fails at once naming the refused handshake (HTTP
# 401), --tokens without a usable secret exits 2, and no token (nor the secret) shows in the load
# generator's output or the services' logs. Nothing here is about speed.
# test-passes: asan
set -u
. "$(dirname "$0")/../lib/common.sh"
. "$ROOT/test/lib/services.sh"

MESSAGES=${LOADGEN_E2E_MESSAGES:-3000}
WARMUP_CONNS=20
WARMUP_PER_CONN=25
LG="$CHATFLOW_BIN/chatflow-loadgen"
for b in chatflow-producer chatflow-consumer chatflow-loadgen; do
    [ -x "$CHATFLOW_BIN/$b" ] || { tap_fail "$b is built"; finish; }
done

# ---- flags and a stack that is down (no server needed)
"$LG" --messages abc >"$TEST_LOGDIR/badflag.out" 2>"$TEST_LOGDIR/badflag.err"
tap_is "$?" 2 "a bad flag value exits 2"
tap_check "it names the flag and prints the usage" \
    grep -q -e "bad value 'abc' for --messages" "$TEST_LOGDIR/badflag.err"
tap_check "the usage lists the flags" grep -q -e '--subscribe' "$TEST_LOGDIR/badflag.err"
"$LG" --no-such-flag >/dev/null 2>"$TEST_LOGDIR/unknown.err"
tap_is "$?" 2 "an unknown flag exits 2"
"$LG" --help >"$TEST_LOGDIR/help.out" 2>&1
tap_is "$?" 0 "--help exits 0"
tap_check "--help lists --rate" grep -q -e '--rate N' "$TEST_LOGDIR/help.out"
tap_check "--help lists --room-ids" grep -q -e '--room-ids ID,ID' "$TEST_LOGDIR/help.out"
"$LG" --room-ids team-alpha,a.b --messages 10 >/dev/null 2>"$TEST_LOGDIR/badroom.err"
tap_is "$?" 2 "a room id that is not one exits 2"
tap_check "it names the bad id and the rule" \
    grep -q "bad value for --room-ids: room id 2, 'a.b': roomId: must be 1-64 characters" "$TEST_LOGDIR/badroom.err"
"$LG" --room-ids "team-alpha,,7" >/dev/null 2>"$TEST_LOGDIR/emptyroom.err"
tap_is "$?" 2 "an empty room id in the list exits 2"
"$LG" --room-ids "$(printf 'r%.0s' $(seq 65))" >/dev/null 2>&1
tap_is "$?" 2 "a room id of 65 characters exits 2"
"$LG" --room-ids 7,team-alpha,7 >/dev/null 2>"$TEST_LOGDIR/duproom.err"
tap_is "$?" 2 "a room id given twice exits 2"
tap_check "it says which" grep -q "room id '7' is given twice" "$TEST_LOGDIR/duproom.err"
"$LG" --rooms 3 --room-ids a,b >/dev/null 2>"$TEST_LOGDIR/both.err"
tap_is "$?" 2 "--rooms with --room-ids exits 2"
tap_check "--help lists --tokens" grep -q -e '--tokens ' "$TEST_LOGDIR/help.out"
env -u CHATFLOW_AUTH_HS256_SECRET "$LG" --tokens --messages 10 >/dev/null 2>"$TEST_LOGDIR/nosecret.err"
tap_is "$?" 2 "--tokens without CHATFLOW_AUTH_HS256_SECRET exits 2"
tap_check "it names the variable" grep -q "needs CHATFLOW_AUTH_HS256_SECRET" "$TEST_LOGDIR/nosecret.err"
CHATFLOW_AUTH_HS256_SECRET=short-secret-0123 "$LG" --tokens --messages 10 >/dev/null 2>"$TEST_LOGDIR/shortsecret.err"
tap_is "$?" 2 "--tokens with a secret under 32 bytes exits 2"
tap_check "it says how long it must be" grep -q "is 17 bytes; --tokens needs at least 32" "$TEST_LOGDIR/shortsecret.err"
tap_is "$(grep -c 'short-secret-0123' "$TEST_LOGDIR/shortsecret.err")" 0 "and does not print the secret"

down_port=$(free_port)
"$LG" --port "$down_port" --messages 100 --warmup-connections 0 --out-dir "$TEST_LOGDIR/down" \
    >/dev/null 2>"$TEST_LOGDIR/down.err"
tap_is "$?" 1 "against a producer that is not running: exit 1"
tap_check "with an error naming the address" \
    grep -q "sender connections to 127.0.0.1:$down_port failed" "$TEST_LOGDIR/down.err"

# ---- the real stack
private_stack_up loadgen_e2e || { tap_fail "private stack started"; finish; }
on_exit "private_stack down --purge >/dev/null 2>&1"
psql -XAtq -c "drop schema public cascade; create schema public" >/dev/null 2>&1
services_start -- CHATFLOW_RECEIVE_WAIT_S=2 || { tap_fail "producer and consumer started"; finish; }
services_wait_ready 60 || { tap_fail "services ready"; finish; }
tap_ok "private stack, producer and consumer up"

OUTD="$TEST_LOGDIR/out"
R="$TEST_LOGDIR/report.json"
# Paced (--rate) so the pacing path runs too; the rate is well within what the stack sustains.
"$LG" --port "$PRODUCER_WS_PORT" --consumer-port "$CONSUMER_WS_PORT" \
    --consumer-admin "http://127.0.0.1:$CONSUMER_ADMIN_PORT" --messages "$MESSAGES" --connections 20 \
    --warmup-connections "$WARMUP_CONNS" --warmup-messages "$WARMUP_PER_CONN" --rate 1500 --subscribe \
    --drain-timeout 60 --out-dir "$OUTD" --json "$R" --acked-ids "$TEST_LOGDIR/acked-ids.txt" \
    >"$TEST_LOGDIR/report.txt" 2>"$TEST_LOGDIR/progress.txt"
tap_is "$?" 0 "the load generator exits 0 (clean run)"
[ -s "$R" ] || { tap_fail "the JSON report was written"; finish; }

j() { jq -r "$1" "$R"; }
tap_is "$(j .sent)" "$MESSAGES" "report: sent = $MESSAGES"
tap_is "$(j .acked)" "$MESSAGES" "report: acked = $MESSAGES"
tap_is "$(j '"\(.failed) \(.protocolErrors)"')" "0 0" "report: none failed, no protocol errors"
tap_is "$(j '[.retries, .reconnections] | map(type) | join(" ")')" "number number" "report: retries and reconnections"
tap_is "$(j '"\(.connections) \(.window) \(.rate)"')" "20 20 1500" "report: connections, window, rate"
tap_is "$(j '.wallTimeSeconds > 0 and .throughputPerSecond > 0')" true "report: wall time and throughput"
tap_is "$(j '(.throughputPerSecond * .wallTimeSeconds - .acked) | fabs < 1')" true "report: throughput = acked / wall time"
for lat in ackLatency endToEndLatency; do
    tap_is "$(j ".$lat | [.count, .meanMs, .p50Ms, .p95Ms, .p99Ms, .p999Ms, .maxMs] | map(type == \"number\") | all")" true \
        "report: $lat has count, mean, p50, p95, p99, p99.9, max"
    tap_is "$(j ".$lat | .count == $MESSAGES and .p50Ms > 0 and .p50Ms <= .p95Ms and .p95Ms <= .p99Ms and .p99Ms <= .p999Ms and .p999Ms <= .maxMs and .meanMs <= .maxMs")" \
        true "report: $lat covers every message and its percentiles are ordered"
done
tap_is "$(j '.broadcasts | "\(.expected) \(.received) \(.lost) \(.duplicated) \(.outOfOrder)"')" \
    "$MESSAGES $MESSAGES 0 0 0" "broadcasts: all expected received; zero lost, duplicated, out of order"
# Warm-up messages still on their way when the main phase subscribes arrive as "unknown".
tap_is "$(j ".broadcasts.unknown <= $((WARMUP_CONNS * WARMUP_PER_CONN))")" true \
    "broadcasts of other messages: at most the warm-up's"
tap_is "$(j '.endToEnd | "\(.broadcastMessages) \(.wallTimeSeconds > 0) \(.throughputPerSecond > 0)"')" "$MESSAGES true true" \
    "report: end-to-end throughput over every broadcast message"
tap_is "$(j '.messageTypes | .TEXT + .JOIN + .LEAVE')" "$MESSAGES" "report: the message-type distribution adds up"
tap_is "$(j '.messageTypes | .TEXT > .JOIN and .TEXT > .LEAVE and .JOIN > 0 and .LEAVE > 0')" true \
    "report: TEXT dominates, JOIN and LEAVE present"
tap_is "$(j '.throughputPerRoom | keys | length')" 20 "report: throughput for each of the 20 rooms"
tap_is "$(j '(.throughputPerRoom | add) * .wallTimeSeconds - .acked | fabs < 1')" true "report: per-room throughput adds up"
tap_is "$(j '[.throughputSeries[].acked] | add')" "$MESSAGES" "report: the series counts every ack"
tap_is "$(j '[.throughputSeries[].broadcast] | add')" "$MESSAGES" \
    "report: the series counts every first broadcast (the drain is drawn, not only the sends)"
tap_is "$(j '.seriesBucketMs as $b | .throughputSeries | length >= 30 and
             (map(.second * 1000 | round) == [range(0; length) | . * $b])')" true \
    "report: at least 30 buckets, evenly spaced, whatever the run's length"
tap_is "$(j '[.throughputSeries[] | select(.broadcast > 0) | .e2eP50Ms <= .e2eP99Ms and .e2eP50Ms > 0] | all')" true \
    "report: per-bucket end-to-end latency where there were broadcasts"
tap_is "$(j '.consumerMetrics.coreQueries | keys | join(" ")')" "activeUsers roomMessages userHistory userRooms" \
    "report: the consumer's /api/metrics/all core queries for the window"
tap_is "$(j '.consumerMetrics.coreQueries.activeUsers.resultCount > 0 and (.consumerMetrics.analytics | type) == "object"')" true \
    "report: the consumer's metrics describe the run"

# The per-message CSV: header, one row per message, valid fields.
CSV=$(j .csv)
tap_is "$(head -1 "$CSV")" "timestamp,messageType,latencyMs,status,roomId" "CSV header"
tap_is "$(($(wc -l <"$CSV") - 1))" "$MESSAGES" "CSV: one row per message"
tap_is "$(awk -F, 'NR > 1 && !($1 ~ /^[0-9]+$/ && length($1) == 13 && $2 ~ /^(TEXT|JOIN|LEAVE)$/ && $3 + 0 > 0 && $4 == "SUCCESS" && $5 >= 1 && $5 <= 20)' "$CSV" | wc -l)" 0 \
    "CSV: every row has a timestamp, type, latency, SUCCESS and a room 1-20"
tap_is "$(awk -F, 'NR > 1 {n[$2]++} END {print n["TEXT"] + 0, n["JOIN"] + 0, n["LEAVE"] + 0}' "$CSV")" \
    "$(j '.messageTypes | "\(.TEXT) \(.JOIN) \(.LEAVE)"')" "CSV: types agree with the report"
tap_check "the series file has its header" grep -q '^# second' "$(j .series)"
if command -v gnuplot >/dev/null; then
    tap_is "$(head -c 4 "$(j .chart)" | tail -c 3)" PNG "the throughput chart is a PNG"
else
    note "gnuplot is not installed: chart not checked"
fi

# The text report and the progress lines.
for field in "sent:" "acked:" "failed:" "retries:" "reconnections:" "wall time:" "throughput:" "ack latency" \
    "end-to-end latency" "end to end:" "broadcasts: expected $MESSAGES, received $MESSAGES, lost 0, duplicated 0, out of order 0" \
    "message types:" "throughput per room" "per-message CSV:" "series (" "chart:" "consumer /api/metrics/all"; do
    grep -qF -- "$field" "$TEST_LOGDIR/report.txt" || missing_fields+=" '$field'"
done
tap_is "${missing_fields:-}" "" "the text report shows every field"
tap_check "warm-up reported" grep -q "warm-up: $((WARMUP_CONNS * WARMUP_PER_CONN)) messages on $WARMUP_CONNS connections" "$TEST_LOGDIR/report.txt"
tap_check "progress goes to stderr" grep -q '^loadgen: main phase' "$TEST_LOGDIR/progress.txt"
tap_is "$(grep -c '^loadgen:' "$TEST_LOGDIR/report.txt")" 0 "and not to stdout"

# PostgreSQL holds exactly the acked messages (warm-up and main phase).
acked=$(wc -l <"$TEST_LOGDIR/acked-ids.txt")
tap_is "$acked" "$((MESSAGES + WARMUP_CONNS * WARMUP_PER_CONN))" "acked ids: warm-up + main phase"
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
    || ' ' || (select count(*) from messages);
SQL
)
read -r missing extra total <<<"$result"
tap_is "${missing:-?} ${extra:-?}" "0 0" "every acked id is stored, no row that was not acked"
tap_is "${total:-?}" "$acked" "database row count = acked count"

# ---- rooms named by string ids (--room-ids): some share a queue shard, each keeps its order.
# With the stack's 20 shards (room.h): team-alpha and team-0 share shard 18; lobby-0 shares
# shard 7 with the decimal room 7; "1000" is decimal but above 20, so hashed like a name.
IDS="team-alpha,team-0,7,lobby-0,3f2b8c1e-9a4d-4c7b-8e21-5d6f7a8b9c0d,1000,x_y-z,$(printf 'r%.0s' $(seq 64))"
N_IDS=8
SMSG=800
SR="$TEST_LOGDIR/rooms.json"
"$LG" --port "$PRODUCER_WS_PORT" --consumer-port "$CONSUMER_WS_PORT" \
    --consumer-admin "http://127.0.0.1:$CONSUMER_ADMIN_PORT" --messages "$SMSG" --connections 16 \
    --warmup-connections 0 --room-ids "$IDS" --subscribe --drain-timeout 60 --quiet \
    --out-dir "$TEST_LOGDIR/rooms-out" --json "$SR" --acked-ids "$TEST_LOGDIR/rooms-acked.txt" \
    >"$TEST_LOGDIR/rooms-report.txt" 2>"$TEST_LOGDIR/rooms-progress.txt"
tap_is "$?" 0 "string room ids: the load generator exits 0 (clean run)"
sj() { jq -r "$1" "$SR" 2>/dev/null; }
tap_is "$(sj '.roomIds | join(",")')" "$IDS" "string room ids: the report lists the rooms as given"
tap_is "$(sj '"\(.acked) \(.failed) \(.protocolErrors)"')" "$SMSG 0 0" "string room ids: all acked, none failed"
tap_is "$(sj '.broadcasts | "\(.received) \(.lost) \(.duplicated) \(.outOfOrder) \(.unknown)"')" "$SMSG 0 0 0 0" \
    "string room ids: every broadcast received once, in order, in its room"
tap_is "$(sj '.throughputPerRoom | keys | sort | join(",")')" "$(tr , '\n' <<<"$IDS" | sort | paste -sd,)" \
    "string room ids: throughput keyed by room id"
SCSV=$(sj .csv)
tap_is "$(awk -F, -v ids="$IDS" 'BEGIN { n = split(ids, a, ","); for (i = 1; i <= n; i++) ok[a[i]] = 1 }
    NR > 1 && !($5 in ok)' "$SCSV" | wc -l)" 0 "string room ids: every CSV row names one of the rooms"
tap_is "$(awk -F, 'NR > 1 { seen[$5] = 1 } END { print length(seen) }' "$SCSV")" "$N_IDS" \
    "string room ids: every room got messages"
# By messageId: room "7" also has rows of the first run.
room_rows() { # -> "room_id,count" lines of the rows of this run's acked messages
    psql -XAtq -F, -v ON_ERROR_STOP=1 <<SQL
create temp table rooms_acked(message_id uuid primary key);
\copy rooms_acked from '$TEST_LOGDIR/rooms-acked.txt'
select m.room_id, count(*) from messages m join rooms_acked a using (message_id) group by 1;
SQL
}
tap_is "$(wc -l <"$TEST_LOGDIR/rooms-acked.txt")" "$SMSG" "string room ids: every acked id written"
stored=0
for _ in $(seq 1 120); do
    stored=$(room_rows 2>/dev/null | awk -F, '{ s += $2 } END { print s + 0 }')
    [ "$stored" -ge "$SMSG" ] && break
    sleep 0.5
done
tap_is "$stored" "$SMSG" "string room ids: PostgreSQL holds every acked message"
per_room_csv=$(awk -F, 'NR > 1 { n[$5]++ } END { for (r in n) print r "," n[r] }' "$SCSV" | LC_ALL=C sort)
tap_is "$(room_rows 2>/dev/null | LC_ALL=C sort)" "$per_room_csv" \
    "string room ids: each message stored under the room id it was sent to"

# ---- identity tokens: the same stack, the services again with CHATFLOW_AUTH=on. Exported, so
# the services and the load generator share the secret, issuer and audience (as make demo does).
stop_bg producer
stop_bg consumer
for s in producer consumer; do mv "$(bg_log $s)" "$TEST_LOGDIR/$s-noauth.log"; done
AUTH_SECRET=$(openssl rand -hex 24)
export CHATFLOW_AUTH=on CHATFLOW_AUTH_HS256_SECRET="$AUTH_SECRET" \
    CHATFLOW_AUTH_ISSUER=loadgen-e2e CHATFLOW_AUTH_AUDIENCE=chatflow-e2e
# No page reads the room API here: no origin (a * is refused while CHATFLOW_AUTH is on). The
# per-user rate limit stays on, at 600 a minute (10 a second refill): the retry run below goes
# over it on purpose and should not wait long for its tokens to come back.
ARATE=600
services_start CHATFLOW_RATE_LIMIT_PER_MINUTE=$ARATE -- CHATFLOW_RECEIVE_WAIT_S=2 CHATFLOW_API_ALLOW_ORIGIN= ||
    { tap_fail "services with CHATFLOW_AUTH=on started"; finish; }
services_wait_ready 60 || { tap_fail "services with CHATFLOW_AUTH=on ready"; finish; }
tap_ok "producer and consumer up with CHATFLOW_AUTH=on"
lg_auth() { # OUT_PREFIX FLAGS...: a small run against the auth services, output to OUT_PREFIX.*
    local out=$1
    shift
    timeout 120 "$LG" --port "$PRODUCER_WS_PORT" --consumer-port "$CONSUMER_WS_PORT" \
        --consumer-admin "http://127.0.0.1:$CONSUMER_ADMIN_PORT" --rooms "$ACONN" --connections "$ACONN" \
        --connect-timeout 5 --out-dir "$out-out" "$@" >"$out.out" 2>"$out.err"
}
# One connection per room, so each user sends its room's share: about AMSG / ACONN + the warm-up's,
# well under the producer's per-user limit.
AMSG=300
ACONN=10
AR="$TEST_LOGDIR/auth.json"
lg_auth "$TEST_LOGDIR/auth" --tokens --messages "$AMSG" --warmup-connections "$ACONN" --warmup-messages 3 \
    --subscribe --drain-timeout 60 --json "$AR" --acked-ids "$TEST_LOGDIR/auth-acked.txt"
tap_is "$?" 0 "--tokens: the load generator exits 0 (clean run) against CHATFLOW_AUTH=on"
aj() { jq -r "$1" "$AR" 2>/dev/null; }
tap_is "$(aj '"\(.acked) \(.failed) \(.protocolErrors)"')" "$AMSG 0 0" "--tokens: every message acked, none failed"
tap_is "$(aj '.broadcasts | "\(.expected) \(.received) \(.lost) \(.duplicated) \(.outOfOrder)"')" \
    "$AMSG $AMSG 0 0 0" "--tokens: the anonymous subscribers saw every broadcast once, in order"
tap_is "$(aj '"\(.users) \(.tokens)"')" "$ACONN true" "--tokens: the report counts one user per connection"
tap_check "--tokens: the text report shows the users" \
    grep -q "users: *$ACONN (identity tokens" "$TEST_LOGDIR/auth.out"
tap_is "$(wc -l <"$TEST_LOGDIR/auth-acked.txt")" "$((AMSG + ACONN * 3))" "--tokens: acked ids of warm-up + main phase"
auth_rows() { # "stored as_slot_user": rows of the acked ids, and of those the ones by user 1..ACONN as user<id>
    psql -XAtq -v ON_ERROR_STOP=1 <<SQL
create temp table auth_acked(message_id uuid primary key);
\copy auth_acked from '$TEST_LOGDIR/auth-acked.txt'
select count(*) || ' ' || count(*) filter (where m.user_id between 1 and $ACONN and m.username = 'user' || m.user_id)
from messages m join auth_acked a using (message_id);
SQL
}
stored=
for _ in $(seq 1 120); do
    stored=$(auth_rows 2>/dev/null)
    [ "${stored%% *}" = "$((AMSG + ACONN * 3))" ] && break
    sleep 0.5
done
tap_is "$stored" "$((AMSG + ACONN * 3)) $((AMSG + ACONN * 3))" \
    "--tokens: PostgreSQL holds every acked message, each as its connection's user (user<id>, id 1-$ACONN)"

# Retries stay on their user's connection: two connections (users 1 and 2) in one room send more
# than their two buckets hold (ARATE each), so the producer answers RATE_LIMITED and the load
# generator resends. A resend on the other user's connection would be answered FORBIDDEN_USER (a
# failure), one under the other userId would be another messageId (a duplicate row).
RMSG=$((2 * ARATE + 100))
RR="$TEST_LOGDIR/auth-retry.json"
lg_auth "$TEST_LOGDIR/auth-retry" --tokens --rooms 1 --connections 2 --messages "$RMSG" \
    --warmup-connections 0 --retries 20 --connect-timeout 10 --json "$RR" \
    --acked-ids "$TEST_LOGDIR/auth-retry-acked.txt"
tap_is "$?" 0 "--tokens over the per-user rate limit: exit 0"
tap_is "$(jq -r '"\(.acked) \(.failed) \(.protocolErrors) \(.users) \(.retries > 0)"' "$RR" 2>/dev/null)" \
    "$RMSG 0 0 2 true" "--tokens: RATE_LIMITED messages resent and acked, none refused as another user's"
retry_rows() { # rows of the acked ids, and of those the ones by user 1 or 2 as user<id>
    psql -XAtq -v ON_ERROR_STOP=1 <<SQL
create temp table retry_acked(message_id uuid primary key);
\copy retry_acked from '$TEST_LOGDIR/auth-retry-acked.txt'
select count(*) || ' ' || count(*) filter (where m.user_id in (1, 2) and m.username = 'user' || m.user_id)
from messages m join retry_acked a using (message_id);
SQL
}
stored=
for _ in $(seq 1 120); do
    stored=$(retry_rows 2>/dev/null)
    [ "${stored%% *}" = "$RMSG" ] && break
    sleep 0.5
done
tap_is "$stored" "$RMSG $RMSG" "--tokens: each resent message stored once, as its connection's user"

lg_auth "$TEST_LOGDIR/auth-notoken" --messages 50 --warmup-connections 0
tap_is "$?" 1 "without --tokens against CHATFLOW_AUTH=on: exit 1, not a hang"
tap_check "it names the refused handshake and the flag" \
    grep -q "sender connections to 127.0.0.1:$PRODUCER_WS_PORT failed: the WebSocket handshake was refused with HTTP 401: .*run with --tokens" \
    "$TEST_LOGDIR/auth-notoken.err"
lg_auth "$TEST_LOGDIR/auth-notoken-sub" --messages 50 --warmup-connections 0 --subscribe
tap_is "$?" 1 "without --tokens, with --subscribe: exit 1"
tap_check "it names the consumer's refusal" \
    grep -q "subscriber connections to 127.0.0.1:$CONSUMER_WS_PORT failed: .*HTTP 401" "$TEST_LOGDIR/auth-notoken-sub.err"
CHATFLOW_AUTH_HS256_SECRET=$(openssl rand -hex 24) lg_auth "$TEST_LOGDIR/auth-badsecret" --tokens \
    --messages 50 --warmup-connections 0
tap_is "$?" 1 "--tokens with another secret than the services': exit 1"
tap_check "it says the minted tokens are refused" \
    grep -q "HTTP 401: the service refuses the minted tokens" "$TEST_LOGDIR/auth-badsecret.err"

# No token and no secret anywhere: every JWT starts "eyJ" (base64url of '{"'); masked ones are "***".
leaks=$(grep -l -e 'eyJ' -e "$AUTH_SECRET" "$TEST_LOGDIR"/auth*.out "$TEST_LOGDIR"/auth*.err "$AR" \
    "$(bg_log producer)" "$(bg_log consumer)" 2>/dev/null | xargs -r -n1 basename | paste -sd' ')
tap_is "$leaks" "" "no token or secret in the load generator's report, stdout, stderr or the services' logs"
tap_check "the services' logs are there to be searched" test -s "$(bg_log producer)" -a -s "$(bg_log consumer)"
finish
