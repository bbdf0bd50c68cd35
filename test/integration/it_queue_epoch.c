/*
 * it_queue_epoch — positions carry their queue's epoch (common/queue_epoch.h), against real
 * fauxqs, PostgreSQL and both services:
 *  1. a consumer stores a room's messages at positions made of the queue's CreatedTimestamp and
 *     SQS's number padded to 39 digits, in the queue's order; the producer's ack carries the
 *     position the consumer stores;
 *  2. when the epoch cannot be read (GetQueueAttributes refused: the test-only failpoint
 *     epoch-unreadable, as a policy without sqs:GetQueueAttributes would), a consumer stores
 *     nothing, dead-letters nothing and stays live; the messages wait in their queue, and a
 *     consumer that can read it stores each of them once, in order. A producer that cannot read
 *     it still acks (SQS holds the message), without a position.
 * The emulator restarted under a database that keeps its rows is part 5 of it_consumer_bus.
 */
/* test-passes: asan */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seqnum.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_pg.h"
#include "tl_proc.h"
#include "tl_producer.h"

#define SHARDS 2
#define N_MSGS 6

static tl_consumer_env env;

static char *queue_created(int shard)
{
    static const char *const names[] = {"CreatedTimestamp"};
    char *value = NULL;
    sqs_error e = {0};
    if (sqs_get_queue_attributes(env.q.sqs, env.q.urls[shard], names, 1, &value, &e) != SQS_OK)
        NOTE("GetQueueAttributes: %s %s", e.type, e.message);
    return value;
}

static long long stored(const char *room)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id = '%s'", room);
    return tl_pg_scalar(env.pg, sql);
}

static bool wait_stored(const char *room, long long want, int timeout_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (stored(room) != want && time_mono_ns() < until) time_sleep_ms(100);
    return stored(room) == want;
}

/* Each stored position of room "1" is <CreatedTimestamp of shard 1> then 39 digits. */
static void check_positions(const char *created, int want)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages WHERE room_id = '1' AND sequence_number::text ~ "
             "'^%s[0-9]{39}$'",
             created ? created : "x");
    CHECK_INT(tl_pg_scalar(env.pg, sql), want,
              "every stored position of room 1 is the queue's CreatedTimestamp (%s) followed by "
              "39 digits",
              created ? created : "?");
}

static void test_positions_and_ack(wsc_ctx *ws, const char *created)
{
    tl_consumer c = {0};
    tl_producer p = {0};
    const char *cenv[] = {NULL};
    char log[700], prefix[128], shards[40], dlq[160];
    snprintf(log, sizeof log, "%s/producer.log", env.log_dir);
    snprintf(prefix, sizeof prefix, "CHATFLOW_QUEUE_PREFIX=%s", env.q.prefix);
    snprintf(shards, sizeof shards, "CHATFLOW_QUEUE_SHARDS=%d", SHARDS);
    snprintf(dlq, sizeof dlq, "CHATFLOW_DLQ_NAME=%s", env.dlq_name);
    const char *penv[] = {prefix, shards, dlq, NULL};
    CHECK(tl_consumer_start(&env, &c, "consumer", cenv), "consumer started");
    CHECK(tl_producer_start(&p, log, penv) &&
              tl_http_wait_status(p.admin_port, "/health/ready", 200, 30000),
          "producer started and ready");
    wsc_conn *conn = tl_producer_open_room(ws, &p, "1", NULL);
    char ack_seq[SEQNUM_BUF] = "", ack_id[64] = "", status[32] = "";
    char *frame = tl_frame(7, "positioned", NULL);
    if (conn && frame && tl_ws_send_str(conn, frame)) {
        char *text = wsc_recv(conn, 10000, NULL);
        if (text) {
            tl_json_field(text, "status", status, sizeof status);
            tl_json_field(text, "sequenceNumber", ack_seq, sizeof ack_seq);
            tl_json_field(text, "messageId", ack_id, sizeof ack_id);
        }
        free(text);
    }
    free(frame);
    CHECK(strcmp(status, "SUCCESS") == 0 && seqnum_valid(ack_seq),
          "the producer acks with a position (%s)", ack_seq);
    CHECK(wait_stored("1", 1, 30000), "the consumer stored it");
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages WHERE message_id = '%s' AND sequence_number = %s",
             ack_id[0] ? ack_id : "00000000-0000-0000-0000-000000000000",
             ack_seq[0] ? ack_seq : "-1");
    CHECK_INT(tl_pg_scalar(env.pg, sql), 1, "stored at the position its ack carried");
    check_positions(created, 1);
    if (conn) wsc_free(conn);

    /* Acks without an epoch: still SUCCESS (SQS has the message), no sequenceNumber. */
    tl_producer_stop(&p, SIGTERM, 15000, NULL);
    const char *penv_fail[] = {prefix, shards, dlq, "CHATFLOW_TEST_FAILPOINT=epoch-unreadable",
                               NULL};
    snprintf(log, sizeof log, "%s/producer-noepoch.log", env.log_dir);
    CHECK(tl_producer_start(&p, log, penv_fail) &&
              tl_http_wait_status(p.admin_port, "/health/ready", 200, 30000),
          "producer that cannot read the epoch started and ready");
    conn = tl_producer_open_room(ws, &p, "1", NULL);
    frame = tl_frame(8, "no epoch at the producer", NULL);
    status[0] = ack_seq[0] = '\0';
    bool has_seq = true;
    if (conn && frame && tl_ws_send_str(conn, frame)) {
        char *text = wsc_recv(conn, 10000, NULL);
        if (text) {
            tl_json_field(text, "status", status, sizeof status);
            json_t *j = json_loads(text, 0, NULL);
            has_seq = json_object_get(j, "sequenceNumber") != NULL;
            json_decref(j);
        }
        free(text);
    }
    free(frame);
    CHECK(strcmp(status, "SUCCESS") == 0 && !has_seq,
          "without the epoch the producer still acks, with no sequenceNumber");
    CHECK(wait_stored("1", 2, 30000), "and the consumer stores that message too");
    check_positions(created, 2);
    if (conn) wsc_free(conn);
    tl_producer_stop(&p, SIGTERM, 15000, NULL);
    tl_consumer_stop(&c, SIGTERM, 15000, NULL);
}

/* The room's rows by position are exactly ms, in order. */
static bool order_kept(const char *room, const chat_message *ms, int n)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT message_id::text FROM messages WHERE room_id = '%s' ORDER BY sequence_number",
             room);
    PGresult *r = PQexec(env.pg, sql);
    bool same = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == n;
    for (int i = 0; same && i < n; i++) same = strcmp(PQgetvalue(r, i, 0), ms[i].message_id) == 0;
    PQclear(r);
    return same;
}

static void test_unreadable_epoch(void)
{
    tl_consumer c = {0};
    const char *fail[] = {"CHATFLOW_TEST_FAILPOINT=epoch-unreadable", NULL};
    CHECK(tl_consumer_start(&env, &c, "consumer-noepoch", fail),
          "consumer that cannot read the epoch started");
    chat_message ms[N_MSGS];
    for (int i = 0; i < N_MSGS; i++) {
        char text[40];
        snprintf(text, sizeof text, "waits for its epoch #%d", i);
        tl_chat_message(&ms[i], 2, 10 + i, text, "TEXT");
    }
    CHECK(tl_consumer_send_batch(&env, 2, ms, N_MSGS), "%d messages of room 2 sent", N_MSGS);
    time_sleep_ms(6000); /* several receives, each given back */
    CHECK_INT(stored("2"), 0, "nothing stored while the epoch cannot be read");
    CHECK(tl_sqs_depth(&env.q, env.dlq_url) == 0, "nothing dead-lettered");
    CHECK(tl_sqs_shard_depth(&env.q, 2) == N_MSGS, "the %d messages wait in their queue (%ld)",
          N_MSGS, tl_sqs_shard_depth(&env.q, 2));
    CHECK(tl_http_wait_status(c.admin_port, "/health/live", 200, 2000),
          "/health/live 200 meanwhile");
    char grep[800];
    snprintf(grep, sizeof grep, "grep -q 'cannot be positioned' '%s'", c.log_path);
    CHECK(tl_sh(grep), "the log says why the messages are given back");
    bool in_time = false;
    CHECK_INT(tl_consumer_stop(&c, SIGTERM, 15000, &in_time), 0, "SIGTERM: exit 0");
    CHECK(in_time, "in time");

    const char *none[] = {NULL};
    CHECK(tl_consumer_start(&env, &c, "consumer-epoch", none), "a consumer that can read it");
    CHECK(wait_stored("2", N_MSGS, 40000), "all %d stored", N_MSGS);
    CHECK(order_kept("2", ms, N_MSGS), "once each, in the queue's order");
    tl_consumer_stop(&c, SIGTERM, 15000, NULL);
}

int main(void)
{
    tl_init();
    if (!tl_consumer_env_init(&env, "queue_epoch", SHARDS) ||
        !(env.pg = tl_pg_connect(env.db_url))) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    char *created = queue_created(1);
    CHECK(created && created[0], "the queue's CreatedTimestamp read (%s)", created ? created : "");
    wsc_ctx *ws = wsc_ctx_new();
    if (ws) test_positions_and_ack(ws, created);
    test_unreadable_epoch();
    if (ws) wsc_ctx_free(ws);
    free(created);
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
