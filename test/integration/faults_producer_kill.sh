#!/usr/bin/env bash
# faults_producer_kill — the producer is killed with SIGKILL during a load run and restarted on
# the same port. Frames it held unanswered get no ack; the load generator reconnects and sends
# them again with the same clientMessageId, so they map to the same messageId and SQS
# deduplicates them. Every acked message ends up in PostgreSQL exactly once; the unacked ones
# that never made it are counted (the loss window of an unacked send).
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

faults_setup faults-producer-kill || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 30
inflight=$(curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" | awk '$1 == "chatflow_inflight_messages" { print $2 }')
kill -KILL "$PRODUCER_PID"
faults_mark "producer (pid $PRODUCER_PID) killed with SIGKILL with ${inflight:-?} frames unanswered"
stop_bg producer >/dev/null 2>&1
faults_after 2000
if faults_start_producer; then
    faults_mark "producer restarted (pid $PRODUCER_PID)"
    tap_ok "producer restarted after SIGKILL"
else
    tap_fail "producer restarted after SIGKILL (log $(bg_log producer))"
fi
faults_load_wait
faults_drain
faults_alive consumer
faults_metrics_show
faults_check_exactly_once
finish
