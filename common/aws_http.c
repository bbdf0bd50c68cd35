/* aws_http — endpoint parsing and signed POST headers for the AWS clients (see aws_http.h). */
#include "aws_http.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "errbuf.h"

bool aws_endpoint_parse(const char *url, const char *what, aws_endpoint *out, char *err,
                        size_t err_len)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    bool ok = false;
    if (!u) {
        errbuf_set(err, err_len, "out of memory");
        return false;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        errbuf_set(err, err_len, "%s \"%s\" is not a valid URL", what, url);
    } else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        errbuf_set(err, err_len, "%s \"%s\": scheme must be http or https", what, url);
    } else {
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
            snprintf(out->host, sizeof out->host, "%s:%s", host, port);
        else
            snprintf(out->host, sizeof out->host, "%s", host);
        snprintf(out->path, sizeof out->path, "%s", path && *path ? path : "/");
        ok = true;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return ok;
}

static struct curl_slist *append_header(struct curl_slist *list, const char *name,
                                        const char *value, bool *ok)
{
    char line[4200];
    if (!*ok) return list;
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *next =
        (n > 0 && (size_t)n < sizeof line) ? curl_slist_append(list, line) : NULL;
    if (!next) {
        *ok = false;
        return list;
    }
    return next;
}

#define MAX_HEADERS 8

struct curl_slist *aws_signed_post_headers(const aws_endpoint *ep, const sigv4_header *headers,
                                           size_t n_headers, const char *body, size_t body_len,
                                           const aws_credentials *creds, const char *region,
                                           const char *service, char *err, size_t err_len)
{
    if (n_headers + 1 > MAX_HEADERS) {
        errbuf_set(err, err_len, "too many headers (%zu)", n_headers);
        return NULL;
    }
    sigv4_header all[MAX_HEADERS];
    all[0] = (sigv4_header){"Host", ep->host};
    memcpy(all + 1, headers, n_headers * sizeof *headers);

    char amz_date[17];
    sigv4_amz_date((long long)time(NULL), amz_date);
    const sigv4_request req = {
        .method = "POST",
        .path = ep->path,
        .query = NULL,
        .headers = all,
        .n_headers = n_headers + 1,
        .body = (const uint8_t *)body,
        .body_len = body_len,
    };
    const sigv4_params params = {
        .access_key_id = creds->access_key_id,
        .secret_access_key = creds->secret_access_key,
        .session_token = creds->session_token,
        .region = region,
        .service = service,
        .amz_date = amz_date,
        .normalize_path = true,
        .sign_body = false,
    };
    sigv4_result sig;
    if (!sigv4_sign(&req, &params, &sig, err, err_len)) return NULL;

    bool ok = true;
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < req.n_headers; i++)
        list = append_header(list, all[i].name, all[i].value, &ok);
    for (size_t i = 0; i < sig.n_added; i++)
        list = append_header(list, sig.added[i].name, sig.added[i].value, &ok);
    list = append_header(list, "Authorization", sig.authorization, &ok);
    if (ok) {
        struct curl_slist *next = curl_slist_append(list, "Expect:");
        if (next)
            list = next;
        else
            ok = false;
    }
    sigv4_result_free(&sig);
    if (!ok) {
        curl_slist_free_all(list);
        errbuf_set(err, err_len, "out of memory building the request headers");
        return NULL;
    }
    return list;
}

int aws_curl_abort_on_flag(void *flag, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const atomic_bool *f = flag;
    return f && atomic_load(f) ? 1 : 0;
}
