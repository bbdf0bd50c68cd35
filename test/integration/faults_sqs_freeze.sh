#!/usr/bin/env bash
# faults_sqs_freeze — fauxqs is frozen (SIGSTOP) for 6 s during a load run, then resumed
# (SIGCONT). The producer's requests time out and its breaker opens: frames are answered
# QUEUE_ERROR / QUEUE_UNAVAILABLE (never acked while SQS has not accepted them) and the load
# generator retries them; the consumer's polls time out and resume. Every acked message ends up
# in PostgreSQL exactly once.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

faults_setup faults-sqs-freeze || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 20
kill -STOP "$CHATFLOW_FAUXQS_PID"
faults_mark "fauxqs (pid $CHATFLOW_FAUXQS_PID) frozen with SIGSTOP"
on_exit 'kill -CONT "$CHATFLOW_FAUXQS_PID" 2>/dev/null'
faults_after 3000
breaker=$(curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" | awk '$1 == "chatflow_circuit_breaker_state" { print $2 }')
ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$P_ADMIN/health/ready")
note "while frozen: producer breaker state ${breaker:-?}, /health/ready $ready"
tap_ok "while frozen: producer answers /health/ready with $ready (breaker state ${breaker:-?})"
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
