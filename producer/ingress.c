/*
 * ingress — the producer's libwebsockets service thread (contract in ingress.h).
 *
 * Ownership: this thread owns the connection table, the rate limiter and every answer frame
 * until it is written. It hands publish requests to the publisher threads and takes their
 * results back through ingress_results(); lws_cancel_service() (called by the results queue's
 * notify) is the only call other threads make into lws.
 *
 * Accounting (all on this thread): a frame is "unanswered" from the moment it is complete until
 * its answer has been written. total_unanswered is the process-wide sum, including frames of
 * connections that closed while the publisher still held them (their results are dropped on
 * arrival, and only then leave the count), so the caps bound memory, not just open sockets.
 * A frame that arrives while its connection or the process is at its cap is refused (an error
 * answer marked as a refusal) before it is counted: pausing reads alone overshoots, because
 * every connection that was not paused yet still gets its next frame in — with thousands of
 * connections, thousands of frames past the cap, and results the publisher could not hand back.
 */
#include "ingress.h"

#include <libwebsockets.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "connections.h"
#include "log.h"
#include "message.h"
#include "producer_metrics.h"
#include "rate_limit.h"
#include "timeutil.h"
#include "watchdog.h"
#include "web_page.h"
#include "ws_frame.h"
#include "ws_listen.h"

#define STOP_TICK_US (50 * LWS_US_PER_MS)
#define MS_NS ((uint64_t)1000000)
#define CLOSE_GRACE_NS (1500 * MS_NS)
#define STOP_RESERVE_NS                                                       \
    (3000 * MS_NS) /* of the stop budget: for closing and the publisher's end \
                    */
#define RESULTS_BATCH 256
/* The service loop wakes at least this often (a timer), so its watchdog deadline can be short. */
#define HEARTBEAT_US (1000 * LWS_US_PER_MS)
/* What one service turn may take: the poll wait (at most the heartbeat) plus the callbacks of one
 * turn, which with thousands of connections can take a while on a loaded machine. */
#define SERVICE_TURN_MS 5000

typedef enum { PHASE_RUNNING, PHASE_DRAINING, PHASE_CLOSING, PHASE_DONE } ingress_phase;

struct ingress {
    const producer_settings *s;
    ws_listener ws;
    struct lws_protocols protocols[2];
    workqueue *results;
    publisher *pub;
    circuit_breaker *breaker;
    conn_table *conns;
    rate_limiter *limiter;
    producer_metrics *m;
    web_page *web;
    const auth *auth; /* NULL: no identity tokens */

    long total_unanswered;
    long at_publisher;
    long unanswered_at_close; /* frames read that a connection closed by the stop never answered */
    size_t paused_connections;
    bool paused_for_total; /* some connection paused because of the process-wide cap */

    atomic_bool stop_requested;
    atomic_bool shed_requested;         /* ingress_shed() called; the service thread acts on it */
    _Atomic uint64_t stop_requested_ns; /* when ingress_request_stop() was first called */
    ingress_phase phase;
    uint64_t drain_deadline_ns;
    uint64_t close_deadline_ns;
    lws_sorted_usec_list_t stop_tick;
    lws_sorted_usec_list_t heartbeat;
    watchdog_loop *dog;

    chat_message scratch; /* parse target; this thread only */
};

typedef struct {
    uint32_t slot, generation;
    bool attached;
    web_reply web_reply; /* plain HTTP: a generated answer's body, due at the next WRITEABLE */
} session;

/* ---- helpers ------------------------------------------------------------------------------ */

static ingress *ingress_of(struct lws *wsi) { return lws_context_user(lws_get_context(wsi)); }

static pconn *conn_of(ingress *in, void *user)
{
    session *ss = user;
    return ss && ss->attached ? conn_table_get(in->conns, ss->slot, ss->generation) : NULL;
}

static void update_inflight(ingress *in)
{
    metric_gauge_set(in->m->inflight, (double)in->total_unanswered);
}

/* /chat/{roomId} (one trailing slash allowed): 0 and the room id, or the HTTP status to refuse
 * with and why (why points into reason, which must hold 160 bytes). */
static int parse_room(const char *uri, char room[ROOM_ID_BUF], char *reason, size_t reason_len,
                      const char **why)
{
    static const char prefix[] = "/chat/";
    if (strncmp(uri, prefix, sizeof prefix - 1) != 0) {
        *why = "path must be /chat/{roomId}";
        return HTTP_STATUS_NOT_FOUND;
    }
    const char *id = uri + sizeof prefix - 1;
    size_t len = strlen(id);
    if (len > 0 && id[len - 1] == '/') len--;
    if (!room_id_check(id, len, reason, reason_len)) {
        *why = reason;
        return HTTP_STATUS_BAD_REQUEST;
    }
    memcpy(room, id, len);
    room[len] = '\0';
    return 0;
}

static bool copy_uri(struct lws *wsi, char *buf, size_t len)
{
    int n = lws_hdr_copy(wsi, buf, (int)len, WSI_TOKEN_GET_URI);
    return n > 0;
}

/* The client's address: behind an ALB the last X-Forwarded-For hop is the address the balancer
 * saw (earlier entries are whatever the client claimed); otherwise the socket peer. */
static void client_address(const ingress *in, struct lws *wsi, char *out, size_t len)
{
    char xff[256];
    if (in->s->trust_forwarded_for &&
        lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) > 0) {
        char *last = strrchr(xff, ',');
        char *ip = last ? last + 1 : xff;
        ip += strspn(ip, " \t");
        size_t n = strcspn(ip, " \t");
        if (n > 0 && n < len) {
            memcpy(out, ip, n);
            out[n] = '\0';
            return;
        }
    }
    if (!lws_get_peer_simple(wsi, out, len)) snprintf(out, len, "unknown");
}

static void maybe_pause(ingress *in, pconn *c)
{
    if (c->reads_paused) return;
    bool per_conn = c->unanswered >= in->s->max_inflight_per_connection;
    bool total = in->total_unanswered >= in->s->max_inflight_total;
    if (!per_conn && !total) return;
    lws_rx_flow_control(c->wsi, 0);
    c->reads_paused = true;
    in->paused_connections++;
    if (total) in->paused_for_total = true;
    metric_counter_inc(in->m->frames_paused);
}

static void maybe_resume(ingress *in, pconn *c)
{
    if (!c->reads_paused || c->closing) return;
    if (c->unanswered >= in->s->max_inflight_per_connection ||
        in->total_unanswered >= in->s->max_inflight_total)
        return;
    lws_rx_flow_control(c->wsi, 1);
    c->reads_paused = false;
    in->paused_connections--;
}

/* After the process-wide cap was hit, wake the other paused connections once there is room
 * again (with some hysteresis, so this O(connections) walk stays rare). */
static void resume_after_total_cap(ingress *in)
{
    if (!in->paused_for_total || in->total_unanswered > in->s->max_inflight_total * 9 / 10) return;
    in->paused_for_total = false;
    for (size_t i = 0; i < conn_table_capacity(in->conns) && in->paused_connections > 0; i++) {
        pconn *c = conn_table_at(in->conns, i);
        if (c) maybe_resume(in, c);
    }
}

static void queue_answer(ingress *in, pconn *c, answer *a)
{
    conn_push_answer(c, a);
    lws_callback_on_writable(c->wsi);
    (void)in;
}

/* The frame's answer could not be built: it leaves the count so reads do not stay paused. */
static void forget_frame(ingress *in, pconn *c)
{
    c->unanswered--;
    in->total_unanswered--;
    update_inflight(in);
}

static void answer_error(ingress *in, pconn *c, chat_status status, const char *why,
                         const char *cmid)
{
    metric_counter_inc(in->m->received[status]);
    char *text = error_to_json(status, why, cmid);
    answer *a = text ? answer_new(text, strlen(text)) : NULL;
    free(text);
    if (!a) {
        log_error("ingress", "out of memory answering a frame (%s)", chat_status_code(status));
        forget_frame(in, c);
        return;
    }
    queue_answer(in, c, a);
}

/* ---- frames ------------------------------------------------------------------------------- */

static const char *cap_reached(const ingress *in, const pconn *c, chat_status *status, char *buf,
                               size_t len);
static void refuse_frame(ingress *in, pconn *c, const char *data, size_t len, bool binary,
                         chat_status status, const char *why);

/* A frame over max_frame_bytes (its bytes were dropped): refused at a cap like any other, else
 * counted and answered MESSAGE_TOO_LARGE. */
static void answer_too_large(ingress *in, pconn *c, size_t cap)
{
    char capbuf[160];
    chat_status cap_status;
    const char *over = cap_reached(in, c, &cap_status, capbuf, sizeof capbuf);
    if (over) {
        refuse_frame(in, c, NULL, 0, true, cap_status, over);
        return;
    }
    c->unanswered++;
    in->total_unanswered++;
    update_inflight(in);
    char why[96];
    snprintf(why, sizeof why, "frame is larger than %zu bytes", cap);
    answer_error(in, c, CHAT_MESSAGE_TOO_LARGE, why, NULL);
}

/* NULL when one more frame may be counted; else why not, and the code to refuse it with. The
 * per-connection cap says "wait for your answers" (RATE_LIMITED: the client is sending faster
 * than it is answered); the process-wide one says the server is full (QUEUE_UNAVAILABLE). */
static const char *cap_reached(const ingress *in, const pconn *c, chat_status *status, char *buf,
                               size_t len)
{
    if (c->unanswered >= in->s->max_inflight_per_connection) {
        *status = CHAT_RATE_LIMITED;
        snprintf(buf, len,
                 "%d frames on this connection are unanswered (the limit); wait for their answers, "
                 "then resend",
                 c->unanswered);
        return buf;
    }
    if (in->total_unanswered >= in->s->max_inflight_total) {
        *status = CHAT_QUEUE_UNAVAILABLE;
        snprintf(buf, len, "server is at its limit of %lld unanswered frames; retry later",
                 in->s->max_inflight_total);
        return buf;
    }
    return NULL;
}

/* Answers a frame past a cap without counting it. The frame is parsed only to echo its
 * clientMessageId (so the client knows which one to resend); a TYPING frame is dropped unanswered,
 * as when it cannot be published. Reads are paused at a cap, so a connection collects at most a
 * few refusals; one that somehow collects more than its cap of them is closed. */
static void refuse_frame(ingress *in, pconn *c, const char *data, size_t len, bool binary,
                         chat_status status, const char *why)
{
    chat_message *m = &in->scratch;
    char err[256];
    m->client_message_id[0] = '\0';
    if (!binary &&
        chat_frame_parse(data, len, (size_t)in->s->max_frame_bytes, m, err, sizeof err) ==
            CHAT_OK &&
        m->kind == CHAT_KIND_TYPING) {
        metric_counter_inc(in->m->typing[TYPING_DROPPED]);
        return;
    }
    if (c->refusals >= in->s->max_inflight_per_connection) {
        log_warn("ingress", "%s: %d refused frames unread; closing the connection", c->client_ip,
                 c->refusals);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        return;
    }
    metric_counter_inc(in->m->received[status]);
    char *text = error_to_json(status, why, m->client_message_id);
    answer *a = text ? answer_new(text, strlen(text)) : NULL;
    free(text);
    if (!a) {
        log_error("ingress", "out of memory refusing a frame (%s)", chat_status_code(status));
        return;
    }
    a->refusal = true;
    c->refusals++;
    queue_answer(in, c, a);
}

/* Why nothing can be handed to the publisher now, or NULL when it can. */
static const char *publish_blocked(ingress *in, const pconn *c, uint64_t now, char *buf, size_t len)
{
    if (in->phase != PHASE_RUNNING) return "server is shutting down; reconnect and resend";
    if (!circuit_admits(in->breaker, now))
        return "SQS is unavailable (circuit breaker open); retry later";
    if (!publisher_shard_ready(in->pub, c->shard)) {
        snprintf(buf, len, "roomId %s: its queue (shard %d) is not reachable yet; retry later",
                 c->room, c->shard);
        return buf;
    }
    return NULL;
}

/* Fills the server fields of a parsed frame and hands it to the publisher: CHAT_OK, or the
 * status to answer with (*why says why) when nothing was taken. */
static chat_status submit(ingress *in, pconn *c, chat_message *m, uint64_t now, bool silent,
                          const char **why)
{
    memcpy(m->room_id, c->room, sizeof m->room_id);
    snprintf(m->server_id, sizeof m->server_id, "%s", in->s->common.server_id);
    snprintf(m->client_ip, sizeof m->client_ip, "%s", c->client_ip);
    time_format_iso8601(time_wall_ms(), m->received_at);
    if (!m->timestamp[0]) memcpy(m->timestamp, m->received_at, sizeof m->received_at);
    publish_request *r = calloc(1, sizeof *r);
    if (!r || !chat_message_assign_id(m) || !(r->body = publisher_body_json(m))) {
        free(r);
        *why = "server could not prepare the message; retry";
        return CHAT_QUEUE_ERROR;
    }
    r->body_len = strlen(r->body);
    r->slot = c->slot;
    r->generation = c->generation;
    memcpy(r->room, c->room, sizeof r->room);
    r->shard = c->shard;
    r->silent = silent;
    memcpy(r->message_id, m->message_id, sizeof r->message_id);
    memcpy(r->client_message_id, m->client_message_id, sizeof r->client_message_id);
    r->received_ns = now;
    if (!publisher_submit(in->pub, r)) {
        publish_request_free(r);
        *why = "publisher is busy; retry later";
        return CHAT_QUEUE_UNAVAILABLE;
    }
    c->at_publisher++;
    in->at_publisher++;
    return CHAT_OK;
}

/* A typing indicator is never answered: it is published at most once per typing interval per
 * connection, and dropped (counted) when throttled or when it cannot be published now. It still
 * counts as unanswered while the publisher holds it, so the in-flight caps bound it too. */
static void handle_typing(ingress *in, pconn *c, chat_message *m, uint64_t now)
{
    uint64_t interval = (uint64_t)in->s->typing_interval_ms * 1000000u;
    char buf[96];
    const char *why = NULL;
    if (c->typed_once && now - c->last_typing_ns < interval) {
        metric_counter_inc(in->m->typing[TYPING_THROTTLED]);
    } else if (publish_blocked(in, c, now, buf, sizeof buf) ||
               submit(in, c, m, now, true, &why) != CHAT_OK) {
        metric_counter_inc(in->m->typing[TYPING_DROPPED]);
    } else {
        c->typed_once = true;
        c->last_typing_ns = now;
        return; /* the publisher's result settles the count */
    }
    forget_frame(in, c);
}

/* The token is the identity: a frame speaks for the token's subject or is refused, and the
 * token's name (when it has one) is the name shown. */
static bool take_identity(const pconn *c, chat_message *m, char *err, size_t err_len)
{
    if (strcmp(m->user_id, c->user_id_str) != 0) {
        snprintf(err, err_len,
                 "userId %s is not this connection's user: its token is for userId %s", m->user_id,
                 c->user_id_str);
        return false;
    }
    if (c->username[0]) snprintf(m->username, sizeof m->username, "%s", c->username);
    return true;
}

static void handle_frame(ingress *in, pconn *c, const char *data, size_t len, bool binary)
{
    char capbuf[160];
    chat_status cap_status;
    const char *over = cap_reached(in, c, &cap_status, capbuf, sizeof capbuf);
    if (over) {
        refuse_frame(in, c, data, len, binary, cap_status, over);
        return;
    }
    c->unanswered++;
    in->total_unanswered++;
    update_inflight(in);

    chat_message *m = &in->scratch;
    char err[256];
    if (binary) {
        answer_error(in, c, CHAT_INVALID_JSON,
                     "binary frames are not accepted: send a JSON object as a text frame", NULL);
        return;
    }
    m->client_message_id[0] = '\0';
    chat_status st =
        chat_frame_parse(data, len, (size_t)in->s->max_frame_bytes, m, err, sizeof err);
    if (st != CHAT_OK) {
        answer_error(in, c, st, err, m->client_message_id);
        return;
    }
    if (c->authed && !take_identity(c, m, err, sizeof err)) {
        answer_error(in, c, CHAT_FORBIDDEN_USER, err, m->client_message_id);
        return;
    }
    uint64_t now = time_mono_ns();
    if (m->kind == CHAT_KIND_TYPING) {
        handle_typing(in, c, m, now);
        return;
    }
    /* With tokens the verified subject is the key, whatever a frame says. */
    uint32_t rate_key = c->authed ? c->user_id : (uint32_t)strtoul(m->user_id, NULL, 10);
    if (!rate_limiter_allow(in->limiter, rate_key, now)) {
        snprintf(err, sizeof err, "userId %s: more than %lld messages a minute", m->user_id,
                 in->s->rate_limit_per_minute);
        answer_error(in, c, CHAT_RATE_LIMITED, err, m->client_message_id);
        return;
    }
    const char *why = publish_blocked(in, c, now, err, sizeof err);
    if (why) {
        answer_error(in, c, CHAT_QUEUE_UNAVAILABLE, why, m->client_message_id);
        return;
    }
    chat_status taken = submit(in, c, m, now, false, &why);
    if (taken != CHAT_OK) answer_error(in, c, taken, why, m->client_message_id);
}

/* A frame is handled once complete (ws_frame.h); beyond the size cap it is answered
 * MESSAGE_TOO_LARGE once, at its last piece. */
static void on_receive(ingress *in, struct lws *wsi, pconn *c, const char *piece, size_t len)
{
    size_t cap = (size_t)in->s->max_frame_bytes;
    const char *data = NULL;
    size_t data_len = 0;
    ws_frame_status st =
        ws_frame_gather(&c->rx_buf, cap, piece, len, ws_frame_last_piece(wsi), &data, &data_len);
    if (st == WS_FRAME_NO_MEMORY) {
        log_error("ingress", "out of memory for a frame buffer; closing the connection");
        lws_set_timeout(wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        return;
    }
    if (st == WS_FRAME_COMPLETE)
        handle_frame(in, c, data, data_len, lws_frame_is_binary(wsi));
    else if (st == WS_FRAME_TOO_LARGE)
        answer_too_large(in, c, cap);
    maybe_pause(in, c);
}

/* ---- results from the publisher ----------------------------------------------------------- */

static void drain_results(ingress *in)
{
    void *items[RESULTS_BATCH];
    size_t n;
    uint64_t now = time_mono_ns();
    while ((n = workqueue_pop_many(in->results, items, RESULTS_BATCH)) > 0) {
        for (size_t i = 0; i < n; i++) {
            publish_result *r = items[i];
            in->at_publisher--;
            if (r->silent) {
                metric_counter_inc(
                    in->m->typing[r->status == CHAT_OK ? TYPING_PUBLISHED : TYPING_FAILED]);
            } else {
                metric_counter_inc(in->m->received[r->status]);
                if (r->status == CHAT_OK)
                    metric_histogram_observe(in->m->ack_latency,
                                             (double)(now - r->received_ns) / 1e9);
            }
            pconn *c = conn_table_get(in->conns, r->slot, r->generation);
            if (!c) {
                in->total_unanswered--;
                if (!r->silent) metric_counter_inc(in->m->late_answers_dropped);
            } else {
                c->at_publisher--;
                if (r->frame) {
                    queue_answer(in, c, r->frame);
                    r->frame = NULL;
                } else {
                    forget_frame(in, c);
                }
            }
            publish_result_free(r);
        }
    }
    update_inflight(in);
    resume_after_total_cap(in);
}

/* ---- stopping ----------------------------------------------------------------------------- */

/* Of the stop budget, what is kept back after the drain for closing the connections and for
 * the publisher's end: 3 s, or a third of a short budget. */
static uint64_t stop_reserve_ns(const ingress *in)
{
    uint64_t budget = (uint64_t)in->s->stop_timeout_s * 1000 * MS_NS;
    return budget / 3 < STOP_RESERVE_NS ? budget / 3 : STOP_RESERVE_NS;
}

/* Reads stop; each connection is closed 1001 once what it has read is answered (on_writeable;
 * in PHASE_CLOSING without waiting for the publisher, whose part has ended by then). */
static void close_every_connection(ingress *in)
{
    for (size_t i = 0; i < conn_table_capacity(in->conns); i++) {
        pconn *c = conn_table_at(in->conns, i);
        if (!c) continue;
        c->closing = true;
        if (!c->reads_paused) {
            lws_rx_flow_control(c->wsi, 0);
            c->reads_paused = true;
            in->paused_connections++;
        }
        lws_callback_on_writable(c->wsi);
    }
}

/* The load balancer drains this task (lb_watch.h): the clients connected now are asked to go
 * elsewhere while it still carries their connections. New ones are still served: none come
 * through a draining target, and a target registered again is simply serving. */
static void shed_connections(ingress *in)
{
    log_info("ingress",
             "load balancer drain: closing %zu connections (going away) as their %ld frames are "
             "answered",
             conn_table_active(in->conns), in->total_unanswered);
    close_every_connection(in);
}

static void begin_closing(ingress *in)
{
    in->phase = PHASE_CLOSING;
    uint64_t grace = stop_reserve_ns(in) / 2;
    in->close_deadline_ns = time_mono_ns() + (grace < CLOSE_GRACE_NS ? grace : CLOSE_GRACE_NS);
    close_every_connection(in);
    log_info("ingress", "closing %zu connections (going away); %ld frames unanswered",
             conn_table_active(in->conns), in->total_unanswered);
}

static void stop_tick(lws_sorted_usec_list_t *sul)
{
    ingress *in = lws_container_of(sul, ingress, stop_tick);
    uint64_t now = time_mono_ns();
    if (in->phase == PHASE_DRAINING && (in->at_publisher == 0 || now >= in->drain_deadline_ns)) {
        if (in->at_publisher)
            log_warn("ingress", "stop timeout: %ld messages still at the publisher",
                     in->at_publisher);
        begin_closing(in);
    }
    if (in->phase == PHASE_CLOSING &&
        (conn_table_active(in->conns) == 0 || now >= in->close_deadline_ns)) {
        in->phase = PHASE_DONE;
        lws_cancel_service(in->ws.context);
        return;
    }
    lws_sul_schedule(in->ws.context, 0, &in->stop_tick, stop_tick, STOP_TICK_US);
}

/* The drain ends stop_reserve_ns() before the stop deadline; the publisher must have answered
 * everything it holds a little before that, so the answers can still be written. */
static void begin_stop(ingress *in)
{
    in->phase = PHASE_DRAINING;
    uint64_t reserve = stop_reserve_ns(in);
    in->drain_deadline_ns = ingress_stop_deadline_ns(in) - reserve;
    uint64_t margin = reserve / 4 < 200 * MS_NS ? reserve / 4 : 200 * MS_NS;
    if (in->pub) publisher_drain_by(in->pub, in->drain_deadline_ns - margin);
    log_info("ingress", "stopping: refusing new connections; %zu open, %ld frames unanswered",
             conn_table_active(in->conns), in->total_unanswered);
    lws_sul_schedule(in->ws.context, 0, &in->stop_tick, stop_tick, 1);
}

/* ---- the lws callback --------------------------------------------------------------------- */

static int refuse(ingress *in, struct lws *wsi, int status, const char *why)
{
    metric_counter_inc(in->m->handshakes_refused);
    char body[160];
    snprintf(body, sizeof body, "%s", why);
    log_debug("ingress", "handshake refused: %d %s", status, why);
    if (lws_return_http_status(wsi, (unsigned int)status, body)) return -1;
    return 1;
}

/* The identity tokens' verdict on this handshake: 0 (id filled; always 0 with auth off), or the
 * HTTP status to refuse with and why. */
static int check_token(const ingress *in, struct lws *wsi, const char *room, auth_identity *id,
                       char *reason, size_t reason_len)
{
    if (!in->auth) {
        memset(id, 0, sizeof *id);
        return 0;
    }
    char *buf = malloc(AUTH_TOKEN_BUF); /* 8 KiB: not on the service thread's stack */
    if (!buf) {
        snprintf(reason, reason_len, "server out of memory");
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    }
    size_t len = 0;
    auth_token_kind kind;
    const char *token = auth_token_from_lws(wsi, buf, &len, &kind);
    int status = auth_check(in->auth, kind, token, len, room, id, reason, reason_len);
    free(buf);
    return status;
}

/* Arms the connection's timer for the moment its token expires (exp + leeway). */
static void arm_expiry(pconn *c)
{
    int64_t left_s = c->token_exp_s + 1 - time_wall_ms() / 1000;
    lws_usec_t us = left_s > 0 ? (lws_usec_t)left_s * LWS_US_PER_SEC : 1;
    lws_set_timer_usecs(c->wsi, us);
}

/* The token expired: nothing more is read, the answers queued are written, then 4401. */
static void expire_token(ingress *in, pconn *c)
{
    c->token_expired = true;
    if (!c->reads_paused) {
        lws_rx_flow_control(c->wsi, 0);
        c->reads_paused = true;
        in->paused_connections++;
    }
    lws_callback_on_writable(c->wsi);
}

static int on_timer(ingress *in, session *ss)
{
    pconn *c = conn_of(in, ss);
    if (!c) return -1; /* the handshake deadline (ws_listen.h) */
    if (c->authed && time_wall_ms() / 1000 >= c->token_exp_s)
        expire_token(in, c);
    else if (c->authed)
        arm_expiry(c);
    return 0;
}

static int on_established(ingress *in, struct lws *wsi, session *ss)
{
    char uri[256];
    char room[ROOM_ID_BUF], reason[160];
    const char *why = NULL;
    if (!copy_uri(wsi, uri, sizeof uri) || parse_room(uri, room, reason, sizeof reason, &why) != 0)
        return -1;
    /* Verified again rather than carried over from the upgrade: the headers are still here, and
     * nothing of the HTTP transaction's per-session data has to survive the protocol switch. */
    auth_identity id;
    if (check_token(in, wsi, room, &id, reason, sizeof reason) != 0) {
        log_info("ingress", "token refused after the upgrade: %s", reason);
        return -1;
    }
    pconn *c = conn_table_acquire(in->conns);
    if (!c) return -1; /* checked at the upgrade; only a race gets here */
    ws_listen_on_upgraded(wsi);
    c->wsi = wsi;
    memcpy(c->room, room, sizeof c->room);
    c->shard = room_shard(room, (int)in->s->common.queue_shards);
    client_address(in, wsi, c->client_ip, sizeof c->client_ip);
    if (in->auth) {
        c->authed = true;
        c->user_id = id.user_id;
        memcpy(c->user_id_str, id.user_id_str, sizeof c->user_id_str);
        snprintf(c->username, sizeof c->username, "%s", id.username);
        c->token_exp_s = id.exp + id.leeway_s;
        arm_expiry(c);
    }
    ss->slot = c->slot;
    ss->generation = c->generation;
    ss->attached = true;
    metric_counter_inc(in->m->connections_total);
    metric_gauge_set(in->m->connections_active, (double)conn_table_active(in->conns));
    if (in->phase == PHASE_CLOSING) {
        c->closing = true;
        lws_callback_on_writable(wsi);
    }
    return 0;
}

static void on_closed(ingress *in, session *ss)
{
    pconn *c = conn_of(in, ss);
    if (!c) return;
    ss->attached = false;
    /* Answers queued here die with the connection; those the publisher holds leave the count
     * when their results arrive. */
    in->total_unanswered -= c->unanswered - c->at_publisher;
    /* what the stop's own closing left unanswered (a client leaving a load balancer drain early
     * is its own doing) */
    if (c->closing && in->phase != PHASE_RUNNING) in->unanswered_at_close += c->unanswered;
    if (c->reads_paused) in->paused_connections--;
    conn_table_release(in->conns, c);
    update_inflight(in);
    metric_gauge_set(in->m->connections_active, (double)conn_table_active(in->conns));
    resume_after_total_cap(in);
}

static int on_writeable(ingress *in, struct lws *wsi, pconn *c)
{
    answer *a = conn_pop_answer(c);
    if (!a) {
        if (c->token_expired) {
            lws_close_reason(wsi, (enum lws_close_status)AUTH_CLOSE_TOKEN_EXPIRED,
                             (unsigned char *)"token expired", 13);
            return -1;
        }
        if (!c->closing) return 0;
        if (c->unanswered > 0 && in->phase < PHASE_CLOSING) return 0; /* at the publisher */
        lws_close_reason(wsi, LWS_CLOSE_STATUS_GOINGAWAY, (unsigned char *)"going away", 10);
        return -1;
    }
    size_t len_written = a->len;
    int n = lws_write(wsi, a->text, a->len, LWS_WRITE_TEXT);
    bool ok = n >= (int)a->len;
    if (a->refusal) {
        c->refusals--;
    } else {
        c->unanswered--;
        in->total_unanswered--;
        update_inflight(in);
    }
    answer_free(a);
    if (!ok) {
        log_warn("ingress", "write to %s failed (%d of %zu bytes); closing the connection",
                 c->client_ip, n, len_written);
        return -1;
    }
    maybe_resume(in, c);
    resume_after_total_cap(in);
    if (c->out_head || c->closing || c->token_expired) lws_callback_on_writable(wsi);
    return 0;
}

static int callback_chat(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                         void *in_data, size_t len)
{
    ingress *in = ingress_of(wsi);
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        session *ss = user;
        return web_page_on_http(in->web, wsi, in_data ? in_data : "", &ss->web_reply);
    }

    case LWS_CALLBACK_HTTP_WRITEABLE: {
        session *ss = user;
        return ss ? web_page_on_writeable(in->web, wsi, &ss->web_reply) : 0;
    }

    case LWS_CALLBACK_CLOSED_HTTP:
        if (user) web_reply_clear(&((session *)user)->web_reply);
        return 0;

    case LWS_CALLBACK_HTTP_FILE_COMPLETION: return lws_http_transaction_completed(wsi) ? -1 : 0;

    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        ws_listen_on_accept(wsi, (int)in->s->handshake_timeout_s); /* TIMER: not upgraded in time */
        return 0;

    case LWS_CALLBACK_TIMER: return on_timer(in, user);

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        char uri[256];
        char room[ROOM_ID_BUF], refusal[160];
        const char *why = NULL;
        if (!copy_uri(wsi, uri, sizeof uri))
            return refuse(in, wsi, HTTP_STATUS_BAD_REQUEST, "path missing or too long");
        int status = parse_room(uri, room, refusal, sizeof refusal, &why);
        if (status) return refuse(in, wsi, status, why);
        if (in->phase != PHASE_RUNNING)
            return refuse(in, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "server is shutting down");
        if (conn_table_active(in->conns) >= conn_table_capacity(in->conns))
            return refuse(in, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "connection limit reached");
        auth_identity id;
        status = check_token(in, wsi, room, &id, refusal, sizeof refusal);
        if (status) return refuse(in, wsi, status, refusal);
        return 0;
    }

    case LWS_CALLBACK_ESTABLISHED: return on_established(in, wsi, user);

    case LWS_CALLBACK_RECEIVE: {
        pconn *c = conn_of(in, user);
        if (!c) return -1;
        on_receive(in, wsi, c, in_data, len);
        return 0;
    }

    case LWS_CALLBACK_SERVER_WRITEABLE: {
        pconn *c = conn_of(in, user);
        if (!c) return -1;
        return on_writeable(in, wsi, c);
    }

    case LWS_CALLBACK_CLOSED: on_closed(in, user); return 0;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (!in) return 0;
        drain_results(in);
        if (atomic_load(&in->stop_requested) && in->phase == PHASE_RUNNING) begin_stop(in);
        if (atomic_exchange(&in->shed_requested, false) && in->phase == PHASE_RUNNING)
            shed_connections(in);
        return 0;

    default: return 0;
    }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

void ingress_wake(void *ctx)
{
    ingress *in = ctx;
    if (in->ws.context) lws_cancel_service(in->ws.context);
}

ingress *ingress_new(const producer_settings *s, circuit_breaker *breaker, char *err,
                     size_t err_len)
{
    ingress *in = calloc(1, sizeof *in);
    if (!in) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    in->s = s;
    in->breaker = breaker;
    in->m = producer_metrics_init();
    in->conns = conn_table_new((size_t)s->max_connections);
    in->limiter = rate_limiter_new(s->rate_limit_per_minute, (size_t)s->rate_limit_max_users);
    /* Every result belongs to an unanswered frame, so this never fills beyond the total cap. */
    in->results = workqueue_new((size_t)s->max_inflight_total + 1024, NULL, NULL);
    in->web = web_page_new(s);
    if (!in->conns || !in->limiter || !in->results || !in->web) {
        snprintf(err, err_len, "out of memory");
        ingress_free(in);
        return NULL;
    }

    in->protocols[0] = (struct lws_protocols){
        .name = "chatflow",
        .callback = callback_chat,
        .per_session_data_size = sizeof(session),
        .rx_buffer_size = 0,
    };
    ws_listen_config lc = {
        .bind_addr = strcmp(s->ws_bind, "0.0.0.0") != 0 ? s->ws_bind : NULL,
        .port = (int)s->ws_port,
        .ipv4_only = true,
        .vhost_name = "default",
        .protocols = in->protocols,
        .user = in,
        .handshake_timeout_s = (int)s->handshake_timeout_s,
        .ping_interval_s = (int)s->ping_interval_s,
        .pong_timeout_s = (int)s->pong_timeout_s,
    };
    if (!ws_listen_open(&in->ws, &lc, err, err_len)) {
        ingress_free(in);
        return NULL;
    }
    return in;
}

workqueue *ingress_results(ingress *in) { return in->results; }
void ingress_attach_publisher(ingress *in, publisher *p) { in->pub = p; }
void ingress_set_auth(ingress *in, const auth *a) { in->auth = a; }

int ingress_port(const ingress *in) { return in->ws.context ? in->ws.port : -1; }

/* Keeps lws_service() returning at least once a heartbeat, so the loop beats the watchdog even
 * when no socket has anything to say. */
static void heartbeat(lws_sorted_usec_list_t *sul)
{
    ingress *in = lws_container_of(sul, ingress, heartbeat);
    lws_sul_schedule(in->ws.context, 0, &in->heartbeat, heartbeat, HEARTBEAT_US);
}

/* What a stop left unanswered: frames of connections it closed, and of any still open at its
 * deadline. 0 is the promise of a graceful stop (every frame read got its ack or error). */
static void log_stop_outcome(ingress *in)
{
    long open_unanswered = 0;
    for (size_t i = 0; i < conn_table_capacity(in->conns); i++) {
        pconn *c = conn_table_at(in->conns, i);
        if (c) open_unanswered += c->unanswered;
    }
    long left = in->unanswered_at_close + open_unanswered;
    if (left == 0)
        log_info("ingress", "stopped: 0 frames left unanswered (every frame read was answered)");
    else
        log_warn("ingress", "stopped: %ld frames left unanswered (their connections closed first)",
                 left);
}

void ingress_run(ingress *in)
{
    in->dog = watchdog_register("lws-service", SERVICE_TURN_MS);
    lws_sul_schedule(in->ws.context, 0, &in->heartbeat, heartbeat, HEARTBEAT_US);
    while (in->phase != PHASE_DONE) {
        watchdog_expect(in->dog, SERVICE_TURN_MS);
        if (lws_service(in->ws.context, 0) < 0) break;
    }
    lws_sul_cancel(&in->heartbeat);
    watchdog_unregister(in->dog);
    in->dog = NULL;
    if (in->phase == PHASE_DONE) log_stop_outcome(in);
}

void ingress_request_stop(ingress *in)
{
    uint64_t none = 0;
    atomic_compare_exchange_strong(&in->stop_requested_ns, &none, time_mono_ns());
    atomic_store(&in->stop_requested, true);
    lws_cancel_service(in->ws.context);
}

uint64_t ingress_stop_deadline_ns(const ingress *in)
{
    uint64_t since = atomic_load(&((ingress *)in)->stop_requested_ns);
    if (!since) since = time_mono_ns();
    return since + (uint64_t)in->s->stop_timeout_s * 1000 * MS_NS;
}

void ingress_shed(void *ctx)
{
    ingress *in = ctx;
    atomic_store(&in->shed_requested, true);
    ingress_wake(in);
}

bool ingress_stopping(const ingress *in) { return atomic_load(&((ingress *)in)->stop_requested); }

void ingress_free(ingress *in)
{
    if (!in) return;
    ws_listen_close(&in->ws);
    if (in->results) {
        void *item;
        while (workqueue_pop_many(in->results, &item, 1) == 1) publish_result_free(item);
        workqueue_free(in->results);
    }
    conn_table_free(in->conns);
    rate_limiter_free(in->limiter);
    web_page_free(in->web);
    free(in);
}
