#!/usr/bin/env bash
# alertmanager — monitoring/alertmanager.yml, checked and run:
#  - amtool check-config accepts it;
#  - routes: a critical alert goes to chatflow-oncall, a warning to chatflow-team (amtool config
#    routes test);
#  - every alert an inhibit rule names is an alert of monitoring/alerts.yml (a renamed alert would
#    otherwise silently stop inhibiting or being inhibited);
#  - Debian's Alertmanager, started on a free loopback port with that file, is sent the alerts of
#    each inhibition (cause and symptom) through its API: every symptom is suppressed, inhibited by
#    its cause, while an alert no rule covers, and a symptom of another service or shard, stay
#    active.
# test-passes: none (Alertmanager over a configuration file: no ChatFlow service runs)
. "$(dirname "$0")/../lib/common.sh"
cd "$ROOT"

CONFIG=monitoring/alertmanager.yml
for tool in amtool prometheus-alertmanager; do
    command -v "$tool" >/dev/null ||
        { tap_fail "$tool installed (Debian package prometheus-alertmanager; make deps installs it)"; finish; }
done

tap_check "amtool check-config $CONFIG" amtool check-config "$CONFIG"

route_of() { amtool config routes test --config.file="$CONFIG" "$@" 2>&1 | tail -1; }
tap_is "$(route_of alertname=ChatFlowDatabaseDown severity=critical service=consumer)" chatflow-oncall \
    "a critical alert is routed to chatflow-oncall"
tap_is "$(route_of alertname=ChatFlowSpilling severity=warning service=consumer)" chatflow-team \
    "a warning is routed to chatflow-team"

# Every ChatFlow* name in the inhibit rules (plain or inside a regex alternation) is an alert.
unknown=$(python3 - "$CONFIG" monitoring/alerts.yml <<'PY'
import re, sys
rules = open(sys.argv[1]).read().split("inhibit_rules:", 1)[1]
named = set(re.findall(r"ChatFlow[A-Za-z0-9]+", rules.replace("ChatFlow(Producer|Consumer)Absent",
            "ChatFlowProducerAbsent ChatFlowConsumerAbsent")))
alerts = set(re.findall(r"^\s*- alert: (\S+)", open(sys.argv[2]).read(), re.M))
print(" ".join(sorted(named - alerts)))
PY
)
tap_is "$unknown" "" "every alert named in an inhibit rule is an alert of monitoring/alerts.yml"

# ---------------------------------------------------------------- a running Alertmanager

PORT=$(free_port) || { tap_fail "a free port"; finish; }
DATA="$TEST_LOGDIR/data"
rm -rf "$DATA" && mkdir -p "$DATA"
start_bg alertmanager prometheus-alertmanager --config.file="$CONFIG" --storage.path="$DATA" \
    --web.listen-address="127.0.0.1:$PORT" --cluster.listen-address=
if ! wait_http "http://127.0.0.1:$PORT/-/ready" 30; then
    tap_fail "Alertmanager started on 127.0.0.1:$PORT (log $(bg_log alertmanager))"
    finish
fi
tap_ok "Alertmanager started on 127.0.0.1:$PORT with $CONFIG"

# The alerts as Prometheus would send them: NAME:SERVICE[:SHARD] ... With RESOLVE=1, as resolved
# (endsAt now), as Prometheus sends an alert that stopped firing.
post_alerts() {
    RESOLVE=${RESOLVE:-0} python3 - "$@" <<'PY' | curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary @- "http://127.0.0.1:$PORT/api/v2/alerts"
import datetime, json, os, sys
out = []
now = datetime.datetime.now(datetime.timezone.utc).isoformat()
for spec in sys.argv[1:]:
    name, service, *shard = spec.split(":")
    labels = {"alertname": name, "service": service,
              "severity": "critical" if name.endswith(("Critical", "Down", "Absent", "Open", "NotDraining")) else "warning"}
    if shard:
        labels["shard"] = shard[0]
    alert = {"labels": labels, "annotations": {"summary": "test"}}
    if os.environ["RESOLVE"] == "1":
        alert["endsAt"] = now
    out.append(alert)
print(json.dumps(out))
PY
}

# state of NAME (with SHARD when given): active | suppressed, "+" when inhibited by something.
state_of() {
    curl -s "http://127.0.0.1:$PORT/api/v2/alerts" | python3 -c '
import json, sys
name, shard, service = sys.argv[1], sys.argv[2], sys.argv[3]
for a in json.load(sys.stdin):
    l = a["labels"]
    if l["alertname"] == name and l.get("shard", "") == shard and l.get("service", "") == service:
        s = a["status"]
        print(s["state"] + ("+" if s.get("inhibitedBy") else ""))
        break
else:
    print("missing")' "$1" "${2:-}" "${3:-consumer}"
}

# Inhibition is evaluated when alerts are read: give it a moment to see both alerts.
wait_state() { # NAME SHARD SERVICE WANT
    local got
    for _ in $(seq 1 50); do
        got=$(state_of "$1" "$2" "$3")
        [ "$got" = "$4" ] && break
        sleep 0.1
    done
    echo "$got"
}

pairs=(
    "ChatFlowEndToEndLatencyP99Critical:consumer ChatFlowEndToEndLatencyP99High:consumer"
    "ChatFlowConnectionFailuresCritical:producer ChatFlowConnectionFailuresHigh:producer"
    "ChatFlowDeliverySuccessCritical:producer ChatFlowDeliverySuccessLow:producer"
    "ChatFlowQueueDepthCritical:consumer:3 ChatFlowQueueDepthHigh:consumer:3"
    "ChatFlowSpillNotDraining:consumer ChatFlowSpilling:consumer"
    "ChatFlowConsumerAbsent:consumer ChatFlowDlqGrowing:consumer"
    "ChatFlowProducerAbsent:producer ChatFlowCircuitBreakerOpen:producer"
    "ChatFlowDatabaseDown:consumer ChatFlowDbFlushFailures:consumer"
    "ChatFlowBusDown:consumer ChatFlowQueueBacklogTotalHigh:consumer"
    "ChatFlowCircuitBreakerOpen:producer ChatFlowDeliverySuccessLow:producer"
)
for pair in "${pairs[@]}"; do
    read -r cause symptom <<<"$pair"
    IFS=: read -r s_name s_service s_shard <<<"$symptom"
    IFS=: read -r c_name _ <<<"$cause"
    code=$(post_alerts "$cause" "$symptom")
    [ "$code" = 200 ] || { tap_fail "Alertmanager took the alerts $cause $symptom (HTTP $code)"; continue; }
    tap_is "$(wait_state "$s_name" "${s_shard:-}" "$s_service" "suppressed+")" "suppressed+" \
        "$s_name is inhibited while $c_name fires"
    RESOLVE=1 post_alerts "$cause" "$symptom" >/dev/null # each pair on its own
done

# Not everything is silenced while causes fire: another shard's warning, another service's
# symptom, an alert no rule covers.
post_alerts ChatFlowQueueDepthCritical:consumer:3 ChatFlowQueueDepthHigh:consumer:3 \
    ChatFlowQueueDepthHigh:consumer:7 >/dev/null
tap_is "$(wait_state ChatFlowQueueDepthHigh 3 consumer suppressed+)" suppressed+ \
    "shard 3 is critical: its ChatFlowQueueDepthHigh inhibited"
tap_is "$(wait_state ChatFlowQueueDepthHigh 7 consumer active)" active \
    "ChatFlowQueueDepthHigh of shard 7 stays active (only shard 3 is critical)"
RESOLVE=1 post_alerts ChatFlowQueueDepthCritical:consumer:3 ChatFlowQueueDepthHigh:consumer:3 \
    ChatFlowQueueDepthHigh:consumer:7 >/dev/null
post_alerts ChatFlowDatabaseDown:consumer ChatFlowDbFlushFailures:consumer \
    ChatFlowBroadcastEventsDropped:consumer ChatFlowSpilling:producer >/dev/null
# the inhibition is in force (its symptom suppressed) before the others are read
tap_is "$(wait_state ChatFlowDbFlushFailures "" consumer suppressed+)" suppressed+ \
    "the database is down: ChatFlowDbFlushFailures inhibited"
tap_is "$(wait_state ChatFlowBroadcastEventsDropped "" consumer active)" active \
    "ChatFlowBroadcastEventsDropped, which no rule covers, stays active while the database is down"
tap_is "$(wait_state ChatFlowSpilling "" producer active)" active \
    "a symptom of another service (producer) is not inhibited by the consumer's causes"
finish
