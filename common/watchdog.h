/*
 * watchdog — liveness of the loops a service cannot live without, for /health/live.
 *
 * A process is "live" while every loop that must turn (the lws service thread, publisher
 * threads, pollers, the batch writer, ...) keeps turning. A loop that is merely waiting on a
 * dependency (a long poll, a database that answers slowly) is still live: it says in advance how
 * long its next wait may take. Only a loop that overruns what it announced is stuck — so a
 * database or SQS incident never fails liveness (which would have the orchestrator restart every
 * task at once), while a wedged thread does.
 *
 * Contract:
 *  - watchdog_register() adds a loop with a name ("poller-3") and returns its handle (NULL when the
 *    registry is full: the loop is then simply not watched, and a warning is logged). The loop is
 *    expected to beat within first_ms.
 *  - watchdog_expect(h, ms): "my next beat comes within ms from now". Call it at the top of every
 *    turn with the longest wait that turn can legitimately make (a long poll's wait + the request
 *    timeout, a bounded condition wait, ...). NULL h is ignored. Lock-free; any thread.
 *  - watchdog_unregister(h): the loop ended on purpose (stop); it is no longer watched.
 *  - watchdog_check(): true when no registered loop is past its deadline; detail names the
 *    stuck loops and by how much they are late. Safe from any thread (health handlers).
 *  - The gauge chatflow_watchdog_stuck_loops is refreshed on every check.
 *  - The registry is process-wide (like metrics); watchdog_reset() is for tests only.
 */
#ifndef CHATFLOW_WATCHDOG_H
#define CHATFLOW_WATCHDOG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct watchdog_loop watchdog_loop;

watchdog_loop *watchdog_register(const char *name, long first_ms);
void watchdog_expect(watchdog_loop *h, long ms);
void watchdog_unregister(watchdog_loop *h);
bool watchdog_check(char *detail, size_t detail_len);
/* health_check_fn form of watchdog_check() (ctx unused), for admin_http_set_liveness(). */
bool watchdog_health_check(void *ctx, char *detail, size_t detail_len);
void watchdog_reset(void);

#endif
