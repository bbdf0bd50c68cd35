/* tl_http — see tl_http.h. */
#include "tl_http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

#define SLOW_TIMEOUT_MS 60000L
#define QUICK_TIMEOUT_MS 5000L

size_t tl_buf_write(char *ptr, size_t size, size_t nmemb, void *buf)
{
    tl_buf *b = buf;
    size_t n = size * nmemb;
    char *d = realloc(b->data, b->len + n + 1);
    if (!d) return 0;
    memcpy(d + b->len, ptr, n);
    b->len += n;
    d[b->len] = '\0';
    b->data = d;
    return n;
}

static char *request(const char *method, int port, const char *path, long timeout_ms, long *status)
{
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    tl_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tl_buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (strcmp(method, "POST") == 0) curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    *status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return b.data;
}

char *tl_http(const char *method, int port, const char *path, long *status)
{
    return request(method, port, path, SLOW_TIMEOUT_MS, status);
}

char *tl_http_get(int port, const char *path, long *status)
{
    return request("GET", port, path, QUICK_TIMEOUT_MS, status);
}

long tl_http_status(int port, const char *path)
{
    long st = 0;
    free(tl_http_get(port, path, &st));
    return st;
}

bool tl_http_wait_status(int port, const char *path, long want, int timeout_ms)
{
    for (int t = 0; t <= timeout_ms; t += 100) {
        if (tl_http_status(port, path) == want) return true;
        time_sleep_ms(100);
    }
    return false;
}

/* One exposition line "name{labels} value" or "name value": its value when it is a sample of
 * name whose text contains filter. */
static bool sample_value(const char *line, size_t len, const char *name, const char *filter,
                         double *value)
{
    size_t nl = strlen(name);
    if (len <= nl || strncmp(line, name, nl) != 0 || (line[nl] != '{' && line[nl] != ' '))
        return false;
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%.*s", (int)(len < 1023 ? len : 1023), line);
    const char *sp = strrchr(tmp, ' ');
    if ((filter && !strstr(tmp, filter)) || !sp) return false;
    *value = strtod(sp + 1, NULL);
    return true;
}

double tl_metric_sum(const char *body, const char *name, const char *filter)
{
    double sum = 0, v;
    for (const char *line = body; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (sample_value(line, len, name, filter, &v)) sum += v;
        line = end ? end + 1 : NULL;
    }
    return sum;
}

double tl_metric(int port, const char *name, const char *filter)
{
    long st;
    char *body = tl_http("GET", port, "/metrics", &st);
    double v = body && st == 200 ? tl_metric_sum(body, name, filter) : -1;
    free(body);
    return v;
}

double tl_metric_wait_equal(int port, const char *name, double want, int timeout_ms)
{
    double v = -1;
    for (int t = 0; t <= timeout_ms; t += 100) {
        if ((v = tl_metric(port, name, NULL)) == want) break;
        time_sleep_ms(100);
    }
    return v;
}

bool tl_metric_wait_at_most(int port, const char *name, double want, int timeout_ms)
{
    for (int t = 0; t <= timeout_ms; t += 100) {
        double v = tl_metric(port, name, NULL);
        if (v >= 0 && v <= want) return true;
        time_sleep_ms(100);
    }
    return false;
}
