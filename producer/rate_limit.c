/*
 * rate_limit — token buckets in an open-addressing table keyed by user id (contract in
 * rate_limit.h). Hand-written: no dependency offers a bounded integer-keyed map, and the table
 * is small enough to rebuild whole when it fills (rare, O(max_users)).
 */
#include "rate_limit.h"

#include <stdlib.h>

typedef struct {
    uint32_t user_id; /* 0 = empty slot (user ids start at 1) */
    double tokens;
    uint64_t updated_ns;
} bucket;

struct rate_limiter {
    double capacity; /* tokens; also the refill per minute */
    double per_ns;   /* refill per nanosecond */
    size_t max_users;
    size_t mask; /* table size - 1, a power of two >= 2 * max_users */
    size_t count;
    bucket *table;
};

static size_t slot_of(const rate_limiter *rl, uint32_t user_id)
{
    return ((size_t)user_id * 2654435761u) & rl->mask;
}

static double refilled(const rate_limiter *rl, const bucket *b, uint64_t now_ns)
{
    double t =
        b->tokens + (double)(now_ns > b->updated_ns ? now_ns - b->updated_ns : 0) * rl->per_ns;
    return t > rl->capacity ? rl->capacity : t;
}

rate_limiter *rate_limiter_new(long long per_minute, size_t max_users)
{
    rate_limiter *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    rl->capacity = (double)per_minute;
    rl->per_ns = (double)per_minute / 60e9;
    rl->max_users = max_users ? max_users : 1;
    if (per_minute == 0) return rl;
    size_t size = 16;
    while (size < 2 * rl->max_users) size <<= 1;
    rl->mask = size - 1;
    rl->table = calloc(size, sizeof *rl->table);
    if (!rl->table) {
        free(rl);
        return NULL;
    }
    return rl;
}

void rate_limiter_free(rate_limiter *rl)
{
    if (!rl) return;
    free(rl->table);
    free(rl);
}

size_t rate_limiter_tracked(const rate_limiter *rl) { return rl->count; }

static bucket *find_or_empty(rate_limiter *rl, uint32_t user_id)
{
    size_t i = slot_of(rl, user_id);
    while (rl->table[i].user_id != 0 && rl->table[i].user_id != user_id) i = (i + 1) & rl->mask;
    return &rl->table[i];
}

/* Rebuilds the table keeping the buckets that still hold information (not yet full) and were
 * touched within max_idle_ns. */
static void rebuild(rate_limiter *rl, uint64_t now_ns, uint64_t max_idle_ns)
{
    bucket *old = rl->table;
    bucket *fresh = calloc(rl->mask + 1, sizeof *fresh);
    if (!fresh) {
        /* Out of memory: forgetting every bucket is the safe degradation (more lenient). */
        for (size_t i = 0; i <= rl->mask; i++) old[i].user_id = 0;
        rl->count = 0;
        return;
    }
    rl->table = fresh;
    rl->count = 0;
    for (size_t i = 0; i <= rl->mask; i++) {
        const bucket *b = &old[i];
        if (b->user_id == 0) continue;
        if (refilled(rl, b, now_ns) >= rl->capacity) continue;
        if (now_ns - b->updated_ns > max_idle_ns) continue;
        *find_or_empty(rl, b->user_id) = *b;
        rl->count++;
    }
    free(old);
}

static void make_room(rate_limiter *rl, uint64_t now_ns)
{
    uint64_t max_idle = UINT64_MAX;
    rebuild(rl, now_ns, max_idle);
    /* Still full of active users: drop the longest idle, halving the idle bound each round. */
    max_idle = (uint64_t)60e9;
    while (rl->count >= rl->max_users - rl->max_users / 4 && max_idle > 0) {
        rebuild(rl, now_ns, max_idle);
        max_idle /= 2;
    }
    /* Even then the table (twice max_users) has free slots, so the insert that follows works. */
}

bool rate_limiter_allow(rate_limiter *rl, uint32_t user_id, uint64_t now_ns)
{
    if (!rl->table || user_id == 0) return true;
    bucket *b = find_or_empty(rl, user_id);
    if (b->user_id == 0) {
        if (rl->count >= rl->max_users) {
            make_room(rl, now_ns);
            if (rl->count > rl->mask / 2) return true; /* cannot track more: fail open */
            b = find_or_empty(rl, user_id);
        }
        b->user_id = user_id;
        b->tokens = rl->capacity;
        b->updated_ns = now_ns;
        rl->count++;
    }
    double t = refilled(rl, b, now_ns);
    if (now_ns > b->updated_ns) b->updated_ns = now_ns;
    if (t < 1.0) {
        b->tokens = t;
        return false;
    }
    b->tokens = t - 1.0;
    return true;
}
