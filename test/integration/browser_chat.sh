#!/usr/bin/env bash
# browser_chat — the chat page (producer/web/) in Debian's Chromium, driven by playwright-core
# (test/browser/chat.test.mjs), against a real producer and consumer on a private stack: two users
# in one room, messages with their receipts, presence, typing, the producer's error on an invalid
# message, history after a reload, resume with since= after the events socket is cut, a
# consumer restart, and a room named by a string id (team-alpha-<nonce>). Identity tokens are on
# (docs/protocol.md §8): the users log in through the page (the producer's development tokens),
# requests without a token are refused, and a last phase restarts the producer with tokens of a
# few seconds to prove an expiry (close 4401) loses and doubles nothing. Screenshots and the
# pages' console logs go to $TEST_LOGDIR.
#
# Without /usr/bin/chromium or playwright-core (make deps installs both) the test fails, naming
# what is missing.
# Everything listens on 127.0.0.1 on free ports; every process is stopped by PID on exit.
# test-passes: asan
set -u
. "$(dirname "$0")/../lib/common.sh"
. "$ROOT/test/lib/services.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
ROOM=${BROWSER_CHAT_ROOM:-7}
SHORT_TTL_S=${BROWSER_CHAT_SHORT_TTL_S:-5} # token lifetime of the expiry phase

# Chromium is one of the packages 'make deps' installs: without it this test fails rather than
# passing a check it never ran.
[ -x "$CHROMIUM" ] || { tap_fail "$CHROMIUM is installed (Debian's chromium package; 'make deps')"; finish; }
[ -f "$ROOT/node_modules/playwright-core/package.json" ] ||
    { tap_fail "playwright-core is installed in node_modules ('make deps' runs npm ci)"; finish; }
for b in chatflow-producer chatflow-consumer; do
    [ -x "$CHATFLOW_BIN/$b" ] || { tap_fail "$b is built"; finish; }
done

private_stack_up browser_chat || { tap_fail "private stack started"; finish; }
on_exit "private_stack down --purge >/dev/null 2>&1"
# The private stack's data may survive an earlier run that was interrupted: start empty.
psql -XAtq -c "drop schema public cascade; create schema public" >/dev/null 2>&1

# The producer's /config.json must name the consumer's ports, so all four are picked before either
# service starts (services_start picks them itself, too late to hand them to the producer), and
# the services are started as services_start does (same environment, CHATFLOW_SERVICE_WRAPPER).
PRODUCER_WS_PORT=$(free_port)
PRODUCER_ADMIN_PORT=$(free_port)
CONSUMER_WS_PORT=$(free_port)
CONSUMER_ADMIN_PORT=$(free_port)
export PRODUCER_WS_PORT PRODUCER_ADMIN_PORT CONSUMER_WS_PORT CONSUMER_ADMIN_PORT
CONSUMER_RUNS=0
PRODUCER_RUNS=0

# Identity tokens on both services, one HS256 secret (48 random bytes of hex) shared by them. No
# leeway on exp, so a token of the expiry phase is refused and closed (4401) the second it ends.
AUTH_SECRET=$(openssl rand -hex 24) || { tap_fail "openssl made a token secret"; finish; }
AUTH_ENV=(CHATFLOW_AUTH=on CHATFLOW_AUTH_HS256_SECRET="$AUTH_SECRET" CHATFLOW_AUTH_LEEWAY_S=0)

start_consumer() {
    CONSUMER_RUNS=$((CONSUMER_RUNS + 1))
    start_bg "consumer$CONSUMER_RUNS" env CHATFLOW_WS_PORT="$CONSUMER_WS_PORT" \
        CHATFLOW_ADMIN_PORT="$CONSUMER_ADMIN_PORT" CHATFLOW_WS_BIND=127.0.0.1 \
        CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_MIGRATE_ON_START=1 CHATFLOW_RECEIVE_WAIT_S=2 \
        "${AUTH_ENV[@]}" CHATFLOW_API_ALLOW_ORIGIN="http://127.0.0.1:$PRODUCER_WS_PORT" \
        ${CHATFLOW_SERVICE_WRAPPER:-} "$CHATFLOW_BIN/chatflow-consumer"
    CONSUMER_PID=$BG_PID
    wait_http "http://127.0.0.1:$CONSUMER_ADMIN_PORT/health/ready" 60
}

# start_producer [TOKEN_TTL_S=3600]: the lifetime of the development tokens it hands out.
start_producer() {
    PRODUCER_RUNS=$((PRODUCER_RUNS + 1))
    start_bg "producer$PRODUCER_RUNS" env CHATFLOW_WS_PORT="$PRODUCER_WS_PORT" \
        CHATFLOW_ADMIN_PORT="$PRODUCER_ADMIN_PORT" CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 \
        CHATFLOW_WEB_ROOT="$ROOT/producer/web" \
        CHATFLOW_WEB_EVENTS_URL="ws://127.0.0.1:$CONSUMER_WS_PORT" \
        CHATFLOW_WEB_API_URL="http://127.0.0.1:$CONSUMER_ADMIN_PORT" \
        CHATFLOW_RATE_LIMIT_PER_MINUTE=600 \
        "${AUTH_ENV[@]}" CHATFLOW_DEV_TOKENS=on CHATFLOW_DEV_TOKEN_TTL_S="${1:-3600}" \
        ${CHATFLOW_SERVICE_WRAPPER:-} "$CHATFLOW_BIN/chatflow-producer"
    PRODUCER_PID=$BG_PID
    wait_http "http://127.0.0.1:$PRODUCER_ADMIN_PORT/health/ready" 60
}

start_consumer || { tap_fail "consumer ready (log $(bg_log consumer1))"; finish; }
start_producer || { tap_fail "producer ready (log $(bg_log producer1))"; finish; }
tap_ok "private stack, consumer (pid $CONSUMER_PID) and producer (pid $PRODUCER_PID) up on 127.0.0.1"

config=$(curl -sf --max-time 5 "http://127.0.0.1:$PRODUCER_WS_PORT/config.json")
tap_is "$(printf '%s' "$config" | grep -o "\"eventsUrl\" *: *\"ws://127.0.0.1:$CONSUMER_WS_PORT\"" | wc -l)" 1 \
    "the producer's /config.json names the consumer's events URL"
auth=$(printf '%s' "$config" | node -e 'let s = ""; process.stdin.on("data", (d) => { s += d; }).on("end", () => {
    const a = JSON.parse(s).auth || {}; console.log(`${a.required} ${a.devTokens} ${a.tokenUrl}`); })' 2>&1)
tap_is "$auth" "true true /dev/token" \
    "/config.json tells the page that tokens are required and where development tokens come from"

# The node script asks for the consumer restart and the producer's (with the token lifetime the
# file holds) through files in $CONTROL (it cannot signal a process this shell started); this
# loop answers while the script runs.
CONTROL="$TEST_LOGDIR/control"
rm -rf "$CONTROL"
mkdir -p "$CONTROL"
start_bg browser env CHATFLOW_PAGE_URL="http://127.0.0.1:$PRODUCER_WS_PORT/" \
    CHATFLOW_EVENTS_URL="ws://127.0.0.1:$CONSUMER_WS_PORT" CHATFLOW_ROOM="$ROOM" \
    CHATFLOW_API_URL="http://127.0.0.1:$CONSUMER_ADMIN_PORT" CHATFLOW_SHORT_TTL_S="$SHORT_TTL_S" \
    CHATFLOW_TEST_CONTROL="$CONTROL" TEST_LOGDIR="$TEST_LOGDIR" CHROMIUM="$CHROMIUM" \
    node "$ROOT/test/browser/chat.test.mjs"
BROWSER_PID=$BG_PID
start_s=$SECONDS
while pid_running "$BROWSER_PID"; do
    if [ -e "$CONTROL/stop-consumer" ]; then
        rm -f "$CONTROL/stop-consumer"
        stop_bg "consumer$CONSUMER_RUNS" TERM 30
        echo "$?" >"$CONTROL/consumer-stopped"
    fi
    if [ -e "$CONTROL/start-consumer" ]; then
        rm -f "$CONTROL/start-consumer"
        if start_consumer; then echo ok >"$CONTROL/consumer-started"; else
            note "the consumer did not come back (log $(bg_log "consumer$CONSUMER_RUNS"))"
        fi
    fi
    if [ -e "$CONTROL/restart-producer" ]; then
        ttl=$(cat "$CONTROL/restart-producer")
        rm -f "$CONTROL/restart-producer"
        stop_bg "producer$PRODUCER_RUNS" TERM 30
        echo "$?" >"$CONTROL/producer-stopped"
        if start_producer "$ttl"; then echo ok >"$CONTROL/producer-restarted"; else
            note "the producer did not come back (log $(bg_log "producer$PRODUCER_RUNS"))"
        fi
    fi
    sleep 0.2
done
wait "$BROWSER_PID" 2>/dev/null
browser_rc=$?
unset "BG_PIDS[browser]"

# The node script's TAP lines count as this script's.
out=$(bg_log browser)
cat "$out"
TAP_PASSED=$((TAP_PASSED + $(grep -c '^ok - ' "$out")))
TAP_FAILED=$((TAP_FAILED + $(grep -c '^not ok - ' "$out")))
tap_is "$browser_rc" 0 "the browser test exits 0 (took $((SECONDS - start_s))s)"
[ -e "$CONTROL/consumer-stopped" ] && tap_is "$(cat "$CONTROL/consumer-stopped")" 0 "SIGTERM: the consumer exited 0"
[ -e "$CONTROL/producer-stopped" ] && tap_is "$(cat "$CONTROL/producer-stopped")" 0 "SIGTERM: the producer exited 0"
finish
