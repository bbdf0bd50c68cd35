/* dev_tokens — GET /dev/token for local development (contract in dev_tokens.h). */
#include "dev_tokens.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "jwt_mint.h"
#include "message.h"
#include "room.h"

struct dev_tokens {
    char secret[sizeof((producer_settings *)0)->common.auth_hs256_secret];
    char issuer[sizeof((producer_settings *)0)->common.auth_issuer];
    char audience[sizeof((producer_settings *)0)->common.auth_audience];
    long long ttl_s;
};

dev_tokens *dev_tokens_new(const producer_settings *s, bool *failed)
{
    *failed = false;
    if (!s->dev_tokens) return NULL;
    dev_tokens *d = calloc(1, sizeof *d);
    if (!d) {
        *failed = true;
        return NULL;
    }
    snprintf(d->secret, sizeof d->secret, "%s", s->common.auth_hs256_secret);
    snprintf(d->issuer, sizeof d->issuer, "%s", s->common.auth_issuer);
    snprintf(d->audience, sizeof d->audience, "%s", s->common.auth_audience);
    d->ttl_s = s->dev_token_ttl_s;
    return d;
}

void dev_tokens_free(dev_tokens *d)
{
    if (!d) return;
    /* the secret is no longer needed: do not leave it in freed memory */
    explicit_bzero(d->secret, sizeof d->secret);
    free(d);
}

/* The same FNV-1a the queue shards use (room.h): stable across builds and restarts. */
uint32_t dev_tokens_user_id_for(const char *name)
{
    return 1u + room_fnv1a32(name) % CHAT_USER_ID_MAX;
}

static char *answer_json(const char *token, const char *user_id, const char *name, int64_t exp,
                         long long ttl_s)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:I}", "token", token, "userId", user_id, "username", name,
                  "expiresAt", (json_int_t)exp, "ttlSeconds", (json_int_t)ttl_s);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

int dev_tokens_issue(const dev_tokens *d, const char *name, const char *user_id, int64_t now_s,
                     char **body, char *reason, size_t reason_len)
{
    *body = NULL;
    if (!name || !chat_valid_username(name)) {
        snprintf(reason, reason_len, "name: must be %d-%d ASCII letters or digits",
                 CHAT_USERNAME_MIN, CHAT_USERNAME_MAX);
        return 400;
    }
    uint32_t id;
    if (user_id && user_id[0]) {
        if (!auth_parse_user_id(user_id, &id)) {
            snprintf(reason, reason_len, "userId: must be a decimal integer 1-%d",
                     CHAT_USER_ID_MAX);
            return 400;
        }
    } else {
        id = dev_tokens_user_id_for(name);
    }
    char sub[16];
    snprintf(sub, sizeof sub, "%u", id);
    int64_t exp = now_s + d->ttl_s;
    jwt_mint_claims claims = {.sub = sub,
                              .name = name,
                              .issuer = d->issuer,
                              .audience = d->audience,
                              .iat = now_s,
                              .exp = exp};
    char *token = jwt_mint_hs256(d->secret, strlen(d->secret), &claims, reason, reason_len);
    if (!token) return 500;
    *body = answer_json(token, sub, name, exp, d->ttl_s);
    free(token);
    if (!*body) {
        snprintf(reason, reason_len, "out of memory");
        return 500;
    }
    return 200;
}
