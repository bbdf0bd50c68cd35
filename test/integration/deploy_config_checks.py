"""deploy_config_checks — the structural checks of test/integration/deploy_config.sh.

    python3 deploy_config_checks.py ROOT RENDER_DIR [--compose-structure]

Prints "ok - ..." / "not ok - ..." lines (test/run's format); exit 0 when nothing failed.
Checks the Dockerfiles, the ECS requests rendered by `deploy/ecs/deploy render` into RENDER_DIR,
the IAM policies against the SQS calls the code makes, docs/deployment.md against those files, and
(with --compose-structure, used when no docker-compose is installed) the compose file's
references. With botocore importable, every rendered request is also validated against the real
AWS API model, offline.
"""
import fnmatch
import glob
import json
import os
import re
import sys

ROOT, OUT = sys.argv[1], sys.argv[2]
COMPOSE_STRUCTURE = "--compose-structure" in sys.argv[3:]
failed = 0


def check(cond, desc, detail=None):
    global failed
    if cond:
        print(f"ok - {desc}")
    else:
        failed += 1
        print(f"not ok - {desc}")
        if detail:
            for line in str(detail).splitlines()[:8]:
                print(f"#   {line}")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------ settings the services know
# Every environment name a deployment sets must be one the settings tables read (a typo would be
# ignored silently by the service and the default used).
SETTINGS_SOURCES = ["producer/settings.c", "consumer/settings.c", "common/config.h"]
known_env = set()
for src in SETTINGS_SOURCES:
    known_env |= set(re.findall(r'CONFIG_OPT_[A-Z]+\(\s*"([A-Z0-9_]+)"', read(src)))
LIBPQ_ENV = {"PGPASSWORD"}  # read by libpq itself, not by the settings table
AWS_SDK_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
check({"CHATFLOW_STOP_TIMEOUT_S", "DATABASE_URL", "AWS_ENDPOINT_URL_SQS"} <= known_env,
      "settings tables list the variables deployments rely on",
      f"found: {sorted(known_env)}")


def setting_default(name, sources=SETTINGS_SOURCES):
    for src in sources:
        m = re.search(r'"%s",\s*"[a-z0-9-]+",\s*\w+,\s*[\w.]+,\s*"([^"]*)"' % name, read(src))
        if m:
            return m.group(1)
    return None


# ------------------------------------------------------------------ Dockerfiles
for svc, ws_port, admin_port in (("producer", 8080, 9090), ("consumer", 8081, 9091)):
    path = f"deploy/docker/Dockerfile.{svc}"
    text = read(path)
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    check(len(froms) >= 2 and froms[0][0] == "debian:bookworm" and froms[-1][0] == "debian:bookworm-slim",
          f"{path}: multi-stage, builds on debian:bookworm, runs on debian:bookworm-slim", froms)
    build_stage, run_stage = re.split(r"^FROM\s+debian:bookworm-slim.*$", text, maxsplit=1, flags=re.M)
    check(re.search(rf"\bmake\b.*chatflow-{svc}\b", build_stage) is not None,
          f"{path}: the builder runs the project's Makefile for chatflow-{svc}")
    check(re.search(r"COPY\s+--from=", run_stage) is not None, f"{path}: the run stage copies the built binaries")
    runtime_pkgs = re.findall(r"\b(lib[a-z0-9.+-]+)\b", " ".join(re.findall(r"apt-get install[^&]*", run_stage)))
    check(runtime_pkgs and not [p for p in runtime_pkgs if p.endswith("-dev")],
          f"{path}: the run stage installs runtime libraries only", runtime_pkgs)
    for lib in ("libwebsockets17", "libcurl4", "libssl3", "libpq5", "libjansson4", "libmicrohttpd12"):
        check(lib in runtime_pkgs, f"{path}: run stage installs {lib}")
    hc = re.search(r"^HEALTHCHECK\b.*?(?:\n(?!\S).*?)*$", run_stage, re.M)
    check(hc is not None and "/health/live" in hc.group(0), f"{path}: HEALTHCHECK probes /health/live")
    users = re.findall(r"^USER\s+(\S+)", run_stage, re.M)
    check(users and users[-1].split(":")[0] not in ("root", "0"), f"{path}: runs as a non-root USER", users)
    ep = re.search(r"^ENTRYPOINT\s+(\[.*\])", run_stage, re.M)
    check(ep is not None and "tini" in ep.group(1) and f"chatflow-{svc}" in ep.group(1),
          f"{path}: tini is PID 1 and execs chatflow-{svc} (SIGTERM reaches the service)")
    check(re.search(rf"^EXPOSE\s+{ws_port}\s+{admin_port}\s*$", run_stage, re.M) is not None,
          f"{path}: exposes {ws_port} and {admin_port}")
    env_names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", " ".join(re.findall(r"^ENV\b(?:.*\\\n)*.*$", run_stage, re.M))))
    check(env_names and env_names <= known_env, f"{path}: ENV sets only known settings", env_names - known_env)
    check(not re.search(r"^(CMD|ENTRYPOINT).*--(?!migrate)[a-z]", run_stage, re.M),
          f"{path}: configuration through the environment, no flags baked into the image")

di = read(".dockerignore").split()
check("build" in di and ".git" in di and "node_modules" in di, ".dockerignore keeps build/, .git and node_modules out")

# ------------------------------------------------------------------ ECS: task definitions
renders = sorted(glob.glob(os.path.join(OUT, "**", "*.json"), recursive=True))
check(len(renders) >= 10, f"deploy render wrote the requests ({len(renders)} files)")
bad = []
for f in renders:
    try:
        text = open(f, encoding="utf-8").read()
        json.loads(text)
        if re.search(r"__[A-Z_]+__|@[a-z-]+@", text):
            bad.append(f"{f}: unfilled token")
    except ValueError as e:
        bad.append(f"{f}: {e}")
check(not bad, "every rendered request is JSON with every token filled", "\n".join(bad))

tasks = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "task-*.json"))}
check(sorted(tasks) == ["task-consumer.json", "task-producer.json"],
      "one task definition per service: the producer's and the consumer's", sorted(tasks))
PORTS = {"producer": (8080, 9090), "consumer": (8081, 9091)}
for name, td in sorted(tasks.items()):
    svc = "producer" if "producer" in name else "consumer"
    ws_port, admin_port = PORTS[svc]
    c = td["containerDefinitions"][0]
    env = {e["name"]: e["value"] for e in c.get("environment", [])}
    secrets = {s["name"]: s["valueFrom"] for s in c.get("secrets", [])}
    check(td.get("networkMode") == "awsvpc" and "FARGATE" in td.get("requiresCompatibilities", []),
          f"{name}: awsvpc on Fargate")
    ports = sorted(p["containerPort"] for p in c.get("portMappings", []))
    check(ports == sorted([ws_port, admin_port]), f"{name}: portMappings {ws_port} (WebSocket) and {admin_port} (admin)", ports)
    check(env.get("CHATFLOW_WS_PORT") == str(ws_port) and env.get("CHATFLOW_ADMIN_PORT") == str(admin_port),
          f"{name}: the ports in the environment match the mappings")
    hc = " ".join(c.get("healthCheck", {}).get("command", []))
    check(f"127.0.0.1:{admin_port}/health/live" in hc, f"{name}: container healthCheck on /health/live", hc)
    lc = c.get("logConfiguration", {})
    check(lc.get("logDriver") == "awslogs" and {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(lc.get("options", {})),
          f"{name}: awslogs with group, region and stream prefix")
    drain = int(env.get("CHATFLOW_STOP_TIMEOUT_S") or setting_default("CHATFLOW_STOP_TIMEOUT_S"))
    stop = c.get("stopTimeout", 30)
    check(drain + 5 <= stop <= 120,
          f"{name}: stopTimeout {stop}s covers the service's drain ({drain}s) plus a margin, within Fargate's 120s")
    check(set(env) | set(secrets) <= known_env | LIBPQ_ENV,
          f"{name}: every variable is a known setting", (set(env) | set(secrets)) - known_env - LIBPQ_ENV)
    check(not (set(env) & AWS_SDK_ENV) and not any(re.search(r"://[^/@]*:[^/@]*@", v) for v in env.values()),
          f"{name}: no credentials or passwords in the plain environment (the task role and secrets carry them)")
    user = c.get("user", "")
    check(user and user.split(":")[0] not in ("root", "0"), f"{name}: runs as a non-root user", user)
    if svc == "consumer":
        check(secrets.get("PGPASSWORD", "").startswith("arn:aws:secretsmanager:"),
              f"{name}: database password from Secrets Manager (PGPASSWORD secret)", secrets)
        check(env.get("DATABASE_URL", "").startswith("postgresql://"), f"{name}: DATABASE_URL set (without password)")
        check(env.get("CHATFLOW_MIGRATE_ON_START") == "false",
              f"{name}: migrations run once by the deploy script, not by every task")
        # What consumer/bus.c parse_url() accepts: plain redis://, no credentials (no TLS client).
        check(re.fullmatch(r"redis://[A-Za-z0-9.-]+(:\d{1,5})?(/\d{1,4})?", env.get("CHATFLOW_REDIS_URL", "")) is not None,
              f"{name}: CHATFLOW_REDIS_URL is a redis://host:port the bus accepts (the cluster bus is on)",
              env.get("CHATFLOW_REDIS_URL"))
        check(not {"CHATFLOW_SHARD_FIRST", "CHATFLOW_SHARD_LAST"} & set(env),
              f"{name}: no shard range: every consumer task polls every shard (competing consumers)",
              {k: env[k] for k in env if k.startswith("CHATFLOW_SHARD_")})
        check(td.get("taskRoleArn", "").endswith(":role/chatflow-consumer-task"),
              f"{name}: the consumer task role (iam/consumer-task-policy.json)", td.get("taskRoleArn"))

# ------------------------------------------------------------------ ECS: services, ALB, autoscaling
services = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "service-*.json"))}
check(sorted(services) == ["service-consumer.json", "service-producer.json"],
      "two services: one producer service, one consumer service (no per-range consumer services)",
      sorted(services))
tgs = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "target-group-*.json"))
       if "attributes" not in f and "target-group-api" not in f}
api_tgs = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "target-group-api*.json"))}
tg_attrs = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "target-group-attributes-*.json"))}
tg_name = lambda arn: arn.split(":")[-1].split("/")[1]
for name, s in sorted(services.items()):
    svc = "producer" if "producer" in name else "consumer"
    td = tasks.get(name.replace("service-", "task-"), {"containerDefinitions": [{}]})
    c = td["containerDefinitions"][0]
    lb = s["loadBalancers"][0]
    check(lb["containerPort"] == PORTS[svc][0] and lb["containerName"] == c.get("name"),
          f"{name}: the load balancer targets the WebSocket port of the task's container")
    check(s["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED",
          f"{name}: tasks get no public IP")
    dc = s["deploymentConfiguration"]
    cb = dc.get("deploymentCircuitBreaker", {})
    # Rolling: new tasks are up and healthy before old ones stop, and a release whose tasks never
    # get healthy (a bad image, Redis unreachable at start) is rolled back by ECS.
    check(dc.get("minimumHealthyPercent") == 100 and dc.get("maximumPercent") == 200
          and cb.get("enable") is True and cb.get("rollback") is True,
          f"{name}: rolling deployment (minimumHealthyPercent 100, maximumPercent 200), circuit breaker with rollback",
          dc)
    grace = s.get("healthCheckGracePeriodSeconds", 0)
    tg = tgs.get(f"target-group-{svc}.json", {})
    to_healthy = tg.get("HealthyThresholdCount", 0) * tg.get("HealthCheckIntervalSeconds", 0)
    check(grace >= c.get("healthCheck", {}).get("startPeriod", 0) and grace >= to_healthy,
          f"{name}: health check grace period ({grace}s) covers the container's start period and the "
          f"target group's way to healthy ({to_healthy}s)")
    if svc == "consumer":
        check(s.get("serviceName") == "chatflow-consumer" and s["desiredCount"] >= 2,
              f"{name}: one consumer service, chatflow-consumer, with at least 2 tasks (any task serves any room)",
              (s.get("serviceName"), s["desiredCount"]))
        api_lb = [b for b in s["loadBalancers"][1:] if b["containerPort"] == PORTS[svc][1]]
        check(len(s["loadBalancers"]) == 2 and len(api_lb) == 1 and tg_name(lb["targetGroupArn"]) == tg.get("Name")
              and tg_name(api_lb[0]["targetGroupArn"]) == api_tgs.get("target-group-api.json", {}).get("Name"),
              f"{name}: the consumer target group on the WebSocket port, the room API group on the admin port",
              s["loadBalancers"])
    else:
        check(len(s["loadBalancers"]) == 1 and tg_name(lb["targetGroupArn"]) == tg.get("Name"),
              f"{name}: the producer target group only")
for name, tg in sorted(tgs.items()):
    svc = "producer" if "producer" in name else "consumer"
    # /health/serving: accepting and not draining. Not /health/ready: a dependency incident must
    # not take every task out of the load balancer (and ECS would replace them all).
    check(tg["HealthCheckPath"] == "/health/serving" and tg["HealthCheckPort"] == str(PORTS[svc][1])
          and tg["Port"] == PORTS[svc][0] and tg["TargetType"] == "ip",
          f"{name}: ip targets on the WebSocket port, health check /health/serving on the admin port")
check(len(tgs) == len(services), "one target group per service", f"{sorted(tgs)} vs {sorted(services)}")
for name, tg in sorted(api_tgs.items()):
    check(tg["Port"] == PORTS["consumer"][1] and tg["HealthCheckPath"] == "/health/serving"
          and tg["HealthCheckPort"] == "traffic-port" and tg["TargetType"] == "ip",
          f"{name}: ip targets on the consumer's admin port (the room API), health check /health/serving")
check(sorted(api_tgs) == ["target-group-api.json"], "one room API target group, the consumer service's", sorted(api_tgs))

# Drain. ECS stops a task in this order: deregister it from its target groups (no new connections;
# open ones keep flowing), wait the deregistration delay, then SIGTERM; the service drains within
# CHATFLOW_STOP_TIMEOUT_S; SIGKILL comes stopTimeout after SIGTERM. So: every group gets the
# attributes, the delay covers an in-flight room API request (bounded to about 3 s: consumer.md),
# and stopTimeout outlasts the service's own drain (checked per task definition above).
attr_groups = {tg_name(a["TargetGroupArn"]) for a in tg_attrs.values()}
all_groups = {t["Name"] for t in list(tgs.values()) + list(api_tgs.values())}
check(attr_groups == all_groups, "every target group gets the drain and stickiness attributes",
      f"{sorted(attr_groups)} vs {sorted(all_groups)}")
delays = {}
for f, a in sorted(tg_attrs.items()):
    attrs = {x["Key"]: x["Value"] for x in a["Attributes"]}
    delays[tg_name(a["TargetGroupArn"])] = int(attrs["deregistration_delay.timeout_seconds"])
    check(attrs.get("stickiness.enabled") == "false" and 5 <= delays[tg_name(a["TargetGroupArn"])] <= 60,
          f"{f}: no stickiness (a WebSocket stays on its target), deregistration delay 5-60 s")

# The tasks see the deregistration themselves: each polls ELBv2 DescribeTargetHealth for its own
# target (its IP, its WebSocket port) in the group its service registers that port with, every
# CHATFLOW_LB_POLL_S, and once it says "draining" closes its clients with 1001 so they reconnect
# to another task while the ALB still carries their connections. So the group named must be the
# service's WebSocket group, and a poll plus a margin (the call itself, the closing handshakes,
# clients reconnecting) must fit in that group's deregistration delay; SIGTERM comes after it.
LB_DRAIN_MARGIN_S = 10
for svc in ("producer", "consumer"):
    name = f"task-{svc}.json"
    c = tasks.get(name, {"containerDefinitions": [{}]})["containerDefinitions"][0]
    env = {e["name"]: e["value"] for e in c.get("environment", [])}
    ws_lbs = [b for b in services.get(f"service-{svc}.json", {}).get("loadBalancers", [])
              if b.get("containerPort") == PORTS[svc][0]]
    ws_arn = ws_lbs[0]["targetGroupArn"] if len(ws_lbs) == 1 else None
    check(ws_arn is not None and env.get("CHATFLOW_LB_TARGET_GROUP_ARN") == ws_arn and tg_name(ws_arn) == f"chatflow-{svc}",
          f"{name}: CHATFLOW_LB_TARGET_GROUP_ARN is the group service-{svc}.json registers port {PORTS[svc][0]} with "
          f"(chatflow-{svc}): the task watches its own WebSocket target",
          (env.get("CHATFLOW_LB_TARGET_GROUP_ARN"), ws_lbs))
    check(not {"CHATFLOW_LB_TARGET_IP", "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2"} & set(env),
          f"{name}: no fixed LB target IP or ELB endpoint: each task reads its own address from the ECS task "
          f"metadata and asks the region's ELB", {k: env[k] for k in env if k.startswith(("CHATFLOW_LB_TARGET_IP", "AWS_ENDPOINT_URL_ELASTIC"))})
    poll_src = "" if env.get("CHATFLOW_LB_POLL_S") else " (unset: the settings' default)"
    poll = env.get("CHATFLOW_LB_POLL_S") or setting_default("CHATFLOW_LB_POLL_S", [f"{svc}/settings.c", "common/config.h"])
    poll = int(poll) if poll and poll.isdigit() else None
    delay = delays.get(tg_name(ws_arn)) if ws_arn else None
    stop_s = int(env.get("CHATFLOW_STOP_TIMEOUT_S")
                 or setting_default("CHATFLOW_STOP_TIMEOUT_S", [f"{svc}/settings.c", "common/config.h"]))
    stop = c.get("stopTimeout", 30)
    check(delay is not None and poll is not None and poll + LB_DRAIN_MARGIN_S <= delay and stop > stop_s,
          f"{name}: drain timing: CHATFLOW_LB_POLL_S {poll} s{poll_src} + {LB_DRAIN_MARGIN_S} s margin <= "
          f"chatflow-{svc}'s deregistration delay ({delay} s: clients told to reconnect before the ALB cuts them), "
          f"and stopTimeout {stop} s > CHATFLOW_STOP_TIMEOUT_S {stop_s} s",
          {"poll": poll, "delay": delay, "stopTimeout": stop, "CHATFLOW_STOP_TIMEOUT_S": stop_s})

lba = {a["Key"]: a["Value"] for a in load(os.path.join(OUT, "load-balancer-attributes.json"))["Attributes"]}
ping = max(int(setting_default("CHATFLOW_PING_INTERVAL_S") or 30), 30)
check(int(lba["idle_timeout.timeout_seconds"]) > ping + 10,
      f"ALB idle timeout ({lba['idle_timeout.timeout_seconds']}s) outlasts a ping interval plus pong timeout")

prod_env = {e["name"]: e["value"] for e in tasks["task-producer.json"]["containerDefinitions"][0]["environment"]}
cons_env = {e["name"]: e["value"] for e in tasks.get("task-consumer.json", {"containerDefinitions": [{}]})
            ["containerDefinitions"][0].get("environment", [])}
shard_numbers = list(range(1, int(prod_env["CHATFLOW_QUEUE_SHARDS"]) + 1))
check(cons_env.get("CHATFLOW_QUEUE_SHARDS") == prod_env["CHATFLOW_QUEUE_SHARDS"],
      "the consumer task and the producer agree on CHATFLOW_QUEUE_SHARDS (the room-to-shard map depends on it)",
      (cons_env.get("CHATFLOW_QUEUE_SHARDS"), prod_env["CHATFLOW_QUEUE_SHARDS"]))

# Routing: the producer host whole to the producer; on the consumer host one rule for the
# subscriptions of every room id and one for the room API — nothing per room, and nothing else of
# the admin port (/metrics, /api/metrics/*).
rules = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "listener-rule-*.json"))}
check(sorted(rules) == ["listener-rule-consumer-api.json", "listener-rule-consumer.json", "listener-rule-producer.json"],
      "three listener rules: the producer host, the consumer host's /chat/* and its /api/rooms/*", sorted(rules))


def rule_shape(r):
    hosts = [v for c in r["Conditions"] for v in c.get("HostHeaderConfig", {}).get("Values", [])]
    paths = [v for c in r["Conditions"] for v in c.get("PathPatternConfig", {}).get("Values", [])]
    return hosts, paths, [tg_name(a["TargetGroupArn"]) for a in r["Actions"] if a["Type"] == "forward"]


consumer_host = prod_env.get("CHATFLOW_WEB_EVENTS_URL", "").split("//")[-1]
api_host = prod_env.get("CHATFLOW_WEB_API_URL", "").split("//")[-1]
shape = rule_shape(rules.get("listener-rule-consumer.json", {"Conditions": [], "Actions": []}))
check(shape == ([consumer_host], ["/chat/*"], ["chatflow-consumer"]),
      "the consumer host's /chat/* (every room id) goes to the consumer target group, the host the page subscribes to",
      shape)
shape = rule_shape(rules.get("listener-rule-consumer-api.json", {"Conditions": [], "Actions": []}))
check(shape == ([api_host], ["/api/rooms/*"], ["chatflow-api"]),
      "the consumer host's /api/rooms/* (and not /metrics) goes to the room API group, the host the page calls",
      shape)
for f, r in sorted(rules.items()):
    values = sum(len(c.get("HostHeaderConfig", c.get("PathPatternConfig", {})).get("Values", [])) for c in r["Conditions"])
    check(values <= 5, f"{f}: at most 5 condition values (ALB limit)", values)
pr = rules.get("listener-rule-producer.json", {"Conditions": [], "Actions": [{"TargetGroupArn": "x/x"}]})
check([c["Field"] for c in pr["Conditions"]] == ["host-header"]
      and tg_name(pr["Actions"][0]["TargetGroupArn"]) == "chatflow-producer",
      "the producer host is routed whole to the producer: /chat/* and the chat page at /")
check(cons_env.get("CHATFLOW_API_ALLOW_ORIGIN", "").startswith("https://")
      and prod_env.get("CHATFLOW_WEB_EVENTS_URL", "").startswith("wss://"),
      "the page served by the producer subscribes over wss:// and the room API allows its origin (CORS)",
      (cons_env.get("CHATFLOW_API_ALLOW_ORIGIN"), prod_env.get("CHATFLOW_WEB_EVENTS_URL")))
prios = [r["Priority"] for r in rules.values()]
check(len(prios) == len(set(prios)), "listener rule priorities are distinct", sorted(prios))

# Autoscaling: each service has a scalable target; its minimum is the service's desired count; the
# CPU target is below one core's share of the task (one lws service thread per task is the limit:
# a higher average would let that thread saturate first).
cluster = services["service-producer.json"]["cluster"]
targets = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "autoscaling-*-target.json"))}
policies = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "autoscaling-*-policy*.json"))}
for svc in ("producer", "consumer"):
    s = services.get(f"service-{svc}.json", {})
    rid = f"service/{cluster}/{s.get('serviceName')}"
    t = targets.get(f"autoscaling-{svc}-target.json", {})
    check(t.get("ResourceId") == rid and t.get("ScalableDimension") == "ecs:service:DesiredCount"
          and t.get("MinCapacity") == s.get("desiredCount") and t.get("MaxCapacity", 0) > t.get("MinCapacity", 0),
          f"{svc} autoscaling: a scalable target on its service, minimum = the service's desired count, room to grow",
          t)
    mine = {n: p for n, p in policies.items() if p.get("ResourceId") == rid}
    cpu = [p["TargetTrackingScalingPolicyConfiguration"] for p in mine.values() if p.get("PolicyType") == "TargetTrackingScaling"
           and p["TargetTrackingScalingPolicyConfiguration"].get("PredefinedMetricSpecification", {})
           .get("PredefinedMetricType") == "ECSServiceAverageCPUUtilization"]
    core_share = 100.0 * 1024 / int(tasks[f"task-{svc}.json"]["cpu"])
    check(len(cpu) == 1 and cpu[0]["TargetValue"] < core_share and not cpu[0].get("DisableScaleIn"),
          f"{svc} autoscaling: target tracking on CPU below one core's share of the task ({core_share:.0f} %), scaling in and out",
          cpu)
check(sum(1 for p in policies.values() if p.get("ResourceId") == f"service/{cluster}/chatflow-producer") == 1,
      "producer autoscaling: the CPU policy only")
cons_rid = f"service/{cluster}/chatflow-consumer"
req = [p["TargetTrackingScalingPolicyConfiguration"] for p in policies.values() if p.get("ResourceId") == cons_rid
       and p["TargetTrackingScalingPolicyConfiguration"].get("PredefinedMetricSpecification", {})
       .get("PredefinedMetricType") == "ALBRequestCountPerTarget"]
lb_arn = load(os.path.join(OUT, "load-balancer-attributes.json"))["LoadBalancerArn"]
cons_tg_arn = services["service-consumer.json"]["loadBalancers"][0]["targetGroupArn"]
want_label = lb_arn.split(":loadbalancer/", 1)[-1] + "/" + cons_tg_arn.split(":")[-1]
# WebSocket handshakes are the only requests on that group: new subscriptions per task and
# minute. Scale-in is left to CPU: a scale-in or deployment makes a wave of reconnects, which
# must not count as load that could hold capacity up.
check(len(req) == 1 and req[0]["PredefinedMetricSpecification"].get("ResourceLabel") == want_label
      and req[0].get("DisableScaleIn") is True,
      "consumer autoscaling: request count per target of the WebSocket group (the handshakes), scale-out only",
      (req, want_label))
check(set(policies) == {"autoscaling-producer-policy.json", "autoscaling-consumer-policy-cpu.json",
                        "autoscaling-consumer-policy-requests.json"}
      and all(any(p.get("ResourceId") == t.get("ResourceId") for t in targets.values()) for p in policies.values()),
      "every scaling policy belongs to a registered scalable target", sorted(policies))

# ------------------------------------------------------------------ IAM: least privilege
# SQS client calls -> the IAM action that authorises them (batch calls use the single action's).
CALL_ACTION = {"sqs_send_message_batch": "sqs:SendMessage", "sqs_send_message": "sqs:SendMessage",
               "sqs_get_queue_url": "sqs:GetQueueUrl", "sqs_receive_message": "sqs:ReceiveMessage",
               "sqs_delete_message_batch": "sqs:DeleteMessage",
               "sqs_change_visibility_batch": "sqs:ChangeMessageVisibility",
               "sqs_get_queue_attributes": "sqs:GetQueueAttributes",
               # common/ calls made on a service's behalf
               "queue_epoch_position": "sqs:GetQueueAttributes"}
NOT_IAM_ACTIONS = {"sqs:SendMessageBatch", "sqs:DeleteMessageBatch", "sqs:ChangeMessageVisibilityBatch"}


def used_actions(folder):
    used = set()
    for src in glob.glob(os.path.join(ROOT, folder, "*.c")):
        text = open(src, encoding="utf-8").read()
        used |= {a for call, a in CALL_ACTION.items() if re.search(rf"\b{call}\s*\(", text)}
    return used


def allows(policy, sqs_only=False):
    out = []
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if sqs_only and not any(a.startswith("sqs:") for a in acts):
            continue
        out.append((set(acts), res))
    return out


# Each task role also sees its own target's health (the tasks watch for their deregistration):
# DescribeTargetHealth has no resource-level permissions, so "*"; nothing else outside SQS.
LB_ACTION = "elasticloadbalancing:DescribeTargetHealth"
for role in ("producer", "consumer"):
    pol = load(os.path.join(OUT, "iam", f"{role}-task-policy.json"))
    non_sqs = [(sorted(a), r) for a, r in allows(pol) if not all(x.startswith("sqs:") for x in a)]
    sids = [st.get("Sid") for st in pol["Statement"] if LB_ACTION in str(st["Action"])]
    check(non_sqs == [([LB_ACTION], ["*"])] and sids == ["SeeOwnTargetHealth"],
          f"{role} role: allows {LB_ACTION} (Resource \"*\": the action takes none), so its tasks see their "
          f"target draining; nothing else beside SQS", (non_sqs, sids))

ROOM_ARN = re.compile(r"^arn:aws:sqs:[^:]+:\d{12}:chatflow-room-")
prod = allows(load(os.path.join(OUT, "iam", "producer-task-policy.json")), sqs_only=True)
prod_actions = set().union(*(a for a, _ in prod))
check(prod_actions == {"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"},
      "producer role: sqs:SendMessage (covers SendMessageBatch), sqs:GetQueueUrl and "
      "sqs:GetQueueAttributes (the queue's epoch) only", prod_actions)
check(all(ROOM_ARN.match(r) for _, res in prod for r in res), "producer role: only chatflow-room-* queues")
check(used_actions("producer") <= prod_actions and used_actions("producer"),
      "producer role grants every SQS action the producer's code calls", used_actions("producer") - prod_actions)
prod_deny = [st for st in load(os.path.join(OUT, "iam", "producer-task-policy.json"))["Statement"] if st["Effect"] == "Deny"]
check(prod_deny and all(str(st["Resource"]).endswith("-dlq.fifo") for st in prod_deny),
      "producer role: explicitly denied the per-room dead-letter queues the wildcard would match")



def effective(policy, arn):
    """The SQS actions a policy allows on one queue ARN: IAM's wildcard match; an explicit Deny wins."""
    def acts(st, effect):
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if st["Effect"] != effect or not any(fnmatch.fnmatchcase(arn, r) for r in res):
            return set()
        return {a for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]) if a.startswith("sqs:")}
    allowed = set().union(*(acts(st, "Allow") for st in policy["Statement"]))
    denied = set().union(*(acts(st, "Deny") for st in policy["Statement"]))
    return set() if "sqs:*" in denied else allowed - denied


cons_policy = load(os.path.join(OUT, "iam", "consumer-task-policy.json"))
region, account = re.match(r"arn:aws:sqs:([^:]+):(\d{12}):", prod[0][1][0]).groups()
q = lambda name: f"arn:aws:sqs:{region}:{account}:{name}"
ROOM_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
wrong = {s: effective(cons_policy, q(f"chatflow-room-{s}.fifo")) for s in shard_numbers}
wrong = {s: a for s, a in wrong.items() if a != ROOM_ACTIONS}
check(not wrong, f"consumer role: receive/delete/change-visibility/attributes/url on every queue shard 1-{shard_numbers[-1]}",
      wrong)
room_allows = [(a, r) for a, r in allows(cons_policy, sqs_only=True) if "sqs:ReceiveMessage" in a and "chatflow-db-spill" not in str(r)]
check(len(room_allows) == 1 and all(ROOM_ARN.match(r) and r.endswith("*.fifo") for r in room_allows[0][1]),
      "consumer role: the shards as one wildcard, chatflow-room-*.fifo (any shard count, no list to keep in step)",
      room_allows)
leak = {s: effective(cons_policy, q(f"chatflow-room-{s}-dlq.fifo")) for s in shard_numbers}
leak = {s: a for s, a in leak.items() if a}
cons_deny = [st for st in cons_policy["Statement"] if st["Effect"] == "Deny"]
check(not leak and cons_deny and all(str(st["Resource"]).endswith("-dlq.fifo") for st in cons_deny),
      "consumer role: explicitly denied the per-room dead-letter queues the wildcard would match", leak)
got = effective(cons_policy, q("chatflow-db-dlq.fifo"))
check(got == {"sqs:SendMessage", "sqs:GetQueueUrl"}, "consumer role: send only to the DLQ chatflow-db-dlq.fifo", got)
got = effective(cons_policy, q("chatflow-db-spill"))
check(got == {"sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
              "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
      "consumer role: send, receive and delete on the spill queue chatflow-db-spill", got)
got = {n: effective(cons_policy, q(n)) for n in ("orders.fifo", "chatflow-roomy", "chatflow-db-dlq")}
check(not any(got.values()), "consumer role: nothing on queues that are not ChatFlow's", got)
granted = set().union(*(a for a, _ in allows(cons_policy, sqs_only=True)))
check(used_actions("consumer") and granted == used_actions("consumer") and ROOM_ACTIONS <= used_actions("consumer"),
      "consumer role grants exactly the SQS actions the consumer's code calls",
      {"granted, not called": granted - used_actions("consumer"), "called, not granted": used_actions("consumer") - granted})

# The operator policy for `chatflow-sqs setup` grants what the tool calls, on ChatFlow's queues only.
setup_src = read("common/tools/sqs.c")
setup_calls = {"sqs:" + a for a in ("CreateQueue", "GetQueueUrl", "SetQueueAttributes", "GetQueueAttributes")
               if re.search(r"\bsqs_%s\s*\(" % re.sub(r"(?<!^)([A-Z])", r"_\1", a).lower(), setup_src)}
setup = allows(load(os.path.join(OUT, "iam", "sqs-setup-policy.json")))
setup_actions = set().union(*(a for a, _ in setup))
check(setup_calls and setup_calls <= setup_actions and not any(a in setup_actions for a in
      ("sqs:DeleteQueue", "sqs:PurgeQueue", "sqs:ReceiveMessage", "sqs:SendMessage")),
      "sqs-setup policy: what `chatflow-sqs setup` calls, nothing destructive or data-reading",
      (setup_calls, setup_actions))
check(all(re.match(r"^arn:aws:sqs:[^:]+:\d{12}:chatflow-(room-\*|db-dlq\.fifo|db-spill)$", r) for _, res in setup for r in res),
      "sqs-setup policy: only ChatFlow's queues")

# The read-only operator policy: what `chatflow-sqs stats` calls (queue URLs, then each queue's
# attributes), on ChatFlow's queues, and nothing else: no message is read, sent or deleted.
operator = allows(load(os.path.join(OUT, "iam", "operator-readonly-policy.json")))
operator_actions = set().union(*(a for a, _ in operator))
check(operator_actions == {"sqs:GetQueueUrl", "sqs:GetQueueAttributes"}
      and all(re.search(r"\bsqs_%s\s*\(" % f, setup_src) for f in ("get_queue_url", "get_queue_attributes")),
      "operator policy: exactly what `chatflow-sqs stats` calls (GetQueueUrl, GetQueueAttributes)",
      operator_actions)
check(all(re.match(r"^arn:aws:sqs:[^:]+:\d{12}:chatflow-(room-\*|db-dlq\.fifo|db-spill)$", r) for _, res in operator for r in res),
      "operator policy: only ChatFlow's queues")
op_td = load(os.path.join(OUT, "operator-task.json"))
op_c = op_td["containerDefinitions"][0]
check(op_td.get("taskRoleArn", "").endswith(":role/chatflow-operator") and op_c.get("entryPoint", [])[-1:] == ["/usr/local/bin/chatflow-sqs"]
      and op_c.get("command") == ["stats"]
      and op_c.get("image") == load(os.path.join(OUT, "task-consumer.json"))["containerDefinitions"][0].get("image")
      and op_c.get("user") == "10001:10001" and "portMappings" not in op_c,
      "operator task: chatflow-sqs stats from the consumer image, as uid 10001, under the chatflow-operator role, no ports")
deploy_src = read("deploy/ecs/deploy")
check("ensure_role chatflow-operator \"$OUT/iam/operator-readonly-policy.json\"" in deploy_src,
      "apply creates the chatflow-operator role with the read-only policy")

every = []
for f in glob.glob(os.path.join(OUT, "iam", "*-policy.json")):
    for st in load(f)["Statement"]:
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        every.append((os.path.basename(f), st["Effect"], acts, res))
check(not [e for e in every if e[1] == "Allow" and any(a.endswith("*") for a in e[2])],
      "no policy allows a wildcard action")
check(not [e for e in every if e[1] == "Allow" and "*" in e[3] and e[2] not in (["ecr:GetAuthorizationToken"], [LB_ACTION])],
      "no policy allows Resource \"*\" (except ecr:GetAuthorizationToken and elasticloadbalancing:DescribeTargetHealth, "
      "which take no resource)")
check(not [e for e in every if set(e[2]) & NOT_IAM_ACTIONS],
      "no policy names SQS batch calls as actions (IAM has none; they would be ignored)")
ex = load(os.path.join(OUT, "iam", "execution-role-policy.json"))
sm = [st for st in ex["Statement"] if "secretsmanager:GetSecretValue" in st["Action"]]
consumer_secret = tasks["task-consumer.json"]["containerDefinitions"][0]["secrets"][0]["valueFrom"]
check(len(sm) == 1 and sm[0]["Resource"] == consumer_secret,
      "execution role reads exactly the database password secret the consumer task names")

# ------------------------------------------------------------------ docs/deployment.md tells the truth
# Section 4's table names every file in deploy/ecs (by name or glob), and the figures the text
# quotes for the drain and the autoscaling are the ones the rendered requests carry.
deployment_md = read("docs/deployment.md")
sec4 = deployment_md.split("## 4. ECS", 1)[-1].split("\n## 5.", 1)[0]
files_table = re.search(r"(?:^\|.*\n)+", sec4, re.M)   # the section's first table: file | request
patterns = [p for line in (files_table.group(0) if files_table else "").splitlines() if line.startswith("| `")
            for p in re.findall(r"`([^`]+)`", line.split("|")[1])]
ecs_files = sorted(os.path.relpath(f, os.path.join(ROOT, "deploy/ecs"))
                   for f in glob.glob(os.path.join(ROOT, "deploy/ecs/**"), recursive=True) if os.path.isfile(f))
unnamed = [f for f in ecs_files if not any(fnmatch.fnmatchcase(f, p) for p in patterns)]
check(not unnamed, "docs/deployment.md section 4 names every file in deploy/ecs", unnamed)
named_missing = [p for p in patterns if not any(fnmatch.fnmatchcase(f, p) for f in ecs_files)]
check(not named_missing, "docs/deployment.md section 4 names no file deploy/ecs does not have", named_missing)
flat = " ".join(sec4.split())
cons_c = tasks["task-consumer.json"]["containerDefinitions"][0]
m = re.search(r"`CHATFLOW_STOP_TIMEOUT_S=(\d+)` in the environment, `stopTimeout: (\d+)`, target deregistration delay (\d+) s", flat)
said = tuple(int(x) for x in m.groups()) if m else None
check(said == (int(cons_env.get("CHATFLOW_STOP_TIMEOUT_S", 0)), cons_c.get("stopTimeout"), delays.get("chatflow-consumer"))
      and len(set(delays.values())) == 1,
      "docs/deployment.md quotes the drain the files set (stop timeout, stopTimeout, deregistration delay)",
      (said, cons_env.get("CHATFLOW_STOP_TIMEOUT_S"), cons_c.get("stopTimeout"), delays))
scale = {}
for svc in ("producer", "consumer"):
    t = targets.get(f"autoscaling-{svc}-target.json", {})
    scale[svc] = f"{t.get('MinCapacity')}–{t.get('MaxCapacity')} tasks"
cpu_of = lambda svc: next((int(p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]) for p in policies.values()
                           if p.get("ResourceId", "").endswith(f"/chatflow-{svc}") and p["TargetTrackingScalingPolicyConfiguration"]
                           .get("PredefinedMetricSpecification", {}).get("PredefinedMetricType") == "ECSServiceAverageCPUUtilization"), None)
want = [f"producer runs {scale['producer']}, target tracking on {cpu_of('producer')} % CPU",
        f"consumer runs {scale['consumer']}", f"**CPU, {cpu_of('consumer')} %**",
        f"**WebSocket handshakes, {int(req[0]['TargetValue']) if req else None} per task per minute**"]
check(all(w in flat for w in want), "docs/deployment.md quotes the autoscaling the files set",
      [w for w in want if w not in flat])

# ------------------------------------------------------------------ CloudWatch alarms
# What pages when Prometheus cannot: one queue-age alarm per queue shard (the consumers' shard
# count), the DLQ, the spill queue, the ALB's 5xx, and each service's running tasks below its
# autoscaling minimum; every alarm notifies the one topic, and recovers (OK) there too.
alarms = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "alarm-*.json"))}
# the render test's settings (deploy_config.sh renders with deploy/ecs/environment.example)
example = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(ROOT, "deploy/ecs/environment.example"))
               if re.match(r"^[A-Z0-9_]+=", l))
td_cons = load(os.path.join(OUT, "task-consumer.json"))
n_shards = int(next(e["value"] for e in td_cons["containerDefinitions"][0]["environment"]
                    if e["name"] == "CHATFLOW_QUEUE_SHARDS"))
ages = {a["Dimensions"][0]["Value"] for n, a in alarms.items() if n.startswith("alarm-queue-age-")}
check(ages == {f"chatflow-room-{i}.fifo" for i in range(1, n_shards + 1)},
      f"a queue-age alarm for each of the {n_shards} queue shards (ApproximateAgeOfOldestMessage)",
      sorted(ages))
def alarm(name):
    return alarms.get(name, {})
check(alarm("alarm-dlq-depth.json").get("Dimensions") == [{"Name": "QueueName", "Value": "chatflow-db-dlq.fifo"}]
      and alarm("alarm-dlq-depth.json").get("Threshold") == 0
      and alarm("alarm-dlq-depth.json").get("ComparisonOperator") == "GreaterThanThreshold",
      "the DLQ alarm fires on any visible message of chatflow-db-dlq.fifo")
check(alarm("alarm-spill-age.json").get("Dimensions") == [{"Name": "QueueName", "Value": "chatflow-db-spill"}],
      "the spill alarm watches chatflow-db-spill")
lb = example.get("CHATFLOW_LOAD_BALANCER_ARN", "").split(":loadbalancer/", 1)[-1]
check(alarm("alarm-alb-5xx.json").get("Dimensions") == [{"Name": "LoadBalancer", "Value": lb}],
      "the 5xx alarm names the load balancer as CloudWatch does (app/<name>/<id>)", lb)
for svc in ("producer", "consumer"):
    a = alarm(f"alarm-running-tasks-{svc}.json")
    target = load(os.path.join(OUT, f"autoscaling-{svc}-target.json"))
    dims = {d["Name"]: d["Value"] for d in a.get("Dimensions", [])}
    check(dims.get("ServiceName") == f"chatflow-{svc}" and dims.get("ClusterName") == example.get("CHATFLOW_CLUSTER")
          and a.get("Threshold") == target.get("MinCapacity") and a.get("ComparisonOperator") == "LessThanThreshold",
          f"the running-task alarm of chatflow-{svc} fires below its autoscaling minimum ({target.get('MinCapacity')})",
          (dims, a.get("Threshold")))
topic = example.get("CHATFLOW_ALARM_TOPIC_ARN")
check(alarms and all(a.get("AlarmActions") == [topic] and a.get("OKActions") == [topic] for a in alarms.values()),
      f"all {len(alarms)} alarms notify CHATFLOW_ALARM_TOPIC_ARN, firing and recovering")
check(len({a.get("AlarmName") for a in alarms.values()}) == len(alarms), "alarm names are distinct")

# ------------------------------------------------------------------ the real AWS API model (offline)
try:
    import botocore.session
    import botocore.validate
except ImportError:
    print("# botocore not importable: rendered requests not validated against the AWS API model")
else:
    session = botocore.session.get_session()
    OPS = [("task-*.json", "ecs", "RegisterTaskDefinition"), ("service-*.json", "ecs", "CreateService"),
           ("operator-task.json", "ecs", "RegisterTaskDefinition"),
           ("target-group-producer.json", "elbv2", "CreateTargetGroup"),
           ("target-group-consumer.json", "elbv2", "CreateTargetGroup"),
           ("target-group-api.json", "elbv2", "CreateTargetGroup"),
           ("target-group-attributes-*.json", "elbv2", "ModifyTargetGroupAttributes"),
           ("load-balancer-attributes.json", "elbv2", "ModifyLoadBalancerAttributes"),
           ("listener-rule-*.json", "elbv2", "CreateRule"),
           ("autoscaling-*-target.json", "application-autoscaling", "RegisterScalableTarget"),
           ("autoscaling-*-policy*.json", "application-autoscaling", "PutScalingPolicy"),
           ("alarm-*.json", "cloudwatch", "PutMetricAlarm")]
    seen = set()
    for pattern, service, op in OPS:
        shape = session.get_service_model(service).operation_model(op).input_shape
        for f in sorted(glob.glob(os.path.join(OUT, pattern))):
            seen.add(f)
            report = botocore.validate.ParamValidator().validate(load(f), shape)
            check(not report.has_errors(), f"{os.path.basename(f)}: valid {service} {op} request (botocore model)",
                  report.generate_report())
    top = {f for f in renders if os.path.dirname(f) == OUT.rstrip("/")}
    check(top <= seen, "every rendered request was checked against an API operation", top - seen)

# ------------------------------------------------------------------ compose (no docker-compose)
if COMPOSE_STRUCTURE:
    try:
        import yaml
    except ImportError:
        yaml = None
        check(False, "deploy/docker-compose.yml: PyYAML missing (python3-yaml), cannot check it")
    if yaml:
        dc = yaml.safe_load(read("deploy/docker-compose.yml"))
        svcs = dc.get("services", {})
        check({"localstack", "sqs-init", "postgres", "consumer", "producer", "prometheus", "grafana"} <= set(svcs),
              "compose: LocalStack, queue setup, PostgreSQL, consumer, producer, Prometheus, Grafana", sorted(svcs))
        dangling = [(n, d) for n, s in svcs.items() for d in (s.get("depends_on") or []) if d not in svcs]
        check(not dangling, "compose: every depends_on names a service", dangling)
        base = os.path.join(ROOT, "deploy")
        missing = []
        for n, s in svcs.items():
            b = s.get("build")
            if b:
                ctx = os.path.normpath(os.path.join(base, b.get("context", ".")))
                if not os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
                    missing.append(f"{n}: dockerfile")
            for v in s.get("volumes", []) or []:
                host = v.split(":")[0]
                if host.startswith((".", "/")) and not os.path.exists(os.path.normpath(os.path.join(base, host))):
                    missing.append(f"{n}: {host}")
            if not (s.get("image") or b):
                missing.append(f"{n}: neither image nor build")
        check(not missing, "compose: build files and mounted paths exist", missing)
        init = svcs["sqs-init"]
        check("chatflow-sqs" in " ".join(init.get("entrypoint", [])) and "setup" in init.get("entrypoint", []),
              "compose: queues created by the project's chatflow-sqs setup")
        for n in ("producer", "consumer"):
            deps = svcs[n].get("depends_on", {})
            check(isinstance(deps, dict) and deps.get("sqs-init", {}).get("condition") == "service_completed_successfully",
                  f"compose: {n} starts after the queues exist")
            env = svcs[n].get("environment", {})
            check(set(env) <= known_env | AWS_SDK_ENV, f"compose: {n} environment names are known settings",
                  set(env) - known_env - AWS_SDK_ENV)
        check(svcs["consumer"]["environment"].get("CHATFLOW_MIGRATE_ON_START") == "true",
              "compose: the consumer applies migrations at start")
        # As on ECS, the consumer joins the cluster bus, so `--scale consumer=N` shares every room.
        bus_url = svcs["consumer"]["environment"].get("CHATFLOW_REDIS_URL", "")
        bus_host = re.match(r"redis://([^:/]+)", bus_url)
        check(bus_host is not None and bus_host.group(1) in svcs
              and svcs["consumer"].get("depends_on", {}).get(bus_host.group(1), {}).get("condition") == "service_healthy",
              "compose: the consumer is on the cluster bus, a Redis service it waits for", bus_url)

sys.exit(1 if failed else 0)
