/*
 * ws_listen — a libwebsockets server listener as both services set it up: one context, one
 * vhost listening on bind_addr:port, keepalive from a ping interval and a pong timeout, a
 * handshake deadline, and lws's own log lines routed into log.h.
 *
 * Contract:
 *  - ws_listen_open() creates the context (lws_context_user() is cfg->user) and the vhost with
 *    cfg->protocols, and reads back the port it listens on (port 0 picks a free one). false with
 *    err set when it cannot listen; nothing is left open then. ws_listen_close() destroys the
 *    context (lws runs CLOSED for every connection still open).
 *  - Keepalive: with ping_interval_s > 0 an idle connection is pinged after ping_interval_s and
 *    hung up when nothing came back within ping_interval_s + pong_timeout_s; 0 leaves lws's
 *    defaults. The policy lives in the ws_listener, which must stay where it is while the
 *    context lives (lws keeps a pointer to it).
 *  - Handshake deadline (handshake_timeout_s > 0): lws 4.1 gives an accepted socket that never
 *    completes its upgrade no deadline of its own (a timeout set at accept is replaced during
 *    adoption, and a trickled request lives until lws's header idle timeout), so the service
 *    calls ws_listen_on_accept() on LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED, which arms a
 *    wsi timer, and ws_listen_on_upgraded() once it has a connection; LWS_CALLBACK_TIMER then
 *    means "not upgraded in time" and the callback returns -1 for it.
 *  - lws log lines (warnings and errors) go to log_write() with component "lws", one line each.
 *    The lws log level is process-wide and read unlocked by every lws thread, so it is set once
 *    per process (pthread_once), by the first ws_listen_open().
 *  - All calls but ws_listen_open()/ws_listen_close() are made on the service thread; other
 *    threads only ever call lws_cancel_service(l->context).
 */
#ifndef CHATFLOW_WS_LISTEN_H
#define CHATFLOW_WS_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

#include <libwebsockets.h>

typedef struct {
    const char *bind_addr; /* NULL or "": every interface */
    int port;              /* 0: a free port (ws_listener.port says which) */
    bool ipv4_only;
    const char *vhost_name;
    const struct lws_protocols *protocols; /* NULL-terminated; must outlive the context */
    void *user;                            /* lws_context_user() */
    int handshake_timeout_s;               /* 0: lws defaults */
    int ping_interval_s;                   /* 0: lws default keepalive */
    int pong_timeout_s;
} ws_listen_config;

typedef struct {
    struct lws_context *context;
    struct lws_vhost *vhost;
    int port;
    lws_retry_bo_t keepalive;
} ws_listener;

bool ws_listen_open(ws_listener *l, const ws_listen_config *cfg, char *err, size_t err_len);
void ws_listen_close(ws_listener *l);
void ws_listen_on_accept(struct lws *wsi, int handshake_timeout_s);
void ws_listen_on_upgraded(struct lws *wsi);

#endif
