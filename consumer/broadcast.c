/*
 * broadcast — see broadcast.h for the contract. How it is built:
 *
 *  - Threads. Poller threads only copy a message into `inbox` (a bounded workqueue whose notify
 *    calls lws_cancel_service). The lws service thread owns every subscriber, room and frame. A
 *    replay worker thread (replay.c) runs the history callback (it may block on PostgreSQL) and
 *    hands the frames it built back through its results queue (+ lws_cancel_service). Besides
 * those, only the waits of a full inbox (room_mu/room_cv) and the table of lost events (drops_mu)
 * cross threads; the only lws call made off the service thread is lws_cancel_service().
 *  - Inbox backpressure. A publisher that finds the inbox full waits on room_cv (counted in
 *    publishers_waiting, so the service thread takes room_mu only when someone waits) until the
 *    service thread has popped a batch, at most publish_wait_ms. No lost wake-up: the waiter
 *    registers and retries the push under room_mu, and the service thread pops (the queue's lock)
 *    before it reads publishers_waiting and broadcasts under room_mu. `drains` counts batches
 *    popped; a publisher whose wait ran out stores drains + 1 in stalled_at, and later publishers
 *    skip the wait while that still equals drains + 1 (no batch popped since).
 *  - Lost events. A MESSAGE dropped by broadcast_publish() (wait ran out, out of memory) goes
 *    into `drops`, a table of (room id text, newest lost sequence number), one entry per room,
 *    preallocated for every room served (so recording never allocates), keyed by the room id as
 *    the message names it (not an index: rooms will become string ids). drops_pending (set under
 *    drops_mu) is read before every fan-out: a room's later event is pushed to the inbox after
 *    its drop was recorded, so the drop is applied before that event goes anywhere. Applying it
 *    marks the room cache (bc_room_cache_mark_lost) and closes the room's subscribers with 4013.
 *  - Fan-out. On LWS_CALLBACK_EVENT_WAIT_CANCELLED the service thread drains the inbox; each
 *    message is serialised once into a refcounted bc_frame shared by the room cache and every
 *    subscriber queue, and lws_callback_on_writable() is asked only for subscribers whose queue
 *    went from empty to non-empty (a queue that is not empty always has a WRITEABLE pending).
 *  - Slow subscribers. A subscriber whose queue passes its limit while its socket takes no more
 *    (or passes twice its limit) is closed with 4008 "slow subscriber: N frames behind"; its
 *    queue is freed at once, so it costs nothing more while lws sends the close frame (or hangs
 *    up after CLOSE_GRACE_S if its socket stays full).
 *  - Order and duplicates. Per room, a message whose sequence number is not greater than the
 *    last one broadcast is a redelivery (visibility timeout, restart of a poller) and is dropped:
 *    subscribers see sequence numbers strictly increase.
 *  - Subscribers. Each one's state is one of subscriber_state.h, changed only by sub_enter(); it
 *    is registered in a slot table (slot_table.h) from ESTABLISHED to CLOSED, so the replay
 *    worker's answers find it by (slot, generation) or learn that it is gone.
 *  - Replay (since=): replay.c.
 *  - Members. A subscriber that named itself (userId, username) is a member: presence.c counts
 *    its connections; the first one announces ONLINE, the last one OFFLINE. Ephemeral events
 *    (PRESENCE, TYPING, READ, ERROR) have no sequence number: they go straight into a member's
 *    send queue even while it replays (their order against messages does not matter), never
 *    into the room cache, under the same slow-subscriber bound as everything else.
 *  - Subscriber frames. Each connection has a token bucket (bc_bucket) taken for every frame it
 *    sends, before anything else is done with it. An accepted READ updates presence and the
 *    receipts writer at once; its announcement is put off (read_timer) when the connection
 *    announced less than READ_ANNOUNCE_GAP_MS ago, and then announces the member's position at
 *    that time (the newest; a member with several connections never goes backwards).
 *  - Liveness. lws 4.1's lws_service() ignores its timeout (it sleeps until the next lws timer
 *    or event, "23 days" when there is none), so a 1 s lws timer (`tick`) makes an idle loop turn;
 *    each turn announces SERVICE_TURN_MAX_MS to the watchdog.
 *  - Close codes: 1001 stop, 1011 out of memory, 4008 slow, 4009 room full, 4401 token expired
 *    (identity tokens on), 4013 try again (lws
 *    clients turn the registered 1013 into 1002) — also "events lost here".
 */
#include "broadcast.h"

#include <errno.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broadcast_internal.h"
#include "broadcast_path.h"
#include "events.h"
#include "log.h"
#include "timeutil.h"
#include "watchdog.h"

void broadcast_wake(void *arg)
{
    broadcaster *b = arg;
    lws_cancel_service(b->ws.context);
}

bool sub_enter(subscriber *sub, sub_state to) { return sub_state_enter(&sub->state, to, sub->id); }

/* ---- closing ---- */

void sub_close(subscriber *sub, int code, const char *reason)
{
    if (!sub_state_open(sub->state) || !sub->wsi || !sub_enter(sub, SUB_CLOSING)) return;
    unsigned char payload[CLOSE_REASON_MAX + 1];
    size_t len = strlen(reason);
    if (len > CLOSE_REASON_MAX) {
        len = CLOSE_REASON_MAX;
        /* a reason must stay valid UTF-8: do not cut inside a character */
        while (len > 0 && ((unsigned char)reason[len] & 0xC0) == 0x80) len--;
    }
    memcpy(payload, reason, len);
    lws_close_reason(sub->wsi, (enum lws_close_status)code, payload, len);
    bc_fqueue_clear(&sub->sendq);
    bc_replay_free(&sub->replay);
    lws_set_timeout(sub->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_GRACE_S);
    lws_callback_on_writable(sub->wsi);
}

static void drop_slow(broadcaster *b, subscriber *sub, size_t behind)
{
    char reason[96];
    snprintf(reason, sizeof reason, "slow subscriber: %zu frames behind", behind);
    log_warn(COMPONENT, "room %s subscriber %llu: %s; closing it", sub->room,
             (unsigned long long)sub->id, reason);
    metric_counter_inc(b->m_slow);
    sub_close(sub, CLOSE_SLOW, reason);
}

/* ---- queueing ---- */

/* Arms WRITEABLE when the queue was empty (a queue that is not empty has one pending). */
bool sub_queue_frame(subscriber *sub, bc_frame *f)
{
    if (!bc_fqueue_push(&sub->sendq, f)) {
        sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return false;
    }
    if (bc_fqueue_len(&sub->sendq) == 1) lws_callback_on_writable(sub->wsi);
    return true;
}

/* Over its limit, a subscriber is slow when its socket takes no more: a burst fanned out in
 * one wake (one write per WRITEABLE) overfills a queue that drains at the next turns of the loop,
 * so a subscriber that keeps its socket open to writes gets up to twice its limit. The poll()
 * behind lws_send_pipe_choked() is only paid over the limit. */
static bool is_slow(subscriber *sub, size_t queued)
{
    return queued > 2 * sub->queue_limit || lws_send_pipe_choked(sub->wsi);
}

/* Into the send queue now, whatever the state; dropped as slow past the queue's bound. */
void broadcast_deliver_now(broadcaster *b, subscriber *sub, bc_frame *f)
{
    if (!sub_state_open(sub->state) || !sub_queue_frame(sub, f)) return;
    size_t queued = bc_fqueue_len(&sub->sendq);
    if (queued > sub->queue_limit && is_slow(sub, queued)) drop_slow(b, sub, queued);
}

static void offer_live_frame(broadcaster *b, subscriber *sub, bc_frame *f)
{
    if (!sub_state_open(sub->state)) return;
    if (sub_state_replaying(sub->state)) { /* held until the replay has caught up */
        if (!bc_fqueue_push(&sub->replay.held, f)) {
            sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
            return;
        }
        size_t held = bc_fqueue_len(&sub->replay.held);
        if (held > b->cfg.cache_per_room + b->cfg.send_queue_max)
            drop_slow(b, sub, held + bc_fqueue_len(&sub->sendq));
        return;
    }
    /* A replay from the store may have sent it already: with the cluster bus a message can be
     * committed before its event reaches this node (the poller publishes it after the commit). */
    if (f->seq[0] && sub->replay.cursor[0] && !bc_frame_after(f, sub->replay.cursor)) return;
    broadcast_deliver_now(b, sub, f);
}

/* An ephemeral event (no sequence number) for every member of the room. Takes json (freed).
 * false when it could not be built (out of memory). */
bool broadcast_announce(broadcaster *b, room_state *rs, char *json)
{
    bc_frame *f = json && rs ? bc_frame_new(json, strlen(json), "") : NULL;
    free(json);
    if (!rs) return false; /* no state held for the room: nobody there */
    if (!f) {
        log_error(COMPONENT, "out of memory building an event; not announced");
        return false;
    }
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs))
    {
        subscriber *sub = lws_container_of(d, subscriber, in_room);
        if (sub->member) broadcast_deliver_now(b, sub, f);
    }
    lws_end_foreach_dll_safe(d, d1);
    bc_frame_unref(f);
    return true;
}

/* An ephemeral event for one subscriber. Takes json (freed). */
void broadcast_tell(broadcaster *b, subscriber *sub, char *json)
{
    bc_frame *f = json ? bc_frame_new(json, strlen(json), "") : NULL;
    free(json);
    if (!f) {
        log_error(COMPONENT, "out of memory building an event for subscriber %llu",
                  (unsigned long long)sub->id);
        return;
    }
    broadcast_deliver_now(b, sub, f);
    bc_frame_unref(f);
}

static void observe_latency(broadcaster *b, const chat_message *m)
{
    int64_t sent_ms;
    if (!time_parse_iso8601(m->timestamp, &sent_ms)) return;
    int64_t delta = time_wall_ms() - sent_ms;
    if (delta >= 0) metric_histogram_observe(b->m_e2e, (double)delta / 1000.0);
}

/* ---- lost events ---- */

/* A MESSAGE of the room never reached its cache or subscribers: the cache counts it as evicted
 * (a replay from below it goes to the store), and the subscribers, who will never get it live,
 * are told to reconnect from what they have. */
static void room_lost_event(room_state *rs, const char *seq)
{
    bc_room_cache_mark_lost(&rs->cache, seq);
    size_t closed = 0;
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs))
    {
        subscriber *sub = lws_container_of(d, subscriber, in_room);
        if (sub_state_open(sub->state)) closed++;
        sub_close(sub, CLOSE_TRY_AGAIN,
                  "events lost here (overload or cluster bus gap); reconnect with since=<the last "
                  "sequenceNumber received>");
    }
    lws_end_foreach_dll_safe(d, d1);
    log_warn(COMPONENT,
             "room %s: event %s was not broadcast; replays below it come from the store, "
             "%zu subscribers told to reconnect",
             rs->id, seq[0] ? seq : "(no sequence number)", closed);
}

/* Called before every fan-out and replay decision. */
void broadcast_apply_lost_events(broadcaster *b)
{
    if (!atomic_load(&b->drops_pending)) return;
    pthread_mutex_lock(&b->drops_mu);
    atomic_store(&b->drops_pending, false);
    for (size_t i = 0; i < b->n_drops; i++) {
        room_state *rs = broadcast_room_of(b, b->drops[i].room);
        if (rs) room_lost_event(rs, b->drops[i].seq); /* no state: no cache, nobody to tell */
    }
    b->n_drops = 0;
    if (b->drops_overflow) {
        /* Too many rooms lost events to name each: every room is treated as having lost one
         * newer than anything it holds. Its cache starts afresh (as after a restart) and its
         * subscribers resume with since=. */
        b->drops_overflow = false;
        broadcast_rooms_forget_caches(b);
        room_state *rs, *tmp;
        HASH_ITER(hh, b->rooms, rs, tmp) { room_lost_event(rs, ""); }
    }
    pthread_mutex_unlock(&b->drops_mu);
}

/* Poller side: remembers the newest lost sequence number per room; never allocates. Past
 * rooms_max rooms with losses, drops_overflow stands for all of them. */
static void record_lost_event(broadcaster *b, const published *p)
{
    pthread_mutex_lock(&b->drops_mu);
    size_t i = 0;
    while (i < b->n_drops && strcmp(b->drops[i].room, p->msg.room_id) != 0) i++;
    if (i == b->n_drops && i < b->cfg.rooms_max) {
        snprintf(b->drops[i].room, sizeof b->drops[i].room, "%s", p->msg.room_id);
        b->drops[i].seq[0] = '\0';
        b->n_drops++;
    }
    if (i == b->n_drops) b->drops_overflow = true;
    if (i < b->n_drops && seqnum_valid(p->seq) &&
        (!b->drops[i].seq[0] || seqnum_cmp(p->seq, b->drops[i].seq) > 0))
        snprintf(b->drops[i].seq, sizeof b->drops[i].seq, "%s", p->seq);
    atomic_store(&b->drops_pending, true);
    pthread_mutex_unlock(&b->drops_mu);
}

void broadcast_room_lost(broadcaster *b, const char *room, const char *seq)
{
    published p = {0};
    snprintf(p.msg.room_id, sizeof p.msg.room_id, "%s", room);
    snprintf(p.seq, sizeof p.seq, "%s", seq ? seq : "");
    record_lost_event(b, &p);
    lws_cancel_service(b->ws.context);
}

static void fan_out(broadcaster *b, const published *p)
{
    room_state *rs = broadcast_room_get(b, p->msg.room_id);
    if (!rs) {
        /* rooms_max rooms all have subscribers: this one has none to deliver to, and its next
         * subscriber starts from the store (the room has no cache to be wrong). */
        log_debug(COMPONENT, "room %s: no state held (room table full); event not cached",
                  p->msg.room_id);
        return;
    }
    const char *seq = seqnum_valid(p->seq) ? p->seq : "";
    if (seq[0] && rs->last_seq[0] && seqnum_cmp(seq, rs->last_seq) <= 0) {
        log_debug(COMPONENT, "room %s: sequence number %s already broadcast (last %s); skipped",
                  rs->id, seq, rs->last_seq);
        return;
    }
    if (p->msg.kind == CHAT_KIND_TYPING) { /* ephemeral: members only, never cached */
        if (seq[0]) memcpy(rs->last_seq, seq, sizeof rs->last_seq);
        if (!broadcast_announce(b, rs, broadcast_event_to_json(&p->msg, p->server_ts, NULL)))
            metric_counter_inc(b->m_dropped_typing);
        return;
    }
    char *json = broadcast_event_to_json(&p->msg, p->server_ts, seq);
    bc_frame *f = json ? bc_frame_new(json, strlen(json), seq) : NULL;
    free(json);
    if (!f) {
        log_error(COMPONENT, "room %s: out of memory building a frame; message %s not broadcast",
                  rs->id, p->msg.message_id);
        metric_counter_inc(b->m_dropped_message);
        room_lost_event(rs, seq);
        return;
    }
    observe_latency(b, &p->msg);
    if (seq[0]) {
        bc_room_cache_push(&rs->cache, f);
        memcpy(rs->last_seq, seq, sizeof rs->last_seq);
    }
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs))
    {
        offer_live_frame(b, lws_container_of(d, subscriber, in_room), f);
    }
    lws_end_foreach_dll_safe(d, d1);
    bc_frame_unref(f);
}

/* There is room in the inbox again: wake the publishers waiting for it (see the top). */
static void inbox_drained(broadcaster *b)
{
    atomic_fetch_add(&b->drains, 1);
    if (!atomic_load(&b->publishers_waiting)) return;
    pthread_mutex_lock(&b->room_mu);
    pthread_cond_broadcast(&b->room_cv);
    pthread_mutex_unlock(&b->room_mu);
}

static void drain_inbox(broadcaster *b)
{
    void *items[DRAIN_BATCH];
    for (int round = 0; round < DRAIN_BATCHES_PER_WAKE; round++) {
        size_t n = workqueue_pop_many(b->inbox, items, DRAIN_BATCH);
        if (n) inbox_drained(b);
        for (size_t i = 0; i < n; i++) {
            broadcast_apply_lost_events(b); /* before any later event of a room with a lost one */
            fan_out(b, items[i]);
            free(items[i]);
        }
        if (n < DRAIN_BATCH) return;
    }
    /* More is waiting, and its wakes may have been coalesced into this one: come back after
     * the loop has had a chance to write. */
    lws_cancel_service(b->ws.context);
}

/* ---- connections ---- */

/* Is query argument i access_token=...? Only its start is copied (the token may be long). */
static bool is_token_arg(struct lws *wsi, int i)
{
    static const char name[] = "access_token=";
    int n = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n < (int)sizeof name - 1) return false;
    char *buf = malloc((size_t)n + 1);
    bool yes = buf && lws_hdr_copy_fragment(wsi, buf, n + 1, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0 &&
               strncmp(buf, name, sizeof name - 1) == 0;
    free(buf);
    return yes;
}

/* Reads the request target; 0 or the HTTP status to refuse with (reason set). */
static int read_target(struct lws *wsi, bc_target *t, char *reason, size_t rlen)
{
    char path[256];
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) < 0) {
        snprintf(reason, rlen, "request path is missing or longer than %zu bytes", sizeof path - 1);
        return 414;
    }
    enum { MAX_ARGS = 8 };
    char argbuf[MAX_ARGS][128];
    const char *args[MAX_ARGS];
    size_t nargs = 0;
    for (int i = 0; lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++) {
        if (is_token_arg(wsi, i)) continue; /* the identity token: auth.h reads it */
        if (nargs == MAX_ARGS) {
            snprintf(reason, rlen, "too many query arguments");
            return 400;
        }
        if (lws_hdr_copy_fragment(wsi, argbuf[nargs], sizeof argbuf[nargs], WSI_TOKEN_HTTP_URI_ARGS,
                                  i) < 0) {
            snprintf(reason, rlen, "query argument longer than %zu bytes", sizeof argbuf[0] - 1);
            return 400;
        }
        args[nargs] = argbuf[nargs];
        nargs++;
    }
    return bc_target_parse(path, args, nargs, t, reason, rlen);
}

/* With identity tokens (cfg.auth), the token decides who subscribes: 0 with t's userId and
 * username replaced by the token's, or 401/403 (reason set). A userId in the query that is not
 * the token's subject is refused, not silently replaced; the query's username is kept only when
 * the token has no name. With anonymous_read, a handshake with no token at all subscribes
 * anonymously whatever its query says. Runs at the upgrade and again at ESTABLISHED (like
 * read_target). */
static int apply_token(const broadcaster *b, struct lws *wsi, bc_target *t, char *reason,
                       size_t rlen)
{
    if (!b->cfg.auth) return 0;
    char *buf = malloc(AUTH_TOKEN_BUF); /* 8 KiB: not on the service thread's stack */
    if (!buf) {
        snprintf(reason, rlen, "server out of memory");
        return 503;
    }
    size_t len = 0;
    auth_token_kind kind;
    auth_identity id;
    const char *token = auth_token_from_lws(wsi, buf, &len, &kind);
    if (kind == AUTH_TOKEN_NONE && b->cfg.anonymous_read) {
        /* Nobody vouches for a query's userId: an anonymous reader, never a member. */
        free(buf);
        t->user_id = 0;
        t->username[0] = '\0';
        return 0;
    }
    int status = auth_check(b->cfg.auth, kind, token, len, t->room, &id, reason, rlen);
    free(buf);
    if (status) return status;
    if (t->user_id && t->user_id != id.user_id) {
        snprintf(reason, rlen, "userId %u is not the token's subject (%s)", (unsigned)t->user_id,
                 id.user_id_str);
        return 403;
    }
    if (id.username[0]) snprintf(t->username, sizeof t->username, "%s", id.username);
    t->token_expires_s = id.exp + id.leeway_s;
    /* A member needs a name: without one (neither token nor query) it subscribes anonymously. */
    t->user_id = t->username[0] ? id.user_id : 0;
    return 0;
}

/* The target, checked: read_target() then the token; 0 or the status to refuse with. */
static int resolve_target(const broadcaster *b, struct lws *wsi, bc_target *t, char *reason,
                          size_t rlen)
{
    int status = read_target(wsi, t, reason, rlen);
    return status ? status : apply_token(b, wsi, t, reason, rlen);
}

/* Refuses bad subscriptions before the 101, with an HTTP status and the reason as the body. */
static int on_confirm_upgrade(broadcaster *b, struct lws *wsi, const char *upgrade_to)
{
    char reason[200];
    int status = 0;
    bc_target t;
    if (!upgrade_to || strcmp(upgrade_to, "websocket") != 0) return -1;
    if (atomic_load(&b->stopping)) {
        status = 503;
        snprintf(reason, sizeof reason, "this consumer is shutting down");
    } else if (atomic_load(&b->subscribers) >= b->cfg.max_subscribers) {
        status = 503;
        snprintf(reason, sizeof reason, "subscriber limit reached (%zu); try another consumer",
                 b->cfg.max_subscribers);
    } else {
        status = resolve_target(b, wsi, &t, reason, sizeof reason);
        if (!status && !broadcast_room_get(b, t.room)) {
            status = 503;
            snprintf(reason, sizeof reason,
                     "this consumer holds %zu rooms with subscribers (CHATFLOW_ROOMS_MAX); try "
                     "another consumer",
                     b->cfg.rooms_max);
        } else if (!status && t.user_id && b->cfg.presence &&
                   !presence_admits(b->cfg.presence, t.room, t.user_id)) {
            status = 403;
            metric_counter_inc(b->m_room_full);
            snprintf(reason, sizeof reason,
                     "room %s is full: %zu members online (CHATFLOW_ROOM_MEMBER_CAP)", t.room,
                     presence_member_cap(b->cfg.presence));
        }
    }
    if (!status) return 0;
    log_info(COMPONENT, "handshake refused with %d: %s", status, reason);
    if (lws_return_http_status(wsi, (unsigned int)status, reason)) return -1;
    return 1; /* we answered; lws finishes the transaction */
}

/* Registers the subscriber (slot table, room list, counts) and moves it to LIVE. false when
 * the slot table is full: only connections upgraded in the same turn past the cap get here. */
static bool attach(broadcaster *b, struct lws *wsi, subscriber *sub, const char *room)
{
    room_state *rs = broadcast_room_get(b, room);
    if (!rs) return false;
    subscriber **cell = slot_table_acquire(b->sub_slots, &sub->ref);
    if (!cell) return false;
    *cell = sub;
    sub->wsi = wsi;
    sub->id = ++b->next_sub_id;
    snprintf(sub->room, sizeof sub->room, "%s", room);
    sub->queue_limit = b->cfg.send_queue_max;
    bc_fqueue_init(&sub->sendq);
    sub_enter(sub, SUB_LIVE);
    lws_dll2_add_tail(&sub->in_room, &rs->subs);
    size_t n = atomic_fetch_add(&b->subscribers, 1) + 1;
    metric_gauge_set(b->m_active, (double)n);
    metric_counter_inc(b->m_connections);
    sub->last_heard_ns = time_mono_ns();
    return true;
}

/* The connection's lws timer, armed for the moment its token runs out. */
static void arm_token_expiry(subscriber *sub)
{
    int64_t left_s = sub->token_expires_s - time_wall_ms() / 1000;
    lws_set_timer_usecs(sub->wsi, left_s > 0 ? (lws_usec_t)left_s * LWS_US_PER_SEC : 1);
}

/* A subscriber's timer: its token ran out (close 4401; the client gets a fresh token and
 * resumes with since=), or it fired early (armed again). A connection still in its handshake
 * missed the handshake deadline. */
static int on_timer(subscriber *sub, struct lws *wsi)
{
    if (!sub || sub->wsi != wsi) return -1;
    if (!sub->token_expires_s) return 0;
    if (time_wall_ms() / 1000 < sub->token_expires_s)
        arm_token_expiry(sub);
    else
        sub_close(sub, AUTH_CLOSE_TOKEN_EXPIRED, "token expired");
    return 0;
}

static int on_established(broadcaster *b, struct lws *wsi, subscriber *sub)
{
    char reason[200];
    bc_target t;
    memset(sub, 0, sizeof *sub); /* SUB_HANDSHAKE, as lws allocated it */
    if (resolve_target(b, wsi, &t, reason, sizeof reason) != 0) {
        /* the same checks passed at the upgrade; only a token expiring in between gets here */
        log_warn(COMPONENT, "established connection refused: %s", reason);
        return -1;
    }
    ws_listen_on_upgraded(wsi);
    if (!attach(b, wsi, sub, t.room)) {
        log_warn(COMPONENT,
                 "subscriber limit (%zu) or room limit (%zu) reached by connections upgraded "
                 "together; closing one",
                 b->cfg.max_subscribers, b->cfg.rooms_max);
        return -1;
    }
    if (b->closing_all) { /* upgraded just before the stop began */
        sub_close(sub, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
        return 0;
    }
    if (t.user_id && b->cfg.presence) broadcast_members_join(b, sub, t.room, t.user_id, t.username);
    if (t.since[0] && sub_state_open(sub->state)) replay_begin(b, sub, t.since);
    if (t.token_expires_s) {
        sub->token_expires_s = t.token_expires_s;
        arm_token_expiry(sub);
    }
    return 0;
}

/* lws closed it: everything it holds goes, and its slot with it (late replay answers for it
 * now find nothing). */
static void on_closed(broadcaster *b, subscriber *sub)
{
    if (!sub || !sub->wsi || !sub_enter(sub, SUB_CLOSED)) return;
    lws_sul_cancel(&sub->retry_timer);
    lws_sul_cancel(&sub->read_timer);
    lws_dll2_remove(&sub->in_room);
    bc_fqueue_clear(&sub->sendq);
    bc_replay_free(&sub->replay);
    ws_frame_free(sub->rx);
    sub->rx = NULL;
    sub->wsi = NULL;
    slot_table_release(b->sub_slots, sub->ref);
    broadcast_members_closed(b, sub);
    size_t n = atomic_fetch_sub(&b->subscribers, 1) - 1;
    metric_gauge_set(b->m_active, (double)n);
    if (b->closing_all && n == 0) b->loop_exit = true;
}

static int on_writeable(broadcaster *b, subscriber *sub)
{
    if (!sub->wsi) return 0;
    if (sub->state == SUB_CLOSING) return -1; /* lws sends the close frame set by sub_close() */
    bc_frame *f = bc_fqueue_pop(&sub->sendq);
    if (f) {
        int n = lws_write(sub->wsi, bc_frame_payload(f), f->len, LWS_WRITE_TEXT);
        size_t len = f->len;
        bc_frame_unref(f);
        if (n < (int)len) return -1;
        metric_counter_inc(b->m_deliveries);
        if (sub->queue_limit > b->cfg.send_queue_max) sub->queue_limit--;
    }
    if (bc_fqueue_len(&sub->sendq)) lws_callback_on_writable(sub->wsi);
    replay_maybe_request_page(b, sub);
    return 0;
}

/* ---- frames from members ---- */

static void heard_from(broadcaster *b, subscriber *sub)
{
    sub->last_heard_ns = time_mono_ns();
    if (sub->member) presence_seen(b->cfg.presence, sub->room, sub->user_id, time_wall_ms());
}

static void frame_error(broadcaster *b, subscriber *sub, chat_status code, const char *why)
{
    metric_counter_inc(b->m_frames_error);
    broadcast_tell(b, sub, subscriber_error_json(code, why));
}

/* Announces the member's newest read position (presence has it: with several connections of
 * one member, the newest of all of them, so an announcement never goes backwards). */
static void announce_read(broadcaster *b, subscriber *sub)
{
    char seq[SEQNUM_BUF];
    sub->read_announced_ns = time_mono_ns();
    if (!presence_read_position(b->cfg.presence, sub->room, sub->user_id, seq) || !seq[0]) return;
    char *json = read_event_json(sub->room, sub->user_id, sub->username, seq, time_wall_ms());
    if (json && b->cfg.relay_out) b->cfg.relay_out(b->cfg.relay_ctx, sub->room, json);
    broadcast_announce(b, broadcast_room_of(b, sub->room), json);
}

static void read_due(lws_sorted_usec_list_t *sul)
{
    subscriber *sub = lws_container_of(sul, subscriber, read_timer);
    sub->read_put_off = false;
    if (!sub->wsi || !sub_state_open(sub->state)) return;
    announce_read(lws_context_user(lws_get_context(sub->wsi)), sub);
}

/* At once when this connection announced nothing for READ_ANNOUNCE_GAP_MS, else when the gap
 * has passed (READs arriving meanwhile ride along: the newest position is announced then). */
static void announce_read_soon(broadcaster *b, subscriber *sub)
{
    if (sub->read_put_off) return;
    uint64_t gap_ns = (uint64_t)READ_ANNOUNCE_GAP_MS * 1000000ull;
    uint64_t since = time_mono_ns() - sub->read_announced_ns;
    if (!sub->read_announced_ns || since >= gap_ns) {
        announce_read(b, sub);
        return;
    }
    sub->read_put_off = true;
    lws_sul_schedule(b->ws.context, 0, &sub->read_timer, read_due,
                     (lws_usec_t)((gap_ns - since) / 1000u));
}

static void handle_member_frame(broadcaster *b, subscriber *sub, const char *data, size_t len)
{
    char seq[SEQNUM_BUF], err[320];
    if (!sub->member) {
        frame_error(b, sub, CHAT_VALIDATION_ERROR,
                    "READ needs a member subscription: connect with ?userId=...&username=...");
        return;
    }
    chat_status st = subscriber_frame_parse(data, len, sub->room, seq, err, sizeof err);
    if (st != CHAT_OK) {
        frame_error(b, sub, st, err);
        return;
    }
    room_state *rs = broadcast_room_of(b, sub->room);
    /* Only positions seen here are believed, so a client cannot plant a made-up one (stored
     * positions never move back: an invented huge one would stick for good). */
    if (!rs->last_seq[0]) {
        snprintf(err, sizeof err,
                 "sequenceNumber: %s is not known here yet: no message of this room "
                 "has arrived since the consumer started; send READ again after the next one",
                 seq);
        frame_error(b, sub, CHAT_VALIDATION_ERROR, err);
        return;
    }
    if (seqnum_cmp(seq, rs->last_seq) > 0) {
        snprintf(err, sizeof err, "sequenceNumber: %s is beyond the room's newest message %s", seq,
                 rs->last_seq);
        frame_error(b, sub, CHAT_VALIDATION_ERROR, err);
        return;
    }
    metric_counter_inc(b->m_frames_read);
    if (!presence_advance_read(b->cfg.presence, sub->room, sub->user_id, seq))
        return; /* not newer */
    if (b->cfg.pcluster) broadcast_members_read(b, sub, seq);
    if (b->cfg.receipts) read_receipts_record(b->cfg.receipts, sub->room, sub->user_id, seq);
    announce_read_soon(b, sub);
}

/* A frame is handled once complete (ws_frame.h), after the connection's token bucket. */
static void on_receive(broadcaster *b, struct lws *wsi, subscriber *sub, const char *piece,
                       size_t len)
{
    heard_from(b, sub);
    if (!sub_state_open(sub->state)) return;
    const char *data = NULL;
    size_t data_len = 0;
    ws_frame_status st = ws_frame_gather(&sub->rx, SUBSCRIBER_FRAME_MAX, piece, len,
                                         ws_frame_last_piece(wsi), &data, &data_len);
    if (st == WS_FRAME_NO_MEMORY) {
        sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    if (st == WS_FRAME_PARTIAL) return;
    if (!bc_bucket_take(&sub->frames, time_mono_ns(), SUBSCRIBER_FRAMES_PER_S,
                        SUBSCRIBER_FRAME_BURST)) {
        char why[160];
        snprintf(why, sizeof why,
                 "more than %.0f frames a second (burst %.0f): this one was ignored; "
                 "send READ for the newest message only",
                 SUBSCRIBER_FRAMES_PER_S, SUBSCRIBER_FRAME_BURST);
        metric_counter_inc(b->m_frames_limited);
        broadcast_tell(b, sub, subscriber_error_json(CHAT_RATE_LIMITED, why));
    } else if (st == WS_FRAME_TOO_LARGE) {
        char why[64];
        snprintf(why, sizeof why, "frame is larger than %d bytes", SUBSCRIBER_FRAME_MAX);
        frame_error(b, sub, CHAT_MESSAGE_TOO_LARGE, why);
    } else if (lws_frame_is_binary(wsi)) {
        frame_error(b, sub, CHAT_INVALID_JSON,
                    "binary frames are not accepted: send a JSON object as text");
    } else {
        handle_member_frame(b, sub, data, data_len);
    }
}

static void stop_deadline_passed(lws_sorted_usec_list_t *sul)
{
    broadcaster *b = lws_container_of(sul, broadcaster, stop_deadline);
    log_warn(COMPONENT, "%zu subscribers did not finish closing in time; cutting them",
             atomic_load(&b->subscribers));
    b->loop_exit = true;
}

/* 1001 "going away" to every subscriber: each resumes elsewhere with since=<the last sequence
 * number it received>. */
static void close_every_subscriber(broadcaster *b)
{
    room_state *rs, *tmp;
    HASH_ITER(hh, b->rooms, rs, tmp)
    {
        lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs))
        {
            sub_close(lws_container_of(d, subscriber, in_room), LWS_CLOSE_STATUS_GOINGAWAY,
                      "going away");
        }
        lws_end_foreach_dll_safe(d, d1);
    }
}

/* The load balancer drains this node (lb_watch.h): its subscribers move while the load balancer
 * still carries their connections. The node goes on polling, storing and publishing to the bus,
 * and still accepts subscribers (none come through a draining target). */
static void shed_everyone(broadcaster *b)
{
    log_info(COMPONENT, "load balancer drain: closing %zu subscribers (going away)",
             atomic_load(&b->subscribers));
    close_every_subscriber(b);
}

static void close_everyone(broadcaster *b)
{
    b->closing_all = true;
    close_every_subscriber(b);
    if (atomic_load(&b->subscribers) == 0)
        b->loop_exit = true;
    else
        lws_sul_schedule(b->ws.context, 0, &b->stop_deadline, stop_deadline_passed, STOP_GRACE_US);
}

static void on_wake(broadcaster *b)
{
    broadcast_apply_lost_events(b);
    drain_inbox(b);
    broadcast_members_drain(b);
    replay_apply_results(b);
    if (atomic_load(&b->stopping) && !b->closing_all) close_everyone(b);
    if (atomic_exchange(&b->shed_requested, false) && !b->closing_all) shed_everyone(b);
}

static int callback_chat(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    broadcaster *b = ctx ? lws_context_user(ctx) : NULL;
    if (!b) return 0;
    subscriber *sub = user;

    switch (reason) {
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        ws_listen_on_accept(wsi, b->cfg.handshake_timeout_s); /* TIMER: not upgraded in time */
        return 0;
    case LWS_CALLBACK_TIMER: return on_timer(sub, wsi);
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: return on_confirm_upgrade(b, wsi, in);
    case LWS_CALLBACK_HTTP:
        /* A plain HTTP request on the subscriber port. */
        if (lws_return_http_status(wsi, 400,
                                   "subscribe with a WebSocket upgrade to /chat/{roomId}"))
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_ESTABLISHED: return on_established(b, wsi, sub);
    case LWS_CALLBACK_SERVER_WRITEABLE: return sub ? on_writeable(b, sub) : 0;
    case LWS_CALLBACK_CLOSED: on_closed(b, sub); break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: on_wake(b); break;
    case LWS_CALLBACK_RECEIVE:
        if (sub && sub->wsi) on_receive(b, wsi, sub, in, len);
        break;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (sub && sub->wsi) heard_from(b, sub);
        break;
    default: break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"chatflow-broadcast", callback_chat, sizeof(subscriber), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* Keeps an idle loop turning (lws_service sleeps until the next lws timer), for the watchdog. */
static void tick(lws_sorted_usec_list_t *sul)
{
    broadcaster *b = lws_container_of(sul, broadcaster, tick);
    lws_sul_schedule(b->ws.context, 0, &b->tick, tick, SERVICE_TICK_US);
}

static void *service_main(void *arg)
{
    broadcaster *b = arg;
    pthread_setname_np(pthread_self(), "cf-broadcast"); /* for top -H and the benchmark */
    watchdog_loop *wd = watchdog_register("broadcast-service", SERVICE_TURN_MAX_MS);
    lws_sul_schedule(b->ws.context, 0, &b->tick, tick, SERVICE_TICK_US);
    while (!b->loop_exit) {
        watchdog_expect(wd, SERVICE_TURN_MAX_MS);
        if (lws_service(b->ws.context, 0) < 0) break;
    }
    lws_sul_cancel(&b->tick);
    watchdog_unregister(wd);
    return NULL;
}

/* ---- public API ---- */

static bool config_ok(const broadcast_config *c, char *err, size_t err_len)
{
    if (c->rooms_max < 1)
        snprintf(err, err_len, "rooms_max must be at least 1");
    else if (c->send_queue_max < 1)
        snprintf(err, err_len, "send_queue_max must be at least 1");
    else if (c->max_subscribers < 1)
        snprintf(err, err_len, "max_subscribers must be at least 1");
    else if (c->port < 0 || c->port > 65535)
        snprintf(err, err_len, "port %d is not valid", c->port);
    else if (c->ping_interval_s < 0 || c->pong_timeout_s < 0 ||
             c->ping_interval_s + c->pong_timeout_s > 65535)
        snprintf(err, err_len, "ping interval %d s / pong timeout %d s are not valid",
                 c->ping_interval_s, c->pong_timeout_s);
    else if (c->handshake_timeout_s < 0 || c->handshake_timeout_s > 3600)
        snprintf(err, err_len, "handshake timeout %d s is not valid", c->handshake_timeout_s);
    else if (c->bind_addr && strlen(c->bind_addr) >= 64)
        snprintf(err, err_len, "bind address is too long");
    else
        return true;
    return false;
}

static void register_metrics(broadcaster *b)
{
    b->m_active =
        metrics_gauge("chatflow_subscribers_active", "WebSocket subscribers connected.", NULL);
    b->m_connections =
        metrics_counter("chatflow_ws_connections_total", "WebSocket connections accepted.", NULL);
    b->m_deliveries = metrics_counter("chatflow_broadcast_deliveries_total",
                                      "BroadcastEvent frames written to subscribers.", NULL);
    b->m_slow = metrics_counter("chatflow_slow_subscribers_dropped_total",
                                "Subscribers closed because their send queue overflowed.", NULL);
    b->m_e2e = metrics_histogram("chatflow_end_to_end_latency_seconds",
                                 "Client timestamp to broadcast (frame queued for subscribers).",
                                 NULL, METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    b->m_replay_cache =
        metrics_counter("chatflow_replay_requests_total",
                        "since= replays by where they were served from.", "source=\"cache\"");
    b->m_replay_history =
        metrics_counter("chatflow_replay_requests_total",
                        "since= replays by where they were served from.", "source=\"history\"");
    b->m_members =
        metrics_gauge("chatflow_room_members_online",
                      "Identified users online, summed over the rooms (presence).", NULL);
    b->m_room_full =
        metrics_counter("chatflow_room_full_refusals_total",
                        "Member subscriptions refused because the room was full.", NULL);
    b->m_rooms =
        metrics_gauge("chatflow_broadcast_rooms",
                      "Rooms this node holds state for (subscribers, replay cache).", NULL);
    b->m_rooms_forgotten = metrics_counter(
        "chatflow_broadcast_rooms_forgotten_total",
        "Idle rooms whose state was dropped to make place (CHATFLOW_ROOMS_MAX).", NULL);
    b->m_rooms_refused = metrics_counter(
        "chatflow_broadcast_rooms_refused_total",
        "Rooms given no state because CHATFLOW_ROOMS_MAX rooms all had subscribers.", NULL);
    b->m_frames_read =
        metrics_counter("chatflow_subscriber_frames_total",
                        "Frames sent by subscribers, by outcome.", "result=\"read\"");
    b->m_frames_error =
        metrics_counter("chatflow_subscriber_frames_total",
                        "Frames sent by subscribers, by outcome.", "result=\"error\"");
    b->m_frames_limited =
        metrics_counter("chatflow_subscriber_frames_total",
                        "Frames sent by subscribers, by outcome.", "result=\"rate_limited\"");
    b->m_waits = metrics_counter("chatflow_broadcast_publish_waits_total",
                                 "Publishes that found the broadcaster's inbox full and waited "
                                 "(backpressure on the pollers).",
                                 NULL);
    b->m_dropped_message = metrics_counter(
        "chatflow_broadcast_events_dropped_total",
        "Events never broadcast (inbox full past the wait, out of memory), by kind.",
        "kind=\"message\"");
    b->m_dropped_typing = metrics_counter(
        "chatflow_broadcast_events_dropped_total",
        "Events never broadcast (inbox full past the wait, out of memory), by kind.",
        "kind=\"typing\"");
    b->m_dropped_member = metrics_counter(
        "chatflow_broadcast_events_dropped_total",
        "Events never broadcast (inbox full past the wait, out of memory), by kind.",
        "kind=\"member\"");
}

static void free_inbox(workqueue *q)
{
    if (!q) return;
    void *items[64];
    size_t n;
    while ((n = workqueue_pop_many(q, items, 64)) > 0)
        for (size_t i = 0; i < n; i++) free(items[i]);
    workqueue_free(q);
}

/* Frees what broadcast_start built; the threads are stopped already. */
static void destroy(broadcaster *b)
{
    free_inbox(b->inbox);
    broadcast_members_free_queues(b);
    replay_destroy(b);
    ws_listen_close(&b->ws); /* runs CLOSED for whoever is still connected */
    slot_table_free(b->sub_slots);
    broadcast_rooms_free(b);
    free(b->drops);
    if (b->room_sync_ready) {
        pthread_cond_destroy(&b->room_cv);
        pthread_mutex_destroy(&b->room_mu);
        pthread_mutex_destroy(&b->drops_mu);
    }
    free(b);
}

static bool create_listener(broadcaster *b, char *err, size_t err_len)
{
    ws_listen_config lc = {
        .bind_addr = b->bind_addr,
        .port = b->cfg.port,
        .vhost_name = "broadcast",
        .protocols = protocols,
        .user = b,
        .handshake_timeout_s = b->cfg.handshake_timeout_s,
        .ping_interval_s = b->cfg.ping_interval_s,
        .pong_timeout_s = b->cfg.pong_timeout_s,
    };
    return ws_listen_open(&b->ws, &lc, err, err_len);
}

/* The inbox waits measure on the monotonic clock, so wall-clock jumps do not stretch them. */
static bool init_sync(broadcaster *b)
{
    if (!time_cond_init_monotonic(&b->room_cv)) return false;
    if (pthread_mutex_init(&b->room_mu, NULL) != 0) {
        pthread_cond_destroy(&b->room_cv);
        return false;
    }
    if (pthread_mutex_init(&b->drops_mu, NULL) != 0) {
        pthread_cond_destroy(&b->room_cv);
        pthread_mutex_destroy(&b->room_mu);
        return false;
    }
    b->room_sync_ready = true;
    return true;
}

broadcaster *broadcast_start(const broadcast_config *cfg, char *err, size_t err_len)
{
    if (!cfg || !config_ok(cfg, err, err_len)) {
        if (!cfg) snprintf(err, err_len, "no configuration");
        return NULL;
    }
    broadcaster *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    if (!b->cfg.inbox_capacity) b->cfg.inbox_capacity = INBOX_CAPACITY;
    if (b->cfg.publish_wait_ms <= 0) b->cfg.publish_wait_ms = PUBLISH_WAIT_MS;
    if (b->cfg.history_max_ms <= 0) b->cfg.history_max_ms = HISTORY_MAX_MS;
    snprintf(b->bind_addr, sizeof b->bind_addr, "%s", cfg->bind_addr ? cfg->bind_addr : "");
    b->cfg.bind_addr = b->bind_addr;
    b->drops = calloc(cfg->rooms_max, sizeof *b->drops); /* recording a loss never allocates */
    bool ok = b->drops && init_sync(b);
    if (ok) {
        b->inbox = workqueue_new(b->cfg.inbox_capacity, broadcast_wake, b);
        b->relays = workqueue_new(RELAY_CAPACITY, broadcast_wake, b);
        b->presence_answers = workqueue_new(RELAY_CAPACITY, broadcast_wake, b);
        b->sub_slots = slot_table_new(cfg->max_subscribers, sizeof(subscriber *));
        ok = b->inbox && b->relays && b->presence_answers && b->sub_slots && replay_init(b);
    }
    if (!ok) {
        snprintf(err, err_len, "out of memory");
        destroy(b);
        return NULL;
    }
    register_metrics(b);
    if (!create_listener(b, err, err_len)) {
        destroy(b);
        return NULL;
    }
    if (!replay_start_worker(b)) {
        snprintf(err, err_len, "cannot start the replay thread");
        destroy(b);
        return NULL;
    }
    if (pthread_create(&b->service_thread, NULL, service_main, b) != 0) {
        snprintf(err, err_len, "cannot start the WebSocket service thread");
        replay_stop_worker(b);
        destroy(b);
        return NULL;
    }
    b->service_started = true;
    log_info(COMPONENT, "subscribers on ws://%s:%d/chat/{roomId} (state for up to %zu rooms)",
             b->bind_addr[0] ? b->bind_addr : "*", b->ws.port, cfg->rooms_max);
    return b;
}

int broadcast_port(const broadcaster *b) { return b ? b->ws.port : -1; }

/* Waits (bounded) for the service thread to make room in the full inbox; see the top comment
 * for why no wake-up is lost. true when p was queued. */
static bool push_waiting(broadcaster *b, published *p)
{
    if (atomic_load(&b->stopping)) return false;
    metric_counter_inc(b->m_waits);
    uint64_t drains = atomic_load(&b->drains);
    if (atomic_load(&b->stalled_at) == drains + 1)
        return false; /* nothing drained since a wait ran out */
    struct timespec deadline = time_mono_after_ms(b->cfg.publish_wait_ms);
    bool queued = false, timed_out = false;
    pthread_mutex_lock(&b->room_mu);
    atomic_fetch_add(&b->publishers_waiting, 1);
    while (!(queued = workqueue_push(b->inbox, p)) && !timed_out && !atomic_load(&b->stopping))
        timed_out = pthread_cond_timedwait(&b->room_cv, &b->room_mu, &deadline) == ETIMEDOUT;
    atomic_fetch_sub(&b->publishers_waiting, 1);
    pthread_mutex_unlock(&b->room_mu);
    if (!queued && timed_out) atomic_store(&b->stalled_at, atomic_load(&b->drains) + 1);
    return queued;
}

/* Counts a dropped event; a MESSAGE is recorded for the service thread (see the top). */
static void dropped(broadcaster *b, const published *p)
{
    if (p->msg.kind == CHAT_KIND_TYPING) {
        metric_counter_inc(b->m_dropped_typing);
        return;
    }
    metric_counter_inc(b->m_dropped_message);
    /* one line a second at most: a wedged service thread drops at the pollers' pace */
    uint64_t now = time_mono_ns(), last = atomic_load(&b->drop_logged_ns);
    if ((!last || now - last >= 1000000000ull) &&
        atomic_compare_exchange_strong(&b->drop_logged_ns, &last, now))
        log_warn(COMPONENT,
                 "room %s: message %s (sequence number %s) not broadcast: no room in the "
                 "inbox for %ld ms (or no memory); see chatflow_broadcast_events_dropped_total",
                 p->msg.room_id, p->msg.message_id, p->seq[0] ? p->seq : "none",
                 b->cfg.publish_wait_ms);
    record_lost_event(b, p);
    lws_cancel_service(b->ws.context); /* apply it even if nothing else wakes the service thread */
}

static void fill_published(published *p, const chat_message *m, const char *sequence_number,
                           const char *server_timestamp)
{
    p->msg = *m;
    snprintf(p->seq, sizeof p->seq, "%s", sequence_number ? sequence_number : "");
    snprintf(p->server_ts, sizeof p->server_ts, "%s", server_timestamp ? server_timestamp : "");
}

bool broadcast_publish(broadcaster *b, const chat_message *m, const char *sequence_number,
                       const char *server_timestamp)
{
    if (!b || !m) return false;
    /* publishers_inside lets broadcast_stop wait until no poller can still be touching the
     * inbox (whose notify reaches into the lws context). */
    atomic_fetch_add(&b->publishers_inside, 1);
    bool ok = false;
    if (!atomic_load(&b->stopping)) {
        published *p = malloc(sizeof *p);
        if (p) {
            fill_published(p, m, sequence_number, server_timestamp);
            ok = workqueue_push(b->inbox, p) || push_waiting(b, p);
            if (!ok && !atomic_load(&b->stopping)) dropped(b, p);
            if (!ok) free(p);
        } else {
            /* on the stack: recording the loss needs no memory */
            published lost;
            fill_published(&lost, m, sequence_number, server_timestamp);
            dropped(b, &lost);
        }
    }
    atomic_fetch_sub(&b->publishers_inside, 1);
    return ok;
}

size_t broadcast_subscriber_count(const broadcaster *b)
{
    return b ? atomic_load(&b->subscribers) : 0;
}

void broadcast_shed(void *ctx)
{
    broadcaster *b = ctx;
    atomic_store(&b->shed_requested, true);
    if (b->service_started) lws_cancel_service(b->ws.context);
}

void broadcast_stop(broadcaster *b)
{
    if (!b) return;
    atomic_store(&b->stopping, true);
    pthread_mutex_lock(&b->room_mu); /* publishers waiting on a full inbox give up now */
    pthread_cond_broadcast(&b->room_cv);
    pthread_mutex_unlock(&b->room_mu);
    while (atomic_load(&b->publishers_inside) > 0) sched_yield();
    workqueue_close(b->inbox);
    if (b->service_started) {
        lws_cancel_service(b->ws.context);
        pthread_join(b->service_thread, NULL);
    }
    replay_stop_worker(b);
    destroy(b);
}
