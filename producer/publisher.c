/*
 * publisher — per-shard batching threads in front of SQS (contract in publisher.h).
 *
 * Each thread loops: wait for new requests (or the next linger/backoff expiry), append them to
 * their shard's list, then give each of its shards a turn: expire what can no longer make its
 * deadline, and send the head of the list when a batch is due. Only the owning thread touches a
 * shard's state; the only shared things are the input queues, the results queue, the breaker and
 * the per-shard ready flags. A batch may carry several rooms of its shard (SQS keeps each
 * MessageGroupId's order within the queue), and one batch per shard in flight keeps each room's.
 *
 * Liveness: each thread beats its watchdog at the top of every turn (its longest wait there is
 * the input queue's, at most IDLE_WAIT_MS) and before every SQS request (bounded by the request
 * timeout), so an SQS outage never looks like a stuck thread, while a thread that stops turning
 * does.
 *
 * Stopping: publisher_drain_by() moves every message's send-by time forward so the thread has
 * answered everything by then; shards whose queue URL is unknown stop resolving and answer at
 * once. publisher_stop() then waits for the threads until its deadline and frees nothing if one
 * did not end (it may still be inside a request, using its client, the breaker and the results
 * queue).
 */
#include "publisher.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "queue_epoch.h"
#include "redact.h"
#include "sqs.h"
#include "timeutil.h"
#include "watchdog.h"

#define BATCH_MAX_BYTES (256 * 1024)
#define IDLE_WAIT_MS 200
#define RESOLVE_BACKOFF_MAX_MS 5000
#define RETRY_BASE_MS 50
#define RETRY_MAX_MS 1000
#define MS ((uint64_t)1000000)
/* Added to every announced wait: the CPU work of a turn (answers, JSON) on a loaded machine. */
#define TURN_SLACK_MS 2000

/* One queue shard: the pending messages of every room that maps to it, oldest first. */
typedef struct {
    int shard;
    char queue_name[160];
    char *queue_url;   /* NULL until resolved */
    queue_epoch epoch; /* positions of the acks (queue_epoch.h) */
    uint64_t next_resolve_ns;
    int resolve_failures;
    publish_request *head, *tail;
    size_t count;
    size_t bytes;
} shard_state;

typedef struct {
    publisher *owner;
    int index;
    pthread_t thread;
    bool started;
    workqueue *in;
    sqs_client *sqs;
    unsigned int seed;
    bool results_pending; /* delivered since the last wake */
    watchdog_loop *dog;
    bool exited; /* publisher_main returned (under owner->exit_lock) */
} publisher_thread;

struct publisher {
    publisher_config cfg;
    char queue_prefix[64];
    size_t n_shards;
    shard_state *shards; /* index shard - 1; each owned by one thread */
    _Atomic bool *shard_ready;
    atomic_size_t shards_ready;
    atomic_bool stopping;
    _Atomic uint64_t drain_by_ns; /* 0, or: answer everything by then (shutdown) */
    pthread_mutex_t exit_lock;
    pthread_cond_t exit_cond; /* signalled as each thread ends (CLOCK_MONOTONIC) */
    int n_threads;
    publisher_thread *threads;
    metric_histogram *batch_size;
    metric_counter *batches;
    metric_counter *retries;
    metric_histogram *queue_wait;
};

char *publisher_body_json(const chat_message *m)
{
    char *body = queue_message_to_json(m);
    /* SQS's message character set stops at U+FFFD: U+FFFE and U+FFFF (EF BF BE / EF BF BF) are
     * refused raw too, though they are valid UTF-8 and valid in JSON. */
    bool escape = false;
    for (const unsigned char *c = (const unsigned char *)m->message; *c && !escape; c++)
        escape = *c >= 0xF0 || (c[0] == 0xEF && c[1] == 0xBF && (c[2] == 0xBE || c[2] == 0xBF));
    if (!body || !escape) return body;
    /* Rare (emoji, noncharacters): re-encode with every non-ASCII character escaped. */
    json_t *doc = json_loads(body, 0, NULL);
    char *escaped = doc ? json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(doc);
    if (!escaped) return body;
    free(body);
    return escaped;
}

void publish_request_free(publish_request *r)
{
    if (!r) return;
    free(r->body);
    free(r);
}

void publish_result_free(publish_result *r)
{
    if (!r) return;
    answer_free(r->frame);
    free(r);
}

/* ---- answers ------------------------------------------------------------------------------ */

static void deliver(publisher_thread *t, publish_result *res)
{
    publisher *p = t->owner;
    t->results_pending = true;
    if (workqueue_push(p->cfg.results, res)) return;
    /* The results queue holds more than the in-flight cap (which the WebSocket thread enforces
     * before counting a frame), so this should not happen. If it does, only the service thread
     * can make room, and it may be asleep in poll(): wake it before every retry — waiting
     * without waking is a deadlock. A result is never dropped (every frame gets one answer). */
    log_warn("publisher", "results queue full; waking the WebSocket thread until it drains");
    do {
        p->cfg.wake(p->cfg.wake_ctx);
        watchdog_expect(t->dog, TURN_SLACK_MS);
        time_sleep_ms(1);
    } while (!workqueue_push(p->cfg.results, res));
}

static void answer_request(publisher_thread *t, publish_request *r, chat_status status,
                           const char *why, const char *sequence_number)
{
    publish_result *res = calloc(1, sizeof *res);
    char *text = NULL;
    if (r->silent) {
        /* nothing to say to the client: the result only settles the in-flight count */
    } else if (status == CHAT_OK) {
        chat_message m;
        memset(&m, 0, sizeof m);
        snprintf(m.message_id, sizeof m.message_id, "%s", r->message_id);
        snprintf(m.client_message_id, sizeof m.client_message_id, "%s", r->client_message_id);
        snprintf(m.room_id, sizeof m.room_id, "%s", r->room);
        char now[ISO8601_BUF];
        time_format_iso8601(time_wall_ms(), now);
        text = ack_to_json(&m, now, sequence_number);
    } else {
        text = error_to_json(status, why, r->client_message_id);
    }
    if (res) res->frame = text ? answer_new(text, strlen(text)) : NULL;
    free(text);
    if (!res || (!res->frame && !r->silent)) {
        /* Out of memory: nothing sensible can be sent; the WebSocket thread still needs the
         * result to release the frame's in-flight slot, so hand back a frameless one if we can. */
        log_error("publisher", "out of memory answering message %s", r->message_id);
        if (!res) {
            publish_request_free(r);
            return;
        }
    }
    res->slot = r->slot;
    res->generation = r->generation;
    res->status = status;
    res->received_ns = r->received_ns;
    res->silent = r->silent;
    publish_request_free(r);
    deliver(t, res);
}

/* ---- shard lists -------------------------------------------------------------------------- */

static void shard_append(shard_state *rs, publish_request *r)
{
    r->next = NULL;
    if (rs->tail)
        rs->tail->next = r;
    else
        rs->head = r;
    rs->tail = r;
    rs->count++;
    rs->bytes += r->body_len;
}

static publish_request *shard_pop(shard_state *rs)
{
    publish_request *r = rs->head;
    if (!r) return NULL;
    rs->head = r->next;
    if (!rs->head) rs->tail = NULL;
    rs->count--;
    rs->bytes -= r->body_len;
    r->next = NULL;
    return r;
}

/* Puts back, in their original order, the entries that must be retried: at the front, ahead of
 * anything newer, so the order of each of their rooms holds. */
static void shard_push_front(shard_state *rs, publish_request **items, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        publish_request *r = items[i];
        r->next = rs->head;
        rs->head = r;
        if (!rs->tail) rs->tail = r;
        rs->count++;
        rs->bytes += r->body_len;
    }
}

static void answer_all(publisher_thread *t, shard_state *rs, chat_status status, const char *why)
{
    publish_request *r;
    while ((r = shard_pop(rs))) answer_request(t, r, status, why, NULL);
}

/* ---- the thread --------------------------------------------------------------------------- */

static uint64_t backoff_ns(publisher_thread *t, int attempts)
{
    uint64_t cap = RETRY_BASE_MS;
    for (int i = 1; i < attempts && cap < RETRY_MAX_MS; i++) cap *= 2;
    if (cap > RETRY_MAX_MS) cap = RETRY_MAX_MS;
    /* full jitter, at least 1 ms so a retry never spins */
    return (1 + (uint64_t)rand_r(&t->seed) % cap) * MS;
}

/* The last moment a request carrying r may start: the whole request must fit before r's
 * deadline, and while draining before the drain's end too. */
static uint64_t send_by_ns(const publisher *p, const publish_request *r)
{
    uint64_t by = r->received_ns + (uint64_t)(p->cfg.deadline_ms - p->cfg.request_timeout_ms) * MS;
    uint64_t drain = atomic_load(&((publisher *)p)->drain_by_ns);
    if (drain) {
        uint64_t req = (uint64_t)p->cfg.request_timeout_ms * MS;
        uint64_t drain_by = drain > req ? drain - req : 0;
        if (drain_by < by) by = drain_by;
    }
    return by;
}

static bool draining(const publisher *p)
{
    return atomic_load(&((publisher *)p)->drain_by_ns) != 0;
}

/* Answers the head messages that can no longer be sent in time. */
static void expire_heads(publisher_thread *t, shard_state *rs, uint64_t now)
{
    publisher *p = t->owner;
    while (rs->head && now > send_by_ns(p, rs->head)) {
        log_debug("publisher", "%s: message %s missed its deadline", rs->queue_name,
                  rs->head->message_id);
        const char *why =
            draining(p)
                ? "server is shutting down and SQS did not accept the message in time; resend it"
                : "SQS did not accept the message before the deadline";
        answer_request(t, shard_pop(rs), CHAT_QUEUE_ERROR, why, NULL);
    }
}

/* "My next beat comes within ms (plus slack)": before a wait or an SQS request. */
static void beat(publisher_thread *t, long ms) { watchdog_expect(t->dog, ms + TURN_SLACK_MS); }

static void resolve_shard(publisher_thread *t, shard_state *rs, uint64_t now)
{
    publisher *p = t->owner;
    if (rs->queue_url || now < rs->next_resolve_ns) return;
    sqs_error e;
    memset(&e, 0, sizeof e);
    char *url = NULL;
    beat(t, p->cfg.request_timeout_ms);
    sqs_status st = sqs_get_queue_url(t->sqs, rs->queue_name, &url, &e);
    if (st == SQS_OK && url) {
        rs->queue_url = url;
        rs->resolve_failures = 0;
        atomic_store(&p->shard_ready[rs->shard - 1], true);
        atomic_fetch_add(&p->shards_ready, 1);
        log_debug("publisher", "shard %d -> %s", rs->shard, url);
        return;
    }
    free(url);
    rs->resolve_failures++;
    uint64_t wait = (uint64_t)100 << (rs->resolve_failures < 6 ? rs->resolve_failures : 6);
    if (wait > RESOLVE_BACKOFF_MAX_MS) wait = RESOLVE_BACKOFF_MAX_MS;
    rs->next_resolve_ns = now + wait * MS;
    redact_text(e.message, sizeof e.message);
    if (rs->resolve_failures == 1 || rs->resolve_failures % 10 == 0)
        log_warn("publisher", "GetQueueUrl %s failed (%s, HTTP %ld %s: %s); retrying",
                 rs->queue_name, sqs_status_name(st), e.http_status, e.type, e.message);
}

static void forget_url(publisher *p, shard_state *rs)
{
    if (!rs->queue_url) return;
    free(rs->queue_url);
    rs->queue_url = NULL;
    rs->next_resolve_ns = 0;
    atomic_store(&p->shard_ready[rs->shard - 1], false);
    atomic_fetch_sub(&p->shards_ready, 1);
}

static bool batch_due(const publisher *p, const shard_state *rs, uint64_t now, bool flushing)
{
    if (!rs->head || rs->head->not_before_ns > now) return false;
    return flushing || rs->count >= SQS_MAX_BATCH || rs->bytes >= BATCH_MAX_BYTES ||
           rs->head->attempts > 0 || now - rs->head->enqueued_ns >= (uint64_t)p->cfg.linger_ms * MS;
}

static void settle_entries(publisher_thread *t, shard_state *rs, publish_request **batch,
                           const sqs_entry_result *results, size_t n, uint64_t after);

/* Hands the results delivered so far to the WebSocket thread: one wake per request or shard turn,
 * not per result (each wake costs that thread a poll over every socket). */
static void wake_if_pending(publisher_thread *t)
{
    if (!t->results_pending) return;
    t->results_pending = false;
    t->owner->cfg.wake(t->owner->cfg.wake_ctx);
}

static void send_batch(publisher_thread *t, shard_state *rs, uint64_t now, bool probe)
{
    publisher *p = t->owner;
    publish_request *batch[SQS_MAX_BATCH];
    sqs_send_entry entries[SQS_MAX_BATCH];
    sqs_entry_result results[SQS_MAX_BATCH];
    char ids[SQS_MAX_BATCH][24];
    size_t n = 0, bytes = 0;
    while (n < SQS_MAX_BATCH && rs->head &&
           (n == 0 || bytes + rs->head->body_len <= BATCH_MAX_BYTES)) {
        publish_request *r = shard_pop(rs);
        bytes += r->body_len;
        if (r->attempts == 0)
            metric_histogram_observe(p->queue_wait, (double)(now - r->enqueued_ns) / 1e9);
        snprintf(ids[n], sizeof ids[n], "%zu", n);
        entries[n] = (sqs_send_entry){
            .id = ids[n], .body = r->body, .group_id = r->room, .dedup_id = r->message_id};
        batch[n++] = r;
    }
    memset(results, 0, sizeof results);
    sqs_error e;
    memset(&e, 0, sizeof e);
    beat(t, p->cfg.request_timeout_ms);
    sqs_status st = sqs_send_message_batch(t->sqs, rs->queue_url, entries, n, results, &e);
    uint64_t after = time_mono_ns();
    redact_text(e.message, sizeof e.message);
    metric_counter_inc(p->batches);
    metric_histogram_observe(p->batch_size, (double)n);

    if (st != SQS_OK) {
        queue_epoch_mark_stale(&rs->epoch); /* the queue may come back made again */
        bool outage = st == SQS_NETWORK_ERROR || st == SQS_SERVER_ERROR || st == SQS_AUTH_ERROR;
        if (outage || probe) circuit_record(p->cfg.breaker, !outage, probe, after);
        if (sqs_status_retriable(st)) {
            uint64_t wait = backoff_ns(t, batch[0]->attempts + 1);
            for (size_t i = 0; i < n; i++) {
                batch[i]->attempts++;
                batch[i]->not_before_ns = after + wait;
            }
            metric_counter_add(p->retries, n);
            shard_push_front(rs, batch, n);
            log_debug("publisher", "SendMessageBatch %s: %s (%s); %zu entries will be retried",
                      rs->queue_name, sqs_status_name(st), e.message, n);
            return;
        }
        log_warn("publisher", "SendMessageBatch %s failed: %s (HTTP %ld %s: %s)", rs->queue_name,
                 sqs_status_name(st), e.http_status, e.type, e.message);
        if (st == SQS_QUEUE_MISSING) forget_url(p, rs);
        char why[256];
        snprintf(why, sizeof why, "SQS refused the message: %s %s", sqs_status_name(st), e.type);
        for (size_t i = 0; i < n; i++) answer_request(t, batch[i], CHAT_QUEUE_ERROR, why, NULL);
        return;
    }

    circuit_record(p->cfg.breaker, true, probe, after);
    settle_entries(t, rs, batch, results, n, after);
}

/* Whether an entry after i of the same room (message group) was accepted. */
static bool later_accepted_in_room(publish_request **batch, const sqs_entry_result *results,
                                   size_t i, size_t n)
{
    for (size_t j = i + 1; j < n; j++)
        if (results[j].ok && strcmp(batch[j]->room, batch[i]->room) == 0) return true;
    return false;
}

/* The position an ack carries (queue_epoch.h): the same one the consumer will give the message.
 * NULL when the queue's epoch cannot be read now: the ack then carries none (the message is in
 * SQS all the same; its events will). */
static const char *ack_position(publisher_thread *t, shard_state *rs, const char *seq,
                                char position[SEQNUM_BUF])
{
    char err[700];
    beat(t, t->owner->cfg.request_timeout_ms);
    if (queue_epoch_position(&rs->epoch, t->sqs, rs->queue_url, seq, QUEUE_SEQ_SENT, position, err,
                             sizeof err))
        return position;
    log_warn("publisher", "%s: ack without a position: %s", rs->queue_name, err);
    return NULL;
}

/* Per-entry outcome of a SendMessageBatch that succeeded as a request. A batch carries the
 * entries of one or more rooms of the shard, each room's in its order, and SQS settles each
 * entry on its own: a later entry of a room can be accepted although an earlier one failed, and
 * it is then already in the queue ahead of the failed one. Retrying the failed entry would put
 * it behind a message the client sent after it, so an entry that failed before an accepted later
 * entry of its room is answered QUEUE_ERROR instead (the client may resend it: with the same
 * clientMessageId it is queued at most once). Other failed entries are retried, in their order,
 * ahead of newer messages: nothing of their room is in the queue past them, so the room's order
 * holds. Acked sequence numbers of a room therefore always increase in send order. */
static void settle_entries(publisher_thread *t, shard_state *rs, publish_request **batch,
                           const sqs_entry_result *results, size_t n, uint64_t after)
{
    publisher *p = t->owner;
    publish_request *again[SQS_MAX_BATCH];
    size_t n_again = 0;
    uint64_t wait = 0;
    for (size_t i = 0; i < n; i++) {
        if (!results[i].ok && !results[i].sender_fault &&
            later_accepted_in_room(batch, results, i, n)) {
            log_warn("publisher",
                     "SendMessageBatch %s: entry failed (%s) after a later one was queued; "
                     "answering it rather than reordering the room",
                     rs->queue_name, results[i].code);
            char why[200];
            snprintf(why, sizeof why,
                     "SQS failed the message (%s) but queued a later one of this room; "
                     "resend it (same clientMessageId: queued at most once)",
                     results[i].code);
            answer_request(t, batch[i], CHAT_QUEUE_ERROR, why, NULL);
        } else if (results[i].ok) {
            char position[SEQNUM_BUF];
            answer_request(t, batch[i], CHAT_OK, NULL,
                           batch[i]->silent
                               ? NULL
                               : ack_position(t, rs, results[i].sequence_number, position));
        } else if (results[i].sender_fault) {
            log_warn("publisher", "SendMessageBatch %s: entry refused: %s %s", rs->queue_name,
                     results[i].code, results[i].message);
            char why[400];
            snprintf(why, sizeof why, "SQS refused the message: %s %s", results[i].code,
                     results[i].message);
            answer_request(t, batch[i], CHAT_QUEUE_ERROR, why, NULL);
        } else {
            log_debug("publisher", "SendMessageBatch %s: entry failed: %s %s (will retry)",
                      rs->queue_name, results[i].code, results[i].message);
            if (!wait) wait = backoff_ns(t, batch[i]->attempts + 1);
            batch[i]->attempts++;
            batch[i]->not_before_ns = after + wait;
            again[n_again++] = batch[i];
        }
    }
    if (n_again) {
        metric_counter_add(p->retries, n_again);
        shard_push_front(rs, again, n_again);
    }
}

/* One turn for a shard; returns when it next needs attention (0 = nothing scheduled). */
static uint64_t service_shard(publisher_thread *t, shard_state *rs, uint64_t now, bool flushing)
{
    publisher *p = t->owner;
    if (!rs->queue_url) {
        /* Draining: nobody will submit to this shard any more, so there is nothing to resolve
         * for (and a retry loop here would hold the shutdown up). */
        if (!draining(p)) resolve_shard(t, rs, now);
        if (!rs->queue_url) {
            /* The WebSocket thread only submits to ready shards; anything here raced a reset. */
            answer_all(t, rs, CHAT_QUEUE_UNAVAILABLE, "the room's queue is not reachable yet");
            return draining(p) ? 0 : rs->next_resolve_ns;
        }
    }
    expire_heads(t, rs, now);
    while (batch_due(p, rs, now, flushing)) {
        bool probe = false;
        if (!circuit_acquire(p->cfg.breaker, now, &probe)) {
            if (circuit_state(p->cfg.breaker) == CIRCUIT_OPEN)
                answer_all(t, rs, CHAT_QUEUE_UNAVAILABLE,
                           "SQS is unavailable (circuit breaker open)");
            else
                return now + 5 * MS; /* another shard's probe is out: look again shortly */
            break;
        }
        send_batch(t, rs, now, probe);
        wake_if_pending(t);
        now = time_mono_ns();
        expire_heads(t, rs, now);
        if (rs->count < SQS_MAX_BATCH && !flushing && rs->head && rs->head->attempts == 0) break;
    }
    if (!rs->head) return 0;
    uint64_t next = rs->head->not_before_ns;
    uint64_t linger_end = rs->head->enqueued_ns + (uint64_t)p->cfg.linger_ms * MS;
    if (rs->head->attempts == 0 && linger_end > next) next = linger_end;
    uint64_t expiry = send_by_ns(p, rs->head) + 1;
    return next < expiry ? next : expiry;
}

/* With the breaker open and no traffic, nothing would ever probe SQS and readiness would stay
 * 503 (so a load balancer would never send traffic to probe with). Thread 0 therefore probes on
 * its own, with GetQueueUrl, once the open period has passed. */
static void probe_if_open(publisher_thread *t, uint64_t now)
{
    publisher *p = t->owner;
    if (t->index != 0 || draining(p) || circuit_state(p->cfg.breaker) == CIRCUIT_CLOSED) return;
    bool probe = false;
    if (!circuit_acquire(p->cfg.breaker, now, &probe)) return;
    if (!probe) { /* closed meanwhile: nothing to prove */
        return;
    }
    char *url = NULL;
    sqs_error e;
    memset(&e, 0, sizeof e);
    beat(t, p->cfg.request_timeout_ms);
    sqs_status st = sqs_get_queue_url(t->sqs, p->shards[0].queue_name, &url, &e);
    free(url);
    bool outage = st == SQS_NETWORK_ERROR || st == SQS_SERVER_ERROR || st == SQS_AUTH_ERROR;
    circuit_record(p->cfg.breaker, !outage, true, time_mono_ns());
    log_debug("publisher", "breaker probe GetQueueUrl: %s", sqs_status_name(st));
}

static void *publisher_main(void *arg)
{
    publisher_thread *t = arg;
    publisher *p = t->owner;
    char name[16];
    snprintf(name, sizeof name, "cf-pub-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    void *items[256];
    const size_t max_items = sizeof items / sizeof items[0];
    uint64_t next_due = 0; /* earliest time one of this thread's shards needs a turn */
    bool stall = p->cfg.failpoint_stall && t->index == 0;
    for (;;) {
        beat(t, IDLE_WAIT_MS);
        if (stall) {
            /* test-only failpoint (CHATFLOW_TEST_FAILPOINT=stall-publisher): a wedged loop, for
             * the liveness test. Never returns; the process exits without joining this thread. */
            log_warn("publisher", "failpoint stall-publisher: thread %d stops turning", t->index);
            failpoint_stall_forever();
        }
        size_t n = workqueue_pop_many(t->in, items, max_items);
        bool stopping = atomic_load(&p->stopping);
        bool flushing = stopping || draining(p);
        if (n == 0) {
            uint64_t now = time_mono_ns();
            if (stopping && next_due == 0) break; /* input closed, nothing pending */
            uint64_t wake = next_due ? next_due : now + (uint64_t)IDLE_WAIT_MS * MS;
            if (wake > now) {
                long wait_ms = (long)((wake - now + MS - 1) / MS);
                if (wait_ms > IDLE_WAIT_MS) wait_ms = IDLE_WAIT_MS;
                void *item = stopping ? NULL : workqueue_pop_wait(t->in, wait_ms);
                if (item) {
                    items[0] = item;
                    n = 1 + workqueue_pop_many(t->in, items + 1, max_items - 1);
                } else if (stopping) {
                    time_sleep_ms(wait_ms); /* closed queue: no wake-ups left */
                }
            }
        }
        uint64_t now = time_mono_ns();
        for (size_t i = 0; i < n; i++) {
            publish_request *r = items[i];
            r->enqueued_ns = now;
            shard_append(&p->shards[r->shard - 1], r);
        }
        next_due = 0;
        probe_if_open(t, now);
        if (t->index == 0 && circuit_state(p->cfg.breaker) != CIRCUIT_CLOSED && !flushing)
            next_due = time_mono_ns() + 50 * MS;
        for (size_t i = (size_t)t->index; i < p->n_shards; i += (size_t)p->n_threads) {
            shard_state *rs = &p->shards[i];
            uint64_t due = service_shard(t, rs, time_mono_ns(), flushing);
            wake_if_pending(t);
            if (!rs->queue_url && !flushing && (due == 0 || rs->next_resolve_ns < due))
                due = rs->next_resolve_ns;
            if (due && (next_due == 0 || due < next_due)) next_due = due;
        }
    }
    watchdog_unregister(t->dog);
    t->dog = NULL;
    pthread_mutex_lock(&p->exit_lock);
    t->exited = true;
    pthread_cond_broadcast(&p->exit_cond);
    pthread_mutex_unlock(&p->exit_lock);
    return NULL;
}

/* Asks the threads to finish and waits for them until deadline_ns (0: without limit). True when
 * every started thread ended and was joined; a thread still running is left alone (detached). */
static bool stop_threads(publisher *p, uint64_t deadline_ns)
{
    atomic_store(&p->stopping, true);
    for (int i = 0; i < p->n_threads; i++)
        if (p->threads[i].in) workqueue_close(p->threads[i].in);
    bool all = true;
    pthread_mutex_lock(&p->exit_lock);
    for (int i = 0; i < p->n_threads; i++) {
        publisher_thread *t = &p->threads[i];
        while (t->started && !t->exited) {
            if (!deadline_ns) {
                pthread_cond_wait(&p->exit_cond, &p->exit_lock);
                continue;
            }
            struct timespec until = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                                     .tv_nsec = (long)(deadline_ns % 1000000000u)};
            if (pthread_cond_timedwait(&p->exit_cond, &p->exit_lock, &until) != 0 && !t->exited)
                break;
        }
        if (t->started && !t->exited) all = false;
    }
    pthread_mutex_unlock(&p->exit_lock);
    for (int i = 0; i < p->n_threads; i++) {
        publisher_thread *t = &p->threads[i];
        if (!t->started) continue;
        pthread_mutex_lock(&p->exit_lock);
        bool exited = t->exited;
        pthread_mutex_unlock(&p->exit_lock);
        if (exited) {
            pthread_join(t->thread, NULL);
        } else {
            log_error("publisher", "thread %d did not end by the stop deadline; leaving it", i);
            pthread_detach(t->thread);
        }
        t->started = false;
    }
    return all;
}

static void free_all(publisher *p)
{
    for (int i = 0; i < p->n_threads; i++) {
        publisher_thread *t = &p->threads[i];
        if (t->in) {
            void *item;
            while (workqueue_pop_many(t->in, &item, 1) == 1) publish_request_free(item);
            workqueue_free(t->in);
        }
        sqs_client_free(t->sqs);
    }
    for (size_t i = 0; i < p->n_shards; i++) {
        publish_request *r;
        while ((r = shard_pop(&p->shards[i]))) publish_request_free(r);
        free(p->shards[i].queue_url);
    }
    free(p->threads);
    free(p->shards);
    free((void *)p->shard_ready);
    pthread_cond_destroy(&p->exit_cond);
    pthread_mutex_destroy(&p->exit_lock);
    free(p);
}

publisher *publisher_start(const publisher_config *cfg, char *err, size_t err_len)
{
    if (cfg->shards < 1 || cfg->shards > ROOM_SHARDS_MAX || cfg->threads < 0 || !cfg->results ||
        !cfg->breaker || !cfg->wake) {
        snprintf(err, err_len, "publisher: bad configuration");
        return NULL;
    }
    publisher *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    pthread_mutex_init(&p->exit_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are time_mono_ns() */
    pthread_cond_init(&p->exit_cond, &ca);
    pthread_condattr_destroy(&ca);
    p->cfg = *cfg;
    snprintf(p->queue_prefix, sizeof p->queue_prefix, "%s", cfg->queue_prefix);
    p->cfg.queue_prefix = p->queue_prefix;
    p->n_shards = (size_t)cfg->shards;
    int wanted = cfg->threads > 0 ? cfg->threads : PUBLISHER_AUTO_THREADS_MAX;
    p->n_threads = wanted < cfg->shards ? wanted : cfg->shards;
    p->shards = calloc(p->n_shards, sizeof *p->shards);
    p->shard_ready = calloc(p->n_shards, sizeof *p->shard_ready);
    p->threads = calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->shards || !p->shard_ready || !p->threads) goto oom;
    for (size_t i = 0; i < p->n_shards; i++) {
        shard_state *rs = &p->shards[i];
        rs->shard = (int)i + 1;
        snprintf(rs->queue_name, sizeof rs->queue_name, "%s%d.fifo", p->queue_prefix, rs->shard);
    }
    p->batch_size =
        metrics_histogram("chatflow_publish_batch_size", "Messages per SendMessageBatch.", NULL,
                          METRICS_SIZE_BUCKETS, METRICS_SIZE_BUCKETS_N);
    p->batches =
        metrics_counter("chatflow_publish_batches_total", "SendMessageBatch requests sent.", NULL);
    p->retries = metrics_counter("chatflow_publish_retries_total",
                                 "Batch entries sent again after a failure.", NULL);
    p->queue_wait =
        metrics_histogram("chatflow_publish_queue_wait_seconds",
                          "Time a message waits in the publisher before its first send.", NULL,
                          METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);

    sqs_config sc = {
        .region = cfg->region,
        .endpoint = cfg->endpoint && cfg->endpoint[0] ? cfg->endpoint : NULL,
        .credentials = cfg->credentials,
        .connect_timeout_ms = cfg->connect_timeout_ms < cfg->request_timeout_ms
                                  ? cfg->connect_timeout_ms
                                  : cfg->request_timeout_ms,
        .request_timeout_ms = cfg->request_timeout_ms,
        .max_attempts = 1, /* retries are ours: per entry, bounded by the deadline */
    };
    for (int i = 0; i < p->n_threads; i++) {
        publisher_thread *t = &p->threads[i];
        t->owner = p;
        t->index = i;
        t->seed = (unsigned int)(time_mono_ns() ^ (uint64_t)(i * 7919));
        t->in = workqueue_new(cfg->queue_capacity ? cfg->queue_capacity : 65536, NULL, NULL);
        if (!t->in) goto oom;
        t->sqs = sqs_client_new(&sc, err, err_len);
        if (!t->sqs) {
            redact_text(err, err_len);
            goto fail;
        }
        char name[32];
        snprintf(name, sizeof name, "publisher-%d", i);
        /* the first turn resolves the thread's queue URLs: one request per shard at most */
        t->dog = watchdog_register(name, cfg->request_timeout_ms + TURN_SLACK_MS);
    }
    for (int i = 0; i < p->n_threads; i++) {
        if (pthread_create(&p->threads[i].thread, NULL, publisher_main, &p->threads[i]) != 0) {
            snprintf(err, err_len, "publisher: cannot start thread %d", i);
            goto fail;
        }
        p->threads[i].started = true;
    }
    log_info("publisher", "%d publisher threads for queue shards 1-%d", p->n_threads, cfg->shards);
    return p;
oom:
    snprintf(err, err_len, "publisher: out of memory");
fail:
    if (p) {
        if (p->threads) {
            stop_threads(p, 0);
            for (int i = 0; i < p->n_threads; i++) watchdog_unregister(p->threads[i].dog);
        }
        free_all(p);
    }
    return NULL;
}

bool publisher_submit(publisher *p, publish_request *r)
{
    if (r->shard < 1 || r->shard > p->cfg.shards) return false;
    publisher_thread *t = &p->threads[(r->shard - 1) % p->n_threads];
    return workqueue_push(t->in, r);
}

bool publisher_shard_ready(const publisher *p, int shard)
{
    if (shard < 1 || shard > p->cfg.shards) return false;
    return atomic_load(&p->shard_ready[shard - 1]);
}

size_t publisher_shards_ready(const publisher *p)
{
    return atomic_load(&((publisher *)p)->shards_ready);
}
size_t publisher_shard_count(const publisher *p) { return p->n_shards; }

void publisher_drain_by(publisher *p, uint64_t deadline_ns)
{
    if (!p || !deadline_ns) return;
    uint64_t cur = atomic_load(&p->drain_by_ns);
    while ((cur == 0 || deadline_ns < cur) &&
           !atomic_compare_exchange_weak(&p->drain_by_ns, &cur, deadline_ns)) {
    }
}

bool publisher_stop(publisher *p, uint64_t deadline_ns)
{
    if (!p) return true;
    publisher_drain_by(p, deadline_ns);
    if (!stop_threads(p, deadline_ns)) return false; /* a thread may still use all of it */
    free_all(p);
    return true;
}
