/*
 * sigv4 — AWS Signature Version 4 (header form), from the published algorithm, with OpenSSL.
 *
 * Hand-written on purpose: none of the chosen libraries signs AWS requests (libcurl's
 * CURLOPT_AWS_SIGV4 cannot add the session token header or expose the canonical request the test
 * vectors check), and the algorithm is small.
 *
 * Contract:
 *  - sigv4_sign() computes, for one request: the canonical request, the string to sign, the hex
 *    signature and the full Authorization header value. The caller must add the returned
 *    headers (X-Amz-Date, X-Amz-Security-Token when a token is given, x-amz-content-sha256 when
 *    sign_body) to the request it sends; they are included in the signature.
 *  - Canonical URI: for every service but S3 the path is normalised (when normalize_path:
 *    "." and ".." segments and repeated slashes removed, a trailing slash kept) and then each
 *    segment is URI-encoded
 *    (unreserved characters A-Z a-z 0-9 - _ . ~ kept, everything else %XX upper-case), the
 *    request's own %XX escapes being encoded again as the published algorithm requires.
 *  - Canonical query: parameters decoded, re-encoded, sorted by name then value; "a" and "a=" both
 *    become "a=".
 *  - Canonical headers: names lower-cased, values trimmed and inner runs of spaces folded to one,
 *    repeated names joined with ',' in order, sorted by name.
 *  - Thread-safe (each thread keeps the last signing key it derived: one HMAC per request) and
 *    allocation-owning: sigv4_result_free() releases every string in the result.
 */
#ifndef CHATFLOW_SIGV4_H
#define CHATFLOW_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;
    const char *value;
} sigv4_header;

typedef struct {
    const char *method;          /* "GET", "POST", ... */
    const char *path;            /* raw path as on the request line, without the query */
    const char *query;           /* raw query without '?', or NULL */
    const sigv4_header *headers; /* the request's headers (must include Host) */
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
} sigv4_request;

typedef struct {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL or "" when none */
    const char *region;
    const char *service;
    const char *amz_date; /* "YYYYMMDDTHHMMSSZ" */
    bool normalize_path;  /* true for every service but S3 */
    bool sign_body;       /* add and sign x-amz-content-sha256 */
} sigv4_params;

typedef struct {
    char *canonical_request;
    char *string_to_sign;
    char signature[65];
    char *authorization; /* value of the Authorization header */
    /* headers the caller must add to the request (name/value pairs, n_added of them) */
    sigv4_header added[3];
    size_t n_added;
    char *added_storage; /* owns the strings in added[] */
} sigv4_result;

/* Returns false on allocation failure or a malformed request (err says which). */
bool sigv4_sign(const sigv4_request *req, const sigv4_params *params, sigv4_result *out, char *err,
                size_t err_len);
void sigv4_result_free(sigv4_result *r);

/* Helpers shared with the SQS client: amz_date from epoch seconds, hex SHA-256. */
void sigv4_amz_date(long long epoch_seconds, char out[17]);
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
