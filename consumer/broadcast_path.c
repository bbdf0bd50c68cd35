/* broadcast_path — see broadcast_path.h. */
#include "broadcast_path.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define CHAT_PREFIX "/chat/"

/* Room ids beyond 9 digits are refused before they could overflow a long. */
static bool parse_room(const char *s, long *room)
{
    size_t n = strlen(s);
    if (n == 0 || n > 9 || (s[0] == '0' && n > 1)) return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *room = v;
    return true;
}

/* The reason is echoed in the HTTP answer (lws wraps it in HTML): what the client sent is
 * shown with anything but plain URL characters replaced by '?', and cut at 48 bytes. */
static const char *shown(const char *s, char out[49])
{
    size_t i = 0;
    for (; s[i] && i < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (isalnum(c) || strchr("/-_.=~", c)) ? (char)c : '?';
    }
    out[i] = '\0';
    return out;
}

static int refuse(int status, char *reason, size_t reason_len, const char *fmt, const char *what,
                  long room_min, long room_max)
{
    char buf[49];
    snprintf(reason, reason_len, fmt, shown(what, buf), room_min, room_max);
    return status;
}

int bc_target_parse(const char *path, const char *const *args, size_t nargs, long room_min,
                    long room_max, bc_target *out, char *reason, size_t reason_len)
{
    memset(out, 0, sizeof *out);
    if (!path || strncmp(path, CHAT_PREFIX, strlen(CHAT_PREFIX)) != 0)
        return refuse(404, reason, reason_len,
                      "path '%s' is not served here; subscribe to /chat/{roomId} with roomId %ld-%ld",
                      path ? path : "", room_min, room_max);
    const char *room_s = path + strlen(CHAT_PREFIX);
    if (!parse_room(room_s, &out->room))
        return refuse(404, reason, reason_len,
                      "room '%s' is not a room id; this consumer serves rooms %ld-%ld", room_s,
                      room_min, room_max);
    if (out->room < room_min || out->room > room_max)
        return refuse(404, reason, reason_len,
                      "room %s is not served here; this consumer serves rooms %ld-%ld", room_s,
                      room_min, room_max);
    for (size_t i = 0; i < nargs; i++) {
        const char *a = args[i];
        char buf[49];
        if (strncmp(a, "since=", 6) != 0) {
            snprintf(reason, reason_len,
                     "unknown query argument '%s'; only since={sequenceNumber} is accepted",
                     shown(a, buf));
            return 400;
        }
        if (out->since[0]) {
            snprintf(reason, reason_len, "since is given more than once");
            return 400;
        }
        if (!seqnum_valid(a + 6)) {
            snprintf(reason, reason_len,
                     "since '%s' is not a sequence number (1-%d decimal digits)", shown(a + 6, buf),
                     SEQNUM_MAX_DIGITS);
            return 400;
        }
        snprintf(out->since, sizeof out->since, "%s", a + 6);
    }
    return 0;
}
