/*
 * jwks — a JSON Web Key set (RFC 7517 §5) of signature-verification public keys, on cjose, and a
 * thread-safe holder that keeps it current from a URL.
 *
 * Contract:
 *  - jwks_parse() reads {"keys":[...]} (at most JWKS_MAX_BYTES; duplicate JSON members refused).
 *    It keeps the keys usable for the algorithms jwt.h accepts: RSA public keys of 2048-8192 bits
 *    (RS256) and EC P-256 public keys (ES256), each with a "kid" of 1-JWKS_KID_MAX bytes. Any
 *    other key is skipped, never fatal, and counted by reason in jwks_load_info: another kty (oct,
 *    OKP, ...), another curve, "use" other than "sig", "alg" other than the key's (RS256 / ES256),
 *    no kid, a kid already in the set (the first one wins), private material ("d": a published set
 *    holds public keys only), an RSA size out of range, invalid key material, past JWKS_MAX_KEYS.
 *    It fails (NULL, err says why) only when the text is not a JWK set at all. A set with no
 *    usable key is a valid set (the issuer published nothing this server can use).
 *  - Every base64url member is checked (alphabet, no padding, length) before cjose decodes it:
 *    cjose 0.6.2.1 aborts the process on some malformed base64 (an assert in its decoder).
 *  - A jwks is immutable once parsed and reference-counted (atomically): jwks_retain() and
 *    jwks_release() are safe from any thread; the last release frees it. jwks_find() returns a key
 *    valid while the caller holds its reference; cjose keys are used read-only (their own
 *    non-atomic reference counts are never touched after parsing).
 *  - jwks_source holds the current set. jwks_source_new() fetches the URL once (and fails if that
 *    fetch fails); URLs: file://, https://, and http:// to a loopback host only (127.0.0.1,
 *    localhost, [::1]) — keys over plain HTTP from elsewhere could be swapped in transit. No
 *    redirects; connect and total timeouts (defaults 2 s / 5 s); at most JWKS_MAX_BYTES.
 *  - jwks_source_refresh_unknown_kid(): a verifier met a kid the set lacks. It fetches again only
 *    when refresh_interval_s (default 60) has passed since the last fetch attempt (success or
 *    failure), so a stream of tokens with made-up kids costs one fetch per interval. One thread
 *    fetches; threads arriving meanwhile wait for that fetch instead of starting their own. A
 * failed fetch keeps the old set (and records the error in the stats).
 *    With cfg.background the fetch runs on the source's own refresher thread instead: the caller
 *    gets the current set at once (its token is refused as an unknown key this time; the client's
 *    retry finds the new key once the fetch landed), same interval rule.
 *  - jwks_source_new_static() wraps a fixed set (no URL; refreshes are no-ops): tests, and
 *    configurations that load keys from a file once.
 *  - jwks_source_* are thread-safe; jwks_source_free() must run after every user is done.
 *    jwks_source_new() calls curl_global_init() (and _free() the matching cleanup), so it must not
 *    race other threads' first use of libcurl: create it at startup.
 */
#ifndef CHATFLOW_JWKS_H
#define CHATFLOW_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjose/jwk.h>

#define JWKS_MAX_BYTES (256 * 1024)
#define JWKS_MAX_KEYS 64
#define JWKS_KID_MAX 128
#define JWKS_RSA_MIN_BITS 2048
#define JWKS_RSA_MAX_BITS 8192
#define JWKS_DEFAULT_REFRESH_S 60
#define JWKS_DEFAULT_CONNECT_TIMEOUT_MS 2000
#define JWKS_DEFAULT_TIMEOUT_MS 5000
#define JWKS_ERR_BUF 256

typedef enum {
    JWKS_KEY_RSA = 1, /* RS256 */
    JWKS_KEY_EC_P256, /* ES256 */
} jwks_key_type;

typedef struct {
    char kid[JWKS_KID_MAX + 1];
    jwks_key_type type;
    size_t rsa_bytes; /* modulus size in bytes (= an RS256 signature's length); 0 for EC */
    cjose_jwk_t *jwk; /* owned by the set */
} jwks_key;

typedef enum {
    JWKS_SKIP_KTY,      /* kty is not RSA or EC */
    JWKS_SKIP_CURVE,    /* EC curve other than P-256 */
    JWKS_SKIP_USE,      /* "use" other than "sig" */
    JWKS_SKIP_ALG,      /* "alg" other than RS256 (RSA) / ES256 (EC) */
    JWKS_SKIP_NO_KID,   /* no kid, or not a string of 1-JWKS_KID_MAX bytes */
    JWKS_SKIP_DUP_KID,  /* a kid already in the set */
    JWKS_SKIP_PRIVATE,  /* carries private key material */
    JWKS_SKIP_KEY_SIZE, /* RSA modulus outside JWKS_RSA_MIN_BITS..JWKS_RSA_MAX_BITS */
    JWKS_SKIP_INVALID,  /* not an object, bad base64url, or the key material does not load */
    JWKS_SKIP_TOO_MANY, /* past JWKS_MAX_KEYS */
    JWKS_SKIP_N
} jwks_skip_reason;

typedef struct {
    size_t loaded;
    size_t skipped;
    size_t by_reason[JWKS_SKIP_N];
    char first_skip[160]; /* "key 2 (kid \"a\"): kty \"oct\" is not RSA or EC", "" when none */
} jwks_load_info;

typedef struct jwks jwks;

/* info may be NULL. Returns a set holding one reference, or NULL with err filled. */
jwks *jwks_parse(const char *json, size_t len, jwks_load_info *info, char *err, size_t err_len);
jwks *jwks_load_file(const char *path, jwks_load_info *info, char *err, size_t err_len);
jwks *jwks_retain(jwks *set);
void jwks_release(jwks *set); /* NULL is fine */
size_t jwks_count(const jwks *set);
/* The key with this kid, or NULL. */
const jwks_key *jwks_find(const jwks *set, const char *kid);
/* A stable lower-case name: "kty", "curve", "use", "alg", "no_kid", ... */
const char *jwks_skip_reason_name(jwks_skip_reason r);

typedef struct {
    const char *url;         /* file:///path, https://..., http://127.0.0.1:port/... */
    int refresh_interval_s;  /* minimum seconds between fetches; 0 = JWKS_DEFAULT_REFRESH_S */
    long connect_timeout_ms; /* 0 = JWKS_DEFAULT_CONNECT_TIMEOUT_MS */
    long timeout_ms;         /* whole transfer; 0 = JWKS_DEFAULT_TIMEOUT_MS */
    /* Monotonic milliseconds; NULL = CLOCK_MONOTONIC. Tests inject a clock to step the interval. */
    int64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
    /* Refresh on a thread of the source's own: jwks_source_refresh_unknown_kid() then never
     * fetches on the caller's thread (a WebSocket service loop must not wait for a key server);
     * it asks for a fetch and returns the current set at once. */
    bool background;
} jwks_source_config;

typedef struct {
    uint64_t fetches;  /* attempts, the first one included */
    uint64_t failures; /* attempts that kept the old set */
    size_t keys;       /* usable keys in the current set */
    jwks_load_info last_load;
    char last_error[JWKS_ERR_BUF]; /* "" after a success */
} jwks_source_stats;

typedef struct jwks_source jwks_source;

jwks_source *jwks_source_new(const jwks_source_config *cfg, char *err, size_t err_len);
/* Takes over the caller's reference to set. */
jwks_source *jwks_source_new_static(jwks *set);
void jwks_source_free(jwks_source *s);
/* The current set with a reference for the caller (jwks_release it). Never NULL. */
jwks *jwks_source_get(jwks_source *s);
/* Refreshes when the interval allows (see the contract); returns the current set, retained. */
jwks *jwks_source_refresh_unknown_kid(jwks_source *s);
/* Fetches now, whatever the interval (startup, an operator's request). false: old set kept. */
bool jwks_source_refresh_now(jwks_source *s, char *err, size_t err_len);
void jwks_source_get_stats(jwks_source *s, jwks_source_stats *out);

#endif
