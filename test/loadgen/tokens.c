/*
 * tokens — --tokens: the load generator as its own identity issuer (protocol.md §8). Each sender
 * connection slot is one verified user, and the subscribers share one token without a name, so
 * the consumer subscribes them anonymously (they receive MESSAGE events, as without tokens).
 *
 * The secret is the services' own (CHATFLOW_AUTH_HS256_SECRET), read from the environment and
 * never printed; neither is a token: errors here name the variable, not its value.
 */
#include "loadgen.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "jwt_mint.h"

/* Long enough for any run, short enough that a token minted at the start never expires during
 * it (the services would close its connections with 4401 "token expired"). */
#define LG_TOKEN_LIFETIME_S (24 * 3600)

uint32_t lg_slot_user(int slot) { return 1u + (uint32_t)slot; }

/* An environment variable's value, NULL when unset or empty (then the claim is left out). */
static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* One token for sub (and name, NULL for none) into *out; false with err set. */
static bool mint_one(const char *secret, const jwt_mint_claims *base, uint32_t sub,
                     const char *name, char **out, char *err, size_t err_len)
{
    char sub_s[16];
    snprintf(sub_s, sizeof sub_s, "%" PRIu32, sub);
    jwt_mint_claims c = *base;
    c.sub = sub_s;
    c.name = name;
    char why[160] = "";
    *out = jwt_mint_hs256(secret, strlen(secret), &c, why, sizeof why);
    if (!*out) snprintf(err, err_len, "cannot mint a token for user %s: %s", sub_s, why);
    return *out != NULL;
}

bool lg_tokens_mint(lg_tokens *t, int slots, int64_t now_s, char *err, size_t err_len)
{
    memset(t, 0, sizeof *t);
    const char *secret = getenv("CHATFLOW_AUTH_HS256_SECRET");
    if (!secret || !secret[0]) {
        snprintf(err, err_len,
                 "--tokens needs CHATFLOW_AUTH_HS256_SECRET, the services' HS256 secret, in the "
                 "environment");
        return false;
    }
    if (strlen(secret) < JWT_HS256_MIN_SECRET) {
        snprintf(err, err_len,
                 "CHATFLOW_AUTH_HS256_SECRET is %zu bytes; --tokens needs at least %d (the "
                 "services refuse shorter secrets)",
                 strlen(secret), JWT_HS256_MIN_SECRET);
        return false;
    }
    jwt_mint_claims base = {.issuer = env_or_null("CHATFLOW_AUTH_ISSUER"),
                            .audience = env_or_null("CHATFLOW_AUTH_AUDIENCE"),
                            .iat = now_s,
                            .exp = now_s + LG_TOKEN_LIFETIME_S};
    t->sender = calloc((size_t)slots + 1, sizeof *t->sender);
    if (!t->sender) {
        snprintf(err, err_len, "out of memory for %d tokens", slots);
        return false;
    }
    t->n_sender = slots;
    for (int i = 0; i < slots; i++) {
        char name[24];
        snprintf(name, sizeof name, "user%" PRIu32, lg_slot_user(i));
        if (!mint_one(secret, &base, lg_slot_user(i), name, &t->sender[i], err, err_len)) {
            lg_tokens_free(t);
            return false;
        }
    }
    if (!mint_one(secret, &base, LG_SUBSCRIBER_USER, NULL, &t->subscriber, err, err_len)) {
        lg_tokens_free(t);
        return false;
    }
    return true;
}

void lg_tokens_free(lg_tokens *t)
{
    for (int i = 0; t->sender && i < t->n_sender; i++) free(t->sender[i]);
    free(t->sender);
    free(t->subscriber);
    memset(t, 0, sizeof *t);
}
