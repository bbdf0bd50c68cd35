#!/usr/bin/env bash
# faults_sqs_restart — fauxqs is killed and restarted (deploy/local/stack restart-sqs, same port,
# queues recreated) during a load run. fauxqs keeps its queues in memory only, so whatever it held
# when it died is gone: that is the emulator, not the design (SQS is durable). The test bounds the
# acked messages that may be missing by what fauxqs held at the kill: the producer's acks so far
# (chatflow_ack_latency_seconds_count) less the messages the consumer had received
# (chatflow_messages_consumed_total), both read right after the kill, when neither can move. Every
# other acked message must be in PostgreSQL exactly once, and both services recover by themselves.
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

faults_setup faults-sqs-restart || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 30
kill -KILL "$CHATFLOW_FAUXQS_PID"
sleep 0.2
consumed=$(curl -s --max-time 3 "http://127.0.0.1:$C_ADMIN/metrics" | awk '$1 == "chatflow_messages_consumed_total" { print int($2) }')
acks=$(curl -s --max-time 3 "http://127.0.0.1:$P_ADMIN/metrics" | awk '$1 == "chatflow_ack_latency_seconds_count" { print int($2) }')
held=$(( ${acks:-0} - ${consumed:-0} ))
faults_mark "fauxqs (pid $CHATFLOW_FAUXQS_PID) killed with SIGKILL: ${acks:-?} acked so far, ${consumed:-?} consumed, so it held at most $held acked messages"
faults_after 2000
if private_stack restart-sqs >>"$TEST_LOGDIR/stack-restart.log" 2>&1; then
    private_stack_env
    faults_mark "fauxqs restarted (pid $CHATFLOW_FAUXQS_PID), queues recreated"
    tap_ok "fauxqs restarted on the same endpoint"
else
    tap_fail "fauxqs restarted (log $TEST_LOGDIR/stack-restart.log)"
fi
faults_load_wait
faults_drain
faults_alive producer
faults_alive consumer
faults_metrics_show
if [ -z "$acks" ] || [ -z "$consumed" ]; then
    tap_fail "ack and consume counts read from /metrics at the kill"
    held=0
fi
faults_check_exactly_once "$held"
finish
