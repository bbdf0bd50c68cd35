/*
 * wsclient — the project's WebSocket client, on the libwebsockets client API. Written once, used
 * by the integration tests and by the load generator.
 *
 * Contract:
 *  - A wsc_ctx owns one lws client context and is serviced only by the thread that calls
 *    wsc_service() / the blocking helpers; it is not thread-safe (use one per thread).
 *  - wsc_connect() starts a connection and services the loop until it is open, refused or
 *    timed out. On refusal *http_status gets the handshake's HTTP status when there was one.
 *    Returns NULL when it did not open (the reason goes to err).
 *    (Server side, lws 4.1.6: a handshake refused by returning 1 from
 *    LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION just drops the socket — the client sees status 0.
 *    Call lws_return_http_status(wsi, 4xx, "why") first and the client gets the real status.)
 *  - Received text/binary messages are reassembled from fragments and queued per connection;
 *    an optional on_message callback sees each one instead (for the load generator).
 *  - wsc_send_text()/wsc_send_binary() queue a frame (copied) and return at once; frames go
 *    out in order on the loop, one lws_write per WRITEABLE. wsc_send_raw_fragment() writes one
 *    fragment with the given final flag (tests of fragmented frames).
 *  - wsc_recv() services the loop until a message is queued on that connection, the
 *    connection closes, or timeout_ms passes; returns a malloc'd NUL-terminated copy the caller
 *    frees (NULL on timeout/close).
 *  - wsc_set_reading(conn, false) stops reading from the socket (lws_rx_flow_control), for
 *    "client that never reads" tests. wsc_set_recv_buffer() fixes the socket's receive buffer
 *    (SO_RCVBUF, which also turns off the kernel's autotuning), so what such a client can
 *    swallow does not depend on the machine's tcp_rmem.
 *  - After the peer closes, wsc_is_closed() is true and wsc_close_info() gives the close code
 *    and reason (1006 when the socket just dropped). wsc_free() closes (if open) and frees.
 */
#ifndef CHATFLOW_WSCLIENT_H
#define CHATFLOW_WSCLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct wsc_ctx wsc_ctx;
typedef struct wsc_conn wsc_conn;

typedef void (*wsc_message_fn)(wsc_conn *c, const char *data, size_t len, bool binary, void *user);
typedef void (*wsc_close_fn)(wsc_conn *c, int code, const char *reason, void *user);

wsc_ctx *wsc_ctx_new(void);
void wsc_ctx_free(wsc_ctx *ctx);
/* Services the loop once, waiting at most timeout_ms. */
void wsc_service(wsc_ctx *ctx, int timeout_ms);

wsc_conn *wsc_connect(wsc_ctx *ctx, const char *host, int port, const char *path, int timeout_ms,
                      int *http_status, char *err, size_t err_len);
/* The same with an Authorization header (e.g. "Bearer <token>") on the handshake. */
wsc_conn *wsc_connect_auth(wsc_ctx *ctx, const char *host, int port, const char *path,
                           const char *authorization, int timeout_ms, int *http_status, char *err,
                           size_t err_len);
/* Non-blocking variant for many connections on one loop (the load generator): returns at once in
 * the connecting state; poll wsc_is_open()/wsc_has_failed() while servicing. NULL only on OOM. */
wsc_conn *wsc_connect_start(wsc_ctx *ctx, const char *host, int port, const char *path);
bool wsc_is_open(const wsc_conn *c);
bool wsc_has_failed(const wsc_conn *c, const char **why);

/* Callbacks replace the per-connection receive queue; user is passed back to them. */
void wsc_set_callbacks(wsc_conn *c, wsc_message_fn on_message, wsc_close_fn on_close, void *user);

void *wsc_user(const wsc_conn *c);

bool wsc_send_text(wsc_conn *c, const char *data, size_t len);
bool wsc_send_binary(wsc_conn *c, const void *data, size_t len);
bool wsc_send_raw_fragment(wsc_conn *c, const char *data, size_t len, bool first, bool final);
/* Frames queued but not yet written. */
size_t wsc_pending_sends(const wsc_conn *c);
/* Services until every queued frame has been written or timeout_ms passes. */
bool wsc_flush(wsc_conn *c, int timeout_ms);

char *wsc_recv(wsc_conn *c, int timeout_ms, size_t *len_out);
void wsc_set_reading(wsc_conn *c, bool reading);
bool wsc_set_recv_buffer(wsc_conn *c, int bytes);

bool wsc_is_closed(const wsc_conn *c);
void wsc_close_info(const wsc_conn *c, int *code, const char **reason);
/* Services until the connection is closed or timeout_ms passes; true when closed. */
bool wsc_wait_closed(wsc_conn *c, int timeout_ms);
/* Starts a normal close (1000). */
void wsc_close(wsc_conn *c);
void wsc_free(wsc_conn *c);

#endif
