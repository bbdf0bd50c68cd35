/* poller — SQS receive -> broadcast -> batch writer -> delete, per queue shard; see poller.h. */
#include "poller.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "queue_epoch.h"
#include "room.h"
#include "spill.h"
#include "timeutil.h"
#include "uuid.h"
#include "watchdog.h"

#define COMPONENT "poller"
#define WAIT_SLICE_MS 500
#define STOP_BUS_WAIT_MS 2000
#define STOP_CUT_BEFORE_MS 2000 /* long polls still running this long before the deadline: cut */
#define IDLE_WAIT_MS 250 /* a poller holding none of its shards' leases looks again after this */
#define RETRY_MAX_BACKOFF_MS 5000
#define EPOCH_RETRY_VISIBILITY_S 2 /* a receive whose queue epoch could not be read comes back */
#define EPOCH_RETRY_WAIT_MS 1000
#define SPILL_RETRY_VISIBILITY_S                                    \
    2 /* not taken by the spill queue: back in its shard queue soon \
       */

sqs_config consumer_sqs_config(const consumer_settings *s, credentials_provider *cp)
{
    return (sqs_config){
        .region = s->common.aws_region,
        .endpoint = s->common.sqs_endpoint[0] ? s->common.sqs_endpoint : NULL,
        .credentials = cp,
        .connect_timeout_ms = (long)s->common.sqs_connect_timeout_ms,
        .request_timeout_ms = (long)s->common.sqs_request_timeout_ms,
    };
}

/* ---- pool ---- */

/* Where a received message's time goes, per message (chatflow_consumer_stage_seconds{stage}):
 * so a latency tail can be traced to the wait that holds it (docs/benchmarks.md). */
typedef struct {
    metric_histogram *queued; /* SQS SentTimestamp -> the receive that returned it */
    metric_histogram *write;  /* received -> the writer's outcome (committed, refused, withdrawn) */
    metric_histogram *bus;    /* outcome -> the cluster bus holds the receive's events */
    metric_histogram *settle; /* -> deleted (or sent to the DLQ / spill queue, then deleted) */
} poller_stage_metrics;

typedef struct poller poller;

struct poller_pool {
    poller_pool_config cfg;
    atomic_bool stopping;
    atomic_bool cut_polls; /* the stop deadline is near: long polls in progress are aborted */
    size_t n_pollers;
    poller *pollers;
    queue_epoch *epochs; /* index shard - shard_first; each touched by its shard's poller only */
    metric_counter *m_consumed, *m_poison, *m_typing;
    poller_stage_metrics stages;
};

struct poller {
    poller_pool *pool;
    int index;
    int *shards;
    size_t n_shards;
    sqs_client *sqs;
    pthread_t thread;
    bool started;
    atomic_bool finished;
    watchdog_loop *watchdog;
    uint64_t bus_ticket; /* the newest bus ticket of the receive being processed (0: none) */
};

/* What a poller keeps about one received message until it is settled. */
typedef struct {
    sqs_message *sqs;
    bool valid;
    write_row *row; /* into rows[] when valid */
    bool settled;   /* deleted, or must not be deleted */
    bool to_delete;
    bool to_spill;
} held_message;

static bool stopping(const poller *p) { return atomic_load(&p->pool->stopping); }

/* The longest one turn may legitimately take: a long poll, then the calls that settle a receive
 * (each bounded by the request timeout and the client's retries), a DLQ or spill send, and a wait
 * slice on the writer. Past it the poller is stuck, not waiting. */
static long poller_turn_budget_ms(const poller *p)
{
    const consumer_settings *s = p->pool->cfg.settings;
    return (long)(s->receive_wait_s * 1000 + 6 * s->common.sqs_request_timeout_ms + 10000);
}

static void sleep_unless_stopping(const poller *p, long ms)
{
    while (ms > 0 && !stopping(p)) {
        long step = ms > 100 ? 100 : ms;
        time_sleep_ms(step);
        ms -= step;
    }
}

static const char *queue_url(const poller *p, int shard)
{
    return p->pool->cfg.queue_urls[shard - 1];
}

static queue_epoch *epoch_of(const poller *p, int shard)
{
    return &p->pool->epochs[shard - (int)p->pool->cfg.settings->shard_first];
}

static void record(const poller *p, sqs_status s, const char *action, const sqs_error *e)
{
    sqs_health_record(p->pool->cfg.health, s, action, e);
}

/* Batch calls on the held messages whose flag is set; entries of up to 10. */
static void handle_batch(poller *p, int shard, held_message *held, size_t n, bool deleting,
                         int visibility)
{
    sqs_handle_entry entries[SQS_MAX_BATCH];
    sqs_entry_result results[SQS_MAX_BATCH];
    char ids[SQS_MAX_BATCH][24];
    size_t k = 0;
    size_t map[SQS_MAX_BATCH];
    for (size_t i = 0; i < n && k < SQS_MAX_BATCH; i++) {
        if (deleting ? !held[i].to_delete : held[i].settled) continue;
        snprintf(ids[k], sizeof(ids[k]), "m%zu", i);
        entries[k] = (sqs_handle_entry){ids[k], held[i].sqs->receipt_handle, visibility};
        map[k++] = i;
    }
    if (k == 0) return;
    sqs_error e = {0};
    const char *action = deleting ? "DeleteMessageBatch" : "ChangeMessageVisibilityBatch";
    sqs_status s =
        deleting
            ? sqs_delete_message_batch(p->sqs, queue_url(p, shard), entries, k, results, &e)
            : sqs_change_visibility_batch(p->sqs, queue_url(p, shard), entries, k, results, &e);
    record(p, s, action, &e);
    if (s != SQS_OK) {
        /* Not deleted: the messages come back after their visibility timeout and are inserted
         * again as no-ops (ON CONFLICT DO NOTHING). */
        log_warn(COMPONENT, "shard %d: %s failed: %s (%s %s)", shard, action, sqs_status_name(s),
                 e.type, e.message);
        return;
    }
    for (size_t j = 0; j < k; j++) {
        if (!results[j].ok)
            log_warn(COMPONENT, "shard %d: %s entry for %s failed: %s %s", shard, action,
                     held[map[j]].sqs->message_id, results[j].code, results[j].message);
        if (deleting) held[map[j]].settled = true;
    }
}

/* group: the message's room when its body names a valid one (DLQ order per room), else the shard
 * ("shard-7"): a body that cannot be read still keeps the order of its queue. */
static void send_to_dlq(poller *p, int shard, const char *group, held_message *h, dlq_reason reason,
                        const char *why, int attempts)
{
    char shard_group[24], err[512];
    if (!group || !group[0]) {
        snprintf(shard_group, sizeof(shard_group), "shard-%d", shard);
        group = shard_group;
    }
    if (dlq_send(p->sqs, p->pool->cfg.dlq_url, reason, h->sqs->body, why, attempts, group,
                 h->sqs->message_id, err, sizeof(err))) {
        log_warn(COMPONENT, "shard %d: message %s sent to the DLQ: %s", shard, h->sqs->message_id,
                 why);
        h->to_delete = true;
    } else {
        log_error(COMPONENT, "shard %d: message %s could not go to the DLQ (%s); left in the queue",
                  shard, h->sqs->message_id, err);
        h->settled = true; /* neither deleted nor written: it will be received again */
    }
}

/* Into the history cache, as a stored message reads back (no clientMessageId: it is not stored). */
static void remember(poller *p, chat_message *m, const char *seq, const char *server_ts)
{
    if (p->pool->cfg.recent && !recent_add_message(p->pool->cfg.recent, m, seq, server_ts))
        log_warn(COMPONENT, "room %s: out of memory caching message %s for history", m->room_id,
                 m->message_id);
}

/* A received event on its way to subscribers. Without the bus: broadcast here (may wait, bounded,
 * for the broadcaster: backpressure; a drop is counted and handled there — the room's cache
 * marked, its subscribers told to resume with since=) and, for a message, kept for the history
 * API. With it: published to Redis (never blocks), from where every node delivers it in the
 * room's one order (bus.h); p->bus_ticket remembers what the deletes must wait for. */
static void deliver(poller *p, chat_message *m, const char *seq, const char *received_at,
                    bool message)
{
    if (p->pool->cfg.bus) {
        uint64_t ticket = bus_publish(p->pool->cfg.bus, m, seq, received_at);
        if (ticket > p->bus_ticket) p->bus_ticket = ticket;
        return;
    }
    if (p->pool->cfg.broadcast) broadcast_publish(p->pool->cfg.broadcast, m, seq, received_at);
    if (message) remember(p, m, seq, received_at);
}

/* Parses, broadcasts and collects the rows of one receive. Returns the number of rows. */
static size_t prepare(poller *p, int shard, held_message *held, size_t n, write_row *rows)
{
    size_t n_rows = 0;
    int shards = (int)p->pool->cfg.settings->common.queue_shards;
    chat_message m;
    char err[256];
    for (size_t i = 0; i < n; i++) {
        sqs_message *sm = &held[i].sqs[0];
        bool ok = queue_message_parse(sm->body, strlen(sm->body), &m, err, sizeof(err));
        if (ok && room_shard(m.room_id, shards) != shard) {
            snprintf(err, sizeof(err), "roomId: %s belongs to shard %d, not to this queue's %d",
                     m.room_id, room_shard(m.room_id, shards), shard);
            ok = false;
        }
        if (ok && m.kind == CHAT_KIND_TYPING) {
            /* ephemeral: broadcast, never stored; deleted with the receive's committed rows */
            metric_counter_inc(p->pool->m_typing);
            held[i].to_delete = true;
            deliver(p, &m, sm->sequence_number, m.received_at, false);
            continue;
        }
        if (ok) ok = write_row_init(&rows[n_rows], &m, sm->sequence_number, err, sizeof(err));
        if (!ok) {
            metric_counter_inc(p->pool->m_poison);
            send_to_dlq(p, shard,
                        m.room_id[0] && room_id_valid(m.room_id, strlen(m.room_id)) ? m.room_id
                                                                                    : NULL,
                        &held[i], DLQ_POISON, err, sm->receive_count);
            continue;
        }
        held[i].valid = true;
        held[i].row = &rows[n_rows++];
        metric_counter_inc(p->pool->m_consumed);
        deliver(p, &m, sm->sequence_number, held[i].row->received_at, true);
    }
    return n_rows;
}

/* Waits for the writer, keeping the messages invisible meanwhile; once the writer has been unable
 * to commit for the spill limit, takes the batch back (its rows become WRITE_WITHDRAWN). */
static void wait_for_writer(poller *p, int shard, held_message *held, size_t n, write_batch *b)
{
    long vis = (long)p->pool->cfg.settings->visibility_timeout_s;
    long stall_limit = (long)p->pool->cfg.settings->db_spill_after_ms;
    uint64_t extend_every = (uint64_t)vis * 1000000000ull / 2;
    uint64_t next_extend = time_mono_ns() + extend_every;
    while (!batch_writer_wait_or_withdraw(p->pool->cfg.writer, b, WAIT_SLICE_MS, stall_limit)) {
        watchdog_expect(p->watchdog, poller_turn_budget_ms(p));
        if (time_mono_ns() >= next_extend) {
            log_info(COMPONENT,
                     "shard %d: database slow; extending visibility of %zu messages by %ld s",
                     shard, b->n_rows, vis);
            for (size_t i = 0; i < n; i++) held[i].settled = held[i].settled || !held[i].valid;
            handle_batch(p, shard, held, n, false, (int)vis);
            next_extend = time_mono_ns() + extend_every;
        }
    }
}

/* With the bus, a receive's messages are deleted only once Redis has them (bus.h: that keeps a
 * room's order across nodes). Meanwhile they stay invisible; when stopping, the wait is cut to
 * STOP_BUS_WAIT_MS (the outbox still goes out until the stop deadline). */
static void wait_for_bus(poller *p, int shard, held_message *held, size_t n)
{
    uint64_t ticket = p->bus_ticket;
    p->bus_ticket = 0;
    if (!p->pool->cfg.bus || !ticket) return;
    long vis = (long)p->pool->cfg.settings->visibility_timeout_s;
    uint64_t extend_every = (uint64_t)vis * 1000000000ull / 2;
    uint64_t next_extend = time_mono_ns() + extend_every;
    uint64_t stop_wait_until = 0;
    while (!bus_wait_published(p->pool->cfg.bus, ticket, WAIT_SLICE_MS)) {
        watchdog_expect(p->watchdog, poller_turn_budget_ms(p));
        if (stopping(p)) {
            if (!stop_wait_until) stop_wait_until = time_mono_ns() + STOP_BUS_WAIT_MS * 1000000ull;
            if (time_mono_ns() >= stop_wait_until) return;
        }
        if (time_mono_ns() >= next_extend) {
            log_info(COMPONENT, "shard %d: cluster bus down; holding %zu messages %ld s more",
                     shard, n, vis);
            for (size_t i = 0; i < n; i++) held[i].settled = held[i].settled || !held[i].valid;
            handle_batch(p, shard, held, n, false, (int)vis);
            next_extend = time_mono_ns() + extend_every;
        }
    }
}

/* The database cannot take them now: into the spill queue; what it took is deleted with the rest,
 * what it did not take comes back to this shard queue shortly. */
static void spill_withdrawn(poller *p, int shard, held_message *held, size_t n)
{
    const sqs_message *msgs[SQS_MAX_BATCH];
    size_t map[SQS_MAX_BATCH], k = 0;
    for (size_t i = 0; i < n; i++)
        if (held[i].to_spill) {
            msgs[k] = held[i].sqs;
            map[k++] = i;
        }
    if (k == 0) return;
    bool taken[SQS_MAX_BATCH];
    size_t sent = spill_send(p->sqs, p->pool->cfg.spill_url, msgs, k, taken);
    log_debug(COMPONENT, "shard %d: %zu of %zu messages spilled (database unavailable)", shard,
              sent, k);
    for (size_t j = 0; j < k; j++) {
        held[map[j]].to_delete = taken[j];
        held[map[j]].settled = taken[j];
    }
    if (sent < k) handle_batch(p, shard, held, n, false, SPILL_RETRY_VISIBILITY_S);
}

static void settle(poller *p, int shard, held_message *held, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!held[i].valid) continue;
        write_row *r = held[i].row;
        switch (r->status) {
        case WRITE_COMMITTED: held[i].to_delete = true; break;
        case WRITE_FAILED:
            send_to_dlq(p, shard, r->room_id, &held[i], DLQ_DB, r->failure, r->attempts);
            break;
        case WRITE_WITHDRAWN: held[i].to_spill = true; break;
        default: break; /* abandoned at the stop deadline: released below */
        }
    }
    spill_withdrawn(p, shard, held, n);
    handle_batch(p, shard, held, n, true, 0);
    /* Unwritten at the stop deadline: visible again at once, for another consumer. */
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        held[i].settled = !(held[i].valid && held[i].row->status == WRITE_ABANDONED);
        any = any || !held[i].settled;
    }
    if (any) handle_batch(p, shard, held, n, false, 0);
}

/* Each of the n messages spent since_ns .. now in a stage; returns now. */
static uint64_t observe_stage(metric_histogram *h, size_t n, uint64_t since_ns)
{
    uint64_t now = time_mono_ns();
    double seconds = (double)(now - since_ns) / 1e9;
    for (size_t i = 0; i < n; i++) metric_histogram_observe(h, seconds);
    return now;
}

/* Time in SQS by its own SentTimestamp: wall clocks of two machines (AWS's and this task's), so a
 * skewed clock can make it negative; that is counted as 0, never dropped. */
static void observe_queued(poller *p, const sqs_message *msgs, size_t n, int64_t received_ms)
{
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].sent_timestamp_ms <= 0) continue;
        int64_t ms = received_ms - (int64_t)msgs[i].sent_timestamp_ms;
        metric_histogram_observe(p->pool->stages.queued, ms > 0 ? (double)ms / 1000.0 : 0.0);
    }
}

static void process(poller *p, int shard, sqs_message *msgs, size_t n, uint64_t received_ns)
{
    held_message held[SQS_MAX_BATCH] = {0};
    write_row *rows = calloc(n, sizeof(*rows));
    if (n > SQS_MAX_BATCH || !rows) {
        log_error(COMPONENT, "shard %d: cannot hold %zu messages; leaving them for redelivery",
                  shard, n);
        free(rows);
        batch_writer_unhold(p->pool->cfg.writer);
        return;
    }
    for (size_t i = 0; i < n; i++) held[i].sqs = &msgs[i];
    write_batch b = {.rows = rows, .n_rows = prepare(p, shard, held, n, rows)};
    batch_writer_submit(p->pool->cfg.writer, &b);
    /* Known to be down for the spill limit already: no point queueing behind it. */
    if (batch_writer_stalled_ms(p->pool->cfg.writer) >=
        (long)p->pool->cfg.settings->db_spill_after_ms)
        batch_writer_withdraw(p->pool->cfg.writer, &b);
    wait_for_writer(p, shard, held, n, &b);
    const poller_stage_metrics *st = &p->pool->stages;
    uint64_t t = observe_stage(st->write, n, received_ns);
    wait_for_bus(p, shard, held, n);
    t = observe_stage(st->bus, n, t);
    settle(p, shard, held, n);
    observe_stage(st->settle, n, t);
    free(rows);
}

/* Replaces each message's SQS sequence number by its position (queue_epoch.h), which is what
 * the room is ordered and resumed by from here on: events, rows, the cache, spill envelopes.
 * False when the queue's epoch cannot be read now: the caller gives the receive back. */
static bool position_messages(poller *p, int shard, sqs_message *msgs, size_t n)
{
    char pos[SEQNUM_BUF], err[700];
    for (size_t i = 0; i < n; i++) {
        queue_seq_kind kind =
            msgs[i].receive_count <= 1 ? QUEUE_SEQ_FIRST_RECEIVE : QUEUE_SEQ_REDELIVERY;
        if (!queue_epoch_position(epoch_of(p, shard), p->sqs, queue_url(p, shard),
                                  msgs[i].sequence_number, kind, pos, err, sizeof err)) {
            log_warn(COMPONENT, "shard %d: message %s cannot be positioned (%s); given back", shard,
                     msgs[i].message_id, err);
            return false;
        }
        char *owned = strdup(pos);
        if (!owned) return false;
        free(msgs[i].sequence_number);
        msgs[i].sequence_number = owned;
    }
    return true;
}

/* Gives messages back without processing them: visible again after visibility_s (0 when
 * stopping after they were received). */
static void give_back(poller *p, int shard, sqs_message *msgs, size_t n, int visibility_s)
{
    held_message held[SQS_MAX_BATCH] = {0};
    for (size_t i = 0; i < n && i < SQS_MAX_BATCH; i++) held[i].sqs = &msgs[i];
    handle_batch(p, shard, held, n < SQS_MAX_BATCH ? n : SQS_MAX_BATCH, false, visibility_s);
}

/* One receive on a shard queue, retried (same attempt id) until it succeeds or the pool stops.
 * Returns false when stopping. */
static bool receive(poller *p, int shard, int wait_s, sqs_message **msgs, size_t *n)
{
    char attempt_id[UUID_STR_BUF];
    if (!uuid_v4(attempt_id))
        snprintf(attempt_id, sizeof(attempt_id), "p%d-%lld", p->index, (long long)time_mono_ns());
    const consumer_settings *s = p->pool->cfg.settings;
    sqs_receive_options opt = {
        .max_messages = SQS_MAX_BATCH,
        .wait_seconds = wait_s,
        .visibility_timeout = (int)s->visibility_timeout_s,
        .attempt_id = attempt_id,
    };
    long backoff = 100;
    while (!stopping(p)) {
        sqs_error e = {0};
        /* A long poll in progress when the stop comes runs to its end while the stop deadline
         * leaves room (what it returns is given back at once): an aborted one may have been
         * handed messages that then stay invisible for the visibility timeout, a room dark for
         * that long. Near the deadline it is cut (the deletes after it must still run: abort
         * only here). */
        sqs_client_set_abort(p->sqs, &p->pool->cut_polls);
        sqs_status st = sqs_receive_message(p->sqs, queue_url(p, shard), &opt, msgs, n, &e);
        sqs_client_set_abort(p->sqs, NULL);
        if (st != SQS_OK && stopping(p)) return false;
        record(p, st, "ReceiveMessage", &e);
        if (st == SQS_OK) return true;
        queue_epoch_mark_stale(epoch_of(p, shard)); /* the queue may come back made again */
        log_warn(COMPONENT, "shard %d: ReceiveMessage failed: %s (%s %s); retrying in %ld ms",
                 shard, sqs_status_name(st), e.type, e.message, backoff);
        watchdog_expect(p->watchdog, poller_turn_budget_ms(p));
        sleep_unless_stopping(p, backoff);
        backoff = backoff * 2 > RETRY_MAX_BACKOFF_MS ? RETRY_MAX_BACKOFF_MS : backoff * 2;
    }
    return false;
}

/* The next of this poller's shards whose lease the node holds, from *next on; 0 when it holds
 * none. Each shard skipped counts as an empty one of the sweep. */
static int next_leased_shard(poller *p, size_t *next, size_t *empty_in_sweep)
{
    for (size_t tried = 0; tried < p->n_shards; tried++) {
        int shard = p->shards[*next];
        *next = (*next + 1) % p->n_shards;
        if (shard_lease_held(p->pool->cfg.leases, shard)) return shard;
        (*empty_in_sweep)++;
    }
    return 0;
}

static void *poller_main(void *arg)
{
    poller *p = arg;
    const consumer_settings *s = p->pool->cfg.settings;
    char name[16];
    snprintf(name, sizeof name, "cf-poll-%d", p->index);
    pthread_setname_np(pthread_self(), name); /* top -H, perf and profile.sh by thread */
    size_t next = 0;
    size_t empty_in_sweep = 0;
    while (!stopping(p)) {
        watchdog_expect(p->watchdog, poller_turn_budget_ms(p));
        if (p->index == 0 && failpoint_on("stall-poller"))
            failpoint_stall_forever(); /* a wedged thread, for the liveness test */
        int shard = next_leased_shard(p, &next, &empty_in_sweep);
        if (shard == 0) { /* standby for all of them: another consumer polls them */
            sleep_unless_stopping(p, IDLE_WAIT_MS);
            continue;
        }
        int wait_s = (int)s->receive_wait_s;
        if (p->n_shards > 1) wait_s = empty_in_sweep >= p->n_shards ? (wait_s > 0 ? 1 : 0) : 0;

        sqs_message *msgs = NULL;
        size_t n = 0;
        if (!receive(p, shard, wait_s, &msgs, &n)) break;
        if (n == 0) {
            empty_in_sweep++;
            continue;
        }
        uint64_t received_ns = time_mono_ns();
        int64_t received_ms = time_wall_ms(); /* SentTimestamp's clock, for the queued stage */
        empty_in_sweep = 0;
        if (stopping(p)) {
            give_back(p, shard, msgs, n, 0); /* at once: for another consumer */
        } else if (!position_messages(p, shard, msgs, n)) {
            give_back(p, shard, msgs, n, EPOCH_RETRY_VISIBILITY_S);
            sleep_unless_stopping(p, EPOCH_RETRY_WAIT_MS);
        } else {
            /* only here: a receive given back is counted when it is received again */
            observe_queued(p, msgs, n, received_ms);
            batch_writer_hold(p->pool->cfg.writer);
            process(p, shard, msgs, n, received_ns);
        }
        sqs_messages_free(msgs, n);
    }
    watchdog_unregister(p->watchdog);
    atomic_store(&p->finished, true);
    return NULL;
}

static poller_stage_metrics stage_metrics(void)
{
    const char *help = "Where each received message's time went, by stage: queued (SQS "
                       "SentTimestamp to received), write (to the writer's outcome), bus (to the "
                       "cluster bus holding it), settle (to deleted).";
    poller_stage_metrics m;
    metric_histogram **slot[] = {&m.queued, &m.write, &m.bus, &m.settle};
    const char *labels[] = {"stage=\"queued\"", "stage=\"write\"", "stage=\"bus\"",
                            "stage=\"settle\""};
    for (size_t i = 0; i < sizeof slot / sizeof slot[0]; i++)
        *slot[i] = metrics_histogram("chatflow_consumer_stage_seconds", help, labels[i],
                                     METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    return m;
}

poller_pool *poller_pool_start(const poller_pool_config *cfg, char *err, size_t err_len)
{
    const consumer_settings *s = cfg->settings;
    size_t n_shards = (size_t)(s->shard_last - s->shard_first + 1);
    size_t n_threads = (size_t)s->poller_threads < n_shards ? (size_t)s->poller_threads : n_shards;
    poller_pool *pool = calloc(1, sizeof(*pool));
    if (!pool || !(pool->pollers = calloc(n_threads, sizeof(poller))) ||
        !(pool->epochs = calloc(n_shards, sizeof(queue_epoch)))) {
        if (pool) free(pool->pollers);
        free(pool);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pool->cfg = *cfg;
    pool->n_pollers = n_threads;
    atomic_init(&pool->stopping, false);
    atomic_init(&pool->cut_polls, false);
    pool->m_consumed =
        metrics_counter("chatflow_messages_consumed_total",
                        "Valid messages received from SQS (before persistence).", NULL);
    pool->m_typing =
        metrics_counter("chatflow_typing_events_consumed_total",
                        "TYPING indicators received from SQS (broadcast, never stored).", NULL);
    pool->m_poison =
        metrics_counter("chatflow_poison_messages_total",
                        "Received bodies that failed validation (sent to the DLQ).", NULL);
    pool->stages = stage_metrics();
    dlq_metrics_init();
    spill_metrics_init();

    sqs_config sc = consumer_sqs_config(s, cfg->credentials);
    for (size_t t = 0; t < n_threads; t++) {
        poller *p = &pool->pollers[t];
        p->pool = pool;
        p->index = (int)t;
        atomic_init(&p->finished, false);
        p->shards = calloc(n_shards / n_threads + 1, sizeof(int));
        p->sqs = sqs_client_new(&sc, err, err_len);
        if (!p->shards || !p->sqs) goto fail;
        char name[32];
        snprintf(name, sizeof name, "poller-%zu", t);
        p->watchdog = watchdog_register(name, poller_turn_budget_ms(p));
        for (size_t r = t; r < n_shards; r += n_threads)
            p->shards[p->n_shards++] = (int)s->shard_first + (int)r;
    }
    for (size_t t = 0; t < n_threads; t++) {
        poller *p = &pool->pollers[t];
        int rc = pthread_create(&p->thread, NULL, poller_main, p);
        if (rc != 0) {
            snprintf(err, err_len, "pthread_create: %s", strerror(rc));
            poller_pool_request_stop(pool);
            poller_pool_join(pool, UINT64_MAX);
            poller_pool_free(pool);
            return NULL;
        }
        p->started = true;
    }
    log_info(COMPONENT, "%zu pollers over queue shards %lld-%lld of %lld", n_threads,
             s->shard_first, s->shard_last, s->common.queue_shards);
    return pool;
fail:
    if (!err[0]) snprintf(err, err_len, "out of memory");
    poller_pool_free(pool);
    return NULL;
}

void poller_pool_request_stop(poller_pool *p) { atomic_store(&p->stopping, true); }

bool poller_pool_join(poller_pool *pool, uint64_t deadline_ns)
{
    poller_pool_request_stop(pool);
    /* What a poller needs after its long poll returns during a stop: one visibility call, fast
     * when SQS is well (when it is not, the poll fails anyway). */
    uint64_t settle_ns = STOP_CUT_BEFORE_MS * 1000000ull;
    uint64_t cut_at = deadline_ns > settle_ns ? deadline_ns - settle_ns : 0;
    bool all = true;
    for (size_t t = 0; t < pool->n_pollers; t++) {
        poller *p = &pool->pollers[t];
        if (!p->started) continue;
        while (!atomic_load(&p->finished) && time_mono_ns() < deadline_ns) {
            if (time_mono_ns() >= cut_at) atomic_store(&pool->cut_polls, true);
            time_sleep_ms(20);
        }
        if (!atomic_load(&p->finished)) {
            all = false;
            continue;
        }
        pthread_join(p->thread, NULL);
        p->started = false;
    }
    return all;
}

void poller_pool_free(poller_pool *pool)
{
    if (!pool) return;
    for (size_t t = 0; t < pool->n_pollers; t++) {
        if (!atomic_load(&pool->pollers[t].finished))
            watchdog_unregister(pool->pollers[t].watchdog); /* never started */
        sqs_client_free(pool->pollers[t].sqs);
        free(pool->pollers[t].shards);
    }
    free(pool->pollers);
    free(pool->epochs);
    free(pool);
}
