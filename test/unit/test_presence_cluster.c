/*
 * test_presence_cluster — cluster-wide presence (consumer/presence_cluster.h) with two nodes in
 * this process, a real redis-server (tl_redis) and a listener on the member channels that records
 * every announcement:
 *  - a user's first connection anywhere is announced ONLINE once, whichever node it opens on, and
 *    its last connection anywhere OFFLINE once; the answers carry the cluster's counts and, for a
 *    JOIN, every member of the room with username, since and read position (READ requests);
 *  - a node whose heartbeat expired (faked in Redis) is taken back: OFFLINE "timeout" on its
 *    behalf, and its entries are gone;
 *  - entries of an earlier life of a node id are replaced at start;
 *  - Redis losing its data (FLUSHALL): each node puts its members back on its next heartbeat;
 *  - Redis down: a request is answered at once from the node's table (cluster == false), never
 *    waits on it, and after Redis is back the node's members are in it again;
 *  - a node stopped on purpose takes its members back (OFFLINE "left") at once.
 */
/* test-passes: asan tsan */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../consumer/presence_cluster.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_proc.h"
#include "tl_redis.h"

#define MAX_EVENTS 128
#define WAIT_MS 10000

static tl_redis redis;
static char prefix[64];

/* ---- answers: one slot per node, filled on the module's thread ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    presence_cluster_op *last;
} answers;

static answers ans_a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL};
static answers ans_b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL};

static void on_answer(void *ctx, presence_cluster_op *op)
{
    answers *a = ctx;
    pthread_mutex_lock(&a->mu);
    presence_cluster_op_free(a->last);
    a->last = op;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* Waits for the answer to the op just submitted (ownership passes to the caller). */
static presence_cluster_op *take_answer(answers *a)
{
    uint64_t until = time_mono_ns() + (uint64_t)WAIT_MS * 1000000ull;
    pthread_mutex_lock(&a->mu);
    while (!a->last && time_mono_ns() < until) {
        pthread_mutex_unlock(&a->mu);
        time_sleep_ms(5);
        pthread_mutex_lock(&a->mu);
    }
    presence_cluster_op *op = a->last;
    a->last = NULL;
    pthread_mutex_unlock(&a->mu);
    return op;
}

static presence_cluster_op *request(presence_cluster *pc, answers *a, presence_cluster_kind kind,
                                    const char *room, uint32_t user, const char *name)
{
    presence_cluster_op *op = calloc(1, sizeof *op);
    op->kind = kind;
    snprintf(op->room, sizeof op->room, "%s", room);
    op->user_id = user;
    snprintf(op->username, sizeof op->username, "%s", name);
    op->at_ms = time_wall_ms();
    snprintf(op->reason, sizeof op->reason, "left");
    op->want_answer = kind != PCL_READ;
    presence_cluster_submit(pc, op);
    return kind == PCL_READ ? NULL : take_answer(a);
}

static void read_position(presence_cluster *pc, const char *room, uint32_t user, const char *seq)
{
    presence_cluster_op *op = calloc(1, sizeof *op);
    op->kind = PCL_READ;
    snprintf(op->room, sizeof op->room, "%s", room);
    op->user_id = user;
    snprintf(op->seq, sizeof op->seq, "%s", seq);
    presence_cluster_submit(pc, op);
}

/* ---- announcements: a listener on "<prefix>:members:*" ---- */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static char events[MAX_EVENTS][96]; /* "by room user status reason online" */
static size_t n_events;
static atomic_bool listening, listen_stop;
static pthread_t listener;

static void record(const char *text)
{
    json_t *env = json_loads(text, 0, NULL);
    json_t *ev = json_loads(json_string_value(json_object_get(env, "e")), 0, NULL);
    pthread_mutex_lock(&ev_mu);
    if (n_events < MAX_EVENTS)
        snprintf(events[n_events++], sizeof events[0], "%s %s %s %s %s %lld",
                 json_string_value(json_object_get(env, "by")),
                 json_string_value(json_object_get(ev, "roomId")),
                 json_string_value(json_object_get(ev, "userId")),
                 json_string_value(json_object_get(ev, "status")),
                 json_string_value(json_object_get(ev, "reason")),
                 (long long)json_integer_value(json_object_get(ev, "online")));
    pthread_mutex_unlock(&ev_mu);
    json_decref(ev);
    json_decref(env);
}

static void *listen_main(void *arg)
{
    (void)arg;
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    char pattern[96];
    snprintf(pattern, sizeof pattern, "%s:members:*", prefix);
    redisReply *r = c && !c->err ? redisCommand(c, "PSUBSCRIBE %s", pattern) : NULL;
    freeReplyObject(r);
    if (c && !c->err) redisSetTimeout(c, tv);
    atomic_store(&listening, r != NULL);
    while (r && !atomic_load(&listen_stop)) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK) {
            if (c->err != REDIS_ERR_IO) break; /* a timeout is REDIS_ERR_IO with EAGAIN */
            c->err = 0;
            continue;
        }
        redisReply *m = reply;
        if (m->type == REDIS_REPLY_ARRAY && m->elements == 4) record(m->element[3]->str);
        freeReplyObject(m);
    }
    if (c) redisFree(c);
    return NULL;
}

static void reset_events(void)
{
    pthread_mutex_lock(&ev_mu);
    n_events = 0;
    pthread_mutex_unlock(&ev_mu);
}

static size_t count_events(const char *want)
{
    size_t n = 0;
    pthread_mutex_lock(&ev_mu);
    for (size_t i = 0; i < n_events; i++) n += strcmp(events[i], want) == 0;
    pthread_mutex_unlock(&ev_mu);
    return n;
}

static bool wait_event(const char *want)
{
    uint64_t until = time_mono_ns() + (uint64_t)WAIT_MS * 1000000ull;
    while (!count_events(want) && time_mono_ns() < until) time_sleep_ms(20);
    return count_events(want) > 0;
}

static size_t events_now(void)
{
    pthread_mutex_lock(&ev_mu);
    size_t n = n_events;
    pthread_mutex_unlock(&ev_mu);
    return n;
}

/* ---- nodes ---- */

static presence_cluster *start_node(const char *id, answers *a)
{
    presence_cluster_config cfg = {
        .url = tl_redis_url(&redis),
        .prefix = prefix,
        .node_id = id,
        .timeout_ms = 500,
        .heartbeat_ms = 300,
        .node_ttl_ms = 1000,
        .queue_max = 64,
        .answered = on_answer,
        .ctx = a,
    };
    char err[256];
    presence_cluster *pc = presence_cluster_start(&cfg, err, sizeof err);
    CHECK(pc != NULL, "node %s started (%s)", id, pc ? "ok" : err);
    return pc;
}

/* Until the node's first RESYNC, requests are answered from its table (their effect is in the
 * RESYNC): wait until a request gets the cluster's answer. */
static bool wait_in_cluster(presence_cluster *pc, answers *a)
{
    bool in = false;
    for (int i = 0; i < 100 && !in; i++) {
        presence_cluster_op *op = request(pc, a, PCL_JOIN, "warm-up", 1, "warmup");
        in = op && op->cluster;
        presence_cluster_op_free(op);
        presence_cluster_op_free(request(pc, a, PCL_LEAVE, "warm-up", 1, "warmup"));
        if (!in) time_sleep_ms(50);
    }
    return in;
}

static const presence_member *member_of(const presence_cluster_op *op, uint32_t user)
{
    for (size_t i = 0; op && i < op->n_members; i++)
        if (op->members[i].user_id == user) return &op->members[i];
    return NULL;
}

static size_t room_size(presence_cluster *pc, const char *room, uint32_t must_have)
{
    presence_member *m = NULL;
    size_t n = 0;
    char err[256];
    bool found = false;
    if (!presence_cluster_room(pc, room, &m, &n, err, sizeof err)) return (size_t)-1;
    for (size_t i = 0; i < n; i++) found = found || m[i].user_id == must_have;
    free(m);
    return must_have && !found ? (size_t)-1 : n;
}

static bool wait_room_size(presence_cluster *pc, const char *room, uint32_t must_have, size_t n)
{
    uint64_t until = time_mono_ns() + (uint64_t)WAIT_MS * 1000000ull;
    while (room_size(pc, room, must_have) != n && time_mono_ns() < until) time_sleep_ms(50);
    return room_size(pc, room, must_have) == n;
}

/* ---- the tests ---- */

static void test_first_and_last_anywhere(presence_cluster *a, presence_cluster *b)
{
    reset_events();
    presence_cluster_op *op = request(a, &ans_a, PCL_JOIN, "r1", 42, "alice");
    CHECK(op && op->cluster && op->connections == 1 && op->online == 1,
          "alice's first connection (node a): cluster answer, 1 connection, 1 online");
    const presence_member *me = member_of(op, 42);
    CHECK(me && strcmp(me->username, "alice") == 0 && me->since_ms > 0,
          "the JOIN's snapshot has alice with username and since");
    CHECK(wait_event("a r1 42 ONLINE joined 1"), "ONLINE joined announced once, by node a");
    presence_cluster_op_free(op);

    op = request(b, &ans_b, PCL_JOIN, "r1", 42, "alice");
    CHECK(op && op->cluster && op->connections == 2 && op->online == 1,
          "alice's second connection (node b): 2 connections across the cluster, still 1 online");
    presence_cluster_op_free(op);
    read_position(a, "r1", 42, "500");
    read_position(a, "r1", 42, "40"); /* older: kept at 500 */
    /* node a applies requests in order: its answer to a later one means the READs are in */
    presence_cluster_op_free(request(a, &ans_a, PCL_JOIN, "r1-barrier", 1, "barrier"));
    presence_cluster_op_free(request(a, &ans_a, PCL_LEAVE, "r1-barrier", 1, "barrier"));
    op = request(b, &ans_b, PCL_JOIN, "r1", 7, "bob");
    me = member_of(op, 42);
    CHECK(op && op->cluster && op->online == 2 && op->n_members == 2 && me &&
              me->connections == 2 && strcmp(me->read_seq, "500") == 0,
          "bob's snapshot (node b) has alice of node a: 2 connections, read position 500 (%s)",
          me ? me->read_seq : "none");
    presence_cluster_op_free(op);
    CHECK(wait_event("b r1 7 ONLINE joined 2"), "bob ONLINE joined, online 2");
    CHECK_INT(count_events("b r1 42 ONLINE joined 2") + count_events("b r1 42 ONLINE joined 1"), 0,
              "alice's second connection announced nothing");

    op = request(a, &ans_a, PCL_LEAVE, "r1", 42, "alice");
    CHECK(op && op->cluster && op->connections == 1, "alice leaves node a: 1 connection left");
    presence_cluster_op_free(op);
    op = request(b, &ans_b, PCL_LEAVE, "r1", 42, "alice");
    CHECK(op && op->cluster && op->connections == 0 && op->online == 1,
          "alice leaves node b: her last connection, 1 online");
    presence_cluster_op_free(op);
    CHECK(wait_event("b r1 42 OFFLINE left 1"), "OFFLINE left announced once, by node b");
    CHECK_INT(count_events("a r1 42 OFFLINE left 1"), 0, "node a announced no OFFLINE");
    CHECK_INT(room_size(a, "r1", 7), 1, "the room API (node a) lists bob alone");
}

/* A node "ghost" with a member and no heartbeat, written straight into Redis. */
static void fake_dead_node(const char *room, const char *user)
{
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    redisReply *r[4];
    r[0] = redisCommand(c, "HSET %s:presnode:ghost %s%s%s 1", prefix, room, " ", user);
    r[1] = redisCommand(c, "HINCRBY %s:pres:%s %s 1", prefix, room, user);
    r[2] = redisCommand(c, "HSET %s:presinfo:%s %s {\"s\":\"1\",\"n\":\"ghosty\"}", prefix, room,
                        user);
    r[3] = redisCommand(c, "SADD %s:presnodes ghost", prefix);
    bool ok = true;
    for (int i = 0; i < 4; i++) {
        ok = ok && r[i] && r[i]->type == REDIS_REPLY_INTEGER;
        freeReplyObject(r[i]);
    }
    redisFree(c);
    CHECK(ok, "a dead node 'ghost' with user %s in room %s faked in Redis", user, room);
}

static void test_dead_node_taken_back(presence_cluster *a)
{
    reset_events();
    fake_dead_node("r2", "99");
    CHECK(wait_event("ghost r2 99 OFFLINE timeout 0"),
          "OFFLINE timeout for the dead node's user, announced on its behalf");
    CHECK(wait_room_size(a, "r2", 0, 0), "the room has nobody left");
    char reply[64];
    char cmd[128];
    snprintf(cmd, sizeof cmd, "SISMEMBER %s:presnodes ghost", prefix);
    CHECK(tl_redis_call(redis.port, cmd, reply, sizeof reply, 2000) && strcmp(reply, ":0") == 0,
          "the dead node is no longer listed (%s)", reply);
}

static void test_earlier_life_replaced(void)
{
    /* node "c" left an entry (as a crash would) and its heartbeat still runs */
    reset_events();
    char cmd[160], reply[64];
    snprintf(cmd, sizeof cmd, "SET %s:alive:c 1 PX 60000", prefix);
    CHECK(tl_redis_call(redis.port, cmd, reply, sizeof reply, 2000), "node c's heartbeat set");
    redisContext *rc = redisConnect("127.0.0.1", redis.port);
    freeReplyObject(redisCommand(rc, "HSET %s:presnode:c %s 1", prefix, "r3 5"));
    freeReplyObject(redisCommand(rc, "HINCRBY %s:pres:r3 5 1", prefix));
    freeReplyObject(redisCommand(rc, "SADD %s:presnodes c", prefix));
    redisFree(rc);
    static answers ans_c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL};
    presence_cluster *c = start_node("c", &ans_c);
    CHECK(c && wait_event("c r3 5 OFFLINE left 0"),
          "node c started again: its earlier life's member is taken back at once");
    presence_cluster_stop(c, time_mono_ns() + 3000000000ull);
    presence_cluster_free(c);
}

static void test_redis_lost_data(presence_cluster *a, presence_cluster *b)
{
    presence_cluster_op *op = request(a, &ans_a, PCL_JOIN, "r4", 11, "carol");
    presence_cluster_op_free(op);
    op = request(b, &ans_b, PCL_JOIN, "r4", 12, "dave");
    presence_cluster_op_free(op);
    char reply[64];
    CHECK(tl_redis_call(redis.port, "FLUSHALL", reply, sizeof reply, 5000), "Redis flushed");
    CHECK(wait_room_size(a, "r4", 11, 2) && wait_room_size(a, "r4", 12, 2),
          "each node puts its member back after its next heartbeat: carol and dave online");
}

static void test_redis_down(presence_cluster *a)
{
    tl_redis_kill(&redis);
    uint64_t t0 = time_mono_ns();
    presence_cluster_op *op = request(a, &ans_a, PCL_JOIN, "r5", 21, "erin");
    double ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(op && !op->cluster, "Redis down: the JOIN is answered from the node's table");
    NOTE("answered in %.0f ms (command timeout 500 ms)", ms);
    CHECK(ms < 5000, "and does not wait on Redis (%.0f ms)", ms);
    presence_cluster_op_free(op);
    op = request(a, &ans_a, PCL_JOIN, "r5", 22, "fred");
    CHECK(op && !op->cluster, "a second request while down: answered locally too");
    presence_cluster_op_free(op);
    CHECK(tl_redis_restart(&redis), "Redis restarted (empty)");
    CHECK(wait_room_size(a, "r5", 21, 2) && wait_room_size(a, "r5", 22, 2),
          "after Redis is back, erin and fred (joined while it was down) are online in it");
    op = request(a, &ans_a, PCL_LEAVE, "r5", 21, "erin");
    CHECK(op && op->cluster && op->connections == 0, "a LEAVE after the outage is the cluster's");
    presence_cluster_op_free(op);
}

static void test_stop_takes_back(presence_cluster *b)
{
    reset_events();
    presence_cluster_op *op = request(b, &ans_b, PCL_JOIN, "r6", 31, "gina");
    presence_cluster_op_free(op);
    size_t before = events_now();
    CHECK(presence_cluster_stop(b, time_mono_ns() + 3000000000ull), "node b stops in time");
    CHECK(wait_event("b r6 31 OFFLINE left 0") && events_now() > before,
          "stopping node b announced its member OFFLINE left");
}

int main(void)
{
    tl_init();
    char log_dir[] = "/tmp/test_presence_cluster_XXXXXX";
    if (!mkdtemp(log_dir) || !tl_redis_start(&redis, log_dir)) {
        CHECK(false, "redis-server started");
        return TEST_DONE();
    }
    snprintf(prefix, sizeof prefix, "test-pres-%d", (int)getpid());
    pthread_create(&listener, NULL, listen_main, NULL);
    for (int i = 0; i < 100 && !atomic_load(&listening); i++) time_sleep_ms(20);
    CHECK(atomic_load(&listening), "listening on the member channels");
    presence_cluster *a = start_node("a", &ans_a);
    presence_cluster *b = start_node("b", &ans_b);
    if (a && b) {
        CHECK(wait_in_cluster(a, &ans_a) && wait_in_cluster(b, &ans_b),
              "both nodes answer from the cluster once they have put their members in it");
        test_first_and_last_anywhere(a, b);
        test_dead_node_taken_back(a);
        test_earlier_life_replaced();
        test_redis_lost_data(a, b);
        test_redis_down(a);
        /* the listener lost its connection with the restart: listen again */
        atomic_store(&listen_stop, true);
        pthread_join(listener, NULL);
        atomic_store(&listen_stop, false);
        atomic_store(&listening, false);
        pthread_create(&listener, NULL, listen_main, NULL);
        for (int i = 0; i < 100 && !atomic_load(&listening); i++) time_sleep_ms(20);
        test_stop_takes_back(b);
    }
    CHECK(presence_cluster_stop(a, time_mono_ns() + 3000000000ull), "node a stops in time");
    presence_cluster_stop(b, time_mono_ns() + 3000000000ull);
    presence_cluster_free(a);
    presence_cluster_free(b);
    presence_cluster_op_free(ans_a.last);
    presence_cluster_op_free(ans_b.last);
    atomic_store(&listen_stop, true);
    pthread_join(listener, NULL);
    tl_redis_done(&redis);
    return TEST_DONE();
}
