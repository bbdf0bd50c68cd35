/*
 * replay — since= replays (contract in broadcast.h; internals shared through broadcast_internal.h).
 *
 *  - since=S is answered from the room cache when it covers S (broadcast_room.h); the
 *    subscriber stays LIVE. Otherwise it replays from the history store: its live frames are
 *    held (at most cache_per_room + send_queue_max, else it is dropped as slow) while pages of
 *    history (send_queue_max rows each) are sent, then the held frames newer than the last
 *    history row.
 *  - States (subscriber_state.h): REPLAY_FETCHING while a page is at the worker; the answer moves
 *    it to REPLAY_PAGE_WANTED (the page was full: the next one is asked for once the send queue
 *    is half written, so a replay holds about two pages at most), REPLAY_RETRY_WAIT (the store
 *    ends before the events that left the cache, not committed yet: asked again every
 *    REPLAY_RETRY_DELAY_MS from a timer on the service thread, so the worker never sleeps while
 *    others wait), or LIVE (done). After REPLAY_MAX_RETRIES pages in a row with nothing new the
 *    subscriber is closed with 4013 and where history ends, never served with a gap.
 *  - Threads. The worker runs the history callback (it may block on PostgreSQL) and builds the
 *    frames; jobs and answers cross in two workqueues (the answers' notify wakes the service
 *    thread). A job names its subscriber by slot_ref: the answer for one that closed meanwhile
 *    finds nothing and is dropped. The worker is a watchdog loop ("broadcast-replay") that waits
 *    for jobs at most REPLAY_IDLE_WAIT_MS and announces history_max_ms per turn.
 */
#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast_internal.h"
#include "events.h"
#include "log.h"
#include "watchdog.h"

#define REPLAY_IDLE_WAIT_MS 5000 /* an idle replay worker turns this often */
#define REPLAY_RETRY_DELAY_MS 250
#define REPLAY_MAX_RETRIES 20 /* 5 s without progress: more than a writer's max wait */

/* One page of history: asked by the service thread, answered by the replay worker. */
typedef struct {
    slot_ref sub;
    char room[ROOM_ID_BUF];
    char since[SEQNUM_BUF];
    size_t limit;
    bool ok;
    char err[200];
    bc_frame **frames;
    size_t n;
} replay_job;

static void replay_job_free(replay_job *job)
{
    if (!job) return;
    for (size_t i = 0; i < job->n; i++) bc_frame_unref(job->frames[i]);
    free(job->frames);
    free(job);
}

/* ---- service thread ---- */

static void submit_page(broadcaster *b, subscriber *sub)
{
    replay_job *job = calloc(1, sizeof *job);
    if (!job) {
        sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    job->sub = sub->ref;
    snprintf(job->room, sizeof job->room, "%s", sub->room);
    memcpy(job->since, sub->replay.cursor, sizeof job->since);
    job->limit = b->cfg.send_queue_max;
    if (!workqueue_push(b->replay.jobs, job)) {
        free(job);
        sub_close(sub, CLOSE_TRY_AGAIN,
                  "replay unavailable: too many replays in progress; try again");
        return;
    }
    sub_enter(sub, SUB_REPLAY_FETCHING);
}

void replay_maybe_request_page(broadcaster *b, subscriber *sub)
{
    if (sub->state == SUB_REPLAY_PAGE_WANTED &&
        bc_fqueue_len(&sub->sendq) <= b->cfg.send_queue_max / 2)
        submit_page(b, sub);
}

static void retry_due(lws_sorted_usec_list_t *sul)
{
    subscriber *sub = lws_container_of(sul, subscriber, retry_timer);
    if (!sub->wsi || sub->state != SUB_REPLAY_RETRY_WAIT) return;
    submit_page(lws_context_user(lws_get_context(sub->wsi)), sub);
}

static void finish_replay(broadcaster *b, subscriber *sub)
{
    size_t before = bc_fqueue_len(&sub->sendq);
    if (!bc_replay_finish(&sub->replay, &sub->sendq)) {
        sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    sub_enter(sub, SUB_LIVE);
    size_t queued = bc_fqueue_len(&sub->sendq);
    sub->queue_limit = b->cfg.send_queue_max + queued;
    if (before == 0 && queued > 0) lws_callback_on_writable(sub->wsi);
}

static void retry_later(subscriber *sub)
{
    if (++sub->retries > REPLAY_MAX_RETRIES) {
        char reason[320]; /* sub_close() cuts it to what a close frame carries */
        snprintf(reason, sizeof reason,
                 "replay incomplete: history ends at %s, not stored up to %s yet; reconnect",
                 sub->replay.cursor, sub->replay.need_cover);
        sub_close(sub, CLOSE_TRY_AGAIN, reason);
        return;
    }
    if (sub_enter(sub, SUB_REPLAY_RETRY_WAIT))
        lws_sul_schedule(lws_get_context(sub->wsi), 0, &sub->retry_timer, retry_due,
                         REPLAY_RETRY_DELAY_MS * LWS_US_PER_MS);
}

static void apply_page(broadcaster *b, replay_job *job)
{
    subscriber **cell = slot_table_get(b->sub_slots, job->sub);
    subscriber *sub = cell ? *cell : NULL;
    if (!sub || sub->state != SUB_REPLAY_FETCHING) return; /* closed meanwhile */
    if (!job->ok) {
        /* The database is busy or down (the cache did not cover since=): the client is asked to
         * come back, like an HTTP 503 with Retry-After; the server's message stays in the log. */
        log_warn(COMPONENT, "room %s subscriber %llu: history unavailable: %s", sub->room,
                 (unsigned long long)sub->id, job->err);
        sub_close(sub, CLOSE_TRY_AGAIN, "history unavailable; reconnect with since= shortly");
        return;
    }
    size_t accepted = 0;
    for (size_t i = 0; i < job->n; i++) {
        if (!bc_replay_accept(&sub->replay, job->frames[i])) continue;
        if (!sub_queue_frame(sub, job->frames[i])) return;
        accepted++;
    }
    if (accepted) sub->retries = 0; /* the store is moving: keep waiting for it */
    switch (bc_replay_after_page(&sub->replay, job->n, job->limit)) {
    case BC_REPLAY_NEXT_PAGE:
        if (sub_enter(sub, SUB_REPLAY_PAGE_WANTED)) replay_maybe_request_page(b, sub);
        break;
    case BC_REPLAY_RETRY: retry_later(sub); break;
    case BC_REPLAY_DONE: finish_replay(b, sub); break;
    }
}

void replay_apply_results(broadcaster *b)
{
    void *items[32];
    size_t n;
    while ((n = workqueue_pop_many(b->replay.results, items, 32)) > 0)
        for (size_t i = 0; i < n; i++) {
            apply_page(b, items[i]);
            replay_job_free(items[i]);
        }
}

void replay_begin(broadcaster *b, subscriber *sub, const char *since)
{
    broadcast_apply_lost_events(b); /* the cache must know what it lacks before it is asked */
    room_state *rs = broadcast_room_of(b, sub->room);
    if (bc_room_cache_serves(&rs->cache, since)) {
        metric_counter_inc(b->m_replay_cache);
        if (!bc_room_cache_copy_after(&rs->cache, since, &sub->sendq)) {
            sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
            return;
        }
        size_t queued = bc_fqueue_len(&sub->sendq);
        sub->queue_limit += queued;
        if (queued) lws_callback_on_writable(sub->wsi);
        return;
    }
    metric_counter_inc(b->m_replay_history);
    if (!bc_replay_begin(&sub->replay, &rs->cache, since)) {
        sub_close(sub, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    submit_page(b, sub);
}

/* ---- worker thread ---- */

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
    bool answered = b->cfg.history(b->cfg.history_ctx, job->room, job->since, job->limit, emit_row,
                                   job, err, sizeof err);
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
    while (!atomic_load(&b->replay.stop)) {
        watchdog_expect(wd, b->cfg.history_max_ms);
        replay_job *job = workqueue_pop_wait(b->replay.jobs, REPLAY_IDLE_WAIT_MS);
        if (!job) continue;
        run_history(b, job);
        if (!workqueue_push(b->replay.results, job)) replay_job_free(job);
    }
    watchdog_unregister(wd);
    return NULL;
}

/* ---- lifecycle ---- */

bool replay_init(broadcaster *b)
{
    /* a subscriber has at most one page asked for at a time */
    b->replay.jobs = workqueue_new(b->cfg.max_subscribers + 1, NULL, NULL);
    b->replay.results = workqueue_new(b->cfg.max_subscribers + 1, broadcast_wake, b);
    return b->replay.jobs && b->replay.results;
}

bool replay_start_worker(broadcaster *b)
{
    b->replay.started = pthread_create(&b->replay.thread, NULL, replay_main, b) == 0;
    return b->replay.started;
}

void replay_stop_worker(broadcaster *b)
{
    /* The worker may be inside the history callback; its answer is dropped. */
    if (b->replay.results) workqueue_close(b->replay.results);
    atomic_store(&b->replay.stop, true);
    if (b->replay.jobs) workqueue_close(b->replay.jobs);
    if (b->replay.started) pthread_join(b->replay.thread, NULL);
    b->replay.started = false;
}

static void free_jobs(workqueue *q)
{
    if (!q) return;
    void *items[64];
    size_t n;
    while ((n = workqueue_pop_many(q, items, 64)) > 0)
        for (size_t i = 0; i < n; i++) replay_job_free(items[i]);
    workqueue_free(q);
}

void replay_destroy(broadcaster *b)
{
    free_jobs(b->replay.jobs);
    free_jobs(b->replay.results);
    b->replay.jobs = b->replay.results = NULL;
}
