/*
 * it_cluster_presence — presence across the cluster (consumer/presence_cluster.h, announced
 * through the bus, consumer/bus.h) against real processes: three consumers (pres-a, pres-b, pres-c)
 * sharing a private redis-server (tl_redis.h), with the fauxqs and PostgreSQL of the test stack,
 * all on loopback. Members are WebSocket subscribers with ?userId=&username=; no producer is needed
 * (the one chat message part 4 needs goes straight into SQS). The nodes announce themselves
 * every second (CHATFLOW_PRESENCE_HEARTBEAT_S=1) and a node silent for 3 s is dead
 * (CHATFLOW_PRESENCE_NODE_TTL_S=3). Each part has a room of its own:
 *  1. joining: alice on pres-a, then bob on pres-b: bob's snapshot has alice ("present"), alice
 *     is told bob "joined" with online 2;
 *  2. several connections of one user count once, cluster-wide: alice's second connection (on
 *     pres-c) announces nothing to bob; the presence API (of pres-c) says "scope":"cluster",
 *     onlineCount 2 and alice with 2 connections; closing one of alice's connections announces
 *     nothing, closing her last one announces OFFLINE "left" with online 1;
 *  3. the presence API of a node with no member of the room lists the members of the others;
 *  4. a new member's snapshot carries the read positions of the members of other nodes (READ)
 *     as well as their presence ("present");
 *  5. a node killed (-9): its members go OFFLINE "timeout" on the other nodes within 15 s (the
 *     node's heartbeat stops: 3 s TTL) and leave their presence answers;
 *  6. a node stopped with SIGTERM (exit 0): its members go OFFLINE "left" — taken back by the
 *     stopping node itself (an expired heartbeat would say "timeout"); the time is noted;
 *  7. redis-server killed and restarted with its data lost: members stay connected, a new member
 *     still gets its socket while Redis is away (no wedge), /health/live stays 200 everywhere,
 *     and within 15 s of Redis's return the presence API of a node with no member of the room
 *     lists the members of the others again.
 */
/* test-passes: asan */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_proc.h"
#include "tl_producer.h"
#include "tl_redis.h"
#include "wsclient.h"

#define SHARDS 2
#define NODES 3
#define NODE_A 0
#define NODE_B 1
#define NODE_C 2
#define EVENT_WAIT_MS 10000   /* an expected event (snapshots are asynchronous) */
#define QUIET_MS 1500         /* how long "nothing came" is watched for */
#define MESSAGE_WAIT_MS 30000 /* a message put into SQS reaches its room */
#define TIMEOUT_WAIT_MS 15000 /* a killed node's members declared gone */
#define REDIS_BACK_WAIT_MS 15000
#define CROWD_MAX 16

static tl_consumer_env env;
static tl_redis redis;
static tl_consumer nodes[NODES];
static wsc_ctx *ws;
static const char *const node_ids[NODES] = {"pres-a", "pres-b", "pres-c"};

/* ---------------------------------------------------------------- members */

typedef struct {
    const char *name;
    int user;
    int node;
    const char *room;
    wsc_conn *c;
    json_t *log; /* every JSON object received, in order */
} member;

/* The members open now: pump() takes what arrives for each of them. */
static member *crowd[CROWD_MAX];

static void crowd_add(member *m)
{
    for (int i = 0; i < CROWD_MAX; i++)
        if (!crowd[i]) {
            crowd[i] = m;
            return;
        }
    abort(); /* more members than the test ever opens at once */
}

static void crowd_remove(member *m)
{
    for (int i = 0; i < CROWD_MAX; i++)
        if (crowd[i] == m) crowd[i] = NULL;
}

static bool member_open(member *m, const char *room, int node, int user, const char *name)
{
    char path[200], err[256];
    int status = 0;
    *m = (member){.name = name, .user = user, .node = node, .room = room, .log = json_array()};
    snprintf(path, sizeof path, "/chat/%s?userId=%d&username=%s", room, user, name);
    m->c = wsc_connect(ws, "127.0.0.1", nodes[node].ws_port, path, 5000, &status, err, sizeof err);
    if (!m->c) NOTE("%s on %s: %s (HTTP %d)", path, node_ids[node], err, status);
    crowd_add(m);
    return m->c != NULL;
}

static void member_take_frames(member *m)
{
    for (char *text; m->c && (text = wsc_recv(m->c, 0, NULL));) {
        json_t *j = json_loads(text, 0, NULL);
        if (json_is_object(j))
            json_array_append(m->log, j);
        else
            NOTE("%s: a frame that is not a JSON object: %.200s", m->name, text);
        json_decref(j);
        free(text);
    }
}

/* Closes the connection (if still open) and forgets everything received. */
static void member_close(member *m)
{
    crowd_remove(m);
    if (m->c) wsc_free(m->c);
    m->c = NULL;
    json_decref(m->log);
    m->log = NULL;
}

static bool member_connected(const member *m) { return m->c && !wsc_is_closed(m->c); }

/* Services every socket once (at most ms), then takes what arrived. */
static void pump(int ms)
{
    wsc_service(ws, ms);
    for (int i = 0; i < CROWD_MAX; i++)
        if (crowd[i]) member_take_frames(crowd[i]);
}

static void pump_for(int ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)ms * 1000000ull;
    while (time_mono_ns() < until) pump(20);
}

/* Where the member's log ends now: events after this came after what the test does next. */
static size_t mark(const member *m) { return json_array_size(m->log); }

/* ---------------------------------------------------------------- events */

typedef struct {
    const char *type;   /* "PRESENCE", "READ", "MESSAGE", "ERROR" */
    int user;           /* whose event ("userId"); 0: anyone's */
    const char *status; /* PRESENCE "ONLINE" / "OFFLINE"; NULL: any */
    const char *seq;    /* READ "sequenceNumber"; NULL: any */
} want_ev;

static const char *str_of(const json_t *e, const char *key)
{
    const char *s = json_string_value(json_object_get(e, key));
    return s ? s : "(none)";
}

static bool str_is(const json_t *e, const char *key, const char *want)
{
    const char *s = json_string_value(json_object_get(e, key));
    return s && strcmp(s, want) == 0;
}

/* The event's "online" count; -1 when it has none (or not a number). */
static long long online_of(const json_t *e)
{
    json_t *n = json_object_get(e, "online");
    return json_is_integer(n) ? json_integer_value(n) : -1;
}

static bool ev_matches(const json_t *e, const want_ev *w)
{
    char user[16];
    snprintf(user, sizeof user, "%d", w->user);
    return str_is(e, "type", w->type) && (!w->user || str_is(e, "userId", user)) &&
           (!w->status || str_is(e, "status", w->status)) &&
           (!w->seq || str_is(e, "sequenceNumber", w->seq));
}

/* The first event of the member's log from index `from` on that one of wants[0..n) matches. */
static json_t *find_event(const member *m, size_t from, const want_ev *wants, size_t n)
{
    for (size_t i = from; m->log && i < json_array_size(m->log); i++)
        for (size_t k = 0; k < n; k++)
            if (ev_matches(json_array_get(m->log, i), &wants[k])) return json_array_get(m->log, i);
    return NULL;
}

/* Pumps until such an event is in the log (from `from` on) or timeout_ms passes; it stays owned
 * by the log. */
static json_t *wait_any(member *m, size_t from, const want_ev *wants, size_t n, int timeout_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    json_t *e = find_event(m, from, wants, n);
    while (!e && time_mono_ns() < until) {
        pump(20);
        e = find_event(m, from, wants, n);
    }
    return e;
}

static json_t *wait_event(member *m, size_t from, want_ev w, int timeout_ms)
{
    return wait_any(m, from, &w, 1, timeout_ms);
}

static json_t *wait_presence_of(member *m, size_t from, const member *who, const char *status,
                                int timeout_ms)
{
    return wait_event(m, from, (want_ev){"PRESENCE", who->user, status, NULL}, timeout_ms);
}

static void note_log(const member *m, size_t from)
{
    for (size_t i = from; m->log && i < json_array_size(m->log); i++) {
        char *s = json_dumps(json_array_get(m->log, i), JSON_COMPACT);
        NOTE("  %s received: %.300s", m->name, s ? s : "?");
        free(s);
    }
}

/* Setting up a part: `to` is told `who` is online (joined or present) within EVENT_WAIT_MS.
 * Checked, and the part goes on either way: its own checks then show what else holds. */
static void sees_online(member *to, const member *who, const char *part)
{
    bool seen = wait_presence_of(to, 0, who, "ONLINE", EVENT_WAIT_MS) != NULL;
    CHECK(seen, "%s: %s (on %s) is told %s (on %s) is ONLINE", part, to->name, node_ids[to->node],
          who->name, node_ids[who->node]);
    if (!seen) note_log(to, 0);
}

/* ---------------------------------------------------------------- the presence API */

typedef struct {
    const int *listed; /* users that must be online */
    size_t nlisted;
    int absent;     /* a user that must not be listed (0: none) */
    int count;      /* "onlineCount" (-1: not checked) */
    bool cluster;   /* "scope":"cluster" */
    int conns_user; /* that user's "connections" must be conns (0: not checked) */
    int conns;
} presence_want;

static json_t *presence_get(int node, const char *room, long *status)
{
    char path[160];
    snprintf(path, sizeof path, "/api/rooms/%s/presence", room);
    char *body = tl_http_get(nodes[node].admin_port, path, status);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

static json_t *presence_entry(const json_t *answer, int user)
{
    char id[16];
    snprintf(id, sizeof id, "%d", user);
    json_t *online = json_object_get(answer, "online");
    for (size_t i = 0; i < json_array_size(online); i++)
        if (str_is(json_array_get(online, i), "userId", id)) return json_array_get(online, i);
    return NULL;
}

static long long int_of(const json_t *j, const char *key)
{
    json_t *n = json_object_get(j, key);
    return json_is_integer(n) ? json_integer_value(n) : -1;
}

static bool presence_as_wanted(const json_t *a, const presence_want *w)
{
    if (!a) return false;
    for (size_t i = 0; i < w->nlisted; i++)
        if (!presence_entry(a, w->listed[i])) return false;
    if (w->absent && presence_entry(a, w->absent)) return false;
    if (w->count >= 0 && int_of(a, "onlineCount") != w->count) return false;
    if (w->cluster && !str_is(a, "scope", "cluster")) return false;
    return !w->conns_user || int_of(presence_entry(a, w->conns_user), "connections") == w->conns;
}

/* Polls the node's presence answer (pumping the sockets meanwhile) until it is as wanted or
 * timeout_ms passes; true when it was, and the last answer is noted when not. */
static bool wait_presence(int node, const char *room, const presence_want *w, int timeout_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    long status = 0;
    json_t *a = presence_get(node, room, &status);
    while (!presence_as_wanted(a, w) && time_mono_ns() < until) {
        json_decref(a);
        pump(100);
        a = presence_get(node, room, &status);
    }
    bool ok = presence_as_wanted(a, w);
    if (!ok) {
        char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
        NOTE("  GET /api/rooms/%s/presence on %s: HTTP %ld %.400s", room, node_ids[node], status,
             s ? s : "(no JSON)");
        free(s);
    }
    json_decref(a);
    return ok;
}

/* ---------------------------------------------------------------- nodes */

static bool start_node(int i)
{
    static char url[NODES][128], id[NODES][64];
    snprintf(url[i], sizeof url[i], "CHATFLOW_REDIS_URL=%s", tl_redis_url(&redis));
    snprintf(id[i], sizeof id[i], "CHATFLOW_SERVER_ID=%s", node_ids[i]);
    const char *extra[] = {url[i],
                           id[i],
                           "CHATFLOW_REDIS_PREFIX=itpres",
                           "CHATFLOW_PRESENCE_HEARTBEAT_S=1",
                           "CHATFLOW_PRESENCE_NODE_TTL_S=3",
                           "CHATFLOW_STOP_TIMEOUT_S=10",
                           NULL};
    char log[32];
    snprintf(log, sizeof log, "consumer-%s", node_ids[i]);
    return tl_consumer_start(&env, &nodes[i], log, extra) &&
           tl_http_wait_status(nodes[i].admin_port, "/health/ready", 200, 30000);
}

static bool start_all(void)
{
    if (!tl_redis_start(&redis, env.log_dir) || !tl_redis_ping(redis.port, 1000)) {
        CHECK(false, "redis-server started on a free port (log %s)", redis.log_path);
        return false;
    }
    CHECK(true, "redis-server started on port %d", redis.port);
    bool ok = true;
    for (int i = 0; i < NODES; i++) {
        bool up = start_node(i);
        CHECK(up, "consumer %s started with the bus on and ready", node_ids[i]);
        ok = ok && up;
    }
    return ok;
}

static bool all_running(const char *part)
{
    bool ok = true;
    for (int i = 0; i < NODES; i++) ok = ok && nodes[i].pid > 0;
    if (!ok) CHECK(false, "%s: every consumer running (skipped)", part);
    return ok;
}

static void restart_node(int i, const char *part)
{
    uint64_t t0 = time_mono_ns();
    bool up = start_node(i);
    CHECK(up, "%s: %s started again (same server id) and ready in %.0f ms", part, node_ids[i],
          (double)(time_mono_ns() - t0) / 1e6);
}

static double ms_since(uint64_t t0) { return (double)(time_mono_ns() - t0) / 1e6; }

/* ---------------------------------------------------------------- 1. joining */

static void test_join_and_snapshot(void)
{
    const char *room = "pres-1", *part = "join";
    member alice = {0}, bob = {0};
    CHECK(member_open(&alice, room, NODE_A, 101, "alice"), "%s: alice connected on %s", part,
          node_ids[NODE_A]);
    /* bob's snapshot can only have alice once the cluster knows her: wait for that first */
    const int listed[] = {101};
    CHECK(
        wait_presence(NODE_B, room, &(presence_want){listed, 1, 0, -1, false, 0, 0}, EVENT_WAIT_MS),
        "%s: the presence API of %s lists alice (connected on %s)", part, node_ids[NODE_B],
        node_ids[NODE_A]);
    size_t alice_from = mark(&alice);
    CHECK(member_open(&bob, room, NODE_B, 102, "bob"), "%s: bob connected on %s", part,
          node_ids[NODE_B]);
    json_t *e = wait_presence_of(&bob, 0, &alice, "ONLINE", EVENT_WAIT_MS);
    CHECK(e && str_is(e, "reason", "present"),
          "%s: bob (on %s) receives PRESENCE ONLINE \"present\" for alice (on %s) (reason %s)",
          part, node_ids[NODE_B], node_ids[NODE_A], e ? str_of(e, "reason") : "no event");
    if (!e) note_log(&bob, 0);
    e = wait_presence_of(&alice, alice_from, &bob, "ONLINE", EVENT_WAIT_MS);
    CHECK(e && str_is(e, "reason", "joined") && online_of(e) == 2,
          "%s: alice receives PRESENCE ONLINE \"joined\" for bob with online 2 (reason %s, "
          "online %lld)",
          part, e ? str_of(e, "reason") : "no event", e ? online_of(e) : -1);
    if (!e) note_log(&alice, alice_from);
    member_close(&bob);
    member_close(&alice);
}

/* ---------------------------------------------------------------- 2. several connections */

static void check_second_connection_silent(member *bob, size_t from, const member *alice)
{
    pump_for(QUIET_MS);
    const int listed[] = {101, 102};
    CHECK(wait_presence(NODE_C, bob->room, &(presence_want){listed, 2, 0, 2, true, 101, 2},
                        EVENT_WAIT_MS),
          "connections: GET /api/rooms/%s/presence on %s: \"scope\":\"cluster\", onlineCount 2, "
          "alice with \"connections\":2",
          bob->room, node_ids[NODE_C]);
    json_t *e = find_event(bob, from, &(want_ev){"PRESENCE", alice->user, "ONLINE", NULL}, 1);
    CHECK(!e, "connections: alice's second connection (on %s) announces nothing to bob",
          node_ids[NODE_C]);
    if (e) note_log(bob, from);
}

static void test_connections_count_once(void)
{
    const char *room = "team-alpha", *part = "connections";
    member alice_a = {0}, alice_c = {0}, bob = {0};
    bool open = member_open(&alice_a, room, NODE_A, 101, "alice") &&
                member_open(&bob, room, NODE_B, 102, "bob");
    CHECK(open, "%s: alice on %s and bob on %s connected", part, node_ids[NODE_A],
          node_ids[NODE_B]);
    if (open) {
        sees_online(&bob, &alice_a, part);
        size_t from = mark(&bob);
        CHECK(member_open(&alice_c, room, NODE_C, 101, "alice"),
              "%s: alice's second connection, on %s", part, node_ids[NODE_C]);
        check_second_connection_silent(&bob, from, &alice_a);

        from = mark(&bob);
        member_close(&alice_a);
        pump_for(QUIET_MS);
        json_t *e = find_event(&bob, from, &(want_ev){"PRESENCE", 101, "OFFLINE", NULL}, 1);
        CHECK(!e, "%s: closing alice's connection on %s announces no OFFLINE to bob (%d ms)", part,
              node_ids[NODE_A], QUIET_MS);

        from = mark(&bob);
        member_close(&alice_c);
        e = wait_presence_of(&bob, from, &alice_c, "OFFLINE", EVENT_WAIT_MS);
        CHECK(e && str_is(e, "reason", "left") && online_of(e) == 1,
              "%s: closing her last one (on %s): bob receives OFFLINE \"left\" for alice with "
              "online 1 (reason %s, online %lld)",
              part, node_ids[NODE_C], e ? str_of(e, "reason") : "no event", e ? online_of(e) : -1);
    }
    member_close(&alice_a); /* closing twice does nothing */
    member_close(&bob);
}

/* ---------------------------------------------------------------- 3. a node without members */

static void test_api_on_memberless_node(void)
{
    const char *room = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", *part = "memberless node";
    member alice = {0}, bob = {0};
    CHECK(member_open(&alice, room, NODE_A, 101, "alice") &&
              member_open(&bob, room, NODE_B, 102, "bob"),
          "%s: alice on %s and bob on %s connected to room %s", part, node_ids[NODE_A],
          node_ids[NODE_B], room);
    const int listed[] = {101, 102};
    uint64_t t0 = time_mono_ns();
    bool ok =
        wait_presence(NODE_C, room, &(presence_want){listed, 2, 0, 2, false, 0, 0}, EVENT_WAIT_MS);
    CHECK(ok,
          "%s: the presence API of %s (no member there) lists alice and bob, onlineCount 2 "
          "(%.0f ms)",
          part, node_ids[NODE_C], ms_since(t0));
    member_close(&bob);
    member_close(&alice);
}

/* ---------------------------------------------------------------- 4. READ in the snapshot */

/* A READ is only believed up to the room's newest message known to the node (protocol.md
 * §2.2): one chat message goes into the room first, straight into SQS. */
static bool room_has_a_message(member *dave)
{
    chat_message m;
    tl_chat_message(&m, 1, 199, "a message for READ to refer to", "TEXT");
    snprintf(m.room_id, sizeof m.room_id, "%s", dave->room);
    bool sent = tl_consumer_send_to_room(&env, &m);
    bool seen = sent && wait_event(dave, 0, (want_ev){"MESSAGE", 0, NULL, NULL}, MESSAGE_WAIT_MS);
    CHECK(seen, "read: a chat message of room %s reaches dave on %s (sent to SQS: %s)", dave->room,
          node_ids[dave->node], sent ? "yes" : "no");
    return seen;
}

static bool send_read(member *m, const char *seq)
{
    char frame[200];
    snprintf(frame, sizeof frame, "{\"type\":\"READ\",\"roomId\":\"%s\",\"sequenceNumber\":\"%s\"}",
             m->room, seq);
    size_t from = mark(m);
    if (!tl_ws_send_str(m->c, frame)) return false;
    const want_ev answers[] = {{"READ", m->user, NULL, seq}, {"ERROR", 0, NULL, NULL}};
    json_t *e = wait_any(m, from, answers, 2, EVENT_WAIT_MS);
    bool ok = e && str_is(e, "type", "READ");
    CHECK(ok, "read: %s's READ %s is announced back to the room (%s)", m->name, seq,
          !e   ? "no answer"
          : ok ? "announced"
               : str_of(e, "errorMessage"));
    return ok;
}

static void test_read_in_snapshot(void)
{
    const char *room = "pres-4", *part = "read";
    member dave = {0}, erin = {0};
    CHECK(member_open(&dave, room, NODE_A, 104, "dave"), "%s: dave connected on %s", part,
          node_ids[NODE_A]);
    if (dave.c && room_has_a_message(&dave) && send_read(&dave, "777")) {
        CHECK(member_open(&erin, room, NODE_B, 105, "erin"), "%s: erin connected on %s", part,
              node_ids[NODE_B]);
        json_t *e = wait_event(&erin, 0, (want_ev){"READ", dave.user, NULL, NULL}, EVENT_WAIT_MS);
        CHECK(e && str_is(e, "sequenceNumber", "777"),
              "%s: erin (on %s) receives READ for dave (on %s) with sequenceNumber \"777\" (%s)",
              part, node_ids[NODE_B], node_ids[NODE_A],
              e ? str_of(e, "sequenceNumber") : "no event");
        e = wait_presence_of(&erin, 0, &dave, "ONLINE", EVENT_WAIT_MS);
        CHECK(e && str_is(e, "reason", "present"),
              "%s: erin receives PRESENCE ONLINE \"present\" for dave (reason %s)", part,
              e ? str_of(e, "reason") : "no event");
        if (!e) note_log(&erin, 0);
    }
    member_close(&erin);
    member_close(&dave);
}

/* ---------------------------------------------------------------- 5. a node killed */

/* Kills carol's node; alice must be told she is gone, and node A's answer must drop her. */
static void check_killed(member *alice, const member *carol)
{
    const int listed[] = {103};
    bool was_listed = wait_presence(NODE_A, alice->room,
                                    &(presence_want){listed, 1, 0, -1, false, 0, 0}, EVENT_WAIT_MS);
    CHECK(was_listed, "node killed: before the kill, the presence API of %s lists carol (on %s)",
          node_ids[NODE_A], node_ids[carol->node]);
    size_t from = mark(alice);
    uint64_t t0 = time_mono_ns();
    tl_consumer_stop(&nodes[carol->node], SIGKILL, 5000, NULL);
    NOTE("%s killed (-9)", node_ids[carol->node]);
    json_t *e = wait_presence_of(alice, from, carol, "OFFLINE", TIMEOUT_WAIT_MS);
    double took = ms_since(t0);
    CHECK(e && str_is(e, "reason", "timeout"),
          "node killed: alice receives OFFLINE \"timeout\" for carol within %d ms (reason %s, "
          "after %.0f ms)",
          TIMEOUT_WAIT_MS, e ? str_of(e, "reason") : "no event", took);
    if (e) NOTE("carol declared gone %.0f ms after the kill (node TTL 3 s)", took);
    const presence_want gone = {NULL, 0, 103, -1, false, 0, 0};
    CHECK(was_listed && wait_presence(NODE_A, alice->room, &gone, 5000),
          "node killed: the presence API of %s no longer lists carol (listed before: %s)",
          node_ids[NODE_A], was_listed ? "yes" : "no");
}

static void test_node_killed(void)
{
    const char *room = "pres-5", *part = "node killed";
    member alice = {0}, carol = {0};
    bool open = member_open(&alice, room, NODE_A, 101, "alice") &&
                member_open(&carol, room, NODE_B, 103, "carol");
    CHECK(open, "%s: alice on %s and carol on %s connected", part, node_ids[NODE_A],
          node_ids[NODE_B]);
    if (open) {
        sees_online(&alice, &carol, part);
        check_killed(&alice, &carol);
    }
    member_close(&carol);
    member_close(&alice);
    if (nodes[NODE_B].pid <= 0) restart_node(NODE_B, part);
}

/* ---------------------------------------------------------------- 6. a node stopped */

/* tl_consumer_stop() on a thread of its own: the test keeps reading its sockets meanwhile, so
 * the time the OFFLINE event takes is measured, not the time the node takes to exit. */
typedef struct {
    int node;
    pthread_t thread;
    int rc;
    bool in_time;
} stop_job;

static void *stop_main(void *arg)
{
    stop_job *j = arg;
    j->rc = tl_consumer_stop(&nodes[j->node], SIGTERM, 15000, &j->in_time);
    return NULL;
}

static void check_clean_stop(member *alice, const member *frank)
{
    stop_job job = {.node = frank->node};
    size_t from = mark(alice);
    uint64_t t0 = time_mono_ns();
    if (pthread_create(&job.thread, NULL, stop_main, &job) != 0) {
        CHECK(false, "stopped: a thread to stop %s", node_ids[job.node]);
        return;
    }
    /* "left", not "timeout": the stopping node took its members back itself (its heartbeat runs
     * until then), the node TTL did not find it dead */
    json_t *e = wait_presence_of(alice, from, frank, "OFFLINE", TIMEOUT_WAIT_MS);
    double took = ms_since(t0);
    pthread_join(job.thread, NULL);
    CHECK(job.rc == 0 && job.in_time, "stopped: %s exited 0 in time on SIGTERM (status %d%s)",
          node_ids[job.node], job.rc, job.in_time ? "" : ", killed");
    CHECK(e && str_is(e, "reason", "left"),
          "stopped: alice receives OFFLINE \"left\" for frank (reason %s)",
          e ? str_of(e, "reason") : "no event");
    NOTE("frank's OFFLINE came %.0f ms after %s got SIGTERM", took, node_ids[job.node]);
}

static void test_node_stopped(void)
{
    const char *room = "pres-6", *part = "stopped";
    member alice = {0}, frank = {0};
    bool open = member_open(&alice, room, NODE_A, 101, "alice") &&
                member_open(&frank, room, NODE_C, 106, "frank");
    CHECK(open, "%s: alice on %s and frank on %s connected", part, node_ids[NODE_A],
          node_ids[NODE_C]);
    if (open) {
        sees_online(&alice, &frank, part);
        check_clean_stop(&alice, &frank);
    }
    member_close(&frank);
    member_close(&alice);
    if (nodes[NODE_C].pid <= 0) restart_node(NODE_C, part);
}

/* ---------------------------------------------------------------- 7. Redis restarted */

/* /health/live of every node; how many did not answer 200. */
static int live_not_200(void)
{
    int bad = 0;
    for (int i = 0; i < NODES; i++) {
        long st = tl_http_status(nodes[i].admin_port, "/health/live");
        if (st != 200) {
            bad++;
            NOTE("%s /health/live answered %ld", node_ids[i], st);
        }
    }
    return bad;
}

/* While Redis is away: probes every node's liveness for ms (pumping the sockets meanwhile). */
static int probe_live_for(int ms, int *probes)
{
    int bad = 0;
    uint64_t until = time_mono_ns() + (uint64_t)ms * 1000000ull;
    while (time_mono_ns() < until) {
        bad += live_not_200();
        *probes += NODES;
        pump(250);
    }
    return bad;
}

static void while_redis_away(const char *room)
{
    int probes = 0, bad = probe_live_for(500, &probes);
    member ivan = {0};
    uint64_t t0 = time_mono_ns();
    CHECK(member_open(&ivan, room, NODE_A, 109, "ivan"),
          "redis away: a new member (ivan) still gets his socket on %s (HTTP 101, %.0f ms)",
          node_ids[NODE_A], ms_since(t0));
    bad += probe_live_for(1000, &probes);
    CHECK(bad == 0, "redis away: /health/live of every node stayed 200 (%d probes, %d not 200)",
          probes, bad);
    member_close(&ivan);
}

static void test_redis_restart(void)
{
    const char *room = "pres-7", *part = "redis restart";
    member gina = {0}, hank = {0};
    bool open = member_open(&gina, room, NODE_A, 107, "gina") &&
                member_open(&hank, room, NODE_B, 108, "hank");
    CHECK(open, "%s: gina on %s and hank on %s connected", part, node_ids[NODE_A],
          node_ids[NODE_B]);
    if (open) {
        sees_online(&gina, &hank, part);
        tl_redis_kill(&redis);
        NOTE("redis-server killed (-9)");
        while_redis_away(room);
        bool back = tl_redis_restart(&redis);
        CHECK(back, "%s: redis-server restarted on port %d, its data lost", part, redis.port);
        uint64_t t0 = time_mono_ns();
        const int listed[] = {107, 108};
        bool ok =
            back && wait_presence(NODE_C, room, &(presence_want){listed, 2, 0, -1, true, 0, 0},
                                  REDIS_BACK_WAIT_MS);
        CHECK(ok,
              "%s: within %d ms the presence API of %s (no member there) lists gina and hank, "
              "\"scope\":\"cluster\" (%.0f ms)",
              part, REDIS_BACK_WAIT_MS, node_ids[NODE_C], ms_since(t0));
        CHECK(member_connected(&gina) && member_connected(&hank),
              "%s: gina and hank stayed connected across it", part);
        CHECK_INT(live_not_200(), 0, "%s: /health/live of every node 200 after it", part);
    }
    member_close(&hank);
    member_close(&gina);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    tl_init();
    if (!tl_consumer_env_init(&env, "cluster_presence", SHARDS)) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    ws = wsc_ctx_new();
    if (ws && start_all()) {
        void (*const parts[])(void) = {test_join_and_snapshot,
                                       test_connections_count_once,
                                       test_api_on_memberless_node,
                                       test_read_in_snapshot,
                                       test_node_killed,
                                       test_node_stopped,
                                       test_redis_restart};
        const char *const names[] = {"join",        "connections", "memberless node", "read",
                                     "node killed", "stopped",     "redis restart"};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
            if (all_running(names[i])) parts[i]();
    }
    if (ws) wsc_ctx_free(ws);
    for (int i = 0; i < NODES; i++)
        if (nodes[i].pid > 0) tl_consumer_stop(&nodes[i], SIGTERM, 15000, NULL);
    tl_redis_done(&redis);
    tl_consumer_env_done(&env);
    curl_global_cleanup();
    return TEST_DONE();
}
