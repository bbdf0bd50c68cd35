/*
 * poller — the SQS side of the consumer: a pool of threads, each polling its share of the queue
 * shards.
 *
 * Contract:
 *  - A consumer polls the shards settings.shard_first..shard_last (room.h: rooms live on queue
 *    shards 1..queue_shards, the room id as MessageGroupId), each only while it holds the
 *    shard's lease (below). Shards are dealt round-robin over min(threads, shards) threads;
 *    each thread has its own sqs_client. A thread with one shard long-polls it (receive_wait_s);
 *    a thread with several sweeps them without waiting and long-polls 1 s per shard once a sweep
 *    found nothing, so no shard waits behind another's empty long poll. A receive may hold
 *    messages of several rooms; SQS FIFO keeps each room's group locked while they are held, so
 *    per-room order and single processing hold with any number of consumers.
 *  - Per receive (≤10 messages, SequenceNumber + ApproximateReceiveCount, a fresh
 *    ReceiveRequestAttemptId reused only to retry that same receive), in order:
 *      poison (queue_message_parse fails, or the room does not map to this shard) -> DLQ with the
        reason (group: the room, or "shard-N" when the body names none), then deleted;
 *      a TYPING indicator -> broadcast_publish() at once, never stored, deleted with the rest;
 *      valid -> broadcast_publish() and recent_add() at once, then handed to the batch writer.
 *    The poller waits for the writer's outcome (extending visibility with
 *    ChangeMessageVisibilityBatch at half the visibility timeout while it waits), deletes what
 *    was committed (DeleteMessageBatch), sends what the database refused on its own to the DLQ
 *    and deletes it, and only then receives again. So each poller holds at most one receive's
 *    worth of messages: memory is bounded, and pollers stop receiving while the writer is behind.
 *  - Database outage (spill.h): once the writer has been unable to commit for
 *    settings.db_spill_after_ms, the poller stops waiting — its batch is withdrawn from the writer,
 *    the messages (already broadcast) go to the spill queue, and only those the spill queue took
 *    are deleted — so the room's FIFO group unlocks and live chat goes on. A database fault never
 *    dead-letters a message.
 *  - poller_pool_request_stop(): no new receives; a long poll in progress runs to its end
 *    while the join's deadline leaves room for it, and is cut short (sqs_client_set_abort) 2 s
 *    before the deadline (with the defaults, 25 s stop and 20 s polls, it ends by itself): a cut
 poll may have been handed messages that
 *    then stay invisible for the visibility timeout. Messages a receive returns after the stop
 *    are released (visibility 0) for another consumer; messages already handed to the writer
 *    finish normally. Threads are joined until the deadline; true when all were.
 *  - Each poller is a watchdog loop ("poller-N"): it announces, per turn, the longest a receive
 *    and the calls that settle it may take (long poll + 6 request timeouts + 10 s).
 *  - Shard leases (shard_lease.h): a poller receives only from the shards whose lease this node
 *    holds, looked up before every receive; a shard not held counts as an empty one of its
 *    sweep. A poller that holds none of its shards waits 250 ms (beating its watchdog) and
 *    looks again. Messages received before a lease was given up are finished normally (a long
 *    poll in progress may still return some).
 *  - Each SQS call's outcome is recorded in cfg.health (sqs_health.h) for /health/ready.
 */
#ifndef CHATFLOW_CONSUMER_POLLER_H
#define CHATFLOW_CONSUMER_POLLER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch_writer.h"
#include "broadcast.h"
#include "credentials.h"
#include "recent.h"
#include "bus.h"
#include "settings.h"
#include "shard_lease.h"
#include "sqs.h"
#include "sqs_health.h"

typedef struct {
    const consumer_settings *settings;
    credentials_provider *credentials;
    batch_writer *writer;
    broadcaster *broadcast;        /* may be NULL: nothing is broadcast */
    recent_cache *recent;          /* may be NULL: no history cache */
    const char *const *queue_urls; /* [shard - 1] */
    const char *dlq_url;
    const char *spill_url; /* spill.h */
    sqs_health *health;
    const shard_lease *leases; /* may be NULL: every shard is polled */
    bus *bus;                  /* may be NULL: no cluster bus */
} poller_pool_config;

typedef struct poller_pool poller_pool;

poller_pool *poller_pool_start(const poller_pool_config *cfg, char *err, size_t err_len);
/* Asks every poller to stop (returns at once). */
void poller_pool_request_stop(poller_pool *p);
/* Joins the pollers until deadline_ns (CLOCK_MONOTONIC ns); true when all stopped. */
bool poller_pool_join(poller_pool *p, uint64_t deadline_ns);
/* Frees the pool; only after a successful join. */
void poller_pool_free(poller_pool *p);

/* sqs_config from the settings (shared by every SQS client of the consumer). */
sqs_config consumer_sqs_config(const consumer_settings *s, credentials_provider *cp);

#endif
