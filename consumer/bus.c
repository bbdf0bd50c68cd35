/* bus — Redis fan-out between consumer nodes (contract in bus.h). */
#include "bus.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "room.h"
#include "seqnum.h"
#include "timeutil.h"
#include "watchdog.h"
#include "workqueue.h"

#define COMPONENT "bus"
#define TURN_MS 200         /* the longest a thread waits before it looks at its stop flag */
#define BACKOFF_MAX_MS 2000 /* reconnect backoff cap */
#define LOST_ROOMS_MAX 1024 /* rooms marked lost at once; beyond, every room is */
#define EPOCH_BUF 48
/* After a reconnect, events of rooms this node did not track are delivered when Redis took them
 * this long before the connection was lost, or later (Redis's clock and this node's differ a
 * little; more is harmless: the broadcaster drops what it has). */
#define UNTRACKED_CATCH_UP_MARGIN_MS 60000

/* Publishes one event atomically with its offset (see bus.h for the keys). KEYS: meta, stream.
 * ARGV: channel, event, stream length, ttl. */
static const char PUBLISH_SCRIPT[] =
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if not e then\n"
    "  local t = redis.call('TIME')\n"
    "  e = t[1] .. string.format('%06d', tonumber(t[2]))\n"
    "  redis.call('HSET', KEYS[1], 'e', e)\n"
    "end\n"
    "local o = redis.call('HINCRBY', KEYS[1], 'o', 1)\n"
    "local now = redis.call('TIME')\n"
    "local ms = tostring(now[1] * 1000 + math.floor(tonumber(now[2]) / 1000))\n"
    "redis.call('HSET', KEYS[1], 't', ms)\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], o .. '-0', 'd', ARGV[2], 't', ms)\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "redis.call('PUBLISH', ARGV[1], e .. ' ' .. o .. ' ' .. ARGV[2])\n"
    "return o\n";

typedef struct {
    char room[ROOM_ID_BUF];
    char *event;     /* the JSON envelope */
    uint64_t ticket; /* its place in the outbox order, 1, 2, ...; 0 for a relay */
    bool relay;      /* a member event (bus_relay): a plain PUBLISH, nobody waits for it */
} outgoing;

/* What the subscriber thread knows of a room. */
typedef struct {
    char room[ROOM_ID_BUF];
    char epoch[EPOCH_BUF];
    long long offset;  /* the last offset handled */
    bool lost_pending; /* a "lost" event came: the next event reports the loss */
    uint64_t seen_ns;  /* monotonic: its last event (rooms idle past the keys' TTL are dropped) */
    UT_hash_handle hh;
} room_track;

struct bus {
    bus_config cfg;
    redis_endpoint ep;
    char prefix[64];
    char node_id[128];
    workqueue *outbox;
    pthread_mutex_t push_mu; /* a ticket and its place in the outbox are taken together */
    uint64_t next_ticket;
    pthread_mutex_t done_mu; /* published_upto and its condition */
    pthread_cond_t done_cv;
    uint64_t published_upto; /* every ticket up to here is published (or given up) */
    pthread_t pub_thread, sub_thread;
    bool pub_started, sub_started;
    atomic_bool stopping;
    atomic_bool pub_up, sub_up;
    _Atomic uint64_t stop_deadline_ns;

    pthread_mutex_t lost_mu; /* poller threads mark, the publisher thread takes */
    char (*lost)[ROOM_ID_BUF];
    size_t n_lost;
    bool lost_overflow;

    room_track *rooms; /* subscriber thread only */
    char replid[48];   /* subscriber thread only: Redis's replication history last connected to */
    int64_t disconnected_ms; /* subscriber thread only: wall clock when the connection was lost */
    bool subscribed_once;    /* subscriber thread only */
    uint64_t next_sweep_ns;

    metric_counter *m_published, *m_publish_errors, *m_dropped;
    metric_counter *m_relayed, *m_relay_dropped, *m_relay_received;
    metric_counter *m_delivered, *m_own, *m_duplicate, *m_gap_stream, *m_gap_lost;
    metric_gauge *m_outbox, *m_pub_up, *m_sub_up, *m_rooms;
};

/* ---- connections ---- */

static redisContext *connect_redis(const bus *b, char *err, size_t err_len)
{
    return redis_endpoint_connect(&b->ep, err, err_len);
}

/* Sleeps up to ms in TURN_MS steps; false when the bus is stopping. */
static bool nap(bus *b, long ms)
{
    while (ms > 0 && !atomic_load(&b->stopping)) {
        long step = ms < TURN_MS ? ms : TURN_MS;
        time_sleep_ms(step);
        ms -= step;
    }
    return !atomic_load(&b->stopping);
}

static long next_backoff(long ms)
{
    return ms ? (ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2) : 100;
}

static void key_of(const bus *b, const char *kind, const char *room, char *out, size_t len)
{
    snprintf(out, len, "%s:%s:%s", b->prefix, kind, room);
}

/* ---- publishing ---- */

static char *envelope(const bus *b, const chat_message *m, const char *seq, const char *received_at)
{
    char *body = queue_message_to_json(m);
    if (!body) return NULL;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "o", b->node_id, "s", seq ? seq : "", "r",
                          received_at ? received_at : "", "m", body);
    free(body);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

static void mark_lost(bus *b, const char *room)
{
    pthread_mutex_lock(&b->lost_mu);
    size_t i = 0;
    while (i < b->n_lost && strcmp(b->lost[i], room) != 0) i++;
    if (i == b->n_lost) {
        if (i < LOST_ROOMS_MAX)
            snprintf(b->lost[b->n_lost++], ROOM_ID_BUF, "%s", room);
        else
            b->lost_overflow = true;
    }
    pthread_mutex_unlock(&b->lost_mu);
}

/* Queues o with the next ticket and returns that ticket; 0 when the outbox is full (or closed).
 * Once queued, o belongs to the publisher thread (it may be freed before this returns). */
static uint64_t push_ticketed(bus *b, outgoing *o)
{
    pthread_mutex_lock(&b->push_mu);
    uint64_t ticket = b->next_ticket + 1;
    o->ticket = ticket;
    bool pushed = workqueue_push(b->outbox, o);
    if (pushed) b->next_ticket = ticket;
    pthread_mutex_unlock(&b->push_mu);
    return pushed ? ticket : 0;
}

uint64_t bus_publish(bus *b, const chat_message *m, const char *seq, const char *received_at)
{
    if (atomic_load(&b->stopping)) return 0;
    outgoing *o = calloc(1, sizeof *o);
    if (o) {
        snprintf(o->room, sizeof o->room, "%s", m->room_id);
        o->event = envelope(b, m, seq, received_at);
    }
    if (o && o->event) {
        metric_gauge_add(b->m_outbox, 1); /* before the push: the publisher may take it at once */
        uint64_t ticket = push_ticketed(b, o);
        if (ticket) return ticket;
        metric_gauge_add(b->m_outbox, -1);
    }
    if (o) free(o->event);
    free(o);
    /* No node will ever see it: they must learn that they missed something. */
    metric_counter_inc(b->m_dropped);
    mark_lost(b, m->room_id);
    return 0;
}

/* {"o": node, "e": the member event's JSON text}: the receiver hands e on as it is. */
static char *relay_envelope(const bus *b, const char *event_json)
{
    json_t *o = json_pack("{s:s, s:s}", "o", b->node_id, "e", event_json);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

bool bus_relay(bus *b, const char *room, const char *event_json)
{
    if (atomic_load(&b->stopping) || !room_id_valid(room, strlen(room))) return false;
    /* Chat events first: a relay never takes the second half of the outbox. */
    if (workqueue_length(b->outbox) >= b->cfg.outbox / 2) {
        metric_counter_inc(b->m_relay_dropped);
        return false;
    }
    outgoing *o = calloc(1, sizeof *o);
    if (o) {
        snprintf(o->room, sizeof o->room, "%s", room);
        o->relay = true;
        o->event = relay_envelope(b, event_json);
    }
    if (o && o->event) {
        metric_gauge_add(b->m_outbox, 1);
        if (workqueue_push(b->outbox, o)) return true;
        metric_gauge_add(b->m_outbox, -1);
    }
    if (o) free(o->event);
    free(o);
    metric_counter_inc(b->m_relay_dropped);
    return false;
}

static void mark_done(bus *b, uint64_t ticket)
{
    pthread_mutex_lock(&b->done_mu);
    if (ticket > b->published_upto) b->published_upto = ticket;
    pthread_cond_broadcast(&b->done_cv);
    pthread_mutex_unlock(&b->done_mu);
}

bool bus_wait_published(bus *b, uint64_t ticket, long timeout_ms)
{
    struct timespec until = time_mono_after_ms(timeout_ms); /* done_cv runs on CLOCK_MONOTONIC */
    pthread_mutex_lock(&b->done_mu);
    int rc = 0;
    while (b->published_upto < ticket && rc == 0)
        rc = pthread_cond_timedwait(&b->done_cv, &b->done_mu, &until);
    bool done = b->published_upto >= ticket;
    pthread_mutex_unlock(&b->done_mu);
    return done;
}

/* One event through PUBLISH_SCRIPT; REDIS_OK when Redis took it. */
static int publish_one(bus *b, redisContext *c, char sha[41], const char *room, const char *event)
{
    char meta[128 + ROOM_ID_BUF], hist[128 + ROOM_ID_BUF], channel[128 + ROOM_ID_BUF];
    key_of(b, "meta", room, meta, sizeof meta);
    key_of(b, "hist", room, hist, sizeof hist);
    key_of(b, "room", room, channel, sizeof channel);
    char maxlen[24], ttl[24];
    snprintf(maxlen, sizeof maxlen, "%ld", b->cfg.history);
    snprintf(ttl, sizeof ttl, "%ld", b->cfg.ttl_s);
    const char *argv[] = {meta, hist, channel, event, maxlen, ttl};
    redisReply *r = redis_script_run(c, PUBLISH_SCRIPT, sha, 2, 6, argv);
    if (!r) return REDIS_ERR; /* connection lost or timed out */
    bool ok = r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        log_warn(COMPONENT, "publish to room %s refused: %s", room,
                 r->type == REDIS_REPLY_ERROR ? r->str : "an unexpected reply");
    freeReplyObject(r);
    return ok ? REDIS_OK : REDIS_ERR;
}

/* PUBLISH of one member event on the room's member channel; REDIS_OK when Redis took it. */
static int relay_one(bus *b, redisContext *c, const char *room, const char *event)
{
    char channel[128 + ROOM_ID_BUF];
    key_of(b, "members", room, channel, sizeof channel);
    redisReply *r = redisCommand(c, "PUBLISH %s %s", channel, event);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    return ok ? REDIS_OK : REDIS_ERR;
}

static char *lost_event(const bus *b)
{
    json_t *o = json_pack("{s:s, s:b}", "o", b->node_id, "lost", 1);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* Publishes a "lost" event for every marked room; false when Redis failed (marks kept). */
static bool publish_lost_marks(bus *b, redisContext *c, char sha[41])
{
    pthread_mutex_lock(&b->lost_mu);
    bool any = b->n_lost > 0 || b->lost_overflow;
    pthread_mutex_unlock(&b->lost_mu);
    if (!any) return true;
    char *event = lost_event(b);
    if (!event) return false;
    bool ok = true;
    pthread_mutex_lock(&b->lost_mu);
    if (b->lost_overflow) /* too many to name: every room this node's subscribers may be in */
        log_error(COMPONENT,
                  "more than %d rooms lost events before Redis took them; those past "
                  "the first %d are not announced",
                  LOST_ROOMS_MAX, LOST_ROOMS_MAX);
    b->lost_overflow = false;
    while (ok && b->n_lost > 0) {
        char room[ROOM_ID_BUF];
        memcpy(room, b->lost[b->n_lost - 1], sizeof room);
        pthread_mutex_unlock(&b->lost_mu);
        ok = publish_one(b, c, sha, room, event) == REDIS_OK;
        pthread_mutex_lock(&b->lost_mu);
        if (ok) b->n_lost--;
    }
    pthread_mutex_unlock(&b->lost_mu);
    free(event);
    return ok;
}

static redisContext *publisher_connect(bus *b)
{
    char err[256];
    redisContext *c = connect_redis(b, err, sizeof err);
    if (!c) log_warn(COMPONENT, "publisher: %s", err);
    return c;
}

/* Past the stop deadline, what is left in the outbox is given up (counted as dropped). */
static bool past_deadline(const bus *b)
{
    uint64_t d = atomic_load(&b->stop_deadline_ns);
    return d && time_mono_ns() >= d;
}

static void *publisher_main(void *arg)
{
    bus *b = arg;
    pthread_setname_np(pthread_self(), "cf-bus-pub");
    watchdog_loop *dog = watchdog_register("bus-publish", b->cfg.timeout_ms * 4 + 10000);
    redisContext *c = NULL;
    char sha[41] = "";
    outgoing *head = NULL;
    long backoff = 0;
    for (;;) {
        watchdog_expect(dog, b->cfg.timeout_ms * 4 + 10000);
        bool stopping = atomic_load(&b->stopping);
        if (stopping && (past_deadline(b) || (!head && workqueue_length(b->outbox) == 0))) break;
        if (!c) {
            if (!(c = publisher_connect(b))) {
                atomic_store(&b->pub_up, false);
                metric_gauge_set(b->m_pub_up, 0);
                backoff = next_backoff(backoff);
                if (!nap(b, backoff) && past_deadline(b)) break;
                continue;
            }
            if (backoff)
                log_info(COMPONENT, "publisher connected to %s:%d again", b->ep.host, b->ep.port);
            backoff = 0;
            atomic_store(&b->pub_up, true);
            metric_gauge_set(b->m_pub_up, 1);
        }
        bool ok = publish_lost_marks(b, c, sha);
        if (ok && !head) {
            head = workqueue_pop_wait(b->outbox, TURN_MS);
            if (head) metric_gauge_add(b->m_outbox, -1);
        }
        if (ok && head) {
            ok = (head->relay ? relay_one(b, c, head->room, head->event)
                              : publish_one(b, c, sha, head->room, head->event)) == REDIS_OK;
            if (ok) {
                metric_counter_inc(head->relay ? b->m_relayed : b->m_published);
                mark_done(b, head->ticket);
                free(head->event);
                free(head);
                head = NULL;
            }
        }
        if (!ok) { /* keep the event at the head: it goes out first once Redis is back */
            metric_counter_inc(b->m_publish_errors);
            log_warn(COMPONENT, "publisher: Redis %s:%d failed (%s); reconnecting", b->ep.host,
                     b->ep.port, c->err ? c->errstr : "refused");
            redisFree(c);
            c = NULL;
        }
    }
    /* Given up at the stop deadline: nobody may wait for them any longer. */
    if (head) {
        metric_counter_inc(head->relay ? b->m_relay_dropped : b->m_dropped);
        mark_done(b, head->ticket);
        free(head->event);
        free(head);
    }
    outgoing *left;
    while ((left = workqueue_pop_wait(b->outbox, 0)) != NULL) {
        metric_counter_inc(left->relay ? b->m_relay_dropped : b->m_dropped);
        mark_done(b, left->ticket);
        free(left->event);
        free(left);
    }
    if (c) redisFree(c);
    atomic_store(&b->pub_up, false);
    watchdog_unregister(dog);
    return NULL;
}

/* ---- receiving ---- */

static room_track *track_of(bus *b, const char *room)
{
    room_track *t;
    HASH_FIND_STR(b->rooms, room, t);
    if (!t && (t = calloc(1, sizeof *t)) != NULL) {
        snprintf(t->room, sizeof t->room, "%s", room);
        HASH_ADD_STR(b->rooms, room, t);
        metric_gauge_set(b->m_rooms, (double)HASH_COUNT(b->rooms));
    }
    if (t) t->seen_ns = time_mono_ns();
    return t;
}

/* Rooms are unbounded; what is tracked of them must not be. A room idle for longer than its
 * keys live in Redis has nothing left there to compare with: its next event starts it afresh
 * (as for a room never seen), so forgetting it loses nothing. Once a minute. */
static void sweep_idle_rooms(bus *b)
{
    uint64_t now = time_mono_ns();
    if (now < b->next_sweep_ns) return;
    b->next_sweep_ns = now + 60ull * 1000000000ull;
    uint64_t idle_ns = (uint64_t)b->cfg.ttl_s * 1000000000ull;
    room_track *t, *tmp;
    HASH_ITER(hh, b->rooms, t, tmp)
    {
        if (now - t->seen_ns <= idle_ns) continue;
        HASH_DEL(b->rooms, t);
        free(t);
    }
    metric_gauge_set(b->m_rooms, (double)HASH_COUNT(b->rooms));
}

/* Hands one event to the broadcaster: parses it, reports a pending loss first. */
static void handle_event(bus *b, room_track *t, const char *event, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(event, len, 0, &jerr);
    const char *origin = json_string_value(json_object_get(o, "o"));
    if (!o || !origin) {
        log_warn(COMPONENT, "room %s: an event that is not one of ours; ignored", t->room);
        json_decref(o);
        return;
    }
    if (json_is_true(json_object_get(o, "lost"))) {
        t->lost_pending = true;
        json_decref(o);
        return;
    }
    bool own = strcmp(origin, b->node_id) == 0;
    const char *seq = json_string_value(json_object_get(o, "s"));
    const char *received = json_string_value(json_object_get(o, "r"));
    const char *body = json_string_value(json_object_get(o, "m"));
    chat_message m;
    char err[200];
    if (!seq || !received || !body ||
        !queue_message_parse(body, strlen(body), &m, err, sizeof err)) {
        log_warn(COMPONENT, "room %s: an event that does not parse; ignored", t->room);
        json_decref(o);
        return;
    }
    if (t->lost_pending) {
        t->lost_pending = false;
        metric_counter_inc(b->m_gap_lost);
        b->cfg.room_lost(b->cfg.ctx, t->room, seq);
    }
    /* This node's own events too: every node delivers in the one order Redis gave the room. */
    metric_counter_inc(own ? b->m_own : b->m_delivered);
    b->cfg.deliver(b->cfg.ctx, &m, seq, received);
    json_decref(o);
}

/* The room's epoch and newest offset in Redis; false when its keys are gone (or Redis failed). */
static bool room_head(bus *b, redisContext *rc, const char *room, char epoch[EPOCH_BUF],
                      long long *newest)
{
    char meta[128 + ROOM_ID_BUF];
    key_of(b, "meta", room, meta, sizeof meta);
    redisReply *r = redisCommand(rc, "HMGET %s e o", meta);
    bool have = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                r->element[1]->type == REDIS_REPLY_STRING;
    if (have) {
        snprintf(epoch, EPOCH_BUF, "%s", r->element[0]->str);
        *newest = strtoll(r->element[1]->str, NULL, 10);
    }
    freeReplyObject(r);
    return have;
}

/* A stream entry [id, [d, event, t, publish ms]] ("t" since publish times were kept: older
 * entries have only d). The event is element[1]->element[1]. */
static bool stream_entry_ok(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           e->element[0]->type == REDIS_REPLY_STRING && e->element[1]->type == REDIS_REPLY_ARRAY &&
           e->element[1]->elements >= 2 && e->element[1]->element[1]->type == REDIS_REPLY_STRING;
}

/* When Redis took the entry (its clock, ms), or -1 for an entry without one. */
static int64_t stream_entry_time(const redisReply *e)
{
    const redisReply *f = e->element[1];
    if (f->elements < 4 || f->element[3]->type != REDIS_REPLY_STRING) return -1;
    return strtoll(f->element[3]->str, NULL, 10);
}

/* Brings room t up to offset upto of epoch (exclusive when upto_exclusive: the caller has that
 * event in hand) from the room's stream, delivering what it holds in order. When the stream
 * cannot prove that nothing is missing — another epoch than t's, or its first entry is not the
 * next offset (trimmed, or gone) — the room is marked lost first, so room_lost() precedes the
 * first event delivered. Returns false only when Redis failed (t unchanged but for the mark). */
static bool recover(bus *b, redisContext *rc, room_track *t, const char *epoch, long long upto,
                    bool upto_exclusive)
{
    bool same_epoch = t->epoch[0] && strcmp(t->epoch, epoch) == 0;
    long long from = same_epoch ? t->offset + 1 : 1;
    long long last = upto_exclusive ? upto - 1 : upto;
    if (!same_epoch && t->epoch[0]) {
        log_warn(COMPONENT,
                 "room %s: Redis has a new epoch (%s, was %s): what came after offset "
                 "%lld cannot be verified; its subscribers here resume from the "
                 "history store",
                 t->room, epoch, t->epoch, t->offset);
        t->lost_pending = true;
    }
    snprintf(t->epoch, sizeof t->epoch, "%s", epoch);
    if (last < from) return true;
    char hist[128 + ROOM_ID_BUF];
    key_of(b, "hist", t->room, hist, sizeof hist);
    redisReply *r = redisCommand(rc, "XRANGE %s %lld-0 %lld-0", hist, from, last);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return false;
    }
    long long expect = from;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (!stream_entry_ok(e)) continue;
        long long off = strtoll(e->element[0]->str, NULL, 10);
        if (off != expect && !t->lost_pending && same_epoch) {
            log_warn(COMPONENT,
                     "room %s: offsets %lld..%lld are no longer in Redis; its "
                     "subscribers here resume from the history store",
                     t->room, expect, off - 1);
        }
        if (off != expect) t->lost_pending = true;
        redisReply *d = e->element[1]->element[1];
        handle_event(b, t, d->str, d->len);
        expect = off + 1;
    }
    freeReplyObject(r);
    if (expect <= last) { /* the newest ones are not in the stream either */
        if (same_epoch && !t->lost_pending)
            log_warn(COMPONENT,
                     "room %s: offsets %lld..%lld are no longer in Redis; its "
                     "subscribers here resume from the history store",
                     t->room, expect, last);
        t->lost_pending = true;
    }
    if (!t->lost_pending) metric_counter_inc(b->m_gap_stream); /* a loss counts when reported */
    t->offset = last;
    return true;
}

/* One pub/sub message "<epoch> <offset> <event>" of room's channel. */
static void on_channel_message(bus *b, redisContext *rc, const char *room, const char *text,
                               size_t len)
{
    char epoch[EPOCH_BUF];
    long long offset;
    int used = 0;
    if (sscanf(text, "%47s %lld %n", epoch, &offset, &used) != 2 || used <= 0 ||
        (size_t)used > len) {
        log_warn(COMPONENT, "room %s: a bus message of another format; ignored", room);
        return;
    }
    room_track *t = track_of(b, room);
    if (!t) {
        log_error(COMPONENT, "room %s: out of memory tracking it", room);
        return;
    }
    bool same_epoch = strcmp(t->epoch, epoch) == 0;
    if (same_epoch && offset <= t->offset) {
        metric_counter_inc(b->m_duplicate);
        return;
    }
    /* A room seen for the first time starts at this event: what came before is the store's
     * (after a reconnect, catch_up_untracked() has brought in what was published meanwhile). */
    if (t->epoch[0] && (!same_epoch || offset > t->offset + 1) &&
        !recover(b, rc, t, epoch, offset, true))
        t->lost_pending = true; /* Redis failed under us: cannot tell what was missed */
    snprintf(t->epoch, sizeof t->epoch, "%s", epoch);
    t->offset = offset;
    handle_event(b, t, text + used, len - (size_t)used);
}

/* After a reconnect, before live events flow: every room known is brought up to its newest
 * offset from its stream (recover()), so what was published meanwhile is delivered, not skipped. */
static void catch_up_all(bus *b, redisContext *rc)
{
    room_track *t, *tmp;
    HASH_ITER(hh, b->rooms, t, tmp)
    {
        char epoch[EPOCH_BUF];
        long long newest = 0;
        if (!room_head(b, rc, t->room, epoch, &newest)) {
            /* the room's keys are gone (Redis lost them, or they expired): whatever comes next
             * is a new epoch, and recover() reports it then */
            continue;
        }
        if (strcmp(epoch, t->epoch) == 0 && newest <= t->offset) continue;
        if (!recover(b, rc, t, epoch, newest, false)) return; /* Redis failed: next reconnect */
    }
}

/* Room's events that Redis took at or after since_ms (its clock), from its stream, as the first
 * this node tracks of it (the room's state starts at its newest offset). */
static void catch_up_room_since(bus *b, redisContext *rc, const char *room, int64_t since_ms)
{
    char epoch[EPOCH_BUF], hist[128 + ROOM_ID_BUF], meta[128 + ROOM_ID_BUF];
    long long newest = 0;
    /* Most rooms had nothing while this node was away: one HGET of their last publish time each,
     * and their streams are not read (a room published before times were kept is read). */
    key_of(b, "meta", room, meta, sizeof meta);
    redisReply *last = redisCommand(rc, "HGET %s t", meta);
    bool quiet =
        last && last->type == REDIS_REPLY_STRING && strtoll(last->str, NULL, 10) < since_ms;
    freeReplyObject(last);
    if (quiet || !room_head(b, rc, room, epoch, &newest)) return;
    room_track *t = track_of(b, room);
    if (!t) return;
    key_of(b, "hist", room, hist, sizeof hist);
    redisReply *r = redisCommand(rc, "XRANGE %s - %lld-0", hist, newest);
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        if (!stream_entry_ok(r->element[i])) continue;
        redisReply *d = r->element[i]->element[1]->element[1];
        int64_t at = stream_entry_time(r->element[i]);
        bool recent = at < 0 || at >= since_ms; /* an entry of unknown time: delivered */
        if (recent) handle_event(b, t, d->str, d->len);
    }
    freeReplyObject(r);
    snprintf(t->epoch, sizeof t->epoch, "%s", epoch);
    t->offset = newest;
}

/* After a reconnect: rooms this node does not track (never seen since it started, or forgotten
 * idle) may have had events while it was not subscribed — to subscribers it already has. Those
 * received since the connection was lost come from the rooms' streams; the keys are found with
 * SCAN (bounded work per call, done once per reconnect). */
static void catch_up_untracked(bus *b, redisContext *rc, int64_t since_ms)
{
    char pattern[128];
    snprintf(pattern, sizeof pattern, "%s:meta:*", b->prefix);
    size_t skip = strlen(b->prefix) + strlen(":meta:");
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 500", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return; /* Redis failed: the next reconnect starts over */
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= skip) continue;
            const char *room = k->str + skip;
            room_track *t = NULL;
            HASH_FIND_STR(b->rooms, room, t);
            if (!t && room_id_valid(room, strlen(room))) catch_up_room_since(b, rc, room, since_ms);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && !atomic_load(&b->stopping));
}

/* Redis's replication id (INFO replication, master_replid) into out; false when unknown. A new
 * one means another history: a replica promoted by a failover, or a restart from a snapshot. */
static bool read_replid(redisContext *rc, char out[48])
{
    redisReply *r = redisCommand(rc, "INFO replication");
    const char *at = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "master_replid:") : NULL;
    bool ok = at && sscanf(at + strlen("master_replid:"), "%47[0-9a-fA-F]", out) == 1;
    freeReplyObject(r);
    return ok;
}

/* After a change of Redis's history, a room's offsets may have gone back within its epoch (what
 * the old primary had not replicated is gone, and its offsets are handed out again), so no offset
 * this node tracks can be trusted: each room's newest event is delivered as the first after a
 * loss (room_lost() with its sequence number: the subscribers resume from the history store, which
 * has everything), and the room's state restarts there. Rooms whose keys are gone start a new
 * epoch with their next event, which reports the loss then. */
static void resync_after_history_change(bus *b, redisContext *rc)
{
    room_track *t, *tmp;
    HASH_ITER(hh, b->rooms, t, tmp)
    {
        char epoch[EPOCH_BUF], hist[128 + ROOM_ID_BUF];
        long long newest = 0;
        if (!room_head(b, rc, t->room, epoch, &newest)) continue;
        snprintf(t->epoch, sizeof t->epoch, "%s", epoch);
        t->offset = newest;
        t->lost_pending = true;
        key_of(b, "hist", t->room, hist, sizeof hist);
        redisReply *r = redisCommand(rc, "XRANGE %s %lld-0 %lld-0", hist, newest, newest);
        if (!r) return; /* Redis failed: the next reconnect starts over */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && stream_entry_ok(r->element[0])) {
            redisReply *d = r->element[0]->element[1]->element[1];
            handle_event(b, t, d->str, d->len);
        }
        freeReplyObject(r);
    }
}

/* On every (re)connect of the subscriber: true when Redis's replication history is not the one
 * this node followed before. */
static bool history_changed(bus *b, redisContext *rc)
{
    char replid[48];
    if (!read_replid(rc, replid)) return false; /* a server without INFO: offsets are trusted */
    bool changed = b->replid[0] && strcmp(b->replid, replid) != 0;
    if (changed)
        log_warn(COMPONENT,
                 "Redis %s:%d has another replication history (%s, was %s: a failover or a "
                 "restart): rooms' subscribers here resume from the history store",
                 b->ep.host, b->ep.port, replid, b->replid);
    snprintf(b->replid, sizeof b->replid, "%s", replid);
    return changed;
}

/* Sends PSUBSCRIBE for the rooms' event channels and their member channels, and waits (bounded)
 * for both confirmations. */
static bool psubscribe(bus *b, redisContext *sc)
{
    char rooms[128], members[128];
    snprintf(rooms, sizeof rooms, "%s:room:*", b->prefix);
    snprintf(members, sizeof members, "%s:members:*", b->prefix);
    redisReply *r = redisCommand(sc, "PSUBSCRIBE %s %s", rooms, members);
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3;
    freeReplyObject(r);
    if (!ok) return false;
    void *second = NULL; /* the confirmation of the second pattern */
    ok = redisGetReply(sc, &second) == REDIS_OK && second &&
         ((redisReply *)second)->type == REDIS_REPLY_ARRAY;
    freeReplyObject(second);
    return ok;
}

/* A member event of another node, or of cluster presence (an empty origin: every node's),
 * handed on as it is (this node announced its own READs). */
static void on_member_message(bus *b, const char *room, const char *text, size_t len)
{
    json_t *o = json_loadb(text, len, 0, NULL);
    const char *origin = json_string_value(json_object_get(o, "o"));
    const char *event = json_string_value(json_object_get(o, "e"));
    if (!origin || !event)
        log_warn(COMPONENT, "room %s: a member message of another format; ignored", room);
    else if (strcmp(origin, b->node_id) != 0 && b->cfg.relay) {
        metric_counter_inc(b->m_relay_received);
        b->cfg.relay(b->cfg.ctx, room, event);
    }
    json_decref(o);
}

static void handle_push(bus *b, redisContext *rc, redisReply *r)
{
    /* ["pmessage", pattern, channel, payload] */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[2]->type != REDIS_REPLY_STRING || r->element[3]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "pmessage") != 0)
        return;
    const char *channel = r->element[2]->str;
    size_t prefix_len = strlen(b->prefix);
    if (strncmp(channel, b->prefix, prefix_len) != 0 || channel[prefix_len] != ':') return;
    const char *kind = channel + prefix_len + 1;
    bool members = strncmp(kind, "members:", 8) == 0;
    if (!members && strncmp(kind, "room:", 5) != 0) return;
    const char *room = kind + (members ? 8 : 5);
    if (!room_id_valid(room, strlen(room))) return;
    if (members)
        on_member_message(b, room, r->element[3]->str, r->element[3]->len);
    else
        on_channel_message(b, rc, room, r->element[3]->str, r->element[3]->len);
}

/* Reads what the subscriber connection has, up to TURN_MS of waiting. false: the connection
 * failed. */
static bool pump(bus *b, redisContext *sc, redisContext *rc)
{
    void *reply = NULL;
    for (;;) { /* replies already read and parsed come first */
        if (redisGetReplyFromReader(sc, &reply) != REDIS_OK) return false;
        if (!reply) break;
        handle_push(b, rc, reply);
        freeReplyObject(reply);
    }
    struct pollfd p = {.fd = sc->fd, .events = POLLIN};
    int n = poll(&p, 1, TURN_MS);
    if (n < 0) return errno == EINTR;
    if (n == 0) return true;
    return redisBufferRead(sc) == REDIS_OK;
}

static void close_pair(redisContext **sc, redisContext **rc)
{
    if (*sc) redisFree(*sc);
    if (*rc) redisFree(*rc);
    *sc = *rc = NULL;
}

static void *subscriber_main(void *arg)
{
    bus *b = arg;
    pthread_setname_np(pthread_self(), "cf-bus-sub");
    watchdog_loop *dog = watchdog_register("bus-subscribe", b->cfg.timeout_ms * 4 + 10000);
    redisContext *sc = NULL, *rc = NULL;
    long backoff = 0;
    char err[256];
    while (!atomic_load(&b->stopping)) {
        watchdog_expect(dog, b->cfg.timeout_ms * 4 + 10000);
        if (!sc) {
            sc = connect_redis(b, err, sizeof err);
            rc = sc ? connect_redis(b, err, sizeof err) : NULL;
            if (!sc || !rc || !psubscribe(b, sc)) {
                if (sc && rc) snprintf(err, sizeof err, "PSUBSCRIBE failed");
                log_warn(COMPONENT, "subscriber: %s", err);
                close_pair(&sc, &rc);
                backoff = next_backoff(backoff);
                nap(b, backoff);
                continue;
            }
            /* Subscribed first, then caught up: nothing published in between is missed (a
             * duplicate is dropped by its offset) — unless Redis's history changed, when offsets
             * cannot be trusted. */
            if (history_changed(b, rc))
                resync_after_history_change(b, rc);
            else
                catch_up_all(b, rc);
            if (b->subscribed_once)
                catch_up_untracked(b, rc, b->disconnected_ms - UNTRACKED_CATCH_UP_MARGIN_MS);
            b->subscribed_once = true;
            if (backoff)
                log_info(COMPONENT, "subscriber connected to %s:%d again", b->ep.host, b->ep.port);
            backoff = 0;
            atomic_store(&b->sub_up, true);
            metric_gauge_set(b->m_sub_up, 1);
        }
        sweep_idle_rooms(b);
        if (!pump(b, sc, rc)) {
            b->disconnected_ms = time_wall_ms();
            log_warn(COMPONENT, "subscriber: Redis %s:%d failed (%s); reconnecting", b->ep.host,
                     b->ep.port, sc->err ? sc->errstr : "closed");
            close_pair(&sc, &rc);
            atomic_store(&b->sub_up, false);
            metric_gauge_set(b->m_sub_up, 0);
        }
    }
    close_pair(&sc, &rc);
    atomic_store(&b->sub_up, false);
    watchdog_unregister(dog);
    return NULL;
}

/* ---- life cycle ---- */

static void init_metrics(bus *b)
{
    b->m_published = metrics_counter("chatflow_bus_published_total",
                                     "Events this node published on the cluster bus.", NULL);
    b->m_publish_errors = metrics_counter("chatflow_bus_publish_errors_total",
                                          "Bus publishes that failed (Redis down or refusing); "
                                          "the event is retried.",
                                          NULL);
    b->m_dropped = metrics_counter("chatflow_bus_publish_dropped_total",
                                   "Events never published: the outbox was full, or the node "
                                   "stopped first (their rooms are announced lost).",
                                   NULL);
    const char *help = "Bus events received, by what became of them.";
    b->m_delivered = metrics_counter("chatflow_bus_received_total", help, "result=\"delivered\"");
    b->m_own = metrics_counter("chatflow_bus_received_total", help, "result=\"own\"");
    b->m_duplicate = metrics_counter("chatflow_bus_received_total", help, "result=\"duplicate\"");
    help = "Gaps in a room's bus offsets, by how they were closed.";
    b->m_gap_stream = metrics_counter("chatflow_bus_gaps_total", help, "recovered=\"stream\"");
    b->m_gap_lost = metrics_counter("chatflow_bus_gaps_total", help, "recovered=\"lost\"");
    b->m_outbox = metrics_gauge("chatflow_bus_outbox", "Events waiting to be published.", NULL);
    help = "Member events (READ) on the cluster bus, by what happened.";
    b->m_relayed =
        metrics_counter("chatflow_bus_member_events_total", help, "result=\"published\"");
    b->m_relay_dropped =
        metrics_counter("chatflow_bus_member_events_total", help, "result=\"dropped\"");
    b->m_relay_received =
        metrics_counter("chatflow_bus_member_events_total", help, "result=\"received\"");
    help = "1 when the bus connection is up.";
    b->m_pub_up = metrics_gauge("chatflow_bus_connected", help, "conn=\"publish\"");
    b->m_sub_up = metrics_gauge("chatflow_bus_connected", help, "conn=\"subscribe\"");
    b->m_rooms =
        metrics_gauge("chatflow_bus_rooms", "Rooms whose bus offsets this node tracks.", NULL);
}

bus *bus_start(const bus_config *cfg, char *err, size_t err_len)
{
    bus *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_len, "bus: out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    snprintf(b->prefix, sizeof b->prefix, "%s", cfg->prefix);
    snprintf(b->node_id, sizeof b->node_id, "%s", cfg->node_id);
    pthread_mutex_init(&b->lost_mu, NULL);
    pthread_mutex_init(&b->push_mu, NULL);
    pthread_mutex_init(&b->done_mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->done_cv, &attr);
    pthread_condattr_destroy(&attr);
    init_metrics(b);
    if (!redis_endpoint_parse(&b->ep, cfg->url, cfg->timeout_ms, err, err_len)) goto fail;
    b->lost = calloc(LOST_ROOMS_MAX, sizeof *b->lost);
    b->outbox = workqueue_new(cfg->outbox, NULL, NULL);
    if (!b->lost || !b->outbox) {
        snprintf(err, err_len, "bus: out of memory");
        goto fail;
    }
    /* A node that cannot reach the bus at start would serve a split audience: refuse. */
    char why[256];
    redisContext *probe = connect_redis(b, why, sizeof why);
    redisReply *pong = probe ? redisCommand(probe, "PING") : NULL;
    bool up = pong && pong->type == REDIS_REPLY_STATUS;
    freeReplyObject(pong);
    if (probe) redisFree(probe);
    if (!up) {
        snprintf(err, err_len, "CHATFLOW_REDIS_URL: %s", probe ? "no answer to PING" : why);
        goto fail;
    }
    if (pthread_create(&b->pub_thread, NULL, publisher_main, b) != 0) {
        snprintf(err, err_len, "bus: cannot start the publisher thread");
        goto fail;
    }
    b->pub_started = true;
    if (pthread_create(&b->sub_thread, NULL, subscriber_main, b) != 0) {
        snprintf(err, err_len, "bus: cannot start the subscriber thread");
        bus_stop(b, time_mono_ns() + 5000000000ull);
        bus_free(b);
        return NULL;
    }
    b->sub_started = true;
    log_info(COMPONENT, "cluster bus on redis://%s:%d/%d (prefix %s, node %s)", b->ep.host,
             b->ep.port, b->ep.db, b->prefix, b->node_id);
    return b;
fail:
    bus_free(b);
    return NULL;
}

bool bus_check(void *ctx, char *detail, size_t detail_len)
{
    bus *b = ctx;
    bool pub = atomic_load(&b->pub_up), sub = atomic_load(&b->sub_up);
    snprintf(detail, detail_len, "redis %s:%d: publish %s, subscribe %s, %zu events waiting",
             b->ep.host, b->ep.port, pub ? "up" : "DOWN", sub ? "up" : "DOWN",
             workqueue_length(b->outbox));
    return pub && sub;
}

bool bus_stop(bus *b, uint64_t deadline_ns)
{
    if (!b) return true;
    atomic_store(&b->stop_deadline_ns, deadline_ns);
    atomic_store(&b->stopping, true);
    /* The threads look at the flag every TURN_MS and a Redis call lasts timeout_ms at most. */
    uint64_t join_by_ns = deadline_ns + (uint64_t)(b->cfg.timeout_ms + TURN_MS) * 1000000ull;
    if (b->pub_started && time_join_thread_by(b->pub_thread, join_by_ns)) b->pub_started = false;
    if (b->sub_started && time_join_thread_by(b->sub_thread, join_by_ns)) b->sub_started = false;
    return !b->pub_started && !b->sub_started;
}

void bus_free(bus *b)
{
    if (!b || b->pub_started || b->sub_started) return; /* a thread may still use it: leak */
    room_track *t, *tmp;
    HASH_ITER(hh, b->rooms, t, tmp)
    {
        HASH_DEL(b->rooms, t);
        free(t);
    }
    if (b->outbox) workqueue_free(b->outbox);
    free(b->lost);
    pthread_mutex_destroy(&b->lost_mu);
    pthread_mutex_destroy(&b->push_mu);
    pthread_mutex_destroy(&b->done_mu);
    pthread_cond_destroy(&b->done_cv);
    free(b);
}
