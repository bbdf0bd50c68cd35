#!/usr/bin/env bash
# deploy_config — the deployment files are valid and say what the services need.
#
# No Docker engine and no AWS account here, so this validates rather than runs:
#  - deploy/docker-compose.yml: its structure with python3 + PyYAML (services, dependencies, mounted
#    paths, settings names), and `docker compose config` / `docker-compose config` when installed.
#  - deploy/ecs: every template parses; `deploy/ecs/deploy render` fills them with the example
#    settings and refuses a missing setting or a Redis URL the consumer could not use; the
#    rendered requests carry the required fields (ports, health checks, awslogs, stopTimeout vs
#    the services' drain, each task watching its own WebSocket target group for the draining
#    that precedes SIGTERM, in time, the database password from Secrets Manager, the consumer on
#    the cluster bus as one rolling, autoscaled service) and are checked against the AWS API model
#    when botocore is importable; the IAM policies grant exactly the SQS actions the code calls,
#    on the right queues, and DescribeTargetHealth; docs/deployment.md names every file and the
#    drain figures the files use.
#  - the Dockerfiles: multi-stage bookworm -> bookworm-slim, Makefile build, runtime libraries only,
#    HEALTHCHECK, non-root USER, tini.
# The structural checks live in deploy_config_checks.py (same folder).
# test-passes: none (python and --help over files: no ChatFlow service runs)
. "$(dirname "$0")/../lib/common.sh"
cd "$ROOT"

OUT="$TEST_LOGDIR/render"
rm -rf "$OUT"

# ---- compose
# The structural checks (python3) always run: they check what ChatFlow needs of the file; the
# compose tool, when installed, checks it against the compose schema on top.
if docker compose version >/dev/null 2>&1; then
    tap_check "docker compose config accepts deploy/docker-compose.yml" \
        docker compose -f deploy/docker-compose.yml config -q
elif command -v docker-compose >/dev/null 2>&1; then
    tap_check "docker-compose config accepts deploy/docker-compose.yml" \
        docker-compose -f deploy/docker-compose.yml config -q
else
    note "neither 'docker compose' nor docker-compose (Debian package docker-compose) is installed:"
    note "deploy/docker-compose.yml is checked structurally only"
fi

# ---- ECS templates and the deploy script
bad=()
for f in deploy/ecs/*.json deploy/ecs/iam/*.json deploy/ecs/alarms/*.json; do
    jq empty "$f" 2>/dev/null || bad+=("$f")
done
tap_is "${bad[*]}" "" "every deploy/ecs template is valid JSON"
tap_check "deploy/ecs/deploy is valid bash" bash -n deploy/ecs/deploy

out=$(env -i PATH="$PATH" deploy/ecs/deploy render "$OUT" 2>&1); rc=$?
tap_is "$rc" 2 "deploy render without settings exits 2"
case "$out" in
    *"missing settings: AWS_REGION"*CHATFLOW_DB_PASSWORD_SECRET_ARN*CHATFLOW_REDIS_URL*) tap_ok "and names every missing setting" ;;
    *) tap_fail "and names every missing setting"; note "got: $out" ;;
esac
[ ! -e "$OUT" ] && tap_ok "and writes nothing" || tap_fail "and writes nothing"

# The consumer's Redis client speaks plain TCP and takes no credentials (consumer/bus.c): a URL it
# would refuse at start must stop the deployment before anything is rendered or changed.
for url in "rediss://bus.example.com:6379" "redis://user:secret@bus.example.com:6379" "bus.example.com:6379"; do
    out=$(bash -c 'set -a; . deploy/ecs/environment.example; set +a; CHATFLOW_REDIS_URL=$2 exec deploy/ecs/deploy render "$1"' \
          _ "$OUT" "$url" 2>&1); rc=$?
    if [ "$rc" -eq 2 ] && [ ! -e "$OUT" ] && [[ "$out" == *CHATFLOW_REDIS_URL* ]]; then
        tap_ok "deploy render refuses CHATFLOW_REDIS_URL=$url (exit 2, names it, writes nothing)"
    else
        tap_fail "deploy render refuses CHATFLOW_REDIS_URL=$url (exit 2, names it, writes nothing)"
        note "rc $rc: $out"
    fi
done

tap_check "deploy render with deploy/ecs/environment.example" \
    bash -c 'set -a; . deploy/ecs/environment.example; set +a; exec deploy/ecs/deploy render "$1"' _ "$OUT"

# One consumer service on the bus: the per-range layout's shard file is gone and nothing reads it.
left=$(grep -ln 'consumer-shards\|SHARD_FIRST\|SHARD_LAST' deploy/ecs/deploy deploy/ecs/*.json deploy/ecs/iam/*.json 2>/dev/null)
if [ ! -e deploy/ecs/consumer-shards ] && [ -z "$left" ]; then
    tap_ok "no per-range consumer layout left in deploy/ecs (consumer-shards, shard ranges)"
else
    tap_fail "no per-range consumer layout left in deploy/ecs (consumer-shards, shard ranges): ${left:-consumer-shards exists}"
fi

# ---- docs/configuration.md carries each binary's own --help-markdown table, verbatim
for b in producer consumer sqs; do
    bin="$CHATFLOW_BIN/chatflow-$b"
    if [ ! -x "$bin" ]; then
        tap_fail "docs/configuration.md vs chatflow-$b: binary missing ($bin)"
        continue
    fi
    table=$("$bin" --help-markdown 2>&1)
    if [ -n "$table" ] && grep -qxF -- "$(head -1 <<<"$table")" docs/configuration.md &&
        python3 -c 'import sys; sys.exit(0 if sys.argv[1] in open(sys.argv[2]).read() else 1)' "$table" docs/configuration.md; then
        tap_ok "docs/configuration.md has chatflow-$b's current settings table"
    else
        tap_fail "docs/configuration.md has chatflow-$b's current settings table (regenerate: docs/settings-tables)"
    fi
done

# ---- each builder stage, replayed without Docker: a folder holding only what the stage COPYs,
# then its `make` line as a dry run (every prerequisite must resolve; nothing is compiled).
for svc in producer consumer; do
    df=deploy/docker/Dockerfile.$svc
    ctx="$TEST_LOGDIR/builder-$svc"
    rm -rf "$ctx" && mkdir -p "$ctx/src"
    build_stage=$(sed -n '1,/^FROM debian:bookworm-slim/p' "$df")
    copies=$(sed -n 's/^COPY \([^-][^ ]*\) .*/\1/p' <<<"$build_stage")
    for c in $copies; do cp -r "$c" "$ctx/src/${c%/}"; done
    make_line=$(sed -n 's/^RUN \(make .*\)$/\1/p' <<<"$build_stage")
    make_line=${make_line//\/out/$ctx/out}
    make_line=${make_line//\$(nproc)/2}
    make_line=${make_line//\"/}
    if [ -n "$make_line" ] && out=$(cd "$ctx/src" && $make_line -n 2>&1) &&
        grep -q -- "-o $ctx/out/chatflow-$svc " <<<"$out" &&
        ! for f in common/*.c "$svc"/*.c; do grep -q -- "-c $f " <<<"$out" || echo "$f"; done | grep -q .; then
        tap_ok "$df: the builder's make line resolves with only what the stage copies ($make_line)"
    else
        tap_fail "$df: the builder's make line resolves with only what the stage copies"
        printf '%s\n' "${out:-no make line}" | tail -5 | sed 's/^/#   /'
    fi
done

# ---- each run stage's packages provide every shared library its binaries load (ldd on this
# machine's build, which is bookworm too; package dependencies resolved offline by apt-cache).
for svc in producer consumer; do
    df=deploy/docker/Dockerfile.$svc
    run_stage=$(sed -n '/^FROM debian:bookworm-slim/,$p' "$df")
    pkgs=$(tr '\\\n' '  ' <<<"$run_stage" | grep -o 'apt-get install[^&]*' | tr ' ' '\n' | grep -v '^-' | grep -vx 'apt-get\|install' | sort -u)
    bins=$(sed -n 's|^COPY --from=build \(.*\) /usr/local/bin/$|\1|p' <<<"$run_stage" | tr ' ' '\n' | sed "s|^/out/|$CHATFLOW_BIN/|")
    missing=()
    for b in $bins; do [ -x "$b" ] || missing+=("$(basename "$b") not built"); done
    if [ ${#missing[@]} -eq 0 ]; then
        have=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
               --no-replaces --no-enhances $pkgs 2>/dev/null | grep -v '^ ' | sed 's/:.*//' | sort -u)
        while read -r lib; do
            [ -n "$lib" ] || continue
            owner=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null) || owner=
            owner=${owner%%:*}
            grep -qx -- "$owner" <<<"$have" || missing+=("$lib (${owner:-no package})")
        done < <(for b in $bins; do ldd "$b"; done | awk '$3 ~ /^\// { print $3 }' | sort -u)
    fi
    tap_is "${missing[*]}" "" "$df: the run stage's packages provide every library its binaries load"
done

# ---- deploy/ecs/prometheus-targets against a stand-in AWS CLI (canned ECS answers)
FAKE="$TEST_LOGDIR/fake-aws"
TARGETS="$TEST_LOGDIR/targets"
rm -rf "$FAKE" "$TARGETS" && mkdir -p "$FAKE"
cat >"$FAKE/aws" <<'SH'
#!/usr/bin/env bash
# list-tasks: two producer tasks running, one still starting; no consumer task.
# describe-tasks: their ENI addresses and zones. FAKE_AWS_FAIL=1: every call fails.
[ "${FAKE_AWS_FAIL:-0}" = 1 ] && { echo "An error occurred (ThrottlingException)" >&2; exit 255; }
args="$*"
case "$args" in
    *"list-tasks"*"--service-name chatflow-producer"*)
        echo '{"taskArns": ["arn:aws:ecs:eu-west-1:123456789012:task/chatflow/p1",
                            "arn:aws:ecs:eu-west-1:123456789012:task/chatflow/p2",
                            "arn:aws:ecs:eu-west-1:123456789012:task/chatflow/p3"]}' ;;
    *"list-tasks"*) echo '{"taskArns": []}' ;;
    *"describe-tasks"*)
        task() { printf '{"taskArn": "%s", "lastStatus": "%s", "availabilityZone": "%s", "attachments": [{"type": "ElasticNetworkInterface", "details": [{"name": "subnetId", "value": "subnet-1"}, {"name": "privateIPv4Address", "value": "%s"}]}]}' "$@"; }
        echo "{\"tasks\": [$(task p1 RUNNING eu-west-1a 10.0.1.5), $(task p2 RUNNING eu-west-1b 10.0.2.7), $(task p3 PROVISIONING eu-west-1a 10.0.1.9)]}" ;;
    *) echo "fake aws: unexpected $args" >&2; exit 2 ;;
esac
SH
chmod +x "$FAKE/aws"
pt() { env PATH="$FAKE:$PATH" AWS_REGION=eu-west-1 CHATFLOW_CLUSTER=chatflow deploy/ecs/prometheus-targets "$@"; }
tap_check "prometheus-targets writes both services' files" pt "$TARGETS"
tap_is "$(jq -c '[.[] | {t: .targets, z: .labels.availability_zone, s: .labels.service}] | sort_by(.z)' "$TARGETS/chatflow-producer.json" 2>&1)" \
    '[{"t":["10.0.1.5:9090"],"z":"eu-west-1a","s":"producer"},{"t":["10.0.2.7:9090"],"z":"eu-west-1b","s":"producer"}]' \
    "prometheus-targets: the producer's RUNNING tasks on port 9090 by zone (the starting one left out)"
tap_is "$(jq -c . "$TARGETS/chatflow-consumer.json" 2>&1)" '[{"targets":[],"labels":{"service":"consumer"}}]' \
    "prometheus-targets: a service with no task gets an empty target list (ChatFlowConsumerAbsent then fires)"
before=$(cat "$TARGETS/chatflow-producer.json")
out=$(FAKE_AWS_FAIL=1 pt "$TARGETS" 2>&1); rc=$?
tap_is "$rc" 1 "prometheus-targets: a failing AWS call exits 1"
note "prometheus-targets said: $(tail -1 <<<"$out")"
tap_is "$(cat "$TARGETS/chatflow-producer.json")" "$before" \
    "prometheus-targets: after a failed listing the last targets stay (not emptied)"
tap_check "promtool check config monitoring/prometheus-ecs.yml (file_sd, same rules)" \
    promtool check config monitoring/prometheus-ecs.yml
tap_is "$(python3 -c '
import sys, yaml
a, b = (yaml.safe_load(open(f)) for f in sys.argv[1:])
jobs = lambda c: sorted(j["job_name"] for j in c["scrape_configs"])
print(jobs(a) == jobs(b) and a["rule_files"] == b["rule_files"])' monitoring/prometheus.yml monitoring/prometheus-ecs.yml)" True \
    "prometheus-ecs.yml has the same jobs and rule files as prometheus.yml"

# ---- deploy apply against a stand-in AWS CLI that records every call: the order (services one at
# a time, each stable before the next; rules switched last, each to a group with a healthy
# target), what an existing service is updated with, the task definitions registered with the
# target groups created (not the offline stand-in), and a service that never becomes stable
# stopping everything after it. Then deploy migrate, which looks the groups up.
REC="$TEST_LOGDIR/fake-apply"
rm -rf "$REC" && mkdir -p "$REC"
cat >"$REC/aws" <<'SH'
#!/usr/bin/env bash
echo "$*" >>"$FAKE_CALLS"
args="$*"
file=$(grep -o 'file://[^ ]*' <<<"$args" | head -1); file=${file#file://}
case "$args" in
    *"iam get-role"*|*"iam update-assume-role-policy"*|*"iam put-role-policy"*) exit 0 ;;
    *"elbv2 create-target-group"*) # each ARN returned is kept in $FAKE_CALLS.tgs
        arn="arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/$(jq -r .Name "$file")/abc"
        echo "$arn" >>"$FAKE_CALLS.tgs"
        echo "$arn" ;;
    *"elbv2 describe-target-groups"*) # FAKE_NO_TG=1: no group exists yet
        [ "${FAKE_NO_TG:-0}" = 1 ] && { echo "An error occurred (TargetGroupNotFound)" >&2; exit 254; }
        name=${args#*--names }
        arn="arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/${name%% *}/def"
        echo "$arn" >>"$FAKE_CALLS.tgs"
        echo "$arn" ;;
    *"ecs list-services"*) echo "" ;;
    *"ecs register-task-definition"*) # the request registered is kept as $FAKE_CALLS.td-FAMILY.json
        cp "$file" "$FAKE_CALLS.td-$(jq -r .family "$file").json"
        echo "arn:aws:ecs:eu-west-1:123456789012:task-definition/$(jq -r .family "$file"):7" ;;
    *"ecs run-task"*) echo "arn:aws:ecs:eu-west-1:123456789012:task/chatflow/migrate1" ;;
    *"ecs describe-tasks"*) echo 0 ;;
    *"ecs describe-services"*) echo ACTIVE ;;
    *"ecs wait services-stable"*)
        [ -n "${FAKE_UNSTABLE:-}" ] && grep -q -- "--services $FAKE_UNSTABLE\b" <<<"$args" && exit 255
        exit 0 ;;
    *"elbv2 create-rule"*) jq -r .Priority "$file" >>"$FAKE_CALLS.created" ;;
    *"elbv2 describe-rules"*) # FAKE_FIRST: a rule exists once created
        prio=$(grep -o "Priority=='[0-9]*'" <<<"$args" | tr -dc 0-9)
        if [ "${FAKE_FIRST:-0}" = 1 ] && ! grep -qx "$prio" "$FAKE_CALLS.created" 2>/dev/null; then
            echo None
        else
            echo "arn:rule/$prio"
        fi ;;
    *) exit 0 ;;
esac
SH
chmod +x "$REC/aws"
deploy_fake() { # COMMAND CALLS_FILE [ENV...]: deploy COMMAND with the example settings and the stand-in CLI
    local cmd=$1 calls=$2
    shift 2
    : >"$calls"
    rm -f "$calls.created" "$calls.tgs" "$calls".td-*.json
    env PATH="$REC:$PATH" FAKE_CALLS="$calls" "$@" bash -c \
        'set -a; . deploy/ecs/environment.example; set +a; exec deploy/ecs/deploy "$1"' _ "$cmd" >"$calls.out" 2>&1
}
apply_fake() { deploy_fake apply "$@"; } # CALLS_FILE [ENV...]
# lb_arn_of CALLS FAMILY: CHATFLOW_LB_TARGET_GROUP_ARN in the task definition FAMILY registered
lb_arn_of() {
    jq -r '.containerDefinitions[0].environment[] | select(.name == "CHATFLOW_LB_TARGET_GROUP_ARN") | .value' \
        "$1.td-$2.json" 2>/dev/null
}
line_of() { grep -n -m1 -- "$2" "$1" | cut -d: -f1; } # CALLS PATTERN: first call matching, or ""
apply_fake "$REC/calls.txt"
tap_is "$?" 0 "deploy apply runs to the end against the stand-in AWS CLI"
C="$REC/calls.txt"
order=(
    "$(line_of "$C" 'ecs update-service .*--service chatflow-consumer ')"
    "$(line_of "$C" 'ecs wait services-stable .*--services chatflow-consumer')"
    "$(line_of "$C" 'ecs update-service .*--service chatflow-producer ')"
    "$(line_of "$C" 'ecs wait services-stable .*--services chatflow-producer')"
    "$(line_of "$C" 'elbv2 wait target-in-service')"
    "$(line_of "$C" 'elbv2 modify-rule')"
)
sorted=$(printf '%s\n' "${order[@]}" | sort -n | tr '\n' ' ')
tap_is "${order[*]} " "$sorted" \
    "apply: consumer updated, stable, then producer updated, stable, then rules (call lines ${order[*]})"
tap_is "$(printf '%s\n' "${order[@]}" | grep -c .)" 6 "apply: made each of those six calls"
# each modify-rule names its group in --actions; the call before it waited for that group
bad_rules=$(awk '/elbv2 wait target-in-service/ { w = $0; sub(/.*--target-group-arn /, "", w); sub(/ .*/, "", w) }
                 /elbv2 modify-rule/ { if (w == "" || index($0, w) == 0) print NR; w = "" }' "$C")
tap_is "$(grep -c 'elbv2 modify-rule' "$C")" 3 "apply: the three existing listener rules are switched"
tap_is "$bad_rules" "" "apply: each rule is switched right after its own target group had a healthy target"
tap_is "$(grep -c 'elbv2 create-rule' "$C")" 0 "apply: no rule is created when they exist"
apply_fake "$REC/first.txt" FAKE_FIRST=1
tap_is "$?" 0 "apply on a listener without the rules (a first deployment) runs to the end"
F="$REC/first.txt"
first_rule=$(line_of "$F" 'elbv2 create-rule')
first_service=$(line_of "$F" 'ecs update-service\|ecs create-service')
tap_check "apply, first deployment: the rules are created (3) before any service, which needs its group attached to the ALB" \
    bash -c '[ "$(grep -c "elbv2 create-rule" "$1")" = 3 ] && [ -n "$2" ] && [ -n "$3" ] && [ "$2" -lt "$3" ]' _ "$F" "$first_rule" "$first_service"
for svc in chatflow-consumer chatflow-producer; do
    upd=$(grep -m1 "ecs update-service .*--service $svc " "$C")
    tap_check "apply: $svc is updated with its load balancers, network configuration and grace period" \
        bash -c 'grep -q -- "--load-balancers \[" <<<"$1" && grep -q -- "--network-configuration {" <<<"$1" &&
                 grep -q -- "--health-check-grace-period-seconds [0-9]" <<<"$1" && grep -q -- "--deployment-configuration {" <<<"$1"' _ "$upd"
done
tap_is "$(grep -c 'cloudwatch put-metric-alarm' "$C")" "$(ls "$OUT"/alarm-*.json | wc -l)" "apply: puts every rendered alarm"
tap_check "apply: creates the chatflow-operator role" grep -q 'iam put-role-policy --role-name chatflow-operator ' "$C"
# Each task watches its own WebSocket target: the task definition registered names the group
# CreateTargetGroup returned (apply renders again once the groups exist), the one its service's
# load balancer entry for the WebSocket port uses; never the offline stand-in 0000000000000000.
for svc_port in producer:8080 consumer:8081; do
    svc=${svc_port%:*} port=${svc_port#*:}
    got=$(lb_arn_of "$C" "chatflow-$svc")
    created=$(grep ":targetgroup/chatflow-$svc/" "$C.tgs" 2>/dev/null | sort -u)
    lbs=$(grep -m1 "ecs update-service .*--service chatflow-$svc " "$C" | grep -o -- '--load-balancers \[[^]]*\]')
    ws_group=$(jq -r --argjson p "$port" '.[] | select(.containerPort == $p) | .targetGroupArn' <<<"${lbs#--load-balancers }" 2>/dev/null)
    if [ -n "$got" ] && [ "$got" = "$created" ] && [ "$got" = "$ws_group" ] && [[ "$got" != *0000000000000000* ]]; then
        tap_ok "apply: the chatflow-$svc task definition registered has CHATFLOW_LB_TARGET_GROUP_ARN = the chatflow-$svc group created, its service's port $port group ($got)"
    else
        tap_fail "apply: the chatflow-$svc task definition registered has CHATFLOW_LB_TARGET_GROUP_ARN = the chatflow-$svc group created, its service's port $port group"
        note "registered: ${got:-none}; created: ${created:-none}; service's port $port group: ${ws_group:-none}"
    fi
done
apply_fake "$REC/unstable.txt" FAKE_UNSTABLE=chatflow-consumer
rc=$?
tap_check "apply: the consumer service not becoming stable stops apply (exit $rc) before the producer, the rules and the alarms" \
    bash -c '[ "$1" -ne 0 ] && ! grep -q "update-service .*--service chatflow-producer " "$2" &&
             ! grep -q "modify-rule" "$2" && ! grep -q "put-metric-alarm" "$2"' _ "$rc" "$REC/unstable.txt"
# migrate registers a consumer task definition outside apply: it looks the groups up first.
deploy_fake migrate "$REC/migrate.txt"
rc=$?
M="$REC/migrate.txt"
got=$(lb_arn_of "$M" chatflow-consumer)
found=$(grep ":targetgroup/chatflow-consumer/" "$M.tgs" 2>/dev/null | sort -u)
if [ "$rc" -eq 0 ] && [ -n "$got" ] && [ "$got" = "$found" ] && grep -q 'ecs run-task ' "$M"; then
    tap_ok "migrate: the task definition it registers names the existing chatflow-consumer group ($got)"
else
    tap_fail "migrate: the task definition it registers names the existing chatflow-consumer group"
    note "rc $rc; registered: ${got:-none}; looked up: ${found:-none}; $(tail -1 "$M.out")"
fi
deploy_fake migrate "$REC/migrate-no-tg.txt" FAKE_NO_TG=1
rc=$?
tap_check "migrate before any apply (no target groups): stops (exit $rc), registers and runs nothing" \
    bash -c '[ "$1" -ne 0 ] && ! grep -q "register-task-definition\|run-task" "$2" && grep -q "run apply first" "$2.out"' \
    _ "$rc" "$REC/migrate-no-tg.txt"

# ---- deploy retire against a stand-in AWS CLI: an old per-range consumer "a" (its service at 0
# tasks, two target groups, one rule each, its role) goes in the order AWS needs; one still
# running refuses and deletes nothing.
cat >"$REC/aws" <<'SH'
#!/usr/bin/env bash
echo "$*" >>"$FAKE_CALLS"
args="$*"
case "$args" in
    *"ecs describe-services"*) [ "${FAKE_RUNNING:-0}" = 1 ] && printf '1\t1\n' || printf '0\t0\n' ;;
    *"elbv2 describe-target-groups --names chatflow-consumer-a "*) echo "arn:tg/chatflow-consumer-a" ;;
    *"elbv2 describe-target-groups --names chatflow-api-a "*) echo "arn:tg/chatflow-api-a" ;;
    *"elbv2 describe-target-groups"*) echo None ;;
    *"elbv2 describe-rules"*"arn:tg/chatflow-consumer-a"*) echo "arn:rule/201" ;;
    *"elbv2 describe-rules"*"arn:tg/chatflow-api-a"*) echo "arn:rule/1201" ;;
    *) exit 0 ;;
esac
SH
retire_fake() { # CALLS_FILE [ENV...]
    local calls=$1
    shift
    : >"$calls"
    env PATH="$REC:$PATH" FAKE_CALLS="$calls" "$@" bash -c \
        'set -a; . deploy/ecs/environment.example; set +a; exec deploy/ecs/deploy retire a' >"$calls.out" 2>&1
}
retire_fake "$REC/retire.txt"
tap_is "$?" 0 "deploy retire a runs to the end against the stand-in AWS CLI"
R="$REC/retire.txt"
steps=(
    "$(line_of "$R" 'elbv2 delete-rule --rule-arn arn:rule/201')"
    "$(line_of "$R" 'elbv2 delete-rule --rule-arn arn:rule/1201')"
    "$(line_of "$R" 'ecs delete-service .*--service chatflow-consumer-a')"
    "$(line_of "$R" 'ecs wait services-inactive .*chatflow-consumer-a')"
    "$(line_of "$R" 'elbv2 delete-target-group --target-group-arn arn:tg/chatflow-consumer-a')"
    "$(line_of "$R" 'elbv2 delete-target-group --target-group-arn arn:tg/chatflow-api-a')"
    "$(line_of "$R" 'iam delete-role-policy --role-name chatflow-consumer-a-task')"
    "$(line_of "$R" 'iam delete-role --role-name chatflow-consumer-a-task')"
)
tap_is "$(printf '%s\n' "${steps[@]}" | grep -c .)" 8 "retire: rules, service, wait, target groups, role policy, role: all deleted"
tap_is "${steps[*]} " "$(printf '%s\n' "${steps[@]}" | sort -n | tr '\n' ' ')" \
    "retire: in the order AWS needs (rules before their groups, the service inactive before its groups)"
tap_check "retire: nothing of the current deployment is touched" \
    bash -c '! grep -E "(--service|--names|--role-name) (chatflow-consumer|chatflow-api|chatflow-consumer-task)( |$)" "$1"' _ "$R"
retire_fake "$REC/retire-running.txt" FAKE_RUNNING=1
rc=$?
tap_check "retire: an old service still running tasks refuses (exit $rc) and deletes nothing" \
    bash -c '[ "$1" -ne 0 ] && ! grep -q "delete" "$2"' _ "$rc" "$REC/retire-running.txt"

# ---- the rest: Dockerfiles, rendered requests, IAM, compose structure
python3 test/integration/deploy_config_checks.py "$ROOT" "$OUT" --compose-structure
rc=$?
[ "$rc" -le 1 ] || tap_fail "deploy_config_checks.py crashed (exit $rc)"
# Its ok/not ok lines count in test/run directly; fold its result into our exit status.
[ "$rc" -eq 0 ] || TAP_FAILED=$((TAP_FAILED + 1))
finish
