#!/usr/bin/env bash
# prometheus_scrape — the real Prometheus (Debian's package) scrapes a running producer and consumer.
#
# Starts chatflow-producer and chatflow-consumer on free loopback ports against the shared test
# stack (AWS_ENDPOINT_URL_SQS, DATABASE_URL from test/run), then Prometheus on a free loopback
# port with a generated config (1 s scrape and rule evaluation, monitoring/alerts.yml loaded).
# Asserts, through the Prometheus HTTP API:
#  - both targets are up;
#  - a handshake the producer refused (not a room id) shows in
#    chatflow_ws_handshakes_refused_total{job="chatflow-producer"};
#  - the consumer's chatflow_sqs_queue_depth{shard} and its ReceiveMessage requests are there;
#  - every alert rule evaluates without error against the real series.
# Everything is stopped by PID on exit, pass or fail (test/lib/common.sh).
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
cd "$ROOT"

PRODUCER="$CHATFLOW_BIN/chatflow-producer"
CONSUMER="$CHATFLOW_BIN/chatflow-consumer"
if [ ! -x "$PRODUCER" ] || [ ! -x "$CONSUMER" ]; then
    tap_fail "service binaries missing ($PRODUCER, $CONSUMER): build them first (make BUILD=...)"
    finish
fi
command -v prometheus >/dev/null || { tap_fail "prometheus not installed (Debian package prometheus)"; finish; }
command -v jq >/dev/null || { tap_fail "jq not installed"; finish; }
if [ -z "${AWS_ENDPOINT_URL_SQS:-}" ] || [ -z "${DATABASE_URL:-}" ]; then
    tap_fail "no test stack environment (AWS_ENDPOINT_URL_SQS, DATABASE_URL): run through test/run"
    finish
fi

ROOM=20   # the consumer polls this room's shard only: it shares the stack's queues with other tests
# Five distinct free ports (free_port reserves nothing: two calls may pick the same one).
ports=()
while [ ${#ports[@]} -lt 5 ]; do
    p=$(free_port) || { tap_fail "no free port"; finish; }
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
done
p_ws=${ports[0]} p_admin=${ports[1]} c_ws=${ports[2]} c_admin=${ports[3]} prom_port=${ports[4]}

common_env=(CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_LOG_LEVEL=info
            CHATFLOW_STOP_TIMEOUT_S=5)
start_bg producer env "${common_env[@]}" CHATFLOW_WS_PORT="$p_ws" CHATFLOW_ADMIN_PORT="$p_admin" \
    CHATFLOW_SERVER_ID=scrape-producer "$PRODUCER"
start_bg consumer env "${common_env[@]}" CHATFLOW_WS_PORT="$c_ws" CHATFLOW_ADMIN_PORT="$c_admin" \
    CHATFLOW_SERVER_ID=scrape-consumer CHATFLOW_MIGRATE_ON_START=true CHATFLOW_POLLER_THREADS=1 \
    CHATFLOW_SHARD_FIRST=$ROOM CHATFLOW_SHARD_LAST=$ROOM \
    CHATFLOW_RECEIVE_WAIT_S=1 CHATFLOW_QUEUE_DEPTH_INTERVAL_S=1 "$CONSUMER"

if wait_http "http://127.0.0.1:$p_admin/health/live" 30; then tap_ok "producer serves /health/live"
else tap_fail "producer serves /health/live"; tail -5 "$(bg_log producer)" | sed 's/^/#   /'; finish; fi
if wait_http "http://127.0.0.1:$c_admin/health/live" 60; then tap_ok "consumer serves /health/live"
else tap_fail "consumer serves /health/live"; tail -5 "$(bg_log consumer)" | sed 's/^/#   /'; finish; fi

# A WebSocket handshake for something that is not a room id: refused with a 4xx, and counted.
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "http://127.0.0.1:$p_ws/chat/not.a.room")
case "$status" in 4??) tap_ok "producer refuses a handshake for room 'not.a.room' ($status)" ;;
                  *) tap_fail "producer refuses a handshake for room 'not.a.room' (got HTTP $status)" ;; esac

# Prometheus: the shipped rules, a generated scrape config for these two processes.
PROM_DIR="$TEST_LOGDIR/prometheus"
rm -rf "$PROM_DIR" && mkdir -p "$PROM_DIR/data"
cp monitoring/alerts.yml "$PROM_DIR/alerts.yml"
cat >"$PROM_DIR/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: chatflow-producer
    static_configs: [{targets: ["127.0.0.1:$p_admin"], labels: {service: producer}}]
  - job_name: chatflow-consumer
    static_configs: [{targets: ["127.0.0.1:$c_admin"], labels: {service: consumer}}]
YML
start_bg prometheus prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn
PROM="http://127.0.0.1:$prom_port"
if wait_http "$PROM/-/ready" 60; then tap_ok "prometheus is ready on 127.0.0.1:$prom_port"
else tap_fail "prometheus is ready"; tail -5 "$(bg_log prometheus)" | sed 's/^/#   /'; finish; fi

# query PROMQL: prints the result vector as JSON ([] when empty).
query() { curl -sf --max-time 5 --data-urlencode "query=$1" "$PROM/api/v1/query" | jq -c '.data.result'; }

# poll DESC SECONDS CMD...: until CMD succeeds.
poll() {
    local desc=$1 secs=$2 i
    shift 2
    for i in $(seq 1 $((secs * 2))); do
        "$@" && { tap_ok "$desc"; return 0; }
        sleep 0.5
    done
    tap_fail "$desc (not within ${secs}s)"
    return 1
}

targets_up() {
    local got
    got=$(curl -sf --max-time 5 "$PROM/api/v1/targets" |
          jq -r '[.data.activeTargets[] | select(.health == "up") | .labels.job] | sort | join(",")')
    [ "$got" = "chatflow-consumer,chatflow-producer" ]
}
if ! poll "both targets up in /api/v1/targets" 30 targets_up; then
    curl -s "$PROM/api/v1/targets" | jq -c '.data.activeTargets[] | {job: .labels.job, health, lastError}' | sed 's/^/#   /'
fi

has_data() { [ "$(query "$1" | jq 'length')" -gt 0 ]; }
poll "PromQL up{job=~\"chatflow-.*\"} == 1 returns both services" 15 \
    bash -c '[ "$(curl -sf --data-urlencode "query=count(up{job=~\"chatflow-.*\"} == 1)" "$1/api/v1/query" | jq -r ".data.result[0].value[1]")" = 2 ]' _ "$PROM"
poll "PromQL chatflow_ws_handshakes_refused_total{job=\"chatflow-producer\"} >= 1 (the refused handshake)" 15 \
    has_data 'chatflow_ws_handshakes_refused_total{job="chatflow-producer"} >= 1'
poll "PromQL chatflow_sqs_queue_depth{job=\"chatflow-consumer\",shard=\"$ROOM\"} returns a sample" 20 \
    has_data "chatflow_sqs_queue_depth{job=\"chatflow-consumer\",shard=\"$ROOM\"}"
poll "PromQL sum(chatflow_sqs_requests_total{job=\"chatflow-consumer\",action=\"ReceiveMessage\"}) > 0" 20 \
    has_data 'sum(chatflow_sqs_requests_total{job="chatflow-consumer",action="ReceiveMessage"}) > 0'
poll "PromQL rate over chatflow_sqs_request_duration_seconds_count returns data" 20 \
    has_data 'sum by (job) (rate(chatflow_sqs_request_duration_seconds_count[5s])) > 0'

rules_evaluated() {
    local r
    r=$(curl -sf --max-time 5 "$PROM/api/v1/rules") || return 1
    # every rule evaluated at least once, none with an error
    [ "$(jq '[.data.groups[].rules[] | select(.health != "ok")] | length' <<<"$r")" = 0 ] &&
        [ "$(jq '[.data.groups[].rules[]] | length' <<<"$r")" -ge 12 ]
}
if ! poll "every rule of monitoring/alerts.yml evaluates without error on the real series" 15 rules_evaluated; then
    curl -s "$PROM/api/v1/rules" | jq -c '.data.groups[].rules[] | select(.health != "ok") | {name, health, lastError}' |
        sed 's/^/#   /' | head -5
fi
firing=$(curl -sf "$PROM/api/v1/alerts" | jq -r '[.data.alerts[] | select(.state == "firing") | .labels.alertname] | join(",")')
tap_is "$firing" "" "no alert fires on a healthy idle pair"

# SIGTERM: both services drain and exit 0 within their stop timeout.
stop_bg producer TERM 15; rc=$?
tap_is "$rc" 0 "producer exits 0 on SIGTERM"
stop_bg consumer TERM 15; rc=$?
tap_is "$rc" 0 "consumer exits 0 on SIGTERM"
finish
