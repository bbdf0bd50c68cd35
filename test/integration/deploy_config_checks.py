"""deploy_config_checks — the structural checks of test/integration/deploy_config.sh.

    python3 deploy_config_checks.py ROOT RENDER_DIR [--compose-structure]

Prints "ok - ..." / "not ok - ..." lines (test/run's format); exit 0 when nothing failed.
Checks the Dockerfiles, the ECS requests rendered by `deploy/ecs/deploy render` into RENDER_DIR,
the IAM policies against the SQS calls the code makes, and (with --compose-structure, used when no
docker-compose is installed) the compose file's references. With botocore importable, every
rendered request is also validated against the real AWS API model, offline.
"""
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


def setting_default(name):
    for src in SETTINGS_SOURCES:
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
check("task-producer.json" in tasks and any(k.startswith("task-consumer-") for k in tasks),
      "task definitions rendered for the producer and each consumer shard", sorted(tasks))
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

# ------------------------------------------------------------------ ECS: services, ALB, autoscaling
services = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "service-*.json"))}
tgs = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "target-group-*.json"))
       if "attributes" not in f and "target-group-api-" not in f}
api_tgs = {os.path.basename(f): load(f) for f in glob.glob(os.path.join(OUT, "target-group-api-*.json"))}
for name, s in sorted(services.items()):
    svc = "producer" if "producer" in name else "consumer"
    td = tasks[name.replace("service-", "task-")]
    lb = s["loadBalancers"][0]
    check(lb["containerPort"] == PORTS[svc][0] and lb["containerName"] == td["containerDefinitions"][0]["name"],
          f"{name}: the load balancer targets the WebSocket port of the task's container")
    check(s["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED",
          f"{name}: tasks get no public IP")
    if svc == "consumer":
        dc = s["deploymentConfiguration"]
        check(s["desiredCount"] == 1 and dc["maximumPercent"] == 100,
              f"{name}: one task per room range, never two at once (subscribers share the receiving task)")
        shard = name[len("service-consumer-"):-len(".json")]
        api_lb = [b for b in s["loadBalancers"][1:] if b["containerPort"] == PORTS[svc][1]]
        check(len(s["loadBalancers"]) == 2 and len(api_lb) == 1
              and api_lb[0]["targetGroupArn"].split("/")[1] == api_tgs.get(f"target-group-api-{shard}.json", {}).get("Name"),
              f"{name}: a second target group, the shard's room API group, on the admin port")
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
check(len(api_tgs) == sum(1 for n in services if n.startswith("service-consumer-")),
      "one room API target group per consumer shard", sorted(api_tgs))
for f in glob.glob(os.path.join(OUT, "target-group-attributes-*.json")):
    attrs = {a["Key"]: a["Value"] for a in load(f)["Attributes"]}
    check(attrs.get("stickiness.enabled") == "false" and int(attrs["deregistration_delay.timeout_seconds"]) <= 60,
          f"{os.path.basename(f)}: no stickiness (a WebSocket stays on its target), short deregistration delay")
lba = {a["Key"]: a["Value"] for a in load(os.path.join(OUT, "load-balancer-attributes.json"))["Attributes"]}
ping = max(int(setting_default("CHATFLOW_PING_INTERVAL_S") or 30), 30)
check(int(lba["idle_timeout.timeout_seconds"]) > ping + 10,
      f"ALB idle timeout ({lba['idle_timeout.timeout_seconds']}s) outlasts a ping interval plus pong timeout")

shards = []
for line in read("deploy/ecs/consumer-shards").splitlines():
    parts = line.split()
    if parts and not parts[0].startswith("#"):
        shards.append((parts[0], int(parts[1]), int(parts[2])))
covered = [r for _, lo, hi in shards for r in range(lo, hi + 1)]
prod_env = {e["name"]: e["value"] for e in tasks["task-producer.json"]["containerDefinitions"][0]["environment"]}
shard_numbers = list(range(1, int(prod_env["CHATFLOW_QUEUE_SHARDS"]) + 1))
check(covered == shard_numbers, "consumer services cover the producer's queue shards exactly once, in order", covered)
cons_shards = sorted({e["value"] for k in tasks if k.startswith("task-consumer-")
                      for e in tasks[k]["containerDefinitions"][0]["environment"]
                      if e["name"] == "CHATFLOW_QUEUE_SHARDS"})
check(cons_shards == [prod_env["CHATFLOW_QUEUE_SHARDS"]],
      "every consumer task and the producer agree on CHATFLOW_QUEUE_SHARDS (the room-to-shard map depends on it)",
      cons_shards)
routed = {}
for f in glob.glob(os.path.join(OUT, "listener-rule-consumer-*.json")):
    r = load(f)
    values = sum(len(c.get("HostHeaderConfig", c.get("PathPatternConfig", {})).get("Values", [])) for c in r["Conditions"])
    check(values <= 5, f"{os.path.basename(f)}: at most 5 condition values (ALB limit)", values)
    shard = re.match(r"listener-rule-consumer-([a-z0-9]+)-\d+\.json", os.path.basename(f)).group(1)
    for c in r["Conditions"]:
        for p in c.get("PathPatternConfig", {}).get("Values", []):
            room = p.rsplit("/", 1)[1]
            routed.setdefault(room if room == "*" else int(room), []).append(shard)
# One consumer service polls every shard and takes every room id (/chat/*); several can be told
# apart by the ALB only for the decimal rooms, each on the shard of its number.
want = ({"*": [shards[0][0]]} if len(shards) == 1
        else {r: [n] for n, lo, hi in shards for r in range(lo, hi + 1)})
check(routed == want, "listener rules route /chat/{roomId} on the consumer host to the service polling its shard",
      routed)
pr = load(os.path.join(OUT, "listener-rule-producer.json"))
check([c["Field"] for c in pr["Conditions"]] == ["host-header"]
      and pr["Actions"][0]["TargetGroupArn"].split("/")[1] == "chatflow-producer",
      "the producer host is routed whole to the producer: /chat/* and the chat page at /")
api_routed = {}
for f in glob.glob(os.path.join(OUT, "listener-rule-api-*.json")):
    r = load(f)
    shard = re.match(r"listener-rule-api-([a-z0-9]+)-\d+\.json", os.path.basename(f)).group(1)
    values = sum(len(c.get("HostHeaderConfig", c.get("PathPatternConfig", {})).get("Values", [])) for c in r["Conditions"])
    hosts = [v for c in r["Conditions"] for v in c.get("HostHeaderConfig", {}).get("Values", [])]
    target = r["Actions"][0]["TargetGroupArn"].split("/")[1]
    check(values <= 5 and hosts == [prod_env.get("CHATFLOW_WEB_API_URL", "").split("//")[-1]]
          and target == f"chatflow-api-{shard}",
          f"{os.path.basename(f)}: the host the page calls, at most 5 condition values, to the shard's API group")
    for c in r["Conditions"]:
        for p in c.get("PathPatternConfig", {}).get("Values", []):
            m = re.fullmatch(r"/api/rooms/(\d+)/\*", p)
            key = int(m.group(1)) if m else ("*" if p == "/api/rooms/*" else p)
            api_routed.setdefault(key, []).append(shard)
check(api_routed == want, "listener rules route only /api/rooms/{roomId}/* (not /metrics) to the service polling its shard",
      {k: v for k, v in api_routed.items() if want.get(k) != v})
cons_env = {e["name"]: e["value"] for e in next(t for n, t in tasks.items() if n.startswith("task-consumer-"))
            ["containerDefinitions"][0]["environment"]}
check(cons_env.get("CHATFLOW_API_ALLOW_ORIGIN", "").startswith("https://")
      and prod_env.get("CHATFLOW_WEB_EVENTS_URL", "").startswith("wss://"),
      "the page served by the producer subscribes over wss:// and the room API allows its origin (CORS)",
      (cons_env.get("CHATFLOW_API_ALLOW_ORIGIN"), prod_env.get("CHATFLOW_WEB_EVENTS_URL")))
prios = [load(f)["Priority"] for f in glob.glob(os.path.join(OUT, "listener-rule-*.json"))]
check(len(prios) == len(set(prios)), "listener rule priorities are distinct", sorted(prios))
pol = load(os.path.join(OUT, "autoscaling-producer-policy.json"))
check(pol["PolicyType"] == "TargetTrackingScaling"
      and pol["ResourceId"].endswith("/chatflow-producer"), "producer autoscaling is target tracking on its service")

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


def allows(policy):
    out = []
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        out.append((set(acts), res))
    return out


ROOM_ARN = re.compile(r"^arn:aws:sqs:[^:]+:\d{12}:chatflow-room-")
prod = allows(load(os.path.join(OUT, "iam", "producer-task-policy.json")))
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

for name, lo, hi in shards:
    cons = allows(load(os.path.join(OUT, "iam", f"consumer-{name}-task-policy.json")))
    is_spill = lambda r: [x.rsplit(":", 1)[1] for x in r] == ["chatflow-db-spill"]
    room_stmt = [(a, r) for a, r in cons if "sqs:ReceiveMessage" in a and not is_spill(r)]
    spill_stmt = [(a, r) for a, r in cons if is_spill(r)]
    dlq_stmt = [(a, r) for a, r in cons if "sqs:ReceiveMessage" not in a and not is_spill(r)]
    want_arns = [f"chatflow-room-{r}.fifo" for r in range(lo, hi + 1)]
    check(len(room_stmt) == 1 and room_stmt[0][0] == {"sqs:ReceiveMessage", "sqs:DeleteMessage",
          "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
          f"consumer-{name} role: receive/delete/change-visibility/attributes/url on its rooms", room_stmt)
    check(room_stmt and [r.rsplit(":", 1)[1] for r in room_stmt[0][1]] == want_arns
          and all(ROOM_ARN.match(r) for r in room_stmt[0][1]),
          f"consumer-{name} role: exactly the queues of rooms {lo}-{hi}")
    check(len(dlq_stmt) == 1 and dlq_stmt[0][0] <= {"sqs:SendMessage", "sqs:GetQueueUrl"}
          and [r.rsplit(":", 1)[1] for r in dlq_stmt[0][1]] == ["chatflow-db-dlq.fifo"],
          f"consumer-{name} role: send only to the DLQ chatflow-db-dlq.fifo", dlq_stmt)
    check(len(spill_stmt) == 1 and spill_stmt[0][0] == {"sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage",
          "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
          f"consumer-{name} role: send, receive and delete on the spill queue chatflow-db-spill only", spill_stmt)
    granted = set().union(*(a for a, _ in cons))
    check(used_actions("consumer") <= granted and used_actions("consumer"),
          f"consumer-{name} role grants every SQS action the consumer's code calls", used_actions("consumer") - granted)

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

every = []
for f in glob.glob(os.path.join(OUT, "iam", "*-policy.json")):
    for st in load(f)["Statement"]:
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        every.append((os.path.basename(f), st["Effect"], acts, res))
check(not [e for e in every if e[1] == "Allow" and any(a.endswith("*") for a in e[2])],
      "no policy allows a wildcard action")
check(not [e for e in every if e[1] == "Allow" and "*" in e[3] and e[2] != ["ecr:GetAuthorizationToken"]],
      "no policy allows Resource \"*\" (except ecr:GetAuthorizationToken, which has no resource)")
check(not [e for e in every if set(e[2]) & NOT_IAM_ACTIONS],
      "no policy names SQS batch calls as actions (IAM has none; they would be ignored)")
ex = load(os.path.join(OUT, "iam", "execution-role-policy.json"))
sm = [st for st in ex["Statement"] if "secretsmanager:GetSecretValue" in st["Action"]]
consumer_secret = next(iter(tasks[k] for k in tasks if k.startswith("task-consumer-")))["containerDefinitions"][0]["secrets"][0]["valueFrom"]
check(len(sm) == 1 and sm[0]["Resource"] == consumer_secret,
      "execution role reads exactly the database password secret the consumer task names")

# ------------------------------------------------------------------ the real AWS API model (offline)
try:
    import botocore.session
    import botocore.validate
except ImportError:
    print("# botocore not importable: rendered requests not validated against the AWS API model")
else:
    session = botocore.session.get_session()
    OPS = [("task-*.json", "ecs", "RegisterTaskDefinition"), ("service-*.json", "ecs", "CreateService"),
           ("target-group-producer.json", "elbv2", "CreateTargetGroup"),
           ("target-group-consumer-*.json", "elbv2", "CreateTargetGroup"),
           ("target-group-api-*.json", "elbv2", "CreateTargetGroup"),
           ("target-group-attributes-*.json", "elbv2", "ModifyTargetGroupAttributes"),
           ("load-balancer-attributes.json", "elbv2", "ModifyLoadBalancerAttributes"),
           ("listener-rule-*.json", "elbv2", "CreateRule"),
           ("autoscaling-producer-target.json", "application-autoscaling", "RegisterScalableTarget"),
           ("autoscaling-producer-policy.json", "application-autoscaling", "PutScalingPolicy")]
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

sys.exit(1 if failed else 0)
