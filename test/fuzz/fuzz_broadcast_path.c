/*
 * fuzz_broadcast_path — what a subscriber asks the consumer for (SPEC §3): bc_target_parse() on
 * /chat/{roomId}[?since=<sequenceNumber>], and seqnum_cmp() that orders the replay.
 *
 * Input: byte 0 sets the served range (rooms 1..byte0+1); the rest is cut at '\n' into the path
 * and up to 8 query arguments ("name=value", as libwebsockets hands them over).
 * Properties: the answer is 0, 400 or 404; an accepted target has its room in the served range
 * and since either "" or a valid sequence number equal to the argument given; a refusal has a
 * non-empty, NUL-terminated reason at any buffer size. For every two arguments that are valid
 * sequence numbers, seqnum_cmp() is antisymmetric, reflexive and agrees with 128-bit
 * arithmetic when both fit.
 */
#include "broadcast_path.h"
#include "fuzz_util.h"
#include "seqnum.h"

#define MAX_ARGS 8

static bool fits_u128(const char *s, unsigned __int128 *v)
{
    while (s[0] == '0' && s[1]) s++;
    if (strlen(s) > 38) return false;
    unsigned __int128 x = 0;
    for (; *s; s++) x = x * 10 + (unsigned)(*s - '0');
    *v = x;
    return true;
}

static void check_order(const char *a, const char *b)
{
    if (!seqnum_valid(a) || !seqnum_valid(b)) return;
    int ab = seqnum_cmp(a, b), ba = seqnum_cmp(b, a);
    FUZZ_ASSERT(ab >= -1 && ab <= 1);
    FUZZ_ASSERT(ab == -ba);
    FUZZ_ASSERT(seqnum_cmp(a, a) == 0);
    unsigned __int128 x, y;
    if (fits_u128(a, &x) && fits_u128(b, &y)) FUZZ_ASSERT(ab == (x > y) - (x < y));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    long room_max = (long)data[0] + 1;
    char *buf = malloc(size);
    if (!buf) return 0;
    char *parts[1 + MAX_ARGS];
    size_t n = fuzz_split(data + 1, size - 1, buf, parts, 1 + MAX_ARGS);
    const char *const *args = (const char *const *)parts + 1;
    size_t nargs = n - 1;

    bc_target t;
    char reason[160];
    int rc = bc_target_parse(parts[0], args, nargs, 1, room_max, &t, reason, sizeof reason);
    FUZZ_ASSERT(rc == 0 || rc == 400 || rc == 404);
    if (rc == 0) {
        FUZZ_ASSERT(t.room >= 1 && t.room <= room_max);
        FUZZ_ASSERT(t.since[0] == '\0' || seqnum_valid(t.since));
        FUZZ_ASSERT(nargs <= 1);
        if (nargs == 1) FUZZ_ASSERT(strcmp(t.since, args[0] + 6) == 0);
    } else {
        FUZZ_ASSERT(fuzz_terminated(reason, sizeof reason) && reason[0] != '\0');
    }
    /* a short reason buffer is still terminated */
    char tiny[7];
    int rc2 = bc_target_parse(parts[0], args, nargs, 1, room_max, &t, tiny, sizeof tiny);
    FUZZ_ASSERT(rc2 == rc);
    if (rc2 != 0) FUZZ_ASSERT(fuzz_terminated(tiny, sizeof tiny));

    for (size_t i = 0; i < nargs; i++) {
        const char *a = strncmp(args[i], "since=", 6) == 0 ? args[i] + 6 : args[i];
        for (size_t j = 0; j < nargs; j++) {
            const char *b = strncmp(args[j], "since=", 6) == 0 ? args[j] + 6 : args[j];
            check_order(a, b);
        }
    }
    free(buf);
    return 0;
}
