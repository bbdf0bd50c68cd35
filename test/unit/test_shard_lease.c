/* test_shard_lease — the pure parts of the shard leases (consumer/shard_lease.h): the advisory
 * lock class of a queue prefix, the state transitions and what each one means, and the shard
 * lists of the readiness detail. The leases themselves: it_consumer_leases. */
/* test-passes: asan */
#include <string.h>

#include "../../consumer/shard_lease.h"
#include "testlib.h"

static void test_classid(void)
{
    int32_t a = shard_lease_classid("chatflow-room-");
    CHECK(a == shard_lease_classid("chatflow-room-"), "the class of a prefix is stable");
    CHECK(a != shard_lease_classid("staging-room-"), "another prefix, another class");
    CHECK(shard_lease_classid("") != shard_lease_classid("a"), "even one character apart");
    CHECK(shard_lease_classid(NULL) == shard_lease_classid(""), "NULL reads as the empty prefix");
    /* FNV-1a-32("") is its offset basis 2166136261; the class mixes in ChatFlow's constant */
    CHECK_INT((uint32_t)shard_lease_classid(""), 0x43466c77u ^ 2166136261u,
              "the class is ChatFlow's constant XOR FNV-1a-32 of the prefix");
}

static shard_lease_change step(shard_lease_state *s, bool got, shard_lease_state want_state)
{
    shard_lease_change c = shard_lease_transition(s, got);
    CHECK_INT(*s, want_state, "state after got=%d", got);
    return c;
}

static void test_transitions(void)
{
    shard_lease_state s = SHARD_LEASE_UNKNOWN;
    CHECK_INT(step(&s, true, SHARD_LEASE_HELD), SHARD_LEASE_ACQUIRED,
              "never held, got: acquired (not a takeover)");
    CHECK_INT(step(&s, true, SHARD_LEASE_HELD), SHARD_LEASE_UNCHANGED, "held, got: unchanged");
    CHECK_INT(step(&s, false, SHARD_LEASE_STANDBY), SHARD_LEASE_LOST,
              "held, another session has it now: lost (polling stops)");
    CHECK_INT(step(&s, false, SHARD_LEASE_STANDBY), SHARD_LEASE_UNCHANGED,
              "standby, still elsewhere: unchanged (logged once, not every round)");
    CHECK_INT(step(&s, true, SHARD_LEASE_HELD), SHARD_LEASE_TAKEN_OVER, "standby, got: a takeover");
    s = SHARD_LEASE_UNKNOWN;
    CHECK_INT(step(&s, false, SHARD_LEASE_STANDBY), SHARD_LEASE_STOOD_BY,
              "never held, elsewhere: stands by");
}

static void format_is(const shard_lease_state *st, int first, int n, shard_lease_state want,
                      const char *expect)
{
    char out[64];
    shard_lease_format(st, first, n, want, out, sizeof out);
    CHECK_STR(out, expect, "shards of state %d from %d", (int)want, first);
}

static void test_format(void)
{
#define U SHARD_LEASE_UNKNOWN
#define H SHARD_LEASE_HELD
#define S SHARD_LEASE_STANDBY
    const shard_lease_state st[] = {S, S, S, H, S, U, U, H};
#undef U
#undef H
#undef S
    format_is(st, 1, 8, SHARD_LEASE_STANDBY, "1-3,5");
    format_is(st, 1, 8, SHARD_LEASE_HELD, "4,8");
    format_is(st, 11, 8, SHARD_LEASE_UNKNOWN, "16-17");
    format_is(st, 1, 3, SHARD_LEASE_HELD, "");
    char tiny[4];
    shard_lease_format(st, 100, 8, SHARD_LEASE_STANDBY, tiny, sizeof tiny);
    CHECK(strlen(tiny) < sizeof tiny, "a short buffer truncates, NUL-terminated (\"%s\")", tiny);
}

int main(void)
{
    test_classid();
    test_transitions();
    test_format();
    return TEST_DONE();
}
