/*
 * The WebSocket test client against a small echo server started in-process on a free port:
 * connect, send/receive in order, large and fragmented messages, peer close code and reason,
 * a refused handshake, and a connection to a closed port.
 */
/* test-passes: asan */
#include "testlib.h"
#include "wsclient.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct {
    unsigned char *buf; /* LWS_PRE + payload */
    size_t len;
    bool binary;
    bool pending;
    bool close_now;
    char *rx;
    size_t rx_len;
} echo_session;

static atomic_bool server_stop;

static int echo_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    echo_session *s = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char path[64] = "";
        lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
        if (strcmp(path, "/refuse") == 0) {
            /* answer the upgrade with a real HTTP status, as the services do */
            lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, "refused on purpose");
            return 1;
        }
        break;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        char path[64] = "";
        lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
        memset(s, 0, sizeof *s);
        if (strcmp(path, "/close") == 0) {
            s->close_now = true;
            lws_callback_on_writable(wsi);
        }
        break;
    }
    case LWS_CALLBACK_RECEIVE: {
        char *grown = realloc(s->rx, s->rx_len + len);
        if (!grown) return -1;
        s->rx = grown;
        memcpy(s->rx + s->rx_len, in, len);
        s->rx_len += len;
        if (!(lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)) break;
        /* one message at a time is enough for these tests: the client waits for each echo */
        free(s->buf);
        s->buf = malloc(LWS_PRE + s->rx_len + 1);
        if (!s->buf) return -1;
        memcpy(s->buf + LWS_PRE, s->rx, s->rx_len);
        s->len = s->rx_len;
        s->binary = lws_frame_is_binary(wsi);
        s->pending = true;
        s->rx_len = 0;
        lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (s->close_now) {
            lws_close_reason(wsi, (enum lws_close_status)4000,
                             (unsigned char *)"closing on purpose", 18);
            return -1;
        }
        if (s->pending) {
            s->pending = false;
            if (lws_write(wsi, s->buf + LWS_PRE, s->len,
                          s->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)s->len)
                return -1;
        }
        break;
    case LWS_CALLBACK_CLOSED:
        free(s->buf);
        free(s->rx);
        s->buf = NULL;
        s->rx = NULL;
        break;
    default: break;
    }
    return 0;
}

static const struct lws_protocols echo_protocols[] = {
    {"echo", echo_cb, sizeof(echo_session), 1024, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *serve(void *arg)
{
    struct lws_context *ctx = arg;
    while (!atomic_load(&server_stop)) lws_service(ctx, 0);
    return NULL;
}

static void stop_serve(struct lws_context *ctx)
{
    atomic_store(&server_stop, true);
    lws_cancel_service(ctx);
}

int main(void)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = 0; /* the kernel picks a free port */
    info.iface = "127.0.0.1";
    info.protocols = echo_protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context *server = lws_create_context(&info);
    CHECK(server != NULL, "echo server starts");
    if (!server) return TEST_DONE();
    int port = lws_get_vhost_listen_port(lws_get_vhost_by_name(server, "default"));
    CHECK(port > 0, "echo server listens on a free port (%d)", port);
    pthread_t th;
    pthread_create(&th, NULL, serve, server);

    wsc_ctx *ctx = wsc_ctx_new();
    CHECK(ctx != NULL, "client context created");

    char err[256];
    int status = 0;
    wsc_conn *c = wsc_connect(ctx, "127.0.0.1", port, "/echo", 3000, &status, err, sizeof err);
    CHECK(c != NULL, "connects (%s)", c ? "open" : err);
    CHECK_INT(status, 101, "handshake status is 101");

    if (c) {
        bool in_order = true;
        for (int i = 0; i < 50; i++) {
            char msg[32];
            int n = snprintf(msg, sizeof msg, "message %d", i);
            wsc_send_text(c, msg, (size_t)n);
            size_t len = 0;
            char *got = wsc_recv(c, 3000, &len);
            if (!got || len != (size_t)n || strcmp(got, msg) != 0) in_order = false;
            free(got);
        }
        CHECK(in_order, "50 messages echoed back in order, byte for byte");

        size_t big_len = 200000;
        char *big = malloc(big_len);
        for (size_t i = 0; i < big_len; i++) big[i] = (char)('a' + i % 26);
        wsc_send_text(c, big, big_len);
        size_t len = 0;
        char *got = wsc_recv(c, 5000, &len);
        CHECK(got && len == big_len && memcmp(got, big, big_len) == 0,
              "a 200 kB message arrives whole (reassembled from fragments)");
        free(got);
        free(big);

        wsc_send_raw_fragment(c, "frag", 4, true, false);
        wsc_send_raw_fragment(c, "ment", 4, false, false);
        wsc_send_raw_fragment(c, "ed", 2, false, true);
        got = wsc_recv(c, 3000, &len);
        CHECK_STR(got, "fragmented", "a message sent in three fragments is one message");
        free(got);

        wsc_send_binary(c, "\x01\x02\x00\x03", 4);
        got = wsc_recv(c, 3000, &len);
        CHECK(got && len == 4 && memcmp(got, "\x01\x02\x00\x03", 4) == 0,
              "binary frames round-trip");
        free(got);

        CHECK(wsc_recv(c, 200, &len) == NULL, "wsc_recv times out with nothing to read");
        CHECK(!wsc_is_closed(c), "still open after a receive timeout");
        wsc_close(c);
        CHECK(wsc_wait_closed(c, 3000), "a client close completes");
        wsc_free(c);
    }

    wsc_conn *closer =
        wsc_connect(ctx, "127.0.0.1", port, "/close", 3000, &status, err, sizeof err);
    CHECK(closer != NULL, "connects to a path the server closes");
    if (closer) {
        CHECK(wsc_wait_closed(closer, 3000), "sees the server's close");
        int code = 0;
        const char *why = NULL;
        wsc_close_info(closer, &code, &why);
        CHECK_INT(code, 4000, "close code from the server");
        CHECK_STR(why, "closing on purpose", "close reason from the server");
        wsc_free(closer);
    }

    status = 0;
    wsc_conn *refused =
        wsc_connect(ctx, "127.0.0.1", port, "/refuse", 3000, &status, err, sizeof err);
    CHECK(refused == NULL, "a refused handshake does not open (%s)", err);
    CHECK(status >= 400 && status < 500, "the refusal carries a 4xx HTTP status (got %d)", status);

    /* a port that nothing listens on: the echo server's port + 1 is very likely free; check it */
    stop_serve(server);
    pthread_join(th, NULL);
    lws_context_destroy(server);
    refused = wsc_connect(ctx, "127.0.0.1", port, "/echo", 3000, &status, err, sizeof err);
    CHECK(refused == NULL, "a closed port fails fast with a reason (%s)", err);

    wsc_ctx_free(ctx);
    return TEST_DONE();
}
