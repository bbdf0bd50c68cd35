/*
 * fuzz_api_params — the consumer's HTTP API time parameters: api_parse_time() (consumer/api.c),
 * which reads testStartTime / testEndTime of GET /api/metrics/all (protocol.md §5) as an ISO-8601
 * instant with a zone or epoch milliseconds, a '+' of an offset possibly decoded to a space.
 *
 * Input: the decoded query value (copied into an exact-size NUL-terminated buffer).
 * Properties: all digits (at most 15) is taken as epoch ms, exactly; anything else is accepted
 * exactly when time_parse_iso8601() accepts it, or accepts it with spaces read as '+', and to the
 * same instant; the handler then formats the instant (time_format_iso8601), which must not
 * fail for any accepted value; parsing is deterministic.
 */
#include "api.h"
#include "fuzz_util.h"
#include "timeutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 128) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t ms = 0, again = 0;
    bool ok = api_parse_time(s, &ms);
    FUZZ_ASSERT(ok == api_parse_time(s, &again));
    size_t n = strlen(s);
    bool digits = n > 0 && strspn(s, "0123456789") == n;
    if (digits) {
        FUZZ_ASSERT(ok == (n <= 15));
        if (ok) FUZZ_ASSERT(ms == strtoll(s, NULL, 10) && ms >= 0);
    } else if (n > 0) {
        int64_t ref = 0;
        bool ref_ok = time_parse_iso8601(s, &ref);
        if (!ref_ok && strchr(s, ' ') && n < 64) {
            char fixed[64];
            memcpy(fixed, s, n + 1);
            for (char *p = fixed; *p; p++)
                if (*p == ' ') *p = '+';
            ref_ok = time_parse_iso8601(fixed, &ref);
        }
        FUZZ_ASSERT(ok == ref_ok);
        if (ok) FUZZ_ASSERT(ms == ref);
    } else {
        FUZZ_ASSERT(!ok);
    }
    if (ok) {
        FUZZ_ASSERT(ms == again);
        char out[ISO8601_BUF];
        time_format_iso8601(ms, out);
        FUZZ_ASSERT(fuzz_terminated(out, sizeof out) && strlen(out) == 24);
    }
    free(s);
    return 0;
}
