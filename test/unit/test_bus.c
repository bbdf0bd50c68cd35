/*
 * test_bus — the cluster bus (consumer/bus.h) with two nodes in this process and a real
 * redis-server (tl_redis): settings refused at start, every node (the publisher too) delivers a
 * room's events once and in order, a publish missed on the channel is filled from the room's
 * stream, a dropped publish ("lost") and a Redis that lost its data (new epoch) reach room_lost()
 * with the sequence number of the event that revealed them, the subscriber connection catches up
 * after Redis comes back, the deletes' wait (bus_wait_published) holds while Redis is down, and
 * a member event (bus_relay) reaches the other node once and not its own, and after a failover
 * (another replication history, offsets gone back) a node trusts no offset it tracked.
 */
/* test-passes: asan tsan */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../consumer/bus.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_proc.h"
#include "tl_redis.h"

#define MAX_SEEN 512

typedef struct {
    const char *name;
    pthread_mutex_t mu;
    char seen[MAX_SEEN][160]; /* "room:seq" in delivery order */
    size_t n_seen;
    char lost[16][160]; /* "room:seq" of room_lost() calls */
    size_t n_lost;
    char relayed[16][200]; /* "room|event" of relay() calls */
    size_t n_relayed;
} node_log;

static node_log log_a = {.name = "a", .mu = PTHREAD_MUTEX_INITIALIZER};
static node_log log_b = {.name = "b", .mu = PTHREAD_MUTEX_INITIALIZER};
static tl_redis redis;
static char prefix[64];

static void on_deliver(void *ctx, const chat_message *m, const char *seq, const char *received_at)
{
    (void)received_at;
    node_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    if (l->n_seen < MAX_SEEN)
        snprintf(l->seen[l->n_seen++], sizeof l->seen[0], "%s:%s", m->room_id, seq);
    pthread_mutex_unlock(&l->mu);
}

static void on_lost(void *ctx, const char *room, const char *seq)
{
    node_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    if (l->n_lost < 16) snprintf(l->lost[l->n_lost++], sizeof l->lost[0], "%s:%s", room, seq);
    pthread_mutex_unlock(&l->mu);
}

static void on_relay(void *ctx, const char *room, const char *event_json)
{
    node_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    if (l->n_relayed < 16)
        snprintf(l->relayed[l->n_relayed++], sizeof l->relayed[0], "%s|%s", room, event_json);
    pthread_mutex_unlock(&l->mu);
}

static size_t relayed_count(node_log *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n_relayed;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static size_t seen_count(node_log *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n_seen;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static bool wait_seen(node_log *l, size_t n, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (seen_count(l) >= n) return true;
        time_sleep_ms(20);
    }
    return seen_count(l) >= n;
}

static bus_config config(const char *url, const char *node, node_log *l)
{
    return (bus_config){.url = url,
                        .prefix = prefix,
                        .node_id = node,
                        .outbox = 64,
                        .history = 100,
                        .ttl_s = 600,
                        .timeout_ms = 500,
                        .deliver = on_deliver,
                        .room_lost = on_lost,
                        .relay = on_relay,
                        .ctx = l};
}

static chat_message message(const char *room, int n)
{
    char frame[256], err[160];
    snprintf(frame, sizeof frame,
             "{\"userId\":\"7\",\"username\":\"alice\",\"message\":\"m%d\","
             "\"timestamp\":\"2026-12-07T12:00:00Z\",\"messageType\":\"TEXT\"}",
             n);
    chat_message m;
    if (chat_frame_parse(frame, strlen(frame), 4096, &m, err, sizeof err) != CHAT_OK)
        NOTE("frame: %s", err);
    snprintf(m.room_id, sizeof m.room_id, "%s", room);
    snprintf(m.server_id, sizeof m.server_id, "test");
    snprintf(m.client_ip, sizeof m.client_ip, "127.0.0.1");
    snprintf(m.received_at, sizeof m.received_at, "2026-12-07T12:00:00.000Z");
    chat_message_assign_id(&m);
    return m;
}

static uint64_t publish(bus *b, const char *room, int seq)
{
    chat_message m = message(room, seq);
    char s[24];
    snprintf(s, sizeof s, "%d", seq);
    return bus_publish(b, &m, s, m.received_at);
}

/* The i-th delivery of l, "" past the end. */
static const char *seen_at(node_log *l, size_t i)
{
    pthread_mutex_lock(&l->mu);
    const char *s = i < l->n_seen ? l->seen[i] : "";
    pthread_mutex_unlock(&l->mu);
    return s;
}

static void reset(node_log *l)
{
    pthread_mutex_lock(&l->mu);
    l->n_seen = l->n_lost = l->n_relayed = 0;
    pthread_mutex_unlock(&l->mu);
}

static void test_refused_settings(void)
{
    char err[256];
    static const struct {
        const char *url, *why;
    } bad[] = {{"http://127.0.0.1:6379", "redis://"},
               {"rediss://127.0.0.1:6379", "TLS"},
               {"redis://user:pw@127.0.0.1:6379", "credentials"},
               {"redis://127.0.0.1:0", "port"},
               {"redis://127.0.0.1:6379/x", "database"},
               {"redis://:6379", "host"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bus_config c = config(bad[i].url, "a", &log_a);
        bus *b = bus_start(&c, err, sizeof err);
        CHECK(!b && strstr(err, bad[i].why), "%s refused: %s", bad[i].url, err);
        bus_free(b);
    }
    int closed = tl_free_port();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", closed);
    bus_config c = config(url, "a", &log_a);
    bus *b = bus_start(&c, err, sizeof err);
    CHECK(!b && strstr(err, "connect"), "no Redis at start: refused (%s)", err);
    bus_free(b);
}

/* Raw Redis access for faking what the bus would see after a missed publish. */
static redisReply *raw(const char *fmt, const char *a, const char *b2)
{
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    redisReply *r = c && !c->err ? redisCommand(c, fmt, a, b2) : NULL;
    if (c) redisFree(c);
    return r;
}

static void test_order_and_gaps(bus *a, bus *b)
{
    /* Both nodes publish into one room, one after the other, as competing consumers do: the
     * next message is received only once the previous one was deleted, i.e. published. */
    bool all_published = true;
    for (int i = 1; i <= 20; i++) {
        bus *node = i % 2 ? a : b;
        all_published = bus_wait_published(node, publish(node, "room-1", i), 5000) && all_published;
    }
    CHECK(all_published, "each publish confirmed before the next");
    CHECK(wait_seen(&log_a, 20, 10000) && wait_seen(&log_b, 20, 10000),
          "both nodes deliver all 20 events (a %zu, b %zu)", seen_count(&log_a),
          seen_count(&log_b));
    bool same = true, ordered = true;
    for (size_t i = 0; i < 20; i++) {
        char want[48];
        snprintf(want, sizeof want, "room-1:%zu", i + 1);
        ordered = ordered && strcmp(seen_at(&log_a, i), want) == 0;
        same = same && strcmp(seen_at(&log_a, i), seen_at(&log_b, i)) == 0;
    }
    CHECK(ordered, "node a delivers them in publish order, its own events too");
    CHECK(same, "node b delivers the same sequence");
    time_sleep_ms(200);
    CHECK_INT(seen_count(&log_a), 20, "no duplicate on a");

    /* A publish the channel never carried: offset and stream advanced, no PUBLISH. */
    char meta[128], hist[128];
    snprintf(meta, sizeof meta, "%s:meta:room-1", prefix);
    snprintf(hist, sizeof hist, "%s:hist:room-1", prefix);
    redisReply *o = raw("HINCRBY %s o %s", meta, "1");
    long long off = o && o->type == REDIS_REPLY_INTEGER ? o->integer : -1;
    freeReplyObject(o);
    chat_message m = message("room-1", 21);
    char *body = queue_message_to_json(&m);
    char event[2048], id[32];
    /* an envelope as another node's publisher writes it (bus.h) */
    json_t *env = json_pack("{s:s, s:s, s:s, s:s}", "o", "elsewhere", "s", "21", "r", m.received_at,
                            "m", body);
    char *text = json_dumps(env, JSON_COMPACT);
    snprintf(event, sizeof event, "%s", text);
    free(text);
    json_decref(env);
    free(body);
    snprintf(id, sizeof id, "%lld-0", off);
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    redisReply *x = redisCommand(c, "XADD %s %s d %s", hist, id, event);
    CHECK(off == 21 && x && x->type == REDIS_REPLY_STRING, "a missed publish faked at offset %lld",
          off);
    freeReplyObject(x);
    redisFree(c);
    publish(a, "room-1", 22);
    CHECK(wait_seen(&log_b, 22, 10000), "after the gap node b has 22 events");
    CHECK_STR(seen_at(&log_b, 20), "room-1:21", "the missed event is filled from the stream");
    CHECK_STR(seen_at(&log_b, 21), "room-1:22", "before the one that revealed the gap");
    CHECK_INT(log_b.n_lost, 0, "nothing reported lost");
}

static void test_epoch_change(bus *a)
{
    reset(&log_a);
    reset(&log_b);
    char reply[64];
    CHECK(tl_redis_call(redis.port, "FLUSHALL", reply, sizeof reply, 5000),
          "Redis loses its data (FLUSHALL)");
    publish(a, "room-1", 30);
    CHECK(wait_seen(&log_b, 1, 10000), "node b gets the first event of the new epoch");
    pthread_mutex_lock(&log_b.mu);
    CHECK(log_b.n_lost == 1 && strcmp(log_b.lost[0], "room-1:30") == 0,
          "node b reports the room lost up to that event (%zu: %s)", log_b.n_lost,
          log_b.n_lost ? log_b.lost[0] : "");
    pthread_mutex_unlock(&log_b.mu);
    CHECK_STR(seen_at(&log_b, 0), "room-1:30", "then delivers it");
}

static void test_redis_restart(bus *a)
{
    reset(&log_a);
    reset(&log_b);
    tl_redis_kill(&redis);
    uint64_t ticket = publish(a, "room-2", 40);
    CHECK(ticket > 0, "a publish while Redis is down is queued (ticket %llu)",
          (unsigned long long)ticket);
    CHECK(!bus_wait_published(a, ticket, 700), "the deletes' wait holds while Redis is down");
    char detail[256];
    CHECK(!bus_check(a, detail, sizeof detail), "readiness: %s", detail);
    CHECK(tl_redis_restart(&redis), "Redis restarted (empty)");
    CHECK(bus_wait_published(a, ticket, 15000), "once Redis is back the event is published");
    CHECK(wait_seen(&log_b, 1, 15000), "and delivered on node b");
    CHECK_STR(seen_at(&log_b, 0), "room-2:40", "the waiting event");
    bool up = false;
    for (int i = 0; i < 100 && !up; i++, time_sleep_ms(100))
        up = bus_check(a, detail, sizeof detail);
    CHECK(up, "readiness UP again: %s", detail);
}

/* A failover to a replica that had not received the room's last writes: Redis's history changes
 * (DEBUG CHANGE-REPL-ID), the room's offset goes back with its epoch unchanged, and the connections
 * drop. Node b must not trust the offsets it tracked: it reports the room lost at its newest event
 * and delivers the next publish — whose offset it had already seen — instead of dropping it. */
static void test_failover(bus *a)
{
    reset(&log_b);
    for (int i = 1; i <= 3; i++) publish(a, "room-4", 40 + i);
    CHECK(wait_seen(&log_b, 3, 10000), "failover: node b has the room's 3 events");
    char meta[128], hist[128], reply[64];
    snprintf(meta, sizeof meta, "%s:meta:room-4", prefix);
    snprintf(hist, sizeof hist, "%s:hist:room-4", prefix);
    freeReplyObject(raw("HSET %s o %s", meta, "1")); /* the replica had offset 1 only */
    freeReplyObject(raw("XDEL %s %s", hist, "2-0"));
    freeReplyObject(raw("XDEL %s %s", hist, "3-0"));
    char killed[64] = "";
    bool changed = tl_redis_call(redis.port, "DEBUG CHANGE-REPL-ID", reply, sizeof reply, 5000) &&
                   strcmp(reply, "+OK") == 0;
    bool cut = tl_redis_call(redis.port, "CLIENT KILL TYPE pubsub", killed, sizeof killed, 5000) &&
               killed[0] == ':' && atoi(killed + 1) >= 1;
    CHECK(changed && cut,
          "failover: another replication history (%s), offsets back to 1, subscriber connections "
          "cut (%s)",
          reply, killed);
    pthread_mutex_lock(&log_b.mu);
    size_t lost_before = log_b.n_lost;
    pthread_mutex_unlock(&log_b.mu);
    time_sleep_ms(1500);      /* b reconnects (its backoff starts at 100 ms) */
    publish(a, "room-4", 50); /* offset 2 again */
    bool got = false;
    for (int i = 0; i < 500 && !got; i++, time_sleep_ms(20)) {
        pthread_mutex_lock(&log_b.mu);
        for (size_t k = 3; k < log_b.n_seen && !got; k++)
            got = strcmp(log_b.seen[k], "room-4:50") == 0;
        pthread_mutex_unlock(&log_b.mu);
    }
    CHECK(got, "failover: node b delivers the next event although its offset was seen before");
    pthread_mutex_lock(&log_b.mu);
    bool lost = log_b.n_lost > lost_before;
    pthread_mutex_unlock(&log_b.mu);
    CHECK(lost, "failover: and reported the room lost first (its subscribers resume from the "
                "store)");
}

/* A member event relayed by a reaches b as it was, and never comes back to a. */
static void test_relay(bus *a)
{
    reset(&log_a);
    reset(&log_b);
    const char *event = "{\"type\":\"READ\",\"roomId\":\"room-3\",\"userId\":\"7\"}";
    CHECK(bus_relay(a, "room-3", event), "a member event is queued on a");
    CHECK(!bus_relay(a, "not a room!", event), "one for an invalid room id is refused");
    for (int i = 0; i < 250 && relayed_count(&log_b) < 1; i++) time_sleep_ms(20);
    time_sleep_ms(200); /* a late second copy, or one on a, would show now */
    char want[200];
    snprintf(want, sizeof want, "room-3|%s", event);
    pthread_mutex_lock(&log_b.mu);
    bool same = log_b.n_relayed == 1 && strcmp(log_b.relayed[0], want) == 0;
    pthread_mutex_unlock(&log_b.mu);
    CHECK(same, "node b gets it once, room and event as sent");
    CHECK_INT(relayed_count(&log_a), 0, "node a does not get its own back");
    CHECK_INT(seen_count(&log_b), 0, "a member event is no chat event: nothing delivered");
}

int main(void)
{
    tl_init();
    test_refused_settings();
    char log_dir[] = "/tmp/test_bus_XXXXXX";
    if (!mkdtemp(log_dir) || !tl_redis_start(&redis, log_dir)) {
        CHECK(false, "redis-server started");
        return TEST_DONE();
    }
    snprintf(prefix, sizeof prefix, "test-bus-%d", (int)getpid());
    char err[256];
    bus_config ca = config(tl_redis_url(&redis), "a", &log_a);
    bus_config cb = config(tl_redis_url(&redis), "b", &log_b);
    bus *a = bus_start(&ca, err, sizeof err);
    CHECK(a != NULL, "node a started (%s)", a ? "ok" : err);
    bus *b = a ? bus_start(&cb, err, sizeof err) : NULL;
    CHECK(b != NULL, "node b started (%s)", b ? "ok" : err);
    if (a && b) {
        time_sleep_ms(300); /* both subscribed */
        test_order_and_gaps(a, b);
        test_epoch_change(a);
        test_relay(a);
        test_failover(a);
        test_redis_restart(a);
    }
    uint64_t deadline = time_mono_ns() + 5000000000ull;
    CHECK(bus_stop(a, deadline) && bus_stop(b, deadline), "both nodes stop in time");
    bus_free(a);
    bus_free(b);
    tl_redis_done(&redis);
    return TEST_DONE();
}
