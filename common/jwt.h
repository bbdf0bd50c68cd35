/*
 * jwt — verifies a compact JWS token (RFC 7515 / 7519) and reads ChatFlow's identity claims.
 * Signatures, keys and base64url are cjose's; this module decides what is acceptable.
 *
 * Contract:
 *  - jwt_verifier_new() copies a jwt_config (start from jwt_config_init(): leeway 30 s). Accepted
 *    algorithms are listed explicitly: HS256 with a shared secret (at least 32 bytes, and not a
 *    PEM key: a public key is not a shared secret), RS256 and ES256 with keys from a jwks_source
 *    (borrowed; it must outlive the verifier). A verifier is immutable: jwt_verify() may run on
 *    many threads at once.
 *  - jwt_verify(token, len) checks, in this order, and stops at the first failure:
 *      1. size: 1..JWT_MAX_TOKEN bytes, before anything is parsed (JWT_TOO_LARGE / MALFORMED);
 *      2. form: three dot-separated parts of unpadded base64url, header and payload non-empty;
 *      3. header: a JSON object (no duplicate members), "alg" one of the configured algorithms
 *         ("none" and everything else: JWT_ALG_REFUSED), no "crit" (no extension is understood);
 *         "jku", "x5u", "jwk" and the like are ignored: keys come only from the configuration;
 *      4. key: HS256 uses the configured secret, never a JWK set key; RS256 / ES256 need a "kid"
 *         naming a key of the matching type (RSA / EC P-256) in the set. A kid the set lacks
 *         triggers one rate-limited refresh (jwks_source_refresh_unknown_kid), then
 *         JWT_UNKNOWN_KEY; a key of the other type is JWT_ALG_REFUSED (no RS/ES/HS confusion);
 *      5. signature: exact length for the algorithm (32, 64, or the RSA modulus size), then cjose
 *         verifies it (JWT_BAD_SIGNATURE);
 *      6. claims (payload: a JSON object, no duplicate members): "exp" required, a NumericDate;
 *         expired when now >= exp + leeway (JWT_EXPIRED); "nbf" when present: not yet valid when
 *         now + leeway < nbf (JWT_NOT_YET_VALID); "iss" equal to the configured issuer when one is
 *         configured (JWT_BAD_ISSUER); "aud" (a string, or an array of strings) containing the
 *         configured audience; with no audience configured a token that names one is refused, as
 *         RFC 7519 §4.1.3 requires (JWT_BAD_AUDIENCE); "sub" (or the configured user_id_claim)
 *         a string of 1..JWT_SUB_MAX bytes, copied into out->sub; "name", else
 *         "preferred_username", 0..JWT_USERNAME_MAX bytes (no control characters in either);
 *         "rooms" when present an array of at most JWT_ROOMS_MAX entries, each a room id (room.h)
 *         or a pattern "<prefix>*" with a prefix of 1-63 room-id characters (JWT_BAD_CLAIM).
 *  - On JWT_OK, out holds the claims; jwt_claims_free() releases the rooms list. On failure out
 *    is empty (jwt_claims_free() on it is harmless) and reason holds one line that is safe to show
 *    the client and to log: it never contains the token, and text taken from the token (kid, alg)
 *    is cut to printable ASCII.
 *  - jwt_claims_allow_room(): a token without a rooms claim allows every room; with one, a room
 *    is allowed when it equals an entry, or starts with a pattern's prefix ("team-*" allows
 *    "team-" and "team-alpha", not "team"). An invalid room id is never allowed.
 *  - jwt_error values and jwt_error_name() strings are stable (clients and dashboards use them).
 */
#ifndef CHATFLOW_JWT_H
#define CHATFLOW_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jwks.h"
#include "room.h"

#define JWT_MAX_TOKEN 8192
#define JWT_DEFAULT_LEEWAY_S 30
#define JWT_HS256_MIN_SECRET 32
#define JWT_SUB_MAX 255
#define JWT_USERNAME_MAX 255
#define JWT_ROOMS_MAX 256
#define JWT_REASON_BUF 160

typedef enum {
    JWT_OK = 0,
    JWT_MALFORMED = 1,     /* not a compact JWS, bad base64url / JSON, unsupported header */
    JWT_TOO_LARGE = 2,     /* longer than JWT_MAX_TOKEN */
    JWT_ALG_REFUSED = 3,   /* alg none, not configured, or not the key's */
    JWT_UNKNOWN_KEY = 4,   /* no kid, or no key with that kid (after a refresh) */
    JWT_BAD_SIGNATURE = 5, /* the signature does not verify */
    JWT_EXPIRED = 6,       /* now >= exp + leeway */
    JWT_NOT_YET_VALID = 7, /* now + leeway < nbf */
    JWT_BAD_ISSUER = 8,    /* iss is not the configured issuer */
    JWT_BAD_AUDIENCE = 9,  /* aud does not name the configured audience */
    JWT_BAD_CLAIM = 10,    /* exp or sub missing; a claim of the wrong type or out of range */
    JWT_INTERNAL = 11,     /* out of memory, a verifier used without keys */
} jwt_error;

enum {
    JWT_ALG_HS256 = 1 << 0,
    JWT_ALG_RS256 = 1 << 1,
    JWT_ALG_ES256 = 1 << 2,
};

typedef struct {
    unsigned algs; /* JWT_ALG_* flags; at least one */
    const uint8_t *hs256_secret;
    size_t hs256_secret_len;
    jwks_source *keys;    /* for RS256 / ES256; borrowed */
    const char *issuer;   /* NULL: iss not checked */
    const char *audience; /* NULL: tokens with an aud are refused */
    /* The claim that holds the user id; NULL: "sub". Cognito custom attributes, for instance,
     * arrive as "custom:<name>" claims of the ID token. */
    const char *user_id_claim;
    int leeway_s; /* for exp and nbf, >= 0 */
    /* Seconds since the epoch; NULL = time(). Tests inject a fixed instant. */
    int64_t (*now_s)(void *ctx);
    void *now_ctx;
} jwt_config;

typedef struct {
    char sub[JWT_SUB_MAX + 1];           /* the userId: the sub claim, or cfg.user_id_claim's */
    char username[JWT_USERNAME_MAX + 1]; /* name or preferred_username; "" when neither */
    int64_t exp;
    bool rooms_limited; /* the token has a rooms claim */
    size_t n_rooms;
    char (*rooms)[ROOM_ID_BUF]; /* n_rooms entries: room ids and "<prefix>*" patterns */
} jwt_claims;

typedef struct jwt_verifier jwt_verifier;

void jwt_config_init(jwt_config *cfg);
jwt_verifier *jwt_verifier_new(const jwt_config *cfg, char *err, size_t err_len);
void jwt_verifier_free(jwt_verifier *v);

jwt_error jwt_verify(const jwt_verifier *v, const char *token, size_t len, jwt_claims *out,
                     char *reason, size_t reason_len);
void jwt_claims_free(jwt_claims *c);
bool jwt_claims_allow_room(const jwt_claims *c, const char *room);

/* "ok", "malformed", "too_large", "alg_refused", "unknown_key", "bad_signature", "expired",
 * "not_yet_valid", "bad_issuer", "bad_audience", "bad_claim", "internal". */
const char *jwt_error_name(jwt_error e);

#endif
