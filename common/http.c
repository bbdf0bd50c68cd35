/*
 * http — see http.h for the contract.
 *
 * Threading: libmicrohttpd's internal polling thread with a thread pool
 * (MHD_USE_AUTO_INTERNAL_THREAD + MHD_OPTION_THREAD_POOL_SIZE), not a thread per connection.
 * The admin port serves scrapes, health probes and a few operator queries: the pool bounds the
 * threads the service spends on it no matter how many clients connect, and each pool thread
 * multiplexes its connections with epoll. The price is that a handler blocks one pool thread
 * while it runs, which is why health checks must report cached state and slow routes (the
 * consumer's SQL reports) should be few; size the pool for how many may run at once.
 *
 * Routes are a small array searched linearly: there are about ten of them.
 */
#include "http.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_BODY (64 * 1024)
#define CONNECTION_TIMEOUT_S 30u
/* Scrapers and probes need a handful of connections; the cap keeps a flood of idle ones from
 * taking the file descriptors the services need (MHD refuses beyond it at accept). */
#define ADMIN_CONNECTION_LIMIT 128u

typedef struct {
    char *method;
    char *path; /* without the trailing '*' for prefixes */
    bool prefix;
    route_fn fn;
    void *ctx;
} route;

typedef struct {
    char *name;
    health_check_fn fn;
    void *ctx;
} check;

struct admin_http {
    struct MHD_Daemon *daemon;
    route *routes;
    size_t n_routes;
    check *checks;
    size_t n_checks;
    check liveness; /* fn NULL: live while the server answers */
    check serving;  /* fn NULL: always serving */
    unsigned int connection_limit;
    int port;
};

struct http_request {
    struct MHD_Connection *connection;
    const char *method;
    const char *path;
    char *body; /* NUL-terminated for convenience; NULL when none */
    size_t body_len;
    bool too_large;
};

static _Noreturn void out_of_memory(void)
{
    log_error("http", "out of memory configuring the admin server");
    abort();
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) out_of_memory();
    return p;
}

/* ---- request accessors ---- */

const char *http_request_method(const http_request *req) { return req->method; }
const char *http_request_path(const http_request *req) { return req->path; }

const char *http_request_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_request_arg(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_request_body(const http_request *req, size_t *len)
{
    if (len) *len = req->body_len;
    return req->body;
}

/* ---- JSON bodies ---- */

static char *json_error_body(const char *msg)
{
    json_t *obj = json_pack("{s:s}", "error", msg ? msg : "");
    if (!obj) obj = json_pack("{s:s}", "error", "(message not valid UTF-8)");
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    return text;
}

void http_respond_error(http_response *resp, int status, const char *msg)
{
    free(resp->body);
    resp->status = status;
    resp->body = json_error_body(msg);
    resp->content_type = "application/json";
}

/* ---- built-in routes ---- */

static void serve_metrics(void *ctx, const http_request *req, http_response *resp)
{
    (void)req;
    /* Run the liveness check first: gauges it keeps (stuck loops) are then current at every
     * scrape, even where nothing probes /health/live. */
    const admin_http *h = ctx;
    if (h->liveness.fn) {
        char ignored[256];
        h->liveness.fn(h->liveness.ctx, ignored, sizeof ignored);
    }
    resp->body = metrics_render();
    if (!resp->body) {
        http_respond_error(resp, 500, "cannot render metrics");
        return;
    }
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* One check as {"status":..., "detail":...}: 200 when it passes (or is not set), else 503. */
static void serve_single_check(const check *c, http_response *resp)
{
    bool ok = true;
    char detail[512] = "";
    if (c->fn) ok = c->fn(c->ctx, detail, sizeof detail);
    detail[sizeof detail - 1] = '\0';
    json_t *root = c->fn ? json_pack("{s:s, s:s}", "status", ok ? "UP" : "DOWN", "detail", detail)
                         : json_pack("{s:s}", "status", "UP");
    resp->body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!resp->body) {
        http_respond_error(resp, 500, "cannot build the health report");
        return;
    }
    resp->status = ok ? 200 : 503;
}

static void serve_live(void *ctx, const http_request *req, http_response *resp)
{
    (void)req;
    serve_single_check(&((const admin_http *)ctx)->liveness, resp);
}

static void serve_serving(void *ctx, const http_request *req, http_response *resp)
{
    (void)req;
    serve_single_check(&((const admin_http *)ctx)->serving, resp);
}

static json_t *check_result(const check *c, bool *healthy)
{
    char detail[256] = "";
    bool ok = c->fn(c->ctx, detail, sizeof detail);
    detail[sizeof detail - 1] = '\0';
    if (!ok) *healthy = false;
    json_t *result = json_pack("{s:s, s:s}", "status", ok ? "UP" : "DOWN", "detail", detail);
    if (!result)
        result = json_pack("{s:s, s:s}", "status", ok ? "UP" : "DOWN", "detail",
                           "(detail not valid UTF-8)");
    return result;
}

static void serve_ready(void *ctx, const http_request *req, http_response *resp)
{
    (void)req;
    const admin_http *h = ctx;
    bool healthy = true;
    json_t *checks = json_object();
    for (size_t i = 0; checks && i < h->n_checks; i++)
        json_object_set_new(checks, h->checks[i].name, check_result(&h->checks[i], &healthy));
    json_t *root = json_pack("{s:s, s:o}", "status", healthy ? "UP" : "DOWN", "checks", checks);
    resp->body = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!resp->body) {
        http_respond_error(resp, 500, "cannot build the health report");
        return;
    }
    resp->status = healthy ? 200 : 503;
}

/* ---- set-up ---- */

admin_http *admin_http_new(void)
{
    admin_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    admin_http_add_route(h, "GET", "/metrics", serve_metrics, h);
    h->connection_limit = ADMIN_CONNECTION_LIMIT;
    admin_http_add_route(h, "GET", "/health/live", serve_live, h);
    admin_http_add_route(h, "GET", "/health/serving", serve_serving, h);
    admin_http_add_route(h, "GET", "/health/ready", serve_ready, h);
    admin_http_add_route(h, "GET", "/health", serve_ready, h);
    return h;
}

void admin_http_add_check(admin_http *h, const char *name, health_check_fn fn, void *ctx)
{
    if (h->daemon) {
        log_error("http", "health check %s added after start; ignored", name);
        return;
    }
    check *grown = realloc(h->checks, (h->n_checks + 1) * sizeof *grown);
    if (!grown) out_of_memory();
    h->checks = grown;
    h->checks[h->n_checks++] = (check){xstrdup(name), fn, ctx};
}

void admin_http_set_liveness(admin_http *h, health_check_fn fn, void *ctx)
{
    h->liveness = (check){NULL, fn, ctx};
}

void admin_http_set_serving(admin_http *h, health_check_fn fn, void *ctx)
{
    h->serving = (check){NULL, fn, ctx};
}

void admin_http_set_connection_limit(admin_http *h, unsigned int limit)
{
    if (limit > 0) h->connection_limit = limit;
}

void admin_http_add_route(admin_http *h, const char *method, const char *path, route_fn fn,
                          void *ctx)
{
    if (h->daemon) {
        log_error("http", "route %s %s added after start; ignored", method, path);
        return;
    }
    route *grown = realloc(h->routes, (h->n_routes + 1) * sizeof *grown);
    if (!grown) out_of_memory();
    h->routes = grown;
    size_t len = strlen(path);
    bool prefix = len > 0 && path[len - 1] == '*';
    char *stored = xstrdup(path);
    if (prefix) stored[len - 1] = '\0';
    h->routes[h->n_routes++] = (route){xstrdup(method), stored, prefix, fn, ctx};
}

/* ---- dispatch ---- */

static bool path_matches(const route *r, const char *path)
{
    return r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0 : strcmp(path, r->path) == 0;
}

/* Exact beats prefix; a longer prefix beats a shorter one. */
static bool better_match(const route *candidate, const route *best)
{
    if (!best) return true;
    if (best->prefix != candidate->prefix) return !candidate->prefix;
    return strlen(candidate->path) > strlen(best->path);
}

static void add_allowed(char *allow, size_t len, const char *method)
{
    const char *p = allow;
    size_t m = strlen(method);
    while ((p = strstr(p, method)) != NULL) {
        bool starts = p == allow || p[-1] == ' ';
        bool ends = p[m] == '\0' || p[m] == ',';
        if (starts && ends) return;
        p += m;
    }
    size_t used = strlen(allow);
    snprintf(allow + used, len - used, "%s%s", used ? ", " : "", method);
}

/* The route to run, or NULL; then allow lists the methods the path does accept (may be ""). */
static const route *find_route(const admin_http *h, const char *method, const char *path,
                               char *allow, size_t allow_len)
{
    const route *best = NULL;
    /* HEAD is served by the GET handler; libmicrohttpd leaves the body out. */
    const char *wanted = strcmp(method, "HEAD") == 0 ? "GET" : method;
    allow[0] = '\0';
    for (size_t i = 0; i < h->n_routes; i++) {
        const route *r = &h->routes[i];
        if (!path_matches(r, path)) continue;
        add_allowed(allow, allow_len, r->method);
        if (strcmp(r->method, wanted) == 0 && better_match(r, best)) best = r;
    }
    return best;
}

/* Queues resp; takes ownership of body. */
/* A CORS preflight's answer: what a cross-origin page may send to this route. */
static void add_preflight_headers(struct MHD_Response *response, const char *methods)
{
    MHD_add_response_header(response, "Access-Control-Allow-Methods", methods);
    MHD_add_response_header(response, "Access-Control-Allow-Headers", "Authorization");
    MHD_add_response_header(response, "Access-Control-Max-Age", "600");
}

static enum MHD_Result send_response(struct MHD_Connection *connection, int status, char *body,
                                     const char *content_type, const char *allow,
                                     const char *allow_origin, int retry_after_s,
                                     const char *preflight_methods)
{
    size_t len = body ? strlen(body) : 0;
    struct MHD_Response *response;
    if (len > 0) {
        response = MHD_create_response_from_buffer_with_free_callback(len, body, free);
        if (!response) free(body);
    } else {
        free(body);
        response = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!response) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            content_type ? content_type : "application/json");
    if (allow && *allow) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
    if (allow_origin && *allow_origin) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN,
                                allow_origin);
        /* An answer that names one origin differs by the request's Origin: caches must know. */
        if (strcmp(allow_origin, "*") != 0)
            MHD_add_response_header(response, MHD_HTTP_HEADER_VARY, "Origin");
        if (preflight_methods) add_preflight_headers(response, preflight_methods);
    }
    if (retry_after_s > 0) {
        char seconds[16];
        snprintf(seconds, sizeof seconds, "%d", retry_after_s);
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    enum MHD_Result queued = MHD_queue_response(connection, (unsigned int)status, response);
    MHD_destroy_response(response);
    return queued;
}

static enum MHD_Result send_error(struct MHD_Connection *connection, int status, const char *msg,
                                  const char *allow)
{
    return send_response(connection, status, json_error_body(msg), NULL, allow, NULL, 0, NULL);
}

static enum MHD_Result dispatch(const admin_http *h, http_request *req)
{
    char allow[128];
    const route *r = find_route(h, req->method, req->path, allow, sizeof allow);
    if (!r) {
        char msg[320];
        if (allow[0]) {
            snprintf(msg, sizeof msg, "method %s not allowed on %s", req->method, req->path);
            return send_error(req->connection, 405, msg, allow);
        }
        snprintf(msg, sizeof msg, "no such path: %s", req->path);
        return send_error(req->connection, 404, msg, NULL);
    }
    http_response resp = {.status = 200};
    r->fn(r->ctx, req, &resp);
    if (resp.status < 100 || resp.status > 599) {
        log_error("http", "handler for %s %s answered status %d", r->method, req->path,
                  resp.status);
        free(resp.body);
        return send_error(req->connection, 500, "internal error", NULL);
    }
    return send_response(req->connection, resp.status, resp.body, resp.content_type, NULL,
                         resp.allow_origin, resp.retry_after_s, resp.preflight_methods);
}

/* Appends one piece of an upload; past MAX_BODY the body is dropped and 413 answered at the end. */
static void take_upload(http_request *req, const char *data, size_t size)
{
    if (req->too_large) return;
    if (req->body_len + size > MAX_BODY) {
        req->too_large = true;
        free(req->body);
        req->body = NULL;
        req->body_len = 0;
        return;
    }
    char *grown = realloc(req->body, req->body_len + size + 1);
    if (!grown) {
        req->too_large = true; /* answered as 413: we cannot hold it */
        return;
    }
    memcpy(grown + req->body_len, data, size);
    req->body_len += size;
    grown[req->body_len] = '\0';
    req->body = grown;
}

static bool declared_too_large(struct MHD_Connection *connection)
{
    const char *length =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return length && strtoull(length, NULL, 10) > MAX_BODY;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **state)
{
    (void)version;
    const admin_http *h = cls;
    http_request *req = *state;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req) return MHD_NO;
        *req = (http_request){connection, method, url, NULL, 0, false};
        *state = req;
        /* Refuse before reading a body we would not keep (libmicrohttpd then closes). */
        if (declared_too_large(connection)) {
            req->too_large = true;
            return send_error(connection, 413, "request body larger than 64 KiB", NULL);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        take_upload(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->too_large) return send_error(connection, 413, "request body larger than 64 KiB", NULL);
    return dispatch(h, req);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **state,
                         enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)connection;
    (void)code;
    http_request *req = *state;
    if (!req) return;
    free(req->body);
    free(req);
    *state = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n') msg[--n] = '\0';
    log_warn("http", "libmicrohttpd: %s", msg);
}

/* ---- start / stop ---- */

bool admin_http_start(admin_http *h, const char *bind_addr, int port, int threads, char *err,
                      size_t err_len)
{
    if (h->daemon) {
        snprintf(err, err_len, "admin HTTP server already started");
        return false;
    }
    if (port < 0 || port > 65535) {
        snprintf(err, err_len, "admin HTTP port %d is out of range 0..65535", port);
        return false;
    }
    if (threads < 1 || threads > 64) {
        snprintf(err, err_len, "admin HTTP thread count %d is out of range 1..64", threads);
        return false;
    }
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    const struct sockaddr *addr;
    unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (bind_addr && inet_pton(AF_INET, bind_addr, &v4.sin_addr) == 1) {
        addr = (const struct sockaddr *)&v4;
    } else if (bind_addr && inet_pton(AF_INET6, bind_addr, &v6.sin6_addr) == 1) {
        addr = (const struct sockaddr *)&v6;
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, err_len, "admin HTTP bind address \"%s\" is not an IPv4 or IPv6 address",
                 bind_addr ? bind_addr : "(null)");
        return false;
    }
    errno = 0;
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
        MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
        h->connection_limit, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, err_len, "admin HTTP server cannot listen on %s:%d: %s", bind_addr, port,
                 errno ? strerror(errno) : "libmicrohttpd refused to start");
        return false;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    return true;
}

int admin_http_port(const admin_http *h) { return h->daemon ? h->port : 0; }

void admin_http_free(admin_http *h)
{
    if (!h) return;
    if (h->daemon) MHD_stop_daemon(h->daemon);
    for (size_t i = 0; i < h->n_routes; i++) {
        free(h->routes[i].method);
        free(h->routes[i].path);
    }
    for (size_t i = 0; i < h->n_checks; i++) free(h->checks[i].name);
    free(h->routes);
    free(h->checks);
    free(h);
}
