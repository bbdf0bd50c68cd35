/*
 * fuzz_jwt — the token verifier, jwt_verify() (common/jwt.c), and the JWK-set parser,
 * jwks_parse() (common/jwks.c), with HS256, RS256 and ES256 configured (keys made once at start).
 *
 * Input: byte 0 picks what the rest is:
 *   0 mod 4  a token, verified as it is;
 *   1 mod 4  a payload (claims), put under a fixed HS256 header and MACed with the configured
 *            secret, so the claim checks are reached (a fuzzed token never has a valid signature);
 *   2 mod 4  a protected header, over a fixed valid payload, MACed likewise;
 *   3 mod 4  a JWK set for jwks_parse().
 * Properties: jwt_verify returns a known code, twice the same; its reason is NUL-terminated
 * within its buffer, one line, non-empty on failure and never holds the token (16+ bytes); on
 * JWT_OK sub is 1..JWT_SUB_MAX bytes, exp is not past now - leeway, every rooms entry is allowed
 * (a pattern's prefix plus "x" too) and no invalid room id is; claims of a failure allow nothing.
 * A JWK set that parses counts loaded + skipped = its array length, loaded = jwks_count, and
 * every loaded key is found by its kid with a type that fits it.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cjose/cjose.h>
#include <jansson.h>

#include "fuzz_util.h"
#include "jwks.h"
#include "jwt.h"

#define NOW 1700000000LL
static const char SECRET[] = "fuzz-shared-secret-0123456789-abcdefghij";
static const char VALID_PAYLOAD[] = "{\"sub\":\"42\",\"exp\":1800000000,\"rooms\":[\"7\",\"t-*\"]}";

static int64_t now_value = NOW;
static int64_t fixed_now(void *ctx) { return *(const int64_t *)ctx; }

static jwks_source *keys;
static jwt_verifier *verifier;

static char *public_jwk(cjose_jwk_t *k, const char *kid)
{
    cjose_jwk_set_kid(k, kid, strlen(kid), NULL);
    return cjose_jwk_to_json(k, false, NULL);
}

/* Keys and the verifier live for the whole run (libFuzzer never returns from its loop). */
static void setup(void)
{
    static const uint8_t e[] = {1, 0, 1};
    cjose_jwk_t *rsa = cjose_jwk_create_RSA_random(2048, e, sizeof e, NULL);
    cjose_jwk_t *ec = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, NULL);
    FUZZ_ASSERT(rsa && ec);
    char *r = public_jwk(rsa, "r1"), *p = public_jwk(ec, "e1");
    size_t n = strlen(r) + strlen(p) + 32;
    char *json = malloc(n);
    snprintf(json, n, "{\"keys\":[%s,%s]}", r, p);
    jwks *set = jwks_parse(json, strlen(json), NULL, NULL, 0);
    FUZZ_ASSERT(set && jwks_count(set) == 2);
    keys = jwks_source_new_static(set);
    free(json);
    free(r);
    free(p);
    cjose_jwk_release(rsa);
    cjose_jwk_release(ec);

    jwt_config cfg;
    jwt_config_init(&cfg);
    cfg.algs = JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256;
    cfg.hs256_secret = (const uint8_t *)SECRET;
    cfg.hs256_secret_len = strlen(SECRET);
    cfg.keys = keys;
    cfg.now_s = fixed_now;
    cfg.now_ctx = &now_value;
    verifier = jwt_verifier_new(&cfg, NULL, 0);
    FUZZ_ASSERT(verifier);
}

static char *b64url(const uint8_t *data, size_t len)
{
    char *enc = NULL;
    size_t n = 0;
    if (!cjose_base64url_encode(data, len, &enc, &n, NULL)) return NULL;
    char *copy = strndup(enc, n);
    cjose_get_dealloc()(enc);
    return copy;
}

/* b64(header).b64(payload).b64(HMAC-SHA256 with SECRET) over exactly these bytes. */
static char *hs_token(const uint8_t *hdr, size_t hdr_len, const uint8_t *pay, size_t pay_len)
{
    char *h = b64url(hdr, hdr_len), *p = b64url(pay, pay_len);
    char *tok = NULL;
    if (h && p) {
        size_t in_len = strlen(h) + 1 + strlen(p);
        tok = malloc(in_len + 64);
        snprintf(tok, in_len + 1, "%s.%s", h, p);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, in_len, mac,
             &mac_len);
        char *s = b64url(mac, mac_len);
        snprintf(tok + in_len, 64, ".%s", s ? s : "");
        free(s);
    }
    free(h);
    free(p);
    return tok;
}

static void check_success(const jwt_claims *c)
{
    size_t sub_len = strnlen(c->sub, sizeof c->sub);
    FUZZ_ASSERT(sub_len >= 1 && sub_len <= JWT_SUB_MAX);
    FUZZ_ASSERT(fuzz_terminated(c->username, sizeof c->username));
    FUZZ_ASSERT(c->exp > NOW - JWT_DEFAULT_LEEWAY_S);
    FUZZ_ASSERT(c->n_rooms <= JWT_ROOMS_MAX && (c->rooms_limited || c->n_rooms == 0));
    for (size_t i = 0; i < c->n_rooms; i++) {
        const char *e = c->rooms[i];
        size_t n = strnlen(e, ROOM_ID_BUF);
        FUZZ_ASSERT(n >= 1 && n <= ROOM_ID_MAX);
        if (e[n - 1] != '*') {
            FUZZ_ASSERT(jwt_claims_allow_room(c, e));
        } else if (n < ROOM_ID_MAX) {
            char under[ROOM_ID_BUF];
            memcpy(under, e, n - 1);
            memcpy(under + n - 1, "x", 2);
            FUZZ_ASSERT(jwt_claims_allow_room(c, under));
        }
    }
    FUZZ_ASSERT(!jwt_claims_allow_room(c, "") && !jwt_claims_allow_room(c, "a b") &&
                !jwt_claims_allow_room(c, "*"));
}

static void verify_token(const char *tok, size_t len)
{
    char reason[JWT_REASON_BUF];
    memset(reason, 'Z', sizeof reason);
    jwt_claims c;
    jwt_error rc = jwt_verify(verifier, tok, len, &c, reason, sizeof reason);
    FUZZ_ASSERT(rc >= JWT_OK && rc <= JWT_INTERNAL);
    FUZZ_ASSERT(strcmp(jwt_error_name(rc), "unknown") != 0);
    FUZZ_ASSERT(fuzz_terminated(reason, sizeof reason) && !strchr(reason, '\n'));
    if (rc == JWT_OK) {
        check_success(&c);
    } else {
        FUZZ_ASSERT(reason[0] != '\0');
        FUZZ_ASSERT(c.sub[0] == '\0' && c.rooms == NULL && !jwt_claims_allow_room(&c, "7"));
        if (len >= 16 && !memchr(tok, '\0', len)) {
            char *t = strndup(tok, len);
            FUZZ_ASSERT(!strstr(reason, t));
            free(t);
        }
    }
    jwt_claims_free(&c);
    jwt_error again = jwt_verify(verifier, tok, len, NULL, NULL, 0);
    FUZZ_ASSERT(again == rc);
}

static void parse_set(const uint8_t *data, size_t size)
{
    jwks_load_info info;
    jwks *set = jwks_parse((const char *)data, size, &info, NULL, 0);
    if (!set) return;
    FUZZ_ASSERT(info.loaded == jwks_count(set) && info.loaded <= JWKS_MAX_KEYS);
    size_t by_reason = 0;
    for (int r = 0; r < JWKS_SKIP_N; r++) by_reason += info.by_reason[r];
    FUZZ_ASSERT(by_reason == info.skipped);
    FUZZ_ASSERT(fuzz_terminated(info.first_skip, sizeof info.first_skip));
    FUZZ_ASSERT((info.skipped == 0) == (info.first_skip[0] == '\0'));
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_ASSERT(root &&
                json_array_size(json_object_get(root, "keys")) == info.loaded + info.skipped);
    json_t *k;
    size_t i;
    json_array_foreach(json_object_get(root, "keys"), i, k)
    {
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const jwks_key *found = kid ? jwks_find(set, kid) : NULL;
        if (!found) continue;
        FUZZ_ASSERT(strcmp(found->kid, kid) == 0 && found->jwk);
        FUZZ_ASSERT(found->type == JWKS_KEY_RSA ? found->rsa_bytes * 8 >= JWKS_RSA_MIN_BITS
                                                : found->rsa_bytes == 0);
    }
    json_decref(root);
    jwks_release(set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!verifier) setup();
    if (size < 1 || size > 3 * JWT_MAX_TOKEN) return 0;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    static const char HS_HEADER[] = "{\"alg\":\"HS256\"}";
    char *tok = NULL;
    switch (data[0] % 4) {
    case 0: verify_token((const char *)rest, n); break;
    case 1: tok = hs_token((const uint8_t *)HS_HEADER, strlen(HS_HEADER), rest, n); break;
    case 2: tok = hs_token(rest, n, (const uint8_t *)VALID_PAYLOAD, strlen(VALID_PAYLOAD)); break;
    default: parse_set(rest, n); break;
    }
    if (tok) verify_token(tok, strlen(tok));
    free(tok);
    return 0;
}
