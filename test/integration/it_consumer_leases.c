/*
 * it_consumer_leases — one consumer per queue shard (consumer/shard_lease.h). Two consumers on
 * the same database and queues: the first holds every shard's lease and polls them all; the second
 * stands by — it consumes nothing, says so in its log, /health/ready (shards DOWN naming them),
 * /health/serving (503) and its metrics. kill -9 of the holder: the standby takes every shard
 * over within a bound and serves; SIGTERM of the holder: the same. PostgreSQL stopped while a node
 * holds its leases: it keeps polling and broadcasting live (leases held stay held), and once the
 * database is back it holds them again on the server and everything is stored exactly once.
 * Uses a private PostgreSQL (deploy/local/stack up --pg-only), stopped in the last part.
 */
/* test-passes: asan tsan */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_pg.h"
#include "tl_proc.h"
#include "tl_stack.h"
#include "uuid.h"
#include "wsclient.h"

#define SHARDS 4
#define PER_ROOM 10
#define ROUND (SHARDS * PER_ROOM)
#define ROUNDS 4
#define TAKEOVER_MS 20000

static tl_consumer_env env;
static tl_stack stack;
static chat_message sent[ROUNDS * ROUND];
static const char *const cenv[] = {
    "CHATFLOW_SHARD_LEASE_RETRY_MS=1000", "CHATFLOW_VISIBILITY_TIMEOUT_S=10",
    "CHATFLOW_DB_SPILL_AFTER_MS=500",     "CHATFLOW_DB_RETRY_MAX_BACKOFF_MS=500",
    "CHATFLOW_STOP_TIMEOUT_S=10",         NULL};

/* Advisory locks of the two-int4 form (ours) granted in the test's database. */
static const char locks_sql[] =
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND "
    "database = (SELECT oid FROM pg_database WHERE datname = current_database())";

static double metric(const tl_consumer *c, const char *name)
{
    return tl_metric(c->admin_port, name, NULL);
}

/* Polls a metric until it equals want or timeout_ms passes; returns the last value. */
static double wait_metric(const tl_consumer *c, const char *name, double want, int timeout_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    double v = metric(c, name);
    while (v != want && time_mono_ns() < until) {
        time_sleep_ms(100);
        v = metric(c, name);
    }
    return v;
}

static bool log_contains(const tl_consumer *c, const char *needle)
{
    FILE *f = fopen(c->log_path, "r");
    char line[4096];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    if (f) fclose(f);
    return found;
}

/* Sends round r (messages to every room 1..SHARDS, so to every shard). */
static bool send_round(int r) { return tl_consumer_send_messages(&env, &sent[r * ROUND], ROUND); }

/* Every message of rounds 0..r stored, each once. */
static void check_stored(int r, const char *when)
{
    long long want = (long long)(r + 1) * ROUND;
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", want, 60000), want,
              "%s: all %lld messages stored", when, want);
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(DISTINCT message_id) FROM messages"), want,
              "%s: each exactly once", when);
}

static bool start(tl_consumer *c, const char *name)
{
    if (tl_consumer_start(&env, c, name, cenv)) return true;
    CHECK(false, "consumer %s started", name);
    return false;
}

/* 1. A holds every shard; B, started next to it, stands by and says so everywhere. */
static bool test_second_consumer_stands_by(tl_consumer *a, tl_consumer *b)
{
    if (!start(a, "consumer-a")) return false;
    CHECK_INT(wait_metric(a, "chatflow_shard_leases_held", SHARDS, 10000), SHARDS,
              "A holds the leases of all %d shards", SHARDS);
    CHECK_INT(tl_pg_wait_scalar(env.pg, locks_sql, SHARDS, 5000), SHARDS,
              "PostgreSQL shows %d advisory locks held", SHARDS);
    if (!start(b, "consumer-b")) return false;
    CHECK_INT(wait_metric(b, "chatflow_shard_leases_standby", SHARDS, 10000), SHARDS,
              "B stands by for all %d shards (chatflow_shard_leases_standby)", SHARDS);
    CHECK_INT(metric(b, "chatflow_shard_leases_held"), 0, "B holds no lease");
    CHECK_INT(metric(a, "chatflow_shard_leases_standby"), 0, "A stands by for none");
    CHECK_INT(tl_http_status(b->admin_port, "/health/serving"), 503,
              "B's /health/serving is 503: no subscriber is routed to a standby");
    CHECK_INT(tl_http_status(a->admin_port, "/health/serving"), 200, "A's is 200");
    long st = 0;
    char *ready = tl_http_get(b->admin_port, "/health/ready", &st);
    CHECK(st == 503 && ready && strstr(ready, "\"shards\":{\"status\":\"DOWN\"") &&
              strstr(ready, "standby for shards 1-4"),
          "B's /health/ready is 503 with shards DOWN naming shards 1-4 (%s)",
          ready ? ready : "no answer");
    free(ready);
    CHECK(log_contains(b, "polled by another consumer; this node stands by") &&
              log_contains(b, "would each broadcast only part of its rooms"),
          "B's log says so loudly");
    CHECK(!log_contains(a, "polled by another consumer"), "A's log does not");
    CHECK(send_round(0), "%d messages sent to every shard", ROUND);
    check_stored(0, "two consumers");
    time_sleep_ms(1500); /* a receive B would make has had its chance */
    CHECK_INT(metric(b, "chatflow_messages_consumed_total"), 0, "B consumed none of them");
    CHECK_INT(metric(a, "chatflow_messages_consumed_total"), ROUND, "A consumed all %d", ROUND);
    return true;
}

/* The standby takes every shard over within TAKEOVER_MS and serves. */
static void check_takeover(tl_consumer *c, const char *who, uint64_t t0)
{
    double held = wait_metric(c, "chatflow_shard_leases_held", SHARDS, TAKEOVER_MS);
    CHECK_INT(held, SHARDS, "%s took every shard over in %.1f s", who,
              (double)(time_mono_ns() - t0) / 1e9);
    CHECK_INT(metric(c, "chatflow_shard_leases_standby"), 0, "%s stands by for none now", who);
    CHECK_INT(metric(c, "chatflow_shard_lease_takeovers_total"), SHARDS, "%s counted %d takeovers",
              who, SHARDS);
    CHECK(tl_http_wait_status(c->admin_port, "/health/serving", 200, 5000),
          "%s's /health/serving is 200", who);
    CHECK(log_contains(c, "taken over"), "%s's log names the takeover", who);
}

/* 2. kill -9 of the holder: its session ends with its socket, the standby takes over. */
static void test_takeover_after_kill(tl_consumer *a, tl_consumer *b)
{
    bool in_time = false;
    uint64_t t0 = time_mono_ns();
    tl_consumer_stop(a, SIGKILL, 5000, &in_time);
    CHECK(in_time, "A killed with SIGKILL");
    check_takeover(b, "B", t0);
    CHECK(send_round(1), "%d more messages sent", ROUND);
    check_stored(1, "after the takeover");
    CHECK_INT(wait_metric(b, "chatflow_messages_consumed_total", ROUND, 10000), ROUND,
              "B consumed the new ones");
}

/* 3. SIGTERM of the holder: its leases are released at the end of its stop. */
static bool test_takeover_after_sigterm(tl_consumer *b, tl_consumer *c)
{
    if (!start(c, "consumer-c")) return false;
    CHECK_INT(wait_metric(c, "chatflow_shard_leases_standby", SHARDS, 10000), SHARDS,
              "C, started next to B, stands by");
    bool in_time = false;
    uint64_t t0 = time_mono_ns();
    int st = tl_consumer_stop(b, SIGTERM, 15000, &in_time);
    CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0, "B stopped with SIGTERM: exit 0");
    check_takeover(c, "C", t0);
    CHECK(send_round(2), "%d more messages sent", ROUND);
    check_stored(2, "after the SIGTERM takeover");
    return true;
}

/* Subscribers on every room of C; seen[] marks broadcast messages of round 3. */
static wsc_ctx *ws_ctx;
static wsc_conn *subs[SHARDS + 1];
static bool seen[ROUND];

static bool subscribe_all(int port)
{
    ws_ctx = wsc_ctx_new();
    return tl_consumer_subscribe_rooms(ws_ctx, port, subs, SHARDS);
}

static size_t read_round_broadcasts(int round, int timeout_ms)
{
    const chat_message *m = &sent[round * ROUND];
    size_t n = 0;
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (n < ROUND && time_mono_ns() < until)
        for (int r = 1; r <= SHARDS; r++) {
            size_t len;
            char *frame = subs[r] ? wsc_recv(subs[r], 50, &len) : NULL;
            const char *p = frame ? strstr(frame, "\"messageId\":\"") : NULL;
            for (size_t i = 0; p && i < ROUND; i++)
                if (!seen[i] && strncmp(p + 13, m[i].message_id, UUID_STR_BUF - 1) == 0) {
                    seen[i] = true;
                    n++;
                    break;
                }
            free(frame);
        }
    return n;
}

static void unsubscribe_all(void)
{
    for (int r = 1; r <= SHARDS; r++)
        if (subs[r]) wsc_free(subs[r]);
    if (ws_ctx) wsc_ctx_free(ws_ctx);
}

/* 4. PostgreSQL stopped while C holds every lease: C keeps polling and broadcasting; back, it
 * holds the locks on the server again and everything is stored. */
static void test_database_outage(tl_consumer *c)
{
    CHECK(subscribe_all(c->ws_port), "a subscriber on every room of C");
    PQfinish(env.pg);
    env.pg = NULL;
    CHECK(tl_stack_cmd(&stack, "stop-pg"), "PostgreSQL stopped");
    double errors = 0;
    for (int i = 0; i < 150 && errors < 1; i++) {
        errors = metric(c, "chatflow_shard_lease_errors_total");
        if (errors < 1) time_sleep_ms(100);
    }
    CHECK(errors >= 1, "the lease thread noticed the outage (%.0f failed rounds)", errors);
    CHECK(send_round(3), "%d messages sent during the outage", ROUND);
    CHECK_INT(read_round_broadcasts(3, 30000), ROUND,
              "live chat goes on: every one is broadcast while the database is down");
    CHECK_INT(metric(c, "chatflow_shard_leases_held"), SHARDS,
              "chatflow_shard_leases_held stays %d during the outage", SHARDS);
    CHECK_INT(tl_http_status(c->admin_port, "/health/serving"), 200,
              "/health/serving stays 200 during the outage");
    CHECK(tl_stack_cmd(&stack, "start-pg"), "PostgreSQL started again");
    env.pg = tl_pg_connect(env.db_url);
    if (!env.pg) {
        CHECK(false, "test reconnects to PostgreSQL");
        return;
    }
    CHECK_INT(tl_pg_wait_scalar(env.pg, locks_sql, SHARDS, 30000), SHARDS,
              "C holds its %d advisory locks on the server again", SHARDS);
    CHECK_INT(metric(c, "chatflow_shard_leases_held"), SHARDS, "and still polls every shard");
    check_stored(3, "after the outage");
    bool in_time = false;
    int st = tl_consumer_stop(c, SIGTERM, 15000, &in_time);
    CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0, "C stopped with SIGTERM: exit 0");
    CHECK_INT(tl_pg_wait_scalar(env.pg, locks_sql, 0, 5000), 0,
              "its locks are released once it stopped");
}

int main(void)
{
    tl_init();
    char log_dir[512];
    tl_log_dir("consumer_leases", log_dir, sizeof log_dir);
    tl_stack_init(&stack, "consumer_leases", log_dir);
    if (!tl_stack_cmd(&stack, "up --pg-only") || !tl_stack_load_env(&stack)) {
        CHECK(false, "private PostgreSQL started (log %s/stack.log)", log_dir);
        return TEST_DONE();
    }
    if (!tl_consumer_env_init(&env, "consumer_leases", SHARDS) ||
        !(env.pg = tl_pg_connect(env.db_url))) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    for (int i = 0; i < ROUNDS * ROUND; i++)
        tl_chat_message(&sent[i], 1 + i % SHARDS, 1 + i % 13, "lease test", "TEXT");
    tl_consumer a, b, c;
    if (test_second_consumer_stands_by(&a, &b)) {
        test_takeover_after_kill(&a, &b);
        if (test_takeover_after_sigterm(&b, &c)) test_database_outage(&c);
    }
    unsubscribe_all();
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
