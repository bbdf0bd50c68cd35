/*
 * breaker — a circuit breaker over SQS requests, shared by the publisher threads, the WebSocket
 * thread and the health check.
 *
 * Contract:
 *  - States: CLOSED (requests flow), OPEN (no requests; callers fail fast), HALF_OPEN (exactly
 *    one probe request is let through; its outcome closes or re-opens the breaker).
 *  - circuit_acquire() asks whether a request may start at now_ns. CLOSED: yes. OPEN: no, until
 *    open_ms have passed since it opened; then it turns HALF_OPEN and the caller's request is the
 *    probe (*probe = true). HALF_OPEN: yes only if no probe is outstanding (then it is the probe).
 *  - circuit_record() reports the outcome of a request that acquire() allowed. A success closes
 *    the breaker and clears the failure count. A failure of the probe re-opens it; in CLOSED,
 *    failure_threshold consecutive failures open it. Failures recorded while OPEN extend nothing.
 *  - circuit_state() is a lock-free read for the WebSocket thread and the health check.
 *    circuit_admits() (lock-free too) tells the WebSocket thread whether new messages may go to
 *    the publisher: not while OPEN, except once open_ms have passed (then they wait there behind
 *    the half-open probe, which may be their own first batch).
 *  - Every transition is logged and mirrored in the gauge (0 closed, 1 half-open, 2 open) when
 *    one is given. All functions are thread-safe.
 */
#ifndef CHATFLOW_PRODUCER_BREAKER_H
#define CHATFLOW_PRODUCER_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"

typedef enum { CIRCUIT_CLOSED = 0, CIRCUIT_HALF_OPEN = 1, CIRCUIT_OPEN = 2 } circuit_state_t;

typedef struct circuit_breaker circuit_breaker;

circuit_breaker *circuit_breaker_new(int failure_threshold, long long open_ms, metric_gauge *gauge);
void circuit_breaker_free(circuit_breaker *cb);
bool circuit_acquire(circuit_breaker *cb, uint64_t now_ns, bool *probe);
void circuit_record(circuit_breaker *cb, bool success, bool was_probe, uint64_t now_ns);
circuit_state_t circuit_state(const circuit_breaker *cb);
bool circuit_admits(const circuit_breaker *cb, uint64_t now_ns);
const char *circuit_state_name(circuit_state_t s); /* "closed", "half-open", "open" */

#endif
