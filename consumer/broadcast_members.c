/* broadcast_members — the broadcaster's members: presence on join and leave, the greeting of a
 * new connection, other nodes' member events, and cluster presence's answers (broadcast.h,
 * "Members"; presence_cluster.h). Service thread only, except where a function says otherwise.
 *
 * With cluster presence a new connection's greeting (who is online) comes with the cluster's
 * answer, a moment after the connection is live, and every ONLINE / OFFLINE comes over the
 * room's member channel. Events that arrive before the greeting are held for the connection;
 * after it, a connection is given only the events that change what it was told. So a member
 * sees each arrival and departure once, whichever path told this node first. */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broadcast.h"
#include "broadcast_internal.h"
#include "events.h"
#include "log.h"
#include "timeutil.h"

#define COMPONENT "broadcast"

static void update_members_gauge(broadcaster *b, long delta)
{
    b->members_online += delta;
    metric_gauge_set(b->m_members, (double)b->members_online);
}

/* ---- what each connection was told (cluster presence) ----
 * With cluster presence, PRESENCE events reach a node by two paths that are not ordered with each
 * other: the greeting (the cluster's answer to the connection's JOIN) and the room's member
 * channel. So each member connection keeps the users it was told are online, and is given only
 * the events that change that: an ONLINE of a user it knows online, or an OFFLINE of one it does
 * not, is news it already has. */

static bool told_online(const subscriber *sub, uint32_t user)
{
    for (size_t i = 0; i < sub->n_told; i++)
        if (sub->told[i] == user) return true;
    return false;
}

static void set_told(subscriber *sub, uint32_t user, bool online)
{
    if (!online) {
        for (size_t i = 0; i < sub->n_told; i++)
            if (sub->told[i] == user) sub->told[i] = sub->told[--sub->n_told];
        return;
    }
    if (told_online(sub, user)) return;
    if (sub->n_told == sub->cap_told) {
        size_t cap = sub->cap_told ? sub->cap_told * 2 : 16;
        uint32_t *grown = cap <= TOLD_MAX ? realloc(sub->told, cap * sizeof *grown) : NULL;
        if (!grown) return; /* beyond TOLD_MAX: this user's events are no longer filtered */
        sub->told = grown;
        sub->cap_told = cap;
    }
    sub->told[sub->n_told++] = user;
}

/* true when the event is news for the connection (and it now knows it). */
static bool is_news(subscriber *sub, uint32_t user, bool online)
{
    if (told_online(sub, user) == online) return false;
    set_told(sub, user, online);
    return true;
}

static void release_held(subscriber *sub)
{
    for (size_t i = 0; i < sub->n_held_presence; i++) bc_frame_unref(sub->held_presence[i].f);
    free(sub->held_presence);
    sub->held_presence = NULL;
    sub->n_held_presence = 0;
}

static void forget_told(subscriber *sub)
{
    free(sub->told);
    sub->told = NULL;
    sub->n_told = sub->cap_told = 0;
}

static void hold_presence(broadcaster *b, subscriber *sub, bc_frame *f, uint32_t user, bool online)
{
    if (!sub->held_presence) sub->held_presence = calloc(HELD_PRESENCE_MAX, sizeof(held_event));
    if (!sub->held_presence || sub->n_held_presence == HELD_PRESENCE_MAX) {
        /* the greeting's snapshot still says who is online as of its read */
        metric_counter_inc(b->m_dropped_member);
        return;
    }
    sub->held_presence[sub->n_held_presence++] = (held_event){bc_frame_ref(f), user, online};
}

/* A PRESENCE event for every member of the room: delivered, held for a connection whose
 * greeting has not come yet, or (cluster presence) skipped where it is not news. Takes json. */
static void announce_presence_json(broadcaster *b, room_state *rs, char *json, uint32_t user,
                                   bool online)
{
    bc_frame *f = json && rs ? bc_frame_new(json, strlen(json), "") : NULL;
    free(json);
    if (!f) {
        if (rs) log_error(COMPONENT, "out of memory building a PRESENCE event; not announced");
        return;
    }
    lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, lws_dll2_get_head(&rs->subs))
    {
        /* no `continue` in this loop: lws_end_foreach_dll_safe is where it advances */
        subscriber *sub = lws_container_of(d, subscriber, in_room);
        if (sub->member && sub->greeting_pending)
            hold_presence(b, sub, f, user, online);
        else if (sub->member && (!b->cfg.pcluster || is_news(sub, user, online)))
            broadcast_deliver_now(b, sub, f);
    }
    lws_end_foreach_dll_safe(d, d1);
    bc_frame_unref(f);
}

static void announce_presence(broadcaster *b, const char *room, uint32_t user_id,
                              const char *username, const char *status, const char *reason,
                              size_t online)
{
    announce_presence_json(
        b, broadcast_room_of(b, room),
        presence_event_json(room, user_id, username, status, reason, time_wall_ms(), online),
        user_id, strcmp(status, "ONLINE") == 0);
}

/* ---- the greeting ---- */

/* What a new connection of a member is told first: one "present" PRESENCE per member online
 * (itself too when it has other connections: again), then a READ per member whose position is
 * known — READ events are not replayed, so a connection that (re)joins learns them here. Then
 * what was held for it meanwhile, where it is news (its own ONLINE, when first, is). */
static void greet(broadcaster *b, subscriber *sub, const presence_member *members, size_t n,
                  bool again)
{
    int64_t now = time_wall_ms();
    for (size_t i = 0; i < n; i++) {
        if (!again && members[i].user_id == sub->user_id) continue;
        if (b->cfg.pcluster) set_told(sub, members[i].user_id, true);
        broadcast_tell(b, sub,
                       presence_event_json(sub->room, members[i].user_id, members[i].username,
                                           "ONLINE", "present", members[i].since_ms, n));
    }
    for (size_t i = 0; i < n; i++)
        if (members[i].read_seq[0])
            broadcast_tell(b, sub,
                           read_event_json(sub->room, members[i].user_id, members[i].username,
                                           members[i].read_seq, now));
    sub->greeting_pending = false;
    for (size_t i = 0; i < sub->n_held_presence; i++) {
        const held_event *e = &sub->held_presence[i];
        if (is_news(sub, e->user, e->online)) broadcast_deliver_now(b, sub, e->f);
    }
    release_held(sub);
}

/* Greets the connection from this node's own table. */
static void greet_from_table(broadcaster *b, subscriber *sub, bool again)
{
    size_t n = 0;
    presence_member *members =
        presence_members_copy(b->cfg.presence, sub->room, &n); /* OOM: no snapshot */
    greet(b, sub, members, n, again);
    free(members);
}

/* ---- cluster presence requests and answers ---- */

/* A cluster presence request about this connection (presence_cluster.h); the answer comes back
 * through broadcast_presence_answered(). false when out of memory (nothing was asked). */
static bool ask_cluster(broadcaster *b, subscriber *sub, presence_cluster_kind kind, bool edge,
                        size_t online, const char *reason)
{
    presence_cluster_op *op = calloc(1, sizeof *op);
    if (!op) {
        log_error(COMPONENT, "out of memory asking the cluster's presence; this node's table "
                             "answers");
        return false;
    }
    op->kind = kind;
    snprintf(op->room, sizeof op->room, "%s", sub->room);
    op->user_id = sub->user_id;
    snprintf(op->username, sizeof op->username, "%s", sub->username);
    op->at_ms = time_wall_ms();
    snprintf(op->reason, sizeof op->reason, "%s", reason ? reason : "");
    op->want_answer = !b->closing_all;
    op->caller_ref = sub->ref;
    op->caller_edge = edge;
    op->caller_online = online;
    presence_cluster_submit(b->cfg.pcluster, op);
    return true;
}

/* The cluster's answer to a JOIN or LEAVE. With the cluster's facts, the greeting: every
 * ONLINE and OFFLINE comes over the room's member channel, in Redis's order, this node's own
 * too. Without them (Redis away), this node's table decides, as without the bus. */
static void apply_answer(broadcaster *b, presence_cluster_op *op)
{
    subscriber **cell = slot_table_get(b->sub_slots, op->caller_ref);
    subscriber *sub = cell ? *cell : NULL;
    bool open = sub && sub->wsi && sub_state_open(sub->state);
    if (op->kind == PCL_JOIN && op->cluster) {
        if (open) greet(b, sub, op->members, op->n_members, op->connections > 1);
    } else if (op->kind == PCL_JOIN) {
        if (open) greet_from_table(b, sub, !op->caller_edge);
        if (op->caller_edge)
            announce_presence(b, op->room, op->user_id, op->username, "ONLINE", "joined",
                              op->caller_online);
    } else if (op->kind == PCL_LEAVE && !op->cluster && op->caller_edge && !b->closing_all) {
        announce_presence(b, op->room, op->user_id, op->username, "OFFLINE", op->reason,
                          op->caller_online);
    }
}

void broadcast_presence_answered(broadcaster *b, presence_cluster_op *op)
{
    if (workqueue_push(b->presence_answers, op)) return;
    presence_cluster_op_free(op);
    metric_counter_inc(b->m_dropped_member);
}

/* ---- join, leave, read ---- */

void broadcast_members_join(broadcaster *b, subscriber *sub, const char *room, uint32_t user_id,
                            const char *username)
{
    size_t online = 0;
    presence_join_result res =
        presence_join(b->cfg.presence, room, user_id, username, time_wall_ms(), &online);
    if (res == PRESENCE_FULL || res == PRESENCE_NO_MEMORY) {
        char reason[96];
        snprintf(reason, sizeof reason, "room %s is full: %zu members online", room,
                 presence_member_cap(b->cfg.presence));
        if (res == PRESENCE_FULL) metric_counter_inc(b->m_room_full);
        sub_close(sub,
                  res == PRESENCE_FULL ? CLOSE_ROOM_FULL : LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                  res == PRESENCE_FULL ? reason : "out of memory");
        return;
    }
    sub->member = true;
    sub->user_id = user_id;
    snprintf(sub->username, sizeof sub->username, "%s", username);
    if (res == PRESENCE_FIRST) update_members_gauge(b, 1);
    if (b->cfg.pcluster) {
        sub->greeting_pending = true;
        if (ask_cluster(b, sub, PCL_JOIN, res == PRESENCE_FIRST, online, NULL)) return;
    }
    greet_from_table(b, sub, res == PRESENCE_AGAIN);
    if (res == PRESENCE_FIRST)
        announce_presence(b, room, user_id, username, "ONLINE", "joined", online);
}

void broadcast_members_closed(broadcaster *b, subscriber *sub)
{
    release_held(sub);
    forget_told(sub);
    if (!sub->member) return;
    size_t online = 0;
    bool last = presence_leave(b->cfg.presence, sub->room, sub->user_id, time_wall_ms(), &online);
    if (last) update_members_gauge(b, -1);
    /* "timeout" when lws dropped it for a missed heartbeat */
    uint64_t hangup_ns = (uint64_t)(b->cfg.ping_interval_s + b->cfg.pong_timeout_s) * 1000000000ull;
    bool silent = b->cfg.ping_interval_s > 0 &&
                  time_mono_ns() - sub->last_heard_ns + 1000000000ull >= hangup_ns;
    const char *reason = silent ? "timeout" : "left";
    if (b->cfg.pcluster && ask_cluster(b, sub, PCL_LEAVE, last, online, reason)) return;
    if (!last || b->closing_all) return; /* closing_all: everyone is leaving, nobody to tell */
    announce_presence(b, sub->room, sub->user_id, sub->username, "OFFLINE", reason, online);
}

void broadcast_members_read(broadcaster *b, subscriber *sub, const char *seq)
{
    presence_cluster_op *op = calloc(1, sizeof *op);
    if (!op) return; /* the member's next READ carries a newer position */
    op->kind = PCL_READ;
    snprintf(op->room, sizeof op->room, "%s", sub->room);
    op->user_id = sub->user_id;
    snprintf(op->seq, sizeof op->seq, "%s", seq);
    presence_cluster_submit(b->cfg.pcluster, op);
}

/* ---- other nodes' member events ---- */

void broadcast_relay_in(broadcaster *b, const char *room, const char *event_json)
{
    relayed_event *e = malloc(sizeof *e);
    if (e) {
        snprintf(e->room, sizeof e->room, "%s", room);
        e->json = strdup(event_json);
    }
    if (e && e->json && workqueue_push(b->relays, e)) return;
    if (e) free(e->json);
    free(e);
    metric_counter_inc(b->m_dropped_member);
}

/* A relayed event is announced as it came; a PRESENCE one goes through announce_presence_json
 * (it may have to wait for a connection's greeting). */
static void announce_relayed(broadcaster *b, room_state *rs, char *json)
{
    json_t *o = json_loads(json, 0, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *user = json_string_value(json_object_get(o, "userId"));
    const char *status = json_string_value(json_object_get(o, "status"));
    if (type && user && status && strcmp(type, "PRESENCE") == 0)
        announce_presence_json(b, rs, json, (uint32_t)strtoul(user, NULL, 10),
                               strcmp(status, "ONLINE") == 0);
    else
        broadcast_announce(b, rs, json);
    json_decref(o);
}

void broadcast_members_drain(broadcaster *b)
{
    void *items[DRAIN_BATCH];
    size_t n = workqueue_pop_many(b->relays, items, DRAIN_BATCH);
    for (size_t i = 0; i < n; i++) {
        relayed_event *e = items[i];
        room_state *rs = broadcast_room_of(b, e->room); /* no state: no member here */
        if (rs)
            announce_relayed(b, rs, e->json);
        else
            free(e->json);
        free(e);
    }
    size_t m = workqueue_pop_many(b->presence_answers, items, DRAIN_BATCH);
    for (size_t i = 0; i < m; i++) {
        apply_answer(b, items[i]);
        presence_cluster_op_free(items[i]);
    }
    if (n == DRAIN_BATCH || m == DRAIN_BATCH) lws_cancel_service(b->ws.context); /* more wait */
}

void broadcast_members_free_queues(broadcaster *b)
{
    void *items[64];
    size_t n;
    if (b->relays) {
        while ((n = workqueue_pop_many(b->relays, items, 64)) > 0)
            for (size_t i = 0; i < n; i++) {
                free(((relayed_event *)items[i])->json);
                free(items[i]);
            }
        workqueue_free(b->relays);
    }
    if (b->presence_answers) {
        while ((n = workqueue_pop_many(b->presence_answers, items, 64)) > 0)
            for (size_t i = 0; i < n; i++) presence_cluster_op_free(items[i]);
        workqueue_free(b->presence_answers);
    }
}
