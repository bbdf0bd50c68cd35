/*
 * fuzz_iso8601 — time_parse_iso8601(), which checks every client timestamp (protocol.md §1) and the
 * consumer's HTTP API window parameters (testStartTime / testEndTime, protocol.md §5).
 *
 * Input: the string (copied into an exact-size NUL-terminated buffer).
 * Properties: an accepted string has a zone designator at its end ('Z'/'z' or a digit of an
 * offset) and contains a 'T'/'t'; formatting the instant (time_format_iso8601) and parsing that
 * gives the same instant whenever it falls in the four-digit years the formatter writes;
 * parsing is deterministic.
 */
#include "fuzz_util.h"
#include "timeutil.h"

#define MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00.000Z */
#define MAX_MS (253402300799999LL) /* 9999-12-31T23:59:59.999Z */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t ms = 0, again = 0;
    bool ok = time_parse_iso8601(s, &ms);
    FUZZ_ASSERT(ok == time_parse_iso8601(s, &again));
    if (ok) {
        FUZZ_ASSERT(ms == again);
        size_t n = strlen(s);
        FUZZ_ASSERT(n >= 20);
        char last = s[n - 1];
        FUZZ_ASSERT(last == 'Z' || last == 'z' || (last >= '0' && last <= '9'));
        FUZZ_ASSERT(s[10] == 'T' || s[10] == 't');
        if (ms >= MIN_MS && ms <= MAX_MS) {
            char out[ISO8601_BUF];
            time_format_iso8601(ms, out);
            int64_t back = 0;
            bool reparsed = time_parse_iso8601(out, &back);
            if (!reparsed || back != ms)
                fprintf(stderr, "round trip: '%s' -> %lld -> '%s' -> %lld\n", s, (long long)ms, out,
                        (long long)back);
            FUZZ_ASSERT(reparsed && back == ms);
        }
    }
    free(s);
    return 0;
}
