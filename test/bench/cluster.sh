#!/usr/bin/env bash
# test/bench/cluster.sh — the consumers' cluster bus (consumer/bus.h): one consumer node next to
# K consumer nodes (3) on the same Redis, queues and database, in the same run. A benchmark: it
# asserts nothing about speed, but it fails (exit 1) when a run was not clean.
#
#   BUILD=build test/bench/cluster.sh [--messages N] [--nodes K] [--subscribers-per-room S]
#                                     [--connections C] [--window W]
#
# Steps (all on 127.0.0.1, ports picked free at run time, everything stopped by PID on exit, pass
# or fail):
#   1. a private stack with Redis (PostgreSQL + fauxqs + redis-server,
#      $BUILD/test-stacks/bench-cluster), empty schema; one chatflow-producer for both runs;
#   2. for 1 node, then for K nodes: the consumers, all with CHATFLOW_REDIS_URL set — the single
#      node too, so both runs pay the bus and differ only in the node count — and one
#      CHATFLOW_REDIS_PREFIX per run; 20 rooms x S subscribers (30), each room's S dealt evenly
#      over the nodes ($BUILD/bench/bench_cluster_subs); then chatflow-loadgen, N messages
#      (20000), C connections x window W (64 x 20), no warm-up, as fast as the windows allow;
#   3. per run: end-to-end throughput = acked messages / (first send -> the later of "PostgreSQL
#      holds them all" and "the last subscriber received its last one"); broadcast deliveries/s =
#      chatflow_broadcast_deliveries_total summed over the nodes / that time; the bus's cost per
#      message: chatflow_bus_published_total and chatflow_bus_received_total (all results) summed
#      over the nodes / acked; CPU seconds per 1,000 messages of the consumers (all nodes) and of
#      redis-server, from /proc/<pid>/stat (utime + stime, all threads);
#   4. checks, each fatal: every message acked, none failed; PostgreSQL holds exactly the acked
#      messageIds (each once: message_id is the primary key) and no other row; every subscriber
#      received every stored message of its room exactly once, in sequence order, nothing else,
#      and was never closed.
# Prints a table and one JSON line (also in $BUILD/bench/cluster.json), with the ratios K nodes /
# 1 node. Logs, loadgen reports and the subscribers' output are in $BUILD/bench/cluster/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
export TEST_NAME=bench-cluster TEST_LOGDIR="$ROOT/$BUILD/bench/cluster"
# shellcheck source=../lib/common.sh
. test/lib/common.sh

MESSAGES=20000
NODES=3
PER_ROOM=30
CONNECTIONS=64
WINDOW=20
ROOMS=20
usage() {
    echo "usage: $0 [--messages N] [--nodes K (2..8)] [--subscribers-per-room S (a multiple of K)]" \
        "[--connections C] [--window W]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
        --messages) MESSAGES=$2 ;;
        --nodes) NODES=$2 ;;
        --subscribers-per-room) PER_ROOM=$2 ;;
        --connections) CONNECTIONS=$2 ;;
        --window) WINDOW=$2 ;;
        *) usage ;;
    esac
    shift 2
done
for v in "$MESSAGES" "$NODES" "$PER_ROOM" "$CONNECTIONS" "$WINDOW"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || usage
done
[ "$NODES" -ge 2 ] && [ "$NODES" -le 8 ] || usage
# An even spread, so each node of the cluster writes the same share of the deliveries.
[ $((PER_ROOM % NODES)) -eq 0 ] || usage
for b in chatflow-producer chatflow-consumer chatflow-loadgen bench/bench_cluster_subs; do
    [ -x "$CHATFLOW_BIN/$b" ] || { echo "missing $CHATFLOW_BIN/$b: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
say() { echo "cluster: $*" >&2; }
die() { echo "cluster: FAILED: $*" >&2; exit 1; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
HZ=$(getconf CLK_TCK)

# ---------------------------------------------------------------- small helpers

# utime + stime of a process, all its threads, in clock ticks; 0 once it is gone. The fields are
# counted after the ")" that ends the command name, which may itself hold spaces.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    awk '{print $12 + $13}' <<<"${stat##*) }"
}

# The wall clock in ns (bash's own microseconds: no process per call), comparable with the
# subscribers' CLOCK_REALTIME.
now_ns() { echo "${EPOCHREALTIME/./}000"; }

# new_port: a free loopback port in NEW_PORT, never one this script handed out before (two picks
# could otherwise collide before either is bound). Sets a variable rather than printing: a $(...)
# subshell would forget what it handed out.
USED_PORTS=" "
new_port() {
    local p
    for _ in $(seq 1 50); do
        p=$(free_port) || break
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        NEW_PORT=$p
        return 0
    done
    die "no free port on 127.0.0.1"
}

# wait_bg NAME: waits for a process started with start_bg to exit; its exit status goes to
# WAIT_RC and it is forgotten (it no longer needs stopping). Not in a $(...): only this shell can
# wait for its children.
wait_bg() {
    WAIT_RC=0
    wait "${BG_PIDS[$1]}" 2>/dev/null || WAIT_RC=$?
    unset "BG_PIDS[$1]"
}

# node_counters ADMIN_PORT: the bus, broadcast and SQS counters of one consumer, as a JSON object
# (each counter summed over its label sets).
node_counters() {
    local text
    text=$(curl -sf --max-time 5 "http://127.0.0.1:$1/metrics") || return 1
    awk '
        function add(key) { v[key] += $2 }
        $1 == "chatflow_broadcast_deliveries_total" { add("deliveries") }
        $1 == "chatflow_bus_published_total" { add("published") }
        index($1, "chatflow_bus_received_total{") == 1 { add("received") }
        $1 == "chatflow_bus_received_total{result=\"own\"}" { add("received_own") }
        $1 == "chatflow_bus_received_total{result=\"delivered\"}" { add("received_delivered") }
        $1 == "chatflow_bus_received_total{result=\"duplicate\"}" { add("received_duplicate") }
        index($1, "chatflow_bus_gaps_total{") == 1 { add("gaps") }
        $1 == "chatflow_bus_publish_dropped_total" { add("publish_dropped") }
        $1 == "chatflow_slow_subscribers_dropped_total" { add("slow_dropped") }
        index($1, "chatflow_sqs_requests_total{") == 1 { add("sqs_requests") }
        index($1, "chatflow_sqs_requests_total{action=\"ReceiveMessage\"") == 1 { add("sqs_receives") }
        END {
            n = split("deliveries published received received_own received_delivered received_duplicate gaps " \
                      "publish_dropped slow_dropped sqs_requests sqs_receives", k, " ")
            printf "{"
            for (i = 1; i <= n; i++) printf "%s\"%s\":%.0f", (i > 1 ? "," : ""), k[i], v[k[i]]
            printf "}\n"
        }' <<<"$text"
}

# snapshot: every node's counters and CPU ticks, and redis-server's, fauxqs's and the producer's
# ticks, as one JSON object.
snapshot() {
    local i nodes="" c
    for i in $(seq 1 "$RUN_NODES"); do
        c=$(node_counters "${NODE_ADMIN[$i]}") || return 1
        nodes="$nodes${nodes:+,}$(jq -c --arg t "$(cpu_ticks "${NODE_PID[$i]}")" '. + {ticks: ($t|tonumber)}' <<<"$c")"
    done
    jq -cn --argjson nodes "[$nodes]" --arg r "$(cpu_ticks "$REDIS_PID")" --arg f "$(cpu_ticks "$FAUXQS_PID")" \
        --arg p "$(cpu_ticks "$PRODUCER_PID")" \
        '{nodes: $nodes, redis_ticks: ($r|tonumber), fauxqs_ticks: ($f|tonumber), producer_ticks: ($p|tonumber)}'
}

# ---------------------------------------------------------------- the services

start_producer() {
    new_port && PRODUCER_WS_PORT=$NEW_PORT
    new_port && PRODUCER_ADMIN_PORT=$NEW_PORT
    start_bg producer env CHATFLOW_WS_PORT="$PRODUCER_WS_PORT" CHATFLOW_ADMIN_PORT="$PRODUCER_ADMIN_PORT" \
        CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_SERVER_ID=bench-producer \
        "$CHATFLOW_BIN/chatflow-producer"
    PRODUCER_PID=$BG_PID
    wait_http "http://127.0.0.1:$PRODUCER_ADMIN_PORT/health/ready" 60 ||
        die "the producer did not become ready (log: $(bg_log producer))"
}

declare -a NODE_PID=() NODE_WS=() NODE_ADMIN=()

# start_nodes K PREFIX: K consumers on the bus with PREFIX, each ready (bus connected, queues and
# database reachable). The first run applies the migrations; later starts find them applied.
start_nodes() {
    local k=$1 prefix=$2 i
    for i in $(seq 1 "$k"); do
        new_port && NODE_WS[i]=$NEW_PORT
        new_port && NODE_ADMIN[i]=$NEW_PORT
        start_bg "node$i-of-$k" env CHATFLOW_WS_PORT="${NODE_WS[$i]}" CHATFLOW_ADMIN_PORT="${NODE_ADMIN[$i]}" \
            CHATFLOW_WS_BIND=127.0.0.1 CHATFLOW_ADMIN_BIND=127.0.0.1 CHATFLOW_MIGRATE_ON_START=1 \
            CHATFLOW_REDIS_URL="$REDIS_URL" CHATFLOW_REDIS_PREFIX="$prefix" \
            CHATFLOW_SERVER_ID="bench-node-$i-of-$k" "$CHATFLOW_BIN/chatflow-consumer"
        NODE_PID[i]=$BG_PID
        # One at a time: the first one's migrations are done before the next starts.
        wait_http "http://127.0.0.1:${NODE_ADMIN[$i]}/health/ready" 60 ||
            die "consumer $i of $k did not become ready (log: $(bg_log "node$i-of-$k"))"
    done
}

# stop_nodes K: SIGTERM to every node first, so they shut down side by side (each may take its
# stop timeout), then each is waited for (SIGKILL after 20 s).
stop_nodes() {
    local k=$1 i
    STOPPED_AT=$EPOCHSECONDS
    for i in $(seq 1 "$k"); do kill -TERM "${NODE_PID[$i]}" 2>/dev/null || true; done
    for i in $(seq 1 "$k"); do
        stop_bg "node$i-of-$k" TERM 20 || say "consumer $i of $k exited with status $? (log: $(bg_log "node$i-of-$k"))"
    done
}

# ---------------------------------------------------------------- one run

ACKED_ALL="$TEST_LOGDIR/acked-all.txt"

# wait_stored WANT TIMEOUT_S: until PostgreSQL holds WANT rows; the wall clock (ns) of the first
# poll that saw them goes to T_STORED. The consumer commits in small flushes, so a poll every 50 ms
# is close; one psql session asks them all, because starting psql for each would cost the two
# cores more than the consumers' own work it is timing.
wait_stored() {
    local want=$1 timeout=$2 rows=0 t_end rc=1
    t_end=$((EPOCHSECONDS + timeout))
    coproc POLL { exec psql -XAtq 2>/dev/null; }
    BG_PIDS[poll]=$POLL_PID # stopped by the exit trap too
    while [ "$EPOCHSECONDS" -lt "$t_end" ]; do
        echo "select count(*) from messages;" >&"${POLL[1]}" || break
        read -r -t 10 rows <&"${POLL[0]}" || break
        if [ "$rows" -ge "$want" ]; then
            T_STORED=$(now_ns)
            rc=0
            break
        fi
        sleep 0.05
    done
    stop_bg poll TERM 5 || true
    [ $rc -eq 0 ] || echo "cluster: only $rows of $want rows after ${timeout}s" >&2
    return $rc
}

# db_check RUN_ACKED EXPECT_FILE: compares the table with every id acked so far (missing, extra,
# rows) and writes "<room> <messageId>" of this run's rows to EXPECT_FILE (through a temporary
# name: the subscribers start checking when the file appears). Prints "missing extra rows
# run_rows" (run_rows: rows holding this run's acked ids).
db_check() {
    local run_acked=$1 expect=$2
    psql -XAtq -v ON_ERROR_STOP=1 <<SQL || return 1
create temp table acked_all(message_id uuid primary key);
\copy acked_all from '$ACKED_ALL'
create temp table acked_run(message_id uuid primary key);
\copy acked_run from '$run_acked'
\copy (select m.room_id, m.message_id from messages m join acked_run a using (message_id)) to '$expect.tmp' with (delimiter ' ')
select (select count(*) from acked_all a where not exists (select 1 from messages m where m.message_id = a.message_id))
    || ' ' || (select count(*) from messages m where not exists (select 1 from acked_all a where a.message_id = m.message_id))
    || ' ' || (select count(*) from messages)
    || ' ' || (select count(*) from messages m join acked_run a using (message_id));
SQL
    mv "$expect.tmp" "$expect"
}

RUN_RESULT=

# run_config K: one measured run with K consumer nodes; its JSON goes to RUN_RESULT. Runs in this
# shell, not in a $(...): the processes it starts must be known to the exit trap.
run_config() {
    local k=$1 tag="n$1" i ports="" subs_log
    RUN_NODES=$k
    say "$k node(s): starting the consumers (bus on, prefix bench-$tag-$$)"
    start_nodes "$k" "bench-$tag-$$"
    for i in $(seq 1 "$k"); do ports="$ports${ports:+,}${NODE_WS[$i]}"; done

    local expect="$TEST_LOGDIR/$tag-expect.txt"
    rm -f "$expect" "$expect.tmp"
    say "$k node(s): $ROOMS rooms x $PER_ROOM subscribers ($((PER_ROOM / k)) per room on each node)"
    start_bg "$tag-subscribers" "$CHATFLOW_BIN/bench/bench_cluster_subs" --ports "$ports" --expect "$expect" \
        --rooms "$ROOMS" --per-room "$PER_ROOM" --drain-timeout 120
    subs_log=$(bg_log "$tag-subscribers")
    for _ in $(seq 1 600); do
        grep -q '^ready ' "$subs_log" && break
        bg_alive "$tag-subscribers" || die "the subscribers did not connect: $(tail -3 "$subs_log")"
        sleep 0.1
    done
    grep -q '^ready ' "$subs_log" || die "the subscribers did not connect within 60 s"

    local before t0 lg_rc t_stored acked want db
    before=$(snapshot) || die "could not read the consumers' metrics"
    say "$k node(s): loadgen, $MESSAGES messages, $CONNECTIONS connections x window $WINDOW"
    t0=$(now_ns)
    start_bg "$tag-loadgen" "$CHATFLOW_BIN/chatflow-loadgen" --port "$PRODUCER_WS_PORT" --messages "$MESSAGES" \
        --connections "$CONNECTIONS" --window "$WINDOW" --rooms "$ROOMS" --warmup-connections 0 \
        --out-dir "$TEST_LOGDIR/$tag" --json "$TEST_LOGDIR/$tag.json" --acked-ids "$TEST_LOGDIR/$tag-acked.txt"
    wait_bg "$tag-loadgen"
    lg_rc=$WAIT_RC
    [ -s "$TEST_LOGDIR/$tag.json" ] && [ -f "$TEST_LOGDIR/$tag-acked.txt" ] || die "$tag: the load generator wrote no report (exit $lg_rc, see $(bg_log "$tag-loadgen"))"
    acked=$(wc -l <"$TEST_LOGDIR/$tag-acked.txt")
    cat "$TEST_LOGDIR/$tag-acked.txt" >>"$ACKED_ALL"
    want=$(wc -l <"$ACKED_ALL")
    # Up to ~50 ms per message on top of 2 minutes: only a broken run waits that long.
    wait_stored "$want" $((120 + MESSAGES / 20)) || die "$tag: PostgreSQL does not hold every acked message"
    t_stored=$T_STORED

    local missing extra rows run_rows
    db=$(db_check "$TEST_LOGDIR/$tag-acked.txt" "$expect") || die "$tag: the database check failed"
    read -r missing extra rows run_rows <<<"$db"
    [ -n "$run_rows" ] || die "$tag: the database check gave no answer"

    # The subscribers now check themselves against the file (at most 120 s more).
    for _ in $(seq 1 1500); do
        bg_alive "$tag-subscribers" || break
        sleep 0.1
    done
    bg_alive "$tag-subscribers" && die "$tag: the subscribers did not finish"
    local subs_rc subs
    wait_bg "$tag-subscribers"
    subs_rc=$WAIT_RC
    subs=$(grep '^{' "$subs_log" | tail -1 || true)
    [ -n "$subs" ] || die "$tag: the subscribers reported nothing (exit $subs_rc, log $subs_log)"

    local after
    after=$(snapshot) || die "could not read the consumers' metrics"
    stop_nodes "$k"

    RUN_RESULT=$(jq -c --argjson before "$before" --argjson after "$after" --argjson subs "$subs" \
        --arg k "$k" --arg lg_rc "$lg_rc" --arg acked "$acked" --arg t0 "$t0" --arg t_stored "$t_stored" \
        --arg missing "$missing" --arg extra "$extra" --arg rows "$rows" --arg run_rows "$run_rows" --arg want "$want" --arg hz "$HZ" '
        ($hz|tonumber) as $hz | ($acked|tonumber) as $n
        | ([$t_stored|tonumber, $subs.last_ns] | max) as $t_end
        | (($t_end - ($t0|tonumber)) / 1e9) as $secs
        | [range(0; $after.nodes | length) as $i
           | $after.nodes[$i] as $a | $before.nodes[$i] as $b
           | reduce ($a | keys[]) as $key ({}; .[$key] = $a[$key] - $b[$key])] as $per_node
        | ($per_node | reduce .[] as $d ({}; reduce ($d | keys[]) as $key (.; .[$key] += $d[$key]))) as $sum
        | def per_k($ticks): if $n > 0 then $ticks / $hz / $n * 1000 else 0 end;
        {nodes: ($k|tonumber), loadgen_exit: ($lg_rc|tonumber), messages: .sent, acked: .acked, failed: .failed,
         retries: .retries, ack_msgs_per_s: .throughputPerSecond, acked_ids: $n,
         e2e_seconds: $secs, e2e_msgs_per_s: (if $secs > 0 then $n / $secs else 0 end),
         stored_after_s: ((($t_stored|tonumber) - ($t0|tonumber)) / 1e9),
         last_delivery_after_s: (($subs.last_ns - ($t0|tonumber)) / 1e9),
         deliveries: $sum.deliveries, deliveries_per_s: (if $secs > 0 then $sum.deliveries / $secs else 0 end),
         bus: {published: $sum.published, received: $sum.received, received_own: $sum.received_own,
               received_delivered: $sum.received_delivered, received_duplicate: $sum.received_duplicate,
               gaps: $sum.gaps, publish_dropped: $sum.publish_dropped,
               published_per_message: (if $n > 0 then $sum.published / $n else 0 end),
               received_per_message: (if $n > 0 then $sum.received / $n else 0 end)},
         slow_subscribers_dropped: $sum.slow_dropped,
         sqs: {requests_per_message: (if $n > 0 then $sum.sqs_requests / $n else 0 end),
               receives_per_message: (if $n > 0 then $sum.sqs_receives / $n else 0 end)},
         cpu_s_per_1k_messages: {consumers: per_k($sum.ticks), redis: per_k($after.redis_ticks - $before.redis_ticks),
                                 fauxqs: per_k($after.fauxqs_ticks - $before.fauxqs_ticks),
                                 producer: per_k($after.producer_ticks - $before.producer_ticks)},
         per_node: [$per_node[] | {deliveries, bus_received: .received, bus_published: .published, sqs_requests,
                                   cpu_s_per_1k_messages: per_k(.ticks)}],
         db: {run_rows: ($run_rows|tonumber), rows_total: ($rows|tonumber), rows_expected: ($want|tonumber),
              missing: ($missing|tonumber),
              extra: ($extra|tonumber)},
         subscribers: $subs}' "$TEST_LOGDIR/$tag.json")
}

# check_clean RUN_JSON: every correctness figure, each one fatal.
check_clean() {
    local r=$1 bad
    bad=$(jq -r '[
        (if .loadgen_exit != 0 then "loadgen exit \(.loadgen_exit)" else empty end),
        (if .acked != .messages then "acked \(.acked) of \(.messages)" else empty end),
        (if .failed != 0 then "\(.failed) failed" else empty end),
        (if .acked_ids != .acked then "\(.acked_ids) acked ids for \(.acked) acks" else empty end),
        (if .db.missing != 0 then "\(.db.missing) acked ids not in messages" else empty end),
        (if .db.extra != 0 then "\(.db.extra) rows never acked" else empty end),
        (if .db.rows_total != .db.rows_expected then "\(.db.rows_total) rows for \(.db.rows_expected) acked" else empty end),
        (if .db.run_rows != .acked then "\(.db.run_rows) rows of this run for \(.acked) acked" else empty end),
        (if .subscribers.bad != 0 then "\(.subscribers.bad) of \(.subscribers.subscribers) subscribers incomplete (missing \(.subscribers.missing), duplicated \(.subscribers.duplicated), unexpected \(.subscribers.unexpected), out of order \(.subscribers.out_of_order), closed \(.subscribers.closed))" else empty end),
        (if .subscribers.expected_deliveries != .acked * .subscribers.per_room then "the subscribers expected \(.subscribers.expected_deliveries) deliveries for \(.acked) messages" else empty end)
      ] | join("; ")' <<<"$r")
    [ -z "$bad" ] || die "$(jq -r .nodes <<<"$r")-node run not clean: $bad (logs in $TEST_LOGDIR)"
    say "$(jq -r '"\(.nodes) node(s): clean: \(.acked) acked and stored once (\(.db.rows_total) rows in all), each of \(.subscribers.subscribers) subscribers got every message of its room once, in order (\(.subscribers.deliveries) deliveries)"' <<<"$r")"
}

# ---------------------------------------------------------------- main

say "private stack (PostgreSQL + fauxqs + redis-server), logs in $TEST_LOGDIR"
: >"$ACKED_ALL"
private_stack_up bench-cluster || die "the private stack did not start"
on_exit "private_stack down --purge >/dev/null 2>&1"
# private_stack_env leaves CHATFLOW_REDIS_URL out of the environment (opt-in per test); the
# consumers get it explicitly below, the producer never.
[ -n "${CHATFLOW_REDIS_PORT:-}" ] && [ -n "${CHATFLOW_REDIS_PID:-}" ] || die "the stack started no redis-server"
REDIS_URL="redis://127.0.0.1:$CHATFLOW_REDIS_PORT"
REDIS_PID=$CHATFLOW_REDIS_PID
FAUXQS_PID=$CHATFLOW_FAUXQS_PID
psql -XAtq -c "drop schema public cascade; create schema public" >/dev/null 2>&1 || die "could not empty the database"

start_producer
run_config 1
ONE=$RUN_RESULT
check_clean "$ONE"
# fauxqs keeps a long poll (up to CHATFLOW_RECEIVE_WAIT_S, 20 s) whose client went away and would
# hand it the next run's first messages, which would then stay invisible for the visibility
# timeout (30 s): the next run would measure that stall. A consumer lets its polls end before it
# exits when its stop deadline allows, but whatever it cut short must expire before the next run:
# 22 s after the SIGTERM.
SETTLE=$((STOPPED_AT + 22 - EPOCHSECONDS))
if [ "$SETTLE" -gt 0 ]; then
    say "waiting $SETTLE s more, so no long poll of the stopped consumer is still pending in fauxqs"
    # In the background and waited for, so a Ctrl-C or SIGTERM ends the script at once.
    start_bg settle sleep "$SETTLE"
    wait_bg settle
fi
run_config "$NODES"
MANY=$RUN_RESULT
check_clean "$MANY"

RESULT=$(jq -cn --argjson one "$ONE" --argjson many "$MANY" --arg load "$LOAD" --arg rooms "$ROOMS" \
    --arg per_room "$PER_ROOM" --arg connections "$CONNECTIONS" --arg window "$WINDOW" --arg messages "$MESSAGES" '
    def ratio($a; $b): if $b > 0 then $a / $b else null end;
    {load_average: $load, messages: ($messages|tonumber), rooms: ($rooms|tonumber),
     subscribers_per_room: ($per_room|tonumber), connections: ($connections|tonumber), window: ($window|tonumber),
     producers: 1, one: $one, many: $many,
     ratio: {e2e_msgs_per_s: ratio($many.e2e_msgs_per_s; $one.e2e_msgs_per_s),
             deliveries_per_s: ratio($many.deliveries_per_s; $one.deliveries_per_s),
             bus_published_per_message: ratio($many.bus.published_per_message; $one.bus.published_per_message),
             bus_received_per_message: ratio($many.bus.received_per_message; $one.bus.received_per_message),
             sqs_requests_per_message: ratio($many.sqs.requests_per_message; $one.sqs.requests_per_message),
             consumer_cpu_per_message: ratio($many.cpu_s_per_1k_messages.consumers; $one.cpu_s_per_1k_messages.consumers),
             redis_cpu_per_message: ratio($many.cpu_s_per_1k_messages.redis; $one.cpu_s_per_1k_messages.redis)}}')

f() { jq -r "$1" <<<"$RESULT"; }
row() { printf '%-62s %16s %16s %8s\n' "$@"; }
K=$NODES
printf '\n%s\n' "cluster bus, $MESSAGES messages per run, $ROOMS rooms x $PER_ROOM subscribers, 1 producer; load average at start: $LOAD"
row "figure" "1 node" "$K nodes" "$K / 1"
row "end-to-end throughput (acked and stored and delivered), msg/s" "$(f '.one.e2e_msgs_per_s | round')" \
    "$(f '.many.e2e_msgs_per_s | round')" "$(f '.ratio.e2e_msgs_per_s * 100 | round / 100')"
row "broadcast deliveries/s, sum over the nodes" "$(f '.one.deliveries_per_s | round')" \
    "$(f '.many.deliveries_per_s | round')" "$(f '.ratio.deliveries_per_s * 100 | round / 100')"
row "bus publishes per message (sum over the nodes)" "$(f '.one.bus.published_per_message * 100 | round / 100')" \
    "$(f '.many.bus.published_per_message * 100 | round / 100')" "$(f '.ratio.bus_published_per_message * 100 | round / 100')"
row "bus receives per message (sum over the nodes)" "$(f '.one.bus.received_per_message * 100 | round / 100')" \
    "$(f '.many.bus.received_per_message * 100 | round / 100')" "$(f '.ratio.bus_received_per_message * 100 | round / 100')"
row "consumer SQS requests per message (all nodes; ReceiveMessage)" \
    "$(f '"\(.one.sqs.requests_per_message * 100 | round / 100) (\(.one.sqs.receives_per_message * 100 | round / 100))"')" \
    "$(f '"\(.many.sqs.requests_per_message * 100 | round / 100) (\(.many.sqs.receives_per_message * 100 | round / 100))"')" \
    "$(f '.ratio.sqs_requests_per_message * 100 | round / 100')"
row "consumer CPU s per 1,000 messages (all nodes)" "$(f '.one.cpu_s_per_1k_messages.consumers * 1000 | round / 1000')" \
    "$(f '.many.cpu_s_per_1k_messages.consumers * 1000 | round / 1000')" "$(f '.ratio.consumer_cpu_per_message * 100 | round / 100')"
row "redis-server CPU s per 1,000 messages" "$(f '.one.cpu_s_per_1k_messages.redis * 1000 | round / 1000')" \
    "$(f '.many.cpu_s_per_1k_messages.redis * 1000 | round / 1000')" "$(f '.ratio.redis_cpu_per_message * 100 | round / 100')"
row "bus gaps (filled from the stream or lost)" "$(f .one.bus.gaps)" "$(f .many.bus.gaps)" ""
row "acked / rows stored / subscribers complete" "$(f '"\(.one.acked)/\(.one.db.run_rows)/\(.one.subscribers.complete)"')" \
    "$(f '"\(.many.acked)/\(.many.db.run_rows)/\(.many.subscribers.complete)"')" ""
echo "$RESULT" | tee "$OUT/cluster.json"
