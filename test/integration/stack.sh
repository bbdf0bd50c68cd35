#!/usr/bin/env bash
# The local stack (deploy/local/stack) on a private directory: start, idempotent restart, every
# component answers, stack.env is complete, fauxqs, PostgreSQL and Redis can be stopped and
# restarted on the same port (queues recreated, Redis empty), Redis moves to a new port when its
# own is taken, and `down` stops all three by PID.
# test-passes: asan
set -u
. "$(dirname "$0")/../lib/common.sh"

STACK="$ROOT/deploy/local/stack"
ENV_VARS=(AWS_ENDPOINT_URL_SQS AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY DATABASE_URL
          PGHOST PGPORT PGUSER PGDATABASE CHATFLOW_PG_BIN CHATFLOW_PG_DATA CHATFLOW_PG_PORT
          CHATFLOW_FAUXQS_PORT CHATFLOW_FAUXQS_PID CHATFLOW_PG_PID
          CHATFLOW_REDIS_URL CHATFLOW_REDIS_PORT CHATFLOW_REDIS_PID)

# Lists the queues through the emulator's JSON protocol (what the services speak).
list_queues() {
    curl -sf --max-time 5 -X POST "$AWS_ENDPOINT_URL_SQS/" \
        -H 'X-Amz-Target: AmazonSQS.ListQueues' -H 'Content-Type: application/x-amz-json-1.0' -d '{}'
}

queues_exist() {
    local body
    body=$(list_queues) || return 1
    grep -q 'chatflow-room-1\.fifo' <<<"$body" && grep -q 'chatflow-db-dlq\.fifo' <<<"$body"
}

sql() { "$CHATFLOW_PG_BIN/psql" -X -tA "$DATABASE_URL" -c "$1" 2>&1; }

# One inline command to Redis on 127.0.0.1:$1 over bash's /dev/tcp (independent of the redis-cli
# the stack itself uses); prints the first reply line without its CR ("+PONG", ":1", "$-1").
redis_cmd() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf '%s\r\n' "$2" >&3
        IFS= read -r -t 5 line <&3 || exit 1
        printf '%s\n' "${line%$'\r'}"
    ) 2>/dev/null
}
redis_pings() { [ "$(redis_cmd "$1" PING)" = +PONG ]; }
# CONFIG GET NAME's value, through redis-cli (it prints the name, then the value).
redis_config() { timeout 5 redis-cli -h 127.0.0.1 -p "$1" config get "$2" 2>/dev/null | sed -n 2p; }

# Runs `sh -c` in a clean environment that only sources the file: is every variable set?
env_complete() {
    local v missing=""
    for v in "${ENV_VARS[@]}"; do
        [ -n "$(env -i bash -c "set -a; . '$1'; printf %s \"\${$v:-}\"")" ] || missing+=" $v"
    done
    [ -z "$missing" ] || { echo "missing:$missing"; return 1; }
}

pid_gone() { ! pid_running "$1"; }

if ! private_stack_up stack-it; then
    tap_fail "private stack starts"
    finish
fi
tap_ok "private stack starts"
ENV_FILE="$PRIVATE_STACK_DIR/stack.env"
# The bus URL as stack.env has it (private_stack_env keeps it out of the environment, test/run).
file_redis_url() { sed -n 's/^CHATFLOW_REDIS_URL=//p' "$ENV_FILE"; }
PG_PID=$CHATFLOW_PG_PID
SQS_PID=$CHATFLOW_FAUXQS_PID
PG_PORT=$CHATFLOW_PG_PORT
SQS_PORT=$CHATFLOW_FAUXQS_PORT
REDIS_PID=$CHATFLOW_REDIS_PID
REDIS_PORT=$CHATFLOW_REDIS_PORT

status=$(private_stack status 2>&1)
tap_check "status exits 0 when everything runs" private_stack status
tap_check "status shows postgresql running" grep -Eq '^postgresql +running +pid '"$PG_PID"' ' <<<"$status"
tap_check "status shows fauxqs running" grep -Eq '^fauxqs +running +pid '"$SQS_PID"' ' <<<"$status"
tap_check "status shows redis running and answering PING" \
    grep -Eq '^redis +running +pid '"$REDIS_PID"' +port '"$REDIS_PORT"' +answers PING' <<<"$status"

tap_check "stack.env is a valid shell file" bash -n "$ENV_FILE"
tap_check "stack.env sets every documented variable" env_complete "$ENV_FILE"
tap_is "$DATABASE_URL" "postgresql://chatflow@127.0.0.1:$PG_PORT/chatflow" "DATABASE_URL names the chatflow database on loopback"
tap_is "$AWS_ENDPOINT_URL_SQS" "http://127.0.0.1:$SQS_PORT" "AWS_ENDPOINT_URL_SQS is the fauxqs port"

tap_is "$(sql 'select 1')" 1 "PostgreSQL answers select 1 as user chatflow"
tap_is "$(sql 'select current_user || chr(32) || current_database()')" "chatflow chatflow" "connected as chatflow to chatflow"
tap_is "$(sql 'show fsync')" on "fsync stays on (ingest is measured for real)"
tap_check "PostgreSQL listens on 127.0.0.1 only" bash -c \
    "ss -Hltn 'sport = :$PG_PORT' | awk '{print \$4}' | grep -qx '127.0.0.1:$PG_PORT' &&
     ! ss -Hltn 'sport = :$PG_PORT' | awk '{print \$4}' | grep -vqx '127.0.0.1:$PG_PORT'"
tap_check "fauxqs answers ListQueues with the room queues and the DLQ" queues_exist

# Read from the file: private_stack_env leaves the bus URL out of the environment (test/run).
tap_is "$(file_redis_url)" "redis://127.0.0.1:$REDIS_PORT" \
    "stack.env's CHATFLOW_REDIS_URL is the Redis port on loopback"
tap_check "Redis answers PING on the port in stack.env" redis_pings "$REDIS_PORT"
tap_check "the Redis PID is a redis-server on that port" bash -c \
    "tr '\\0' ' ' </proc/$REDIS_PID/cmdline | grep -q 'redis-server 127.0.0.1:$REDIS_PORT'"
tap_check "Redis listens on 127.0.0.1 only" bash -c \
    "ss -Hltn 'sport = :$REDIS_PORT' | awk '{print \$4}' | grep -qx '127.0.0.1:$REDIS_PORT' &&
     ! ss -Hltn 'sport = :$REDIS_PORT' | awk '{print \$4}' | grep -vqx '127.0.0.1:$REDIS_PORT'"
tap_is "$(redis_config "$REDIS_PORT" protected-mode)" yes "Redis runs in protected mode"
tap_is "$(redis_config "$REDIS_PORT" save)/$(redis_config "$REDIS_PORT" appendonly)" "/no" \
    "Redis persists nothing (no save points, no append-only file)"
tap_is "$(redis_config "$REDIS_PORT" dir)" "$PRIVATE_STACK_DIR/redis" "Redis works in the stack's folder"

before=$(grep -v '^#' "$ENV_FILE")
tap_check "up on a running stack succeeds" private_stack up
tap_is "$(grep -v '^#' "$ENV_FILE")" "$before" "up on a running stack changes nothing (same PIDs and ports)"

tap_check "stop-sqs succeeds" private_stack stop-sqs
tap_check "stop-sqs stops the fauxqs PID" pid_gone "$SQS_PID"
CHATFLOW_STACK_DIR="$PRIVATE_STACK_DIR" "$STACK" status >/dev/null 2>&1
tap_is "$?" 3 "status exit code is 3 while something is stopped"
tap_check "postgresql keeps running while fauxqs is stopped" pid_running "$PG_PID"
tap_check "restart-sqs succeeds" private_stack restart-sqs
private_stack_env
tap_is "$CHATFLOW_FAUXQS_PORT" "$SQS_PORT" "fauxqs comes back on the same port"
tap_check "fauxqs runs under a new PID" bash -c "[ '$CHATFLOW_FAUXQS_PID' != '$SQS_PID' ] && kill -0 '$CHATFLOW_FAUXQS_PID'"
tap_check "the queues exist again after restart-sqs" queues_exist
SQS_PID=$CHATFLOW_FAUXQS_PID

# A crashed emulator (killed by its PID, as a fault would) is noticed and replaced by `up`.
kill -KILL "$SQS_PID"
for _ in $(seq 1 50); do pid_running "$SQS_PID" || break; sleep 0.1; done
tap_check "up after fauxqs was killed succeeds" private_stack up
private_stack_env
tap_check "up replaced the killed fauxqs with a new PID" bash -c "[ '$CHATFLOW_FAUXQS_PID' != '$SQS_PID' ] && kill -0 '$CHATFLOW_FAUXQS_PID'"
tap_is "$CHATFLOW_FAUXQS_PORT" "$SQS_PORT" "the replacement fauxqs keeps the port"
tap_check "the queues exist again after the replacement" queues_exist
tap_is "$CHATFLOW_PG_PID" "$PG_PID" "postgresql was left alone by that up"
SQS_PID=$CHATFLOW_FAUXQS_PID

tap_check "stop-pg succeeds" private_stack stop-pg
tap_check "stop-pg stops the postgres PID" pid_gone "$PG_PID"
tap_check "start-pg succeeds" private_stack start-pg
private_stack_env
tap_is "$CHATFLOW_PG_PORT" "$PG_PORT" "postgresql comes back on the same port"
tap_is "$(sql 'select 1')" 1 "PostgreSQL answers again after start-pg"
PG_PID=$CHATFLOW_PG_PID

# Redis alone: stopped by its PID, started and restarted on the same port, empty each time (the
# bus's tests restart it under load with these commands).
tap_check "stop-redis succeeds" private_stack stop-redis
tap_check "stop-redis stops the redis PID" pid_gone "$REDIS_PID"
CHATFLOW_STACK_DIR="$PRIVATE_STACK_DIR" "$STACK" status >/dev/null 2>&1
tap_is "$?" 3 "status exit code is 3 while redis is stopped"
out=$(private_stack status 2>&1)
tap_check "status shows redis stopped" grep -Eq '^redis +stopped' <<<"$out"
tap_check "stack.env names no Redis while it is stopped" bash -c "! grep -q '^CHATFLOW_REDIS_' '$ENV_FILE'"
tap_check "postgresql and fauxqs keep running while redis is stopped" bash -c \
    "kill -0 '$PG_PID' && kill -0 '$SQS_PID'"
tap_check "start-redis succeeds" private_stack start-redis
unset CHATFLOW_REDIS_URL CHATFLOW_REDIS_PORT CHATFLOW_REDIS_PID
private_stack_env
tap_is "${CHATFLOW_REDIS_PORT:-}" "$REDIS_PORT" "redis comes back on the same port"
tap_check "redis runs under a new PID" bash -c "[ '${CHATFLOW_REDIS_PID:-}' != '$REDIS_PID' ] && kill -0 '${CHATFLOW_REDIS_PID:-0}'"
tap_check "Redis answers PING after start-redis" redis_pings "$REDIS_PORT"
REDIS_PID=${CHATFLOW_REDIS_PID:-0}

tap_is "$(redis_cmd "$REDIS_PORT" 'SET stack-it-key 1')" +OK "a key is set before restart-redis"
tap_check "restart-redis succeeds" private_stack restart-redis
private_stack_env
tap_is "$CHATFLOW_REDIS_PORT" "$REDIS_PORT" "restart-redis keeps the port"
tap_check "restart-redis stopped the old PID" pid_gone "$REDIS_PID"
tap_check "redis runs under a new PID after restart-redis" bash -c "[ '$CHATFLOW_REDIS_PID' != '$REDIS_PID' ] && kill -0 '$CHATFLOW_REDIS_PID'"
tap_is "$(redis_cmd "$REDIS_PORT" 'EXISTS stack-it-key')" ":0" "Redis starts empty after restart-redis (nothing persisted)"
tap_is "$(grep -c '^CHATFLOW_REDIS_PID=' "$ENV_FILE")/$(file_redis_url)" "1/redis://127.0.0.1:$REDIS_PORT" \
    "stack.env names the new Redis PID and the same URL"
REDIS_PID=$CHATFLOW_REDIS_PID

# A crashed Redis (killed by its PID) is noticed and replaced by `up`, on the same port.
kill -KILL "$REDIS_PID"
for _ in $(seq 1 50); do pid_running "$REDIS_PID" || break; sleep 0.1; done
tap_check "up after redis was killed succeeds" private_stack up
private_stack_env
tap_check "up replaced the killed redis with a new PID" bash -c "[ '$CHATFLOW_REDIS_PID' != '$REDIS_PID' ] && kill -0 '$CHATFLOW_REDIS_PID'"
tap_is "$CHATFLOW_REDIS_PORT" "$REDIS_PORT" "the replacement redis keeps the port"
tap_is "$CHATFLOW_FAUXQS_PID/$CHATFLOW_PG_PID" "$SQS_PID/$PG_PID" "fauxqs and postgresql were left alone by that up"
REDIS_PID=$CHATFLOW_REDIS_PID

# Its port taken while it was stopped: Redis starts on another free port and stack.env says so.
tap_check "stop-redis succeeds again" private_stack stop-redis
start_bg port-squatter node -e \
    'require("net").createServer(() => {}).listen(+process.argv[1], "127.0.0.1")' "$REDIS_PORT"
tap_check "something else listens on the old Redis port" wait_port "$REDIS_PORT" 20
tap_check "start-redis succeeds with its port taken" private_stack start-redis
private_stack_env
tap_check "redis moved to another port" bash -c "[ '$CHATFLOW_REDIS_PORT' != '$REDIS_PORT' ]"
tap_is "$(file_redis_url)" "redis://127.0.0.1:$CHATFLOW_REDIS_PORT" "CHATFLOW_REDIS_URL names the new port"
tap_check "Redis answers PING on its new port" redis_pings "$CHATFLOW_REDIS_PORT"
stop_bg port-squatter
REDIS_PID=$CHATFLOW_REDIS_PID

tap_check "down succeeds" private_stack down
tap_check "down stops postgres (its PID is gone)" pid_gone "$PG_PID"
tap_check "down stops fauxqs (its PID is gone)" pid_gone "$SQS_PID"
tap_check "down stops redis (its PID is gone)" pid_gone "$REDIS_PID"
tap_check "down removes stack.env" test ! -e "$ENV_FILE"
tap_check "down again is harmless" private_stack down

tap_check "up --sqs-only starts fauxqs" private_stack up --sqs-only
out=$(private_stack status 2>&1)
tap_check "up --sqs-only leaves postgresql stopped" grep -Eq '^postgresql +stopped' <<<"$out"
tap_check "up --sqs-only creates the queues" grep -Eq '^queues +created' <<<"$out"
tap_check "up --sqs-only leaves redis stopped" grep -Eq '^redis +stopped' <<<"$out"
tap_check "up --pg-only then starts postgresql" private_stack up --pg-only
tap_check "up --redis-only then starts redis" private_stack up --redis-only
private_stack_env
tap_check "Redis answers PING after up --redis-only" redis_pings "$CHATFLOW_REDIS_PORT"
REDIS_PID=$CHATFLOW_REDIS_PID
tap_check "status exits 0 after the partial starts (postgresql, fauxqs, redis)" private_stack status
tap_check "down after partial starts succeeds" private_stack down
out=$(private_stack status 2>&1)
tap_check "status shows both stopped after down" bash -c \
    "grep -Eq '^postgresql +stopped' <<<'$out' && grep -Eq '^fauxqs +stopped' <<<'$out'"
tap_check "status shows redis stopped after down" grep -Eq '^redis +stopped' <<<"$out"
tap_check "that down stopped redis by its PID" pid_gone "$REDIS_PID"
tap_check "two different --X-only options are a usage error (exit 2)" bash -c \
    "CHATFLOW_STACK_DIR='$PRIVATE_STACK_DIR' '$STACK' up --pg-only --redis-only >/dev/null 2>&1; [ \$? -eq 2 ]"

tap_check "an unknown command is a usage error (exit 2)" bash -c "'$STACK' frobnicate >/dev/null 2>&1; [ \$? -eq 2 ]"

# The helpers of test/lib/common.sh that other scripts rely on: a background server is found by
# port and URL, and a failing script leaves neither its processes nor its private stack behind.
port=$(free_port)
tap_check "free_port gives a port nothing listens on" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null"
# node is a dependency anyway (fauxqs); a three-line HTTP server is all this needs.
start_bg http-server node -e \
    'require("http").createServer((q, s) => s.end("ok\n")).listen(+process.argv[1], "127.0.0.1")' "$port"
tap_check "wait_port sees the background server listen" wait_port "$port" 20
tap_check "wait_http gets a 2xx from it" wait_http "http://127.0.0.1:$port/" 20
http_pid=$BG_PID
stop_bg http-server
tap_check "stop_bg stops it by PID" pid_gone "$http_pid"
tap_check "wait_http fails once nothing answers" bash -c \
    ". '$ROOT/test/lib/common.sh'; ! wait_http http://127.0.0.1:$port/ 1"

child="$TEST_LOGDIR/failing-child.sh"
cat >"$child" <<'EOF'
. "$ROOT/test/lib/common.sh"
private_stack_up stack-it-child --sqs-only || exit 9
start_bg sleeper sleep 300
echo "PIDS $BG_PID $CHATFLOW_FAUXQS_PID"
tap_fail "this child fails on purpose"
finish
EOF
child_out=$(bash "$child" 2>&1)
child_rc=$?
read -r _ sleeper_pid child_fauxqs_pid < <(grep '^PIDS ' <<<"$child_out")
tap_check "the child started a background process and a private stack" \
    bash -c "[[ '${sleeper_pid:-}' =~ ^[0-9]+$ && '${child_fauxqs_pid:-}' =~ ^[0-9]+$ ]]"
tap_is "$child_rc" 1 "a script with a failed check exits 1 through finish"
tap_check "its background process was stopped on exit" pid_gone "${sleeper_pid:-0}"
tap_check "its private stack was stopped on exit" pid_gone "${child_fauxqs_pid:-0}"

finish
