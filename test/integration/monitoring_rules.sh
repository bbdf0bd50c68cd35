#!/usr/bin/env bash
# monitoring_rules — Prometheus config, alert rules and their unit tests, Grafana dashboard.
#
#  - promtool check config monitoring/prometheus.yml, check rules monitoring/alerts.yml and
#    monitoring/recording.yml, test rules monitoring/alerts_test.yml (Debian's prometheus package).
#  - Every alert has a unit test where it fires and one where it stays quiet, a severity, and a
#    runbook section in docs/operations.md named by both its `runbook` and `runbook_url`
#    annotations; and the tests really depend on each alert: with that alert's expression replaced
#    by one that never fires, `promtool test rules` must fail.
#  - Every recording rule is named level:metric:operation, is loaded by prometheus.yml, has a
#    promql_expr_test, and the tests fail when its expression is replaced.
#  - Every chatflow_* series named in the rules and the dashboard is one the code registers
#    (metrics_counter/gauge/histogram/sampled in producer/, consumer/, common/).
#  - The Grafana dashboard and provisioning files parse and point at the provisioned datasource.
# test-passes: none (promtool over files: no ChatFlow service runs)
. "$(dirname "$0")/../lib/common.sh"
cd "$ROOT"

if ! command -v promtool >/dev/null; then
    tap_fail "promtool not installed (Debian package prometheus; make deps installs it)"
    finish
fi
tap_check "promtool check config monitoring/prometheus.yml" promtool check config monitoring/prometheus.yml
tap_check "promtool check rules monitoring/alerts.yml" promtool check rules monitoring/alerts.yml
tap_check "promtool check rules monitoring/recording.yml" promtool check rules monitoring/recording.yml
tap_check "promtool test rules monitoring/alerts_test.yml" promtool test rules monitoring/alerts_test.yml

WORK="$TEST_LOGDIR/mutants"
rm -rf "$WORK" && mkdir -p "$WORK"
python3 - "$ROOT" "$WORK" <<'PY'
import glob, json, os, re, subprocess, sys
root, work = sys.argv[1], sys.argv[2]
failed = 0
def check(cond, desc, detail=None):
    global failed
    print(("ok - " if cond else "not ok - ") + desc)
    if not cond:
        failed += 1
        if detail:
            for l in str(detail).splitlines()[:6]: print("#   " + l)
try:
    import yaml
except ImportError:
    check(False, "PyYAML (python3-yaml) is needed to read the rule files")
    sys.exit(1)

rules_path = os.path.join(root, "monitoring/alerts.yml")
recording_path = os.path.join(root, "monitoring/recording.yml")
rules = yaml.safe_load(open(rules_path))
recording = yaml.safe_load(open(recording_path))
tests = yaml.safe_load(open(os.path.join(root, "monitoring/alerts_test.yml")))
prom = yaml.safe_load(open(os.path.join(root, "monitoring/prometheus.yml")))
check(set(prom.get("rule_files", [])) == {"alerts.yml", "recording.yml"},
      "prometheus.yml loads alerts.yml and recording.yml", prom.get("rule_files"))
check(set(tests.get("rule_files", [])) == {"alerts.yml", "recording.yml"},
      "alerts_test.yml loads alerts.yml and recording.yml", tests.get("rule_files"))
alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
fires, quiet = set(), set()
for t in tests["tests"]:
    for a in t.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
ops = open(os.path.join(root, "docs/operations.md")).read() if os.path.exists(os.path.join(root, "docs/operations.md")) else ""
headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+\s+(.*)$", ops, re.M)}
required = {"ChatFlowEndToEndLatencyP99High", "ChatFlowEndToEndLatencyP99Critical", "ChatFlowConnectionFailuresHigh",
            "ChatFlowConnectionFailuresCritical", "ChatFlowDeliverySuccessLow", "ChatFlowDeliverySuccessCritical",
            "ChatFlowQueueDepthHigh", "ChatFlowQueueDepthCritical", "ChatFlowDbFlushFailures", "ChatFlowDlqGrowing",
            "ChatFlowCircuitBreakerOpen", "ChatFlowTargetDown"}
names = {a["alert"] for a in alerts}
check(required <= names, "alerts.yml has every alert of the issue (latency, connections, delivery, depth, DB, DLQ, breaker, down)",
      required - names)
for a in alerts:
    n = a["alert"]
    check(n in fires and n in quiet, f"{n}: unit-tested firing and quiet",
          f"firing: {n in fires}, quiet: {n in quiet}")
    check(a.get("labels", {}).get("severity") in ("warning", "critical"), f"{n}: severity warning|critical")
    anchor = a.get("annotations", {}).get("runbook", "").split("#")[-1]
    check(anchor == n.lower() and anchor in headings, f"{n}: runbook section in docs/operations.md (#{n.lower()})")
    url = a.get("annotations", {}).get("runbook_url", "")
    check(url == f"docs/operations.md#{n.lower()}" and url.split("#")[-1] in headings,
          f"{n}: runbook_url docs/operations.md#{n.lower()}, an existing section", url or "no runbook_url")

# Recording rules: level:metric:operation names, each checked by a promql_expr_test.
records = [r for g in recording["groups"] for r in g["rules"]]
check(records and all("record" in r for r in records), "recording.yml holds recording rules only")
check(not any("record" in r for g in rules["groups"] for r in g["rules"]),
      "alerts.yml holds alerts only (recording rules live in recording.yml)")
expr_tested = " ".join(e.get("expr", "") for t in tests["tests"] for e in t.get("promql_expr_test", []))
for r in records:
    n = r.get("record", "")
    check(re.fullmatch(r"chatflow:[a-z0-9_]+:[a-z0-9_]+", n) is not None, f"{n}: named level:metric:operation")
    check(re.search(re.escape(n) + r"(?![a-z0-9_:])", expr_tested) is not None, f"{n}: has a promql_expr_test")

# Each alert's (recording rule's) tests must depend on it: the alert made inert (the recording
# rule made to record a constant) -> promtool test rules fails.
def mutant(tag, path, key, name, expr):
    d = os.path.join(work, tag); os.makedirs(d)
    for f in (rules_path, recording_path):
        mutated = yaml.safe_load(open(f))
        if f == path:
            for g in mutated["groups"]:
                for r in g["rules"]:
                    if r.get(key) == name:
                        r["expr"] = expr
        yaml.safe_dump(mutated, open(os.path.join(d, os.path.basename(f)), "w"))
    t = dict(tests); t["rule_files"] = ["alerts.yml", "recording.yml"]
    yaml.safe_dump(t, open(os.path.join(d, "alerts_test.yml"), "w"))
    return subprocess.run(["promtool", "test", "rules", os.path.join(d, "alerts_test.yml")],
                          capture_output=True, text=True).returncode
for i, a in enumerate(alerts):
    check(mutant(f"alert{i}", rules_path, "alert", a["alert"], "vector(0) > 1") != 0,
          f"{a['alert']}: the unit tests fail when the alert never fires")
for i, r in enumerate(records):
    check(mutant(f"record{i}", recording_path, "record", r["record"], "vector(-1)") != 0,
          f"{r['record']}: the unit tests fail when the recording rule records something else")

# Series the rules and the dashboard use must be registered by the code.
registered = set()
for folder in ("producer", "consumer", "common"):
    for src in glob.glob(os.path.join(root, folder, "**", "*.c"), recursive=True):
        registered |= set(re.findall(r'metrics_(?:counter|gauge|histogram|sampled)\(\s*"([a-z0-9_]+)"', open(src).read()))
def base(series):
    return re.sub(r"_(bucket|sum|count)$", "", series) if series not in registered else series
for f in (rules_path, recording_path):
    used_rules = {base(m) for m in re.findall(r"\bchatflow_[a-z0-9_]+", open(f).read())}
    check(used_rules and used_rules <= registered,
          f"every chatflow_ series in {os.path.basename(f)} is registered by the code", sorted(used_rules - registered))
doc_names = set()
for d in ("operations", "capacity", "architecture", "deployment"):
    path = os.path.join(root, "docs", d + ".md")
    if os.path.exists(path):
        # (?<!:): "custom:chatflow_user_id" is a token claim (operations.md), not a series
        doc_names |= {base(m) for m in re.findall(r"(?<!:)\bchatflow_[a-z0-9_]+", open(path).read())}
check(doc_names <= registered, "every chatflow_ series the docs name is registered by the code",
      sorted(doc_names - registered))
dash_files = glob.glob(os.path.join(root, "monitoring/grafana/dashboards/*.json"))
check(len(dash_files) >= 1, "a Grafana dashboard exists in monitoring/grafana/dashboards")
for f in dash_files:
    try:
        dash = json.load(open(f))
    except ValueError as e:
        check(False, f"{os.path.basename(f)} parses", e); continue
    exprs = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
    used = {base(m) for e in exprs for m in re.findall(r"\bchatflow_[a-z0-9_]+", e)}
    check(exprs and all(exprs), f"{os.path.basename(f)}: every panel target has a PromQL expression")
    check(used <= registered, f"{os.path.basename(f)}: every chatflow_ series is registered by the code",
          sorted(used - registered))
    ds = {json.dumps(p.get("datasource")) for p in dash.get("panels", []) if p.get("type") != "row"}
    check(ds == {json.dumps({"type": "prometheus", "uid": "chatflow-prometheus"})},
          f"{os.path.basename(f)}: every panel uses the provisioned Prometheus datasource", ds)
    topics = {"connections": "chatflow_ws_connections_active", "messages in": "chatflow_messages_received_total",
              "messages out": "chatflow_broadcast_deliveries_total", "ack latency": "chatflow_ack_latency_seconds",
              "end-to-end latency": "chatflow_end_to_end_latency_seconds", "SQS requests": "chatflow_sqs_requests_total",
              "DB batch size": "chatflow_db_batch_size", "DB flush time": "chatflow_db_flush_duration_seconds",
              "DLQ": "chatflow_dlq_messages_total", "queue depth": "chatflow_sqs_queue_depth",
              "breaker": "chatflow_circuit_breaker_state"}
    missing = [k for k, m in topics.items() if m not in used]
    check(not missing, f"{os.path.basename(f)}: panels for " + ", ".join(topics), missing)
prov = os.path.join(root, "monitoring/grafana/provisioning")
dsy = yaml.safe_load(open(os.path.join(prov, "datasources/prometheus.yml")))
check(dsy["datasources"][0]["uid"] == "chatflow-prometheus" and dsy["datasources"][0]["type"] == "prometheus",
      "Grafana datasource provisioning: Prometheus, uid chatflow-prometheus")
dby = yaml.safe_load(open(os.path.join(prov, "dashboards/chatflow.yml")))
check(dby["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards",
      "Grafana dashboard provisioning reads the folder docker-compose mounts")
sys.exit(1 if failed else 0)
PY
[ $? -eq 0 ] || TAP_FAILED=$((TAP_FAILED + 1))
finish
