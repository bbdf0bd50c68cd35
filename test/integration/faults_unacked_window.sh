#!/usr/bin/env bash
# faults_unacked_window — measures the loss window of unacked messages: the producer is killed
# with SIGKILL during a load run whose client never retries (--retries 0). The frames it had
# received but not answered get no ack; some of them SQS had already accepted (they are stored
# anyway), the rest are lost. The test requires every acked message in PostgreSQL exactly once,
# and reports how many frames were unanswered, how many of them were stored, how many were lost,
# and when they had been sent relative to the kill (docs/reliability.md quotes it).
# test-passes: asan
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/faults_lib.sh"

FAULT_RETRIES=0
faults_setup faults-unacked-window || finish
faults_load_start "${FAULT_LOAD:-20000}"
faults_when_acked 30
inflight=$(curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" | awk '$1 == "chatflow_inflight_messages" { print $2 }')
kill_ms=$(( $(now_ms) - FAULT_T0_MS ))
kill -KILL "$PRODUCER_PID"
faults_mark "producer (pid $PRODUCER_PID) killed with SIGKILL with ${inflight:-?} frames unanswered"
stop_bg producer >/dev/null 2>&1
faults_after 1000
if faults_start_producer; then
    faults_mark "producer restarted (pid $PRODUCER_PID)"
    tap_ok "producer restarted after SIGKILL"
else
    tap_fail "producer restarted after SIGKILL (log $(bg_log producer))"
fi
faults_load_wait
faults_drain
faults_check_exactly_once
unacked=$((FAULT_MESSAGES - ACKED))
if [ "$unacked" -gt 0 ]; then
    tap_ok "the kill left $unacked sends unacked (the client does not retry)"
else
    tap_fail "the kill left some sends unacked (none: the kill came too late or too early)"
fi
# When the unacked ones had been sent, relative to the kill (ms; negative = before it).
awk -F, -v t0="$FAULT_T0_MS" -v k="$kill_ms" 'NR > 1 && $4 != "SUCCESS" && $4 != "NOT_SENT" {
         d = $1 - t0 - k; n++; if (n == 1 || d < lo) lo = d; if (n == 1 || d > hi) hi = d }
     END { if (n) printf "# unacked sends went out between %d ms and %d ms relative to the kill\n", lo, hi }' \
    "$FAULT_DIR/messages.csv" | tee -a "$FAULT_DIR/summary.txt"
finish
