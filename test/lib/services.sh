# test/lib/services.sh — start the two services on free loopback ports against a stack.
# shellcheck shell=bash
#
#   . test/lib/common.sh; . test/lib/services.sh
#   services_start [producer-env...] -- [consumer-env...]   (after a stack's env is exported)
#
# Contract:
#  - Needs test/lib/common.sh (start_bg, free_port, wait_http) and a stack's environment
#    (AWS_ENDPOINT_URL_SQS, DATABASE_URL, ...) exported.
#  - Picks four free ports and starts $CHATFLOW_BIN/chatflow-consumer (migrations applied) and
#    $CHATFLOW_BIN/chatflow-producer with start_bg, so they are stopped by PID when the script
#    exits. Extra VAR=value words before "--" go to the producer's environment, after it to the
#    consumer's.
#  - CHATFLOW_SERVICE_WRAPPER, when set, is a command line both services are started under
#    (test/run --sanitizers sets it to memcheck for its Valgrind pass).
#  - Sets PRODUCER_WS_PORT, PRODUCER_ADMIN_PORT, CONSUMER_WS_PORT, CONSUMER_ADMIN_PORT,
#    PRODUCER_PID, CONSUMER_PID; returns non-zero (after a note naming the log) when a service
#    does not answer /health/live within SERVICES_START_TIMEOUT seconds (default 30).

services_start() {
    local producer_env=() consumer_env=() side=producer w
    for w in "$@"; do
        if [ "$w" = "--" ]; then side=consumer; continue; fi
        if [ $side = producer ]; then producer_env+=("$w"); else consumer_env+=("$w"); fi
    done
    PRODUCER_WS_PORT=$(free_port)
    PRODUCER_ADMIN_PORT=$(free_port)
    CONSUMER_WS_PORT=$(free_port)
    CONSUMER_ADMIN_PORT=$(free_port)
    local timeout=${SERVICES_START_TIMEOUT:-30}

    start_bg consumer env CHATFLOW_WS_PORT="$CONSUMER_WS_PORT" CHATFLOW_ADMIN_PORT="$CONSUMER_ADMIN_PORT" \
        CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_MIGRATE_ON_START=1 \
        "${consumer_env[@]}" ${CHATFLOW_SERVICE_WRAPPER:-} "$CHATFLOW_BIN/chatflow-consumer"
    CONSUMER_PID=$BG_PID
    start_bg producer env CHATFLOW_WS_PORT="$PRODUCER_WS_PORT" CHATFLOW_ADMIN_PORT="$PRODUCER_ADMIN_PORT" \
        CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 \
        "${producer_env[@]}" ${CHATFLOW_SERVICE_WRAPPER:-} "$CHATFLOW_BIN/chatflow-producer"
    PRODUCER_PID=$BG_PID

    if ! wait_http "http://127.0.0.1:$CONSUMER_ADMIN_PORT/health/live" "$timeout"; then
        note "the consumer did not come up; log: $(bg_log consumer)"
        return 1
    fi
    if ! wait_http "http://127.0.0.1:$PRODUCER_ADMIN_PORT/health/live" "$timeout"; then
        note "the producer did not come up; log: $(bg_log producer)"
        return 1
    fi
    export PRODUCER_WS_PORT PRODUCER_ADMIN_PORT CONSUMER_WS_PORT CONSUMER_ADMIN_PORT PRODUCER_PID CONSUMER_PID
}

# services_wait_ready SECONDS: both /health/ready answer 200 (SQS and PostgreSQL reachable).
services_wait_ready() {
    local t=${1:-30}
    wait_http "http://127.0.0.1:$CONSUMER_ADMIN_PORT/health/ready" "$t" &&
        wait_http "http://127.0.0.1:$PRODUCER_ADMIN_PORT/health/ready" "$t"
}

# metric_value PORT NAME_WITH_LABELS: the sample's value from /metrics ("" when absent).
metric_value() {
    curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v name="$2" 'index($0, name " ") == 1 { print $2; exit }'
}
