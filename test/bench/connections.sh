#!/usr/bin/env bash
# test/bench/connections.sh — resident memory per idle WebSocket connection: the producer's
# clients and the consumer's subscribers, next to a bare libwebsockets server holding the same
# connections in the same run. A benchmark, not a test: it asserts nothing about size.
#
#   BUILD=build test/bench/connections.sh [--connections N]
#
# Steps (all on 127.0.0.1, ports picked free, everything stopped by PID at exit):
#   1. a private stack (PostgreSQL + fauxqs) in $BUILD/test-stacks/bench-connections;
#   2. the baseline: `bench_idle_conns serve` (an lws vhost that only upgrades), then
#      `bench_idle_conns hold` opens N connections to it and reads its VmRSS before and after;
#   3. the same N connections to chatflow-producer (/chat/1..20), then to chatflow-consumer
#      (/chat/1..20 subscriptions, anonymous, then N members userId=1..N), the services started
#      once with their connection limits above N.
# Prints a table and one JSON line (also in $BUILD/bench/connections.json).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
BUILD=${BUILD:-build}
export TEST_NAME=bench-connections TEST_LOGDIR="$ROOT/$BUILD/bench/connections"
# shellcheck source=../lib/common.sh
. test/lib/common.sh
# shellcheck source=../lib/services.sh
. test/lib/services.sh

N=2000
usage() { echo "usage: $0 [--connections N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
        --connections) N=$2 ;;
        *) usage ;;
    esac
    shift 2
done
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 100 && "$N" -le 10000 ]] || usage
for b in chatflow-producer chatflow-consumer bench/bench_idle_conns; do
    [ -x "$CHATFLOW_BIN/$b" ] || { echo "missing $CHATFLOW_BIN/$b: run make BUILD=$BUILD all" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "jq is needed (make deps)" >&2; exit 1; }
[ "$(ulimit -n)" -gt $((N + 100)) ] || ulimit -n $((N + 1000)) 2>/dev/null ||
    { echo "connections: open-file limit $(ulimit -n) is below $N connections" >&2; exit 1; }

OUT="$ROOT/$BUILD/bench"
mkdir -p "$OUT"
say() { echo "connections: $*" >&2; }
die() { echo "connections: FAILED: $*" >&2; exit 1; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# hold PORT PID [--members]: N idle connections to 127.0.0.1:PORT; prints the driver's JSON line.
hold() {
    "$CHATFLOW_BIN/bench/bench_idle_conns" hold --port "$1" --pid "$2" --connections "$N" --rooms 20 \
        ${3:+"$3"} 2>>"$TEST_LOGDIR/hold.log"
}

say "baseline: a bare libwebsockets server, $N connections"
start_bg bare "$CHATFLOW_BIN/bench/bench_idle_conns" serve
for _ in $(seq 1 50); do grep -q '^port ' "$(bg_log bare)" && break; sleep 0.1; done
BARE_PORT=$(awk '/^port / {print $2}' "$(bg_log bare)")
[ -n "$BARE_PORT" ] || die "the bare server did not start ($(bg_log bare))"
BARE=$(hold "$BARE_PORT" "${BG_PIDS[bare]}") || die "bare server: $(tail -1 "$TEST_LOGDIR/hold.log")"
stop_bg bare

say "private stack (PostgreSQL + fauxqs), logs in $TEST_LOGDIR"
private_stack_up bench-connections || die "the private stack did not start"
on_exit "private_stack down --purge >/dev/null 2>&1"

LIMITS=(CHATFLOW_MAX_CONNECTIONS=$((N + 100)))
SUB_LIMITS=(CHATFLOW_MAX_SUBSCRIBERS=$((N + 100)) CHATFLOW_ROOM_MEMBER_CAP=$((N + 100)))
services_start "${LIMITS[@]}" -- "${SUB_LIMITS[@]}" || die "the services did not start (logs in $TEST_LOGDIR)"
services_wait_ready 60 || die "the services did not become ready"

say "producer: $N client connections"
PRODUCER=$(hold "$PRODUCER_WS_PORT" "$PRODUCER_PID") || die "producer: $(tail -1 "$TEST_LOGDIR/hold.log")"
say "consumer: $N anonymous subscribers"
CONSUMER=$(hold "$CONSUMER_WS_PORT" "$CONSUMER_PID") || die "consumer: $(tail -1 "$TEST_LOGDIR/hold.log")"
say "consumer: $N members (userId 1..$N, presence on)"
MEMBERS=$(hold "$CONSUMER_WS_PORT" "$CONSUMER_PID" --members) ||
    die "consumer members: $(tail -1 "$TEST_LOGDIR/hold.log")"

RESULT=$(jq -cn --argjson bare "$BARE" --argjson producer "$PRODUCER" --argjson consumer "$CONSUMER" \
    --argjson members "$MEMBERS" --arg load "$LOAD" --arg n "$N" '
    def ratio($a; $b): if $b > 0 then ($a / $b * 100 | round) / 100 else null end;
    {connections: ($n|tonumber), load_average: $load, bare: $bare, producer: $producer,
     consumer: $consumer, consumer_member: $members,
     ratio_producer: ratio($producer.kib_per_connection; $bare.kib_per_connection),
     ratio_consumer: ratio($consumer.kib_per_connection; $bare.kib_per_connection),
     ratio_consumer_member: ratio($members.kib_per_connection; $bare.kib_per_connection)}')

printf '\n%-52s %12s %10s\n' "idle connections ($N)" "KiB / conn" "ratio"
printf '%-52s %12s %10s\n' "bare libwebsockets server (baseline)" "$(jq -r .bare.kib_per_connection <<<"$RESULT")" "1.00"
printf '%-52s %12s %10s\n' "chatflow-producer, clients on /chat/N" "$(jq -r .producer.kib_per_connection <<<"$RESULT")" \
    "$(jq -r .ratio_producer <<<"$RESULT")"
printf '%-52s %12s %10s\n' "chatflow-consumer, anonymous subscribers" "$(jq -r .consumer.kib_per_connection <<<"$RESULT")" \
    "$(jq -r .ratio_consumer <<<"$RESULT")"
printf '%-52s %12s %10s\n' "chatflow-consumer, subscribers naming a user" "$(jq -r .consumer_member.kib_per_connection <<<"$RESULT")" \
    "$(jq -r .ratio_consumer_member <<<"$RESULT")"
echo "$RESULT" | tee "$OUT/connections.json"
finish
