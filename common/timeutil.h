/*
 * timeutil — clocks and ISO-8601.
 *
 * Contract:
 *  - time_mono_ns(): CLOCK_MONOTONIC in nanoseconds, for durations and deadlines; the helpers
 *    for timed waits on it (condition variables, joining a thread by a deadline) are here too.
 *  - time_wall_ms(): CLOCK_REALTIME in milliseconds since the Unix epoch, for timestamps.
 *  - time_format_iso8601(ms, buf): writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL) in UTC.
 *  - time_parse_iso8601(s, &ms): accepts an ISO-8601 instant WITH a zone designator:
 *    "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM|+HHMM)", 'T' or 't', 'Z' or 'z';
 *    validates calendar ranges (month days, leap years, hour 0-23, minute 0-59, second 0-60);
 *    returns false for anything else (no zone, trailing text, out of range). Fractions beyond
 *    milliseconds are truncated.
 */
#ifndef CHATFLOW_TIMEUTIL_H
#define CHATFLOW_TIMEUTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define ISO8601_BUF 32

uint64_t time_mono_ns(void);
/* The CLOCK_MONOTONIC instant mono_ns (time_mono_ns() scale) as a timespec: the deadline of a
 * pthread_cond_timedwait() on a condition variable created with CLOCK_MONOTONIC. */
struct timespec time_mono_timespec(uint64_t mono_ns);
/* time_mono_timespec() of now + ms (ms < 0 counts as 0). */
struct timespec time_mono_after_ms(long ms);
/* pthread_cond_init() of a condition variable whose timed waits use CLOCK_MONOTONIC, so a
 * wall-clock jump does not stretch them. true when it is ready (then pthread_cond_destroy()). */
bool time_cond_init_monotonic(pthread_cond_t *cv);
/* Joins thread t if it ends before the monotonic instant deadline_ns (time_mono_ns() scale),
 * looking every 20 ms; false, t still running and not joined, when the deadline passed. For a
 * bounded stop: the caller then leaves alone what that thread may still use. */
bool time_join_thread_by(pthread_t t, uint64_t deadline_ns);
int64_t time_wall_ms(void);
void time_format_iso8601(int64_t epoch_ms, char out[ISO8601_BUF]);
bool time_parse_iso8601(const char *s, int64_t *epoch_ms_out);
/* Sleeps for ms milliseconds, resuming after signals. */
void time_sleep_ms(long ms);

#endif
