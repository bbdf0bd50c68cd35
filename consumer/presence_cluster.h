/*
 * presence_cluster — who is online in a room across every consumer node, kept in Redis
 * (docs/architecture.md "Cluster presence"). On with the cluster bus (CHATFLOW_REDIS_URL); the
 * node's own table (presence.h) still keeps its members' connections, last seen, read positions
 * and the per-node member cap, and answers when Redis cannot.
 *
 * Why in Redis, by script: a user may hold connections to several nodes at once, and ONLINE /
 * OFFLINE must be announced exactly when the first opens and the last closes anywhere. Each
 * change is one Lua script that counts and publishes together, so two nodes never both announce
 * (or both miss) a user's arrival, and the announcements leave Redis in the order of the counts.
 *
 * Contract:
 *  - Keys, with P = CHATFLOW_REDIS_PREFIX: "P:pres:{room}" hash userId -> the user's connections
 *    in the cluster; "P:presinfo:{room}" hash userId -> {"s": since ms, "n": username, "r": read
 *    position} (JSON); "P:presnode:{node}" hash "room userId" -> this node's connections (what
 *    the node must take back when it dies); "P:alive:{node}" the node's heartbeat (expires after
 *    CHATFLOW_PRESENCE_NODE_TTL_S); set "P:presnodes" of nodes with members. The scripts name
 *    keys they build, so Redis must run unclustered (ElastiCache cluster mode off).
 *  - Announcements are PRESENCE events (protocol.md §2.1) published by the scripts on the room's
 *    member channel, "P:members:{room}", as {"o": "", "by": node, "e": event JSON}: the empty
 *    origin has the bus (bus.h) hand them to every node, the one that made the change included,
 *    so each node's members get them in the one order Redis published them.
 *  - Requests (presence_cluster_submit(), broadcaster thread; never blocks): JOIN and LEAVE of
 *    one connection, READ (a member's read position, kept for the snapshot). They are applied in
 *    order by one thread. The caller's op is owned by this module until it is answered:
 *    config.answered(ctx, op) gets it back (on this module's thread) for every op with
 *    want_answer; ops without are freed here. An answered op has cluster == true with the
 *    cluster's facts (the announcements themselves come over the channel) (the user's connections
 * in the room across nodes after the change, the room's online users, for JOIN a snapshot of the
 * room's members), or cluster == false when Redis could not be asked in time: the caller then falls
 * back to what its own table says.
 *  - A JOIN answer's snapshot: every member of the room, with connections, since, username and
 *    read position (when known): what a new member is told ("present" events, READ events).
 *  - What this node contributes is also kept in memory, so Redis can always be set right: after
 *    a failed call, after Redis lost the node's entries (its heartbeat key was gone: a restart,
 *    a flush, or the node was taken for dead), and at start (entries of an earlier life of the
 *    same node id), the node replaces its entries with what it holds (RESYNC), announcing the
 *    differences to the other nodes. Requests taken before that snapshot are answered with
 *    cluster == false (their effect is in the snapshot).
 *  - Heartbeat every CHATFLOW_PRESENCE_HEARTBEAT_S: the node renews P:alive:{node}, then takes
 *    back the entries of every node in P:presnodes whose heartbeat has expired, announcing
 *    OFFLINE (reason "timeout") for each user that had no other connection ("by" the dead
 *    node). Any number of nodes may do
 *    this at once: each dead node's entries are taken back once.
 *  - presence_cluster_stop(): the queued requests are dropped (freed, not answered), then the
 *    node's entries are taken back with OFFLINE (reason "left") for the other nodes, so a node
 *    stopped on purpose does not leave its members online until its heartbeat expires.
 *  - presence_cluster_room(): the room's members across the cluster for the presence API, from a
 *    connection of its own (any thread, serialized); false with err when Redis did not answer
 *    within the timeout.
 *  - Every Redis call waits at most CHATFLOW_BUS_TIMEOUT_MS; while Redis is away the thread
 *    tries again with backoff (capped at 2 s) and answers requests at once with cluster == false,
 *    so no request waits on a dead Redis. It checks its stop flag at least every 200 ms.
 *  - Metrics: chatflow_presence_cluster_ops_total{op="join"|"leave"|"read"|"resync"|"reap",
 *    result="ok"|"local"} ("local": answered from the node's table, Redis not asked or failed),
 *    chatflow_presence_cluster_nodes_reaped_total, chatflow_presence_cluster_connected (gauge).
 */
#ifndef CHATFLOW_CONSUMER_PRESENCE_CLUSTER_H
#define CHATFLOW_CONSUMER_PRESENCE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "presence.h"
#include "room.h"
#include "seqnum.h"
#include "slot_table.h"

typedef struct presence_cluster presence_cluster;

typedef enum { PCL_JOIN, PCL_LEAVE, PCL_READ } presence_cluster_kind;

/* One request and, once answered, its answer. Allocated by the caller (calloc); every pointer
 * member is owned by the op: presence_cluster_op_free() frees it all. */
typedef struct {
    presence_cluster_kind kind;
    char room[ROOM_ID_BUF];
    uint32_t user_id;
    char username[CHAT_USERNAME_MAX + 1];
    int64_t at_ms;        /* wall clock of the change */
    char reason[16];      /* LEAVE: "left" or "timeout" */
    char seq[SEQNUM_BUF]; /* READ: the member's new read position */
    bool want_answer;     /* false: freed once applied */
    slot_ref caller_ref;  /* the caller's: the connection it concerns */
    bool caller_edge;     /* the caller's own table: a JOIN of the first connection or a LEAVE
                           * of the last one of the user here */
    size_t caller_online; /* the caller's own table: members online here */
    uint64_t generation;  /* internal */
    /* the answer */
    bool cluster;             /* false: Redis was not asked in time; fall back to the caller's */
    long long connections;    /* the user's connections across the cluster after the change */
    size_t online;            /* users online in the room across the cluster after the change */
    presence_member *members; /* JOIN: the room's members (malloc'd), n_members of them */
    size_t n_members;
} presence_cluster_op;

typedef struct {
    const char *url;     /* redis://host:port[/db] */
    const char *prefix;  /* key prefix (shared with the bus) */
    const char *node_id; /* this node's id */
    long timeout_ms;     /* connect and command timeout */
    long heartbeat_ms;   /* how often the node renews its heartbeat and looks for dead nodes */
    long node_ttl_ms;    /* a node is dead this long after its last heartbeat */
    size_t queue_max;    /* requests waiting at most; beyond, they are answered locally */
    /* Called on this module's thread with every answered op (ownership passes). */
    void (*answered)(void *ctx, presence_cluster_op *op);
    void *ctx;
} presence_cluster_config;

presence_cluster *presence_cluster_start(const presence_cluster_config *cfg, char *err,
                                         size_t err_len);
/* Broadcaster thread. Takes op (and its ownership). Never blocks. When the queue is full the op
 * is answered with cluster == false on the spot (through config.answered), and Redis is set
 * right later (RESYNC). */
void presence_cluster_submit(presence_cluster *pc, presence_cluster_op *op);
void presence_cluster_op_free(presence_cluster_op *op);
/* The room's members across the cluster (malloc'd array of *n the caller frees). */
bool presence_cluster_room(presence_cluster *pc, const char *room, presence_member **members,
                           size_t *n, char *err, size_t err_len);
/* Takes back the node's entries (see above) and ends the thread, within deadline_ns. */
bool presence_cluster_stop(presence_cluster *pc, uint64_t deadline_ns);
void presence_cluster_free(presence_cluster *pc);

#endif
