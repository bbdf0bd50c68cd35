#!/usr/bin/env bash
# faults_consumer_kill — the consumer is killed with SIGKILL during a load run and restarted:
# whatever it had received but not committed is redelivered after the visibility timeout (10 s
# here) and stored once; every acked message ends up in PostgreSQL exactly once.
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

faults_setup faults-consumer-kill || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 30
faults_after 1000
kill -KILL "$CONSUMER_PID"
faults_mark "consumer (pid $CONSUMER_PID) killed with SIGKILL"
stop_bg consumer >/dev/null 2>&1
faults_after 3500
if faults_start_consumer; then
    faults_mark "consumer restarted (pid $CONSUMER_PID)"
    tap_ok "consumer restarted after SIGKILL"
else
    tap_fail "consumer restarted after SIGKILL (log $(bg_log consumer))"
fi
faults_load_wait
faults_drain
faults_alive producer
faults_metrics_show
faults_check_exactly_once
finish
