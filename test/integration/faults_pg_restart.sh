#!/usr/bin/env bash
# faults_pg_restart — PostgreSQL is stopped for 6 s during a load run and started again
# (deploy/local/stack stop-pg / start-pg). The consumer's writer retries with backoff and keeps
# the messages in SQS until they are committed (it does not delete what it has not stored);
# /health/ready reports the database down meanwhile. Every acked message ends up in PostgreSQL
# exactly once, none in the DLQ.
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

faults_setup faults-pg-restart || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 30
if private_stack stop-pg >>"$TEST_LOGDIR/stack-pg.log" 2>&1; then
    faults_mark "PostgreSQL stopped"
else
    tap_fail "PostgreSQL stopped (log $TEST_LOGDIR/stack-pg.log)"
fi
faults_after 3000
ready=$(curl -s --max-time 5 -w ' %{http_code}' "http://127.0.0.1:$C_ADMIN/health/ready")
note "consumer /health/ready while PostgreSQL is down: $ready"
case "$ready" in
    *' 503') tap_ok "consumer /health/ready is 503 while PostgreSQL is down" ;;
    *) tap_fail "consumer /health/ready is 503 while PostgreSQL is down (got: $ready)" ;;
esac
faults_after 6000
if private_stack start-pg >>"$TEST_LOGDIR/stack-pg.log" 2>&1; then
    private_stack_env
    faults_mark "PostgreSQL started again"
else
    tap_fail "PostgreSQL started again (log $TEST_LOGDIR/stack-pg.log)"
fi
faults_load_wait
faults_drain
faults_alive producer
faults_alive consumer
faults_metrics_show
faults_check_exactly_once
finish
