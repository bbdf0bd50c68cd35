/*
 * failpoint — faults a test can switch on in a real service binary, to prove the service's own
 * defences (the liveness watchdog) against a failure no outside fault can produce: a wedged thread.
 *
 * Contract: failpoint_on("stall-poller") is true when the environment variable
 * CHATFLOW_TEST_FAILPOINT names it (a comma-separated list). Read once, then lock-free. Test use
 * only: the names are listed in docs/operations.md and nothing in production sets the variable.
 * failpoint_stall_forever() is what a "stall-*" failpoint does: the calling thread sleeps for good.
 */
#ifndef CHATFLOW_FAILPOINT_H
#define CHATFLOW_FAILPOINT_H

#include <stdbool.h>

bool failpoint_on(const char *name);
void failpoint_stall_forever(void);

#endif
