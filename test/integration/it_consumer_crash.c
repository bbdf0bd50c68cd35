/*
 * it_consumer_crash — kill -9 of chatflow-consumer in the middle of a stream, then a restart:
 * no message lost, no duplicate row, user_activity not double-counted by redelivered messages,
 * per-room order intact, queues drained. Real fauxqs, real PostgreSQL; a short visibility
 * timeout so what the killed process held comes back quickly.
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
#include "uuid.h"

#include "wsclient.h"

#define ROOMS 4
#define FIRST 2000
#define SECOND 400
#define N (FIRST + SECOND)

static tl_consumer_env env;
static chat_message sent[N];

static bool send_range(size_t from, size_t to)
{
    return tl_consumer_send_messages(&env, &sent[from], to - from);
}

static void check_order(void)
{
    CHECK(tl_consumer_order_kept(&env, sent, N),
          "in every room, sequence_number order is the send order (redelivery kept FIFO order)");
}

/* A subscriber that reconnects with an old sequence number gets the rest of the room, in order,
 * although the restarted consumer never saw the early messages: they come from PostgreSQL. */
static void check_replay(const tl_consumer *c)
{
    PGresult *r = PQexec(env.pg, "SELECT sequence_number::text FROM messages WHERE room_id = '1' "
                                 "ORDER BY messages.sequence_number");
    int total = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : 0;
    char since[64] = "";
    if (total > 10) snprintf(since, sizeof since, "%s", PQgetvalue(r, 9, 0));
    PQclear(r);
    wsc_ctx *ctx = wsc_ctx_new();
    char path[128], err[256];
    snprintf(path, sizeof path, "/chat/1?since=%s", since);
    int status = 0;
    wsc_conn *ws =
        ctx ? wsc_connect(ctx, "127.0.0.1", c->ws_port, path, 5000, &status, err, sizeof err)
            : NULL;
    CHECK(ws != NULL, "subscriber connects to %s (%s)", path, ws ? "open" : err);
    size_t want = (size_t)(total - 10), got = 0, in_order = 0;
    size_t next_sent = 0, in_room = 0;
    while (ws && got < want) {
        size_t len = 0;
        char *frame = wsc_recv(ws, 10000, &len);
        if (!frame) break;
        json_t *j = json_loads(frame, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "messageId"));
        /* The next room-1 message after the first 10, in send order. */
        while (next_sent < N && (strcmp(sent[next_sent].room_id, "1") != 0 || in_room++ < 10))
            next_sent++;
        if (id && next_sent < N && strcmp(id, sent[next_sent].message_id) == 0) in_order++;
        next_sent++;
        got++;
        json_decref(j);
        free(frame);
    }
    CHECK(got == want && in_order == want,
          "replay since the 10th message: %zu of %zu frames, %zu in send order", got, want,
          in_order);
    if (ws) wsc_free(ws);
    if (ctx) wsc_ctx_free(ctx);
}

int main(void)
{
    if (!tl_consumer_env_init(&env, "consumer_crash", ROOMS) ||
        !(env.pg = tl_pg_connect(env.db_url))) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    for (size_t i = 0; i < N; i++) {
        char text[64];
        snprintf(text, sizeof text, "crash test %zu", i);
        tl_chat_message(&sent[i], 1 + (int)(i % ROOMS), 1 + (int)(i % 37), text, "TEXT");
    }
    const char *cenv[] = {"CHATFLOW_VISIBILITY_TIMEOUT_S=3", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer-1", cenv)) {
        CHECK(false, "consumer started");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    CHECK(send_range(0, FIRST), "%d messages sent over %d rooms", FIRST, ROOMS);

    /* Mid-stream: some rows stored, most still queued. */
    long long stored = 0;
    for (int i = 0; i < 300 && stored < 300; i++) {
        stored = tl_pg_scalar(env.pg, "SELECT count(*) FROM messages");
        time_sleep_ms(20);
    }
    tl_consumer_stop(&c, SIGKILL, 5000, NULL);
    /* A COMMIT the killed process had already sent may still be finishing in its backend: count
     * only once PostgreSQL has noticed the client is gone. */
    tl_pg_wait_scalar(
        env.pg,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'chatflow-consumer%'"
        " AND datname = current_database()",
        0, 10000);
    long long at_kill = tl_pg_scalar(env.pg, "SELECT count(*) FROM messages");
    NOTE("killed with %lld of %d rows stored", at_kill, FIRST);
    CHECK(at_kill > 0 && at_kill < FIRST, "the consumer was killed mid-stream (%lld of %d stored)",
          at_kill, FIRST);

    CHECK(send_range(FIRST, N), "%d more messages sent while it is down", SECOND);
    time_sleep_ms(500);
    tl_consumer c2;
    if (!tl_consumer_start(&env, &c2, "consumer-2", cenv)) {
        CHECK(false, "consumer restarted");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", N, 90000), N,
              "all %d messages stored after the restart", N);
    time_sleep_ms(1000);
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(*) FROM messages"), N,
              "no extra rows appeared later");
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(DISTINCT message_id) FROM messages"), N,
              "each message exactly once");
    /* Every sent id is there (none lost, none foreign). */
    size_t missing = 0;
    for (size_t i = 0; i < N; i++) {
        const char *p[] = {sent[i].message_id};
        PGresult *r = PQexecParams(env.pg, "SELECT 1 FROM messages WHERE message_id = $1::uuid", 1,
                                   NULL, p, NULL, NULL, 0);
        missing += PQntuples(r) != 1;
        PQclear(r);
    }
    CHECK_INT(missing, 0, "every sent messageId is stored");
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT sum(message_count) FROM user_activity"), N,
              "user_activity counts each message once (redeliveries not double-counted)");
    check_order();

    double consumed = tl_metric(c2.admin_port, "chatflow_messages_consumed_total", NULL);
    double written = tl_metric(c2.admin_port, "chatflow_db_rows_written_total", NULL);
    NOTE("after restart: %.0f received, %.0f new rows (%.0f redelivered duplicates skipped)",
         consumed, written, consumed - written);
    CHECK_INT((long long)written, N - at_kill,
              "the restarted consumer wrote exactly the rows that were missing");

    long depth = -1;
    for (int i = 0; i < 100 && depth != 0; i++) {
        depth = tl_consumer_rooms_depth(&env);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "the room queues are drained");
    CHECK_INT(tl_sqs_depth(&env.q, env.dlq_url), 0, "nothing went to the DLQ");
    check_replay(&c2);

    bool in_time = false;
    int st = tl_consumer_stop(&c2, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "SIGTERM: the restarted consumer exits 0 in time");
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
