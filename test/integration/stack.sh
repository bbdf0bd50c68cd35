#!/usr/bin/env bash
# The local stack (deploy/local/stack) on a private directory: start, idempotent restart, both
# components answer, stack.env is complete, fauxqs and PostgreSQL can be stopped and restarted on
# the same port (queues recreated), and `down` stops both by PID.
# test-passes: asan
set -u
. "$(dirname "$0")/../lib/common.sh"

STACK="$ROOT/deploy/local/stack"
ENV_VARS=(AWS_ENDPOINT_URL_SQS AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY DATABASE_URL
          PGHOST PGPORT PGUSER PGDATABASE CHATFLOW_PG_BIN CHATFLOW_PG_DATA CHATFLOW_PG_PORT
          CHATFLOW_FAUXQS_PORT CHATFLOW_FAUXQS_PID CHATFLOW_PG_PID)

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
PG_PID=$CHATFLOW_PG_PID
SQS_PID=$CHATFLOW_FAUXQS_PID
PG_PORT=$CHATFLOW_PG_PORT
SQS_PORT=$CHATFLOW_FAUXQS_PORT

status=$(private_stack status 2>&1)
tap_check "status exits 0 when everything runs" private_stack status
tap_check "status shows postgresql running" grep -Eq '^postgresql +running +pid '"$PG_PID"' ' <<<"$status"
tap_check "status shows fauxqs running" grep -Eq '^fauxqs +running +pid '"$SQS_PID"' ' <<<"$status"

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

tap_check "down succeeds" private_stack down
tap_check "down stops postgres (its PID is gone)" pid_gone "$PG_PID"
tap_check "down stops fauxqs (its PID is gone)" pid_gone "$SQS_PID"
tap_check "down removes stack.env" test ! -e "$ENV_FILE"
tap_check "down again is harmless" private_stack down

tap_check "up --sqs-only starts fauxqs" private_stack up --sqs-only
out=$(private_stack status 2>&1)
tap_check "up --sqs-only leaves postgresql stopped" grep -Eq '^postgresql +stopped' <<<"$out"
tap_check "up --sqs-only creates the queues" grep -Eq '^queues +created' <<<"$out"
tap_check "up --pg-only then starts postgresql" private_stack up --pg-only
tap_check "status exits 0 after both partial starts" private_stack status
tap_check "down after partial starts succeeds" private_stack down
out=$(private_stack status 2>&1)
tap_check "status shows both stopped after down" bash -c \
    "grep -Eq '^postgresql +stopped' <<<'$out' && grep -Eq '^fauxqs +stopped' <<<'$out'"

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
