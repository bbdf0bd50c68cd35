/*
 * sigv4 — AWS Signature Version 4, header form. Contract in sigv4.h.
 *
 * Hand-written because none of the chosen libraries produces the canonical request or signs the
 * session token header (see sigv4.h); the hashing and HMAC are OpenSSL's.
 *
 * Cost: the canonical request is written into one buffer sized up front, so a call makes the four
 * result allocations and nothing else of its own for requests with up to SMALL_HEADERS headers, a
 * secret of up to 128 bytes and no query (the SQS client's case). A query needs one scratch
 * buffer; more headers need one sort array. OpenSSL's algorithms are fetched once per process, and
 * the signing key is derived once a day per thread and credential (compute_signature): a request
 * costs one HMAC.
 */
#include "sigv4.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <pthread.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "errbuf.h"

#define ALGORITHM "AWS4-HMAC-SHA256"
#define SMALL_HEADERS 16

static bool fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errbuf_vset(err, err_len, fmt, ap);
    va_end(ap);
    return false;
}

static const char HEX_UPPER[] = "0123456789ABCDEF";
static const char HEX_LOWER[] = "0123456789abcdef";

static void hex_lower(const unsigned char *bin, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = HEX_LOWER[bin[i] >> 4];
        out[2 * i + 1] = HEX_LOWER[bin[i] & 15];
    }
    out[2 * len] = '\0';
}

/* SHA-256 and HMAC fetched from the provider once: an implicit fetch on every call costs a
 * method-store lookup each time. Never freed; they live as long as the process. */
static pthread_once_t algorithms_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;
static EVP_MAC *hmac_mac;

static void fetch_algorithms(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static bool algorithms_ready(void)
{
    return pthread_once(&algorithms_once, fetch_algorithms) == 0 && sha256_md && hmac_mac;
}

static bool sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!algorithms_ready()) return false;
    if (!EVP_Digest(data, len, md, &md_len, sha256_md, NULL) || md_len != 32) return false;
    hex_lower(md, 32, out);
    return true;
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    /* The contract returns nothing; an empty string can never match a real hash. */
    if (!sha256_hex(data, len, out)) out[0] = '\0';
}

void sigv4_amz_date(long long epoch_seconds, char out[17])
{
    time_t t = (time_t)epoch_seconds;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16) out[0] = '\0';
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* Appends s[0..len) URI-encoded (unreserved kept, the rest %XX upper-case); returns the new end. */
static char *put_encoded(char *p, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = HEX_UPPER[c >> 4];
            *p++ = HEX_UPPER[c & 15];
        }
    }
    return p;
}

/* Decodes %XX escapes of s[0..len) into out (at most len bytes); '+' stays '+' (RFC 3986).
 * Returns the decoded length, or -1 on a malformed escape. */
static long percent_decode(const char *s, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[n++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0) return -1;
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    return (long)n;
}

/* Appends one path segment. Every service but S3 encodes the segment as sent, so its own %XX
 * escapes are encoded again; S3 wants the object key encoded once, so it is decoded first. */
static char *put_segment(char *p, const char *seg, size_t len, bool encode_once, bool *bad)
{
    if (!encode_once) return put_encoded(p, seg, len);
    /* Decoding never lengthens: decode into the tail of the space reserved for this segment. */
    char *tmp = p + 2 * len;
    long n = percent_decode(seg, len, tmp);
    if (n < 0) {
        *bad = true;
        return p;
    }
    memmove(p + 3 * len - (size_t)n, tmp, (size_t)n);
    return put_encoded(p, p + 3 * len - (size_t)n, (size_t)n);
}

static bool seg_is(const char *seg, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(seg, word, len) == 0;
}

/* Writes the canonical URI (at most 3 * strlen(path) + 1 bytes). With normalize, "." and ".."
 * segments and empty segments (repeated slashes) are dropped as RFC 3986 section 5.2.4 does;
 * a path that ends in '/' or in a dot segment keeps a trailing slash. */
static char *put_canonical_uri(char *p, const char *path, bool normalize, bool encode_once,
                               bool *bad)
{
    char *start = p;
    *p++ = '/';
    const char *s = path;
    if (*s == '/') s++;
    bool last_was_segment = false;
    for (;;) {
        const char *end = strchr(s, '/');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (!normalize) {
            p = put_segment(p, s, len, encode_once, bad);
            if (end) *p++ = '/';
        } else if (len == 0 || seg_is(s, len, ".")) {
            last_was_segment = false;
        } else if (seg_is(s, len, "..")) {
            if (p - start > 1) {
                p--; /* the '/' after the previous segment */
                while (p[-1] != '/') p--;
            }
            last_was_segment = false;
        } else {
            p = put_segment(p, s, len, encode_once, bad);
            *p++ = '/';
            last_was_segment = true;
        }
        if (!end) break;
        s = end + 1;
    }
    /* Normalising writes a '/' after each segment; the last one only stays for a trailing slash. */
    if (normalize && last_was_segment) p--;
    return p;
}

typedef struct {
    const char *name, *value; /* encoded, in the scratch buffer */
} query_param;

static int compare_params(const void *a, const void *b)
{
    const query_param *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* Writes the canonical query string: each parameter decoded and re-encoded, sorted by encoded
 * name then value, "a" written as "a=". At most 4 * strlen(query) + 1 bytes. */
static bool put_canonical_query(char **pp, const char *query, char *err, size_t err_len)
{
    size_t qlen = strlen(query);
    if (qlen == 0) return true;
    size_t n_params = 1;
    for (size_t i = 0; i < qlen; i++) n_params += query[i] == '&';
    /* Scratch: the param array, then each encoded name and value NUL-terminated (each encoded
     * piece is at most 3x its raw bytes, plus two NULs per param), then one decode buffer. */
    size_t text_size = 3 * qlen + 2 * n_params;
    char *scratch = malloc(n_params * sizeof(query_param) + text_size + qlen);
    if (!scratch) return fail(err, err_len, "out of memory");
    query_param *params = (query_param *)scratch;
    char *text = scratch + n_params * sizeof(query_param);
    char *decoded = text + text_size;
    size_t count = 0;

    const char *s = query;
    for (;;) {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t)(amp - s) : strlen(s);
        if (len > 0) { /* "a&&b": empty pieces are not parameters */
            const char *eq = memchr(s, '=', len);
            size_t name_len = eq ? (size_t)(eq - s) : len;
            const char *val = eq ? eq + 1 : s + len;
            size_t val_len = eq ? len - name_len - 1 : 0;
            long dn = percent_decode(s, name_len, decoded);
            if (dn < 0) goto bad_escape;
            params[count].name = text;
            text = put_encoded(text, decoded, (size_t)dn);
            *text++ = '\0';
            long dv = percent_decode(val, val_len, decoded);
            if (dv < 0) goto bad_escape;
            params[count].value = text;
            text = put_encoded(text, decoded, (size_t)dv);
            *text++ = '\0';
            count++;
        }
        if (!amp) break;
        s = amp + 1;
    }
    qsort(params, count, sizeof(query_param), compare_params);
    char *p = *pp;
    for (size_t i = 0; i < count; i++) {
        if (i) *p++ = '&';
        size_t nl = strlen(params[i].name), vl = strlen(params[i].value);
        memcpy(p, params[i].name, nl);
        p += nl;
        *p++ = '=';
        memcpy(p, params[i].value, vl);
        p += vl;
    }
    *pp = p;
    free(scratch);
    return true;

bad_escape:
    free(scratch);
    return fail(err, err_len, "malformed %%-escape in query \"%s\"", query);
}

typedef struct {
    const char *name, *value;
    size_t index; /* position in the request, so equal names keep their order */
} header_ref;

static int compare_header_names(const void *a, const void *b)
{
    const header_ref *x = a, *y = b;
    for (size_t i = 0;; i++) {
        unsigned char cx = (unsigned char)ascii_lower(x->name[i]);
        unsigned char cy = (unsigned char)ascii_lower(y->name[i]);
        if (cx != cy) return cx < cy ? -1 : 1;
        if (!cx) break;
    }
    return x->index < y->index ? -1 : (x->index > y->index);
}

static bool is_space(char c) { return c == ' ' || c == '\t'; }

/* Appends a header value trimmed, with inner runs of whitespace folded to one space. */
static char *put_trimmed_value(char *p, const char *v)
{
    while (is_space(*v)) v++;
    bool pending_space = false;
    for (; *v; v++) {
        if (is_space(*v)) {
            pending_space = true;
            continue;
        }
        if (pending_space) *p++ = ' ';
        pending_space = false;
        *p++ = *v;
    }
    return p;
}

static bool check_header(const sigv4_header *h, char *err, size_t err_len)
{
    static const char *const signer_owned[] = {"authorization", "x-amz-date",
                                               "x-amz-security-token", "x-amz-content-sha256"};
    if (!h->name || !h->name[0] || !h->value)
        return fail(err, err_len, "header without a name or value");
    for (const char *c = h->name; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == ':' || *c == 0x7f)
            return fail(err, err_len, "invalid header name \"%s\"", h->name);
    if (strpbrk(h->value, "\r\n"))
        return fail(err, err_len, "header %s has a line break in its value", h->name);
    for (size_t i = 0; i < sizeof signer_owned / sizeof signer_owned[0]; i++)
        if (strcasecmp(h->name, signer_owned[i]) == 0)
            return fail(err, err_len, "header %s is added by the signer; do not pass it", h->name);
    return true;
}

static bool check_amz_date(const char *d)
{
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z') return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (d[i] < '0' || d[i] > '9')) return false;
    return true;
}

static bool check_inputs(const sigv4_request *req, const sigv4_params *pr, char *err,
                         size_t err_len)
{
    if (!req || !pr) return fail(err, err_len, "no request or parameters");
    if (!req->method || !req->method[0] || strpbrk(req->method, " \t\r\n"))
        return fail(err, err_len, "missing or invalid method");
    if (!req->path) return fail(err, err_len, "missing path");
    if (strpbrk(req->path, "?#\r\n"))
        return fail(err, err_len, "path \"%s\" has '?', '#' or a line break", req->path);
    if (req->query && strpbrk(req->query, "#\r\n"))
        return fail(err, err_len, "query has '#' or a line break");
    if (req->n_headers && !req->headers) return fail(err, err_len, "n_headers set without headers");
    if (req->body_len && !req->body) return fail(err, err_len, "body_len set without a body");
    if (!pr->access_key_id || !pr->access_key_id[0])
        return fail(err, err_len, "missing access key id");
    if (!pr->secret_access_key || !pr->secret_access_key[0])
        return fail(err, err_len, "missing secret access key");
    if (!pr->region || !pr->region[0] || strchr(pr->region, '/'))
        return fail(err, err_len, "missing or invalid region");
    if (!pr->service || !pr->service[0] || strchr(pr->service, '/'))
        return fail(err, err_len, "missing or invalid service");
    if (!check_amz_date(pr->amz_date))
        return fail(err, err_len, "amz_date \"%s\" is not YYYYMMDDTHHMMSSZ",
                    pr->amz_date ? pr->amz_date : "(null)");
    if (pr->session_token && strpbrk(pr->session_token, "\r\n"))
        return fail(err, err_len, "session token has a line break");
    bool has_host = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!check_header(&req->headers[i], err, err_len)) return false;
        has_host |= strcasecmp(req->headers[i].name, "host") == 0;
    }
    if (!has_host) return fail(err, err_len, "request has no Host header");
    return true;
}

/* The signing key (kSigning) depends only on the secret, the date, the region and the service,
 * so each thread keeps the last one it derived: a request then costs one HMAC instead of five
 * (the chain's four steps run once a day per thread and credential). Per thread, so no lock. The
 * secret is kept beside it to notice a rotation; longer secrets than AWS issues are not cached. */
typedef struct {
    bool valid;
    char date[9];
    char region[64];
    char service[64];
    char secret[129];
    unsigned char key[32];
} signing_key_cache;

static _Thread_local signing_key_cache key_cache;

static bool cache_fits(const sigv4_params *pr)
{
    return strlen(pr->region) < sizeof key_cache.region &&
           strlen(pr->service) < sizeof key_cache.service &&
           strlen(pr->secret_access_key) < sizeof key_cache.secret;
}

static bool cache_lookup(const sigv4_params *pr, const char *date, unsigned char key[32])
{
    if (!key_cache.valid || strcmp(key_cache.date, date) != 0 ||
        strcmp(key_cache.region, pr->region) != 0 || strcmp(key_cache.service, pr->service) != 0 ||
        strcmp(key_cache.secret, pr->secret_access_key) != 0)
        return false;
    memcpy(key, key_cache.key, 32);
    return true;
}

static void cache_store(const sigv4_params *pr, const char *date, const unsigned char key[32])
{
    if (!cache_fits(pr)) return;
    snprintf(key_cache.date, sizeof key_cache.date, "%s", date);
    snprintf(key_cache.region, sizeof key_cache.region, "%s", pr->region);
    snprintf(key_cache.service, sizeof key_cache.service, "%s", pr->service);
    snprintf(key_cache.secret, sizeof key_cache.secret, "%s", pr->secret_access_key);
    memcpy(key_cache.key, key, 32);
    key_cache.valid = true;
}

/* One HMAC-SHA256 on ctx. The digest is named on the context's first init only: naming it again
 * makes OpenSSL fetch it again at every init. */
static bool hmac_step(EVP_MAC_CTX *ctx, bool *digest_set, const unsigned char *key, size_t key_len,
                      const char *msg, unsigned char out[32])
{
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                           OSSL_PARAM_construct_end()};
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    bool ok = EVP_MAC_init(ctx, key, key_len, *digest_set ? NULL : params) &&
              EVP_MAC_update(ctx, (const unsigned char *)msg, strlen(msg)) &&
              EVP_MAC_final(ctx, mac, &mac_len, sizeof mac) && mac_len == 32;
    if (ok) {
        *digest_set = true;
        memcpy(out, mac, 32);
    }
    OPENSSL_cleanse(mac, sizeof mac);
    return ok;
}

/* The signing key chain of the published algorithm: "AWS4" + secret, then date, region, service
 * and "aws4_request", each step keyed with the previous step's MAC. */
static bool derive_signing_key(EVP_MAC_CTX *ctx, bool *digest_set, const sigv4_params *pr,
                               const char *date, unsigned char key[32])
{
    size_t secret_len = strlen(pr->secret_access_key);
    char small_key[4 + 128];
    char *first = secret_len <= 128 ? small_key : malloc(4 + secret_len);
    if (!first) return false;
    memcpy(first, "AWS4", 4);
    memcpy(first + 4, pr->secret_access_key, secret_len);
    const char *steps[] = {date, pr->region, pr->service, "aws4_request"};
    bool ok =
        hmac_step(ctx, digest_set, (const unsigned char *)first, 4 + secret_len, steps[0], key);
    for (size_t i = 1; ok && i < sizeof steps / sizeof steps[0]; i++) {
        unsigned char previous[32];
        memcpy(previous, key, 32);
        ok = hmac_step(ctx, digest_set, previous, 32, steps[i], key);
        OPENSSL_cleanse(previous, sizeof previous);
    }
    OPENSSL_cleanse(first, 4 + secret_len);
    if (first != small_key) free(first);
    return ok;
}

/* The signature of the string to sign, with the (cached or derived) signing key. */
static bool compute_signature(const sigv4_params *pr, const char *string_to_sign, char out[65],
                              char *err, size_t err_len)
{
    char date[9];
    memcpy(date, pr->amz_date, 8);
    date[8] = '\0';
    EVP_MAC_CTX *ctx = algorithms_ready() ? EVP_MAC_CTX_new(hmac_mac) : NULL;
    bool digest_set = false;
    unsigned char key[32], signature[32];
    bool ok = ctx != NULL;
    if (ok && !cache_lookup(pr, date, key)) {
        ok = derive_signing_key(ctx, &digest_set, pr, date, key);
        if (ok) cache_store(pr, date, key);
    }
    ok = ok && hmac_step(ctx, &digest_set, key, 32, string_to_sign, signature);
    EVP_MAC_CTX_free(ctx);
    if (ok) hex_lower(signature, 32, out);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(signature, sizeof signature);
    return ok ? true : fail(err, err_len, "HMAC-SHA256 failed");
}

bool sigv4_sign(const sigv4_request *req, const sigv4_params *params, sigv4_result *out, char *err,
                size_t err_len)
{
    if (!out) return fail(err, err_len, "no result");
    memset(out, 0, sizeof *out);
    if (!check_inputs(req, params, err, err_len)) return false;

    bool has_token = params->session_token && params->session_token[0];
    char payload_hash[65];
    if (!sha256_hex(req->body_len ? (const void *)req->body : "", req->body_len, payload_hash))
        return fail(err, err_len, "SHA-256 failed");

    /* Headers the signer adds: values live in added_storage, which the result owns. */
    size_t token_len = has_token ? strlen(params->session_token) : 0;
    out->added_storage =
        malloc(17 + (has_token ? token_len + 1 : 0) + (params->sign_body ? 65 : 0));
    if (!out->added_storage) return fail(err, err_len, "out of memory");
    char *st = out->added_storage;
    memcpy(st, params->amz_date, 17);
    out->added[out->n_added++] = (sigv4_header){"X-Amz-Date", st};
    st += 17;
    if (has_token) {
        memcpy(st, params->session_token, token_len + 1);
        out->added[out->n_added++] = (sigv4_header){"X-Amz-Security-Token", st};
        st += token_len + 1;
    }
    if (params->sign_body) {
        memcpy(st, payload_hash, 65);
        out->added[out->n_added++] = (sigv4_header){"x-amz-content-sha256", st};
    }

    size_t n = req->n_headers + out->n_added;
    header_ref small[SMALL_HEADERS];
    header_ref *hs = n <= SMALL_HEADERS ? small : malloc(n * sizeof *hs);
    if (!hs) goto oom;
    size_t header_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const sigv4_header *h =
            i < req->n_headers ? &req->headers[i] : &out->added[i - req->n_headers];
        hs[i] = (header_ref){h->name, h->value, i};
        header_bytes += 2 * strlen(h->name) + strlen(h->value) + 3; /* "name:value\n" + "name;" */
    }
    qsort(hs, n, sizeof *hs, compare_header_names);

    size_t path_len = strlen(req->path), query_len = req->query ? strlen(req->query) : 0;
    /* 3x path, 4x query (escapes plus "=" for bare keys), headers, newlines and the hash */
    size_t cap = strlen(req->method) + 3 * path_len + 4 * query_len + header_bytes + 64 + 32;
    char *cr = malloc(cap);
    if (!cr) goto oom;
    out->canonical_request = cr;
    char *p = cr;
    size_t mlen = strlen(req->method);
    memcpy(p, req->method, mlen);
    p += mlen;
    *p++ = '\n';
    bool bad_path = false;
    bool encode_once = strcmp(params->service, "s3") == 0;
    p = put_canonical_uri(p, req->path, params->normalize_path, encode_once, &bad_path);
    if (bad_path) {
        fail(err, err_len, "malformed %%-escape in path \"%s\"", req->path);
        goto fail_out;
    }
    *p++ = '\n';
    if (req->query && !put_canonical_query(&p, req->query, err, err_len)) goto fail_out;
    *p++ = '\n';
    for (size_t i = 0; i < n; i++) {
        bool continues = i > 0 && strcasecmp(hs[i].name, hs[i - 1].name) == 0;
        if (continues) {
            p[-1] = ','; /* repeated name: values joined in request order */
        } else {
            for (const char *c = hs[i].name; *c; c++) *p++ = ascii_lower(*c);
            *p++ = ':';
        }
        p = put_trimmed_value(p, hs[i].value);
        *p++ = '\n';
    }
    *p++ = '\n';
    const char *signed_headers = p;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcasecmp(hs[i].name, hs[i - 1].name) == 0) continue;
        if (p != signed_headers) *p++ = ';';
        for (const char *c = hs[i].name; *c; c++) *p++ = ascii_lower(*c);
    }
    size_t signed_len = (size_t)(p - signed_headers);
    *p++ = '\n';
    memcpy(p, payload_hash, 64);
    p += 64;
    *p = '\0';
    if (hs != small) free(hs);
    hs = NULL;

    char cr_hash[65];
    if (!sha256_hex(cr, (size_t)(p - cr), cr_hash)) {
        fail(err, err_len, "SHA-256 failed");
        goto fail_out;
    }
    /* scope = date/region/service/aws4_request */
    int scope_len = (int)(8 + 1 + strlen(params->region) + 1 + strlen(params->service) + 13);
    size_t sts_cap = sizeof ALGORITHM + 17 + (size_t)scope_len + 1 + 65;
    out->string_to_sign = malloc(sts_cap);
    if (!out->string_to_sign) goto oom;
    snprintf(out->string_to_sign, sts_cap, ALGORITHM "\n%s\n%.8s/%s/%s/aws4_request\n%s",
             params->amz_date, params->amz_date, params->region, params->service, cr_hash);
    if (!compute_signature(params, out->string_to_sign, out->signature, err, err_len))
        goto fail_out;

    size_t auth_cap = sizeof ALGORITHM + 12 + strlen(params->access_key_id) + 1 +
                      (size_t)scope_len + 16 + signed_len + 12 + 64 + 1;
    out->authorization = malloc(auth_cap);
    if (!out->authorization) goto oom;
    snprintf(out->authorization, auth_cap,
             ALGORITHM " Credential=%s/%.8s/%s/%s/aws4_request, SignedHeaders=%.*s, Signature=%s",
             params->access_key_id, params->amz_date, params->region, params->service,
             (int)signed_len, signed_headers, out->signature);
    return true;

oom:
    fail(err, err_len, "out of memory");
fail_out:
    if (hs && hs != small) free(hs);
    sigv4_result_free(out);
    return false;
}

void sigv4_result_free(sigv4_result *r)
{
    if (!r) return;
    free(r->canonical_request);
    free(r->string_to_sign);
    free(r->authorization);
    free(r->added_storage);
    memset(r, 0, sizeof *r);
}
