/*
 * drive — the load generator's event loop (one thread, one lws client context).
 *
 * Senders: connections to the producer, spread over the rooms (connection i serves the room of
 * index i % rooms, on /chat/<its id>). Each keeps at most `window` unacked messages. A message goes
 * out on a connection of its room, taken first from the room's retry list, then from the room's
 * queue that the generator thread fills. Acks and errors come back as JSON frames carrying the
 * clientMessageId, which encodes the record index.
 *
 * Retries: RATE_LIMITED, QUEUE_UNAVAILABLE and QUEUE_ERROR answers, and messages in flight on a
 * connection that dropped, are sent again with the same clientMessageId after an exponential
 * backoff (100 ms * 2^attempt, with jitter), at most max_retries times: on whichever connection
 * of the room is free first, or under --tokens on the connection slot that sent it first (its
 * userId and messageId are that slot's user's; see loadgen.h, "Identities").
 *
 * Tokens (--tokens): every (re)connect of sender slot i carries the slot's token as
 * ?access_token=, every subscriber the anonymous subscriber token; none is ever printed. When
 * connections are refused, one more handshake learns the HTTP status (a 401 is a missing or
 * refused token) for the error.
 *
 * Pacing (--rate N): first sends are held to N per second over all connections (retries are not
 * held back); the senders are visited from a rotating start so every room gets its share.
 *
 * Subscribers (--subscribe): one consumer connection per room; each BroadcastEvent's messageId is
 * looked up among the planned ids to count receptions, duplicates and order. An event counts for
 * a room only when its roomId is that room's id, both the one the message was sent to and the
 * one the subscriber asked for. Per-room order: a room's senders each send in order, and the
 * messages of one sending connection that were acked on their first attempt must reach the
 * room's subscriber in send order.
 */
#include "loadgen.h"
#include "wsclient.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

typedef struct {
    size_t *items;
    size_t head, len, cap;
} index_fifo;

typedef struct {
    uint32_t id;
    uint32_t room; /* index into opt->room_ids */
    wsc_conn *conn;
    int inflight;
    uint64_t next_seq;
    int64_t reconnect_at_us;
    int backoff_ms;
    bool ever_opened;
    index_fifo own_retries; /* --tokens: this slot's records due for a resend */
} sender;

typedef struct {
    uint32_t room; /* index into opt->room_ids */
    wsc_conn *conn;
    uint64_t *last_seq_by_sender; /* highest sender_seq seen per sender, for the order check */
} subscriber;

typedef struct driver driver;

/* wsclient passes one user pointer; senders and subscribers need the driver too. */
typedef struct {
    driver *d;
    int index; /* sender or subscriber index */
    bool is_sub;
} conn_ref;

struct driver {
    lg_phase *ph;
    wsc_ctx *ctx;
    conn_ref *refs; /* senders first, then subscribers */
    sender *senders;
    int n_senders;
    subscriber *subs;
    int n_subs;
    index_fifo retry_ready[LG_MAX_ROOMS]; /* by room: due for a resend, in order of failure */
    size_t *retry_wait;                   /* waiting for their backoff to pass */
    size_t retry_wait_len, retry_wait_cap;
    size_t *id_table; /* open addressing: messageId -> index + 1, of the records sent so far */
    size_t id_mask;
    long done;        /* acked + failed */
    long first_sends; /* records sent at least once */
    int next_sender;  /* where service_senders starts (pacing fairness) */
    unsigned rand_state;
};

static int64_t now_us(void) { return (int64_t)(time_mono_ns() / 1000u); }

/* ---- small containers ---------------------------------------------------------------- */

static bool fifo_push(index_fifo *f, size_t v)
{
    if (f->len == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        size_t *items = malloc(cap * sizeof *items);
        if (!items) return false;
        for (size_t i = 0; i < f->len; i++) items[i] = f->items[(f->head + i) % f->cap];
        free(f->items);
        f->items = items;
        f->head = 0;
        f->cap = cap;
    }
    f->items[(f->head + f->len) % f->cap] = v;
    f->len++;
    return true;
}

static bool fifo_pop(index_fifo *f, size_t *v)
{
    if (!f->len) return false;
    *v = f->items[f->head];
    f->head = (f->head + 1) % f->cap;
    f->len--;
    return true;
}

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Room for every record of the phase at half load. Records enter at their first send, when their
 * messageId is final (under --tokens it depends on the sending slot). */
static bool alloc_id_table(driver *d)
{
    size_t size = 1;
    while (size < d->ph->n * 2) size <<= 1;
    d->id_table = calloc(size, sizeof *d->id_table);
    if (!d->id_table) return false;
    d->id_mask = size - 1;
    return true;
}

static void id_table_add(driver *d, size_t idx)
{
    size_t slot = hash_id(d->ph->rec[idx].message_id) & d->id_mask;
    while (d->id_table[slot]) slot = (slot + 1) & d->id_mask;
    d->id_table[slot] = idx + 1;
}

static long find_by_message_id(const driver *d, const char *id)
{
    size_t slot = hash_id(id) & d->id_mask;
    while (d->id_table[slot]) {
        size_t i = d->id_table[slot] - 1;
        if (strcmp(d->ph->rec[i].message_id, id) == 0) return (long)i;
        slot = (slot + 1) & d->id_mask;
    }
    return -1;
}

/* ---- outcomes ------------------------------------------------------------------------ */

static void schedule_retry(driver *d, size_t idx, const char *why)
{
    lg_record *r = &d->ph->rec[idx];
    snprintf(r->error, sizeof r->error, "%s", why);
    if (r->attempts > d->ph->opt->max_retries) {
        r->state = REC_FAILED;
        d->ph->failed++;
        d->done++;
        return;
    }
    long base = 100L << (r->attempts < 8 ? r->attempts - 1 : 7);
    d->rand_state = d->rand_state * 1103515245u + 12345u;
    long jitter = (long)(d->rand_state % (unsigned)(base / 2 + 1));
    r->state = REC_WAIT_RETRY;
    r->retry_at_us = now_us() + (base + jitter) * 1000;
    d->ph->retries++;
    if (d->retry_wait_len == d->retry_wait_cap) {
        size_t cap = d->retry_wait_cap ? d->retry_wait_cap * 2 : 256;
        size_t *grown = realloc(d->retry_wait, cap * sizeof *grown);
        if (!grown) {
            r->state = REC_FAILED;
            d->ph->failed++;
            d->done++;
            return;
        }
        d->retry_wait = grown;
        d->retry_wait_cap = cap;
    }
    d->retry_wait[d->retry_wait_len++] = idx;
}

/* Where a record due for a resend waits: under --tokens on its own slot's list (it is that
 * slot's user's message), else on its room's, for whichever connection of the room is free. */
static index_fifo *retry_list(driver *d, const lg_record *r)
{
    return d->ph->opt->tokens ? &d->senders[r->sender].own_retries : &d->retry_ready[r->room];
}

static void release_due_retries(driver *d)
{
    int64_t now = now_us();
    size_t kept = 0;
    for (size_t i = 0; i < d->retry_wait_len; i++) {
        size_t idx = d->retry_wait[i];
        if (d->ph->rec[idx].retry_at_us <= now)
            fifo_push(retry_list(d, &d->ph->rec[idx]), idx);
        else
            d->retry_wait[kept++] = idx;
    }
    d->retry_wait_len = kept;
}

static void on_answer(driver *d, sender *s, const char *data, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(data, len, 0, &jerr);
    const char *status = root ? json_string_value(json_object_get(root, "status")) : NULL;
    const char *cmid = root ? json_string_value(json_object_get(root, "clientMessageId")) : NULL;
    long idx = lg_index_from_cmid(d->ph->opt, cmid);
    if (!status || idx < 0 || (size_t)idx < d->ph->first ||
        (size_t)idx >= d->ph->first + d->ph->n) {
        d->ph->errors_seen++;
        json_decref(root);
        return;
    }
    lg_record *r = &d->ph->rec[idx];
    if (r->state != REC_INFLIGHT || r->cur_sender != s->id) {
        json_decref(root); /* a late answer for an attempt already given up on */
        return;
    }
    s->inflight--;
    if (strcmp(status, "SUCCESS") == 0) {
        const char *mid = json_string_value(json_object_get(root, "messageId"));
        if (!mid || strcmp(mid, r->message_id) != 0)
            d->ph->errors_seen++; /* the producer derived another id than the plan */
        r->state = REC_ACKED;
        r->ack_us = now_us();
        r->in_order_candidate = r->attempts == 1;
        d->ph->acked++;
        d->done++;
        if (r->broadcasts) { /* the broadcast overtook the ack */
            d->ph->acked_broadcast++;
            if (r->broadcast_us > d->ph->last_broadcast_us)
                d->ph->last_broadcast_us = r->broadcast_us;
        }
    } else {
        const char *code = json_string_value(json_object_get(root, "errorCode"));
        code = code ? code : "ERROR";
        bool retriable = strcmp(code, "RATE_LIMITED") == 0 ||
                         strcmp(code, "QUEUE_UNAVAILABLE") == 0 || strcmp(code, "QUEUE_ERROR") == 0;
        if (retriable) {
            schedule_retry(d, (size_t)idx, code);
        } else {
            snprintf(r->error, sizeof r->error, "%s", code);
            r->state = REC_FAILED;
            d->ph->failed++;
            d->done++;
        }
    }
    json_decref(root);
}

/* True when the event's roomId names room (an index): the subscriber's room, and the one the
 * matched message was sent to. */
static bool event_in_room(const driver *d, const json_t *root, uint32_t room)
{
    const char *id = json_string_value(json_object_get(root, "roomId"));
    return id && strcmp(id, d->ph->opt->room_ids[room]) == 0;
}

static void on_broadcast(driver *d, subscriber *sub, const char *data, size_t len)
{
    json_t *root = json_loadb(data, len, 0, NULL);
    const char *type = root ? json_string_value(json_object_get(root, "type")) : NULL;
    const char *mid = root ? json_string_value(json_object_get(root, "messageId")) : NULL;
    if (!type || strcmp(type, "MESSAGE") != 0 || !mid) {
        json_decref(root);
        return; /* other event types (presence, typing) are not counted here */
    }
    long idx = find_by_message_id(d, mid);
    bool in_room = event_in_room(d, root, sub->room);
    json_decref(root);
    if (idx < 0) {
        d->ph->broadcasts_unknown++;
        return;
    }
    lg_record *r = &d->ph->rec[idx];
    if (r->room != sub->room || !in_room) {
        d->ph->broadcasts_unknown++;
        return;
    }
    d->ph->broadcasts_received++;
    if (r->broadcasts) {
        d->ph->broadcasts_duplicated++;
    } else {
        r->broadcast_us = now_us();
        if (r->state == REC_ACKED) {
            d->ph->acked_broadcast++;
            d->ph->last_broadcast_us = r->broadcast_us;
        }
    }
    if (r->broadcasts < 255) r->broadcasts++;
    if (r->attempts == 1 && r->broadcasts == 1) {
        uint64_t *last = &sub->last_seq_by_sender[r->sender];
        if (r->sender_seq + 1 < *last)
            d->ph->broadcasts_out_of_order++;
        else if (r->sender_seq + 1 > *last)
            *last = r->sender_seq + 1;
    }
}

static void conn_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    conn_ref *ref = user;
    if (ref->is_sub)
        on_broadcast(ref->d, &ref->d->subs[ref->index], data, len);
    else
        on_answer(ref->d, &ref->d->senders[ref->index], data, len);
}

static void requeue_inflight_of(driver *d, sender *s)
{
    for (size_t i = d->ph->first; i < d->ph->first + d->ph->n && s->inflight > 0; i++) {
        lg_record *r = &d->ph->rec[i];
        if (r->state == REC_INFLIGHT && r->cur_sender == s->id) {
            s->inflight--;
            schedule_retry(d, i, "DISCONNECTED");
        }
    }
    s->inflight = 0;
}

static void conn_closed(wsc_conn *c, int code, const char *reason, void *user)
{
    (void)c;
    (void)code;
    (void)reason;
    conn_ref *ref = user;
    driver *d = ref->d;
    if (ref->is_sub)
        return; /* subscribers are reconnected by the loop too, see service_subscribers */
    sender *s = &d->senders[ref->index];
    requeue_inflight_of(d, s);
}

/* ---- connections --------------------------------------------------------------------- */

/* The handshake path of a connection to room: "/chat/<id>", with "?access_token=<token>" under
 * --tokens (a JWT is base64url and dots: nothing to escape). Malloc'd (a token is a few hundred
 * bytes), the caller frees it; lws copies it at connect. NULL when out of memory. */
static char *chat_path(const lg_options *opt, uint32_t room, const char *token)
{
    const char *id = opt->room_ids[room];
    size_t len = strlen("/chat/?access_token=") + strlen(id) + (token ? strlen(token) : 0) + 1;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "/chat/%s%s%s", id, token ? "?access_token=" : "", token ? token : "");
    return path;
}

/* The token sender slot i (or a subscriber, i < 0) connects with; NULL without --tokens. */
static const char *token_of(const driver *d, int i)
{
    const lg_tokens *t = d->ph->opt->tokens;
    if (!t) return NULL;
    return i < 0 ? t->subscriber : t->sender[i];
}

/* Starts a connection; NULL (like a failed one: the loop retries) when out of memory. */
static wsc_conn *start_conn(driver *d, bool to_consumer, uint32_t room, const char *token)
{
    const lg_options *opt = d->ph->opt;
    char *path = chat_path(opt, room, token);
    if (!path) return NULL;
    wsc_conn *c = to_consumer
                      ? wsc_connect_start(d->ctx, opt->consumer_host, opt->consumer_port, path)
                      : wsc_connect_start(d->ctx, opt->host, opt->port, path);
    free(path);
    return c;
}

static void open_sender(driver *d, int i)
{
    sender *s = &d->senders[i];
    s->conn = start_conn(d, false, s->room, token_of(d, i));
    if (s->conn) wsc_set_callbacks(s->conn, conn_message, conn_closed, &d->refs[i]);
}

static void open_subscriber(driver *d, int i)
{
    subscriber *sub = &d->subs[i];
    sub->conn = start_conn(d, true, sub->room, token_of(d, -1));
    if (sub->conn)
        wsc_set_callbacks(sub->conn, conn_message, conn_closed, &d->refs[d->n_senders + i]);
}

/* Why connections of one kind did not open, for the fatal error: the first failure's reason and
 * the HTTP status of one more handshake like theirs (the asynchronous ones do not expose it). A
 * 401 is a token missing or refused (protocol.md §8), which the user can act on. */
static void explain_failure(driver *d, bool subscribers, const char *why, char *out, size_t len)
{
    const lg_options *opt = d->ph->opt;
    char *path = chat_path(opt, subscribers ? d->subs[0].room : d->senders[0].room,
                           token_of(d, subscribers ? -1 : 0));
    int status = 0;
    char err[128] = "";
    wsc_conn *probe = path ? wsc_connect(d->ctx, subscribers ? opt->consumer_host : opt->host,
                                         subscribers ? opt->consumer_port : opt->port, path,
                                         opt->connect_timeout_s * 1000, &status, err, sizeof err)
                           : NULL;
    free(path);
    if (probe) wsc_free(probe); /* it opened this time: the failure was passing */
    if (status == 401 && !opt->tokens)
        snprintf(out, len,
                 "the WebSocket handshake was refused with HTTP 401: the service requires an "
                 "identity token (CHATFLOW_AUTH=on); run with --tokens");
    else if (status == 401)
        snprintf(out, len,
                 "the WebSocket handshake was refused with HTTP 401: the service refuses the "
                 "minted tokens (CHATFLOW_AUTH_HS256_SECRET, _ISSUER, _AUDIENCE must be its own)");
    else if (status >= 400)
        snprintf(out, len, "the WebSocket handshake was refused with HTTP %d", status);
    else
        snprintf(out, len, "%s", why && why[0] ? why : "no reason given");
}

static bool wait_open(driver *d, int timeout_s, bool subscribers)
{
    int64_t deadline = now_us() + (int64_t)timeout_s * 1000000;
    for (;;) {
        int open = 0, failed = 0, total = subscribers ? d->n_subs : d->n_senders;
        const char *why = NULL;
        for (int i = 0; i < total; i++) {
            wsc_conn *c = subscribers ? d->subs[i].conn : d->senders[i].conn;
            const char *this_why = NULL;
            if (!c || wsc_has_failed(c, &this_why)) {
                failed++;
                why = why ? why : this_why;
            } else if (wsc_is_open(c)) {
                open++;
            }
        }
        if (open + failed == total) {
            if (failed) {
                char because[256];
                explain_failure(d, subscribers, why, because, sizeof because);
                snprintf(d->ph->fatal, sizeof d->ph->fatal,
                         "%d of %d %s connections to %s:%d failed: %s", failed, total,
                         subscribers ? "subscriber" : "sender",
                         subscribers ? d->ph->opt->consumer_host : d->ph->opt->host,
                         subscribers ? d->ph->opt->consumer_port : d->ph->opt->port, because);
                return false;
            }
            return true;
        }
        if (now_us() > deadline) {
            snprintf(d->ph->fatal, sizeof d->ph->fatal,
                     "timed out after %d s opening %s connections", timeout_s,
                     subscribers ? "subscriber" : "sender");
            return false;
        }
        wsc_service(d->ctx, 50);
    }
}

/* First sends still allowed now under --rate (LONG_MAX without it). */
static long send_budget(const driver *d, int64_t now)
{
    long rate = d->ph->opt->rate;
    if (rate <= 0) return LONG_MAX;
    long allowed = (long)((double)(now - d->ph->start_us) * (double)rate / 1e6) + 1;
    return allowed > d->first_sends ? allowed - d->first_sends : 0;
}

/* Under --tokens, makes record idx slot s's message before its first send: the slot's userId,
 * and the messageId the producer derives from it. Without --tokens the plan settled both. */
static void settle_identity(driver *d, sender *s, size_t idx)
{
    if (!d->ph->opt->tokens) return;
    lg_record *r = &d->ph->rec[idx];
    r->user_id = lg_slot_user((int)s->id);
    r->sender = s->id;
    lg_compute_message_ids(d->ph->rec, idx, 1, d->ph->opt);
}

static void service_senders(driver *d)
{
    int64_t now = now_us();
    long budget = send_budget(d, now);
    int start = d->next_sender;
    d->next_sender = d->n_senders ? (d->next_sender + 1) % d->n_senders : 0;
    for (int k = 0; k < d->n_senders; k++) {
        int i = (start + k) % d->n_senders;
        sender *s = &d->senders[i];
        if (s->conn && wsc_is_closed(s->conn)) {
            wsc_free(s->conn);
            s->conn = NULL;
            s->backoff_ms =
                s->backoff_ms ? (s->backoff_ms * 2 > 5000 ? 5000 : s->backoff_ms * 2) : 100;
            s->reconnect_at_us = now + (int64_t)s->backoff_ms * 1000;
        }
        if (!s->conn) {
            if (now >= s->reconnect_at_us) {
                open_sender(d, i);
                d->ph->reconnections++;
            }
            continue;
        }
        if (!wsc_is_open(s->conn)) continue;
        s->backoff_ms = 0;
        index_fifo *retries = d->ph->opt->tokens ? &s->own_retries : &d->retry_ready[s->room];
        while (s->inflight < d->ph->opt->window) {
            size_t idx;
            if (!fifo_pop(retries, &idx)) {
                void *item;
                if (budget <= 0) break;
                if (workqueue_pop_many(d->ph->room_queue[s->room], &item, 1) != 1) break;
                idx = (size_t)(uintptr_t)item - 1;
            }
            lg_record *r = &d->ph->rec[idx];
            if (r->attempts == 0) settle_identity(d, s, idx);
            char frame[1024];
            int len = lg_frame(d->ph->opt, r, idx, frame, sizeof frame);
            if (!wsc_send_text(s->conn, frame, (size_t)len)) {
                fifo_push(retries, idx); /* settled to this slot (--tokens): it stays here */
                break;
            }
            if (r->attempts == 0) {
                id_table_add(d, idx);
                budget--;
                d->first_sends++;
                r->first_send_us = now_us();
                r->wall_send_ms = time_wall_ms();
                r->sender = s->id;
                r->sender_seq = s->next_seq++;
            }
            r->attempts++;
            r->cur_sender = s->id;
            r->state = REC_INFLIGHT;
            s->inflight++;
        }
    }
}

static void service_subscribers(driver *d)
{
    for (int i = 0; i < d->n_subs; i++) {
        subscriber *sub = &d->subs[i];
        if (sub->conn && wsc_is_closed(sub->conn)) {
            /* a dropped subscriber misses messages: they count as lost; reconnect to keep counting
             */
            wsc_free(sub->conn);
            open_subscriber(d, i);
            d->ph->reconnections++;
        }
    }
}

/* ---- the generator thread -------------------------------------------------------------- */

typedef struct {
    lg_phase *ph;
    volatile bool stop;
} generator_arg;

static void *generator_main(void *arg)
{
    generator_arg *g = arg;
    lg_phase *ph = g->ph;
    for (size_t i = ph->first; i < ph->first + ph->n && !g->stop; i++) {
        workqueue *q = ph->room_queue[ph->rec[i].room];
        while (!workqueue_push(q, (void *)(uintptr_t)(i + 1))) {
            if (g->stop) return NULL;
            time_sleep_ms(1); /* the room's queue is full: the senders are the bottleneck */
        }
    }
    return NULL;
}

/* ---- the phase ------------------------------------------------------------------------- */

static void progress(const driver *d, int64_t *last_us, long *last_done)
{
    int64_t now = now_us();
    if (d->ph->opt->quiet || now - *last_us < 2000000) return;
    double rate = (double)(d->done - *last_done) / ((double)(now - *last_us) / 1e6);
    fprintf(stderr, "loadgen: %ld/%zu done (%.0f msg/s), %ld failed, %ld retries, %ld broadcasts\n",
            d->done, d->ph->n, rate, d->ph->failed, d->ph->retries, d->ph->broadcasts_received);
    *last_us = now;
    *last_done = d->done;
}

static void drain_progress(const driver *d, int64_t *last_us, long *last_seen)
{
    int64_t now = now_us();
    if (d->ph->opt->quiet || now - *last_us < 2000000) return;
    double rate = (double)(d->ph->acked_broadcast - *last_seen) / ((double)(now - *last_us) / 1e6);
    fprintf(stderr, "loadgen: waiting for broadcasts: %ld/%ld acked messages seen (%.0f msg/s)\n",
            d->ph->acked_broadcast, d->ph->acked, rate);
    *last_us = now;
    *last_seen = d->ph->acked_broadcast;
}

bool lg_drive(lg_phase *ph)
{
    const lg_options *opt = ph->opt;
    driver d;
    memset(&d, 0, sizeof d);
    d.ph = ph;
    d.rand_state = opt->seed;
    d.n_senders = ph->n ? (opt->connections) : 0;
    d.n_subs = opt->subscribe ? opt->rooms : 0;
    bool ok = false;
    pthread_t gen;
    generator_arg garg = {ph, false};
    bool gen_started = false;

    d.ctx = wsc_ctx_new();
    d.senders = calloc((size_t)d.n_senders + 1, sizeof *d.senders);
    d.subs = calloc((size_t)d.n_subs + 1, sizeof *d.subs);
    d.refs = calloc((size_t)(d.n_senders + d.n_subs) + 1, sizeof *d.refs);
    if (!d.ctx || !d.senders || !d.subs || !d.refs || !alloc_id_table(&d)) {
        snprintf(ph->fatal, sizeof ph->fatal, "out of memory or no lws context");
        goto out;
    }
    for (int i = 0; i < d.n_senders; i++) {
        d.senders[i].id = (uint32_t)i;
        d.senders[i].room = (uint32_t)(i % opt->rooms);
        d.refs[i] = (conn_ref){&d, i, false};
    }
    for (int i = 0; i < d.n_subs; i++) {
        d.subs[i].room = (uint32_t)i;
        d.subs[i].last_seq_by_sender = calloc((size_t)d.n_senders + 1, sizeof(uint64_t));
        if (!d.subs[i].last_seq_by_sender) {
            snprintf(ph->fatal, sizeof ph->fatal, "out of memory");
            goto out;
        }
        d.refs[d.n_senders + i] = (conn_ref){&d, i, true};
    }
    for (int r = 0; r < opt->rooms; r++) {
        ph->room_queue[r] = workqueue_new((size_t)opt->window * 4 + 16, NULL, NULL);
        if (!ph->room_queue[r]) {
            snprintf(ph->fatal, sizeof ph->fatal, "out of memory");
            goto out;
        }
    }

    if (d.n_subs) {
        for (int i = 0; i < d.n_subs; i++) open_subscriber(&d, i);
        if (!wait_open(&d, opt->connect_timeout_s, true)) goto out;
    }
    for (int i = 0; i < d.n_senders; i++) open_sender(&d, i);
    if (!wait_open(&d, opt->connect_timeout_s, false)) goto out;

    ph->start_us = now_us();
    ph->start_wall_ms = time_wall_ms();
    if (pthread_create(&gen, NULL, generator_main, &garg) != 0) {
        snprintf(ph->fatal, sizeof ph->fatal, "cannot start the generator thread");
        goto out;
    }
    gen_started = true;

    int64_t last_us = now_us(), stall_since = now_us();
    long last_done = 0, stall_done = 0;
    while ((size_t)d.done < ph->n) {
        release_due_retries(&d);
        service_senders(&d);
        service_subscribers(&d);
        wsc_service(d.ctx, 5);
        progress(&d, &last_us, &last_done);
        if (d.done != stall_done) {
            stall_done = d.done;
            stall_since = now_us();
        } else if (now_us() - stall_since > (int64_t)opt->connect_timeout_s * 3 * 1000000) {
            snprintf(ph->fatal, sizeof ph->fatal, "no message answered for %d s (%ld of %zu done)",
                     opt->connect_timeout_s * 3, d.done, ph->n);
            goto out;
        }
    }
    ph->end_us = now_us();
    ph->end_wall_ms = time_wall_ms();

    if (d.n_subs) {
        int64_t deadline = now_us() + (int64_t)opt->drain_timeout_s * 1000000;
        last_us = now_us();
        long last_seen = ph->acked_broadcast;
        while (ph->acked_broadcast < ph->acked && now_us() < deadline) {
            service_subscribers(&d);
            wsc_service(d.ctx, 20);
            drain_progress(&d, &last_us, &last_seen);
        }
        for (size_t i = ph->first; i < ph->first + ph->n; i++)
            if (ph->rec[i].state == REC_ACKED && ph->rec[i].broadcasts == 0) ph->broadcasts_lost++;
    }
    ok = true;

out:
    if (gen_started) {
        garg.stop = true;
        pthread_join(gen, NULL);
    }
    for (int i = 0; d.senders && i < d.n_senders; i++) {
        if (d.senders[i].conn) wsc_free(d.senders[i].conn);
        free(d.senders[i].own_retries.items);
    }
    for (int i = 0; d.subs && i < d.n_subs; i++) {
        if (d.subs[i].conn) wsc_free(d.subs[i].conn);
        free(d.subs[i].last_seq_by_sender);
    }
    if (d.ctx) wsc_ctx_free(d.ctx);
    for (int r = 0; r < opt->rooms; r++) {
        if (ph->room_queue[r]) {
            void *item;
            while (workqueue_pop_many(ph->room_queue[r], &item, 1) == 1) {
            }
            workqueue_free(ph->room_queue[r]);
            ph->room_queue[r] = NULL;
        }
        free(d.retry_ready[r].items);
    }
    free(d.retry_wait);
    free(d.id_table);
    free(d.senders);
    free(d.subs);
    free(d.refs);
    return ok;
}
