/* jwt — compact JWS verification and ChatFlow's identity claims (contract in jwt.h). */
#include "jwt.h"

#include <cjose/cjose.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "errbuf.h"
#include "redact.h"

/* 9999-12-31T23:59:59Z: a later exp or nbf is a bug or an attack, and keeps exp + leeway far from
 * overflow. */
#define NUMERIC_DATE_MAX 253402300799LL
#define LEEWAY_MAX_S 3600

struct jwt_verifier {
    unsigned algs;
    cjose_jwk_t *hs_key; /* the shared secret as an oct key; NULL without HS256 */
    jwks_source *keys;   /* borrowed */
    char *issuer;        /* owned copies, NULL when not configured */
    char *audience;
    char *user_id_claim; /* owned; "sub" unless configured */
    int leeway_s;
    int64_t (*now_s)(void *ctx);
    void *now_ctx;
};

/* The parts of a compact token, as offsets into it. */
typedef struct {
    size_t hdr_len; /* the header is token[0, hdr_len) */
    size_t pay_off, pay_len;
    size_t sig_off, sig_len;
} jwt_parts;

typedef struct {
    unsigned alg;               /* a JWT_ALG_* flag, 0 for any other alg */
    char alg_shown[24];         /* printable copy for reasons */
    char kid[JWKS_KID_MAX + 1]; /* "" when absent */
} jwt_header;

/* The key a token is checked with. set holds the reference that keeps a JWK set key alive. */
typedef struct {
    const cjose_jwk_t *jwk;
    size_t sig_bytes; /* the only signature length this key and alg can produce */
    jwks *set;
} jwt_key;

static jwt_error fail(char *reason, size_t reason_len, jwt_error code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static jwt_error fail(char *reason, size_t reason_len, jwt_error code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errbuf_vset(reason, reason_len, fmt, ap);
    va_end(ap);
    return code;
}

static const char *alg_name(unsigned alg)
{
    switch (alg) {
    case JWT_ALG_HS256: return "HS256";
    case JWT_ALG_RS256: return "RS256";
    case JWT_ALG_ES256: return "ES256";
    default: return "?";
    }
}

static unsigned alg_flag(const char *name)
{
    if (strcmp(name, "HS256") == 0) return JWT_ALG_HS256;
    if (strcmp(name, "RS256") == 0) return JWT_ALG_RS256;
    if (strcmp(name, "ES256") == 0) return JWT_ALG_ES256;
    return 0;
}

const char *jwt_error_name(jwt_error e)
{
    static const char *const names[] = {
        [JWT_OK] = "ok",
        [JWT_MALFORMED] = "malformed",
        [JWT_TOO_LARGE] = "too_large",
        [JWT_ALG_REFUSED] = "alg_refused",
        [JWT_UNKNOWN_KEY] = "unknown_key",
        [JWT_BAD_SIGNATURE] = "bad_signature",
        [JWT_EXPIRED] = "expired",
        [JWT_NOT_YET_VALID] = "not_yet_valid",
        [JWT_BAD_ISSUER] = "bad_issuer",
        [JWT_BAD_AUDIENCE] = "bad_audience",
        [JWT_BAD_CLAIM] = "bad_claim",
        [JWT_INTERNAL] = "internal",
    };
    return (e >= 0 && (size_t)e < sizeof names / sizeof names[0]) ? names[e] : "unknown";
}

/* ------------------------------------------------------------------ the verifier */

void jwt_config_init(jwt_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->leeway_s = JWT_DEFAULT_LEEWAY_S;
}

static bool config_ok(const jwt_config *cfg, char *err, size_t err_len)
{
    const unsigned known = JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256;
    if (cfg->algs == 0 || (cfg->algs & ~known)) {
        fail(err, err_len, JWT_INTERNAL, "jwt: algs must be a non-empty set of HS256 RS256 ES256");
        return false;
    }
    if ((cfg->algs & JWT_ALG_HS256) &&
        (!cfg->hs256_secret || cfg->hs256_secret_len < JWT_HS256_MIN_SECRET)) {
        fail(err, err_len, JWT_INTERNAL, "jwt: HS256 needs a secret of at least %d bytes",
             JWT_HS256_MIN_SECRET);
        return false;
    }
    /* The classic HS/RS confusion is a verifier keyed with a public key's PEM text as the HMAC
     * secret: anyone holding the public key can then mint tokens. Refuse such a secret. */
    if ((cfg->algs & JWT_ALG_HS256) &&
        memmem(cfg->hs256_secret, cfg->hs256_secret_len, "-----BEGIN", 10)) {
        fail(err, err_len, JWT_INTERNAL, "jwt: the HS256 secret is a PEM key, not a shared secret");
        return false;
    }
    if ((cfg->algs & (JWT_ALG_RS256 | JWT_ALG_ES256)) && !cfg->keys) {
        fail(err, err_len, JWT_INTERNAL, "jwt: RS256 / ES256 need a JWK set");
        return false;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > LEEWAY_MAX_S) {
        fail(err, err_len, JWT_INTERNAL, "jwt: leeway must be 0-%d s", LEEWAY_MAX_S);
        return false;
    }
    return true;
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *failed = true;
    return d;
}

jwt_verifier *jwt_verifier_new(const jwt_config *cfg, char *err, size_t err_len)
{
    if (!cfg || !config_ok(cfg, err, err_len)) {
        if (!cfg) fail(err, err_len, JWT_INTERNAL, "jwt: no configuration");
        return NULL;
    }
    jwt_verifier *v = calloc(1, sizeof *v);
    if (!v) {
        fail(err, err_len, JWT_INTERNAL, "jwt: out of memory");
        return NULL;
    }
    bool oom = false;
    v->algs = cfg->algs;
    v->keys = cfg->keys;
    v->leeway_s = cfg->leeway_s;
    v->now_s = cfg->now_s;
    v->now_ctx = cfg->now_ctx;
    v->issuer = dup_or_null(cfg->issuer, &oom);
    v->audience = dup_or_null(cfg->audience, &oom);
    v->user_id_claim = dup_or_null(cfg->user_id_claim ? cfg->user_id_claim : "sub", &oom);
    if (cfg->algs & JWT_ALG_HS256) {
        v->hs_key = cjose_jwk_create_oct_spec(cfg->hs256_secret, cfg->hs256_secret_len, NULL);
        oom = oom || !v->hs_key;
    }
    if (oom) {
        jwt_verifier_free(v);
        fail(err, err_len, JWT_INTERNAL, "jwt: out of memory");
        return NULL;
    }
    return v;
}

void jwt_verifier_free(jwt_verifier *v)
{
    if (!v) return;
    if (v->hs_key) cjose_jwk_release(v->hs_key);
    free(v->issuer);
    free(v->user_id_claim);
    free(v->audience);
    free(v);
}

/* ------------------------------------------------------------------ form and header */

static bool b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static unsigned b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '-' ? 62 : 63;
}

/* The unused low bits of a part's last character must be zero (RFC 4648 §3.5): otherwise several
 * strings decode to the same token, which cjose accepts alike, and a token could no longer be
 * recognised by its text (replay caches, revocation lists). */
static bool b64url_canonical_end(const char *part, size_t n)
{
    if (n % 4 == 0) return true;
    unsigned unused = n % 4 == 2 ? 0x0f : 0x03;
    return (b64url_value((unsigned char)part[n - 1]) & unused) == 0;
}

/* Bytes that n unpadded base64url characters decode to (n % 4 != 1). */
static size_t b64url_decoded_len(size_t n) { return n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0); }

/* Only what cjose accepts without surprises reaches it: its base64url decoder aborts the process
 * on some inputs with '=', and its importer copies parts with strncpy (a NUL would cut them). */
static jwt_error split_parts(const char *t, size_t len, jwt_parts *p, char *reason, size_t rlen)
{
    size_t dots[2], nd = 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '.') {
            if (nd == 2) return fail(reason, rlen, JWT_MALFORMED, "token has more than 3 parts");
            dots[nd++] = i;
        } else if (!b64url_char((unsigned char)t[i])) {
            return fail(reason, rlen, JWT_MALFORMED, "token has a character outside base64url");
        }
    }
    if (nd != 2) return fail(reason, rlen, JWT_MALFORMED, "token is not 3 dot-separated parts");
    p->hdr_len = dots[0];
    p->pay_off = dots[0] + 1;
    p->pay_len = dots[1] - p->pay_off;
    p->sig_off = dots[1] + 1;
    p->sig_len = len - p->sig_off;
    if (p->hdr_len == 0 || p->pay_len == 0)
        return fail(reason, rlen, JWT_MALFORMED, "token header or payload is empty");
    if (p->hdr_len % 4 == 1 || p->pay_len % 4 == 1 || p->sig_len % 4 == 1)
        return fail(reason, rlen, JWT_MALFORMED, "token part has an impossible base64url length");
    if (!b64url_canonical_end(t, p->hdr_len) || !b64url_canonical_end(t + p->pay_off, p->pay_len) ||
        !b64url_canonical_end(t + p->sig_off, p->sig_len))
        return fail(reason, rlen, JWT_MALFORMED, "token part is not canonical base64url");
    return JWT_OK;
}

static jwt_error header_fields(json_t *hdr, jwt_header *h, char *reason, size_t rlen)
{
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    if (!alg) return fail(reason, rlen, JWT_MALFORMED, "token header has no alg");
    redact_printable(h->alg_shown, sizeof h->alg_shown, alg);
    h->alg = alg_flag(alg);
    if (json_object_get(hdr, "crit"))
        return fail(reason, rlen, JWT_MALFORMED, "token header has crit (no extension is known)");
    json_t *kid = json_object_get(hdr, "kid");
    if (kid) {
        const char *s = json_string_value(kid);
        if (!s || s[0] == '\0' || strlen(s) > JWKS_KID_MAX)
            return fail(reason, rlen, JWT_MALFORMED, "token kid is not a string of 1-%d bytes",
                        JWKS_KID_MAX);
        memcpy(h->kid, s, strlen(s) + 1);
    }
    return JWT_OK;
}

static jwt_error read_header(const char *seg, size_t len, jwt_header *h, char *reason, size_t rlen)
{
    memset(h, 0, sizeof *h);
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    if (!cjose_base64url_decode(seg, len, &raw, &raw_len, NULL) || !raw)
        return fail(reason, rlen, JWT_MALFORMED, "token header is not base64url");
    json_t *hdr = json_loadb((const char *)raw, raw_len, JSON_REJECT_DUPLICATES, NULL);
    cjose_get_dealloc()(raw);
    jwt_error rc = JWT_OK;
    if (!json_is_object(hdr))
        rc = fail(reason, rlen, JWT_MALFORMED, "token header is not a JSON object");
    else
        rc = header_fields(hdr, h, reason, rlen);
    json_decref(hdr);
    return rc;
}

static jwt_error check_alg(const jwt_verifier *v, const jwt_header *h, char *reason, size_t rlen)
{
    if (h->alg & v->algs) return JWT_OK;
    if (strcasecmp(h->alg_shown, "none") == 0)
        return fail(reason, rlen, JWT_ALG_REFUSED, "alg none is refused: tokens must be signed");
    return fail(reason, rlen, JWT_ALG_REFUSED, "alg \"%s\" is not accepted here", h->alg_shown);
}

/* ------------------------------------------------------------------ key and signature */

/* The set's key for kid, refreshing the set once (rate-limited by the source) when it lacks it.
 * On success *set holds the reference that keeps the key alive. */
static const jwks_key *find_key(jwks_source *src, const char *kid, jwks **set)
{
    *set = jwks_source_get(src);
    const jwks_key *key = jwks_find(*set, kid);
    if (key) return key;
    jwks_release(*set);
    *set = jwks_source_refresh_unknown_kid(src);
    return jwks_find(*set, kid);
}

static jwt_error select_key(const jwt_verifier *v, const jwt_header *h, jwt_key *k, char *reason,
                            size_t rlen)
{
    if (h->alg == JWT_ALG_HS256) { /* only ever the configured secret, whatever the kid says */
        k->jwk = v->hs_key;
        k->sig_bytes = 32;
        return JWT_OK;
    }
    if (!v->keys) return fail(reason, rlen, JWT_INTERNAL, "no JWK set configured");
    char kid[48];
    redact_printable(kid, sizeof kid, h->kid);
    if (!h->kid[0]) return fail(reason, rlen, JWT_UNKNOWN_KEY, "token header has no kid");
    const jwks_key *key = find_key(v->keys, h->kid, &k->set);
    if (!key) return fail(reason, rlen, JWT_UNKNOWN_KEY, "no key with kid \"%s\"", kid);
    jwks_key_type want = h->alg == JWT_ALG_RS256 ? JWKS_KEY_RSA : JWKS_KEY_EC_P256;
    if (key->type != want)
        return fail(reason, rlen, JWT_ALG_REFUSED, "key \"%s\" is not for %s", kid,
                    alg_name(h->alg));
    k->jwk = key->jwk;
    k->sig_bytes = want == JWKS_KEY_RSA ? key->rsa_bytes : 64;
    return JWT_OK;
}

/* cjose's own protected header must name the alg this module checked (same bytes, but a second
 * parser: this keeps the two from ever disagreeing silently). */
static bool same_alg(cjose_jws_t *jws, unsigned alg)
{
    const char *seen = cjose_header_get(cjose_jws_get_protected(jws), CJOSE_HDR_ALG, NULL);
    return seen && strcmp(seen, alg_name(alg)) == 0;
}

static jwt_error payload_json(cjose_jws_t *jws, json_t **claims, char *reason, size_t rlen)
{
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    if (!cjose_jws_get_plaintext(jws, &plain, &plain_len, NULL))
        return fail(reason, rlen, JWT_MALFORMED, "token payload is missing");
    json_t *c = json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(c)) {
        json_decref(c);
        return fail(reason, rlen, JWT_MALFORMED, "token payload is not a JSON object");
    }
    *claims = c;
    return JWT_OK;
}

static jwt_error verify_signature(const char *token, size_t len, const jwt_parts *p,
                                  const jwt_header *h, const jwt_key *k, json_t **claims,
                                  char *reason, size_t rlen)
{
    /* cjose compares an HMAC over the digest's length before it checks the signature's (an
     * over-read), and splits an ES256 signature in two halves of whatever length: exact
     * lengths first. */
    if (b64url_decoded_len(p->sig_len) != k->sig_bytes)
        return fail(reason, rlen, JWT_BAD_SIGNATURE, "signature has the wrong length for %s",
                    alg_name(h->alg));
    cjose_err cerr = {0};
    cjose_jws_t *jws = cjose_jws_import(token, len, &cerr);
    if (!jws)
        return fail(reason, rlen, cerr.code == CJOSE_ERR_NO_MEMORY ? JWT_INTERNAL : JWT_MALFORMED,
                    "token is not a valid JWS");
    jwt_error rc = JWT_OK;
    if (!same_alg(jws, h->alg)) {
        rc = fail(reason, rlen, JWT_MALFORMED, "token header is ambiguous");
    } else if (!cjose_jws_verify(jws, k->jwk, &cerr)) {
        rc = cerr.code == CJOSE_ERR_NO_MEMORY
                 ? fail(reason, rlen, JWT_INTERNAL, "out of memory verifying the signature")
                 : fail(reason, rlen, JWT_BAD_SIGNATURE, "signature does not verify");
    } else {
        rc = payload_json(jws, claims, reason, rlen);
    }
    cjose_jws_release(jws);
    return rc;
}

/* ------------------------------------------------------------------ claims */

/* A NumericDate (RFC 7519 §2): integer or fractional seconds, rounded the strict way (round_up
 * for nbf, down for exp), within 1..NUMERIC_DATE_MAX. */
static bool numeric_date(json_t *j, bool round_up, int64_t *out)
{
    double d;
    if (json_is_integer(j))
        d = (double)json_integer_value(j);
    else if (json_is_real(j))
        d = round_up ? ceil(json_real_value(j)) : floor(json_real_value(j));
    else
        return false;
    if (!(d >= 1 && d <= (double)NUMERIC_DATE_MAX)) return false;
    *out = (int64_t)d;
    return true;
}

static jwt_error check_times(const jwt_verifier *v, json_t *c, jwt_claims *out, char *reason,
                             size_t rlen)
{
    int64_t now = v->now_s ? v->now_s(v->now_ctx) : (int64_t)time(NULL);
    json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
    if (!exp) return fail(reason, rlen, JWT_BAD_CLAIM, "token has no exp");
    if (!numeric_date(exp, false, &out->exp))
        return fail(reason, rlen, JWT_BAD_CLAIM, "exp is not a NumericDate");
    if (now >= out->exp + v->leeway_s)
        return fail(reason, rlen, JWT_EXPIRED, "token expired %lld s ago",
                    (long long)(now - out->exp));
    int64_t not_before = 0;
    if (nbf && !numeric_date(nbf, true, &not_before))
        return fail(reason, rlen, JWT_BAD_CLAIM, "nbf is not a NumericDate");
    if (nbf && now + v->leeway_s < not_before)
        return fail(reason, rlen, JWT_NOT_YET_VALID, "token is valid only in %lld s",
                    (long long)(not_before - now));
    return JWT_OK;
}

static jwt_error check_issuer(const jwt_verifier *v, json_t *c, char *reason, size_t rlen)
{
    if (!v->issuer) return JWT_OK;
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (!iss) return fail(reason, rlen, JWT_BAD_ISSUER, "token has no iss");
    if (strcmp(iss, v->issuer) != 0)
        return fail(reason, rlen, JWT_BAD_ISSUER, "iss is not the accepted issuer");
    return JWT_OK;
}

static jwt_error check_audience(const jwt_verifier *v, json_t *c, char *reason, size_t rlen)
{
    json_t *aud = json_object_get(c, "aud");
    if (!aud)
        return v->audience ? fail(reason, rlen, JWT_BAD_AUDIENCE, "token has no aud") : JWT_OK;
    if (!v->audience)
        return fail(reason, rlen, JWT_BAD_AUDIENCE, "token has an aud; this server accepts none");
    if (json_is_string(aud)) {
        if (strcmp(json_string_value(aud), v->audience) == 0) return JWT_OK;
        return fail(reason, rlen, JWT_BAD_AUDIENCE, "aud is not this service");
    }
    if (!json_is_array(aud))
        return fail(reason, rlen, JWT_BAD_AUDIENCE, "aud is not a string or an array");
    bool found = false;
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a)
    {
        if (!json_is_string(a))
            return fail(reason, rlen, JWT_BAD_AUDIENCE, "aud holds something not a string");
        found = found || strcmp(json_string_value(a), v->audience) == 0;
    }
    return found ? JWT_OK
                 : fail(reason, rlen, JWT_BAD_AUDIENCE, "aud does not include this service");
}

/* Identity text ends up in messages and logs: bounded, no control characters. */
static bool text_claim_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

static jwt_error read_identity(const jwt_verifier *v, json_t *c, jwt_claims *out, char *reason,
                               size_t rlen)
{
    const char *claim = v->user_id_claim;
    const char *sub = json_string_value(json_object_get(c, claim));
    if (!sub || !sub[0])
        return fail(reason, rlen, JWT_BAD_CLAIM, "token has no %.64s (the user id claim)", claim);
    if (!text_claim_ok(sub, JWT_SUB_MAX))
        return fail(reason, rlen, JWT_BAD_CLAIM,
                    "%.64s is longer than %d bytes or has control characters", claim, JWT_SUB_MAX);
    memcpy(out->sub, sub, strlen(sub) + 1);
    static const char *const names[] = {"name", "preferred_username"};
    for (size_t i = 0; i < 2; i++) {
        json_t *j = json_object_get(c, names[i]);
        if (!j) continue;
        const char *s = json_string_value(j);
        if (!s || !text_claim_ok(s, JWT_USERNAME_MAX))
            return fail(reason, rlen, JWT_BAD_CLAIM,
                        "%s is not a string of at most %d bytes without control characters",
                        names[i], JWT_USERNAME_MAX);
        if (s[0]) {
            memcpy(out->username, s, strlen(s) + 1);
            break;
        }
    }
    return JWT_OK;
}

/* A room id, or "<prefix>*" with a prefix of 1..ROOM_ID_MAX-1 room-id characters. */
static bool room_entry_ok(const char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[n - 1] == '*') return n - 1 < ROOM_ID_MAX && room_id_valid(s, n - 1);
    return room_id_valid(s, n);
}

static jwt_error read_rooms(json_t *c, jwt_claims *out, char *reason, size_t rlen)
{
    json_t *rooms = json_object_get(c, "rooms");
    if (!rooms) return JWT_OK;
    if (!json_is_array(rooms)) return fail(reason, rlen, JWT_BAD_CLAIM, "rooms is not an array");
    size_t n = json_array_size(rooms);
    if (n > JWT_ROOMS_MAX)
        return fail(reason, rlen, JWT_BAD_CLAIM, "rooms has more than %d entries", JWT_ROOMS_MAX);
    out->rooms_limited = true;
    if (n == 0) return JWT_OK; /* an empty list: no room at all */
    out->rooms = calloc(n, sizeof *out->rooms);
    if (!out->rooms) return fail(reason, rlen, JWT_INTERNAL, "out of memory");
    size_t i;
    json_t *r;
    json_array_foreach(rooms, i, r)
    {
        const char *s = json_string_value(r);
        if (!s || !room_entry_ok(s))
            return fail(reason, rlen, JWT_BAD_CLAIM,
                        "rooms[%zu] is not a room id or a \"<prefix>*\" pattern", i);
        memcpy(out->rooms[i], s, strlen(s) + 1);
        out->n_rooms = i + 1;
    }
    return JWT_OK;
}

static jwt_error check_claims(const jwt_verifier *v, json_t *c, jwt_claims *out, char *reason,
                              size_t rlen)
{
    jwt_error rc = check_times(v, c, out, reason, rlen);
    if (rc == JWT_OK) rc = check_issuer(v, c, reason, rlen);
    if (rc == JWT_OK) rc = check_audience(v, c, reason, rlen);
    if (rc == JWT_OK) rc = read_identity(v, c, out, reason, rlen);
    if (rc == JWT_OK) rc = read_rooms(c, out, reason, rlen);
    return rc;
}

/* ------------------------------------------------------------------ public */

static jwt_error check_size(const char *token, size_t len, char *reason, size_t rlen)
{
    if (!token || len == 0) return fail(reason, rlen, JWT_MALFORMED, "token is empty");
    if (len > JWT_MAX_TOKEN)
        return fail(reason, rlen, JWT_TOO_LARGE, "token is longer than %d bytes", JWT_MAX_TOKEN);
    return JWT_OK;
}

jwt_error jwt_verify(const jwt_verifier *v, const char *token, size_t len, jwt_claims *out,
                     char *reason, size_t reason_len)
{
    jwt_claims scratch;
    jwt_claims *claims_out = out ? out : &scratch;
    memset(claims_out, 0, sizeof *claims_out);
    if (reason && reason_len) reason[0] = '\0';
    if (!v) return fail(reason, reason_len, JWT_INTERNAL, "no verifier");

    jwt_parts parts = {0};
    jwt_header hdr = {0};
    jwt_key key = {0};
    json_t *claims = NULL;
    jwt_error rc = check_size(token, len, reason, reason_len);
    if (rc == JWT_OK) rc = split_parts(token, len, &parts, reason, reason_len);
    if (rc == JWT_OK) rc = read_header(token, parts.hdr_len, &hdr, reason, reason_len);
    if (rc == JWT_OK) rc = check_alg(v, &hdr, reason, reason_len);
    if (rc == JWT_OK) rc = select_key(v, &hdr, &key, reason, reason_len);
    if (rc == JWT_OK)
        rc = verify_signature(token, len, &parts, &hdr, &key, &claims, reason, reason_len);
    if (rc == JWT_OK) rc = check_claims(v, claims, claims_out, reason, reason_len);
    json_decref(claims);
    jwks_release(key.set);

    if (rc != JWT_OK || claims_out == &scratch) {
        jwt_claims_free(claims_out); /* a failure leaves nothing a careless caller could use */
        memset(claims_out, 0, sizeof *claims_out);
    }
    return rc;
}

void jwt_claims_free(jwt_claims *c)
{
    if (!c) return;
    free(c->rooms);
    c->rooms = NULL;
    c->n_rooms = 0;
}

bool jwt_claims_allow_room(const jwt_claims *c, const char *room)
{
    /* Claims without a sub did not come from a successful jwt_verify(): they allow nothing. */
    if (!c || !c->sub[0] || !room) return false;
    size_t n = strnlen(room, ROOM_ID_MAX + 1);
    if (!room_id_valid(room, n)) return false;
    if (!c->rooms_limited) return true;
    for (size_t i = 0; i < c->n_rooms; i++) {
        const char *e = c->rooms[i];
        size_t el = strlen(e);
        if (e[el - 1] == '*') {
            if (n >= el - 1 && memcmp(room, e, el - 1) == 0) return true;
        } else if (strcmp(e, room) == 0) {
            return true;
        }
    }
    return false;
}
