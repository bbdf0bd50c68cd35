/*
 * chatflow-sigv4 — signs one request of the AWS SigV4 test-suite format and prints one product.
 *
 *   chatflow-sigv4 --context context.json --request request.txt
 *                  --print canonical-request|string-to-sign|signature|authorization
 *
 * context.json: {"credentials": {"access_key_id", "secret_access_key", "token"?}, "region",
 * "service", "timestamp": "YYYY-MM-DDTHH:MM:SSZ", "normalize"?, "sign_body"?}.
 * request.txt: "METHOD target HTTP/1.1", "Name:value" header lines, a blank line, the body.
 * A header line that starts with a space or tab continues the previous header (obsolete line
 * folding); each such line is signed as one more value of that header, i.e. joined with ','.
 *
 * Prints exactly the bytes of the chosen product (no newline added), exit 0. Bad flags or input
 * files: a message and the usage on stderr, exit 2. Anything else: a message, exit 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sigv4.h"

static const char USAGE[] =
    "usage: chatflow-sigv4 --context context.json --request request.txt\n"
    "                      --print canonical-request|string-to-sign|signature|authorization\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "chatflow-sigv4: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", USAGE);
    return 2;
}

typedef struct {
    char *method, *path, *query; /* point into text */
    sigv4_header *headers;
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
    char *text; /* the file, split in place */
} parsed_request;

static void parsed_request_free(parsed_request *r)
{
    free(r->headers);
    free(r->text);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *bigger = realloc(buf, 2 * cap + 1);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    bool failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Cuts the line starting at *cursor (LF or CRLF ended) and advances past it; NULL at the end. */
static char *next_line(char **cursor, char *end)
{
    char *s = *cursor;
    if (s >= end) return NULL;
    char *nl = memchr(s, '\n', (size_t)(end - s));
    char *line_end = nl ? nl : end;
    *cursor = nl ? nl + 1 : end;
    if (line_end > s && line_end[-1] == '\r') line_end--;
    *line_end = '\0';
    return s;
}

static bool parse_request(const char *file, parsed_request *r, char *err, size_t err_len)
{
    memset(r, 0, sizeof *r);
    size_t len = 0;
    r->text = read_file(file, &len);
    if (!r->text) {
        snprintf(err, err_len, "cannot read %s: %s", file, strerror(errno ? errno : EIO));
        return false;
    }
    char *cursor = r->text, *end = r->text + len;

    /* Request line: the method up to the first space, the version after the last one; the
     * target in between may itself contain spaces, as raw paths in the suite do. */
    char *line = next_line(&cursor, end);
    char *sp1 = line ? strchr(line, ' ') : NULL;
    char *sp2 = line ? strrchr(line, ' ') : NULL;
    if (!sp1 || sp2 == sp1 || strncmp(sp2 + 1, "HTTP/", 5) != 0) {
        snprintf(err, err_len, "%s: first line is not \"METHOD target HTTP/1.1\"", file);
        return false;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    r->method = line;
    r->path = sp1 + 1;
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }

    size_t cap = 0;
    for (;;) {
        line = next_line(&cursor, end);
        if (!line || !*line) break; /* end of file or the blank line before the body */
        const char *name, *value;
        if (*line == ' ' || *line == '\t') {
            if (!r->n_headers) {
                snprintf(err, err_len, "%s: continuation line before any header", file);
                return false;
            }
            name = r->headers[r->n_headers - 1].name;
            value = line;
        } else {
            char *colon = strchr(line, ':');
            if (!colon || colon == line) {
                snprintf(err, err_len, "%s: header line \"%s\" is not Name:value", file, line);
                return false;
            }
            *colon = '\0';
            name = line;
            value = colon + 1;
        }
        if (r->n_headers == cap) {
            cap = cap ? 2 * cap : 8;
            sigv4_header *grown = realloc(r->headers, cap * sizeof *grown);
            if (!grown) {
                snprintf(err, err_len, "out of memory");
                return false;
            }
            r->headers = grown;
        }
        r->headers[r->n_headers++] = (sigv4_header){name, value};
    }
    r->body = (const uint8_t *)cursor;
    r->body_len = (size_t)(end - cursor);
    return true;
}

static const char *json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Reads a boolean member: absent -> fallback; present but not a boolean -> false in *ok. */
static bool json_flag(json_t *obj, const char *key, bool fallback, bool *ok)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return fallback;
    if (!json_is_boolean(v)) *ok = false;
    return json_is_true(v);
}

/* "2015-08-30T12:36:00Z" -> "20150830T123600Z" through the library's formatter. */
static bool iso8601_to_amz_date(const char *iso, char out[17])
{
    struct tm tm = {0};
    const char *rest = iso ? strptime(iso, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
    if (!rest || *rest) return false;
    sigv4_amz_date((long long)timegm(&tm), out);
    return out[0] != '\0';
}

typedef struct {
    json_t *root;
    sigv4_params params;
    char amz_date[17];
} parsed_context;

static bool parse_context(const char *file, parsed_context *c, char *err, size_t err_len)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    c->root = json_load_file(file, 0, &jerr);
    if (!c->root) {
        snprintf(err, err_len, "%s:%d: %s", file, jerr.line, jerr.text);
        return false;
    }
    json_t *creds = json_object_get(c->root, "credentials");
    sigv4_params *p = &c->params;
    p->access_key_id = json_str(creds, "access_key_id");
    p->secret_access_key = json_str(creds, "secret_access_key");
    p->session_token = json_str(creds, "token");
    p->region = json_str(c->root, "region");
    p->service = json_str(c->root, "service");
    bool flags_ok = true;
    p->normalize_path = json_flag(c->root, "normalize", true, &flags_ok);
    p->sign_body = json_flag(c->root, "sign_body", false, &flags_ok);
    if (!p->access_key_id || !p->secret_access_key || !p->region || !p->service) {
        snprintf(err, err_len,
                 "%s: needs credentials.access_key_id, credentials.secret_access_key, "
                 "region and service as strings",
                 file);
        return false;
    }
    if (!flags_ok) {
        snprintf(err, err_len, "%s: normalize and sign_body must be true or false", file);
        return false;
    }
    if (!iso8601_to_amz_date(json_str(c->root, "timestamp"), c->amz_date)) {
        snprintf(err, err_len, "%s: timestamp must be a string \"YYYY-MM-DDTHH:MM:SSZ\"", file);
        return false;
    }
    p->amz_date = c->amz_date;
    return true;
}

int main(int argc, char **argv)
{
    const char *context_file = NULL, *request_file = NULL, *what = NULL;
    for (int i = 1; i < argc; i++) {
        const char **slot = strcmp(argv[i], "--context") == 0   ? &context_file
                            : strcmp(argv[i], "--request") == 0 ? &request_file
                            : strcmp(argv[i], "--print") == 0   ? &what
                                                                : NULL;
        if (!slot) return usage_error("unknown argument \"%s\"", argv[i]);
        if (i + 1 >= argc) return usage_error("%s needs a value", argv[i]);
        *slot = argv[++i];
    }
    if (!context_file || !request_file || !what)
        return usage_error("%s", "--context, --request and --print are all required");
    if (strcmp(what, "canonical-request") != 0 && strcmp(what, "string-to-sign") != 0 &&
        strcmp(what, "signature") != 0 && strcmp(what, "authorization") != 0)
        return usage_error("cannot print \"%s\"", what);

    char err[512];
    parsed_context ctx;
    parsed_request req = {0};
    int rc = 2;
    bool have_ctx = parse_context(context_file, &ctx, err, sizeof err);
    bool have_req = have_ctx && parse_request(request_file, &req, err, sizeof err);
    if (!have_ctx || !have_req) {
        usage_error("%s", err);
        goto done;
    }

    sigv4_request sreq = {req.method,    req.path, req.query,   req.headers,
                          req.n_headers, req.body, req.body_len};
    sigv4_result res;
    if (!sigv4_sign(&sreq, &ctx.params, &res, err, sizeof err)) {
        usage_error("cannot sign this request: %s", err);
        goto done;
    }
    const char *product = strcmp(what, "canonical-request") == 0 ? res.canonical_request
                          : strcmp(what, "string-to-sign") == 0  ? res.string_to_sign
                          : strcmp(what, "signature") == 0       ? res.signature
                                                                 : res.authorization;
    size_t n = strlen(product);
    rc = fwrite(product, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : 1;
    if (rc) fprintf(stderr, "chatflow-sigv4: writing the output failed: %s\n", strerror(errno));
    sigv4_result_free(&res);

done:
    parsed_request_free(&req);
    json_decref(ctx.root);
    return rc;
}
