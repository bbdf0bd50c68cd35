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

static bool parse_user(const char *s, uint32_t *user)
{
    long v;
    if (!parse_room(s, &v) || v < 1 || v > CHAT_USER_ID_MAX) return false; /* same digit rules */
    *user = (uint32_t)v;
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
        return refuse(
            404, reason, reason_len,
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
    bool user_given = false, name_given = false;
    for (size_t i = 0; i < nargs; i++) {
        const char *a = args[i];
        char buf[49];
        bool *seen = NULL;
        if (strncmp(a, "since=", 6) == 0) {
            if (out->since[0]) {
                snprintf(reason, reason_len, "since is given more than once");
                return 400;
            }
            if (!seqnum_valid(a + 6)) {
                snprintf(reason, reason_len,
                         "since '%s' is not a sequence number (1-%d decimal digits)",
                         shown(a + 6, buf), SEQNUM_MAX_DIGITS);
                return 400;
            }
            snprintf(out->since, sizeof out->since, "%s", a + 6);
            continue;
        } else if (strncmp(a, "userId=", 7) == 0) {
            seen = &user_given;
            if (!*seen && !parse_user(a + 7, &out->user_id)) {
                snprintf(reason, reason_len, "userId '%s' must be a decimal integer 1-%d",
                         shown(a + 7, buf), CHAT_USER_ID_MAX);
                return 400;
            }
        } else if (strncmp(a, "username=", 9) == 0) {
            seen = &name_given;
            if (!*seen && !chat_valid_username(a + 9)) {
                snprintf(reason, reason_len, "username '%s' must be %d-%d ASCII letters or digits",
                         shown(a + 9, buf), CHAT_USERNAME_MIN, CHAT_USERNAME_MAX);
                return 400;
            }
            if (!*seen) snprintf(out->username, sizeof out->username, "%s", a + 9);
        } else {
            snprintf(reason, reason_len,
                     "unknown query argument '%s'; accepted: since, userId, username",
                     shown(a, buf));
            return 400;
        }
        if (*seen) {
            snprintf(reason, reason_len, "%.*s is given more than once", (int)strcspn(a, "="), a);
            return 400;
        }
        *seen = true;
    }
    if (user_given != name_given) {
        snprintf(reason, reason_len,
                 "userId and username identify a member together: give both or neither");
        return 400;
    }
    return 0;
}
