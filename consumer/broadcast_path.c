/* broadcast_path — see broadcast_path.h. */
#include "broadcast_path.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define CHAT_PREFIX "/chat/"

/* A canonical decimal user id: no sign, no leading zero, 1..CHAT_USER_ID_MAX. */
static bool parse_user(const char *s, uint32_t *user)
{
    size_t n = strlen(s);
    if (n == 0 || n > 6 || s[0] == '0') return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > CHAT_USER_ID_MAX) return false;
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

static int refuse(int status, char *reason, size_t reason_len, const char *fmt, const char *what)
{
    char buf[49];
    snprintf(reason, reason_len, fmt, shown(what, buf));
    return status;
}

int bc_target_parse(const char *path, const char *const *args, size_t nargs, bc_target *out,
                    char *reason, size_t reason_len)
{
    memset(out, 0, sizeof *out);
    if (!path || strncmp(path, CHAT_PREFIX, strlen(CHAT_PREFIX)) != 0)
        return refuse(404, reason, reason_len,
                      "path '%s' is not served here; subscribe to /chat/{roomId}",
                      path ? path : "");
    const char *room_s = path + strlen(CHAT_PREFIX);
    if (!room_id_valid(room_s, strlen(room_s)))
        return refuse(404, reason, reason_len,
                      "room '%s' is not a room id (1-64 characters of A-Z a-z 0-9 _ -)", room_s);
    memcpy(out->room, room_s, strlen(room_s) + 1);
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
