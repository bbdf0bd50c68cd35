/* redact — secrets out of messages (contract in redact.h). */
#include "redact.h"

#include <stdlib.h>
#include <string.h>

#define MASK "***"

static const char *const SECRET_VARS[] = {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                          "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                          "CHATFLOW_AUTH_HS256_SECRET"};

/* Replaces s[at, at + len) by MASK (len >= strlen(MASK), so the string never grows). */
static void mask_span(char *s, size_t at, size_t len)
{
    memcpy(s + at, MASK, sizeof MASK - 1);
    memmove(s + at + sizeof MASK - 1, s + at + len, strlen(s + at + len) + 1);
}

/* URL userinfo ("user:pass" before an @ after the scheme) becomes "***"; the authority ends at the
 * first
 * '/', '?', '#', space or quote; only an '@' inside it marks userinfo. */
static void mask_userinfo(char *s)
{
    for (char *p = strstr(s, "://"); p; p = strstr(p, "://")) {
        char *auth = p + 3;
        size_t end = strcspn(auth, "/?# \t\"'<>\n");
        char *at = memchr(auth, '@', end);
        if (at && (size_t)(at - auth) >= sizeof MASK - 1) {
            mask_span(s, (size_t)(auth - s), (size_t)(at - auth));
            p = auth + sizeof MASK;
        } else if (at) {
            /* userinfo shorter than the mask: blank it out character by character */
            memset(auth, '*', (size_t)(at - auth));
            p = at + 1;
        } else {
            p = auth;
        }
    }
}

static void mask_value(char *s, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n < 4) return; /* too short to be a real secret; masking would mangle ordinary text */
    for (char *p = strstr(s, secret); p; p = strstr(p, secret)) {
        mask_span(s, (size_t)(p - s), n);
        p += sizeof MASK - 1;
    }
}

/* Masks the len bytes of a value at v: "***" in place of a value at least that long (the string
 * shrinks), else stars of its own length. Returns where the scan goes on. */
static char *mask_value_at(char *s, char *v, size_t len)
{
    if (len < sizeof MASK - 1) {
        memset(v, '*', len);
        return v + len;
    }
    mask_span(s, (size_t)(v - s), len);
    return v + sizeof MASK - 1;
}

/* libpq keyword form: password=value or password='quoted value' (with \' inside quotes). */
static void mask_keyword_password(char *s)
{
    static const char key[] = "password=";
    for (char *p = strstr(s, key); p; p = strstr(p, key)) {
        char *v = p + sizeof key - 1;
        size_t len;
        if (*v == '\'') {
            size_t i = 1;
            while (v[i] && v[i] != '\'') i += v[i] == '\\' && v[i + 1] ? 2 : 1;
            len = v[i] ? i + 1 : i;
        } else {
            len = strcspn(v, " \t\n\"");
        }
        p = mask_value_at(s, v, len);
    }
}

/* The value after each occurrence of key, up to the end of a URL argument or a word, becomes
 * "***" (values shorter than the mask become stars of their own length). */
static void mask_after(char *s, const char *key)
{
    size_t klen = strlen(key);
    for (char *p = strstr(s, key); p; p = strstr(p, key)) {
        char *v = p + klen;
        size_t len = strcspn(v, "&# \t\n\"'<>,;");
        p = mask_value_at(s, v, len);
    }
}

void redact_text(char *s, size_t cap)
{
    if (!s || cap == 0) return;
    if (!memchr(s, '\0', cap)) s[cap - 1] = '\0';
    mask_userinfo(s);
    mask_keyword_password(s);
    /* Identity tokens: a browser's ?access_token= query argument, an Authorization header. */
    mask_after(s, "access_token=");
    mask_after(s, "Bearer ");
    for (size_t i = 0; i < sizeof SECRET_VARS / sizeof SECRET_VARS[0]; i++)
        mask_value(s, getenv(SECRET_VARS[i]));
}

void redact_printable(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i < 40 && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (cap) dst[i] = '\0';
}
