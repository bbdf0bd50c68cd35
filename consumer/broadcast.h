/*
 * broadcast — the consumer's WebSocket side: subscribers on /chat/{roomId}[?since=<seq>].
 *
 * Contract:
 *  - broadcast_start() opens the listener and runs one libwebsockets service thread (lws is built
 *    with LWS_MAX_SMP 1). Everything about subscribers lives on that thread.
 *  - broadcast_publish() is called by poller threads, in SQS order per room, as soon as a message
 *    is received (persistence never delays it). It copies what it needs into the hand-off queue
 *    (config.inbox_capacity messages) and wakes the service thread with lws_cancel_service(); the
 *    thread turns each message into one BroadcastEvent frame (protocol.md §2) for every subscriber
 * of its room, in order.
 *  - Backpressure: when the hand-off queue is full, broadcast_publish() BLOCKS until the service
 *    thread has taken messages out, at most config.publish_wait_ms (counted in
 *    chatflow_broadcast_publish_waits_total). That slows the calling poller's SQS receives, which
 *    is the point. Once a wait has run out, later calls do not wait again until the service thread
 *    has drained something (a wedged thread must not cost every poller the bound per message).
 *  - Nothing is dropped silently. broadcast_publish() returns false when the event was dropped
 *    (the bound passed, or out of memory; counted in
 *    chatflow_broadcast_events_dropped_total{kind="message"|"typing"}) or the broadcaster is
 *    stopping (nobody is left to receive it). A dropped MESSAGE is recorded (allocation-free) for
 *    the service thread, which applies it before it fans out any later event: the room's replay
 *    cache counts it as evicted (broadcast_room.h: a since= below it is replayed from the history
 *    store, which has it, never from the cache with a gap), and the room's subscribers, who will
 *    never see it live, are closed with 4013 "events lost here ...; reconnect with since=<the last
 *    sequenceNumber received>" so a reconnect fetches it. A dropped TYPING event is only counted.
 *    The service thread treats a frame it cannot build (out of memory) the same way.
 *  - Each subscriber has a bounded send queue (config.send_queue_max frames). One that falls behind
 *    is closed with a clear close reason and counted in chatflow_slow_subscribers_dropped_total;
 *    the others never wait for it.
 *  - since=<seq>: the subscriber first gets the room's messages with sequenceNumber > seq, then
 * live events, with no gap and no duplicate. The newest config.cache_per_room events of each room
 * are kept in memory (they include messages broadcast but not yet committed); older ones come from
 *    the history callback, run on a replay worker thread (never on the service thread).
 *  - Any room id is served (room.h). A bad room id or path is refused at the handshake (HTTP 4xx)
 *    — or, where lws cannot answer with a status, closed at once with the reason. The node keeps
 *    state for at most config.rooms_max rooms (broadcast_rooms.c): an idle room's state is
 *    forgotten to make place, and a subscriber of a new room is refused with 503 when every
 *    held room has subscribers.
 *  - A socket that has not completed its WebSocket handshake config.handshake_timeout_s after the
 *    accept (idle, or trickling the request) is closed.
 *  - With the cluster bus, a member's READ announcement also goes to config.relay_out for the
 *    other nodes, and their READ announcements come in through broadcast_relay_in(): members of a
 *    room see each other's read receipts whichever node they are connected to. With
 *    config.pcluster, presence is the cluster's (presence_cluster.h): a member's connection is
 *    announced ONLINE when it is the user's first anywhere and OFFLINE when it was the last
 *    anywhere, and the "present" snapshot lists the members of every node; both follow the
 *    cluster's answer, so a new member may get its snapshot after the first chat events. When
 *    Redis does not answer, this node's table decides (as without the bus).
 *  - Members (docs/protocol.md §2): a subscriber that gives userId and username joins the room's
 *    presence (config.presence). A new user beyond the member cap is refused at the handshake
 *    (403). Members get, besides every MESSAGE: a PRESENCE snapshot of who is online when they
 *    join (and a READ event for each online member whose read position is known), PRESENCE events
 * when a user's first connection opens or last one closes (reason "timeout" when it was dropped for
 * a missed heartbeat), TYPING events (from the queue, never cached or replayed) and READ events. A
 * member's READ frame that moves its position forward is handed to config.receipts and announced; a
 * bad frame gets an ERROR event. Anonymous subscribers get MESSAGE events only, exactly as
 * protocol.md §2.
 *  - Frames from subscribers are throttled per connection: a token bucket of
 *    SUBSCRIBER_FRAMES_PER_S (burst SUBSCRIBER_FRAME_BURST); a frame beyond it is answered with an
 *    ERROR event RATE_LIMITED and otherwise ignored (not announced, not stored). A READ must not
 *    be beyond the newest sequence number this process has seen in the room (compared as numbers);
 *    while it has seen none (just started, a silent room) every READ is refused, so a client can
 *    never plant an invented position. READ announcements of one connection are coalesced: at
 *    most one every READ_ANNOUNCE_GAP_MS, a put-off one announces the member's newest position.
 *  - Liveness: the service thread and the replay worker register with the watchdog
 *    ("broadcast-service", "broadcast-replay"). The service loop turns at least every second (an
 *    lws timer), so it is expected within 10 s per turn; the replay worker within
 *    config.history_max_ms (the longest one history call may legitimately take).
 *  - broadcast_shed() (any thread; lb_watch.h: the load balancer drains this node) closes the
 *    subscribers connected at that moment with 1001 "going away", so they resume at another node
 *    while the load balancer still carries them; the node goes on serving and accepting.
 *  - broadcast_stop() closes every subscriber with 1001 "going away", stops the thread and frees
 *    everything. Safe to call once, from the thread that started it.
 */
#ifndef CHATFLOW_BROADCAST_H
#define CHATFLOW_BROADCAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "message.h"
#include "presence.h"
#include "presence_cluster.h"
#include "read_receipts.h"

typedef struct broadcaster broadcaster;

/* One stored event for replay, as the history callback returns it. */
typedef struct {
    chat_message msg;
    char sequence_number[64];
    char server_timestamp[ISO8601_BUF];
} broadcast_history_row;

/*
 * Appends up to `limit` rows of `room` with sequence_number > since_seq, in ascending sequence
 * order, by calling `emit` once per row. Runs on the replay worker thread. Returns false (err set)
 * when the store cannot answer; the subscriber is then closed with a reason.
 */
typedef bool (*broadcast_history_fn)(void *ctx, const char *room, const char *since_seq,
                                     size_t limit,
                                     void (*emit)(void *emit_ctx, const broadcast_history_row *row),
                                     void *emit_ctx, char *err, size_t err_len);

typedef struct {
    const char *bind_addr;  /* "0.0.0.0" */
    int port;               /* 0 picks a free one; see broadcast_port() */
    size_t rooms_max;       /* rooms with state held on this node (broadcast_rooms.c) */
    size_t send_queue_max;  /* frames queued per subscriber before it is dropped */
    size_t cache_per_room;  /* newest events kept per room for replay */
    size_t max_subscribers; /* total connection cap */
    int ping_interval_s;
    int pong_timeout_s;
    int handshake_timeout_s; /* accept → upgraded, else the socket is closed; 0: lws defaults */
    broadcast_history_fn history;
    void *history_ctx;
    presence *presence;         /* NULL: nobody is a member (features off) */
    presence_cluster *pcluster; /* with the bus: presence across nodes (NULL: this node's) */
    /* The cluster bus: a member event announced here (READ) for the other nodes' members
     * (copied; never blocks). NULL without the bus. */
    bool (*relay_out)(void *ctx, const char *room, const char *event_json);
    void *relay_ctx;
    read_receipts *receipts; /* NULL: READ positions are announced, not stored */
    const auth *auth;        /* NULL: no identity tokens (CHATFLOW_AUTH off); borrowed */
    bool anonymous_read;     /* with auth: a handshake without a token subscribes anonymously */
    size_t inbox_capacity;   /* messages between pollers and the service thread; 0: 8192 */
    long publish_wait_ms;    /* longest broadcast_publish() waits on a full inbox; 0: 2000 */
    long history_max_ms;     /* longest one history call legitimately takes (liveness); 0: 60000 */
} broadcast_config;

/* Frames a subscriber may send (READ): 5 a second with a burst of 10. A reader sends one READ per
 * burst of messages it has seen (the chat page debounces to one per 300 ms at most); 5/s is far
 * above that and still caps what one connection can make the room fan out. */
#define SUBSCRIBER_FRAMES_PER_S 5.0
#define SUBSCRIBER_FRAME_BURST 10.0
/* READ events of one connection are announced at most once a second (the newest position wins):
 * a read receipt a second late is invisible to people, a flood of them is not to the room. */
#define READ_ANNOUNCE_GAP_MS 1000

broadcaster *broadcast_start(const broadcast_config *cfg, char *err, size_t err_len);
int broadcast_port(const broadcaster *b);
/* May block up to config.publish_wait_ms (backpressure, above). true: handed to the service
 * thread; false: dropped (counted, recorded) or stopping. */
bool broadcast_publish(broadcaster *b, const chat_message *m, const char *sequence_number,
                       const char *server_timestamp);
/* Events of room older than the one with sequence number seq will not arrive here (the cluster
 * bus could not recover them): like a dropped message, the room's subscribers are closed with
 * 4013 and a replay below seq comes from the history store. Any thread; never blocks. */
void broadcast_room_lost(broadcaster *b, const char *room, const char *seq);
/* A member event another node announced (the cluster bus): announced to this node's members of
 * the room as it is. Any thread; never blocks; copied. A full hand-off queue (4096) drops it,
 * counted in chatflow_broadcast_events_dropped_total{kind="member"}. */
void broadcast_relay_in(broadcaster *b, const char *room, const char *event_json);
/* config.pcluster's answer to a request this broadcaster made (presence_cluster_config.answered):
 * applied on the service thread. Any thread; never blocks; takes op. */
void broadcast_presence_answered(broadcaster *b, presence_cluster_op *op);
/* Current number of subscribers (any thread; approximate). */
size_t broadcast_subscriber_count(const broadcaster *b);
/* Thread-safe; ctx is the broadcaster (an lb_watch on_draining callback). */
void broadcast_shed(void *ctx);
void broadcast_stop(broadcaster *b);

#endif
