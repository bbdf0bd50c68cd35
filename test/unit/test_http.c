/* test_http — the admin server on 127.0.0.1:<free port>, driven over real sockets with libcurl. */
/* test-passes: asan tsan */
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "testlib.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct {
    long status;
    char *body;
    size_t len;
    char content_type[128];
    char allow[128];
} reply;

static int port;

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
    reply *r = userdata;
    size_t add = size * n;
    char *grown = realloc(r->body, r->len + add + 1);
    if (!grown) return 0;
    memcpy(grown + r->len, data, add);
    r->len += add;
    grown[r->len] = '\0';
    r->body = grown;
    return add;
}

static void copy_header_value(char *dst, size_t dst_len, const char *line, size_t len,
                              size_t name_len)
{
    const char *v = line + name_len;
    size_t vlen = len - name_len;
    while (vlen > 0 && (*v == ' ')) v++, vlen--;
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n')) vlen--;
    snprintf(dst, dst_len, "%.*s", (int)vlen, v);
}

static size_t on_header(char *line, size_t size, size_t n, void *userdata)
{
    reply *r = userdata;
    size_t len = size * n;
    if (len > 13 && strncasecmp(line, "Content-Type:", 13) == 0)
        copy_header_value(r->content_type, sizeof r->content_type, line, len, 13);
    if (len > 6 && strncasecmp(line, "Allow:", 6) == 0)
        copy_header_value(r->allow, sizeof r->allow, line, len, 6);
    return len;
}

struct upload {
    const char *data;
    size_t len, pos;
};

static size_t on_read(char *buf, size_t size, size_t n, void *userdata)
{
    struct upload *u = userdata;
    size_t take = size * n;
    if (take > u->len - u->pos) take = u->len - u->pos;
    memcpy(buf, u->data + u->pos, take);
    u->pos += take;
    return take;
}

/* One request. body may be NULL; chunked sends it without a Content-Length. */
static reply fetch(const char *method, const char *path, const char *body, size_t body_len,
                   bool chunked)
{
    reply r = {0};
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    struct upload up = {body, body_len, 0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (body && chunked) {
        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(curl, CURLOPT_READDATA, &up);
    } else if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    headers = curl_slist_append(headers, "Expect:"); /* send bodies straight away */
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    else
        NOTE("%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

static json_t *parse(const reply *r)
{
    json_error_t e;
    return json_loads(r->body, 0, &e);
}

static const char *json_path(json_t *root, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(root, a);
    if (b) v = json_object_get(v, b);
    if (c) v = json_object_get(v, c);
    return json_string_value(v);
}

/* ---- checks and routes under test ---- */

static atomic_bool queue_ok = true;

static bool check_database(void *ctx, char *detail, size_t len)
{
    (void)ctx;
    snprintf(detail, len, "pool 4/4 idle");
    return true;
}

static bool check_queue(void *ctx, char *detail, size_t len)
{
    (void)ctx;
    bool ok = atomic_load(&queue_ok);
    snprintf(detail, len, ok ? "last receive 1 s ago" : "SQS unreachable: \"connect refused\"");
    return ok;
}

static void route_echo_args(void *ctx, const http_request *req, http_response *resp)
{
    (void)ctx;
    const char *name = http_request_arg(req, "name");
    const char *n = http_request_arg(req, "n");
    if (!name) {
        http_respond_error(resp, 400, "missing parameter name");
        return;
    }
    json_t *o = json_pack("{s:s, s:s?, s:s, s:s}", "name", name, "n", n, "method",
                          http_request_method(req), "path", http_request_path(req));
    resp->body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
}

static void route_room(void *ctx, const http_request *req, http_response *resp)
{
    resp->body = strdup(http_request_path(req));
    resp->content_type = ctx; /* "text/plain" */
}

static void route_room_exact(void *ctx, const http_request *req, http_response *resp)
{
    (void)ctx;
    (void)req;
    resp->body = strdup("exact");
    resp->content_type = "text/plain";
}

static void route_body(void *ctx, const http_request *req, http_response *resp)
{
    (void)ctx;
    size_t len = 0;
    const char *body = http_request_body(req, &len);
    char sum_text[64];
    unsigned long long sum = 0;
    for (size_t i = 0; i < len; i++) sum += (unsigned char)body[i];
    snprintf(sum_text, sizeof sum_text, "%zu %llu", len, sum);
    resp->status = 201;
    resp->body = strdup(sum_text);
    resp->content_type = "text/plain";
}

static void route_empty(void *ctx, const http_request *req, http_response *resp)
{
    (void)ctx;
    (void)req;
    resp->status = 204;
}

static void route_bad_status(void *ctx, const http_request *req, http_response *resp)
{
    (void)ctx;
    (void)req;
    resp->status = 42;
    resp->body = strdup("never sent");
}

static unsigned long long byte_sum(const char *p, size_t n)
{
    unsigned long long sum = 0;
    for (size_t i = 0; i < n; i++) sum += (unsigned char)p[i];
    return sum;
}

static void test_start_errors(void)
{
    char err[256];
    admin_http *h = admin_http_new();
    bool ok = admin_http_start(h, "not-an-address", 0, 2, err, sizeof err);
    CHECK(!ok && strstr(err, "not-an-address"), "bad bind address refused: %s", err);
    ok = admin_http_start(h, "127.0.0.1", 70000, 2, err, sizeof err);
    CHECK(!ok && strstr(err, "70000"), "bad port refused: %s", err);
    ok = admin_http_start(h, "127.0.0.1", 0, 0, err, sizeof err);
    CHECK(!ok && strstr(err, "thread"), "zero threads refused: %s", err);
    CHECK_INT(admin_http_port(h), 0, "not started: port 0");
    admin_http_free(h);
}

static void test_port_in_use(int busy_port)
{
    char err[256];
    admin_http *h = admin_http_new();
    bool ok = admin_http_start(h, "127.0.0.1", busy_port, 1, err, sizeof err);
    CHECK(!ok && strstr(err, "cannot listen"), "a port in use is an error: %s", err);
    admin_http_free(h);
}

int main(void)
{
    log_init("error", "text"); /* keep libmicrohttpd chatter out of the test output */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_start_errors();

    metric_counter_add(metrics_counter("t_http_hits_total", "Hits.", NULL), 3);
    admin_http *h = admin_http_new();
    admin_http_add_check(h, "database", check_database, NULL);
    admin_http_add_check(h, "sqs", check_queue, NULL);
    admin_http_add_route(h, "GET", "/api/echo", route_echo_args, NULL);
    admin_http_add_route(h, "GET", "/api/rooms/*", route_room, "text/plain");
    admin_http_add_route(h, "GET", "/api/rooms/special", route_room_exact, NULL);
    admin_http_add_route(h, "POST", "/api/body", route_body, NULL);
    admin_http_add_route(h, "PUT", "/api/body", route_body, NULL);
    admin_http_add_route(h, "DELETE", "/api/empty", route_empty, NULL);
    admin_http_add_route(h, "GET", "/api/bad", route_bad_status, NULL);
    char err[256] = "";
    bool started = admin_http_start(h, "127.0.0.1", 0, 2, err, sizeof err);
    CHECK(started, "server starts on 127.0.0.1 port 0 (%s)", err);
    port = admin_http_port(h);
    CHECK(port > 0 && port <= 65535, "port 0 resolved to a real port (%d)", port);
    if (!started) return TEST_DONE();
    test_port_in_use(port);

    reply r = fetch("GET", "/health/live", NULL, 0, false);
    CHECK_INT(r.status, 200, "GET /health/live 200");
    CHECK_STR(r.body, "{\"status\":\"UP\"}", "live body");
    CHECK_STR(r.content_type, "application/json", "live is JSON");
    free(r.body);

    r = fetch("GET", "/metrics", NULL, 0, false);
    CHECK_INT(r.status, 200, "GET /metrics 200");
    CHECK_STR(r.content_type, "text/plain; version=0.0.4; charset=utf-8", "metrics content type");
    CHECK(strstr(r.body, "# TYPE t_http_hits_total counter\nt_http_hits_total 3\n") != NULL,
          "metrics body is the registry");
    free(r.body);

    r = fetch("GET", "/health/ready", NULL, 0, false);
    CHECK_INT(r.status, 200, "ready 200 while every check passes");
    json_t *j = parse(&r);
    CHECK_STR(json_path(j, "status", NULL, NULL), "UP", "ready status UP");
    CHECK_STR(json_path(j, "checks", "database", "status"), "UP", "database check listed UP");
    CHECK_STR(json_path(j, "checks", "database", "detail"), "pool 4/4 idle", "database detail");
    CHECK_STR(json_path(j, "checks", "sqs", "status"), "UP", "sqs check listed UP");
    json_decref(j);
    free(r.body);

    atomic_store(&queue_ok, false);
    const char *ready_paths[] = {"/health/ready", "/health"};
    for (int i = 0; i < 2; i++) {
        r = fetch("GET", ready_paths[i], NULL, 0, false);
        CHECK_INT(r.status, 503, "%s 503 when a check fails", ready_paths[i]);
        j = parse(&r);
        CHECK(j != NULL, "%s body is JSON", ready_paths[i]);
        CHECK_STR(json_path(j, "status", NULL, NULL), "DOWN", "%s status DOWN", ready_paths[i]);
        CHECK_STR(json_path(j, "checks", "sqs", "status"), "DOWN", "%s names the failing check",
                  ready_paths[i]);
        CHECK_STR(json_path(j, "checks", "sqs", "detail"), "SQS unreachable: \"connect refused\"",
                  "%s carries the detail, escaped", ready_paths[i]);
        CHECK_STR(json_path(j, "checks", "database", "status"), "UP",
                  "%s still lists the passing check", ready_paths[i]);
        json_decref(j);
        free(r.body);
    }
    atomic_store(&queue_ok, true);
    r = fetch("GET", "/health", NULL, 0, false);
    CHECK_INT(r.status, 200, "/health back to 200 when the check recovers");
    free(r.body);

    r = fetch("GET", "/nope", NULL, 0, false);
    CHECK_INT(r.status, 404, "unknown path 404");
    j = parse(&r);
    CHECK_STR(json_path(j, "error", NULL, NULL), "no such path: /nope", "404 JSON error body");
    json_decref(j);
    free(r.body);

    r = fetch("POST", "/metrics", "x", 1, false);
    CHECK_INT(r.status, 405, "POST /metrics 405");
    CHECK_STR(r.allow, "GET", "405 carries Allow: GET");
    j = parse(&r);
    CHECK(json_path(j, "error", NULL, NULL) != NULL, "405 JSON error body");
    json_decref(j);
    free(r.body);

    r = fetch("GET", "/api/body", NULL, 0, false);
    CHECK_INT(r.status, 405, "GET on a POST/PUT route 405");
    CHECK_STR(r.allow, "POST, PUT", "Allow lists every method of the path");
    free(r.body);

    r = fetch("GET", "/api/echo?name=ann%20lee&n=3", NULL, 0, false);
    CHECK_INT(r.status, 200, "route with args 200");
    j = parse(&r);
    CHECK_STR(json_path(j, "name", NULL, NULL), "ann lee", "query arg decoded");
    CHECK_STR(json_path(j, "n", NULL, NULL), "3", "second query arg");
    CHECK_STR(json_path(j, "path", NULL, NULL), "/api/echo", "path excludes the query string");
    CHECK_STR(json_path(j, "method", NULL, NULL), "GET", "method seen by the handler");
    json_decref(j);
    free(r.body);

    r = fetch("GET", "/api/echo", NULL, 0, false);
    CHECK_INT(r.status, 400, "handler error via http_respond_error");
    CHECK_STR(r.body, "{\"error\":\"missing parameter name\"}", "http_respond_error JSON body");
    free(r.body);

    r = fetch("GET", "/api/rooms/7/messages", NULL, 0, false);
    CHECK_INT(r.status, 200, "prefix route matches");
    CHECK_STR(r.body, "/api/rooms/7/messages", "prefix handler sees the full path");
    CHECK_STR(r.content_type, "text/plain", "handler content type");
    free(r.body);
    r = fetch("GET", "/api/rooms/special", NULL, 0, false);
    CHECK_STR(r.body, "exact", "exact route beats prefix");
    free(r.body);
    r = fetch("GET", "/api/room", NULL, 0, false);
    CHECK_INT(r.status, 404, "shorter than the prefix is 404");
    free(r.body);

    static char big[64 * 1024 + 1];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)('a' + i % 26);
    r = fetch("POST", "/api/body", big, 1000, false);
    char want[64];
    snprintf(want, sizeof want, "1000 %llu", byte_sum(big, 1000));
    CHECK_INT(r.status, 201, "POST body 201");
    CHECK_STR(r.body, want, "handler got the whole POST body");
    free(r.body);

    r = fetch("PUT", "/api/body", big, 64 * 1024, false);
    snprintf(want, sizeof want, "%d %llu", 64 * 1024, byte_sum(big, 64 * 1024));
    CHECK_STR(r.body, want, "a 64 KiB body is accepted whole");
    free(r.body);

    r = fetch("POST", "/api/body", big, 64 * 1024 + 1, false);
    CHECK_INT(r.status, 413, "64 KiB + 1 with Content-Length -> 413");
    j = parse(&r);
    CHECK(json_path(j, "error", NULL, NULL) != NULL, "413 JSON error body");
    json_decref(j);
    free(r.body);

    r = fetch("POST", "/api/body", big, 64 * 1024 + 1, true);
    CHECK_INT(r.status, 413, "64 KiB + 1 chunked (no Content-Length) -> 413");
    free(r.body);

    r = fetch("POST", "/api/body", big, 5000, true);
    snprintf(want, sizeof want, "5000 %llu", byte_sum(big, 5000));
    CHECK_STR(r.body, want, "a chunked body under the limit arrives whole");
    free(r.body);

    r = fetch("DELETE", "/api/empty", NULL, 0, false);
    CHECK_INT(r.status, 204, "handler without a body");
    CHECK_INT(r.len, 0, "empty body");
    free(r.body);

    r = fetch("GET", "/api/bad", NULL, 0, false);
    CHECK_INT(r.status, 500, "an invalid handler status becomes 500");
    free(r.body);

    r = fetch("HEAD", "/health/live", NULL, 0, false);
    CHECK_INT(r.status, 200, "HEAD served by the GET route");
    free(r.body);

    admin_http_free(h);
    r = fetch("GET", "/health/live", NULL, 0, false);
    CHECK_INT(r.status, 0, "after admin_http_free nothing answers");
    free(r.body);
    metrics_reset();
    curl_global_cleanup();
    return TEST_DONE();
}
