/*
 * broadcast_internal — what broadcast.c, broadcast_members.c and replay.c share; private to them
 * (nothing else includes it: broadcast.h is the consumer's contract).
 *
 *  - broadcaster, subscriber and room_state are owned by the lws service thread; the fields a
 *    poller or the replay worker touches are marked (atomics, the inbox, the drop table, the
 *    replay queues).
 *  - A subscriber's state (subscriber_state.h) changes only through sub_enter(). Work handed to
 *    another thread names a subscriber by its slot_ref (slot_table.h): an answer for one that
 *    closed meanwhile resolves to nothing.
 *  - broadcast.c: connections, fan-out, lost events, READ frames, start/stop.
 *    broadcast_members.c: presence on join and leave, greetings, relayed member events, cluster
 *    presence answers. replay.c: since=
 *    replays from the history store — the worker thread, its job type and its two queues.
 */
#ifndef CHATFLOW_CONSUMER_BROADCAST_INTERNAL_H
#define CHATFLOW_CONSUMER_BROADCAST_INTERNAL_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* uthash (Debian uthash-dev): out of memory in an insert leaves the table as it was instead of
 * exiting; broadcast_rooms.c checks every insert. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "broadcast.h"
#include "broadcast_room.h"
#include "room.h"
#include "metrics.h"
#include "seqnum.h"
#include "slot_table.h"
#include "subscriber_state.h"
#include "workqueue.h"
#include "ws_frame.h"
#include "ws_listen.h"

#define COMPONENT "broadcast"

#define INBOX_CAPACITY 8192 /* default: messages between pollers and the service thread */
#define RELAY_CAPACITY 4096 /* member events of other nodes waiting for the service thread */
/* Default bound of a publisher's wait on a full inbox: long enough to ride out a burst the
 * service thread is fanning out (8192 messages take well under a second), short enough that a
 * poller holding a receive's messages stays far inside their 30 s visibility timeout. */
#define PUBLISH_WAIT_MS 2000
/* Default longest history call: the store's statement timeout (10 s) plus a reconnect (5 s
 * connect timeout) and a wait for a pooled connection, with room to spare: a slow database must
 * never fail liveness. */
#define HISTORY_MAX_MS 60000
#define SERVICE_TICK_US LWS_US_PER_SEC /* an idle service loop still turns this often */
#define SERVICE_TURN_MAX_MS 10000      /* one tick + a turn's work (a drain, writes), generously */
#define DRAIN_BATCH 256
#define DRAIN_BATCHES_PER_WAKE 8 /* then let writes run; we wake ourselves to continue */
#define CLOSE_SLOW 4008
#define CLOSE_ROOM_FULL 4009
/* 1013 "Try Again Later" is registered, but lws clients (4.1) turn 1012-1014 into 1002: a
 * private code keeps the reason readable by every client. */
#define CLOSE_TRY_AGAIN 4013
#define CLOSE_GRACE_S 5 /* a closing subscriber whose socket stays full is cut */
#define STOP_GRACE_US (2 * LWS_US_PER_SEC)
#define CLOSE_REASON_MAX 123 /* a close frame carries at most 125 bytes: code + reason */

/* The replay worker and its queues (replay.c). */
typedef struct {
    workqueue *jobs;    /* service thread -> worker: at most one page per subscriber */
    workqueue *results; /* worker -> service thread; its notify wakes the service thread */
    pthread_t thread;
    bool started;
    atomic_bool stop;
} replayer;

/* One message on its way from a poller to the service thread. */
typedef struct {
    chat_message msg;
    char seq[SEQNUM_BUF];
    char server_ts[ISO8601_BUF];
} published;

/* Another node's member event (broadcast_relay_in), on its way to the service thread. */
typedef struct {
    char room[ROOM_ID_BUF];
    char *json; /* the event as its node announced it */
} relayed_event;

/* The newest MESSAGE of a room that never reached the service thread. */
typedef struct {
    char room[sizeof((chat_message *)0)->room_id];
    char seq[SEQNUM_BUF];
} lost_event;

/* A PRESENCE event held for a connection until its greeting (broadcast_members.c). */
typedef struct {
    bc_frame *f; /* a reference */
    uint32_t user;
    bool online;
} held_event;
#define HELD_PRESENCE_MAX 32 /* per connection; beyond, dropped (counted) */
#define TOLD_MAX 4096        /* users a connection's presence filter remembers */

/* Per-connection state; lws allocates and frees it (per_session_data_size). */
typedef struct {
    lws_dll2_t in_room;
    struct lws *wsi; /* NULL until ESTABLISHED and after CLOSED */
    slot_ref ref;    /* what work handed to other threads carries (slot_table.h) */
    uint64_t id;     /* names it in the log */
    char room[ROOM_ID_BUF];
    sub_state state;  /* changed only through sub_enter() */
    unsigned retries; /* replay: pages in a row that brought nothing new */
    lws_sorted_usec_list_t retry_timer;
    size_t queue_limit; /* send_queue_max, raised by a replay backlog while it drains */
    bc_fqueue sendq;
    bc_replay replay;

    /* member (docs/protocol.md §2): identified by the subscription's userId and username */
    bool member;
    uint32_t user_id;
    char username[CHAT_USERNAME_MAX + 1];
    uint64_t last_heard_ns;     /* last frame or pong: tells a missed heartbeat from a close */
    ws_frame *rx;               /* frame reassembly (ws_frame.h), up to SUBSCRIBER_FRAME_MAX */
    bc_bucket frames;           /* throttles the frames this connection sends */
    int64_t token_expires_s;    /* identity tokens on: closed with 4401 from then on; else 0 */
    uint64_t read_announced_ns; /* when this connection's last READ was announced */
    bool read_put_off;          /* read_timer armed: an announcement is waiting */
    lws_sorted_usec_list_t read_timer;
    bool greeting_pending; /* cluster presence: who is online is on its way */
    uint32_t *told;        /* cluster presence: users it was told are online (TOLD_MAX) */
    size_t n_told, cap_told;
    held_event *held_presence; /* PRESENCE events meanwhile (HELD_PRESENCE_MAX), in order */
    size_t n_held_presence;
} subscriber;

/* A room this node holds state for (broadcast_rooms.c): created by its first subscriber or
 * event, forgotten (least recently used first) only while it has no subscribers. */
typedef struct room_state {
    char id[ROOM_ID_BUF];
    lws_dll2_owner_t subs;
    bc_room_cache cache;
    char last_seq[SEQNUM_BUF];
    uint64_t last_used; /* broadcaster.room_clock when last touched */
    UT_hash_handle hh;
} room_state;

struct broadcaster {
    broadcast_config cfg;
    char bind_addr[64];
    ws_listener ws;

    workqueue *inbox;
    workqueue *relays; /* member events of other nodes (relayed_event *), for the service thread */
    workqueue *presence_answers; /* answered cluster presence requests, for the service thread */
    pthread_t service_thread;
    bool service_started;
    replayer replay;

    room_state *rooms; /* uthash table by id; service thread only */
    size_t n_rooms;
    uint64_t room_clock;
    uint64_t next_sub_id;
    slot_table *sub_slots; /* subscriber * per slot; service thread only */

    atomic_size_t subscribers;
    atomic_bool stopping;
    atomic_bool shed_requested; /* broadcast_shed() called; the service thread acts on it */
    atomic_int publishers_inside;

    /* full inbox: publishers wait here for the service thread to drain */
    pthread_mutex_t room_mu;
    pthread_cond_t room_cv;
    bool room_sync_ready;
    atomic_int publishers_waiting;
    _Atomic uint64_t drains;
    _Atomic uint64_t stalled_at; /* drains + 1 when a wait ran out; 0: none */
    _Atomic uint64_t drop_logged_ns;

    /* lost events, one entry per room (rooms_max of them, allocated at start), for the service
     * thread; drops_overflow: more rooms lost events than there are entries */
    pthread_mutex_t drops_mu;
    lost_event *drops;
    size_t n_drops;
    bool drops_overflow;
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
    metric_gauge *m_rooms;
    metric_counter *m_rooms_forgotten, *m_rooms_refused;
    metric_counter *m_frames_read, *m_frames_error, *m_frames_limited;
    metric_counter *m_waits, *m_dropped_message, *m_dropped_typing, *m_dropped_member;
};

/* ---- broadcast.c, for replay.c and broadcast_members.c ---- */

/* lws_cancel_service() on the broadcaster (a workqueue notify). */
void broadcast_wake(void *b);
/* Queues a frame (a new reference) for one subscriber and asks for a write. */
void broadcast_deliver_now(broadcaster *b, subscriber *sub, bc_frame *f);
/* An ephemeral event (no sequence number) for every member of the room. Takes json (freed).
 * false when it could not be built (out of memory) or the room has no state here. */
bool broadcast_announce(broadcaster *b, room_state *rs, char *json);
/* An ephemeral event for one subscriber. Takes json (freed). */
void broadcast_tell(broadcaster *b, subscriber *sub, char *json);

/* ---- broadcast_members.c: members and presence ---- */

/* A member's new connection joins the room's presence (or is closed: room full), and is greeted
 * (at once, or when cluster presence answers). */
void broadcast_members_join(broadcaster *b, subscriber *sub, const char *room, uint32_t user_id,
                            const char *username);
/* The connection closed: its held events go; a member leaves the room's presence. */
void broadcast_members_closed(broadcaster *b, subscriber *sub);
/* A member's read position moved: kept by cluster presence for others' greetings. */
void broadcast_members_read(broadcaster *b, subscriber *sub, const char *seq);
/* On a wake: other nodes' member events and cluster presence's answers. */
void broadcast_members_drain(broadcaster *b);
/* At destroy: what the member queues still hold, and the queues. */
void broadcast_members_free_queues(broadcaster *b);
/* ---- broadcast_rooms.c: the room table (service thread only) ---- */

/* The room's state, or NULL when this node holds none. */
room_state *broadcast_room_of(broadcaster *b, const char *room);
/* The room's state, created when missing; to make place, the least recently used room without
 * subscribers is forgotten. NULL when rooms_max rooms all have subscribers (or out of memory). */
room_state *broadcast_room_get(broadcaster *b, const char *room);
/* Forgets every room's cache (after lost events that could not be recorded per room). */
void broadcast_rooms_forget_caches(broadcaster *b);
/* Frees every room. */
void broadcast_rooms_free(broadcaster *b);
/* Applies the events broadcast_publish() had to drop (before any replay decision). */
void broadcast_apply_lost_events(broadcaster *b);
/* The one way a subscriber's state changes (subscriber_state.h); false when refused. */
bool sub_enter(subscriber *sub, sub_state to);
/* Sets the close code and reason, frees the queues (-> CLOSING); the next WRITEABLE hangs up. */
void sub_close(subscriber *sub, int code, const char *reason);
/* Appends f to the send queue (closing the subscriber on out of memory: false). */
bool sub_queue_frame(subscriber *sub, bc_frame *f);

/* ---- replay.c ---- */

/* The queues; false on out of memory. */
bool replay_init(broadcaster *b);
bool replay_start_worker(broadcaster *b);
/* Stops and joins the worker (an answer it is still computing is dropped). */
void replay_stop_worker(broadcaster *b);
/* Frees what is still queued, and the queues. */
void replay_destroy(broadcaster *b);
/* A subscriber asking since=: served from the room cache at once, or from the store (REPLAY_*). */
void replay_begin(broadcaster *b, subscriber *sub, const char *since);
/* After a write: asks for the next page when one is wanted and the send queue has room. */
void replay_maybe_request_page(broadcaster *b, subscriber *sub);
/* Applies the pages the worker answered (on the service thread's wake). */
void replay_apply_results(broadcaster *b);

#endif
