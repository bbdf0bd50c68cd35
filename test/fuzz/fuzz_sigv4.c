/*
 * fuzz_sigv4 — the SigV4 canonicaliser and signer, sigv4_sign(), on fuzzed requests.
 *
 * Input: byte 0 holds flags (bit 0 normalize_path, bit 1 sign_body, bit 2 a session token,
 * bit 3 service "s3", bit 4 no Host header added); the rest is cut at '\n' into: method, path,
 * query, then one header per line as "name:value" (no ':' -> the whole line is the name, value
 * ""). Unless bit 4 is set a "Host" header is added first.
 * Properties: a signed request has a 64-hex-digit signature; its canonical request starts with
 * the method, its canonical URI holds only unreserved characters, '%' escapes and '/', its
 * canonical query only unreserved characters, '%' escapes, '=' and '&'; the canonical header
 * names are lower case and strictly increasing; the string to sign ends with the SHA-256 of the
 * canonical request; signing again gives the same bytes (no hidden state); an empty query
 * signs like no query. A refused request has a non-empty reason.
 */
#include <ctype.h>

#include "fuzz_util.h"
#include "sigv4.h"

#define MAX_PARTS 40

static bool only_chars(const char *s, size_t len, const char *extra)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || strchr(extra, c))
            continue;
        if (c == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2]) && !islower((unsigned char)s[i + 1]) &&
            !islower((unsigned char)s[i + 2])) {
            i += 2;
            continue;
        }
        return false;
    }
    return true;
}

/* Checks the lines of a canonical request. */
static void check_canonical(const char *cr, const char *method)
{
    const char *l1 = strchr(cr, '\n');
    FUZZ_ASSERT(l1 && (size_t)(l1 - cr) == strlen(method) &&
                memcmp(cr, method, strlen(method)) == 0);
    const char *uri = l1 + 1;
    const char *l2 = strchr(uri, '\n');
    FUZZ_ASSERT(l2 && l2 > uri && uri[0] == '/');
    FUZZ_ASSERT(only_chars(uri, (size_t)(l2 - uri), "/"));
    const char *query = l2 + 1;
    const char *l3 = strchr(query, '\n');
    FUZZ_ASSERT(l3);
    FUZZ_ASSERT(only_chars(query, (size_t)(l3 - query), "=&"));
    /* header lines up to the empty line */
    const char *h = l3 + 1;
    char prev[512] = "";
    bool first = true;
    while (*h && *h != '\n') {
        const char *colon = strchr(h, ':');
        const char *eol = strchr(h, '\n');
        FUZZ_ASSERT(colon && eol && colon < eol);
        size_t nl = (size_t)(colon - h);
        char name[512];
        if (nl >= sizeof name) nl = sizeof name - 1;
        memcpy(name, h, nl);
        name[nl] = '\0';
        for (size_t i = 0; i < nl; i++) FUZZ_ASSERT(!(name[i] >= 'A' && name[i] <= 'Z'));
        if (!first) FUZZ_ASSERT(strcmp(prev, name) < 0);
        memcpy(prev, name, nl + 1);
        first = false;
        h = eol + 1;
    }
    FUZZ_ASSERT(*h == '\n');
}

static bool sign(const sigv4_request *req, const sigv4_params *pr, sigv4_result *out)
{
    char err[128];
    bool ok = sigv4_sign(req, pr, out, err, sizeof err);
    if (!ok) FUZZ_ASSERT(fuzz_terminated(err, sizeof err) && err[0] != '\0');
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384) return 0;
    uint8_t flags = data[0];
    char *buf = malloc(size);
    if (!buf) return 0;
    char *parts[MAX_PARTS];
    size_t n = fuzz_split(data + 1, size - 1, buf, parts, MAX_PARTS);
    const char *method = parts[0];
    const char *path = n > 1 ? parts[1] : "/";
    const char *query = n > 2 ? parts[2] : NULL;

    sigv4_header headers[MAX_PARTS];
    size_t nh = 0;
    if (!(flags & 16)) headers[nh++] = (sigv4_header){"Host", "sqs.us-east-1.amazonaws.com"};
    for (size_t i = 3; i < n; i++) {
        char *colon = strchr(parts[i], ':');
        if (colon) *colon = '\0';
        headers[nh++] = (sigv4_header){parts[i], colon ? colon + 1 : ""};
    }
    static const uint8_t body[] = "{\"QueueUrl\":\"q\"}";
    const sigv4_request req = {
        .method = method,
        .path = path,
        .query = query,
        .headers = headers,
        .n_headers = nh,
        .body = body,
        .body_len = sizeof body - 1,
    };
    const sigv4_params params = {
        .access_key_id = "AKIDEXAMPLE",
        .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        .session_token = (flags & 4) ? "token/with+chars=" : NULL,
        .region = "us-east-1",
        .service = (flags & 8) ? "s3" : "sqs",
        .amz_date = "20261123T101530Z",
        .normalize_path = flags & 1,
        .sign_body = flags & 2,
    };

    sigv4_result r1, r2;
    if (sign(&req, &params, &r1)) {
        FUZZ_ASSERT(strlen(r1.signature) == 64);
        for (int i = 0; i < 64; i++)
            FUZZ_ASSERT(isxdigit((unsigned char)r1.signature[i]) &&
                        !isupper((unsigned char)r1.signature[i]));
        check_canonical(r1.canonical_request, method);
        char hash[65];
        sigv4_sha256_hex(r1.canonical_request, strlen(r1.canonical_request), hash);
        size_t sl = strlen(r1.string_to_sign);
        FUZZ_ASSERT(sl > 64 && strcmp(r1.string_to_sign + sl - 64, hash) == 0);
        FUZZ_ASSERT(strncmp(r1.authorization, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/",
                            49) == 0);

        FUZZ_ASSERT(sign(&req, &params, &r2));
        FUZZ_ASSERT(strcmp(r1.canonical_request, r2.canonical_request) == 0);
        FUZZ_ASSERT(strcmp(r1.signature, r2.signature) == 0);
        sigv4_result_free(&r2);

        if (query && !query[0]) {
            sigv4_request no_query = req;
            no_query.query = NULL;
            FUZZ_ASSERT(sign(&no_query, &params, &r2));
            FUZZ_ASSERT(strcmp(r1.canonical_request, r2.canonical_request) == 0);
            sigv4_result_free(&r2);
        }
        sigv4_result_free(&r1);
    }
    free(buf);
    return 0;
}
