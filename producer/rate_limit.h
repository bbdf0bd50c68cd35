/*
 * rate_limit — per-user token buckets ("N messages a minute"), owned by one thread.
 *
 * Contract:
 *  - A bucket holds at most per_minute tokens (the burst is one minute's worth) and refills at
 *    per_minute / 60 tokens a second. rate_limiter_allow() takes one token for user_id at now_ns
 *    and returns true, or returns false (nothing taken) when the bucket is empty.
 *  - per_minute == 0 disables the limiter: every call returns true and nothing is stored.
 *  - Memory is bounded: at most max_users buckets. A bucket that has refilled to full carries no
 *    information, so when the table is full those are evicted first; if that is not enough, the
 *    longest-idle buckets go (an evicted user simply starts again with a full bucket).
 *  - Not thread-safe: the WebSocket service thread owns it.
 */
#ifndef CHATFLOW_PRODUCER_RATE_LIMIT_H
#define CHATFLOW_PRODUCER_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rate_limiter rate_limiter;

/* NULL on allocation failure. */
rate_limiter *rate_limiter_new(long long per_minute, size_t max_users);
void rate_limiter_free(rate_limiter *rl);
bool rate_limiter_allow(rate_limiter *rl, uint32_t user_id, uint64_t now_ns);
size_t rate_limiter_tracked(const rate_limiter *rl);

#endif
