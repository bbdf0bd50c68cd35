/* test_producer_breaker — closed -> open after N failures, fail fast while open, one half-open
 * probe, probe success closes, probe failure re-opens; the gauge follows. */
/* test-passes: asan */
#include "../../producer/breaker.h"
#include "log.h"
#include "testlib.h"

#define MS 1000000ull

int main(void)
{
    log_init("error", "text");
    metric_gauge *g = metrics_gauge("test_breaker_state", "breaker state", NULL);
    circuit_breaker *cb = circuit_breaker_new(3, 100, g);
    uint64_t t = 1000 * MS;
    bool probe = true;
    CHECK(circuit_acquire(cb, t, &probe) && !probe, "closed: requests flow, none is a probe");
    circuit_record(cb, false, false, t);
    circuit_record(cb, false, false, t);
    CHECK_INT(circuit_state(cb), CIRCUIT_CLOSED, "2 failures of 3: still closed");
    circuit_record(cb, true, false, t);
    circuit_record(cb, false, false, t);
    circuit_record(cb, false, false, t);
    CHECK_INT(circuit_state(cb), CIRCUIT_CLOSED,
              "a success resets the count of consecutive failures");
    circuit_record(cb, false, false, t);
    CHECK_INT(circuit_state(cb), CIRCUIT_OPEN, "3 consecutive failures: open");
    CHECK(metric_gauge_value(g) == 2.0, "gauge 2 while open");
    CHECK(!circuit_acquire(cb, t + 50 * MS, &probe), "open: no request before open_ms");
    CHECK(!circuit_admits(cb, t + 50 * MS), "open: new messages are not admitted before open_ms");
    CHECK(circuit_admits(cb, t + 101 * MS),
          "open_ms passed: new messages are admitted (to wait for the probe)");
    CHECK(circuit_acquire(cb, t + 101 * MS, &probe) && probe, "after open_ms: one probe allowed");
    CHECK_INT(circuit_state(cb), CIRCUIT_HALF_OPEN, "half-open while the probe is out");
    CHECK(metric_gauge_value(g) == 1.0, "gauge 1 while half-open");
    bool probe2 = false;
    CHECK(!circuit_acquire(cb, t + 102 * MS, &probe2),
          "half-open: a second request waits for the probe");
    circuit_record(cb, false, true, t + 110 * MS);
    CHECK_INT(circuit_state(cb), CIRCUIT_OPEN, "probe failed: open again");
    CHECK(!circuit_acquire(cb, t + 150 * MS, &probe), "re-opened: the wait starts over");
    CHECK(circuit_acquire(cb, t + 211 * MS, &probe) && probe, "next probe after another open_ms");
    circuit_record(cb, true, true, t + 215 * MS);
    CHECK_INT(circuit_state(cb), CIRCUIT_CLOSED, "probe succeeded: closed");
    CHECK(metric_gauge_value(g) == 0.0, "gauge 0 when closed");
    CHECK(circuit_acquire(cb, t + 216 * MS, &probe) && !probe, "closed again: requests flow");
    CHECK_STR(circuit_state_name(CIRCUIT_HALF_OPEN), "half-open", "state names");
    circuit_breaker_free(cb);
    return TEST_DONE();
}
