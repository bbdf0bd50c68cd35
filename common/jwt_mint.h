/*
 * jwt_mint — issues HS256 identity tokens (the ones jwt.h verifies) for the two places ChatFlow
 * is its own issuer: the producer's development token endpoint (CHATFLOW_DEV_TOKENS) and the
 * load generator. Production tokens come from an identity provider, never from here.
 *
 * Contract:
 *  - jwt_mint_hs256() returns a malloc'd compact JWS: header {"alg":"HS256","typ":"JWT"}, claims
 *    {"sub":sub,"iat":iat,"exp":exp[,"name":name][,"iss":issuer][,"aud":audience]} (NULL or ""
 *    leaves a claim out), MACed with the secret by cjose. secret_len must be at least
 *    JWT_HS256_MIN_SECRET (the verifier refuses shorter secrets, so a token from a shorter one
 *    could never be checked). NULL on failure with err filled; err never holds the secret.
 *  - Stateless and thread-safe.
 */
#ifndef CHATFLOW_JWT_MINT_H
#define CHATFLOW_JWT_MINT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *sub;      /* required */
    const char *name;     /* optional */
    const char *issuer;   /* optional */
    const char *audience; /* optional */
    int64_t iat, exp;     /* seconds since the epoch */
} jwt_mint_claims;

char *jwt_mint_hs256(const void *secret, size_t secret_len, const jwt_mint_claims *claims,
                     char *err, size_t err_len);

#endif
