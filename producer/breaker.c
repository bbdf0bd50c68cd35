/* breaker — circuit breaker state machine under one mutex (contract in breaker.h). */
#include "breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "log.h"

struct circuit_breaker {
    pthread_mutex_t lock;
    int failure_threshold;
    uint64_t open_ns;
    int consecutive_failures;      /* guarded by lock */
    _Atomic uint64_t opened_at_ns; /* written under lock, read anywhere */
    bool probe_outstanding;        /* guarded by lock */
    _Atomic int state;             /* written under lock, read anywhere */
    metric_gauge *gauge;
};

const char *circuit_state_name(circuit_state_t s)
{
    switch (s) {
    case CIRCUIT_CLOSED: return "closed";
    case CIRCUIT_HALF_OPEN: return "half-open";
    case CIRCUIT_OPEN: return "open";
    }
    return "unknown";
}

circuit_breaker *circuit_breaker_new(int failure_threshold, long long open_ms, metric_gauge *gauge)
{
    circuit_breaker *cb = calloc(1, sizeof *cb);
    if (!cb) return NULL;
    pthread_mutex_init(&cb->lock, NULL);
    cb->failure_threshold = failure_threshold > 0 ? failure_threshold : 1;
    cb->open_ns = (uint64_t)open_ms * 1000000u;
    atomic_store(&cb->state, CIRCUIT_CLOSED);
    cb->gauge = gauge;
    if (gauge) metric_gauge_set(gauge, CIRCUIT_CLOSED);
    return cb;
}

void circuit_breaker_free(circuit_breaker *cb)
{
    if (!cb) return;
    pthread_mutex_destroy(&cb->lock);
    free(cb);
}

circuit_state_t circuit_state(const circuit_breaker *cb)
{
    return (circuit_state_t)atomic_load(&((circuit_breaker *)cb)->state);
}

bool circuit_admits(const circuit_breaker *cb, uint64_t now_ns)
{
    circuit_breaker *b = (circuit_breaker *)cb;
    if (atomic_load(&b->state) != CIRCUIT_OPEN) return true;
    return now_ns - atomic_load(&b->opened_at_ns) >= b->open_ns;
}

/* Caller holds the lock. */
static void transition(circuit_breaker *cb, circuit_state_t to)
{
    circuit_state_t from = (circuit_state_t)atomic_load(&cb->state);
    if (from == to) return;
    atomic_store(&cb->state, to);
    if (cb->gauge) metric_gauge_set(cb->gauge, to);
    if (to == CIRCUIT_OPEN)
        log_warn("breaker", "SQS circuit breaker %s -> open after %d consecutive failures",
                 circuit_state_name(from), cb->consecutive_failures);
    else
        log_info("breaker", "SQS circuit breaker %s -> %s", circuit_state_name(from),
                 circuit_state_name(to));
}

bool circuit_acquire(circuit_breaker *cb, uint64_t now_ns, bool *probe)
{
    bool allowed = false;
    *probe = false;
    pthread_mutex_lock(&cb->lock);
    switch ((circuit_state_t)atomic_load(&cb->state)) {
    case CIRCUIT_CLOSED: allowed = true; break;
    case CIRCUIT_OPEN:
        if (now_ns - atomic_load(&cb->opened_at_ns) < cb->open_ns) break;
        transition(cb, CIRCUIT_HALF_OPEN);
        /* the first caller after the wait is the probe */
        __attribute__((fallthrough));
    case CIRCUIT_HALF_OPEN:
        if (!cb->probe_outstanding) {
            cb->probe_outstanding = true;
            *probe = true;
            allowed = true;
        }
        break;
    }
    pthread_mutex_unlock(&cb->lock);
    return allowed;
}

void circuit_record(circuit_breaker *cb, bool success, bool was_probe, uint64_t now_ns)
{
    pthread_mutex_lock(&cb->lock);
    if (was_probe) cb->probe_outstanding = false;
    circuit_state_t s = (circuit_state_t)atomic_load(&cb->state);
    if (success) {
        cb->consecutive_failures = 0;
        /* A late success of a request started before the breaker opened proves as much as a
         * probe does: SQS answers. */
        transition(cb, CIRCUIT_CLOSED);
    } else {
        cb->consecutive_failures++;
        if ((s == CIRCUIT_HALF_OPEN && was_probe) ||
            (s == CIRCUIT_CLOSED && cb->consecutive_failures >= cb->failure_threshold)) {
            atomic_store(&cb->opened_at_ns, now_ns);
            transition(cb, CIRCUIT_OPEN);
        }
    }
    pthread_mutex_unlock(&cb->lock);
}
