/*
 * test_jwt — token verification (common/jwt.h) and JWK sets (common/jwks.h) with real keys: an
 * RSA-2048 key made with OpenSSL EVP (its PEM feeds the HS/RS confusion cases) and EC P-256 keys
 * made with cjose; tokens signed with cjose, or with HMAC here for headers cjose will not write
 * (alg none, crit, duplicate members). "Now" is injected, so every time boundary is exact.
 *
 * Key rotation is served from a file:// URL and from an HTTP server on 127.0.0.1 that the test
 * runs in-process (libmicrohttpd, port picked by the kernel), which counts the fetches it gets.
 */
/* test-passes: asan tsan */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjose/cjose.h>

#include "jwks.h"
#include "jwt.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_jwt.h"

#define NOW 1700000000LL
static const char SECRET[] = "test-shared-secret-0123456789-abcdefghij";
#define ISSUER "https://idp.example.com"
#define AUDIENCE "chatflow"

static int64_t now_value = NOW;
static int64_t fixed_now(void *ctx) { return *(const int64_t *)ctx; }

/* ------------------------------------------------------------------ keys */

typedef struct {
    cjose_jwk_t *priv; /* signs */
    char *pub_json;    /* the public JWK with its kid */
    char *pem;         /* SubjectPublicKeyInfo PEM (RSA keys only) */
} test_key;

static test_key RSA1, RSA2, RSA1_IMPOSTOR, RSA_WEAK, EC1, EC_P384;

static char *pem_of(EVP_PKEY *pk)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    if (b && PEM_write_bio_PUBKEY(b, pk)) {
        long n = BIO_get_mem_data(b, &data);
        out = strndup(data, (size_t)n);
    }
    BIO_free(b);
    return out;
}

static void finish_key(test_key *k, const char *kid)
{
    if (!k->priv) return;
    cjose_jwk_set_kid(k->priv, kid, strlen(kid), NULL);
    k->pub_json = cjose_jwk_to_json(k->priv, false, NULL);
}

/* An RSA key from OpenSSL EVP, handed to cjose as a private JWK (n, e, d and the CRT values). */
static test_key make_rsa(int bits, const char *kid)
{
    test_key k = {0};
    EVP_PKEY *pk = EVP_RSA_gen((unsigned)bits);
    if (!pk) return k;
    k.priv = tl_jwt_rsa_jwk(pk);
    k.pem = pem_of(pk);
    EVP_PKEY_free(pk);
    finish_key(&k, kid);
    return k;
}

static test_key make_ec(cjose_jwk_ec_curve crv, const char *kid)
{
    test_key k = {0};
    k.priv = cjose_jwk_create_EC_random(crv, NULL);
    finish_key(&k, kid);
    return k;
}

static void free_key(test_key *k)
{
    if (k->priv) cjose_jwk_release(k->priv);
    free(k->pub_json);
    free(k->pem);
    memset(k, 0, sizeof *k);
}

/* ------------------------------------------------------------------ token builders */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* A token signed by cjose with a header {"alg":alg[,"kid":kid],"typ":"JWT"}. */
static char *sign_cjose(const test_key *k, const char *alg, const char *kid, const char *payload)
{
    return tl_jwt_sign(k->priv, alg, kid, payload);
}

static char *hs_token(const char *header, const char *payload)
{
    return tl_jwt_hs256_raw(SECRET, strlen(SECRET), header, payload);
}

#define HS_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* The usual claims, valid at NOW. */
static char *claims(void)
{
    return fmt("{\"sub\":\"42\",\"name\":\"alice\",\"exp\":%lld}", NOW + 600);
}

/* ------------------------------------------------------------------ verifying */

static int unsafe_reasons; /* failures whose reason was empty, multi-line or held the token */
static char last_reason[JWT_REASON_BUF];

/* jwt_verify on a NUL-terminated token; every failure's reason is checked to be one safe line. */
static jwt_error verify(const jwt_verifier *v, const char *token, jwt_claims *out)
{
    jwt_claims local;
    jwt_claims *c = out ? out : &local;
    size_t len = token ? strlen(token) : 0;
    jwt_error rc = jwt_verify(v, token, len, c, last_reason, sizeof last_reason);
    if (rc != JWT_OK) {
        bool unsafe = last_reason[0] == '\0' || strchr(last_reason, '\n') ||
                      (len >= 8 && strstr(last_reason, token));
        /* Not even a token's 12-byte fragment: the signature part is the secret-ish bit. */
        const char *sig = token ? strrchr(token, '.') : NULL;
        if (sig && strlen(sig + 1) >= 12) {
            char frag[13];
            memcpy(frag, sig + 1, 12);
            frag[12] = '\0';
            unsafe = unsafe || strstr(last_reason, frag);
        }
        if (unsafe) {
            unsafe_reasons++;
            NOTE("unsafe reason: \"%s\"", last_reason);
        }
    }
    if (!out) jwt_claims_free(&local);
    return rc;
}

#define CHECK_CODE(got, want, ...)                                                        \
    do {                                                                                  \
        jwt_error g__ = (got), w__ = (want);                                              \
        CHECK(g__ == w__, __VA_ARGS__);                                                   \
        if (g__ != w__)                                                                   \
            printf("#   got:  %s (%s)\n#   want: %s\n", jwt_error_name(g__), last_reason, \
                   jwt_error_name(w__));                                                  \
    } while (0)

static jwks *set_of(const char *first, ...)
{
    char *json = fmt("{\"keys\":[%s", first);
    va_list ap;
    va_start(ap, first);
    for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *)) {
        char *grown = fmt("%s,%s", json, k);
        free(json);
        json = grown;
    }
    va_end(ap);
    char *full = fmt("%s]}", json);
    free(json);
    char err[JWKS_ERR_BUF] = "";
    jwks *set = jwks_parse(full, strlen(full), NULL, err, sizeof err);
    if (!set) NOTE("set_of: %s", err);
    free(full);
    return set;
}

typedef struct {
    unsigned algs;
    jwks_source *keys;
    const char *issuer, *audience;
    int leeway_s;
    const char *user_id_claim; /* NULL: sub */
} vopts;

static jwt_verifier *verifier(vopts o)
{
    jwt_config cfg;
    jwt_config_init(&cfg);
    cfg.algs = o.algs;
    cfg.hs256_secret = (const uint8_t *)SECRET;
    cfg.hs256_secret_len = strlen(SECRET);
    cfg.keys = o.keys;
    cfg.issuer = o.issuer;
    cfg.audience = o.audience;
    cfg.user_id_claim = o.user_id_claim;
    cfg.leeway_s = o.leeway_s >= 0 ? o.leeway_s : JWT_DEFAULT_LEEWAY_S;
    cfg.now_s = fixed_now;
    cfg.now_ctx = &now_value;
    char err[200] = "";
    jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof err);
    if (!v) NOTE("verifier: %s", err);
    return v;
}

/* The static source every RS/ES case uses: RSA1 ("r1") and EC1 ("e1"). */
static jwks_source *static_keys(void)
{
    return jwks_source_new_static(set_of(RSA1.pub_json, EC1.pub_json, NULL));
}

/* ------------------------------------------------------------------ tests */

static void test_config(void)
{
    jwt_config cfg;
    jwt_config_init(&cfg);
    CHECK_INT(cfg.leeway_s, JWT_DEFAULT_LEEWAY_S, "jwt_config_init: leeway defaults to 30 s");
    char err[200] = "";
    jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(!v && strstr(err, "algs"), "no algorithm configured: refused (%s)", err);

    cfg.algs = JWT_ALG_HS256;
    cfg.hs256_secret = (const uint8_t *)"short";
    cfg.hs256_secret_len = 5;
    v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(!v && strstr(err, "32"), "HS256 secret under 32 bytes: refused (%s)", err);

    cfg.hs256_secret = (const uint8_t *)RSA1.pem;
    cfg.hs256_secret_len = strlen(RSA1.pem);
    v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(!v && strstr(err, "PEM"), "an RSA public key's PEM as HS256 secret: refused (%s)", err);

    cfg.hs256_secret = (const uint8_t *)SECRET;
    cfg.hs256_secret_len = strlen(SECRET);
    cfg.algs = JWT_ALG_HS256 | JWT_ALG_RS256;
    v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(!v && strstr(err, "JWK"), "RS256 without a key set: refused (%s)", err);

    cfg.algs = JWT_ALG_HS256;
    cfg.leeway_s = -1;
    v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(!v && strstr(err, "leeway"), "negative leeway: refused (%s)", err);

    cfg.leeway_s = 30;
    cfg.algs = 1u << 7;
    v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(!v, "an unknown algorithm flag: refused");

    cfg.algs = JWT_ALG_HS256;
    v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(v != NULL, "HS256 with a 40-byte secret: accepted");
    jwt_verifier_free(v);
}

static void test_valid_tokens(void)
{
    jwks_source *src = static_keys();
    jwt_verifier *v =
        verifier((vopts){JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    char *payload = claims();
    struct {
        const char *what;
        char *token;
    } cases[] = {
        {"HS256", hs_token(HS_HEADER, payload)},
        {"HS256 signed by cjose", NULL},
        {"RS256", sign_cjose(&RSA1, "RS256", "r1", payload)},
        {"ES256", sign_cjose(&EC1, "ES256", "e1", payload)},
    };
    cjose_jwk_t *oct = cjose_jwk_create_oct_spec((const uint8_t *)SECRET, strlen(SECRET), NULL);
    test_key hs = {.priv = oct};
    cases[1].token = sign_cjose(&hs, "HS256", NULL, payload);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jwt_claims c;
        jwt_error rc = verify(v, cases[i].token, &c);
        CHECK_CODE(rc, JWT_OK, "valid %s token verifies", cases[i].what);
        CHECK(strcmp(c.sub, "42") == 0 && strcmp(c.username, "alice") == 0 && c.exp == NOW + 600,
              "valid %s token: sub 42, username alice, exp (got %s / %s / %lld)", cases[i].what,
              c.sub, c.username, (long long)c.exp);
        CHECK(!c.rooms_limited && jwt_claims_allow_room(&c, "7") &&
                  jwt_claims_allow_room(&c, "any-room_1"),
              "valid %s token without rooms: every room allowed", cases[i].what);
        jwt_claims_free(&c);
        free(cases[i].token);
    }
    cjose_jwk_release(oct);

    char *t = sign_cjose(&RSA1, "RS256", "r1", payload);
    jwt_claims c;
    CHECK_CODE(jwt_verify(v, t, strlen(t), &c, NULL, 0), JWT_OK,
               "jwt_verify without a reason buffer works");
    jwt_claims_free(&c);
    CHECK_CODE(jwt_verify(v, t, strlen(t), NULL, last_reason, sizeof last_reason), JWT_OK,
               "jwt_verify without a claims struct works");
    free(t);
    free(payload);
    jwt_verifier_free(v);
    jwks_source_free(src);
}

/* The same token with one character of its signature changed (not the last one, whose low bits
 * may be unused). */
static char *flip_sig(const char *token)
{
    char *t = strdup(token);
    char *sig = strrchr(t, '.') + 1;
    sig[4] = sig[4] == 'A' ? 'B' : 'A';
    return t;
}

static void test_bad_signature(void)
{
    jwks_source *src = static_keys();
    jwt_verifier *v =
        verifier((vopts){JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    char *payload = claims();
    char *good[] = {hs_token(HS_HEADER, payload), sign_cjose(&RSA1, "RS256", "r1", payload),
                    sign_cjose(&EC1, "ES256", "e1", payload)};
    const char *names[] = {"HS256", "RS256", "ES256"};
    for (int i = 0; i < 3; i++) {
        char *bad = flip_sig(good[i]);
        CHECK_CODE(verify(v, bad, NULL), JWT_BAD_SIGNATURE, "%s: one signature byte changed",
                   names[i]);
        free(bad);
    }
    /* Another payload under the original signature: sub 42 -> 43. */
    char *other = fmt("{\"sub\":\"43\",\"name\":\"alice\",\"exp\":%lld}", NOW + 600);
    char *other_b64 = tl_jwt_b64url(other, strlen(other));
    for (int i = 0; i < 3; i++) {
        char *first_dot = strchr(good[i], '.'), *last_dot = strrchr(good[i], '.');
        char *swapped = fmt("%.*s.%s%s", (int)(first_dot - good[i]), good[i], other_b64, last_dot);
        CHECK_CODE(verify(v, swapped, NULL), JWT_BAD_SIGNATURE,
                   "%s: payload swapped under the signature", names[i]);
        free(swapped);
    }
    char *wrong_secret =
        tl_jwt_hs256_raw("another-secret-of-enough-length-0123456789", 42, HS_HEADER, payload);
    CHECK_CODE(verify(v, wrong_secret, NULL), JWT_BAD_SIGNATURE, "HS256 with another secret");
    char *impostor = sign_cjose(&RSA1_IMPOSTOR, "RS256", "r1", payload);
    CHECK_CODE(verify(v, impostor, NULL), JWT_BAD_SIGNATURE,
               "RS256 signed by another key claiming kid r1");
    /* A signature of the right length but all zero bytes (ES256: r = s = 0). */
    char zeros[64] = {0};
    char *zsig = tl_jwt_b64url(zeros, sizeof zeros);
    char *zero_es = tl_jwt_raw("{\"alg\":\"ES256\",\"kid\":\"e1\"}", payload, zsig);
    CHECK_CODE(verify(v, zero_es, NULL), JWT_BAD_SIGNATURE, "ES256 with r = s = 0");
    /* The right signature with one byte more: cjose would split it into unequal halves. */
    char *long_es = fmt("%sAA", good[2]);
    CHECK_CODE(verify(v, long_es, NULL), JWT_BAD_SIGNATURE, "ES256 signature 1 byte too long");
    CHECK(strstr(last_reason, "length") != NULL, "the reason says the length is wrong (%s)",
          last_reason);
    char *short_hs = strdup(good[0]);
    short_hs[strlen(short_hs) - 3] = '\0'; /* 43 -> 40 characters: 30 bytes */
    CHECK_CODE(verify(v, short_hs, NULL), JWT_BAD_SIGNATURE,
               "HS256 signature cut to 30 bytes (cjose would compare 32)");
    free(short_hs);
    free(long_es);
    free(zero_es);
    free(zsig);
    free(impostor);
    free(wrong_secret);
    free(other_b64);
    free(other);
    for (int i = 0; i < 3; i++) free(good[i]);
    free(payload);
    jwt_verifier_free(v);
    jwks_source_free(src);
}

static void test_alg_refused(void)
{
    jwks_source *src = static_keys();
    jwt_verifier *all =
        verifier((vopts){JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    jwt_verifier *rs_only = verifier((vopts){JWT_ALG_RS256, src, NULL, NULL, -1});
    jwt_verifier *hs_only = verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, -1});
    char *payload = claims();

    char *none = tl_jwt_raw("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, "");
    CHECK_CODE(verify(all, none, NULL), JWT_ALG_REFUSED, "alg none with an empty signature");
    CHECK(strstr(last_reason, "none") != NULL, "alg none: the reason names it (%s)", last_reason);
    char *none_sig = tl_jwt_raw("{\"alg\":\"none\"}", payload, "c2lnbmF0dXJl");
    CHECK_CODE(verify(all, none_sig, NULL), JWT_ALG_REFUSED, "alg none with a signature part");
    char *none_case = tl_jwt_raw("{\"alg\":\"NoNe\"}", payload, "");
    CHECK_CODE(verify(all, none_case, NULL), JWT_ALG_REFUSED, "alg NoNe");
    CHECK(strstr(last_reason, "must be signed") != NULL, "alg NoNe is read as none (%s)",
          last_reason);
    char *hs512 = tl_jwt_raw("{\"alg\":\"HS512\"}", payload, "c2ln");
    CHECK_CODE(verify(all, hs512, NULL), JWT_ALG_REFUSED, "alg HS512 (not configured)");
    char *ps256 = sign_cjose(&RSA1, "PS256", "r1", payload);
    CHECK_CODE(verify(all, ps256, NULL), JWT_ALG_REFUSED, "alg PS256 signed by a set key");
    char *alg_num = tl_jwt_raw("{\"alg\":256}", payload, "c2ln");
    CHECK_CODE(verify(all, alg_num, NULL), JWT_MALFORMED, "alg that is not a string");
    char *no_alg = tl_jwt_raw("{\"typ\":\"JWT\"}", payload, "c2ln");
    CHECK_CODE(verify(all, no_alg, NULL), JWT_MALFORMED, "header without alg");

    /* HS/RS confusion: HMAC keyed with the RSA public key's PEM, the key the verifier holds. */
    char *confused =
        tl_jwt_hs256_raw(RSA1.pem, strlen(RSA1.pem), "{\"alg\":\"HS256\",\"kid\":\"r1\"}", payload);
    CHECK_CODE(verify(rs_only, confused, NULL), JWT_ALG_REFUSED,
               "HS256 token MACed with the RSA public PEM, only RS256 configured");
    CHECK_CODE(verify(all, confused, NULL), JWT_BAD_SIGNATURE,
               "HS256 token MACed with the RSA public PEM, HS256 configured: the secret decides");
    char *n_bytes = tl_jwt_hs256_raw(RSA1.pub_json, strlen(RSA1.pub_json),
                                     "{\"alg\":\"HS256\",\"kid\":\"r1\"}", payload);
    CHECK_CODE(verify(all, n_bytes, NULL), JWT_BAD_SIGNATURE,
               "HS256 token MACed with the RSA public JWK text");
    char *rs = sign_cjose(&RSA1, "RS256", "r1", payload);
    CHECK_CODE(verify(hs_only, rs, NULL), JWT_ALG_REFUSED, "RS256 token, only HS256 configured");
    char *es = sign_cjose(&EC1, "ES256", "e1", payload);
    CHECK_CODE(verify(rs_only, es, NULL), JWT_ALG_REFUSED, "ES256 token, only RS256 configured");

    /* The kid names a key of the other type. */
    char *es_on_rsa = sign_cjose(&EC1, "ES256", "r1", payload);
    CHECK_CODE(verify(all, es_on_rsa, NULL), JWT_ALG_REFUSED, "ES256 token naming an RSA key");
    char *rs_on_ec = sign_cjose(&RSA1, "RS256", "e1", payload);
    CHECK_CODE(verify(all, rs_on_ec, NULL), JWT_ALG_REFUSED, "RS256 token naming an EC key");

    char *tokens[] = {none,     none_sig, none_case, hs512, ps256,     alg_num, no_alg,
                      confused, n_bytes,  rs,        es,    es_on_rsa, rs_on_ec};
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) free(tokens[i]);
    free(payload);
    jwt_verifier_free(all);
    jwt_verifier_free(rs_only);
    jwt_verifier_free(hs_only);
    jwks_source_free(src);
}

static jwt_error hs_claims(const jwt_verifier *v, const char *payload)
{
    char *t = hs_token(HS_HEADER, payload);
    jwt_error rc = verify(v, t, NULL);
    free(t);
    return rc;
}

static void test_times(void)
{
    jwt_verifier *v30 = verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, 30});
    jwt_verifier *v0 = verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, 0});
    struct {
        const char *what;
        const jwt_verifier *v;
        long long exp, nbf; /* nbf 0: absent */
        jwt_error want;
    } cases[] = {
        {"exp 29 s ago, leeway 30", v30, NOW - 29, 0, JWT_OK},
        {"exp 30 s ago, leeway 30", v30, NOW - 30, 0, JWT_EXPIRED},
        {"exp 1 h ago, leeway 30", v30, NOW - 3600, 0, JWT_EXPIRED},
        {"exp in 1 s, leeway 0", v0, NOW + 1, 0, JWT_OK},
        {"exp now, leeway 0", v0, NOW, 0, JWT_EXPIRED},
        {"exp 10 s ago, leeway 0", v0, NOW - 10, 0, JWT_EXPIRED},
        {"exp 10 s ago, leeway 30", v30, NOW - 10, 0, JWT_OK},
        {"nbf in 30 s, leeway 30", v30, NOW + 600, NOW + 30, JWT_OK},
        {"nbf in 31 s, leeway 30", v30, NOW + 600, NOW + 31, JWT_NOT_YET_VALID},
        {"nbf now, leeway 0", v0, NOW + 600, NOW, JWT_OK},
        {"nbf in 1 s, leeway 0", v0, NOW + 600, NOW + 1, JWT_NOT_YET_VALID},
        {"nbf in 10 s, leeway 30", v30, NOW + 600, NOW + 10, JWT_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = cases[i].nbf
                      ? fmt("{\"sub\":\"1\",\"exp\":%lld,\"nbf\":%lld}", cases[i].exp, cases[i].nbf)
                      : fmt("{\"sub\":\"1\",\"exp\":%lld}", cases[i].exp);
        CHECK_CODE(hs_claims(cases[i].v, p), cases[i].want, "%s", cases[i].what);
        free(p);
    }
    const char *bad[] = {
        "{\"sub\":\"1\"}",
        "{\"sub\":\"1\",\"exp\":\"1700000600\"}",
        "{\"sub\":\"1\",\"exp\":null}",
        "{\"sub\":\"1\",\"exp\":-5}",
        "{\"sub\":\"1\",\"exp\":1e300}",
        "{\"sub\":\"1\",\"exp\":99999999999999}",
        "{\"sub\":\"1\",\"exp\":1700000600,\"nbf\":\"soon\"}",
    };
    const char *what[] = {"no exp",    "exp as a string",    "exp null",    "exp negative",
                          "exp 1e300", "exp past year 9999", "nbf a string"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_CODE(hs_claims(v30, bad[i]), JWT_BAD_CLAIM, "%s: refused", what[i]);
    char *frac = fmt("{\"sub\":\"1\",\"exp\":%lld.75}", NOW + 100);
    CHECK_CODE(hs_claims(v0, frac), JWT_OK, "a fractional exp in the future");
    free(frac);
    frac = fmt("{\"sub\":\"1\",\"exp\":%lld.5}", NOW);
    CHECK_CODE(hs_claims(v0, frac), JWT_EXPIRED, "exp now + 0.5 s counts as now (rounded down)");
    free(frac);
    frac = fmt("{\"sub\":\"1\",\"exp\":%lld,\"nbf\":%lld.5}", NOW + 100, NOW);
    CHECK_CODE(hs_claims(v0, frac), JWT_NOT_YET_VALID,
               "nbf now + 0.5 s is in the future (rounded up), leeway 0");
    free(frac);
    jwt_verifier_free(v30);
    jwt_verifier_free(v0);
}

static void test_issuer_audience(void)
{
    jwt_verifier *both = verifier((vopts){JWT_ALG_HS256, NULL, ISSUER, AUDIENCE, -1});
    jwt_verifier *none = verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, -1});
    long long e = NOW + 600;
    struct {
        const char *what;
        const jwt_verifier *v;
        const char *extra; /* claims added to sub and exp */
        jwt_error want;
    } cases[] = {
        {"iss and aud string match", both, "\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"",
         JWT_OK},
        {"aud array holding ours", both,
         "\"iss\":\"" ISSUER "\",\"aud\":[\"other\",\"" AUDIENCE "\"]", JWT_OK},
        {"wrong iss", both, "\"iss\":\"https://evil.example.com\",\"aud\":\"" AUDIENCE "\"",
         JWT_BAD_ISSUER},
        {"iss with a trailing slash", both, "\"iss\":\"" ISSUER "/\",\"aud\":\"" AUDIENCE "\"",
         JWT_BAD_ISSUER},
        {"no iss", both, "\"aud\":\"" AUDIENCE "\"", JWT_BAD_ISSUER},
        {"iss not a string", both, "\"iss\":7,\"aud\":\"" AUDIENCE "\"", JWT_BAD_ISSUER},
        {"wrong aud string", both, "\"iss\":\"" ISSUER "\",\"aud\":\"chatflow-admin\"",
         JWT_BAD_AUDIENCE},
        {"aud array without ours", both, "\"iss\":\"" ISSUER "\",\"aud\":[\"a\",\"b\"]",
         JWT_BAD_AUDIENCE},
        {"empty aud array", both, "\"iss\":\"" ISSUER "\",\"aud\":[]", JWT_BAD_AUDIENCE},
        {"aud array with a number", both, "\"iss\":\"" ISSUER "\",\"aud\":[\"" AUDIENCE "\",5]",
         JWT_BAD_AUDIENCE},
        {"aud an object", both, "\"iss\":\"" ISSUER "\",\"aud\":{\"x\":1}", JWT_BAD_AUDIENCE},
        {"no aud", both, "\"iss\":\"" ISSUER "\"", JWT_BAD_AUDIENCE},
        {"nothing configured, no iss or aud", none, "\"iss\":\"anyone\"", JWT_OK},
        {"no audience configured, token has one", none, "\"aud\":\"" AUDIENCE "\"",
         JWT_BAD_AUDIENCE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = fmt("{\"sub\":\"1\",\"exp\":%lld,%s}", e, cases[i].extra);
        CHECK_CODE(hs_claims(cases[i].v, p), cases[i].want, "%s", cases[i].what);
        free(p);
    }
    jwt_verifier_free(both);
    jwt_verifier_free(none);
}

static void test_identity(void)
{
    jwt_verifier *v = verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, -1});
    long long e = NOW + 600;
    struct {
        const char *extra;
        jwt_error want;
        const char *username;
        const char *what;
    } cases[] = {
        {"\"sub\":\"u-1\",\"name\":\"Alice A.\",\"preferred_username\":\"alice\"", JWT_OK,
         "Alice A.", "name comes before preferred_username"},
        {"\"sub\":\"u-1\",\"preferred_username\":\"alice\"", JWT_OK, "alice",
         "preferred_username when there is no name"},
        {"\"sub\":\"u-1\",\"name\":\"\",\"preferred_username\":\"bob\"", JWT_OK, "bob",
         "an empty name falls back to preferred_username"},
        {"\"sub\":\"u-1\"", JWT_OK, "", "neither: username empty"},
        {"\"name\":\"alice\"", JWT_BAD_CLAIM, NULL, "no sub"},
        {"\"sub\":\"\"", JWT_BAD_CLAIM, NULL, "empty sub"},
        {"\"sub\":42", JWT_BAD_CLAIM, NULL, "sub a number"},
        {"\"sub\":\"a\\nb\"", JWT_BAD_CLAIM, NULL, "sub with a newline"},
        {"\"sub\":\"u\",\"name\":[\"x\"]", JWT_BAD_CLAIM, NULL, "name an array"},
        {"\"sub\":\"u\",\"name\":\"a\\u0007b\"", JWT_BAD_CLAIM, NULL, "name with a control char"},
        {"\"sub\":\"u\",\"name\":\"\\u0000\"", JWT_MALFORMED, NULL, "name with a NUL (JSON)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = fmt("{\"exp\":%lld,%s}", e, cases[i].extra);
        char *t = hs_token(HS_HEADER, p);
        jwt_claims c;
        jwt_error rc = verify(v, t, &c);
        CHECK_CODE(rc, cases[i].want, "%s", cases[i].what);
        if (cases[i].username)
            CHECK_STR(c.username, cases[i].username, "%s: username", cases[i].what);
        jwt_claims_free(&c);
        free(t);
        free(p);
    }
    char sub[JWT_SUB_MAX + 2];
    memset(sub, 'x', sizeof sub - 1);
    sub[sizeof sub - 1] = '\0';
    char *p = fmt("{\"exp\":%lld,\"sub\":\"%s\"}", e, sub);
    CHECK_CODE(hs_claims(v, p), JWT_BAD_CLAIM, "sub of %d bytes", JWT_SUB_MAX + 1);
    free(p);
    sub[JWT_SUB_MAX] = '\0';
    p = fmt("{\"exp\":%lld,\"sub\":\"%s\"}", e, sub);
    CHECK_CODE(hs_claims(v, p), JWT_OK, "sub of %d bytes", JWT_SUB_MAX);
    free(p);
    jwt_verifier_free(v);
}

/* An issuer whose sub is not the ChatFlow userId (Cognito: a UUID) names another claim. */
static void test_user_id_claim(void)
{
    jwt_verifier *v =
        verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, -1, "custom:chatflow_user_id"});
    long long e = NOW + 600;
    char *p = fmt("{\"exp\":%lld,\"sub\":\"6f1c2a9e-0000-4000-8000-000000000001\","
                  "\"custom:chatflow_user_id\":\"4242\",\"name\":\"alice\"}",
                  e);
    char *t = hs_token(HS_HEADER, p);
    jwt_claims c;
    CHECK_CODE(verify(v, t, &c), JWT_OK, "user id claim: accepted");
    CHECK_STR(c.sub, "4242", "user id claim: the userId is that claim, not sub");
    jwt_claims_free(&c);
    free(t);
    free(p);
    p = fmt("{\"exp\":%lld,\"sub\":\"4242\"}", e);
    t = hs_token(HS_HEADER, p);
    char reason[JWT_REASON_BUF];
    jwt_error rc = jwt_verify(v, t, strlen(t), &c, reason, sizeof reason);
    CHECK_CODE(rc, JWT_BAD_CLAIM, "user id claim: a token without it is refused, sub or not");
    CHECK(strstr(reason, "custom:chatflow_user_id") != NULL, "the reason names the claim: %s",
          reason);
    jwt_claims_free(&c);
    free(t);
    free(p);
    jwt_verifier_free(v);
}

static void test_rooms(void)
{
    jwt_verifier *v = verifier((vopts){JWT_ALG_HS256, NULL, NULL, NULL, -1});
    long long e = NOW + 600;
    char *p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"rooms\":[\"7\",\"team-*\",\"a_b\"]}", e);
    char *t = hs_token(HS_HEADER, p);
    jwt_claims c;
    CHECK_CODE(verify(v, t, &c), JWT_OK, "rooms [7, team-*, a_b]: verifies");
    CHECK(c.rooms_limited && c.n_rooms == 3, "rooms claim kept: 3 entries (got %zu)", c.n_rooms);
    const char *allowed[] = {"7", "a_b", "team-alpha", "team-", "team-x_y-9"};
    const char *denied[] = {"8", "77", "team", "Team-alpha", "xteam-alpha", "a_bc", "a", ""};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        CHECK(jwt_claims_allow_room(&c, allowed[i]), "rooms [7, team-*, a_b] allow \"%s\"",
              allowed[i]);
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++)
        CHECK(!jwt_claims_allow_room(&c, denied[i]), "rooms [7, team-*, a_b] deny \"%s\"",
              denied[i]);
    char long_room[ROOM_ID_MAX + 2];
    memset(long_room, 'a', sizeof long_room - 1);
    long_room[sizeof long_room - 1] = '\0';
    CHECK(!jwt_claims_allow_room(&c, "team-a b") && !jwt_claims_allow_room(&c, NULL),
          "an invalid room id is never allowed, even under a pattern");
    jwt_claims_free(&c);
    free(t);
    free(p);

    /* No claim: every valid room, still no invalid one. */
    p = fmt("{\"sub\":\"1\",\"exp\":%lld}", e);
    t = hs_token(HS_HEADER, p);
    verify(v, t, &c);
    CHECK(jwt_claims_allow_room(&c, "anything-at_all") && !jwt_claims_allow_room(&c, long_room) &&
              !jwt_claims_allow_room(&c, "a/b"),
          "no rooms claim: every valid room, no invalid one (65 chars, a/b)");
    jwt_claims_free(&c);
    free(t);
    free(p);

    p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"rooms\":[]}", e);
    t = hs_token(HS_HEADER, p);
    CHECK_CODE(verify(v, t, &c), JWT_OK, "rooms []: verifies");
    CHECK(c.rooms_limited && !jwt_claims_allow_room(&c, "7"), "rooms []: no room allowed");
    jwt_claims_free(&c);
    free(t);
    free(p);

    /* Claims from a failed verification allow nothing. */
    p = fmt("{\"sub\":\"1\",\"exp\":%lld}", NOW - 3600);
    t = hs_token(HS_HEADER, p);
    CHECK_CODE(verify(v, t, &c), JWT_EXPIRED, "expired token for the rooms check");
    CHECK(!jwt_claims_allow_room(&c, "7") && c.sub[0] == '\0',
          "claims of a failed verification are empty and allow no room");
    free(t);
    free(p);

    /* Pattern prefixes of 63 characters (64 with the star) pass, 64 do not. */
    char prefix63[ROOM_ID_BUF], prefix64[ROOM_ID_BUF + 1], room64[ROOM_ID_BUF];
    memset(prefix63, 'p', 63);
    strcpy(prefix63 + 63, "*");
    memset(prefix64, 'p', 64);
    strcpy(prefix64 + 64, "*");
    memset(room64, 'p', 63);
    strcpy(room64 + 63, "x");
    struct {
        const char *rooms;
        jwt_error want;
        const char *what;
    } cases[] = {
        {"\"7\"", JWT_BAD_CLAIM, "rooms a string"},
        {"null", JWT_BAD_CLAIM, "rooms null"},
        {"[7]", JWT_BAD_CLAIM, "a room as a number"},
        {"[\"*\"]", JWT_BAD_CLAIM, "a bare *"},
        {"[\"team-**\"]", JWT_BAD_CLAIM, "two stars"},
        {"[\"x*y\"]", JWT_BAD_CLAIM, "a star inside"},
        {"[\"a b\"]", JWT_BAD_CLAIM, "a space"},
        {"[\"\"]", JWT_BAD_CLAIM, "an empty entry"},
        {"[\"ok\",\"bad/1\"]", JWT_BAD_CLAIM, "one bad entry among good ones"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"rooms\":%s}", e, cases[i].rooms);
        CHECK_CODE(hs_claims(v, p), cases[i].want, "rooms: %s", cases[i].what);
        free(p);
    }
    p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"rooms\":[\"%s\"]}", e, prefix63);
    t = hs_token(HS_HEADER, p);
    CHECK_CODE(verify(v, t, &c), JWT_OK, "a 63-character prefix pattern");
    CHECK(jwt_claims_allow_room(&c, room64) && !jwt_claims_allow_room(&c, "p"),
          "the 63-character prefix allows a 64-character room under it, not \"p\"");
    jwt_claims_free(&c);
    free(t);
    free(p);
    p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"rooms\":[\"%s\"]}", e, prefix64);
    CHECK_CODE(hs_claims(v, p), JWT_BAD_CLAIM, "a 64-character prefix pattern (65 with the star)");
    free(p);

    /* JWT_ROOMS_MAX entries pass, one more does not. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = JWT_ROOMS_MAX + (size_t)extra;
        char *list = strdup("\"r0\"");
        for (size_t i = 1; i < n; i++) {
            char *grown = fmt("%s,\"r%zu\"", list, i);
            free(list);
            list = grown;
        }
        p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"rooms\":[%s]}", e, list);
        t = hs_token(HS_HEADER, p);
        jwt_error rc = verify(v, t, &c);
        if (extra == 0) {
            CHECK_CODE(rc, JWT_OK, "%zu rooms", n);
            CHECK(jwt_claims_allow_room(&c, "r255") && !jwt_claims_allow_room(&c, "r256"),
                  "%zu rooms: the last one allowed, no other", n);
        } else {
            CHECK_CODE(rc, JWT_BAD_CLAIM, "%zu rooms", n);
        }
        jwt_claims_free(&c);
        free(t);
        free(p);
        free(list);
    }
    jwt_verifier_free(v);
}

static void test_malformed(void)
{
    jwks_source *src = static_keys();
    jwt_verifier *v =
        verifier((vopts){JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    char *payload = claims();
    char *good = hs_token(HS_HEADER, payload);
    char *first_dot = strchr(good, '.'), *last_dot = strrchr(good, '.');
    int hdr_len = (int)(first_dot - good);

    CHECK_CODE(jwt_verify(v, NULL, 0, NULL, last_reason, sizeof last_reason), JWT_MALFORMED,
               "NULL token");
    CHECK_CODE(verify(v, "", NULL), JWT_MALFORMED, "empty token");
    struct {
        char *token;
        jwt_error want;
        const char *what;
    } cases[] = {
        {fmt("%.*s", (int)(last_dot - good), good), JWT_MALFORMED, "signature part missing"},
        {fmt("%.*s", hdr_len + 5, good), JWT_MALFORMED, "truncated inside the payload"},
        {fmt("%.*s", hdr_len, good), JWT_MALFORMED, "header only"},
        {fmt("%.*s", (int)strlen(good) - 3, good), JWT_BAD_SIGNATURE,
         "signature truncated to 40 characters (30 bytes)"},
        {fmt("%.*s", (int)strlen(good) - 2, good), JWT_MALFORMED,
         "signature truncated to 41 characters (an impossible base64url length)"},
        {fmt("%s.e30", good), JWT_MALFORMED, "4 parts"},
        {fmt("%.*s..%s", hdr_len, good, last_dot + 1), JWT_MALFORMED, "empty payload"},
        {fmt(".%s", first_dot + 1), JWT_MALFORMED, "empty header"},
        {fmt("%.*s+%s", hdr_len - 1, good, first_dot), JWT_MALFORMED, "a '+' (base64, not url)"},
        {fmt("%.*s=%s", hdr_len - 1, good, first_dot), JWT_MALFORMED, "a '=' in the header"},
        {fmt("%s=", good), JWT_MALFORMED, "padding on the signature"},
        {fmt("%.*s %s", hdr_len - 1, good, first_dot), JWT_MALFORMED, "a space"},
        {fmt("AAAAA=%s", first_dot), JWT_MALFORMED, "AAAAA= header (aborts cjose's decoder)"},
        {fmt("AAAAAA%s", first_dot), JWT_MALFORMED, "header of 4 zero bytes (not JSON)"},
        {fmt("W10%s", first_dot), JWT_MALFORMED, "header [] (not an object)"},
        {fmt("Bearer %s", good), JWT_MALFORMED, "a Bearer prefix left on"},
        {fmt("%s\n", good), JWT_MALFORMED, "a trailing newline"},
        {tl_jwt_raw("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, "c2ln"), JWT_MALFORMED,
         "duplicate alg in the header"},
        {hs_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", payload), JWT_MALFORMED,
         "a crit header"},
        {hs_token("{\"alg\":\"HS256\",\"kid\":7}", payload), JWT_MALFORMED, "kid a number"},
        {hs_token(HS_HEADER, "[1,2]"), JWT_MALFORMED, "payload a JSON array"},
        {hs_token(HS_HEADER, "not json"), JWT_MALFORMED, "payload not JSON"},
        {hs_token(HS_HEADER, "{\"sub\":\"1\",\"sub\":\"2\",\"exp\":1800000000}"), JWT_MALFORMED,
         "duplicate sub in the payload"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CODE(verify(v, cases[i].token, NULL), cases[i].want, "%s", cases[i].what);
        if (i == 0)
            CHECK(strstr(last_reason, "3 dot-separated parts") != NULL,
                  "2 parts: the reason says 3 are needed (%s)", last_reason);
        free(cases[i].token);
    }

    /* Non-canonical base64url: the last character of a 43-character HS256 signature carries 2
     * unused bits; setting them keeps the same bytes in cjose's eyes. */
    char *alias = strdup(good);
    char *end = alias + strlen(alias) - 1;
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t val = (size_t)(strchr(alpha, *end) - alpha);
    *end = alpha[val ^ 1];
    CHECK_CODE(verify(v, alias, NULL), JWT_MALFORMED,
               "signature differing only in unused base64url bits");
    free(alias);

    /* A NUL inside: the length says more than strlen would. */
    char *with_nul = strdup(good);
    size_t glen = strlen(good);
    with_nul[10] = '\0';
    CHECK_CODE(jwt_verify(v, with_nul, glen, NULL, last_reason, sizeof last_reason), JWT_MALFORMED,
               "a NUL byte inside the token");
    free(with_nul);

    /* Size: JWT_MAX_TOKEN bytes are parsed, one more is not; 1 MiB is refused unread. */
    char *big = malloc(1 << 20);
    memset(big, 'A', 1 << 20);
    CHECK_CODE(jwt_verify(v, big, 1 << 20, NULL, last_reason, sizeof last_reason), JWT_TOO_LARGE,
               "a 1 MiB token");
    CHECK(strstr(last_reason, "8192") != NULL, "the size reason names the limit (%s)", last_reason);
    CHECK_CODE(jwt_verify(v, big, JWT_MAX_TOKEN + 1, NULL, last_reason, sizeof last_reason),
               JWT_TOO_LARGE, "a token of JWT_MAX_TOKEN + 1 bytes");
    CHECK_CODE(jwt_verify(v, big, JWT_MAX_TOKEN, NULL, last_reason, sizeof last_reason),
               JWT_MALFORMED, "a token of JWT_MAX_TOKEN bytes is parsed (and is not 3 parts)");
    /* A real signed token just under the limit, with a long claim. */
    char *filler = malloc(6000);
    memset(filler, 'f', 5999);
    filler[5999] = '\0';
    char *p = fmt("{\"sub\":\"1\",\"exp\":%lld,\"x\":\"%s\"}", NOW + 60, filler);
    char *large = hs_token(HS_HEADER, p);
    CHECK(strlen(large) <= JWT_MAX_TOKEN, "the large token is %zu bytes", strlen(large));
    CHECK_CODE(verify(v, large, NULL), JWT_OK, "a valid token of %zu bytes", strlen(large));
    free(large);
    free(p);
    free(filler);
    free(big);

    /* A kid with quotes and control characters shows up cut to printable ASCII. */
    char *odd_kid = tl_jwt_raw("{\"alg\":\"RS256\",\"kid\":\"k\\\"\\n\\u00e9x\"}", payload, "c2ln");
    CHECK_CODE(verify(v, odd_kid, NULL), JWT_UNKNOWN_KEY, "an unknown kid with odd characters");
    CHECK(!strchr(last_reason, '\n') && strstr(last_reason, "k??") != NULL,
          "the reason shows the kid as printable ASCII (%s)", last_reason);
    free(odd_kid);
    char *no_kid = tl_jwt_raw("{\"alg\":\"RS256\"}", payload, "c2ln");
    CHECK_CODE(verify(v, no_kid, NULL), JWT_UNKNOWN_KEY, "RS256 without a kid");
    free(no_kid);

    free(good);
    free(payload);
    jwt_verifier_free(v);
    jwks_source_free(src);
}

static void test_error_names(void)
{
    CHECK_STR(jwt_error_name(JWT_OK), "ok", "jwt_error_name(JWT_OK)");
    CHECK_STR(jwt_error_name(JWT_BAD_SIGNATURE), "bad_signature", "jwt_error_name(BAD_SIGNATURE)");
    CHECK_STR(jwt_error_name(JWT_NOT_YET_VALID), "not_yet_valid", "jwt_error_name(NOT_YET_VALID)");
    CHECK_STR(jwt_error_name(JWT_INTERNAL), "internal", "jwt_error_name(INTERNAL)");
    CHECK_STR(jwt_error_name((jwt_error)99), "unknown", "jwt_error_name(99)");
    CHECK_INT(JWT_BAD_AUDIENCE, 9, "the error codes keep their numbers (JWT_BAD_AUDIENCE = 9)");
}

/* ------------------------------------------------------------------ JWK sets */

static void test_jwks_parse(void)
{
    test_key ec_priv = make_ec(CJOSE_JWK_EC_P_256, "priv");
    char *private_json = cjose_jwk_to_json(ec_priv.priv, true, NULL);
    char *rsa_enc = strdup(RSA2.pub_json);
    /* {"kty":"RSA","kid":"r2",...} -> add use enc right after the opening brace */
    char *use_enc = fmt("{\"use\":\"enc\",%s", rsa_enc + 1);
    char *alg_rs512 = fmt("{\"alg\":\"RS512\",%s", RSA2.pub_json + 1);
    char *use_sig = fmt("{\"use\":\"sig\",\"alg\":\"ES256\",%s", EC1.pub_json + 1);
    char *rsa2_dup = strdup(RSA2.pub_json);
    char *json = fmt("{\"keys\":[%s,%s,"
                     "{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"},"
                     "%s,%s,%s,%s,"
                     "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
                     "%s,%s,%s,"
                     "{\"kty\":\"RSA\",\"kid\":\"crash\",\"n\":\"AAAAA=\",\"e\":\"AQAB\"},"
                     "{\"kty\":\"EC\",\"kid\":\"offcurve\",\"crv\":\"P-256\","
                     "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                     "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"},"
                     "17,{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}",
                     RSA1.pub_json, use_sig, EC_P384.pub_json, use_enc, alg_rs512, private_json,
                     RSA_WEAK.pub_json, rsa2_dup, RSA2.pub_json);
    jwks_load_info info;
    char err[JWKS_ERR_BUF] = "";
    jwks *set = jwks_parse(json, strlen(json), &info, err, sizeof err);
    CHECK(set != NULL, "a mixed JWK set parses (%s)", err);
    CHECK_INT(info.loaded, 3, "usable keys: r1, e1 (use sig, alg ES256), r2 (%s)", info.first_skip);
    CHECK_INT(info.skipped, 12, "skipped keys counted");
    CHECK_INT(info.by_reason[JWKS_SKIP_KTY], 2, "skipped for kty: oct, OKP");
    CHECK_INT(info.by_reason[JWKS_SKIP_CURVE], 1, "skipped for curve: P-384");
    CHECK_INT(info.by_reason[JWKS_SKIP_USE], 1, "skipped for use: enc");
    CHECK_INT(info.by_reason[JWKS_SKIP_ALG], 1, "skipped for alg: RS512 on an RSA key");
    CHECK_INT(info.by_reason[JWKS_SKIP_PRIVATE], 1, "skipped for private material");
    CHECK_INT(info.by_reason[JWKS_SKIP_KEY_SIZE], 1, "skipped for size: RSA-1024");
    CHECK_INT(info.by_reason[JWKS_SKIP_NO_KID], 1, "skipped for no kid");
    CHECK_INT(info.by_reason[JWKS_SKIP_DUP_KID], 1, "skipped as a duplicate kid (r2 twice)");
    CHECK_INT(info.by_reason[JWKS_SKIP_INVALID], 3,
              "skipped as invalid: AAAAA= modulus, point off the curve, a number");
    CHECK(strstr(info.first_skip, "key 2") && strstr(info.first_skip, "oct"),
          "first_skip names the first skipped key (%s)", info.first_skip);
    CHECK_STR(jwks_skip_reason_name(JWKS_SKIP_DUP_KID), "duplicate_kid", "skip reason name");
    const jwks_key *r1 = jwks_find(set, "r1"), *e1 = jwks_find(set, "e1"),
                   *r2 = jwks_find(set, "r2");
    CHECK(r1 && r1->type == JWKS_KEY_RSA && r1->rsa_bytes == 256, "r1 is an RSA key of 256 bytes");
    CHECK(e1 && e1->type == JWKS_KEY_EC_P256 && e1->rsa_bytes == 0, "e1 is an EC P-256 key");
    CHECK(r2 && jwks_count(set) == 3, "r2 is there, once: 3 keys");
    CHECK(!jwks_find(set, "h") && !jwks_find(set, "priv") && !jwks_find(set, "nope") &&
              !jwks_find(set, NULL),
          "skipped and unknown kids are not found");
    jwks_release(set);

    const char *bad[] = {
        "", "[]", "{\"keys\":{}}", "{\"nokeys\":[]}", "{\"keys\":[] ", "{\"keys\":[],\"keys\":[]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set = jwks_parse(bad[i], strlen(bad[i]), &info, err, sizeof err);
        CHECK(!set && err[0], "not a JWK set: '%s' refused (%s)", bad[i], err);
        jwks_release(set);
    }
    set = jwks_parse("{\"keys\":[]}", 11, &info, err, sizeof err);
    CHECK(set && jwks_count(set) == 0 && info.loaded == 0, "an empty set is a set");
    jwks_release(set);
    char *huge = calloc(1, JWKS_MAX_BYTES + 2);
    memset(huge, ' ', JWKS_MAX_BYTES + 1);
    memcpy(huge, "{\"keys\":[]}", 11);
    set = jwks_parse(huge, JWKS_MAX_BYTES + 1, &info, err, sizeof err);
    CHECK(!set && strstr(err, "larger"), "a set over JWKS_MAX_BYTES is refused (%s)", err);
    free(huge);

    /* More than JWKS_MAX_KEYS usable keys: the rest counted as too_many. */
    char *many = strdup("{\"keys\":[");
    for (int i = 0; i < JWKS_MAX_KEYS + 2; i++) {
        char *k = fmt("{\"kty\":\"EC\",\"kid\":\"k%d\",%s", i, strstr(EC1.pub_json, "\"crv\""));
        char *grown = fmt("%s%s%s", many, i ? "," : "", k);
        free(many);
        free(k);
        many = grown;
    }
    char *closed = fmt("%s]}", many);
    set = jwks_parse(closed, strlen(closed), &info, err, sizeof err);
    CHECK(set && info.loaded == JWKS_MAX_KEYS && info.by_reason[JWKS_SKIP_TOO_MANY] == 2,
          "%d keys: %d loaded, 2 too many (loaded %zu)", JWKS_MAX_KEYS + 2, JWKS_MAX_KEYS,
          info.loaded);
    jwks_release(set);
    free(closed);
    free(many);

    free(json);
    free(rsa2_dup);
    free(use_sig);
    free(alg_rs512);
    free(use_enc);
    free(rsa_enc);
    free(private_json);
    free_key(&ec_priv);
}

/* ------------------------------------------------------------------ refresh */

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[128], tmp[140];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    rename(tmp, path); /* a fetch never sees half a file */
}

static void write_set(const char *name, const char *k1, const char *k2)
{
    char *json = k2 ? fmt("{\"keys\":[%s,%s]}", k1, k2) : fmt("{\"keys\":[%s]}", k1);
    write_file(name, json);
    free(json);
}

static int64_t clock_now_ms = 1000000;
static int64_t test_clock(void *ctx) { return *(const int64_t *)ctx; }

static uint64_t fetches(jwks_source *s)
{
    jwks_source_stats st;
    jwks_source_get_stats(s, &st);
    return st.fetches;
}

/* Rotation against a source at url (file:// or http://): r1 to r1+r2 to r2. */
static void check_rotation(const char *url, const char *label, int (*server_hits)(void))
{
    write_set("jwks.json", RSA1.pub_json, NULL);
    jwks_source_config cfg = {.url = url, .clock_ms = test_clock, .clock_ctx = &clock_now_ms};
    char err[JWKS_ERR_BUF] = "";
    jwks_source *src = jwks_source_new(&cfg, err, sizeof err);
    CHECK(src != NULL, "%s: source created (%s)", label, err);
    if (!src) return;
    jwt_verifier *v = verifier((vopts){JWT_ALG_RS256, src, NULL, NULL, -1});
    int hits0 = server_hits ? server_hits() : 0;
    char *payload = claims();
    char *t1 = sign_cjose(&RSA1, "RS256", "r1", payload);
    char *t2 = sign_cjose(&RSA2, "RS256", "r2", payload);
    CHECK_CODE(verify(v, t1, NULL), JWT_OK, "%s: r1 token verifies", label);

    write_set("jwks.json", RSA1.pub_json, RSA2.pub_json); /* the issuer rotates in r2 */
    CHECK_CODE(verify(v, t2, NULL), JWT_UNKNOWN_KEY, "%s: r2 token right after the first fetch",
               label);
    for (int i = 0; i < 20; i++) verify(v, t2, NULL);
    clock_now_ms += 59 * 1000;
    CHECK_CODE(verify(v, t2, NULL), JWT_UNKNOWN_KEY, "%s: r2 token 59 s later", label);
    CHECK_INT(fetches(src), 1, "%s: 22 unknown-kid tokens within 60 s: no second fetch", label);
    clock_now_ms += 1000;
    CHECK_CODE(verify(v, t2, NULL), JWT_OK, "%s: r2 token once 60 s have passed (refreshed)",
               label);
    CHECK_INT(fetches(src), 2, "%s: one refresh", label);
    CHECK_CODE(verify(v, t1, NULL), JWT_OK, "%s: r1 still verifies", label);

    /* A made-up kid right after a refresh costs nothing; a failed fetch keeps the set. */
    char *t3 = sign_cjose(&RSA1, "RS256", "r3", payload);
    for (int i = 0; i < 10; i++) verify(v, t3, NULL);
    CHECK_INT(fetches(src), 2, "%s: unknown kid r3 right after a refresh: no fetch", label);
    write_file("jwks.json", "<html>not json</html>");
    clock_now_ms += 60 * 1000;
    CHECK_CODE(verify(v, t3, NULL), JWT_UNKNOWN_KEY, "%s: r3 after a failed refresh", label);
    jwks_source_stats st;
    jwks_source_get_stats(src, &st);
    CHECK(st.fetches == 3 && st.failures == 1 && st.keys == 2 && st.last_error[0],
          "%s: the failed fetch is counted and the old 2 keys kept (%s)", label, st.last_error);
    CHECK_CODE(verify(v, t2, NULL), JWT_OK, "%s: r2 still verifies after the failed fetch", label);
    for (int i = 0; i < 5; i++) verify(v, t3, NULL);
    CHECK_INT(fetches(src), 3, "%s: no retry within the interval after a failure", label);

    /* r1 retired: the next refresh drops it. */
    write_set("jwks.json", RSA2.pub_json, NULL);
    char rerr[JWKS_ERR_BUF] = "";
    CHECK(jwks_source_refresh_now(src, rerr, sizeof rerr), "%s: refresh_now ignores the interval",
          label);
    CHECK_CODE(verify(v, t1, NULL), JWT_UNKNOWN_KEY, "%s: r1 token after r1 left the set", label);
    CHECK_CODE(verify(v, t2, NULL), JWT_OK, "%s: r2 token after r1 left the set", label);
    if (server_hits)
        CHECK_INT(server_hits() - hits0, 3, "%s: the server saw exactly 3 more GETs", label);
    free(t1);
    free(t2);
    free(t3);
    free(payload);
    jwt_verifier_free(v);
    jwks_source_free(src);
}

static void test_rotation_file(void)
{
    char url[128];
    snprintf(url, sizeof url, "file://%s/jwks.json", tmpdir);
    check_rotation(url, "file://", NULL);
}

/* The HTTP server: serves tmpdir/jwks.json, or 404 for anything else; counts requests; can hold
 * each answer for a while (the concurrency case). */
static struct {
    pthread_mutex_t lock;
    int requests;
    int delay_ms;
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int server_hits(void)
{
    pthread_mutex_lock(&srv.lock);
    int n = srv.requests;
    pthread_mutex_unlock(&srv.lock);
    return n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls, (void)method, (void)version, (void)upload, (void)upload_size, (void)con_cls;
    pthread_mutex_lock(&srv.lock);
    srv.requests++;
    int delay_ms = srv.delay_ms;
    pthread_mutex_unlock(&srv.lock);
    if (delay_ms) usleep((useconds_t)delay_ms * 1000);
    char path[128];
    snprintf(path, sizeof path, "%s/jwks.json", tmpdir);
    char *body = NULL;
    unsigned status = 404;
    FILE *f = strcmp(url, "/jwks.json") == 0 ? fopen(path, "r") : NULL;
    if (f) {
        body = calloc(1, JWKS_MAX_BYTES + 2);
        size_t n = fread(body, 1, JWKS_MAX_BYTES + 1, f);
        body[n] = '\0';
        fclose(f);
        status = 200;
    }
    const char *text = body ? body : "not found";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    free(body);
    return ret;
}

static struct MHD_Daemon *server_start(int *port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL,
                         NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_END);
    if (d) *port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return d;
}

typedef struct {
    jwt_verifier *v;
    const char *token;
    jwt_error rc;
} verify_job;

static void *verify_thread(void *arg)
{
    verify_job *j = arg;
    j->rc = jwt_verify(j->v, j->token, strlen(j->token), NULL, NULL, 0);
    return NULL;
}

static void test_http_source(int port)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks.json", port);
    check_rotation(url, "http://127.0.0.1", server_hits);

    char err[JWKS_ERR_BUF] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/missing.json", port);
    jwks_source_config cfg = {.url = url};
    jwks_source *src = jwks_source_new(&cfg, err, sizeof err);
    CHECK(!src && strstr(err, "404"), "a 404 at creation fails it (%s)", err);
    jwks_source_free(src);

    /* Eight threads meet a new kid at once while the server takes 300 ms: one fetch, and all
     * eight see its result. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks.json", port);
    write_set("jwks.json", RSA1.pub_json, NULL);
    cfg = (jwks_source_config){.url = url, .clock_ms = test_clock, .clock_ctx = &clock_now_ms};
    src = jwks_source_new(&cfg, err, sizeof err);
    jwt_verifier *v = verifier((vopts){JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    write_set("jwks.json", RSA1.pub_json, EC1.pub_json);
    clock_now_ms += 61 * 1000;
    pthread_mutex_lock(&srv.lock);
    srv.delay_ms = 300;
    pthread_mutex_unlock(&srv.lock);
    int before = server_hits();
    char *payload = claims();
    char *t = sign_cjose(&EC1, "ES256", "e1", payload);
    verify_job jobs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (verify_job){.v = v, .token = t};
        pthread_create(&th[i], NULL, verify_thread, &jobs[i]);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ok += jobs[i].rc == JWT_OK;
    }
    pthread_mutex_lock(&srv.lock);
    srv.delay_ms = 0;
    pthread_mutex_unlock(&srv.lock);
    CHECK_INT(ok, 8, "8 threads with the new kid e1 at once: all verify");
    CHECK_INT(server_hits() - before, 1, "8 threads with the new kid: one GET");
    free(t);
    jwt_verifier_free(v);
    jwks_source_free(src);

    /* Background refresh: the caller never waits for the key server. With the server taking
     * 300 ms, a token with a new kid is refused at once (unknown key), the refresher fetches on
     * its own thread, and the same token verifies once that fetch landed. */
    write_set("jwks.json", RSA1.pub_json, NULL);
    err[0] = '\0';
    cfg = (jwks_source_config){
        .url = url, .clock_ms = test_clock, .clock_ctx = &clock_now_ms, .background = true};
    src = jwks_source_new(&cfg, err, sizeof err);
    CHECK(src != NULL, "a background source starts (%s)", err);
    v = verifier((vopts){JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    write_set("jwks.json", RSA1.pub_json, EC1.pub_json);
    clock_now_ms += 61 * 1000;
    pthread_mutex_lock(&srv.lock);
    srv.delay_ms = 300;
    pthread_mutex_unlock(&srv.lock);
    before = server_hits();
    t = sign_cjose(&EC1, "ES256", "e1", payload);
    uint64_t t0 = time_mono_ns();
    jwt_error first = jwt_verify(v, t, strlen(t), NULL, NULL, 0);
    uint64_t waited_ms = (time_mono_ns() - t0) / 1000000;
    CHECK_INT(first, JWT_UNKNOWN_KEY, "background: a new kid is refused at once");
    CHECK(waited_ms < 250, "background: the caller did not wait for the 300 ms fetch (%llu ms)",
          (unsigned long long)waited_ms);
    jwt_error later = JWT_UNKNOWN_KEY;
    for (int i = 0; i < 100 && later != JWT_OK; i++) {
        time_sleep_ms(20);
        later = jwt_verify(v, t, strlen(t), NULL, NULL, 0);
    }
    CHECK_INT(later, JWT_OK, "background: the same token verifies once the refresher fetched");
    CHECK_INT(server_hits() - before, 1, "background: one GET for the new kid");
    pthread_mutex_lock(&srv.lock);
    srv.delay_ms = 0;
    pthread_mutex_unlock(&srv.lock);
    free(t);
    free(payload);
    jwt_verifier_free(v);
    jwks_source_free(src);
}

static void test_source_config(void)
{
    const char *refused[] = {"http://example.com/jwks.json", "http://10.0.0.1/jwks.json",
                             "ftp://127.0.0.1/jwks.json", "jwks.json", ""};
    const char *why[] = {"loopback", "loopback", "scheme", "URL", "not set"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char err[JWKS_ERR_BUF] = "";
        jwks_source_config cfg = {.url = refused[i]};
        jwks_source *s = jwks_source_new(&cfg, err, sizeof err);
        CHECK(!s && strstr(err, why[i]), "JWKS URL '%s' refused (%s)", refused[i], err);
        jwks_source_free(s);
    }
    char err[JWKS_ERR_BUF] = "";
    char url[128];
    snprintf(url, sizeof url, "file://%s/absent.json", tmpdir);
    jwks_source_config cfg = {.url = url};
    jwks_source *s = jwks_source_new(&cfg, err, sizeof err);
    CHECK(!s && err[0], "a missing file at creation fails it (%s)", err);
    jwks_source_free(s);

    char *huge = malloc(JWKS_MAX_BYTES + 100);
    memset(huge, ' ', JWKS_MAX_BYTES + 99);
    memcpy(huge, "{\"keys\":[]}", 11);
    huge[JWKS_MAX_BYTES + 99] = '\0';
    write_file("huge.json", huge);
    free(huge);
    snprintf(url, sizeof url, "file://%s/huge.json", tmpdir);
    s = jwks_source_new(&cfg, err, sizeof err);
    CHECK(!s && strstr(err, "larger"), "a set over JWKS_MAX_BYTES at the URL fails (%s)", err);
    jwks_source_free(s);

    /* https:// passes the URL check (the fetch then fails: nothing listens on port 1). */
    cfg.url = "https://127.0.0.1:1/jwks.json";
    s = jwks_source_new(&cfg, err, sizeof err);
    CHECK(!s && !strstr(err, "loopback") && !strstr(err, "scheme") && strstr(err, "GET"),
          "https:// is allowed; its fetch fails on a closed port (%s)", err);
    jwks_source_free(s);

    /* A server that takes the connection and never answers: the fetch ends at timeout_ms. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    listen(fd, 4);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks.json", ntohs(a.sin_port));
    cfg = (jwks_source_config){.url = url, .timeout_ms = 300};
    uint64_t t0 = time_mono_ns();
    s = jwks_source_new(&cfg, err, sizeof err);
    double took_ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(!s && took_ms >= 250 && took_ms < 3000,
          "a server that never answers: the fetch gives up after ~300 ms (%.0f ms: %s)", took_ms,
          err);
    jwks_source_free(s);
    close(fd);

    /* jwks_load_file and a static source. */
    write_set("static.json", EC1.pub_json, RSA1.pub_json);
    char path[128];
    snprintf(path, sizeof path, "%s/static.json", tmpdir);
    jwks_load_info info;
    jwks *set = jwks_load_file(path, &info, err, sizeof err);
    CHECK(set && info.loaded == 2, "jwks_load_file reads 2 keys (%s)", err);
    jwks_source *st = jwks_source_new_static(set);
    jwks *got = jwks_source_refresh_unknown_kid(st);
    CHECK(got == set && fetches(st) == 0, "a static source never fetches");
    jwks_release(got);
    CHECK(jwks_source_refresh_now(st, err, sizeof err),
          "refresh_now on a static source is a no-op");
    jwks_source_free(st);
    snprintf(path, sizeof path, "%s/none.json", tmpdir);
    set = jwks_load_file(path, &info, err, sizeof err);
    CHECK(!set && strstr(err, "cannot open"), "jwks_load_file of a missing file (%s)", err);
}

/* Verifiers on several threads while the set is swapped under them (file:// refresh_now). */
typedef struct {
    jwt_verifier *v;
    char *tokens[3];
    int ok;
} hammer_job;

static void *hammer(void *arg)
{
    hammer_job *j = arg;
    for (int i = 0; i < 150; i++) {
        const char *t = j->tokens[i % 3];
        j->ok += jwt_verify(j->v, t, strlen(t), NULL, NULL, 0) == JWT_OK;
    }
    return NULL;
}

static void test_concurrent_refresh(void)
{
    char url[128];
    snprintf(url, sizeof url, "file://%s/jwks.json", tmpdir);
    write_set("jwks.json", RSA1.pub_json, EC1.pub_json);
    jwks_source_config cfg = {.url = url};
    char err[JWKS_ERR_BUF] = "";
    jwks_source *src = jwks_source_new(&cfg, err, sizeof err);
    jwt_verifier *v =
        verifier((vopts){JWT_ALG_HS256 | JWT_ALG_RS256 | JWT_ALG_ES256, src, NULL, NULL, -1});
    char *payload = claims();
    hammer_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (hammer_job){.v = v};
        jobs[i].tokens[0] = sign_cjose(&RSA1, "RS256", "r1", payload);
        jobs[i].tokens[1] = sign_cjose(&EC1, "ES256", "e1", payload);
        jobs[i].tokens[2] = hs_token(HS_HEADER, payload);
        pthread_create(&th[i], NULL, hammer, &jobs[i]);
    }
    int refreshed = 0;
    for (int i = 0; i < 30; i++) refreshed += jwks_source_refresh_now(src, err, sizeof err);
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += jobs[i].ok;
        for (int k = 0; k < 3; k++) free(jobs[i].tokens[k]);
    }
    CHECK_INT(refreshed, 30, "30 refreshes while 4 threads verify");
    CHECK_INT(ok, 600, "600 verifications on 4 threads across set swaps: all OK");
    free(payload);
    jwt_verifier_free(v);
    jwks_source_free(src);
}

static void remove_tmpdir(void)
{
    const char *names[] = {"jwks.json", "huge.json", "static.json"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

int main(void)
{
    RSA1 = make_rsa(2048, "r1");
    RSA2 = make_rsa(2048, "r2");
    RSA1_IMPOSTOR = make_rsa(2048, "r1");
    RSA_WEAK = make_rsa(1024, "weak");
    EC1 = make_ec(CJOSE_JWK_EC_P_256, "e1");
    EC_P384 = make_ec(CJOSE_JWK_EC_P_384, "p384");
    bool keys = RSA1.pub_json && RSA1.pem && RSA2.pub_json && RSA1_IMPOSTOR.pub_json &&
                RSA_WEAK.pub_json && EC1.pub_json && EC_P384.pub_json;
    CHECK(keys, "test keys generated (RSA-2048 x3, RSA-1024, EC P-256, EC P-384)");
    if (!keys) return TEST_DONE();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_jwt.XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL, "temporary folder %s", tmpdir);

    test_config();
    test_valid_tokens();
    test_bad_signature();
    test_alg_refused();
    test_times();
    test_issuer_audience();
    test_identity();
    test_user_id_claim();
    test_rooms();
    test_malformed();
    test_error_names();
    test_jwks_parse();
    test_source_config();
    test_rotation_file();
    int port = 0;
    struct MHD_Daemon *d = server_start(&port);
    CHECK(d != NULL, "HTTP server on 127.0.0.1:%d", port);
    if (d) {
        test_http_source(port);
        MHD_stop_daemon(d);
    }
    test_concurrent_refresh();
    CHECK_INT(unsafe_reasons, 0,
              "every failure reason was one non-empty line without the token or its signature");

    remove_tmpdir();
    test_key *all[] = {&RSA1, &RSA2, &RSA1_IMPOSTOR, &RSA_WEAK, &EC1, &EC_P384};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free_key(all[i]);
    return TEST_DONE();
}
