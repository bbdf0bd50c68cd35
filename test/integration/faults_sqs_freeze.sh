#!/usr/bin/env bash
# faults_sqs_freeze — fauxqs is frozen (SIGSTOP) for 6 s during a load run, then resumed
# (SIGCONT). The producer's requests time out and its breaker opens: frames are answered
# QUEUE_ERROR / QUEUE_UNAVAILABLE (never acked while SQS has not accepted them) and the load
# generator retries them; the consumer's polls time out and resume. Every acked message ends up
# in PostgreSQL exactly once.
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

faults_setup faults-sqs-freeze || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 20
kill -STOP "$CHATFLOW_FAUXQS_PID"
faults_mark "fauxqs (pid $CHATFLOW_FAUXQS_PID) frozen with SIGSTOP"
on_exit 'kill -CONT "$CHATFLOW_FAUXQS_PID" 2>/dev/null'
# The breaker opens after a few request timeouts (1 s each by default): from 3 s into the freeze
# until it ends, the producer must say so — /health/ready 503 and the breaker gauge not closed
# (1 open, 2 half-open) — at least once. Sampled, not a single read, so a half-open probe at the
# wrong moment does not decide it.
faults_after 3000
frozen_seen=0
while [ $(( $(now_ms) - FAULT_AT_MS )) -lt 5800 ]; do
    breaker=$(curl -s --max-time 1 "http://127.0.0.1:$P_ADMIN/metrics" |
              awk '$1 == "chatflow_circuit_breaker_state" { print int($2) }')
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$P_ADMIN/health/ready")
    if [ "$ready" = 503 ] && [ "${breaker:-0}" -ge 1 ]; then frozen_seen=1; break; fi
    sleep 0.2
done
note "while frozen: producer breaker state ${breaker:-?}, /health/ready $ready"
tap_is "$frozen_seen" 1 "while frozen: the producer's breaker opens and /health/ready answers 503"
faults_after 6000
kill -CONT "$CHATFLOW_FAUXQS_PID"
faults_mark "fauxqs resumed with SIGCONT"
faults_load_wait
faults_drain
faults_alive producer
faults_alive consumer
faults_metrics_show
faults_check_exactly_once
finish
