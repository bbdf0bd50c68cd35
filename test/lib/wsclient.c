/*
 * wsclient — see wsclient.h for the contract.
 *
 * One lws client context per wsc_ctx, serviced by its caller. Every connection keeps two FIFO
 * lists: frames waiting to be written (one lws_write per CLIENT_WRITEABLE, as lws requires) and
 * complete messages received (unless callbacks are installed). lws ignores lws_service()'s
 * timeout since v3.2, so each bounded wait schedules a sorted-usec-list timer that makes the
 * poll return in time.
 */
#include "wsclient.h"

#include <libwebsockets.h>
#include <stdint.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct out_frame {
    struct out_frame *next;
    size_t len;
    enum lws_write_protocol mode;
    unsigned char buf[]; /* LWS_PRE headroom, then the payload */
} out_frame;

typedef struct in_msg {
    struct in_msg *next;
    size_t len;
    char data[]; /* NUL-terminated */
} in_msg;

typedef enum { WSC_CONNECTING, WSC_OPEN, WSC_CLOSED, WSC_FAILED } wsc_state;

struct wsc_conn {
    wsc_ctx *ctx;
    struct lws *wsi;
    wsc_state state;
    int http_status;
    char err[256];

    out_frame *out_head, *out_tail;
    size_t out_count;
    bool close_requested;

    char *rx; /* fragments of the message being received */
    size_t rx_len, rx_cap;
    in_msg *in_head, *in_tail;

    wsc_message_fn on_message;
    wsc_close_fn on_close;
    void *user;

    int close_code;
    char close_reason[128];
    bool freed_by_user;  /* wsc_free() ran while lws still held the wsi */
    char *authorization; /* an Authorization header value for the handshake, or NULL */
};

struct wsc_ctx {
    struct lws_context *lws;
    lws_sorted_usec_list_t wake; /* bounds one service wait */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void conn_set_closed(wsc_conn *c, int code, const char *reason)
{
    if (c->state == WSC_CLOSED || c->state == WSC_FAILED) return;
    c->state = WSC_CLOSED;
    if (c->close_code == 0) {
        c->close_code = code;
        snprintf(c->close_reason, sizeof c->close_reason, "%s", reason ? reason : "");
    }
    if (c->on_close) c->on_close(c, c->close_code, c->close_reason, c->user);
}

static void conn_deliver(wsc_conn *c, bool binary)
{
    if (c->on_message) {
        c->on_message(c, c->rx ? c->rx : "", c->rx_len, binary, c->user);
        c->rx_len = 0;
        return;
    }
    in_msg *m = malloc(sizeof *m + c->rx_len + 1);
    if (!m) {
        c->rx_len = 0;
        return;
    }
    m->next = NULL;
    m->len = c->rx_len;
    if (c->rx_len) memcpy(m->data, c->rx, c->rx_len);
    m->data[c->rx_len] = '\0';
    if (c->in_tail)
        c->in_tail->next = m;
    else
        c->in_head = m;
    c->in_tail = m;
    c->rx_len = 0;
}

static bool conn_rx_append(wsc_conn *c, const void *in, size_t len)
{
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 1024;
        while (cap < c->rx_len + len) cap *= 2;
        char *grown = realloc(c->rx, cap);
        if (!grown) return false;
        c->rx = grown;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    return true;
}

static int write_one(wsc_conn *c, struct lws *wsi)
{
    if (c->close_requested && !c->out_head) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
        return -1;
    }
    out_frame *f = c->out_head;
    if (!f) return 0;
    int n = lws_write(wsi, f->buf + LWS_PRE, f->len, f->mode);
    if (n < (int)f->len) return -1;
    c->out_head = f->next;
    if (!c->out_head) c->out_tail = NULL;
    c->out_count--;
    free(f);
    if (c->out_head || c->close_requested) lws_callback_on_writable(wsi);
    return 0;
}

static void conn_dispose(wsc_conn *c)
{
    free(c->authorization);
    free(c);
}

static int wsc_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    (void)user;
    wsc_conn *c = lws_get_opaque_user_data(wsi);

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (!c) break;
        c->http_status = (int)lws_http_client_http_response(wsi);
        snprintf(c->err, sizeof c->err, "%s", in ? (const char *)in : "connection failed");
        c->state = WSC_FAILED;
        c->wsi = NULL;
        lws_set_opaque_user_data(wsi, NULL);
        if (c->freed_by_user) conn_dispose(c);
        break;

    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (c && c->authorization) {
            unsigned char **p = in, *end = *p + len;
            if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                             (const unsigned char *)c->authorization,
                                             (int)strlen(c->authorization), p, end))
                return -1;
        }
        break;

    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c) break;
        c->state = WSC_OPEN;
        c->http_status = 101;
        if (c->out_head) lws_callback_on_writable(wsi);
        break;

    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!c) break;
        if (!conn_rx_append(c, in, len)) return -1;
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
            conn_deliver(c, lws_frame_is_binary(wsi));
        break;

    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!c) return -1;
        return write_one(c, wsi);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c && len >= 2) {
            const unsigned char *p = in;
            c->close_code = (p[0] << 8) | p[1];
            size_t rlen =
                len - 2 < sizeof c->close_reason - 1 ? len - 2 : sizeof c->close_reason - 1;
            memcpy(c->close_reason, p + 2, rlen);
            c->close_reason[rlen] = '\0';
        }
        break;

    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!c) break;
        c->wsi = NULL;
        lws_set_opaque_user_data(wsi, NULL);
        conn_set_closed(c, 1006, "connection dropped");
        if (c->freed_by_user) conn_dispose(c);
        break;

    default: break;
    }
    return 0;
}

static const struct lws_protocols wsc_protocols[] = {
    {"chatflow-wsc", wsc_callback, 0, 4096, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

wsc_ctx *wsc_ctx_new(void)
{
    wsc_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = wsc_protocols;
    info.fd_limit_per_thread = 0;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    lws_set_log_level(LLL_ERR, NULL);
    ctx->lws = lws_create_context(&info);
    if (!ctx->lws) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

static void wake_noop(lws_sorted_usec_list_t *sul) { (void)sul; }

void wsc_service(wsc_ctx *ctx, int timeout_ms)
{
    lws_sul_schedule(ctx->lws, 0, &ctx->wake, wake_noop,
                     (lws_usec_t)(timeout_ms > 0 ? timeout_ms : 1) * LWS_US_PER_MS);
    lws_service(ctx->lws, 0);
    lws_sul_cancel(&ctx->wake);
}

/* Services until done(c) or the deadline. */
static bool service_until(wsc_conn *c, int timeout_ms, bool (*done)(const wsc_conn *))
{
    uint64_t deadline = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    while (!done(c)) {
        uint64_t now = now_ms();
        if (now >= deadline) return false;
        wsc_service(c->ctx, (int)(deadline - now));
    }
    return true;
}

static bool is_settled(const wsc_conn *c) { return c->state != WSC_CONNECTING; }

static wsc_conn *connect_start(wsc_ctx *ctx, const char *host, int port, const char *path,
                               const char *authorization)
{
    wsc_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (authorization && !(c->authorization = strdup(authorization))) {
        free(c);
        return NULL;
    }
    c->ctx = ctx;
    c->state = WSC_CONNECTING;

    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = ctx->lws;
    i.address = host;
    i.port = port;
    i.path = path;
    i.host = host;
    i.origin = host;
    i.local_protocol_name = "chatflow-wsc";
    i.opaque_user_data = c;
    i.pwsi = &c->wsi;
    if (!lws_client_connect_via_info(&i)) {
        /* lws may already have called CONNECTION_ERROR (state FAILED) or not; either way */
        if (c->state == WSC_CONNECTING) {
            c->state = WSC_FAILED;
            snprintf(c->err, sizeof c->err, "could not start a connection to %s:%d", host, port);
        }
        c->wsi = NULL;
    }
    return c;
}

wsc_conn *wsc_connect_start(wsc_ctx *ctx, const char *host, int port, const char *path)
{
    return connect_start(ctx, host, port, path, NULL);
}

bool wsc_is_open(const wsc_conn *c) { return c->state == WSC_OPEN; }

bool wsc_has_failed(const wsc_conn *c, const char **why)
{
    if (why) *why = c->err;
    return c->state == WSC_FAILED;
}

wsc_conn *wsc_connect(wsc_ctx *ctx, const char *host, int port, const char *path, int timeout_ms,
                      int *http_status, char *err, size_t err_len)
{
    return wsc_connect_auth(ctx, host, port, path, NULL, timeout_ms, http_status, err, err_len);
}

wsc_conn *wsc_connect_auth(wsc_ctx *ctx, const char *host, int port, const char *path,
                           const char *authorization, int timeout_ms, int *http_status, char *err,
                           size_t err_len)
{
    wsc_conn *c = connect_start(ctx, host, port, path, authorization);
    if (!c) {
        if (err) snprintf(err, err_len, "out of memory");
        return NULL;
    }
    service_until(c, timeout_ms, is_settled);
    if (http_status) *http_status = c->http_status;
    if (c->state == WSC_OPEN) return c;
    if (err) snprintf(err, err_len, "%s", c->state == WSC_CONNECTING ? "timed out" : c->err);
    wsc_free(c);
    return NULL;
}

void wsc_set_callbacks(wsc_conn *c, wsc_message_fn on_message, wsc_close_fn on_close, void *user)
{
    c->on_message = on_message;
    c->on_close = on_close;
    c->user = user;
}

void *wsc_user(const wsc_conn *c) { return c->user; }

static bool queue_frame(wsc_conn *c, const void *data, size_t len, enum lws_write_protocol mode)
{
    if (c->state == WSC_CLOSED || c->state == WSC_FAILED) return false;
    out_frame *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f) return false;
    f->next = NULL;
    f->len = len;
    f->mode = mode;
    if (len) memcpy(f->buf + LWS_PRE, data, len);
    if (c->out_tail)
        c->out_tail->next = f;
    else
        c->out_head = f;
    c->out_tail = f;
    c->out_count++;
    if (c->wsi && c->state == WSC_OPEN) lws_callback_on_writable(c->wsi);
    return true;
}

bool wsc_send_text(wsc_conn *c, const char *data, size_t len)
{
    return queue_frame(c, data, len, LWS_WRITE_TEXT);
}

bool wsc_send_binary(wsc_conn *c, const void *data, size_t len)
{
    return queue_frame(c, data, len, LWS_WRITE_BINARY);
}

bool wsc_send_raw_fragment(wsc_conn *c, const char *data, size_t len, bool first, bool final)
{
    int mode = first ? LWS_WRITE_TEXT : LWS_WRITE_CONTINUATION;
    if (!final) mode |= LWS_WRITE_NO_FIN;
    return queue_frame(c, data, len, (enum lws_write_protocol)mode);
}

size_t wsc_pending_sends(const wsc_conn *c) { return c->out_count; }

static bool nothing_pending(const wsc_conn *c)
{
    return c->out_count == 0 || c->state == WSC_CLOSED || c->state == WSC_FAILED;
}

bool wsc_flush(wsc_conn *c, int timeout_ms)
{
    return service_until(c, timeout_ms, nothing_pending) && c->out_count == 0;
}

static bool has_message_or_closed(const wsc_conn *c)
{
    return c->in_head != NULL || c->state == WSC_CLOSED || c->state == WSC_FAILED;
}

char *wsc_recv(wsc_conn *c, int timeout_ms, size_t *len_out)
{
    service_until(c, timeout_ms, has_message_or_closed);
    in_msg *m = c->in_head;
    if (!m) return NULL;
    c->in_head = m->next;
    if (!c->in_head) c->in_tail = NULL;
    if (len_out) *len_out = m->len;
    /* hand the caller a plain malloc'd string: move the bytes to the front of the block */
    size_t len = m->len;
    memmove(m, m->data, len + 1);
    return (char *)m;
}

void wsc_set_reading(wsc_conn *c, bool reading)
{
    if (c->wsi) lws_rx_flow_control(c->wsi, reading ? 1 : 0);
}

bool wsc_set_recv_buffer(wsc_conn *c, int bytes)
{
    int fd = c->wsi ? (int)lws_get_socket_fd(c->wsi) : -1;
    return fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) == 0;
}

bool wsc_is_closed(const wsc_conn *c) { return c->state == WSC_CLOSED || c->state == WSC_FAILED; }

void wsc_close_info(const wsc_conn *c, int *code, const char **reason)
{
    if (code) *code = c->close_code;
    if (reason) *reason = c->close_reason;
}

static bool closed(const wsc_conn *c) { return wsc_is_closed(c); }

bool wsc_wait_closed(wsc_conn *c, int timeout_ms) { return service_until(c, timeout_ms, closed); }

void wsc_close(wsc_conn *c)
{
    if (!c->wsi || c->state != WSC_OPEN) return;
    c->close_requested = true;
    lws_callback_on_writable(c->wsi);
}

static void free_queues(wsc_conn *c)
{
    while (c->out_head) {
        out_frame *f = c->out_head;
        c->out_head = f->next;
        free(f);
    }
    c->out_tail = NULL;
    c->out_count = 0;
    while (c->in_head) {
        in_msg *m = c->in_head;
        c->in_head = m->next;
        free(m);
    }
    c->in_tail = NULL;
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
}

void wsc_free(wsc_conn *c)
{
    if (!c) return;
    free_queues(c);
    c->on_close = NULL;
    c->on_message = NULL;
    if (c->wsi) {
        /* lws still owns the socket: close it now and let its CLOSED callback free us. */
        struct lws *wsi = c->wsi;
        c->freed_by_user = true;
        c->close_requested = true;
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
        return;
    }
    conn_dispose(c);
}

void wsc_ctx_free(wsc_ctx *ctx)
{
    if (!ctx) return;
    lws_context_destroy(ctx->lws);
    free(ctx);
}
