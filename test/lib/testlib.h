/*
 * testlib — the project's test harness: TAP-style lines that test/run counts.
 *
 * Each check prints "ok - <what>" or "not ok - <what>" (with file:line and the values) on stdout.
 * TEST_DONE() returns the process exit code: 0 when nothing failed. test/run counts the lines,
 * so a test binary that crashes part-way still reports what it checked, and test/run adds one
 * failure for the crash itself.
 */
#ifndef CHATFLOW_TESTLIB_H
#define CHATFLOW_TESTLIB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int testlib_failures;

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        int passed_ = (cond) ? 1 : 0; /* evaluated once: cond may have side effects */ \
        printf(passed_ ? "ok - " : "not ok - ");                                       \
        if (!passed_) testlib_failures++;                                              \
        printf(__VA_ARGS__);                                                           \
        if (!passed_) printf("  [%s:%d: %s]", __FILE__, __LINE__, #cond);              \
        printf("\n");                                                                  \
        fflush(stdout);                                                                \
    } while (0)

#define CHECK_STR(got, want, ...)                                              \
    do {                                                                       \
        const char *g_ = (got), *w_ = (want);                                  \
        int same_ = (g_ && w_ && strcmp(g_, w_) == 0) || (!g_ && !w_);         \
        CHECK(same_, __VA_ARGS__);                                             \
        if (!same_)                                                            \
            printf("#   got:  \"%s\"\n#   want: \"%s\"\n", g_ ? g_ : "(null)", \
                   w_ ? w_ : "(null)");                                        \
    } while (0)

#define CHECK_INT(got, want, ...)                                         \
    do {                                                                  \
        long long g_ = (long long)(got), w_ = (long long)(want);          \
        CHECK(g_ == w_, __VA_ARGS__);                                     \
        if (g_ != w_) printf("#   got:  %lld\n#   want: %lld\n", g_, w_); \
    } while (0)

/* A diagnostic line that test/run shows but does not count. */
#define NOTE(...)            \
    do {                     \
        printf("# ");        \
        printf(__VA_ARGS__); \
        printf("\n");        \
        fflush(stdout);      \
    } while (0)

#define TEST_DONE() (testlib_failures ? 1 : 0)

#endif
