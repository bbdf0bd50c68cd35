/*
 * broadcast — the consumer's WebSocket side: subscribers on /chat/{roomId}[?since=<seq>].
 *
 * Contract:
 *  - broadcast_start() opens the listener and runs one libwebsockets service thread (lws is built
 *    with LWS_MAX_SMP 1). Everything about subscribers lives on that thread.
 *  - broadcast_publish() is called by poller threads, in SQS order per room, as soon as a message
 *    is received (persistence never delays it). It copies what it needs into the hand-off queue
 *    and wakes the service thread with lws_cancel_service(); the thread turns each message into one
 *    BroadcastEvent frame (SPEC §3) for every subscriber of its room, in order. It returns false
 *    only when the hand-off queue is full or the broadcaster is stopping (the caller decides).
 *  - Each subscriber has a bounded send queue (config.send_queue_max frames). One that falls behind
 *    is closed with a clear close reason and counted in chatflow_slow_subscribers_dropped_total;
 *    the others never wait for it.
 *  - since=<seq>: the subscriber first gets the room's messages with sequenceNumber > seq, then live
 *    events, with no gap and no duplicate. The newest config.cache_per_room events of each room are
 *    kept in memory (they include messages broadcast but not yet committed); older ones come from
 *    the history callback, run on a replay worker thread (never on the service thread).
 *  - A room outside [room_min, room_max] or a bad path is refused at the handshake (HTTP 4xx) — or,
 *    where lws cannot answer with a status, closed at once with a reason naming the owned range.
 *  - A socket that has not completed its WebSocket handshake config.handshake_timeout_s after the
 *    accept (idle, or trickling the request) is closed.
 *  - Members (docs/protocol.md §2): a subscriber that gives userId and username joins the room's
 *    presence (config.presence). A new user beyond the member cap is refused at the handshake
 *    (403). Members get, besides every MESSAGE: a PRESENCE snapshot of who is online when they
 *    join (and a READ event for each online member whose read position is known), PRESENCE events when a user's first connection opens or last one closes (reason
 *    "timeout" when it was dropped for a missed heartbeat), TYPING events (from the queue,
 *    never cached or replayed) and READ events. A member's READ frame that moves its position
 *    forward (not beyond the room's newest message) is announced and handed to
 *    config.receipts; a bad frame gets an ERROR event. Anonymous subscribers get MESSAGE
 *    events only, exactly as SPEC §3.
 *  - broadcast_stop() closes every subscriber with 1001 "going away", stops the thread and frees
 *    everything. Safe to call once, from the thread that started it.
 */
#ifndef CHATFLOW_BROADCAST_H
#define CHATFLOW_BROADCAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "presence.h"
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
typedef bool (*broadcast_history_fn)(void *ctx, long room, const char *since_seq, size_t limit,
                                     void (*emit)(void *emit_ctx, const broadcast_history_row *row),
                                     void *emit_ctx, char *err, size_t err_len);

typedef struct {
    const char *bind_addr;      /* "0.0.0.0" */
    int port;                   /* 0 picks a free one; see broadcast_port() */
    long room_min, room_max;
    size_t send_queue_max;      /* frames queued per subscriber before it is dropped */
    size_t cache_per_room;      /* newest events kept per room for replay */
    size_t max_subscribers;     /* total connection cap */
    int ping_interval_s;
    int pong_timeout_s;
    int handshake_timeout_s;    /* accept → upgraded, else the socket is closed; 0: lws defaults */
    broadcast_history_fn history;
    void *history_ctx;
    presence *presence;         /* NULL: nobody is a member (features off) */
    read_receipts *receipts;    /* NULL: READ positions are announced, not stored */
} broadcast_config;

broadcaster *broadcast_start(const broadcast_config *cfg, char *err, size_t err_len);
int broadcast_port(const broadcaster *b);
bool broadcast_publish(broadcaster *b, const chat_message *m, const char *sequence_number,
                       const char *server_timestamp);
/* Current number of subscribers (any thread; approximate). */
size_t broadcast_subscriber_count(const broadcaster *b);
void broadcast_stop(broadcaster *b);

#endif
