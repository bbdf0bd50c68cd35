/*
 * tl_jwt — identity tokens for tests: HS256 MACed here, RS256 signed by cjose, and raw tokens
 * with any header (alg none). Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_jwt_hs256(secret, payload): header {"alg":"HS256","typ":"JWT"} and the payload JSON as
 *    given, MACed with the secret. tl_jwt_raw(header, payload, sig): base64url of both and the
 *    signature part as given (already base64url; "" for alg none).
 *  - tl_jwt_rsa_new(kid) makes an RSA-2048 key; tl_jwt_rsa_public_set() its public JWK set
 *    {"keys":[...]} (malloc'd); tl_jwt_rs256() signs a payload with it (header alg RS256, kid).
 *  - tl_jwt_claims(sub, name, exp, extra) builds {"sub":..,"name":..,"exp":..<extra>} where extra
 *    is "" or starts with a comma (",\"aud\":\"x\""); name NULL leaves it out.
 *  - Building blocks, for tests that need other keys or headers (test_jwt): tl_jwt_b64url()
 *    (unpadded base64url), tl_jwt_hs256_raw() (an HS256 token over exactly the header and payload
 *    given, MACed with key), tl_jwt_rsa_jwk() (a private cjose JWK from an OpenSSL RSA key: n, e,
 *    d and the CRT values; the caller releases it with cjose_jwk_release), tl_jwt_sign() (a token
 *    signed by cjose with jwk, header {"alg":alg[,"kid":kid],"typ":"JWT"}; kid NULL: none).
 *  - Every char * returned is malloc'd (free it); NULL on failure.
 */
#ifndef CHATFLOW_TL_JWT_H
#define CHATFLOW_TL_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <cjose/jwk.h>
#include <openssl/evp.h>

typedef struct tl_jwt_key tl_jwt_key;

char *tl_jwt_hs256(const char *secret, const char *payload);
char *tl_jwt_raw(const char *header, const char *payload, const char *sig_b64);
tl_jwt_key *tl_jwt_rsa_new(const char *kid);
void tl_jwt_key_free(tl_jwt_key *k);
char *tl_jwt_rsa_public_set(const tl_jwt_key *k);
char *tl_jwt_rs256(const tl_jwt_key *k, const char *payload);
char *tl_jwt_claims(const char *sub, const char *name, int64_t exp, const char *extra);

char *tl_jwt_b64url(const void *data, size_t len);
char *tl_jwt_hs256_raw(const void *key, size_t key_len, const char *header, const char *payload);
cjose_jwk_t *tl_jwt_rsa_jwk(EVP_PKEY *pk);
char *tl_jwt_sign(const cjose_jwk_t *jwk, const char *alg, const char *kid, const char *payload);

#endif
