/*
 * http — the admin HTTP server of both services, on libmicrohttpd.
 *
 * Contract:
 *  - admin_http_start() listens on bind_addr:port with a libmicrohttpd internal thread pool
 *    (threads > 0) and serves, built in:
 *      GET /metrics        metrics_render(), Content-Type text/plain; version=0.0.4
 *      GET /health/live    200/503 {"status":"UP"|"DOWN","detail":"..."}: the liveness check
 *                          (admin_http_set_liveness; the services use watchdog.h) — fails only
 *                          when the process is stuck, never because a dependency is down
 *      GET /health/serving 200/503 likewise for the serving check (admin_http_set_serving):
 *                          accepting clients and not draining — what a load balancer routes on
 *      GET /health/ready   200/503
 * {"status":"UP"|"DOWN","checks":{"<name>":{"status":"UP","detail":"..."}}} dependency readiness,
 * for operators and alerts (not for restarts) GET /health         alias of /health/ready plus the
 * routes added with admin_http_add_route(). Unknown path -> 404, known path with the wrong method
 * -> 405 with an Allow header; both with a JSON body {"error":"..."}.
 *  - Routes and checks are added before admin_http_start() (they are read without locking).
 *  - Health checks are called on the server's threads, concurrently: they must be thread-safe and
 *    bounded (a check that calls a dependency does so with a short timeout of its own).
 *  - At most admin_http_set_connection_limit() connections (default 128) are open at once.
 *  - A route handler fills an http_response; body is malloc'd and ownership passes to the
 *    server, which frees it. A handler that sets allow_origin gets an Access-Control-Allow-Origin
 *    header on its answer (for pages served from another origin), and one that also sets
 *    preflight_methods answers a CORS preflight (a page's fetch with an Authorization header).
 * Request arguments come from http_request_arg(); a POST body is delivered whole (up to 64 KiB,
 * else 413).
 *  - port 0 picks a free port; admin_http_port() tells which.
 */
#ifndef CHATFLOW_HTTP_H
#define CHATFLOW_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct admin_http admin_http;
typedef struct http_request http_request;

typedef struct {
    int status;
    char *body;               /* malloc'd; freed by the server */
    const char *content_type; /* NULL -> application/json */
    const char *allow_origin; /* NULL -> no CORS header; else Access-Control-Allow-Origin */
    int retry_after_s;        /* > 0 -> a Retry-After header (with 503: try again then) */
    /* A CORS preflight answer (OPTIONS): with allow_origin set, the methods a page may use here,
     * sent as Access-Control-Allow-Methods with Allow-Headers: Authorization and Max-Age 600. */
    const char *preflight_methods;
} http_response;

/* Returns true when healthy; writes a short human detail either way. */
typedef bool (*health_check_fn)(void *ctx, char *detail, size_t detail_len);
typedef void (*route_fn)(void *ctx, const http_request *req, http_response *resp);

const char *http_request_method(const http_request *req);
const char *http_request_path(const http_request *req);
/* Query-string argument value, NULL when absent. */
const char *http_request_arg(const http_request *req, const char *name);
/* A request header's value (name case-insensitive), or NULL. */
const char *http_request_header(const http_request *req, const char *name);
const char *http_request_body(const http_request *req, size_t *len);

admin_http *admin_http_new(void);
void admin_http_add_check(admin_http *h, const char *name, health_check_fn fn, void *ctx);
void admin_http_set_liveness(admin_http *h, health_check_fn fn, void *ctx);
void admin_http_set_serving(admin_http *h, health_check_fn fn, void *ctx);
void admin_http_set_connection_limit(admin_http *h, unsigned int limit);
/* path: exact path, or a prefix when it ends with a star (e.g. "/api/rooms/" plus a star). */
void admin_http_add_route(admin_http *h, const char *method, const char *path, route_fn fn,
                          void *ctx);
bool admin_http_start(admin_http *h, const char *bind_addr, int port, int threads, char *err,
                      size_t err_len);
int admin_http_port(const admin_http *h);
/* Stops the server (if started) and frees everything. */
void admin_http_free(admin_http *h);

/* Convenience for handlers: a JSON error body {"error": msg}. */
void http_respond_error(http_response *resp, int status, const char *msg);

#endif
