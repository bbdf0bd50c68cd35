/* tl_jwt — test tokens (contract in tl_jwt.h); the approach of test/unit/test_jwt.c. */
#include "tl_jwt.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h>

struct tl_jwt_key {
    cjose_jwk_t *priv;
    char kid[64];
};

char *tl_jwt_b64url(const void *data, size_t len)
{
    char *enc = NULL;
    size_t n = 0;
    if (!cjose_base64url_encode(data, len, &enc, &n, NULL)) return NULL;
    char *copy = strndup(enc, n);
    cjose_get_dealloc()(enc);
    return copy;
}

char *tl_jwt_raw(const char *header, const char *payload, const char *sig_b64)
{
    char *h = tl_jwt_b64url(header, strlen(header)), *p = tl_jwt_b64url(payload, strlen(payload));
    char *t = NULL;
    if (h && p && asprintf(&t, "%s.%s.%s", h, p, sig_b64) < 0) t = NULL;
    free(h);
    free(p);
    return t;
}

char *tl_jwt_hs256_raw(const void *key, size_t key_len, const char *header, const char *payload)
{
    char *input = tl_jwt_raw(header, payload, "");
    if (!input) return NULL;
    size_t n = strlen(input) - 1; /* without the trailing '.' */
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)input, n, mac, &mac_len);
    char *sig = tl_jwt_b64url(mac, mac_len);
    char *t = NULL;
    if (sig && asprintf(&t, "%.*s.%s", (int)n, input, sig) < 0) t = NULL;
    free(sig);
    free(input);
    return t;
}

char *tl_jwt_hs256(const char *secret, const char *payload)
{
    return tl_jwt_hs256_raw(secret, strlen(secret), "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload);
}

static uint8_t *bn_param(EVP_PKEY *pk, const char *name, size_t *len)
{
    BIGNUM *bn = NULL;
    *len = 0;
    if (!EVP_PKEY_get_bn_param(pk, name, &bn)) return NULL;
    *len = (size_t)BN_num_bytes(bn);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf) BN_bn2bin(bn, buf);
    BN_free(bn);
    return buf;
}

cjose_jwk_t *tl_jwt_rsa_jwk(EVP_PKEY *pk)
{
    cjose_jwk_rsa_keyspec s = {0};
    s.n = bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &s.nlen);
    s.e = bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &s.elen);
    s.d = bn_param(pk, OSSL_PKEY_PARAM_RSA_D, &s.dlen);
    s.p = bn_param(pk, OSSL_PKEY_PARAM_RSA_FACTOR1, &s.plen);
    s.q = bn_param(pk, OSSL_PKEY_PARAM_RSA_FACTOR2, &s.qlen);
    s.dp = bn_param(pk, OSSL_PKEY_PARAM_RSA_EXPONENT1, &s.dplen);
    s.dq = bn_param(pk, OSSL_PKEY_PARAM_RSA_EXPONENT2, &s.dqlen);
    s.qi = bn_param(pk, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, &s.qilen);
    cjose_jwk_t *jwk = cjose_jwk_create_RSA_spec(&s, NULL);
    uint8_t *parts[] = {s.n, s.e, s.d, s.p, s.q, s.dp, s.dq, s.qi};
    for (size_t i = 0; i < 8; i++) free(parts[i]);
    return jwk;
}

tl_jwt_key *tl_jwt_rsa_new(const char *kid)
{
    tl_jwt_key *k = calloc(1, sizeof *k);
    EVP_PKEY *pk = k ? EVP_RSA_gen(2048) : NULL;
    if (!pk) {
        free(k);
        return NULL;
    }
    k->priv = tl_jwt_rsa_jwk(pk);
    EVP_PKEY_free(pk);
    if (!k->priv) {
        free(k);
        return NULL;
    }
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    cjose_jwk_set_kid(k->priv, kid, strlen(kid), NULL);
    return k;
}

void tl_jwt_key_free(tl_jwt_key *k)
{
    if (!k) return;
    cjose_jwk_release(k->priv);
    free(k);
}

char *tl_jwt_rsa_public_set(const tl_jwt_key *k)
{
    char *pub = cjose_jwk_to_json(k->priv, false, NULL);
    char *set = NULL;
    if (pub && asprintf(&set, "{\"keys\":[%s]}", pub) < 0) set = NULL;
    free(pub);
    return set;
}

char *tl_jwt_sign(const cjose_jwk_t *jwk, const char *alg, const char *kid, const char *payload)
{
    cjose_header_t *h = cjose_header_new(NULL);
    cjose_header_set(h, CJOSE_HDR_ALG, alg, NULL);
    if (kid) cjose_header_set(h, CJOSE_HDR_KID, kid, NULL);
    cjose_header_set(h, "typ", "JWT", NULL);
    cjose_jws_t *jws = cjose_jws_sign(jwk, h, (const uint8_t *)payload, strlen(payload), NULL);
    const char *ser = NULL;
    char *out = jws && cjose_jws_export(jws, &ser, NULL) && ser ? strdup(ser) : NULL;
    cjose_jws_release(jws);
    cjose_header_release(h);
    return out;
}

char *tl_jwt_rs256(const tl_jwt_key *k, const char *payload)
{
    return tl_jwt_sign(k->priv, "RS256", k->kid, payload);
}

char *tl_jwt_claims(const char *sub, const char *name, int64_t exp, const char *extra)
{
    char *out = NULL;
    char namepart[128] = "";
    if (name) snprintf(namepart, sizeof namepart, ",\"name\":\"%s\"", name);
    if (asprintf(&out, "{\"sub\":\"%s\"%s,\"exp\":%lld%s}", sub, namepart, (long long)exp,
                 extra ? extra : "") < 0)
        out = NULL;
    return out;
}
