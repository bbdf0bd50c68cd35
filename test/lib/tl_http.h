/*
 * tl_http — HTTP to the services' admin ports (127.0.0.1) with libcurl: requests with their
 * status, Prometheus metric scraping, and polling for a status. Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_http() and tl_http_get() return the malloc'd body (NULL when there was none) and set
 *    *status (0 when no answer came). tl_http() waits up to 60 s (API calls that reach the
 *    database, services under memcheck); tl_http_get() up to 5 s (health and metrics of a service
 *    that must answer at once: a hang reads as status 0 instead of stalling the test).
 *  - tl_buf with tl_buf_write is the libcurl write (or header) callback that collects a body, for
 *    a test that sets up its own request; the caller frees data.
 *  - tl_metric_sum() sums the samples of a metric in a /metrics text whose line contains filter
 *    (e.g. "action=\"SendMessageBatch\""; NULL: every series). tl_metric() scrapes a port first;
 *    -1 when /metrics did not answer 200.
 *  - The waits poll every 100 ms until the condition holds or timeout_ms passes.
 */
#ifndef CHATFLOW_TL_HTTP_H
#define CHATFLOW_TL_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *data;
    size_t len;
} tl_buf;

size_t tl_buf_write(char *ptr, size_t size, size_t nmemb, void *buf);

/* method "GET" or "POST" (empty body). */
char *tl_http(const char *method, int port, const char *path, long *status);
char *tl_http_get(int port, const char *path, long *status);
/* The status of a GET (5 s limit), body dropped. */
long tl_http_status(int port, const char *path);
bool tl_http_wait_status(int port, const char *path, long want, int timeout_ms);

double tl_metric_sum(const char *body, const char *name, const char *filter);
double tl_metric(int port, const char *name, const char *filter);
bool tl_metric_wait_at_most(int port, const char *name, double want, int timeout_ms);
/* Waits (100 ms steps) until the metric equals want; its last value (-1: none) either way. A
 * gauge the service thread updates after the client saw its answer lags the client a little. */
double tl_metric_wait_equal(int port, const char *name, double want, int timeout_ms);

#endif
