/*
 * bus — the cluster's fan-out: every consumer node publishes the messages it processed to Redis,
 * and every node delivers every other node's messages to its own subscribers, in order, with no
 * gap and no duplicate (docs/architecture.md "Cluster"). Off without CHATFLOW_REDIS_URL: one
 * consumer then works alone exactly as before.
 *
 * Why Redis holds the order: with competing consumers a room's messages are processed by any node,
 * one receive after the other (SQS FIFO locks the room's group while a node holds its messages),
 * and the rooms of one queue shard share its sequence numbers, so no node can tell from them alone
 * whether it missed one. Redis gives each room a contiguous offset instead, atomically with the
 * publish: a node that sees offset 7 after 5 knows exactly what it missed and where to find it.
 *
 * Contract:
 *  - Keys, with P = CHATFLOW_REDIS_PREFIX: "P:meta:{room}" a hash {e: epoch, o: last offset,
 *    t: Redis's time of the last publish, ms},
 *    "P:hist:{room}" a stream of the room's last CHATFLOW_BUS_HISTORY events (entry id
 *    "<offset>-0", field d = the event), channel "P:room:{room}". One Lua script (EVALSHA) makes
 *    the epoch when the hash is missing (first publish, or Redis lost its data), increments the
 *    offset, appends to the stream, refreshes both keys' expiry (CHATFLOW_BUS_TTL_S) and
 *    publishes "<epoch> <offset> <event>" on the channel.
 *  - An event is {"o": origin node id, "s": sequenceNumber, "r": receivedAt, "m": the queue body
 *    (protocol.md §4)}, or {"o": node, "lost": true}: that node had to drop events of the room
 *    before it could publish them (see below).
 *  - With the bus, a poller does not broadcast what it receives: bus_publish() (in SQS order per
 *    room) and every node, this one included, delivers the room's events in the one order Redis
 *    gave them. bus_publish() never blocks on Redis: it copies the event into a bounded outbox
 *    (CHATFLOW_BUS_OUTBOX events) which one publisher thread sends in order, reconnecting with
 *    backoff (capped at 2 s) and retrying the event at the head until it is published. It
 *    returns a ticket; the poller deletes the messages from SQS only once bus_wait_published()
 *    says they are in Redis (as well as committed). That is what keeps a room's order across
 *    nodes: the room's next message is received (by any node) only after this one was deleted,
 *    so it is published after it. While Redis is down the pollers therefore hold their messages
 *    (extending their visibility) and receive nothing new: the chat pauses, nothing is lost or
 *    reordered. When the
 *    outbox is full the event is dropped (chatflow_bus_publish_dropped_total) and its room marked;
 *    the publisher sends a "lost" event for each marked room before any later event, so no other
 *    node can miss it unknowingly.
 *  - A subscriber thread holds a second connection in PSUBSCRIBE "P:room:*" (every node receives
 *    every room's events, so its replay caches stay warm for subscribers joining any room) and a
 *    third for reads. Per room it keeps (epoch, last offset): offset last+1 is delivered; at or
 *    below last it is a duplicate (dropped, counted); above last+1 the missing offsets are read
 *    from the room's stream (XRANGE) and delivered first. When they cannot be read — the stream
 *    was trimmed or lost, the epoch changed, or a "lost" event arrives — the room's local
 *    subscribers are closed with 4013 (config.room_lost, given the event's sequence number: the
 *    broadcaster then replays from the history store until the store holds that event, so
 *    nothing before it is skipped) and resume with since=; the room's state restarts at the
 *    event (a "lost" event takes effect at the room's next event).
 *  - A room idle for longer than CHATFLOW_BUS_TTL_S (its keys are gone from Redis then) is
 *    forgotten; its next event starts it afresh, like a room never seen. So what a node tracks is
 *    bounded by the rooms active within the TTL.
 *  - After the subscriber connection is lost and made again, every room it knows is caught up from
 *    its stream the same way before live events flow again: what the stream holds is delivered,
 *    and when it cannot prove that nothing is missing (new epoch, trimmed) room_lost() comes
 *    first, with the sequence number of the first event delivered after it. Rooms it does not
 *    know (never seen since start, or forgotten idle) are found with SCAN over "P:meta:*"; those
 *    published since shortly before the connection was lost (meta t) have their newer events
 *    delivered from the stream (each entry keeps Redis's time, field t): a subscriber of a room
 * whose first event came while this node was away misses nothing.
 *  - Redis's replication id (INFO replication, master_replid) is read at every connect. When it
 *    changed — a replica promoted by a failover, a restart from a snapshot — offsets may have
 *    gone back within an epoch (what the old primary had not replicated is handed out again),
 *    so none this node tracks is trusted: each known room's newest event is delivered as the
 *    first after a loss (room_lost() first; the subscribers resume from the history store).
 *  - Member events (READ receipts; protocol.md §2.1) are relayed, not ordered: bus_relay() (the
 *    broadcaster's thread; never blocks) queues {"o": node, "e": the event's JSON} for a plain
 *    PUBLISH on "P:members:{room}", ahead of nothing and behind the events already queued; it
 *    takes at most half of the outbox (chat events come first) and is dropped, counted, beyond
 *    that or while Redis is away past the stop — a READ is superseded by the member's next one.
 *    The subscriber thread, subscribed to "P:members:*" on the same connection, hands every
 *    other node's member event to config.relay(ctx, room, event JSON) as it came, and every
 *    event with an empty origin too (cluster presence publishes so: presence_cluster.h).
 *  - Delivering = config.deliver(ctx, message, sequenceNumber, receivedAt) on the subscriber
 *    thread, for every event of every node (this one's too); it may block for a bounded time
 *    (the broadcaster's backpressure).
 *  - Every Redis call has a timeout (connect and command: CHATFLOW_BUS_TIMEOUT_MS); a thread never
 *    waits on Redis unbounded and checks its stop flag at least every 200 ms. Redis down is never
 *    a bad message: nothing is dead-lettered; the pollers hold what they received (above) and
 *    the nodes catch up from the streams when Redis is back.
 *  - Metrics: chatflow_bus_published_total, chatflow_bus_publish_errors_total,
 *    chatflow_bus_member_events_total{result="published"|"dropped"|"received"},
 *    chatflow_bus_publish_dropped_total, chatflow_bus_outbox (gauge), chatflow_bus_received_total
 *    {result="delivered"|"own"|"duplicate"}, chatflow_bus_gaps_total{recovered="stream"|"lost"},
 *    chatflow_bus_connected{conn="publish"|"subscribe"} (gauges), chatflow_bus_rooms (gauge).
 *  - bus_check() is the "bus" readiness check: UP when both connections are up.
 *  - bus_start() connects once (a bad URL or an unreachable server at start is an error: the node
 *    would otherwise serve a split audience), then starts the threads (watchdog loops
 *    "bus-publish", "bus-subscribe"). bus_stop() ends them within its bound, publishing what the
 *    outbox holds until then; bus_free() after.
 */
#ifndef CHATFLOW_CONSUMER_BUS_H
#define CHATFLOW_CONSUMER_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

typedef struct bus bus;

typedef struct {
    const char *url;     /* redis://host:port[/db] */
    const char *prefix;  /* key prefix */
    const char *node_id; /* this node's id (CHATFLOW_SERVER_ID): events of its own are skipped */
    size_t outbox;       /* events waiting for Redis at most */
    long history;        /* events kept per room stream (MAXLEN ~) */
    long ttl_s;          /* expiry of a room's keys after its last event */
    long timeout_ms;     /* connect and command timeout */
    /* Called on the subscriber thread for every event from another node, in order per room. */
    void (*deliver)(void *ctx, const chat_message *m, const char *seq, const char *received_at);
    /* Called on the subscriber thread when events of a room before the event with sequence number
     * seq could not be recovered; deliver() of that event follows. */
    void (*room_lost)(void *ctx, const char *room, const char *seq);
    /* Called on the subscriber thread for every member event of another node (NULL: ignored). */
    void (*relay)(void *ctx, const char *room, const char *event_json);
    void *ctx;
} bus_config;

bus *bus_start(const bus_config *cfg, char *err, size_t err_len);
/* Poller threads: the event's ticket, 0 when it was dropped (outbox full) or the bus is
 * stopping. */
uint64_t bus_publish(bus *b, const chat_message *m, const char *seq, const char *received_at);
/* Any thread: a member event of room for the other nodes' members; false when dropped. */
bool bus_relay(bus *b, const char *room, const char *event_json);
/* Waits up to timeout_ms until every event up to ticket is in Redis (or given up at the stop
 * deadline). true when it is. */
bool bus_wait_published(bus *b, uint64_t ticket, long timeout_ms);
bool bus_check(void *ctx, char *detail, size_t detail_len);
/* Ends both threads, within deadline_ns (monotonic). false when one did not end in time. */
bool bus_stop(bus *b, uint64_t deadline_ns);
void bus_free(bus *b);

#endif
