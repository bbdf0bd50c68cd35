/* test_timeutil — clocks, ISO-8601 formatting and strict parsing. */
/* test-passes: asan */
#include "testlib.h"
#include "timeutil.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

static void check_parse(const char *s, long long want_ms)
{
    int64_t got = -1;
    bool ok = time_parse_iso8601(s, &got);
    CHECK(ok, "parse accepts %s", s);
    if (ok) CHECK_INT(got, want_ms, "parse %s -> %lld", s, want_ms);
}

static void check_reject(const char *s, const char *why)
{
    int64_t got = 12345;
    CHECK(!time_parse_iso8601(s, &got), "parse rejects %s (%s)", s, why);
}

static void check_format(long long ms, const char *want)
{
    char buf[ISO8601_BUF];
    time_format_iso8601(ms, buf);
    CHECK_STR(buf, want, "format %lld -> %s", ms, want);
}

static void test_format(void)
{
    check_format(0, "1970-01-01T00:00:00.000Z");
    check_format(1795428930123LL, "2026-11-23T10:15:30.123Z");
    check_format(-1, "1969-12-31T23:59:59.999Z");
    check_format(951868799999LL, "2000-02-29T23:59:59.999Z");
    check_format(-62135596800000LL, "0001-01-01T00:00:00.000Z");
    check_format(253402300799999LL, "9999-12-31T23:59:59.999Z");
    check_format(253402300799999LL + 1000, "9999-12-31T23:59:59.999Z"); /* clamped */
    char buf[ISO8601_BUF];
    time_format_iso8601(time_wall_ms(), buf);
    CHECK_INT(strlen(buf), 24, "format of now is 24 characters (%s)", buf);
}

static void test_parse_accepts(void)
{
    check_parse("2026-11-23T10:15:30.123Z", 1795428930123LL);
    check_parse("2026-11-23t10:15:30.123z", 1795428930123LL);
    check_parse("2026-11-23T10:15:30Z", 1795428930000LL);
    check_parse("2026-11-23T10:15:30.1Z", 1795428930100LL);
    check_parse("2026-11-23T10:15:30.12Z", 1795428930120LL);
    check_parse("2026-11-23T10:15:30.123999999Z", 1795428930123LL); /* truncated, not rounded */
    check_parse("2026-11-23T12:15:30.123+02:00", 1795428930123LL);
    check_parse("2026-11-23T12:15:30.123+0200", 1795428930123LL);
    check_parse("2026-11-23T04:45:30.123-05:30", 1795428930123LL);
    check_parse("2026-11-23T10:15:30.123+00:00", 1795428930123LL);
    check_parse("2026-11-23T10:15:30.123-00:00", 1795428930123LL);
    check_parse("2026-11-24T09:15:30.123+23:00", 1795428930123LL);
    check_parse("2024-02-29T00:00:00Z", 1709164800000LL);    /* leap year */
    check_parse("2000-02-29T23:59:59.999Z", 951868799999LL); /* divisible by 400 */
    check_parse("1970-01-01T00:00:00Z", 0);
    check_parse("1969-12-31T23:59:59.999Z", -1);
    check_parse("0001-01-01T00:00:00Z", -62135596800000LL);
    check_parse("9999-12-31T23:59:59.999Z", 253402300799999LL);
    check_parse("2026-11-23T10:15:60Z", 1795428960000LL); /* leap second = next minute */
    CHECK(time_parse_iso8601("2026-11-23T10:15:30Z", NULL), "parse with a NULL result pointer");
}

static void test_parse_rejects(void)
{
    check_reject("2026-11-23T10:15:30.123", "no zone");
    check_reject("2026-11-23T10:15:30", "no zone, no fraction");
    check_reject("2023-02-29T00:00:00Z", "Feb 29 of a non-leap year");
    check_reject("1900-02-29T00:00:00Z", "1900 is not a leap year");
    check_reject("2026-04-31T00:00:00Z", "April has 30 days");
    check_reject("2026-13-01T00:00:00Z", "month 13");
    check_reject("2026-00-01T00:00:00Z", "month 0");
    check_reject("2026-01-00T00:00:00Z", "day 0");
    check_reject("2026-01-32T00:00:00Z", "day 32");
    check_reject("2026-01-01T24:00:00Z", "hour 24");
    check_reject("2026-01-01T23:60:00Z", "minute 60");
    check_reject("2026-01-01T23:59:61Z", "second 61");
    check_reject("2026-01-01T00:00:00+24:00", "offset hour 24");
    check_reject("2026-01-01T00:00:00+02:60", "offset minute 60");
    check_reject("2026-01-01T00:00:00+2:00", "one-digit offset hour");
    check_reject("2026-01-01T00:00:00+02", "offset without minutes");
    check_reject("2026-01-01T00:00:00.Z", "dot without digits");
    check_reject("2026-01-01T00:00:00,5Z", "comma fraction");
    check_reject("2026-01-01 00:00:00Z", "space instead of T");
    check_reject("2026-01-01T00:00:00ZZ", "trailing text");
    check_reject("2026-01-01T00:00:00Z ", "trailing space");
    check_reject(" 2026-01-01T00:00:00Z", "leading space");
    check_reject("26-01-01T00:00:00Z", "two-digit year");
    check_reject("2026-1-01T00:00:00Z", "one-digit month");
    check_reject("2026-01-01", "date only");
    check_reject("2026-01-01T00:00Z", "no seconds");
    check_reject("", "empty");
    check_reject("1795428930123", "epoch number");
    CHECK(!time_parse_iso8601(NULL, NULL), "parse rejects NULL");
}

static void test_round_trip(void)
{
    const long long samples[] = {0,
                                 1,
                                 -1,
                                 999,
                                 1000,
                                 1795428930123LL,
                                 951868799999LL,
                                 -62135596800000LL,
                                 253402300799999LL,
                                 4102444800000LL};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char buf[ISO8601_BUF];
        int64_t back = 0;
        time_format_iso8601(samples[i], buf);
        CHECK(time_parse_iso8601(buf, &back) && back == samples[i], "round trip %lld via %s",
              samples[i], buf);
    }
    int64_t now = time_wall_ms(), back = 0;
    char buf[ISO8601_BUF];
    time_format_iso8601(now, buf);
    CHECK(time_parse_iso8601(buf, &back) && back == now, "round trip of now (%s)", buf);
}

static void test_clocks(void)
{
    int64_t wall = time_wall_ms();
    long long sys = (long long)time(NULL) * 1000;
    CHECK(wall > sys - 2000 && wall < sys + 2000, "time_wall_ms agrees with time() (%lld vs %lld)",
          (long long)wall, sys);
    uint64_t a = time_mono_ns();
    uint64_t b = time_mono_ns();
    CHECK(b >= a, "time_mono_ns does not go back");
    time_sleep_ms(20);
    uint64_t c = time_mono_ns();
    CHECK(c - a >= 20000000u, "time_sleep_ms(20) sleeps at least 20 ms (%llu ns)",
          (unsigned long long)(c - a));
    uint64_t d = time_mono_ns();
    time_sleep_ms(0);
    time_sleep_ms(-5);
    uint64_t e = time_mono_ns();
    CHECK(e - d < 5000000u, "time_sleep_ms returns at once for 0 and negative (%llu ns)",
          (unsigned long long)(e - d));
    struct timespec t = time_mono_timespec(1234567890123ull);
    CHECK(t.tv_sec == 1234 && t.tv_nsec == 567890123, "time_mono_timespec splits nanoseconds");
}

static void *sleep_ms_thread(void *arg)
{
    time_sleep_ms((long)(intptr_t)arg);
    return NULL;
}

/* time_join_thread_by: joins a thread that ends in time, gives up (without joining) on one that
 * does not, which can still be joined afterwards. */
static void test_join_by(void)
{
    pthread_t quick, slow;
    bool started = pthread_create(&quick, NULL, sleep_ms_thread, (void *)(intptr_t)10) == 0 &&
                   pthread_create(&slow, NULL, sleep_ms_thread, (void *)(intptr_t)400) == 0;
    CHECK(started, "two threads started");
    if (!started) return;
    CHECK(time_join_thread_by(quick, time_mono_ns() + 2000000000ull),
          "a thread that ends before the deadline is joined");
    CHECK(!time_join_thread_by(slow, time_mono_ns() + 50000000ull),
          "one that runs past the deadline is not joined: the call gives up while it runs");
    CHECK(time_join_thread_by(slow, time_mono_ns() + 2000000000ull),
          "it can still be joined once it ends");
}

int main(void)
{
    test_format();
    test_parse_accepts();
    test_parse_rejects();
    test_round_trip();
    test_clocks();
    test_join_by();
    return TEST_DONE();
}
