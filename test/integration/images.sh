#!/usr/bin/env bash
# images — the service images as they ship, built and run: deploy/images builds both Dockerfiles
# (buildah on a debootstrapped Debian base here; docker build where an engine runs), and podman
# runs them on the host network against a private stack (PostgreSQL + fauxqs), with identity
# tokens on as the images default:
#  - the images carry the revision and version labels, and stripped binaries;
#  - the migrations run through the consumer image (--migrate, exit 0, schema in place);
#  - both containers become ready; their processes (tini and the service) do not run as root;
#    the image HEALTHCHECK passes;
#  - end-to-end traffic through both containers: every message acked, broadcast once and in order
#    to subscribers of the consumer container, and stored (the load generator's clean run);
#  - SIGTERM to the producer container under load (podman stop): exit 0 within the ECS stop
#    timeout (stopTimeout 35 s in deploy/ecs/task-*.json), no frame left unanswered at its close;
#    started again, the load resumes and every acked message is stored exactly once;
#  - the load balancer's drain (deploy/ecs: ECS deregisters, waits the deregistration delay, then
#    SIGTERM): both containers watch their target through a stand-in for ELBv2 and the task
#    metadata that checks each request's signature (test/lib/elb_standin.py); once it says
#    draining, every client of the producer and every subscriber of the consumer is closed 1001
#    while the containers keep running, and SIGTERM then stops each with exit 0 in time;
#  - SIGTERM to the consumer container: exit 0 within the stop timeout.
# Containers are removed when the test ends, pass or fail.
# test-passes: none (the images carry their own release build)
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

STOP_TIMEOUT_S=35 # deploy/ecs/task-*.json "stopTimeout"
TAG=images-test
eval "$("$ROOT/deploy/images" env)"
ENGINE=$("$ROOT/deploy/images" engine 2>/dev/null) || ENGINE=none
RUN=podman
[ "$ENGINE" = docker ] && RUN=docker
P_NAME="chatflow-producer-test-$$"
C_NAME="chatflow-consumer-test-$$"

# ---------------------------------------------------------------- build

build_images() {
    if [ "$ENGINE" = none ]; then
        tap_fail "a container builder: buildah + podman or a Docker engine (make deps installs buildah and podman)"
        return 1
    fi
    local t0=$SECONDS
    if ! "$ROOT/deploy/images" build "$TAG" >"$TEST_LOGDIR/build.log" 2>&1; then
        tap_fail "deploy/images build (log $TEST_LOGDIR/build.log)"
        tail -n 15 "$TEST_LOGDIR/build.log" | sed 's/^/#   /'
        return 1
    fi
    tap_ok "both images built with $ENGINE in $((SECONDS - t0)) s (chatflow-producer:$TAG, chatflow-consumer:$TAG)"
}

label_of() { $RUN image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }

check_labels() {
    local svc rev
    rev=$(git -C "$ROOT" rev-parse --short=12 HEAD)
    for svc in producer consumer; do
        tap_is "$(label_of "chatflow-$svc:$TAG" org.opencontainers.image.revision)" "$rev" \
            "chatflow-$svc carries org.opencontainers.image.revision"
        tap_check "chatflow-$svc carries org.opencontainers.image.version" \
            test -n "$(label_of "chatflow-$svc:$TAG" org.opencontainers.image.version)"
    done
}

# The binary copied out of the image has no symbol table and no debug sections.
check_stripped() {
    local svc=$1
    local ctr="chatflow-strip-$svc-$$" out="$TEST_LOGDIR/chatflow-$svc"
    $RUN create --name "$ctr" "chatflow-$svc:$TAG" >/dev/null 2>&1 &&
        $RUN cp "$ctr:/usr/local/bin/chatflow-$svc" "$out" >/dev/null 2>&1
    $RUN rm -f "$ctr" >/dev/null 2>&1
    if [ ! -s "$out" ]; then
        tap_fail "chatflow-$svc copied out of its image"
        return
    fi
    local sections
    sections=$(readelf -S -W "$out" 2>/dev/null | grep -cE '\.(symtab|debug_info)( |$)')
    tap_is "$sections" 0 "chatflow-$svc in its image is stripped (no .symtab, no .debug_info)"
}

# ---------------------------------------------------------------- running containers

# -e NAME for the stack's variables (values from this shell) and NAME=VALUE for each argument.
env_args() {
    local n
    for n in AWS_ENDPOINT_URL_SQS AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY DATABASE_URL \
        CHATFLOW_AUTH_HS256_SECRET; do
        printf -- '-e\n%s\n' "$n"
    done
    for n in "$@"; do printf -- '-e\n%s\n' "$n"; done
}

# What both services need to watch their load balancer target through the stand-in.
lb_env() { # GROUP
    printf '%s\n' "CHATFLOW_LB_TARGET_GROUP_ARN=$LB_ARN_PREFIX$1/0123456789abcdef" \
        "ECS_CONTAINER_METADATA_URI_V4=http://127.0.0.1:$ELB_PORT/v4/container" \
        "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=http://127.0.0.1:$ELB_PORT/" \
        CHATFLOW_LB_POLL_S=1
}

start_container() { # NAME IMAGE ENV...
    local name=$1 image=$2 args
    shift 2
    mapfile -t args < <(env_args "$@")
    $RUN rm -f "$name" >/dev/null 2>&1
    $RUN run -d --name "$name" --network host "${args[@]}" "$image" >"$TEST_LOGDIR/$name.id" 2>&1
}

start_consumer_container() {
    local lb
    mapfile -t lb < <(lb_env chatflow-consumer)
    start_container "$C_NAME" "chatflow-consumer:$TAG" "${lb[@]}" CHATFLOW_WS_BIND=127.0.0.1 \
        CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_WS_PORT="$C_WS" CHATFLOW_ADMIN_PORT="$C_ADMIN" \
        CHATFLOW_API_ALLOW_ORIGIN="http://127.0.0.1:$P_WS" CHATFLOW_RECEIVE_WAIT_S=2 \
        CHATFLOW_VISIBILITY_TIMEOUT_S=10 CHATFLOW_SERVER_ID=consumer-image
}

start_producer_container() {
    local lb
    mapfile -t lb < <(lb_env chatflow-producer)
    start_container "$P_NAME" "chatflow-producer:$TAG" "${lb[@]}" CHATFLOW_WS_BIND=127.0.0.1 \
        CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_WS_PORT="$P_WS" CHATFLOW_ADMIN_PORT="$P_ADMIN" \
        CHATFLOW_RATE_LIMIT_PER_MINUTE=0 CHATFLOW_SERVER_ID=producer-image
}

save_logs() {
    $RUN logs "$P_NAME" >"$TEST_LOGDIR/producer-container.log" 2>&1
    $RUN logs "$C_NAME" >"$TEST_LOGDIR/consumer-container.log" 2>&1
}

remove_containers() {
    save_logs
    $RUN rm -f "$P_NAME" "$C_NAME" >/dev/null 2>&1
}

# The uid of a container's main process and of its children, as the host sees them.
uids_of() {
    local pid kid
    pid=$($RUN inspect --format '{{.State.Pid}}' "$1" 2>/dev/null)
    [ -n "$pid" ] && [ "$pid" != 0 ] || return 1
    awk '/^Uid:/ { print $2 }' "/proc/$pid/status"
    for kid in $(pgrep -P "$pid"); do awk '/^Uid:/ { print $2 }' "/proc/$kid/status"; done
}

check_not_root() {
    local name=$1 uids
    uids=$(uids_of "$name" | sort -u | tr '\n' ' ')
    tap_is "$uids" "10001 " "$name: tini and the service run as uid 10001 (chatflow), not root"
}

check_healthcheck() {
    local name=$1 rc status
    if [ "$RUN" = podman ]; then
        $RUN healthcheck run "$name" >"$TEST_LOGDIR/health-$name.txt" 2>&1
        rc=$?
        tap_is "$rc" 0 "$name: the image HEALTHCHECK passes (podman healthcheck run)"
    else
        for _ in $(seq 1 60); do
            status=$($RUN inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null)
            [ "$status" = healthy ] && break
            sleep 1
        done
        tap_is "$status" healthy "$name: the image HEALTHCHECK passes"
    fi
}

# podman stop (SIGTERM, then SIGKILL after the stop timeout); sets STOP_S and EXIT_CODE.
stop_container() {
    local name=$1 t0
    t0=$(now_ms)
    $RUN stop -t "$STOP_TIMEOUT_S" "$name" >/dev/null 2>&1
    STOP_S=$(awk -v ms="$(( $(now_ms) - t0 ))" 'BEGIN { printf "%.1f", ms / 1000 }')
    EXIT_CODE=$($RUN inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null)
}

# ---------------------------------------------------------------- the checks

migrate_through_image() {
    local rc tables
    local args
    mapfile -t args < <(env_args CHATFLOW_API_ALLOW_ORIGIN=http://127.0.0.1)
    $RUN run --rm --network host --no-healthcheck "${args[@]}" "chatflow-consumer:$TAG" --migrate \
        >"$TEST_LOGDIR/migrate.log" 2>&1
    rc=$?
    tap_is "$rc" 0 "the consumer image applies the migrations (--migrate exits 0)"
    tables=$(psql_q "select count(*) from information_schema.tables where table_name in ('messages', 'user_activity', 'schema_migrations')")
    tap_is "$tables" 3 "the schema is in place (messages, user_activity, schema_migrations)"
}

# The stand-in for ELBv2 DescribeTargetHealth and the ECS task metadata; targets start healthy.
start_elb_standin() {
    ELB_DIR="$TEST_LOGDIR/elb"
    LB_ARN_PREFIX="arn:aws:elasticloadbalancing:$AWS_REGION:123456789012:targetgroup/"
    rm -rf "$ELB_DIR" && mkdir -p "$ELB_DIR" || return 1
    start_bg elb-standin python3 "$ROOT/test/lib/elb_standin.py" --dir "$ELB_DIR" \
        --key "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" --region "$AWS_REGION"
    for _ in $(seq 1 100); do
        [ -s "$ELB_DIR/port" ] && break
        sleep 0.1
    done
    ELB_PORT=$(cat "$ELB_DIR/port" 2>/dev/null)
    [ -n "$ELB_PORT" ] || { tap_fail "ELBv2 stand-in listening (log $(bg_log elb-standin))"; return 1; }
}

lb_state() { echo "$2" >"$ELB_DIR/state-$1.tmp" && mv "$ELB_DIR/state-$1.tmp" "$ELB_DIR/state-$1"; }

start_services() {
    P_WS=$(free_port) && P_ADMIN=$(free_port) && C_WS=$(free_port) && C_ADMIN=$(free_port) || return 1
    start_consumer_container && start_producer_container || {
        tap_fail "containers started ($(cat "$TEST_LOGDIR"/*.id 2>/dev/null | tail -2))"
        return 1
    }
    on_exit remove_containers
    if wait_http "http://127.0.0.1:$C_ADMIN/health/ready" 60 && wait_http "http://127.0.0.1:$P_ADMIN/health/ready" 60; then
        tap_ok "both containers ready (producer ws $P_WS, consumer ws $C_WS)"
    else
        save_logs
        tap_fail "both containers ready (logs in $TEST_LOGDIR)"
        tail -n 5 "$TEST_LOGDIR/consumer-container.log" "$TEST_LOGDIR/producer-container.log" | sed 's/^/#   /'
        return 1
    fi
}

clean_run() {
    local out="$TEST_LOGDIR/clean" rc
    mkdir -p "$out"
    "$CHATFLOW_BIN/chatflow-loadgen" --port "$P_WS" --consumer-port "$C_WS" \
        --consumer-admin "http://127.0.0.1:$C_ADMIN" --messages 2000 --connections 20 --rooms 20 \
        --warmup-connections 0 --subscribe --tokens --drain-timeout 60 --out-dir "$out" \
        --json "$out/report.json" --acked-ids "$out/acked.txt" >"$out/report.txt" 2>"$out/progress.txt"
    rc=$?
    tap_is "$rc" 0 "through both containers: 2000 messages acked, each broadcast once and in order (load generator's clean run)"
    [ "$rc" -eq 0 ] || tail -n 15 "$out/report.txt" | sed 's/^/#   /'
    local rows
    for _ in $(seq 1 60); do
        rows=$(psql_q "select count(*) from messages")
        [ "${rows:-0}" -ge 2000 ] && break
        sleep 0.5
    done
    tap_is "$rows" 2000 "PostgreSQL holds the 2000 messages"
    psql_q "truncate messages" >/dev/null # the next part counts its own rows
}

sigterm_under_load() {
    FAULT_MESSAGES=10000
    FAULT_T0_MS=$(now_ms)
    mkdir -p "$FAULT_DIR"
    start_bg loadgen "$CHATFLOW_BIN/chatflow-loadgen" --port "$P_WS" --messages "$FAULT_MESSAGES" \
        --connections 20 --warmup-connections 0 --rooms 20 --window 10 --retries 8 \
        --connect-timeout 20 --tokens --out-dir "$FAULT_DIR" --json "$FAULT_DIR/report.json" \
        --acked-ids "$FAULT_DIR/acked.txt" --quiet --seed "$RANDOM"
    faults_when_acked 30
    stop_container "$P_NAME"
    faults_mark "producer container stopped (SIGTERM) in $STOP_S s, exit code $EXIT_CODE"
    tap_is "$EXIT_CODE" 0 "producer container: SIGTERM under load gives exit 0"
    tap_check "producer container stopped within the ${STOP_TIMEOUT_S} s stop timeout (${STOP_S} s)" \
        awk -v s="$STOP_S" -v max="$STOP_TIMEOUT_S" 'BEGIN { exit !(s < max) }'
    $RUN logs "$P_NAME" >"$TEST_LOGDIR/producer-container.log" 2>&1
    local outcome
    outcome=$(grep -o 'stopped: [0-9]* frames left unanswered' "$TEST_LOGDIR/producer-container.log" |
        tail -1)
    tap_is "$outcome" "stopped: 0 frames left unanswered" \
        "producer container: every frame it read was answered before it closed"
    grep -o 'closing [0-9]* connections (going away); [0-9]* frames unanswered' \
        "$TEST_LOGDIR/producer-container.log" | tail -1 | sed 's/^/# producer: /'
    $RUN start "$P_NAME" >/dev/null 2>&1
    if wait_http "http://127.0.0.1:$P_ADMIN/health/ready" 60; then
        faults_mark "producer container started again"
        tap_ok "producer container started again"
    else
        tap_fail "producer container started again"
    fi
    faults_load_wait
    faults_drain
    faults_check_exactly_once
}

# The order ECS stops a task in: deregistered (the target drains), the deregistration delay (the
# ALB would cut what is still open at its end), SIGTERM. The containers must have closed their
# clients with 1001 well before the delay ends, and still be running.
drain_reaches_clients() {
    local out="$TEST_LOGDIR/drain" i bad
    mkdir -p "$out"
    for i in 1 2; do
        start_bg "probe-p$i" python3 "$ROOT/test/lib/ws_probe.py" --port "$P_WS" --path "/chat/$i" \
            --secret "$CHATFLOW_AUTH_HS256_SECRET" --user "$i" --wait 60
        start_bg "probe-c$i" python3 "$ROOT/test/lib/ws_probe.py" --port "$C_WS" --path "/chat/$i" \
            --secret "$CHATFLOW_AUTH_HS256_SECRET" --user "$((i + 10))" --wait 60
    done
    local opened=0
    for _ in $(seq 1 100); do
        opened=$(cat "$(bg_log probe-p1)" "$(bg_log probe-p2)" "$(bg_log probe-c1)" \
            "$(bg_log probe-c2)" 2>/dev/null | grep -c '^open$')
        [ "$opened" -eq 4 ] && break
        sleep 0.1
    done
    tap_is "$opened" 4 "two clients on the producer container and two subscribers on the consumer's connected"
    local t0
    t0=$(now_ms)
    lb_state chatflow-producer draining
    lb_state chatflow-consumer draining
    for i in p1 p2 c1 c2; do
        for _ in $(seq 1 200); do
            grep -qE '^(close|eof|timeout)' "$(bg_log "probe-$i")" 2>/dev/null && break
            sleep 0.1
        done
    done
    local closes ms=$(( $(now_ms) - t0 ))
    closes=$(cat "$(bg_log probe-p1)" "$(bg_log probe-p2)" "$(bg_log probe-c1)" \
        "$(bg_log probe-c2)" 2>/dev/null | grep -c '^close 1001 ')
    tap_is "$closes" 4 "targets draining: every client and subscriber closed 1001 by the containers (in $ms ms; ECS's delay is 20 s)"
    [ "$closes" -eq 4 ] || cat "$(bg_log probe-p1)" "$(bg_log probe-c1)" | sed 's/^/#   /'
    tap_is "$($RUN inspect --format '{{.State.Running}}' "$P_NAME" 2>/dev/null) $($RUN inspect --format '{{.State.Running}}' "$C_NAME" 2>/dev/null)" \
        "true true" "both containers keep running until their SIGTERM"
    bad=$(grep -c '"ok": false' "$ELB_DIR/requests.log" 2>/dev/null)
    tap_check "every DescribeTargetHealth call from the containers was signed with the task's key ($(wc -l <"$ELB_DIR/requests.log" 2>/dev/null) calls, ${bad:-0} refused)" \
        test -s "$ELB_DIR/requests.log" -a "${bad:-0}" -eq 0
    lb_state chatflow-producer unused # the delay is over; ECS sends SIGTERM
    stop_container "$P_NAME"
    tap_is "$EXIT_CODE" 0 "producer container: SIGTERM after the drain gives exit 0 (in $STOP_S s)"
}

consumer_sigterm() {
    stop_container "$C_NAME"
    tap_is "$EXIT_CODE" 0 "consumer container: SIGTERM gives exit 0"
    tap_check "consumer container stopped within the ${STOP_TIMEOUT_S} s stop timeout (${STOP_S} s)" \
        awk -v s="$STOP_S" -v max="$STOP_TIMEOUT_S" 'BEGIN { exit !(s < max) }'
}

# ---------------------------------------------------------------- main

build_images || finish
check_labels
check_stripped producer
check_stripped consumer
for b in chatflow-loadgen chatflow-sqs; do
    [ -x "$CHATFLOW_BIN/$b" ] || { tap_fail "$CHATFLOW_BIN/$b is built"; finish; }
done
rm -rf "${ROOT:?}/${BUILD:?}/test-stacks/images"
private_stack_up images || { tap_fail "private stack (PostgreSQL, fauxqs, queues) started"; finish; }
start_elb_standin || finish
migrate_through_image
start_services || finish
check_not_root "$P_NAME"
check_not_root "$C_NAME"
check_healthcheck "$P_NAME"
check_healthcheck "$C_NAME"
clean_run
sigterm_under_load
drain_reaches_clients
consumer_sigterm
finish
