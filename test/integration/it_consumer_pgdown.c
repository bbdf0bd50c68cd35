/*
 * it_consumer_pgdown — PostgreSQL stopped for 30 s while messages flow, with subscribers: live
 * chat goes on (every message sent during the outage is broadcast while the database is still
 * down, and the room queues keep draining: the consumer moves what it cannot store to the spill
 * queue); /health/ready turns 503 naming postgres while /health/live stays 200; when the database
 * returns, every message is stored exactly once by itself, and the spill queue and the DLQ are
 * empty. Then: kill -9 of the consumer while it spills (a new consumer finishes the job, nothing
 * lost, nothing stored twice), and SIGTERM with the database down (exit 0 within the stop timeout,
 * every message still in SQS — room queue or spill queue — and none in the DLQ). Uses a private
 * PostgreSQL (its own stack directory, deploy/local/stack up --pg-only) so stopping it disturbs no
 * other test.
 */
/* test-passes: asan */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_pg.h"
#include "tl_proc.h"
#include "tl_stack.h"
#include "uuid.h"
#include "wsclient.h"

#define ROOMS 4
#define BEFORE 400
#define DURING 1200 /* 300 a room: within a subscriber's send queue */
#define N (BEFORE + DURING)
#define OUTAGE_S 30

static tl_consumer_env env;
static chat_message sent[N];
static tl_stack stack;

static bool send_range(size_t from, size_t to)
{
    return tl_consumer_send_messages(&env, &sent[from], to - from);
}

/* Subscribers, one a room, read on this thread; seen[i] marks sent[i] as broadcast. */
static wsc_ctx *ws_ctx;
static wsc_conn *subs[ROOMS + 1];
static bool seen[N];

static bool subscribe_all(int port)
{
    ws_ctx = wsc_ctx_new();
    return tl_consumer_subscribe_rooms(ws_ctx, port, subs, ROOMS);
}

/* Marks the messageId a frame carries (a frame is one event). */
static void mark_seen(const char *frame)
{
    const char *p = strstr(frame, "\"messageId\":\"");
    if (!p) return;
    p += strlen("\"messageId\":\"");
    for (size_t i = 0; i < N; i++)
        if (!seen[i] && strncmp(p, sent[i].message_id, UUID_STR_BUF - 1) == 0) {
            seen[i] = true;
            return;
        }
}

static size_t count_seen(size_t from, size_t to)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++) n += seen[i];
    return n;
}

/* Reads every subscriber until messages [from, to) were all broadcast or timeout_ms passes. */
static size_t read_broadcasts(size_t from, size_t to, int timeout_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (count_seen(from, to) < to - from && time_mono_ns() < until)
        for (int r = 1; r <= ROOMS; r++) {
            size_t len;
            char *frame = subs[r] ? wsc_recv(subs[r], 50, &len) : NULL;
            if (frame) mark_seen(frame);
            free(frame);
        }
    return count_seen(from, to);
}

/* kill -9 while the consumer is moving messages to the spill queue: a new consumer (and the
 * database coming back) finish the job — every message stored exactly once, spill queue and DLQ
 * empty. A crash between the spill and the delete leaves a message in both queues: the second
 * copy is absorbed by the unique key. */
static void test_kill_while_spilling(void)
{
    const char *cenv[] = {"CHATFLOW_DB_SPILL_AFTER_MS=500", "CHATFLOW_DB_RETRY_MAX_BACKOFF_MS=500",
                          "CHATFLOW_VISIBILITY_TIMEOUT_S=5", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer-kill-spilling", cenv)) {
        CHECK(false, "consumer for the kill -9 test started");
        return;
    }
    PQfinish(env.pg);
    env.pg = NULL;
    CHECK(tl_stack_cmd(&stack, "stop-pg"), "PostgreSQL stopped");
    enum { M = 800 };
    static chat_message m[M];
    bool ok = true;
    for (int i = 0; i < M; i++)
        tl_chat_message(&m[i], 1 + i % ROOMS, 500 + i % 7, "spilled then killed", "TEXT");
    for (int i = 0; ok && i < M; i += SQS_MAX_BATCH * ROOMS)
        for (int r = 1; ok && r <= ROOMS; r++) {
            chat_message b[SQS_MAX_BATCH];
            size_t k = 0;
            for (int j = i; j < M && j < i + SQS_MAX_BATCH * ROOMS; j++)
                if (atoi(m[j].room_id) == r) b[k++] = m[j];
            ok = !k || tl_consumer_send_batch(&env, r, b, k);
        }
    CHECK(ok, "%d messages sent with the database down", M);
    double spilled = 0;
    for (int i = 0; i < 300 && spilled < 50; i++) {
        spilled = tl_metric(c.admin_port, "chatflow_spill_messages_total", NULL);
        if (spilled < 50) time_sleep_ms(20);
    }
    long left = tl_consumer_rooms_depth(&env);
    CHECK(spilled >= 50 && left > 0,
          "spilling is under way (%.0f spilled, %ld still in the room queues)", spilled, left);
    bool in_time = false;
    tl_consumer_stop(&c, SIGKILL, 5000, &in_time);
    CHECK(in_time, "consumer killed with SIGKILL mid-spill");
    CHECK(tl_stack_cmd(&stack, "start-pg"), "PostgreSQL started");
    env.pg = tl_pg_connect(env.db_url);
    long long before = env.pg ? tl_pg_scalar(env.pg, "SELECT count(*) FROM messages") : -1;
    if (!tl_consumer_start(&env, &c, "consumer-after-kill", cenv)) {
        CHECK(false, "a new consumer started");
        return;
    }
    CHECK_INT(env.pg ? tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", before + M, 60000)
                     : -1,
              before + M, "every one of the %d messages is stored", M);
    CHECK_INT(
        env.pg ? tl_pg_scalar(env.pg, "SELECT count(*) - count(DISTINCT message_id) FROM messages")
               : -1,
        0, "none twice");
    long spill = -1;
    for (int i = 0; i < 200 && spill != 0; i++) {
        spill = tl_sqs_depth(&env.q, env.spill_url);
        if (spill != 0) time_sleep_ms(100);
    }
    CHECK_INT(spill, 0, "the spill queue is empty");
    CHECK_INT(tl_sqs_depth(&env.q, env.dlq_url), 0, "the DLQ is empty");
    tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time, "second consumer stopped with SIGTERM in time");
}

/* SIGTERM while the database is down: the consumer exits 0 within its stop timeout, and every
 * message it held is still in SQS — moved to the spill queue, or released to its room queue —
 * and none is in the DLQ. */
static void test_stop_while_down(void)
{
    const char *cenv[] = {"CHATFLOW_STOP_TIMEOUT_S=5", "CHATFLOW_VISIBILITY_TIMEOUT_S=10", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer-stop-while-down", cenv)) {
        CHECK(false, "consumer with CHATFLOW_STOP_TIMEOUT_S=5 started");
        return;
    }
    long st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        free(tl_http("GET", c.admin_port, "/health/ready", &st));
        if (st != 200) time_sleep_ms(100);
    }
    long dlq_before = tl_sqs_depth(&env.q, env.dlq_url);
    CHECK(st == 200 && tl_stack_cmd(&stack, "stop-pg"), "ready, then PostgreSQL stopped");
    chat_message m[3];
    for (int i = 0; i < 3; i++)
        tl_chat_message(&m[i], 2 + i, 200 + i, "in flight at SIGTERM", "TEXT");
    bool all_sent = true;
    for (int i = 0; i < 3; i++)
        all_sent = all_sent && tl_consumer_send_batch(&env, 2 + i, &m[i], 1);
    CHECK(all_sent, "3 messages sent");
    double consumed = 0;
    for (int i = 0; i < 100 && consumed < 3; i++) {
        consumed = tl_metric(c.admin_port, "chatflow_messages_consumed_total", NULL);
        if (consumed < 3) time_sleep_ms(100);
    }
    CHECK(consumed >= 3, "the consumer holds them, waiting on the database");
    uint64_t t0 = time_mono_ns();
    bool in_time = false;
    int status = tl_consumer_stop(&c, SIGTERM, 8000, &in_time);
    double took = (double)(time_mono_ns() - t0) / 1e9;
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0 && took < 5.5,
          "SIGTERM with the database down: exit 0 within the 5 s stop timeout (%.1f s)", took);
    long depth = tl_sqs_depth(&env.q, env.spill_url);
    for (int r = 2; r <= 4; r++) depth += tl_sqs_depth(&env.q, env.q.urls[r]);
    CHECK_INT(depth, 3, "the unwritten messages are still in SQS (spill queue or room queues)");
    CHECK_INT(tl_sqs_depth(&env.q, env.dlq_url), dlq_before, "and none went to the DLQ");
    CHECK(tl_stack_cmd(&stack, "start-pg"), "PostgreSQL started");
}

int main(void)
{
    tl_init();
    char log_dir[512];
    tl_log_dir("consumer_pgdown", log_dir, sizeof log_dir);
    tl_stack_init(&stack, "consumer_pgdown", log_dir);
    /* the private server's DATABASE_URL replaces the shared stack's for everything below */
    if (!tl_stack_cmd(&stack, "up --pg-only") || !tl_stack_load_env(&stack)) {
        CHECK(false, "private PostgreSQL started (log %s/stack.log)", log_dir);
        return TEST_DONE();
    }
    if (!tl_consumer_env_init(&env, "consumer_pgdown", ROOMS) ||
        !(env.pg = tl_pg_connect(env.db_url))) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    for (size_t i = 0; i < N; i++) {
        char text[64];
        snprintf(text, sizeof text, "outage test %zu", i);
        tl_chat_message(&sent[i], 1 + (int)(i % ROOMS), 1 + (int)(i % 41), text, "TEXT");
    }
    const char *cenv[] = {"CHATFLOW_VISIBILITY_TIMEOUT_S=10",
                          "CHATFLOW_DB_RETRY_MAX_BACKOFF_MS=1000",
                          "CHATFLOW_DB_STATEMENT_TIMEOUT_MS=3000", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer", cenv) || !subscribe_all(c.ws_port)) {
        CHECK(false, "consumer started, a subscriber on each room");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    CHECK(send_range(0, BEFORE), "%d messages sent", BEFORE);
    CHECK_INT(read_broadcasts(0, BEFORE, 30000), BEFORE, "the subscribers got all %d", BEFORE);
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", BEFORE, 30000), BEFORE,
              "and all are stored");
    PQfinish(env.pg);
    env.pg = NULL;
    CHECK(tl_stack_cmd(&stack, "stop-pg"), "PostgreSQL stopped");
    uint64_t stopped_at = time_mono_ns();
    CHECK(send_range(BEFORE, N), "%d more messages sent during the outage", DURING);
    CHECK_INT(read_broadcasts(BEFORE, N, 25000), DURING,
              "live chat goes on: every message sent during the outage is broadcast while the "
              "database is down");
    long depth = -1;
    for (int i = 0; i < 100 && depth != 0; i++) {
        depth = tl_consumer_rooms_depth(&env);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "the room queues keep draining during the outage");
    CHECK_INT(tl_sqs_depth(&env.q, env.spill_url), DURING,
              "the %d unstored messages wait in the spill queue", DURING);
    CHECK_INT(tl_metric(c.admin_port, "chatflow_spill_messages_total", NULL), DURING,
              "chatflow_spill_messages_total is %d", DURING);

    long st = 0;
    char *ready = NULL;
    for (int i = 0; i < 50; i++) {
        free(ready);
        ready = tl_http("GET", c.admin_port, "/health/ready", &st);
        if (st == 503) break;
        time_sleep_ms(100);
    }
    CHECK(st == 503 && ready && strstr(ready, "\"postgres\":{\"status\":\"DOWN\""),
          "/health/ready is 503 with postgres DOWN during the outage (%s)",
          ready ? ready : "no answer");
    free(ready);
    free(tl_http("GET", c.admin_port, "/health/live", &st));
    CHECK_INT(st, 200, "/health/live stays 200: a database outage is no reason to restart");
    CHECK_INT(tl_metric(c.admin_port, "chatflow_db_up", NULL), 0,
              "chatflow_db_up is 0 during the outage");

    while (time_mono_ns() - stopped_at < OUTAGE_S * 1000000000ull) {
        wsc_service(ws_ctx, 100); /* keep the subscribers' connections serviced (pings) */
    }
    CHECK(tl_metric(c.admin_port, "chatflow_spill_depth", NULL) >= 1,
          "chatflow_spill_depth shows the spill backlog");
    CHECK(tl_stack_cmd(&stack, "start-pg"), "PostgreSQL started again after %d s", OUTAGE_S);
    env.pg = tl_pg_connect(env.db_url);
    CHECK(env.pg != NULL, "test reconnects to PostgreSQL");
    if (!env.pg) {
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", N, 90000), N,
              "the spilled messages are stored by themselves: all %d messages stored", N);
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(DISTINCT message_id) FROM messages"), N,
              "each exactly once");
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT sum(message_count) FROM user_activity"), N,
              "user_activity counts each message once");
    size_t missing = 0;
    for (size_t i = 0; i < N; i++) {
        const char *p[] = {sent[i].message_id};
        PGresult *r = PQexecParams(env.pg, "SELECT 1 FROM messages WHERE message_id = $1::uuid", 1,
                                   NULL, p, NULL, NULL, 0);
        missing += PQntuples(r) != 1;
        PQclear(r);
    }
    CHECK_INT(missing, 0, "every sent messageId is stored");
    /* Stored with their room-queue sequence numbers: history order is the order of the room. */
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(*) FROM messages WHERE sequence_number IS NULL"),
              0, "every row keeps its original sequence number");
    long spill = -1;
    for (int i = 0; i < 100 && spill != 0; i++) {
        spill = tl_sqs_depth(&env.q, env.spill_url);
        if (spill != 0) time_sleep_ms(100);
    }
    CHECK_INT(spill, 0, "the spill queue is empty");
    CHECK_INT(tl_sqs_depth(&env.q, env.dlq_url), 0, "nothing went to the DLQ");
    CHECK_INT(tl_metric(c.admin_port, "chatflow_spill_drained_total", NULL), DURING,
              "chatflow_spill_drained_total is %d", DURING);

    ready = NULL;
    for (int i = 0; i < 100; i++) {
        free(ready);
        ready = tl_http("GET", c.admin_port, "/health/ready", &st);
        if (st == 200) break;
        time_sleep_ms(100);
    }
    CHECK(st == 200, "/health/ready is 200 again (%s)", ready ? ready : "no answer");
    free(ready);
    CHECK_INT(tl_metric(c.admin_port, "chatflow_db_up", NULL), 1, "chatflow_db_up is 1 again");
    for (int r = 1; r <= ROOMS; r++)
        if (subs[r]) wsc_free(subs[r]);
    wsc_ctx_free(ws_ctx);
    bool in_time = false;
    int status = tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGTERM: exits 0 in time");
    test_kill_while_spilling();
    test_stop_while_down();
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
