/*
 * broadcast — see broadcast.h for the contract. How it is built:
 *
 *  - Threads. Poller threads only copy a message into `inbox` (a bounded workqueue whose notify
 *    calls lws_cancel_service). The lws service thread owns every subscriber, room and frame. A
 *    replay worker thread runs the history callback (it may block on PostgreSQL) and hands the
 *    frames it built back through `replay_results` (+ lws_cancel_service). Besides those, only
 *    the waits of a full inbox (room_mu/room_cv) and the table of lost events (drops_mu) cross
 *    threads; the only lws call made off the service thread is lws_cancel_service().
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
 *  - Replay. since=S is answered from the room cache when it covers S (broadcast_room.h);
 *    otherwise the subscriber holds its live frames (at most cache_per_room + send_queue_max,
 *    else it is dropped as slow) while pages of history (send_queue_max rows each, the next one
 *    asked for once the previous one is mostly written) are sent, then the held frames newer
 *    than the last history row. When the store ends before the events that left the cache (not
 *    committed yet), the page is asked again every REPLAY_RETRY_DELAY_MS from a timer; after
 *    REPLAY_MAX_RETRIES pages in a row with nothing new the subscriber is closed with 4013 and
 *    where history ends, never served with a gap.
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
 *    each turn announces SERVICE_TURN_MAX_MS to the watchdog. The replay worker waits for jobs at
 *    most REPLAY_IDLE_WAIT_MS and announces history_max_ms per turn.
 *  - Close codes: 1001 stop, 1011 out of memory, 4008 slow, 4009 room full, 4013 try again (lws
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

#include "broadcast_path.h"
#include "broadcast_room.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "seqnum.h"
#include "timeutil.h"
#include "watchdog.h"
#include "workqueue.h"

#define COMPONENT "broadcast"

#define INBOX_CAPACITY 8192          /* default: messages between pollers and the service thread */
/* Default bound of a publisher's wait on a full inbox: long enough to ride out a burst the
 * service thread is fanning out (8192 messages take well under a second), short enough that a
 * poller holding a receive's messages stays far inside their 30 s visibility timeout. */
#define PUBLISH_WAIT_MS 2000
/* Default longest history call: the store's statement timeout (10 s) plus a reconnect (5 s
 * connect timeout) and a wait for a pooled connection, with room to spare: a slow database must
 * never fail liveness. */
#define HISTORY_MAX_MS 60000
#define SERVICE_TICK_US LWS_US_PER_SEC   /* an idle service loop still turns this often */
#define SERVICE_TURN_MAX_MS 10000    /* one tick + a turn's work (a drain, writes), generously */
#define REPLAY_IDLE_WAIT_MS 5000     /* an idle replay worker turns this often */
#define DRAIN_BATCH 256
#define DRAIN_BATCHES_PER_WAKE 8     /* then let writes run; we wake ourselves to continue */
#define CLOSE_SLOW 4008
#define CLOSE_ROOM_FULL 4009
/* 1013 "Try Again Later" is registered, but lws clients (4.1) turn 1012-1014 into 1002: a
 * private code keeps the reason readable by every client. */
#define CLOSE_TRY_AGAIN 4013
#define CLOSE_GRACE_S 5              /* a closing subscriber whose socket stays full is cut */
#define STOP_GRACE_US (2 * LWS_US_PER_SEC)
#define REPLAY_RETRY_DELAY_MS 250
#define REPLAY_MAX_RETRIES 20       /* 5 s without progress: more than a writer's max wait */
#define CLOSE_REASON_MAX 123         /* a close frame carries at most 125 bytes: code + reason */

/* One message on its way from a poller to the service thread. */
typedef struct {
    chat_message msg;
    char seq[SEQNUM_BUF];
    char server_ts[ISO8601_BUF];
} published;

/* The newest MESSAGE of a room that never reached the service thread. */
typedef struct {
    char room[sizeof ((chat_message *)0)->room_id];
    char seq[SEQNUM_BUF];
} lost_event;

/* One page of history: asked by the service thread, answered by the replay worker. */
typedef struct {
    uint64_t sub_id;
    long room;
    char since[SEQNUM_BUF];
    size_t limit;
    bool ok;
    char err[200];
    bc_frame **frames;
    size_t n;
} replay_job;

typedef enum { SUB_LIVE, SUB_REPLAYING } sub_state;

/* Per-connection state; lws allocates and frees it (per_session_data_size). */
typedef struct {
    lws_dll2_t in_room;
    struct lws *wsi;           /* NULL until ESTABLISHED and after CLOSED */
    uint64_t id;
    long room;
    sub_state state;
    bool closing;              /* a close reason is set; the next WRITEABLE hangs up */
    bool page_wanted;          /* replay: the last page was full, more to ask for */
    bool job_outstanding;
    unsigned retries;          /* replay: pages in a row that brought nothing new */
    lws_sorted_usec_list_t retry_timer;
    size_t queue_limit;        /* send_queue_max, raised by a replay backlog while it drains */
    bc_fqueue sendq;
    bc_replay replay;

    /* member (docs/protocol.md §2): identified by the subscription's userId and username */
    bool member;
    uint32_t user_id;
    char username[CHAT_USERNAME_MAX + 1];
    uint64_t last_heard_ns;    /* last frame or pong: tells a missed heartbeat from a close */
    char *rx;                  /* frame reassembly, SUBSCRIBER_FRAME_MAX bytes when allocated */
    size_t rx_len;
    bool rx_over;              /* the current frame passed the limit: the rest is dropped */
    bc_bucket frames;          /* throttles the frames this connection sends */
    uint64_t read_announced_ns;   /* when this connection's last READ was announced */
    bool read_put_off;         /* read_timer armed: an announcement is waiting */
    lws_sorted_usec_list_t read_timer;
} subscriber;

typedef struct {
    lws_dll2_owner_t subs;
    bc_room_cache cache;
    char last_seq[SEQNUM_BUF];
} room_state;

struct broadcaster {
    broadcast_config cfg;
    char bind_addr[64];
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    lws_retry_bo_t keepalive;
    int port;

    workqueue *inbox;
    workqueue *replay_jobs;
    workqueue *replay_results;
    pthread_t service_thread, replay_thread;
    bool service_started, replay_started;

    room_state *rooms;
    size_t n_rooms;
    uint64_t next_sub_id;

    atomic_size_t subscribers;
    atomic_bool stopping;
    atomic_bool replay_stop;
    atomic_int publishers_inside;

    /* full inbox: publishers wait here for the service thread to drain */
    pthread_mutex_t room_mu;
    pthread_cond_t room_cv;
    bool room_sync_ready;
    atomic_int publishers_waiting;
    _Atomic uint64_t drains;
    _Atomic uint64_t stalled_at;   /* drains + 1 when a wait ran out; 0: none */
    _Atomic uint64_t drop_logged_ns;

    /* lost events, one entry per room, for the service thread */
    pthread_mutex_t drops_mu;
    lost_event *drops;
    size_t n_drops;
    atomic_bool drops_pending;

    /* service thread only */
    bool closing_all;
    bool loop_exit;
    long members_online;
    lws_sorted_usec_list_t stop_deadline;
    lws_sorted_usec_list_t tick;

    metric_gauge *m_active;
    metric_counter *m_connections;
    metric_counter *m_deliveries;
    metric_counter *m_slow;
    metric_histogram *m_e2e;
    metric_counter *m_replay_cache;
    metric_counter *m_replay_history;
    metric_gauge *m_members;
    metric_counter *m_room_full;
    metric_counter *m_frames_read, *m_frames_error, *m_frames_limited;
    metric_counter *m_waits, *m_dropped_message, *m_dropped_typing;
};

static void wake_service(void *arg)
{
    broadcaster *b = arg;
    lws_cancel_service(b->ctx);
}

static room_state *room_of(broadcaster *b, long room)
{
    if (room < b->cfg.room_min || room > b->cfg.room_max) return NULL;
    return &b->rooms[room - b->cfg.room_min];
}

static bool parse_room_id(const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end) return false;
    *out = v;
    return true;
}

/* ---- closing ---- */

/* Sets the close code and reason and frees the queues; the next WRITEABLE hangs up. */
static void close_with(subscriber *sub, int code, const char *reason)
{
    if (sub->closing || !sub->wsi) return;
    sub->closing = true;
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
    log_warn(COMPONENT, "room %ld subscriber %llu: %s; closing it", sub->room,
             (unsigned long long)sub->id, reason);
    metric_counter_inc(b->m_slow);
    close_with(sub, CLOSE_SLOW, reason);
}

/* ---- queueing ---- */

/* Appends f to the send queue; arms WRITEABLE when the queue was empty. */
static bool queue_frame(subscriber *sub, bc_frame *f)
{
    if (!bc_fqueue_push(&sub->sendq, f)) {
        close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
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
static void deliver_now(broadcaster *b, subscriber *sub, bc_frame *f)
{
    if (sub->closing || !queue_frame(sub, f)) return;
    size_t queued = bc_fqueue_len(&sub->sendq);
    if (queued > sub->queue_limit && is_slow(sub, queued)) drop_slow(b, sub, queued);
}

static void offer_live_frame(broadcaster *b, subscriber *sub, bc_frame *f)
{
    if (sub->closing) return;
    if (sub->state == SUB_REPLAYING) {
        if (!bc_fqueue_push(&sub->replay.held, f)) {
            close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
            return;
        }
        size_t held = bc_fqueue_len(&sub->replay.held);
        if (held > b->cfg.cache_per_room + b->cfg.send_queue_max)
            drop_slow(b, sub, held + bc_fqueue_len(&sub->sendq));
        return;
    }
    deliver_now(b, sub, f);
}

/* An ephemeral event (no sequence number) for every member of the room. Takes json (freed).
 * false when it could not be built (out of memory). */
static bool announce(broadcaster *b, room_state *rs, char *json)
{
    bc_frame *f = json ? bc_frame_new(json, strlen(json), "") : NULL;
    free(json);
    if (!f) {
        log_error(COMPONENT, "out of memory building an event; not announced");
        return false;
    }
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs)) {
        subscriber *sub = lws_container_of(d, subscriber, in_room);
        if (sub->member) deliver_now(b, sub, f);
    } lws_end_foreach_dll_safe(d, d1);
    bc_frame_unref(f);
    return true;
}

/* An ephemeral event for one subscriber. Takes json (freed). */
static void tell(broadcaster *b, subscriber *sub, char *json)
{
    bc_frame *f = json ? bc_frame_new(json, strlen(json), "") : NULL;
    free(json);
    if (!f) {
        log_error(COMPONENT, "out of memory building an event for subscriber %llu", (unsigned long long)sub->id);
        return;
    }
    deliver_now(b, sub, f);
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
static void room_lost_event(long room, room_state *rs, const char *seq)
{
    bc_room_cache_mark_lost(&rs->cache, seq);
    size_t closed = 0;
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs)) {
        subscriber *sub = lws_container_of(d, subscriber, in_room);
        if (!sub->closing) closed++;
        close_with(sub, CLOSE_TRY_AGAIN,
                   "events lost here (broadcaster overloaded); reconnect with since=<the last "
                   "sequenceNumber received>");
    } lws_end_foreach_dll_safe(d, d1);
    log_warn(COMPONENT, "room %ld: event %s was not broadcast; replays below it come from the store, "
             "%zu subscribers told to reconnect", room, seq[0] ? seq : "(no sequence number)", closed);
}

/* Applies what broadcast_publish() recorded. Called before every fan-out and replay decision. */
static void apply_lost_events(broadcaster *b)
{
    if (!atomic_load(&b->drops_pending)) return;
    pthread_mutex_lock(&b->drops_mu);
    atomic_store(&b->drops_pending, false);
    for (size_t i = 0; i < b->n_drops; i++) {
        long room;
        room_state *rs;
        if (parse_room_id(b->drops[i].room, &room) && (rs = room_of(b, room)))
            room_lost_event(room, rs, b->drops[i].seq);
    }
    b->n_drops = 0;
    pthread_mutex_unlock(&b->drops_mu);
}

/* Poller side: remembers the newest lost sequence number per room; never allocates. A room the
 * table has no slot for is not one this consumer serves (nothing of it is broadcast anyway). */
static void record_lost_event(broadcaster *b, const published *p)
{
    pthread_mutex_lock(&b->drops_mu);
    size_t i = 0;
    while (i < b->n_drops && strcmp(b->drops[i].room, p->msg.room_id) != 0) i++;
    if (i == b->n_drops && i < b->n_rooms) {
        snprintf(b->drops[i].room, sizeof b->drops[i].room, "%s", p->msg.room_id);
        b->drops[i].seq[0] = '\0';
        b->n_drops++;
    }
    if (i < b->n_drops && seqnum_valid(p->seq) &&
        (!b->drops[i].seq[0] || seqnum_cmp(p->seq, b->drops[i].seq) > 0))
        snprintf(b->drops[i].seq, sizeof b->drops[i].seq, "%s", p->seq);
    atomic_store(&b->drops_pending, true);
    pthread_mutex_unlock(&b->drops_mu);
}

static void fan_out(broadcaster *b, const published *p)
{
    long room;
    room_state *rs;
    if (!parse_room_id(p->msg.room_id, &room) || !(rs = room_of(b, room))) {
        log_warn(COMPONENT, "message %s is for room '%s', not one of rooms %ld-%ld; not broadcast",
                 p->msg.message_id, p->msg.room_id, b->cfg.room_min, b->cfg.room_max);
        return;
    }
    const char *seq = seqnum_valid(p->seq) ? p->seq : "";
    if (seq[0] && rs->last_seq[0] && seqnum_cmp(seq, rs->last_seq) <= 0) {
        log_debug(COMPONENT, "room %ld: sequence number %s already broadcast (last %s); skipped",
                  room, seq, rs->last_seq);
        return;
    }
    if (p->msg.kind == CHAT_KIND_TYPING) {   /* ephemeral: members only, never cached */
        if (seq[0]) memcpy(rs->last_seq, seq, sizeof rs->last_seq);
        if (!announce(b, rs, broadcast_event_to_json(&p->msg, p->server_ts, NULL)))
            metric_counter_inc(b->m_dropped_typing);
        return;
    }
    char *json = broadcast_event_to_json(&p->msg, p->server_ts, seq);
    bc_frame *f = json ? bc_frame_new(json, strlen(json), seq) : NULL;
    free(json);
    if (!f) {
        log_error(COMPONENT, "room %ld: out of memory building a frame; message %s not broadcast",
                  room, p->msg.message_id);
        metric_counter_inc(b->m_dropped_message);
        room_lost_event(room, rs, seq);
        return;
    }
    observe_latency(b, &p->msg);
    if (seq[0]) {
        bc_room_cache_push(&rs->cache, f);
        memcpy(rs->last_seq, seq, sizeof rs->last_seq);
    }
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs)) {
        offer_live_frame(b, lws_container_of(d, subscriber, in_room), f);
    } lws_end_foreach_dll_safe(d, d1);
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
            apply_lost_events(b);   /* before any later event of a room with a lost one */
            fan_out(b, items[i]);
            free(items[i]);
        }
        if (n < DRAIN_BATCH) return;
    }
    /* More is waiting, and its wakes may have been coalesced into this one: come back after
     * the loop has had a chance to write. */
    lws_cancel_service(b->ctx);
}

/* ---- replay ---- */

static void replay_job_free(replay_job *job)
{
    if (!job) return;
    for (size_t i = 0; i < job->n; i++) bc_frame_unref(job->frames[i]);
    free(job->frames);
    free(job);
}

static void submit_page(broadcaster *b, subscriber *sub)
{
    replay_job *job = calloc(1, sizeof *job);
    if (!job) {
        close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    job->sub_id = sub->id;
    job->room = sub->room;
    memcpy(job->since, sub->replay.cursor, sizeof job->since);
    job->limit = b->cfg.send_queue_max;
    if (!workqueue_push(b->replay_jobs, job)) {
        free(job);
        close_with(sub, CLOSE_TRY_AGAIN,
                   "replay unavailable: too many replays in progress; try again");
        return;
    }
    sub->job_outstanding = true;
    sub->page_wanted = false;
}

/* The next page is asked for once the previous one is mostly written, so a replay never holds
 * more than about two pages. */
static void maybe_request_page(broadcaster *b, subscriber *sub)
{
    if (sub->state == SUB_REPLAYING && sub->page_wanted && !sub->job_outstanding &&
        !sub->closing && bc_fqueue_len(&sub->sendq) <= b->cfg.send_queue_max / 2)
        submit_page(b, sub);
}

/* The store did not reach the cache yet: ask again a little later (a timer on the service
 * thread, so the replay worker never sleeps while others wait). */
static void retry_due(lws_sorted_usec_list_t *sul)
{
    subscriber *sub = lws_container_of(sul, subscriber, retry_timer);
    if (!sub->wsi || sub->closing) return;
    submit_page(lws_context_user(lws_get_context(sub->wsi)), sub);
}

static void finish_replay(broadcaster *b, subscriber *sub)
{
    size_t before = bc_fqueue_len(&sub->sendq);
    if (!bc_replay_finish(&sub->replay, &sub->sendq)) {
        close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    sub->state = SUB_LIVE;
    size_t queued = bc_fqueue_len(&sub->sendq);
    sub->queue_limit = b->cfg.send_queue_max + queued;
    if (before == 0 && queued > 0) lws_callback_on_writable(sub->wsi);
}

static subscriber *find_subscriber(broadcaster *b, long room, uint64_t id)
{
    room_state *rs = room_of(b, room);
    if (!rs) return NULL;
    lws_start_foreach_dll(struct lws_dll2 *, d, lws_dll2_get_head(&rs->subs)) {
        subscriber *sub = lws_container_of(d, subscriber, in_room);
        if (sub->id == id) return sub;
    } lws_end_foreach_dll(d);
    return NULL;
}

static void apply_page(broadcaster *b, replay_job *job)
{
    subscriber *sub = find_subscriber(b, job->room, job->sub_id);
    if (!sub || sub->closing || sub->state != SUB_REPLAYING) return;  /* gone meanwhile */
    sub->job_outstanding = false;
    if (!job->ok) {
        /* The database is busy or down (the cache did not cover since=): the client is asked to
         * come back, like an HTTP 503 with Retry-After; the server's message stays in the log. */
        log_warn(COMPONENT, "room %ld subscriber %llu: history unavailable: %s", sub->room,
                 (unsigned long long)sub->id, job->err);
        close_with(sub, CLOSE_TRY_AGAIN, "history unavailable; reconnect with since= shortly");
        return;
    }
    size_t accepted = 0;
    for (size_t i = 0; i < job->n; i++) {
        if (!bc_replay_accept(&sub->replay, job->frames[i])) continue;
        if (!queue_frame(sub, job->frames[i])) return;
        accepted++;
    }
    if (accepted) sub->retries = 0;   /* the store is moving: keep waiting for it */
    switch (bc_replay_after_page(&sub->replay, job->n, job->limit)) {
    case BC_REPLAY_NEXT_PAGE:
        sub->page_wanted = true;
        maybe_request_page(b, sub);
        break;
    case BC_REPLAY_RETRY:
        if (++sub->retries > REPLAY_MAX_RETRIES) {
            char reason[320];   /* close_with() cuts it to what a close frame carries */
            snprintf(reason, sizeof reason,
                     "replay incomplete: history ends at %s, not stored up to %s yet; reconnect",
                     sub->replay.cursor, sub->replay.need_cover);
            close_with(sub, CLOSE_TRY_AGAIN, reason);
        } else {
            lws_sul_schedule(lws_get_context(sub->wsi), 0, &sub->retry_timer, retry_due,
                             REPLAY_RETRY_DELAY_MS * LWS_US_PER_MS);
        }
        break;
    case BC_REPLAY_DONE:
        finish_replay(b, sub);
        break;
    }
}

static void drain_replay_results(broadcaster *b)
{
    void *items[32];
    size_t n;
    while ((n = workqueue_pop_many(b->replay_results, items, 32)) > 0)
        for (size_t i = 0; i < n; i++) {
            apply_page(b, items[i]);
            replay_job_free(items[i]);
        }
}

static void start_replay(broadcaster *b, subscriber *sub, const char *since)
{
    apply_lost_events(b);   /* the cache must know what it lacks before it is asked */
    room_state *rs = room_of(b, sub->room);
    if (bc_room_cache_serves(&rs->cache, since)) {
        metric_counter_inc(b->m_replay_cache);
        if (!bc_room_cache_copy_after(&rs->cache, since, &sub->sendq)) {
            close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
            return;
        }
        size_t queued = bc_fqueue_len(&sub->sendq);
        sub->queue_limit += queued;
        if (queued) lws_callback_on_writable(sub->wsi);
        return;
    }
    metric_counter_inc(b->m_replay_history);
    sub->state = SUB_REPLAYING;
    if (!bc_replay_begin(&sub->replay, &rs->cache, since)) {
        close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    submit_page(b, sub);
}

/* Replay worker thread: runs the history callback, builds the frames, hands them back. */

static void emit_row(void *ctx, const broadcast_history_row *row)
{
    replay_job *job = ctx;
    if (!job->ok) return;
    if (job->n >= job->limit) {
        job->ok = false;
        snprintf(job->err, sizeof job->err, "history returned more than %zu rows", job->limit);
        return;
    }
    if (!seqnum_valid(row->sequence_number)) {
        job->ok = false;
        snprintf(job->err, sizeof job->err, "history row %s has no valid sequence number",
                 row->msg.message_id);
        return;
    }
    char *json = broadcast_event_to_json(&row->msg, row->server_timestamp, row->sequence_number);
    bc_frame *f = json ? bc_frame_new(json, strlen(json), row->sequence_number) : NULL;
    free(json);
    if (!f) {
        job->ok = false;
        snprintf(job->err, sizeof job->err, "out of memory");
        return;
    }
    job->frames[job->n++] = f;
}

static void run_history(broadcaster *b, replay_job *job)
{
    if (!b->cfg.history) {
        snprintf(job->err, sizeof job->err, "no history store is configured");
        return;
    }
    job->frames = calloc(job->limit, sizeof *job->frames);
    if (!job->frames) {
        snprintf(job->err, sizeof job->err, "out of memory");
        return;
    }
    job->ok = true;
    char err[sizeof job->err] = "";
    bool answered = b->cfg.history(b->cfg.history_ctx, job->room, job->since, job->limit,
                                   emit_row, job, err, sizeof err);
    if (!answered) {
        job->ok = false;
        snprintf(job->err, sizeof job->err, "%s", err[0] ? err : "the store did not answer");
    }
}

static void *replay_main(void *arg)
{
    broadcaster *b = arg;
    pthread_setname_np(pthread_self(), "cf-replay");
    /* A turn is an idle wait or one history call, whose own timeouts bound it. */
    watchdog_loop *wd = watchdog_register("broadcast-replay", b->cfg.history_max_ms);
    while (!atomic_load(&b->replay_stop)) {
        watchdog_expect(wd, b->cfg.history_max_ms);
        replay_job *job = workqueue_pop_wait(b->replay_jobs, REPLAY_IDLE_WAIT_MS);
        if (!job) continue;
        run_history(b, job);
        if (!workqueue_push(b->replay_results, job)) replay_job_free(job);
    }
    watchdog_unregister(wd);
    return NULL;
}

/* ---- connections ---- */

/* Reads the request target; 0 or the HTTP status to refuse with (reason set). */
static int read_target(broadcaster *b, struct lws *wsi, bc_target *t, char *reason, size_t rlen)
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
        if (nargs == MAX_ARGS) {
            snprintf(reason, rlen, "too many query arguments");
            return 400;
        }
        if (lws_hdr_copy_fragment(wsi, argbuf[nargs], sizeof argbuf[nargs],
                                  WSI_TOKEN_HTTP_URI_ARGS, i) < 0) {
            snprintf(reason, rlen, "query argument longer than %zu bytes", sizeof argbuf[0] - 1);
            return 400;
        }
        args[nargs] = argbuf[nargs];
        nargs++;
    }
    return bc_target_parse(path, args, nargs, b->cfg.room_min, b->cfg.room_max, t, reason, rlen);
}

/* Refuses bad subscriptions before the 101, with an HTTP status and the reason as the body. */
static int on_confirm_upgrade(broadcaster *b, struct lws *wsi, const char *upgrade_to)
{
    char reason[200];
    int status = 0;
    bc_target t;
    if (!upgrade_to || strcmp(upgrade_to, "websocket") != 0)
        return -1;
    if (atomic_load(&b->stopping)) {
        status = 503;
        snprintf(reason, sizeof reason, "this consumer is shutting down");
    } else if (atomic_load(&b->subscribers) >= b->cfg.max_subscribers) {
        status = 503;
        snprintf(reason, sizeof reason, "subscriber limit reached (%zu); try another consumer",
                 b->cfg.max_subscribers);
    } else {
        status = read_target(b, wsi, &t, reason, sizeof reason);
        if (!status && t.user_id && b->cfg.presence && !presence_admits(b->cfg.presence, t.room, t.user_id)) {
            status = 403;
            metric_counter_inc(b->m_room_full);
            snprintf(reason, sizeof reason, "room %ld is full: %zu members online (CHATFLOW_ROOM_MEMBER_CAP)",
                     t.room, presence_member_cap(b->cfg.presence));
        }
    }
    if (!status) return 0;
    log_info(COMPONENT, "handshake refused with %d: %s", status, reason);
    if (lws_return_http_status(wsi, (unsigned int)status, reason)) return -1;
    return 1;   /* we answered; lws finishes the transaction */
}

static void update_members_gauge(broadcaster *b, long delta)
{
    b->members_online += delta;
    metric_gauge_set(b->m_members, (double)b->members_online);
}

/* A member's first connection announces ONLINE to the room; every new connection of a member is
 * first told who is online ("present"). */
static void join_room(broadcaster *b, subscriber *sub, const bc_target *t)
{
    size_t online = 0;
    presence_join_result res = presence_join(b->cfg.presence, t->room, t->user_id, t->username,
                                             time_wall_ms(), &online);
    if (res == PRESENCE_FULL || res == PRESENCE_NO_MEMORY) {
        char reason[96];
        snprintf(reason, sizeof reason, "room %ld is full: %zu members online", t->room,
                 presence_member_cap(b->cfg.presence));
        if (res == PRESENCE_FULL) metric_counter_inc(b->m_room_full);
        close_with(sub, res == PRESENCE_FULL ? CLOSE_ROOM_FULL : LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                   res == PRESENCE_FULL ? reason : "out of memory");
        return;
    }
    sub->member = true;
    sub->user_id = t->user_id;
    snprintf(sub->username, sizeof sub->username, "%s", t->username);
    size_t n = 0;
    presence_member *others = presence_members_copy(b->cfg.presence, t->room, &n);   /* OOM: no snapshot */
    int64_t now = time_wall_ms();
    for (size_t i = 0; i < n; i++)
        if (res == PRESENCE_AGAIN || others[i].user_id != t->user_id)
            tell(b, sub, presence_event_json(t->room, others[i].user_id, others[i].username, "ONLINE",
                                             "present", others[i].since_ms, n));
    /* READ events are not replayed: a connection that (re)joins learns the online members'
     * positions here, or it would miss those sent while it was away. */
    for (size_t i = 0; i < n; i++)
        if (others[i].read_seq[0])
            tell(b, sub, read_event_json(t->room, others[i].user_id, others[i].username, others[i].read_seq,
                                         now));
    free(others);
    if (res == PRESENCE_FIRST) {
        update_members_gauge(b, 1);
        announce(b, room_of(b, t->room),
                 presence_event_json(t->room, t->user_id, t->username, "ONLINE", "joined", now, online));
    }
}

/* The member's last connection announces OFFLINE; "timeout" when lws dropped it for silence. */
static void leave_room(broadcaster *b, subscriber *sub)
{
    size_t online = 0;
    int64_t now = time_wall_ms();
    if (!presence_leave(b->cfg.presence, sub->room, sub->user_id, now, &online)) return;
    update_members_gauge(b, -1);
    if (b->closing_all) return;   /* everyone is leaving: nobody to tell */
    uint64_t hangup_ns = (uint64_t)(b->cfg.ping_interval_s + b->cfg.pong_timeout_s) * 1000000000ull;
    bool silent = b->cfg.ping_interval_s > 0 &&
                  time_mono_ns() - sub->last_heard_ns + 1000000000ull >= hangup_ns;
    announce(b, room_of(b, sub->room),
             presence_event_json(sub->room, sub->user_id, sub->username, "OFFLINE",
                                 silent ? "timeout" : "left", now, online));
}

static int on_established(broadcaster *b, struct lws *wsi, subscriber *sub)
{
    char reason[200];
    bc_target t;
    memset(sub, 0, sizeof *sub);
    if (read_target(b, wsi, &t, reason, sizeof reason) != 0) {
        log_error(COMPONENT, "established connection with a bad target: %s", reason);
        return -1;   /* cannot happen: the same check passed at the upgrade */
    }
    lws_set_timer_usecs(wsi, LWS_SET_TIMER_USEC_CANCEL);   /* the handshake deadline is met */
    sub->wsi = wsi;
    sub->id = ++b->next_sub_id;
    sub->room = t.room;
    sub->state = SUB_LIVE;
    sub->queue_limit = b->cfg.send_queue_max;
    bc_fqueue_init(&sub->sendq);
    lws_dll2_add_tail(&sub->in_room, &room_of(b, t.room)->subs);
    size_t n = atomic_fetch_add(&b->subscribers, 1) + 1;
    metric_gauge_set(b->m_active, (double)n);
    metric_counter_inc(b->m_connections);
    sub->last_heard_ns = time_mono_ns();
    if (b->closing_all) {   /* upgraded just before the stop began */
        close_with(sub, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
        return 0;
    }
    if (t.user_id && b->cfg.presence) join_room(b, sub, &t);
    if (t.since[0] && !sub->closing)
        start_replay(b, sub, t.since);
    return 0;
}

static void on_closed(broadcaster *b, subscriber *sub)
{
    if (!sub || !sub->wsi) return;
    lws_sul_cancel(&sub->retry_timer);
    lws_sul_cancel(&sub->read_timer);
    lws_dll2_remove(&sub->in_room);
    bc_fqueue_clear(&sub->sendq);
    bc_replay_free(&sub->replay);
    free(sub->rx);
    sub->rx = NULL;
    sub->wsi = NULL;
    if (sub->member) leave_room(b, sub);
    size_t n = atomic_fetch_sub(&b->subscribers, 1) - 1;
    metric_gauge_set(b->m_active, (double)n);
    if (b->closing_all && n == 0) b->loop_exit = true;
}

static int on_writeable(broadcaster *b, subscriber *sub)
{
    if (!sub->wsi) return 0;
    if (sub->closing) return -1;   /* lws sends the close frame set by close_with() */
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
    maybe_request_page(b, sub);
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
    tell(b, sub, subscriber_error_json(code, why));
}

/* Announces the member's newest read position (presence has it: with several connections of
 * one member, the newest of all of them, so an announcement never goes backwards). */
static void announce_read(broadcaster *b, subscriber *sub)
{
    char seq[SEQNUM_BUF];
    sub->read_announced_ns = time_mono_ns();
    if (!presence_read_position(b->cfg.presence, sub->room, sub->user_id, seq) || !seq[0]) return;
    announce(b, room_of(b, sub->room), read_event_json(sub->room, sub->user_id, sub->username, seq,
                                                         time_wall_ms()));
}

static void read_due(lws_sorted_usec_list_t *sul)
{
    subscriber *sub = lws_container_of(sul, subscriber, read_timer);
    sub->read_put_off = false;
    if (!sub->wsi || sub->closing) return;
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
    lws_sul_schedule(b->ctx, 0, &sub->read_timer, read_due, (lws_usec_t)((gap_ns - since) / 1000u));
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
    room_state *rs = room_of(b, sub->room);
    /* Only positions seen here are believed, so a client cannot plant a made-up one (stored
     * positions never move back: an invented huge one would stick for good). */
    if (!rs->last_seq[0]) {
        snprintf(err, sizeof err, "sequenceNumber: %s is not known here yet: no message of this room "
                 "has arrived since the consumer started; send READ again after the next one", seq);
        frame_error(b, sub, CHAT_VALIDATION_ERROR, err);
        return;
    }
    if (seqnum_cmp(seq, rs->last_seq) > 0) {
        snprintf(err, sizeof err, "sequenceNumber: %s is beyond the room's newest message %s", seq, rs->last_seq);
        frame_error(b, sub, CHAT_VALIDATION_ERROR, err);
        return;
    }
    metric_counter_inc(b->m_frames_read);
    if (!presence_advance_read(b->cfg.presence, sub->room, sub->user_id, seq)) return;   /* not newer */
    if (b->cfg.receipts) read_receipts_record(b->cfg.receipts, sub->room, sub->user_id, seq);
    announce_read_soon(b, sub);
}

/* Gathers a frame's pieces (a frame may arrive in several callbacks) up to SUBSCRIBER_FRAME_MAX. */
static void on_receive(broadcaster *b, struct lws *wsi, subscriber *sub, const char *data, size_t len)
{
    heard_from(b, sub);
    if (sub->closing) return;
    bool complete = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (!sub->rx_over) {
        if (sub->rx_len + len > SUBSCRIBER_FRAME_MAX) {
            sub->rx_over = true;
        } else {
            if (!sub->rx && !(sub->rx = malloc(SUBSCRIBER_FRAME_MAX))) {
                close_with(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
                return;
            }
            memcpy(sub->rx + sub->rx_len, data, len);
            sub->rx_len += len;
        }
    }
    if (!complete) return;
    if (!bc_bucket_take(&sub->frames, time_mono_ns(), SUBSCRIBER_FRAMES_PER_S, SUBSCRIBER_FRAME_BURST)) {
        char why[160];
        snprintf(why, sizeof why, "more than %.0f frames a second (burst %.0f): this one was ignored; "
                 "send READ for the newest message only", SUBSCRIBER_FRAMES_PER_S, SUBSCRIBER_FRAME_BURST);
        metric_counter_inc(b->m_frames_limited);
        tell(b, sub, subscriber_error_json(CHAT_RATE_LIMITED, why));
    } else if (sub->rx_over) {
        char why[64];
        snprintf(why, sizeof why, "frame is larger than %d bytes", SUBSCRIBER_FRAME_MAX);
        frame_error(b, sub, CHAT_MESSAGE_TOO_LARGE, why);
    } else if (lws_frame_is_binary(wsi)) {
        frame_error(b, sub, CHAT_INVALID_JSON, "binary frames are not accepted: send a JSON object as text");
    } else {
        handle_member_frame(b, sub, sub->rx, sub->rx_len);
    }
    sub->rx_len = 0;
    sub->rx_over = false;
}

static void stop_deadline_passed(lws_sorted_usec_list_t *sul)
{
    broadcaster *b = lws_container_of(sul, broadcaster, stop_deadline);
    log_warn(COMPONENT, "%zu subscribers did not finish closing in time; cutting them",
             atomic_load(&b->subscribers));
    b->loop_exit = true;
}

static void close_everyone(broadcaster *b)
{
    b->closing_all = true;
    for (size_t r = 0; r < b->n_rooms; r++) {
        lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&b->rooms[r].subs)) {
            close_with(lws_container_of(d, subscriber, in_room), LWS_CLOSE_STATUS_GOINGAWAY,
                       "going away");
        } lws_end_foreach_dll_safe(d, d1);
    }
    if (atomic_load(&b->subscribers) == 0)
        b->loop_exit = true;
    else
        lws_sul_schedule(b->ctx, 0, &b->stop_deadline, stop_deadline_passed, STOP_GRACE_US);
}

static void on_wake(broadcaster *b)
{
    apply_lost_events(b);
    drain_inbox(b);
    drain_replay_results(b);
    if (atomic_load(&b->stopping) && !b->closing_all) close_everyone(b);
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
        /* lws 4.1 gives an accepted socket no deadline of its own (a timeout set here is replaced
         * during adoption, and a trickling handshake lives until the 10 s header idle timeout):
         * a wsi timer closes it unless it has upgraded by then. */
        if (b->cfg.handshake_timeout_s > 0)
            lws_set_timer_usecs(wsi, (lws_usec_t)b->cfg.handshake_timeout_s * LWS_US_PER_SEC);
        return 0;
    case LWS_CALLBACK_TIMER:
        return sub && sub->wsi == wsi ? 0 : -1;   /* only a connection still in its handshake */
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return on_confirm_upgrade(b, wsi, in);
    case LWS_CALLBACK_HTTP:
        /* A plain HTTP request on the subscriber port. */
        if (lws_return_http_status(wsi, 400, "subscribe with a WebSocket upgrade to /chat/{roomId}"))
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(b, wsi, sub);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return sub ? on_writeable(b, sub) : 0;
    case LWS_CALLBACK_CLOSED:
        on_closed(b, sub);
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        on_wake(b);
        break;
    case LWS_CALLBACK_RECEIVE:
        if (sub && sub->wsi) on_receive(b, wsi, sub, in, len);
        break;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (sub && sub->wsi) heard_from(b, sub);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    { "chatflow-broadcast", callback_chat, sizeof(subscriber), 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

/* Keeps an idle loop turning (lws_service sleeps until the next lws timer), for the watchdog. */
static void tick(lws_sorted_usec_list_t *sul)
{
    broadcaster *b = lws_container_of(sul, broadcaster, tick);
    lws_sul_schedule(b->ctx, 0, &b->tick, tick, SERVICE_TICK_US);
}

static void *service_main(void *arg)
{
    broadcaster *b = arg;
    pthread_setname_np(pthread_self(), "cf-broadcast");   /* for top -H and the benchmark */
    watchdog_loop *wd = watchdog_register("broadcast-service", SERVICE_TURN_MAX_MS);
    lws_sul_schedule(b->ctx, 0, &b->tick, tick, SERVICE_TICK_US);
    while (!b->loop_exit) {
        watchdog_expect(wd, SERVICE_TURN_MAX_MS);
        if (lws_service(b->ctx, 0) < 0) break;
    }
    lws_sul_cancel(&b->tick);
    watchdog_unregister(wd);
    return NULL;
}

/* ---- public API ---- */

static bool config_ok(const broadcast_config *c, char *err, size_t err_len)
{
    if (c->room_min < 1 || c->room_max < c->room_min || c->room_max - c->room_min >= 1000000)
        snprintf(err, err_len, "room range %ld-%ld is not valid", c->room_min, c->room_max);
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
    b->m_active = metrics_gauge("chatflow_subscribers_active", "WebSocket subscribers connected.", NULL);
    b->m_connections = metrics_counter("chatflow_ws_connections_total",
                                       "WebSocket connections accepted.", NULL);
    b->m_deliveries = metrics_counter("chatflow_broadcast_deliveries_total",
                                      "BroadcastEvent frames written to subscribers.", NULL);
    b->m_slow = metrics_counter("chatflow_slow_subscribers_dropped_total",
                                "Subscribers closed because their send queue overflowed.", NULL);
    b->m_e2e = metrics_histogram("chatflow_end_to_end_latency_seconds",
                                 "Client timestamp to broadcast (frame queued for subscribers).",
                                 NULL, METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    b->m_replay_cache = metrics_counter("chatflow_replay_requests_total",
                                        "since= replays by where they were served from.",
                                        "source=\"cache\"");
    b->m_replay_history = metrics_counter("chatflow_replay_requests_total",
                                          "since= replays by where they were served from.",
                                          "source=\"history\"");
    b->m_members = metrics_gauge("chatflow_room_members_online",
                                 "Identified users online, summed over the rooms (presence).", NULL);
    b->m_room_full = metrics_counter("chatflow_room_full_refusals_total",
                                     "Member subscriptions refused because the room was full.", NULL);
    b->m_frames_read = metrics_counter("chatflow_subscriber_frames_total",
                                       "Frames sent by subscribers, by outcome.", "result=\"read\"");
    b->m_frames_error = metrics_counter("chatflow_subscriber_frames_total",
                                        "Frames sent by subscribers, by outcome.", "result=\"error\"");
    b->m_frames_limited = metrics_counter("chatflow_subscriber_frames_total",
                                          "Frames sent by subscribers, by outcome.", "result=\"rate_limited\"");
    b->m_waits = metrics_counter("chatflow_broadcast_publish_waits_total",
                                 "Publishes that found the broadcaster's inbox full and waited (backpressure on the pollers).",
                                 NULL);
    b->m_dropped_message = metrics_counter("chatflow_broadcast_events_dropped_total",
                                           "Events never broadcast (inbox full past the wait, out of memory), by kind.",
                                           "kind=\"message\"");
    b->m_dropped_typing = metrics_counter("chatflow_broadcast_events_dropped_total",
                                          "Events never broadcast (inbox full past the wait, out of memory), by kind.",
                                          "kind=\"typing\"");
}

static void free_queued(workqueue *q, bool jobs)
{
    if (!q) return;
    void *items[64];
    size_t n;
    while ((n = workqueue_pop_many(q, items, 64)) > 0)
        for (size_t i = 0; i < n; i++) {
            if (jobs) replay_job_free(items[i]);
            else free(items[i]);
        }
    workqueue_free(q);
}

/* Frees what broadcast_start built; the threads are stopped already. */
static void destroy(broadcaster *b)
{
    free_queued(b->inbox, false);
    free_queued(b->replay_jobs, true);
    free_queued(b->replay_results, true);
    if (b->ctx) lws_context_destroy(b->ctx);   /* runs CLOSED for whoever is still connected */
    for (size_t r = 0; b->rooms && r < b->n_rooms; r++) bc_room_cache_free(&b->rooms[r].cache);
    free(b->rooms);
    free(b->drops);
    if (b->room_sync_ready) {
        pthread_cond_destroy(&b->room_cv);
        pthread_mutex_destroy(&b->room_mu);
        pthread_mutex_destroy(&b->drops_mu);
    }
    free(b);
}

/* libwebsockets' own warnings and errors go to the service log, one line each. */
static void lws_log_to_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    log_write(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", "%.*s", (int)n, line);
}

/* The lws log level is process-wide and read unlocked by every lws thread: set it once, before
 * the first service thread starts. */
static void route_lws_log(void)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_log);
}

static bool create_listener(broadcaster *b, char *err, size_t err_len)
{
    static pthread_once_t lws_log_once = PTHREAD_ONCE_INIT;
    pthread_once(&lws_log_once, route_lws_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.user = b;
    if (b->cfg.handshake_timeout_s > 0) info.timeout_secs = (unsigned int)b->cfg.handshake_timeout_s;
    info.gid = -1;
    info.uid = -1;
    b->ctx = lws_create_context(&info);
    if (!b->ctx) {
        snprintf(err, err_len, "cannot create the libwebsockets context");
        return false;
    }
    info.port = b->cfg.port ? b->cfg.port : 0;
    info.iface = b->bind_addr[0] ? b->bind_addr : NULL;
    info.protocols = protocols;
    info.vhost_name = "broadcast";
    if (b->cfg.ping_interval_s > 0) {
        b->keepalive.secs_since_valid_ping = (uint16_t)b->cfg.ping_interval_s;
        b->keepalive.secs_since_valid_hangup =
            (uint16_t)(b->cfg.ping_interval_s + b->cfg.pong_timeout_s);
        info.retry_and_idle_policy = &b->keepalive;
    }
    b->vhost = lws_create_vhost(b->ctx, &info);
    if (!b->vhost) {
        snprintf(err, err_len, "cannot listen on %s:%d", b->bind_addr[0] ? b->bind_addr : "*",
                 b->cfg.port);
        return false;
    }
    b->port = lws_get_vhost_listen_port(b->vhost);
    return true;
}

/* The inbox waits measure on the monotonic clock, so wall-clock jumps do not stretch them. */
static bool init_sync(broadcaster *b)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) return false;
    bool ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&b->room_cv, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok) return false;
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
    b->n_rooms = (size_t)(cfg->room_max - cfg->room_min + 1);
    b->rooms = calloc(b->n_rooms, sizeof *b->rooms);
    b->drops = calloc(b->n_rooms, sizeof *b->drops);   /* recording a loss never allocates */
    bool ok = b->rooms && b->drops && init_sync(b);
    for (size_t r = 0; ok && r < b->n_rooms; r++) ok = bc_room_cache_init(&b->rooms[r].cache, cfg->cache_per_room);
    if (ok) {
        b->inbox = workqueue_new(b->cfg.inbox_capacity, wake_service, b);
        /* a subscriber has at most one page asked for at a time */
        b->replay_jobs = workqueue_new(cfg->max_subscribers + 1, NULL, NULL);
        b->replay_results = workqueue_new(cfg->max_subscribers + 1, wake_service, b);
        ok = b->inbox && b->replay_jobs && b->replay_results;
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
    if (pthread_create(&b->replay_thread, NULL, replay_main, b) != 0) {
        snprintf(err, err_len, "cannot start the replay thread");
        destroy(b);
        return NULL;
    }
    b->replay_started = true;
    if (pthread_create(&b->service_thread, NULL, service_main, b) != 0) {
        snprintf(err, err_len, "cannot start the WebSocket service thread");
        atomic_store(&b->replay_stop, true);
        workqueue_close(b->replay_jobs);
        pthread_join(b->replay_thread, NULL);
        destroy(b);
        return NULL;
    }
    b->service_started = true;
    log_info(COMPONENT, "subscribers on ws://%s:%d/chat/{%ld-%ld}", b->bind_addr[0] ? b->bind_addr : "*",
             b->port, cfg->room_min, cfg->room_max);
    return b;
}

int broadcast_port(const broadcaster *b)
{
    return b ? b->port : -1;
}

/* Waits (bounded) for the service thread to make room in the full inbox; see the top comment
 * for why no wake-up is lost. true when p was queued. */
static bool push_waiting(broadcaster *b, published *p)
{
    if (atomic_load(&b->stopping)) return false;
    metric_counter_inc(b->m_waits);
    uint64_t drains = atomic_load(&b->drains);
    if (atomic_load(&b->stalled_at) == drains + 1) return false;   /* nothing drained since a wait ran out */
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
        log_warn(COMPONENT, "room %s: message %s (sequence number %s) not broadcast: no room in the "
                 "inbox for %ld ms (or no memory); see chatflow_broadcast_events_dropped_total",
                 p->msg.room_id, p->msg.message_id, p->seq[0] ? p->seq : "none", b->cfg.publish_wait_ms);
    record_lost_event(b, p);
    lws_cancel_service(b->ctx);   /* apply it even if nothing else wakes the service thread */
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

void broadcast_stop(broadcaster *b)
{
    if (!b) return;
    atomic_store(&b->stopping, true);
    pthread_mutex_lock(&b->room_mu);   /* publishers waiting on a full inbox give up now */
    pthread_cond_broadcast(&b->room_cv);
    pthread_mutex_unlock(&b->room_mu);
    while (atomic_load(&b->publishers_inside) > 0) sched_yield();
    workqueue_close(b->inbox);
    if (b->service_started) {
        lws_cancel_service(b->ctx);
        pthread_join(b->service_thread, NULL);
    }
    /* The worker may be inside the history callback; its answer is dropped. */
    workqueue_close(b->replay_results);
    atomic_store(&b->replay_stop, true);
    workqueue_close(b->replay_jobs);
    if (b->replay_started) pthread_join(b->replay_thread, NULL);
    destroy(b);
}
