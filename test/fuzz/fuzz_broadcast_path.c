/*
 * fuzz_broadcast_path — what a subscriber asks the consumer for (docs/protocol.md §2):
 * bc_target_parse() on /chat/{roomId}[?since=<seq>][&userId=&username=], seqnum_cmp() that orders
 * the replay, and subscriber_frame_parse() on what a member sends (READ frames).
 *
 * Input: byte 0 picks the subscription's room for the member frame (one of MEMBER_ROOMS); the rest
 * is cut at '\n' into the path and up to 8 query arguments ("name=value", as libwebsockets hands
 * them over). Every consumer serves every room (room.h), so there is no range to pick any more.
 * Properties: the answer is 0, 400 or 404; an accepted target's room is a room id (room.h) equal
 * to the path's last segment, since either "" or a valid sequence number equal to the argument
 * given, and either no member
 * or a valid userId and username, both equal to the arguments given; a refusal has a
 * non-empty, NUL-terminated reason at any buffer size. For every two arguments that are valid
 * sequence numbers, seqnum_cmp() is antisymmetric, reflexive and agrees with 128-bit
 * arithmetic when both fit. The input after byte 0, taken whole as a member's frame: accepted
 * only as a READ whose roomId is the subscription's room byte for byte (not "07" for "7", not a
 * prefix) with a valid sequence number; a refusal has a terminated, valid UTF-8 reason whose
 * ERROR event is a JSON object.
 */
#include <jansson.h>

#include "broadcast_path.h"
#include "events.h"
#include "fuzz_util.h"
#include "seqnum.h"

#define MAX_ARGS 8

/* Rooms a member frame may be checked against: slug, UUID, a decimal look-alike ("07" must not
 * match "7") and "7" last, so that the committed seeds (byte 0 is 19) keep meaning room 7. */
static const char *const MEMBER_ROOMS[] = {"team-alpha", "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b",
                                           "07", "7"};

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

/* The frame's roomId, as JSON holds it, is exactly room: same length, same bytes. */
static bool frame_room_is(const char *frame, size_t len, const char *room)
{
    json_t *root = json_loadb(frame, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *r = json_object_get(root, "roomId");
    bool same = json_is_string(r) && json_string_length(r) == strlen(room) &&
                memcmp(json_string_value(r), room, strlen(room)) == 0;
    json_decref(root);
    return same;
}

static void check_member_frame(const char *frame, size_t len, const char *room)
{
    char seq[SEQNUM_BUF], err[200];
    chat_status st = subscriber_frame_parse(frame, len, room, seq, err, sizeof err);
    if (st == CHAT_OK) {
        FUZZ_ASSERT(seqnum_valid(seq) && len <= SUBSCRIBER_FRAME_MAX);
        FUZZ_ASSERT(frame_room_is(frame, len, room));
        return;
    }
    FUZZ_ASSERT(st == CHAT_INVALID_JSON || st == CHAT_VALIDATION_ERROR ||
                st == CHAT_MESSAGE_TOO_LARGE);
    FUZZ_ASSERT(fuzz_terminated(err, sizeof err) && err[0] != '\0');
    char *event = subscriber_error_json(st, err);
    json_t *root = event ? json_loads(event, 0, NULL) : NULL;
    FUZZ_ASSERT(json_is_object(root));
    json_decref(root);
    free(event);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    char *buf = malloc(size);
    if (!buf) return 0;
    char *parts[1 + MAX_ARGS];
    size_t n = fuzz_split(data + 1, size - 1, buf, parts, 1 + MAX_ARGS);
    const char *const *args = (const char *const *)parts + 1;
    size_t nargs = n - 1;

    bc_target t;
    char reason[160];
    int rc = bc_target_parse(parts[0], args, nargs, &t, reason, sizeof reason);
    FUZZ_ASSERT(rc == 0 || rc == 400 || rc == 404);
    if (rc == 0) {
        FUZZ_ASSERT(room_id_valid(t.room, strlen(t.room)) &&
                    strcmp(t.room, parts[0] + strlen("/chat/")) == 0);
        FUZZ_ASSERT(t.since[0] == '\0' || seqnum_valid(t.since));
        FUZZ_ASSERT(nargs <= 3);
        FUZZ_ASSERT((t.user_id == 0) == (t.username[0] == '\0'));
        if (t.user_id)
            FUZZ_ASSERT(t.user_id <= CHAT_USER_ID_MAX && chat_valid_username(t.username));
        for (size_t i = 0; i < nargs; i++) {
            const char *v = strchr(args[i], '=') + 1;
            if (strncmp(args[i], "since=", 6) == 0)
                FUZZ_ASSERT(strcmp(t.since, v) == 0);
            else if (strncmp(args[i], "username=", 9) == 0)
                FUZZ_ASSERT(strcmp(t.username, v) == 0);
            else
                FUZZ_ASSERT(strncmp(args[i], "userId=", 7) == 0 &&
                            strtoul(v, NULL, 10) == t.user_id);
        }
    } else {
        FUZZ_ASSERT(fuzz_terminated(reason, sizeof reason) && reason[0] != '\0');
    }
    /* a short reason buffer is still terminated */
    char tiny[7];
    int rc2 = bc_target_parse(parts[0], args, nargs, &t, tiny, sizeof tiny);
    FUZZ_ASSERT(rc2 == rc);
    if (rc2 != 0) FUZZ_ASSERT(fuzz_terminated(tiny, sizeof tiny));

    for (size_t i = 0; i < nargs; i++) {
        const char *a = strncmp(args[i], "since=", 6) == 0 ? args[i] + 6 : args[i];
        for (size_t j = 0; j < nargs; j++) {
            const char *b = strncmp(args[j], "since=", 6) == 0 ? args[j] + 6 : args[j];
            check_order(a, b);
        }
    }
    check_member_frame((const char *)data + 1, size - 1,
                       MEMBER_ROOMS[data[0] % (sizeof MEMBER_ROOMS / sizeof MEMBER_ROOMS[0])]);
    free(buf);
    return 0;
}
