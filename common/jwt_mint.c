/* jwt_mint — HS256 identity tokens for development and load tests (contract in jwt_mint.h). */
#include "jwt_mint.h"

#include <cjose/cjose.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

static json_t *claims_json(const jwt_mint_claims *c)
{
    json_t *o = json_pack("{s:s, s:I, s:I}", "sub", c->sub, "iat", (json_int_t)c->iat, "exp",
                          (json_int_t)c->exp);
    if (!o) return NULL;
    const struct {
        const char *key, *value;
    } optional[] = {{"name", c->name}, {"iss", c->issuer}, {"aud", c->audience}};
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++) {
        if (!optional[i].value || !optional[i].value[0]) continue;
        if (json_object_set_new(o, optional[i].key, json_string(optional[i].value))) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static char *sign(const void *secret, size_t secret_len, const char *payload, char *err,
                  size_t err_len)
{
    cjose_jwk_t *key = cjose_jwk_create_oct_spec(secret, secret_len, NULL);
    cjose_header_t *h = cjose_header_new(NULL);
    char *out = NULL;
    if (key && h && cjose_header_set(h, CJOSE_HDR_ALG, CJOSE_HDR_ALG_HS256, NULL) &&
        cjose_header_set(h, "typ", "JWT", NULL)) {
        cjose_jws_t *jws = cjose_jws_sign(key, h, (const uint8_t *)payload, strlen(payload), NULL);
        const char *compact = NULL;
        if (jws && cjose_jws_export(jws, &compact, NULL) && compact) out = strdup(compact);
        cjose_jws_release(jws);
    }
    if (!out) snprintf(err, err_len, "could not sign the token (out of memory?)");
    cjose_header_release(h);
    cjose_jwk_release(key);
    return out;
}

char *jwt_mint_hs256(const void *secret, size_t secret_len, const jwt_mint_claims *claims,
                     char *err, size_t err_len)
{
    if (!secret || secret_len < JWT_HS256_MIN_SECRET) {
        snprintf(err, err_len, "the HS256 secret must be at least %d bytes", JWT_HS256_MIN_SECRET);
        return NULL;
    }
    if (!claims || !claims->sub || !claims->sub[0]) {
        snprintf(err, err_len, "a token needs a subject");
        return NULL;
    }
    json_t *o = claims_json(claims);
    char *payload = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!payload) {
        snprintf(err, err_len, "could not build the claims (out of memory)");
        return NULL;
    }
    char *token = sign(secret, secret_len, payload, err, err_len);
    free(payload);
    return token;
}
