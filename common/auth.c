/* auth — identity tokens at the services' doors (contract in auth.h). */
#include "auth.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jwks.h"
#include "log.h"

struct auth {
    jwt_verifier *verifier;
    jwks_source *keys; /* NULL without a JWKS URL */
    int leeway_s;
};

void auth_close(auth *a)
{
    if (!a) return;
    jwt_verifier_free(a->verifier); /* before the key set it borrows */
    jwks_source_free(a->keys);
    free(a);
}

bool auth_open(const struct chatflow_common_settings *c, auth **out, char *err, size_t err_len)
{
    *out = NULL;
    if (strcmp(c->auth, "on") != 0) return true;
    auth *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    jwt_config cfg;
    jwt_config_init(&cfg);
    cfg.algs = 0;
    if (c->auth_hs256_secret[0]) {
        cfg.algs |= JWT_ALG_HS256;
        cfg.hs256_secret = (const uint8_t *)c->auth_hs256_secret;
        cfg.hs256_secret_len = strlen(c->auth_hs256_secret);
    }
    char why[JWKS_ERR_BUF];
    if (c->auth_jwks_url[0]) {
        /* background: the WebSocket loops verify tokens and must never wait for a key server */
        jwks_source_config jc = {.url = c->auth_jwks_url,
                                 .background = true,
                                 .refresh_interval_s = (int)c->auth_jwks_refresh_s};
        if (!(a->keys = jwks_source_new(&jc, why, sizeof why))) {
            snprintf(err, err_len, "CHATFLOW_AUTH_JWKS_URL: %s", why);
            auth_close(a);
            return false;
        }
        cfg.algs |= JWT_ALG_RS256 | JWT_ALG_ES256;
        cfg.keys = a->keys;
    }
    cfg.issuer = c->auth_issuer[0] ? c->auth_issuer : NULL;
    cfg.audience = c->auth_audience[0] ? c->auth_audience : NULL;
    cfg.user_id_claim = c->auth_user_id_claim[0] ? c->auth_user_id_claim : NULL;
    cfg.leeway_s = (int)c->auth_leeway_s;
    a->leeway_s = cfg.leeway_s;
    if (!(a->verifier = jwt_verifier_new(&cfg, why, sizeof why))) {
        snprintf(err, err_len, "identity tokens (CHATFLOW_AUTH=on): %s", why);
        auth_close(a);
        return false;
    }
    if (a->keys) {
        jwks *set = jwks_source_get(a->keys);
        log_info("auth", "identity tokens required: HS256 %s, %zu keys from the JWK set",
                 c->auth_hs256_secret[0] ? "on" : "off", jwks_count(set));
        jwks_release(set);
    } else {
        log_info("auth", "identity tokens required: HS256");
    }
    *out = a;
    return true;
}

/* ---- finding the token ---- */

static const char *trim(const char *s, size_t *len)
{
    while (*len && (*s == ' ' || *s == '\t')) s++, (*len)--;
    while (*len && (s[*len - 1] == ' ' || s[*len - 1] == '\t')) (*len)--;
    return s;
}

auth_token_kind auth_pick_token(const char *authorization, const char *access_token,
                                const char **token, size_t *len)
{
    *token = NULL;
    *len = 0;
    if (authorization && authorization[0]) {
        size_t n = strlen(authorization);
        const char *h = trim(authorization, &n);
        if (n < 7 || strncasecmp(h, "Bearer ", 7) != 0) return AUTH_TOKEN_BAD;
        n -= 7;
        *token = trim(h + 7, &n);
        *len = n;
        return n ? AUTH_TOKEN_FOUND : AUTH_TOKEN_BAD;
    }
    if (access_token && access_token[0]) {
        *token = access_token;
        *len = strlen(access_token);
        return AUTH_TOKEN_FOUND;
    }
    return AUTH_TOKEN_NONE;
}

const char *auth_token_from_lws(struct lws *wsi, char buf[AUTH_TOKEN_BUF], size_t *len,
                                auth_token_kind *kind)
{
    /* room for "Bearer ", blanks, and one byte more than a token may have (too long -> 401) */
    char header[AUTH_TOKEN_BUF + 32];
    const char *hv = NULL, *qv = NULL;
    int hlen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (hlen > 0) {
        if (hlen >= (int)sizeof header ||
            lws_hdr_copy(wsi, header, sizeof header, WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
            *kind = AUTH_TOKEN_BAD;
            return NULL;
        }
        hv = header;
    } else {
        /* lws copies the whole "access_token=..." fragment; the value follows the name. */
        qv = lws_get_urlarg_by_name(wsi, "access_token=", buf, AUTH_TOKEN_BUF);
    }
    const char *t = NULL;
    *kind = auth_pick_token(hv, qv, &t, len);
    if (*kind != AUTH_TOKEN_FOUND) return NULL;
    if (*len >= AUTH_TOKEN_BUF) *len = AUTH_TOKEN_BUF - 1; /* jwt_verify refuses it as too large */
    memmove(buf, t, *len);
    buf[*len] = '\0';
    return buf;
}

/* ---- checking it ---- */

bool auth_parse_user_id(const char *sub, uint32_t *out)
{
    size_t n = strlen(sub);
    if (n == 0 || n > 6 || sub[0] == '0' || strspn(sub, "0123456789") != n) return false;
    long v = strtol(sub, NULL, 10);
    if (v < 1 || v > CHAT_USER_ID_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

static int refuse(int status, char *reason, size_t reason_len, const char *why)
{
    snprintf(reason, reason_len, "%s", why);
    return status;
}

int auth_check(const auth *a, auth_token_kind kind, const char *token, size_t len, const char *room,
               auth_identity *id, char *reason, size_t reason_len)
{
    memset(id, 0, sizeof *id);
    if (!a) return 0;
    if (kind == AUTH_TOKEN_NONE)
        return refuse(401, reason, reason_len,
                      "token required: send Authorization: Bearer <token> or ?access_token=");
    if (kind == AUTH_TOKEN_BAD)
        return refuse(401, reason, reason_len,
                      "Authorization header must be \"Bearer <token>\" with a token of at most "
                      "8192 bytes");
    jwt_claims cl;
    char why[JWT_REASON_BUF];
    jwt_error e = jwt_verify(a->verifier, token, len, &cl, why, sizeof why);
    if (e != JWT_OK) return refuse(401, reason, reason_len, why);
    int status = 0;
    if (room && !jwt_claims_allow_room(&cl, room)) {
        snprintf(reason, reason_len, "the token does not allow room %s", room);
        status = 403;
    } else if (!auth_parse_user_id(cl.sub, &id->user_id)) {
        snprintf(reason, reason_len,
                 "the token's subject is not a ChatFlow userId (a decimal integer 1-%d)",
                 CHAT_USER_ID_MAX);
        status = 403;
    } else if (cl.username[0] && !chat_valid_username(cl.username)) {
        snprintf(reason, reason_len,
                 "the token's name is not a ChatFlow username (%d-%d ASCII letters or digits)",
                 CHAT_USERNAME_MIN, CHAT_USERNAME_MAX);
        status = 403;
    } else {
        snprintf(id->user_id_str, sizeof id->user_id_str, "%u", id->user_id);
        memcpy(id->username, cl.username, strlen(cl.username) + 1); /* valid: <= 20 bytes */
        id->exp = cl.exp;
        id->leeway_s = a->leeway_s;
    }
    jwt_claims_free(&cl);
    if (status) memset(id, 0, sizeof *id);
    return status;
}
