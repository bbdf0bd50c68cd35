# test/integration/faults_lib.sh — shared steps of the fault-injection tests (faults_*.sh).
# Sourced after test/lib/common.sh; not executable, so test/run does not run it as a test.
#
# A fault test:
#   faults_setup NAME        private stack (PostgreSQL + fauxqs, queues created), consumer and
#                            producer on free loopback ports, both ready; false on failure
#   faults_load_start N      chatflow-loadgen in the background: N messages over 20 rooms, every
#                            message with a clientMessageId, retried up to FAULT_RETRIES (8) times
#                            (~25 s of backoff)
#   faults_when_acked PCT    waits until the producer has acked PCT % of the load (so the fault
#                            lands mid-load however fast this machine is); then faults_after MS
#                            sleeps until MS after that moment
#   ... inject the fault while the load runs (faults_mark "what" records the moment) ...
#   faults_load_wait         waits for the load generator (bounded), reports what it saw
#   faults_drain             waits until every room queue and the spill queue are empty and the row
#                            count is stable
#   faults_check_exactly_once [MAY_LOSE]
#                            every acked messageId is in PostgreSQL exactly once (MAY_LOSE: how
#                            many acked ones may be missing because fauxqs lost them, for the SQS
#                            restart where the emulator keeps nothing); prints the loss window of
#                            the unacked messages from the load generator's CSV
# Results go to $FAULT_DIR (under $BUILD/test-logs/<test>/) and one summary line per test to
# $FAULT_DIR/summary.txt, which docs/reliability.md quotes.

FAULT_DIR="$TEST_LOGDIR/run"
FAULT_T0_MS=0
FAULT_MARKS=()
LOADGEN_TIMEOUT_S=${LOADGEN_TIMEOUT_S:-150}
DRAIN_TIMEOUT_S=${DRAIN_TIMEOUT_S:-120}

now_ms() { date +%s%3N; }

# faults_mark TEXT: notes the moment (ms since the load started) and what happened.
faults_mark() {
    local t=$(( $(now_ms) - FAULT_T0_MS ))
    FAULT_MARKS+=("${t}ms $*")
    note "t=${t}ms: $*"
}

psql_q() { psql "$DATABASE_URL" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1" 2>&1; }

faults_start_consumer() {
    start_bg consumer env CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 \
        CHATFLOW_WS_PORT="$C_WS" CHATFLOW_ADMIN_PORT="$C_ADMIN" CHATFLOW_MIGRATE_ON_START=true \
        CHATFLOW_MIGRATIONS_DIR="$ROOT/db/migrations" CHATFLOW_RECEIVE_WAIT_S=2 \
        CHATFLOW_VISIBILITY_TIMEOUT_S="${FAULT_VISIBILITY_S:-10}" CHATFLOW_LOG_LEVEL=info \
        CHATFLOW_SERVER_ID=consumer-faults "$CHATFLOW_BIN/chatflow-consumer"
    CONSUMER_PID=$BG_PID
    # a restarted process logs after the first one
    cat "$(bg_log consumer)" >>"$FAULT_DIR/consumer-all.log" 2>/dev/null || true
    wait_http "http://127.0.0.1:$C_ADMIN/health/live" 30
}

faults_start_producer() {
    start_bg producer env CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 \
        CHATFLOW_WS_PORT="$P_WS" CHATFLOW_ADMIN_PORT="$P_ADMIN" CHATFLOW_RATE_LIMIT_PER_MINUTE=0 \
        CHATFLOW_LOG_LEVEL=info CHATFLOW_SERVER_ID=producer-faults "$CHATFLOW_BIN/chatflow-producer"
    PRODUCER_PID=$BG_PID
    wait_http "http://127.0.0.1:$P_ADMIN/health/live" 30
}

faults_setup() {
    local name=$1 b
    for b in chatflow-producer chatflow-consumer chatflow-loadgen chatflow-sqs; do
        if [ ! -x "$CHATFLOW_BIN/$b" ]; then
            tap_fail "$CHATFLOW_BIN/$b is built"
            return 1
        fi
    done
    command -v psql >/dev/null || { tap_fail "psql is installed"; return 1; }
    rm -rf "$FAULT_DIR"
    mkdir -p "$FAULT_DIR"
    # a fresh database every run: the checks count rows
    rm -rf "${ROOT:?}/${BUILD:?}/test-stacks/$name"
    if ! private_stack_up "$name"; then
        tap_fail "private stack $name started"
        return 1
    fi
    P_WS=$(free_port) && P_ADMIN=$(free_port) && C_WS=$(free_port) && C_ADMIN=$(free_port) || return 1
    if ! faults_start_consumer; then
        tap_fail "consumer started (log $(bg_log consumer))"
        return 1
    fi
    if ! faults_start_producer; then
        tap_fail "producer started (log $(bg_log producer))"
        return 1
    fi
    if ! wait_http "http://127.0.0.1:$P_ADMIN/health/ready" 30 || ! wait_http "http://127.0.0.1:$C_ADMIN/health/ready" 30; then
        tap_fail "producer and consumer ready"
        return 1
    fi
    tap_ok "stack, consumer (pid $CONSUMER_PID) and producer (pid $PRODUCER_PID) up on private ports"
}

faults_load_start() {
    local n=$1
    FAULT_MESSAGES=$n
    FAULT_T0_MS=$(now_ms)
    start_bg loadgen "$CHATFLOW_BIN/chatflow-loadgen" --port "$P_WS" --messages "$n" \
        --connections "${FAULT_CONNECTIONS:-20}" --warmup-connections 0 --rooms 20 \
        --window "${FAULT_WINDOW:-10}" --retries "${FAULT_RETRIES:-8}" --connect-timeout 20 --out-dir "$FAULT_DIR" \
        --json "$FAULT_DIR/report.json" --acked-ids "$FAULT_DIR/acked.txt" --quiet --seed "$RANDOM"
    LOADGEN_PID=$BG_PID
}

# faults_when_acked PCT: until the producer's ack count (chatflow_ack_latency_seconds_count)
# reaches PCT % of the load, or 60 s, or the load generator ends. Sets FAULT_AT_MS.
faults_when_acked() {
    local want=$(( FAULT_MESSAGES * $1 / 100 )) acks i
    for i in $(seq 1 3000); do
        acks=$(curl -s --max-time 1 "http://127.0.0.1:$P_ADMIN/metrics" 2>/dev/null |
               awk '$1 == "chatflow_ack_latency_seconds_count" { print int($2) }')
        [ "${acks:-0}" -ge "$want" ] && break
        bg_alive loadgen || break
        sleep 0.02
    done
    FAULT_AT_MS=$(now_ms)
    note "t=$((FAULT_AT_MS - FAULT_T0_MS))ms: ${acks:-?} of $FAULT_MESSAGES acked"
}

# faults_after MS: sleeps until MS milliseconds after the moment faults_when_acked returned.
faults_after() {
    local left=$(( FAULT_AT_MS + $1 - $(now_ms) ))
    [ "$left" -gt 0 ] && sleep "$(awk -v l="$left" 'BEGIN { printf "%.3f", l / 1000 }')"
    return 0
}

# Sleeps until the load generator has been running for MS milliseconds.
faults_at() {
    local want=$1 left
    left=$(( want - ($(now_ms) - FAULT_T0_MS) ))
    [ "$left" -gt 0 ] && sleep "$(awk -v l="$left" 'BEGIN { printf "%.3f", l / 1000 }')"
    return 0
}

# json_number KEY: the first numeric "KEY": value of the load generator's report ("?" if none).
json_number() {
    local v
    v=$(grep -o "\"$1\": *[0-9.]*" "$FAULT_DIR/report.json" 2>/dev/null | head -1 | grep -o '[0-9.]*$')
    echo "${v:-?}"
}

faults_load_wait() {
    local i
    for i in $(seq 1 $((LOADGEN_TIMEOUT_S * 10))); do
        bg_alive loadgen || break
        sleep 0.1
    done
    if bg_alive loadgen; then
        tap_fail "load generator finished within ${LOADGEN_TIMEOUT_S}s"
        stop_bg loadgen TERM 5 || true
        return 1
    fi
    stop_bg loadgen >/dev/null 2>&1 || true
    faults_mark "load generator finished"
    if [ ! -s "$FAULT_DIR/report.json" ] || [ ! -f "$FAULT_DIR/acked.txt" ]; then
        tap_fail "load generator wrote its report and acked ids (log $(bg_log loadgen))"
        tail -5 "$(bg_log loadgen)" | sed 's/^/#   /'
        return 1
    fi
    ACKED=$(sort -u "$FAULT_DIR/acked.txt" | wc -l)
    LG_FAILED=$(json_number failed)
    LG_RETRIES=$(json_number retries)
    LG_RECONN=$(json_number reconnections)
    note "load: $FAULT_MESSAGES sent, $ACKED acked, $LG_FAILED failed, $LG_RETRIES retries, $LG_RECONN reconnections"
    tap_ok "load generator finished: $ACKED of $FAULT_MESSAGES acked"
}

# Depth summed over the stack's room queues and its spill queue (visible + in flight), or -1: a
# message the consumer spilled during a database fault is not stored until the spill queue drains.
queue_depth() {
    AWS_ENDPOINT_URL_SQS=$AWS_ENDPOINT_URL_SQS "$CHATFLOW_BIN/chatflow-sqs" stats 2>/dev/null |
        awk '/room-[0-9]+\.fifo|db-spill/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; found = 1 }
             END { print found ? s + 0 : -1 }'
}

faults_drain() {
    local i rows last=-1 stable=0 depth
    for i in $(seq 1 "$DRAIN_TIMEOUT_S"); do
        rows=$(psql_q "select count(*) from messages") || rows=-1
        depth=$(queue_depth)
        if [ "$depth" = 0 ] && [ "$rows" = "$last" ]; then
            stable=$((stable + 1))
            [ "$stable" -ge 3 ] && break
        else
            stable=0
        fi
        last=$rows
        sleep 1
    done
    ROWS=$rows
    if [ "$stable" -ge 3 ]; then
        faults_mark "drained: queues empty, $ROWS rows"
        tap_ok "consumer drained every queue (rows stable at $ROWS)"
    else
        tap_fail "consumer drained every queue within ${DRAIN_TIMEOUT_S}s (depth $depth, rows $rows)"
    fi
}

faults_check_exactly_once() {
    local may_lose=${1:-0} missing dup stored_unacked lost
    psql_q "create table if not exists faults_acked(message_id uuid primary key); truncate faults_acked" >/dev/null
    sort -u "$FAULT_DIR/acked.txt" | psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 \
        -c "\\copy faults_acked from stdin" >/dev/null 2>"$FAULT_DIR/copy.err" || {
        tap_fail "acked ids loaded into PostgreSQL ($(head -c 200 "$FAULT_DIR/copy.err"))"
        return 1
    }
    missing=$(psql_q "select count(*) from faults_acked a where not exists (select 1 from messages m where m.message_id = a.message_id)")
    dup=$(psql_q "select count(*) from (select message_id from messages group by message_id having count(*) > 1) d")
    stored_unacked=$(psql_q "select count(*) from messages m where not exists (select 1 from faults_acked a where a.message_id = m.message_id)")
    if [ "$may_lose" -gt 0 ]; then
        if [ "$missing" -le "$may_lose" ]; then
            tap_ok "acked messages missing: $missing, within the $may_lose fauxqs held when it was killed (emulator keeps nothing)"
        else
            tap_fail "acked messages missing: $missing > $may_lose that fauxqs held when it was killed"
        fi
    else
        tap_is "$missing" 0 "every one of the $ACKED acked messages is in PostgreSQL"
    fi
    tap_is "$dup" 0 "no message stored twice"
    local dlq
    dlq=$(AWS_ENDPOINT_URL_SQS=$AWS_ENDPOINT_URL_SQS "$CHATFLOW_BIN/chatflow-sqs" stats 2>/dev/null | awk '/db-dlq/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) { print $i; exit } }')
    note "db DLQ holds ${dlq:-?} messages"
    # Loss window of unacked messages, from the per-message CSV (send time, status).
    local window
    window=$(awk -F, -v t0="$FAULT_T0_MS" 'NR > 1 && $4 != "SUCCESS" {
                 n++; t = $1 - t0; if (min == "" || t < min) min = t; if (t > max) max = t; codes[$4]++ }
             END { if (!n) { print "none"; exit }
                   printf "%d unacked, sent between t=%dms and t=%dms (", n, min, max
                   sep = ""; for (c in codes) { printf "%s%s %d", sep, c, codes[c]; sep = ", " } print ")" }' \
             "$FAULT_DIR/messages.csv" 2>/dev/null)
    local unacked=$((FAULT_MESSAGES - ACKED))
    lost=$((unacked - stored_unacked))
    [ "$lost" -lt 0 ] && lost=0
    note "unacked: $unacked ($window); of them stored anyway: $stored_unacked; never stored: $lost"
    {
        printf '%s: %d messages, %d acked, %d unacked (%d stored anyway, %d never stored), acked missing %s, duplicates %s, retries %s, reconnections %s, rows %s, dlq %s\n' \
            "$TEST_NAME" "$FAULT_MESSAGES" "$ACKED" "$unacked" "$stored_unacked" "$lost" "$missing" "$dup" \
            "$LG_RETRIES" "$LG_RECONN" "$ROWS" "${dlq:-?}"
        printf '  unacked window: %s\n' "$window"
        printf '  %s\n' "${FAULT_MARKS[@]}"
    } >>"$FAULT_DIR/summary.txt"
    cat "$FAULT_DIR/summary.txt" | sed 's/^/# /'
}

# faults_alive NAME: the service is still running (it must survive the fault by itself).
faults_alive() {
    if bg_alive "$1"; then tap_ok "$1 survived the fault"; else tap_fail "$1 survived the fault (log $(bg_log "$1"))"; fi
}

# faults_metrics_show: a few lines of each service's /metrics that show the fault.
faults_metrics_show() {
    curl -s --max-time 3 "http://127.0.0.1:$P_ADMIN/metrics" 2>/dev/null |
        grep -E '^chatflow_(sqs_requests_total|messages_received_total|circuit_breaker_state)' |
        grep -v ' 0$' | sed 's/^/#   producer /' | head -20
    curl -s --max-time 3 "http://127.0.0.1:$C_ADMIN/metrics" 2>/dev/null |
        grep -E '^chatflow_(db_rows_written_total|db_flush|dlq_messages_total|sqs_requests_total|messages_consumed_total)' |
        grep -v ' 0$' | grep -v _bucket | sed 's/^/#   consumer /' | head -20
}
