/* test_producer_rate_limit — the per-user token bucket: burst, refill, independence, off, bounded.
 */
/* test-passes: asan */
#include "../../producer/rate_limit.h"
#include "testlib.h"

#define SEC 1000000000ull

int main(void)
{
    rate_limiter *rl = rate_limiter_new(60, 1000);
    uint64_t t = 1000 * SEC;
    int allowed = 0;
    for (int i = 0; i < 100; i++) allowed += rate_limiter_allow(rl, 7, t);
    CHECK_INT(allowed, 60, "60 a minute: a burst of 100 at once lets 60 through");
    CHECK(!rate_limiter_allow(rl, 7, t + SEC / 2),
          "half a second later: still empty (refill is 1/s)");
    CHECK(rate_limiter_allow(rl, 7, t + SEC + SEC / 10), "after 1.1 s one more token");
    CHECK(!rate_limiter_allow(rl, 7, t + SEC + SEC / 5), "and only one");
    CHECK(rate_limiter_allow(rl, 8, t), "another user has a bucket of his own");
    allowed = 0;
    for (int i = 0; i < 100; i++) allowed += rate_limiter_allow(rl, 7, t + 200 * SEC);
    CHECK_INT(allowed, 60, "after a long idle the bucket is full again, not more");
    CHECK(!rate_limiter_allow(rl, 7, t + 100 * SEC), "a clock going backwards refills nothing");
    rate_limiter_free(rl);

    rate_limiter *off = rate_limiter_new(0, 10);
    allowed = 0;
    for (int i = 0; i < 10000; i++) allowed += rate_limiter_allow(off, 1, t);
    CHECK_INT(allowed, 10000, "0 = off: everything allowed");
    CHECK_INT(rate_limiter_tracked(off), 0, "0 = off: nothing stored");
    rate_limiter_free(off);

    /* bounded: 100 users tracked at most */
    rate_limiter *small = rate_limiter_new(5, 100);
    for (uint32_t u = 1; u <= 100000; u++) {
        rate_limiter_allow(small, u, t + u * 1000);
        if (rate_limiter_tracked(small) > 100) break;
    }
    CHECK(rate_limiter_tracked(small) <= 100,
          "100,000 users through a 100-user table: at most 100 tracked (%zu)",
          rate_limiter_tracked(small));
    /* a recent user keeps its bucket when idle (full) ones are evicted */
    rate_limiter *ev = rate_limiter_new(2, 16);
    uint64_t now = 5000 * SEC;
    rate_limiter_allow(ev, 1, now);
    rate_limiter_allow(ev, 1, now); /* user 1 empty */
    for (uint32_t u = 2; u <= 16; u++)
        rate_limiter_allow(ev, u, now - 600 * SEC);                      /* long idle, full */
    for (uint32_t u = 100; u < 110; u++) rate_limiter_allow(ev, u, now); /* forces eviction */
    CHECK(!rate_limiter_allow(ev, 1, now),
          "eviction drops refilled buckets, not the active empty one");
    rate_limiter_free(ev);
    rate_limiter_free(small);
    return TEST_DONE();
}
