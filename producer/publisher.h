/*
 * publisher — turns validated chat messages into SQS FIFO SendMessageBatch calls, off the
 * WebSocket thread, and hands one answer per message back.
 *
 * Contract:
 *  - A request names its room and the room's queue shard (room_shard(), 1..cfg.shards; the queue
 *    <queue_prefix><shard>.fifo). Shards are shared out among the publisher threads (shard s goes
 *    to thread (s - 1) % n); each thread owns its shards' pending lists and its own sqs_client
 *    (one kept-alive connection). A thread sends one request at a time, so each shard — and so
 *    each room — has at most one SendMessageBatch in flight and FIFO order within a room holds.
 *  - At start each thread resolves its shards' queue URLs with GetQueueUrl (never built by hand),
 *    retrying in the background; publisher_shard_ready() tells the WebSocket thread which shards
 *    can take messages yet. URLs are cached for the life of the process (re-resolved if SQS says
 *    the queue is missing).
 *  - publisher_submit() takes ownership of a request (push to its shard's thread; never blocks).
 *    A shard's batch goes out when it holds 10 messages or 256 KiB, or when its oldest message
 *    has waited linger_ms; it may carry several rooms. MessageGroupId = room id,
 *    MessageDeduplicationId = message id.
 *  - Exactly one publish_result comes back on cfg.results for every request submitted: an ack
 *    (SQS accepted it; carries the sequence number) or an error frame — or, for a silent request
 *    (a typing indicator, never answered), just its outcome, without a frame. Entries that fail are
 *    retried (ahead of newer messages of that room, with jittered backoff; see Order) while a
 *    whole request still fits before received + deadline_ms; then QUEUE_ERROR. Entries SQS calls
 *    the sender's fault get QUEUE_ERROR at once. While the circuit breaker is open, waiting
 *    messages get QUEUE_UNAVAILABLE at once.
 *  - Results are handed back as they are made: cfg.wake is called after each SendMessageBatch
 *    and each shard turn that produced results. If the results queue is ever full (it is sized
 *    above max_inflight_total, which the WebSocket thread never lets the publisher exceed), the
 *    thread wakes the WebSocket thread before every retry: it never waits on it silently.
 *  - Order: a retriable failure of a whole request retries the whole batch, in order, ahead of
 *    newer messages. Within a request SQS settles entries one by one, so a later entry of a
 *    room can be accepted although an earlier one failed: an entry that failed before an
 *    accepted later entry of its room is answered QUEUE_ERROR (a retry would queue it behind a
 *    later message); other failed entries are retried in order. So acked
 *    sequence numbers of a room always increase in the order the messages were submitted.
 *  - Liveness: each thread is a watchdog loop ("publisher-<i>"): it beats at the top of each turn
 *    (announcing its input wait, at most 200 ms) and before each SQS request (announcing the
 *    request timeout), each plus 2 s of slack; an SQS outage never makes it late.
 *  - publisher_drain_by(deadline) (any thread; the earliest call wins): every message held is
 *    answered by deadline — a request is only started if it fits before it, later ones are
 *    answered QUEUE_ERROR — batches go out without lingering, and shards whose queue URL is
 *    unknown stop resolving (their messages are answered QUEUE_UNAVAILABLE).
 *  - publisher_stop(deadline) stops taking requests, drains by deadline, waits for the threads
 *    until deadline (0: without limit) and frees everything — true. If a thread has not ended
 *    by then (stuck in a request), it frees NOTHING and returns false: that thread may still use
 *    the publisher, its SQS client, the breaker, the credentials and the results queue, so the
 *    caller must exit without freeing those either. The results queue is the caller's.
 *  - cfg.failpoint_stall (tests only, CHATFLOW_TEST_FAILPOINT=stall-publisher) makes thread 0
 *    stop turning forever at the top of its loop.
 */
#ifndef CHATFLOW_PRODUCER_PUBLISHER_H
#define CHATFLOW_PRODUCER_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "connections.h"
#include "credentials.h"
#include "message.h"
#include "room.h"
#include "workqueue.h"

typedef struct publish_request {
    struct publish_request *next; /* the publisher's shard list */
    uint32_t slot, generation;    /* the originating connection */
    char room[ROOM_ID_BUF];       /* the MessageGroupId */
    int shard;                    /* room_shard(room, cfg.shards) */
    char message_id[UUID_STR_BUF];
    char client_message_id[CHAT_CMID_MAX + 1];
    char *body; /* protocol.md §4 JSON, owned */
    size_t body_len;
    uint64_t received_ns;   /* frame arrival (deadline and ack latency) */
    uint64_t enqueued_ns;   /* arrival at the publisher (linger, queue wait) */
    uint64_t not_before_ns; /* retry backoff */
    int attempts;
    bool silent; /* a typing indicator: its result carries no answer frame */
} publish_request;

/* The SQS body for a message: queue_message_to_json(), with characters outside the Basic
 * Multilingual Plane (emoji) written as JSON \u surrogate-pair escapes — SQS allows them, but
 * some SQS implementations (fauxqs 1.9.2) refuse them as InvalidMessageContents — and so are
 * U+FFFE and U+FFFF, which SQS itself refuses raw. The escaped form is the same JSON value for
 * every reader. malloc'd, NULL on allocation failure. */
char *publisher_body_json(const chat_message *m);

/* Frees the request and its body. */
void publish_request_free(publish_request *r);

typedef struct {
    uint32_t slot, generation;
    chat_status status; /* CHAT_OK for an ack */
    uint64_t received_ns;
    bool silent;   /* from a silent request: frame is NULL, nobody is answered */
    answer *frame; /* the ack or error frame, owned */
} publish_result;

void publish_result_free(publish_result *r);

typedef struct {
    const char *region;
    const char *endpoint; /* NULL or "" -> AWS */
    credentials_provider *credentials;
    const char *queue_prefix;
    int shards;  /* queue shards 1..shards (1..ROOM_SHARDS_MAX) */
    int threads; /* 0 = one per shard, at most PUBLISHER_AUTO_THREADS_MAX */
    long linger_ms;
    long deadline_ms;
    long request_timeout_ms;
    long connect_timeout_ms;
    circuit_breaker *breaker;
    workqueue *results;      /* publish_result * for the WebSocket thread */
    void (*wake)(void *ctx); /* tells the WebSocket thread results are waiting */
    void *wake_ctx;
    size_t queue_capacity; /* per thread input queue */
    bool failpoint_stall;  /* tests only: thread 0 sleeps forever in its loop */
} publisher_config;

#define PUBLISHER_AUTO_THREADS_MAX 64

typedef struct publisher publisher;

publisher *publisher_start(const publisher_config *cfg, char *err, size_t err_len);
/* false: not taken (stopping or queue full); the caller keeps the request and answers it. */
bool publisher_submit(publisher *p, publish_request *r);
bool publisher_shard_ready(const publisher *p, int shard);
size_t publisher_shards_ready(const publisher *p);
size_t publisher_shard_count(const publisher *p);
void publisher_drain_by(publisher *p, uint64_t deadline_ns);
bool publisher_stop(publisher *p, uint64_t deadline_ns);

#endif
