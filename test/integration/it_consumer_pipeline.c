/*
 * it_consumer_pipeline — SQS -> chatflow-consumer -> PostgreSQL against real fauxqs and a real
 * PostgreSQL: every message stored exactly once with the right fields, per-room SQS order kept,
 * user_activity aggregated from new rows only (a redelivered message changes nothing), poison
 * bodies in the DLQ with their reason while the queue keeps flowing, migrations idempotent,
 * health, metrics (each message's time by stage, read back through test/lib/prom_quantiles.py
 * as the benchmarks read it), and a clean SIGTERM.
 */
/* test-passes: asan tsan */
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

#include "../../consumer/history.h"

#define ROOMS 4
#define PER_ROOM 100
#define N (ROOMS * PER_ROOM)

static tl_consumer_env env;
static chat_message sent[N + 256];
static size_t n_sent;

/* Text that exercises every escaping path of the writer (COPY text format and array literals).
 * (No code points above U+FFFF: fauxqs 1.9.2 refuses them as InvalidMessageContents.) */
static const char *const tricky[] = {
    "tab\there", "new\nline",       "back\\slash",      "quote \"double\" and 'single'",
    "\\N",       "{curly,comma}",   "héllo ✓ ñ 日本語", "cr\rreturn",
    "NULL",      "trailing space ",
};

static void build_messages(void)
{
    static const char *const types[] = {"TEXT", "TEXT", "TEXT", "JOIN", "LEAVE"};
    for (int room = 1; room <= ROOMS; room++)
        for (int i = 0; i < PER_ROOM; i++) {
            chat_message *m = &sent[n_sent++];
            char text[256];
            snprintf(text, sizeof text, "r%d #%03d %s", room, i,
                     i % 7 == 0 ? tricky[(i / 7) % 10] : "plain");
            /* A handful of users, so user_activity aggregates several rows per key. */
            tl_chat_message(m, room, 1 + (i % 5) * 24999, text, types[i % 5]);
            if (i == 3) /* a zone offset: stored normalised to UTC */
                snprintf(m->timestamp, sizeof m->timestamp, "2026-11-23T15:45:30.250+05:30");
        }
}

static bool send_all(size_t from, size_t to)
{
    return tl_consumer_send_messages(&env, &sent[from], to - from);
}

static char *normalise(const char *iso)
{
    static char out[ISO8601_BUF];
    int64_t ms = 0;
    time_parse_iso8601(iso, &ms);
    time_format_iso8601(ms, out);
    return out;
}

static void check_rows(void)
{
    const char *sql =
        "SELECT room_id, user_id, username, message_text, message_type, server_id, client_ip,"
        " to_char(client_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
        " to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
        " sequence_number IS NOT NULL FROM messages WHERE message_id = $1::uuid";
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++) {
        const chat_message *m = &sent[i];
        const char *p[] = {m->message_id};
        PGresult *r = PQexecParams(env.pg, sql, 1, NULL, p, NULL, NULL, 0);
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        char ts[ISO8601_BUF];
        snprintf(ts, sizeof ts, "%s", normalise(m->timestamp));
        if (ok) {
            ok = strcmp(PQgetvalue(r, 0, 0), m->room_id) == 0 &&
                 strcmp(PQgetvalue(r, 0, 1), m->user_id) == 0 &&
                 strcmp(PQgetvalue(r, 0, 2), m->username) == 0 &&
                 strcmp(PQgetvalue(r, 0, 3), m->message) == 0 &&
                 strcmp(PQgetvalue(r, 0, 4), m->message_type) == 0 &&
                 strcmp(PQgetvalue(r, 0, 5), m->server_id) == 0 &&
                 strcmp(PQgetvalue(r, 0, 6), m->client_ip) == 0 &&
                 strcmp(PQgetvalue(r, 0, 7), ts) == 0 &&
                 strcmp(PQgetvalue(r, 0, 8), normalise(m->received_at)) == 0 &&
                 strcmp(PQgetvalue(r, 0, 9), "t") == 0;
            if (!ok && wrong < 3)
                NOTE("message %s: got room=%s user=%s name=%s text=\"%s\" type=%s ts=%s (want %s)",
                     m->message_id, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                     PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 7), ts);
        }
        wrong += !ok;
        PQclear(r);
    }
    CHECK_INT(
        wrong, 0,
        "every stored row has exactly the fields that were sent (%d messages, escaping included)",
        N);
    CHECK_INT(
        tl_pg_scalar(
            env.pg,
            "SELECT count(*) FROM messages WHERE client_timestamp = '2026-11-23T10:15:30.250Z'"),
        ROOMS, "a +05:30 client timestamp is stored as the same instant");
}

/* Within a room, sequence-number order is the order the messages were sent in. */
static void check_order(void)
{
    CHECK(tl_consumer_order_kept(&env, sent, N),
          "in every room, sequence_number order is the send order");
}

static void check_user_activity(size_t n)
{
    /* Expected aggregates computed here from what was sent. */
    PGresult *r =
        PQexec(env.pg, "SELECT user_id, room_id, message_count FROM user_activity ORDER BY 1, 2");
    size_t bad = 0, rows = 0;
    long long sum = 0;
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        const char *u = PQgetvalue(r, i, 0), *room = PQgetvalue(r, i, 1);
        long long want = 0;
        for (size_t j = 0; j < n; j++)
            want += strcmp(sent[j].user_id, u) == 0 && strcmp(sent[j].room_id, room) == 0;
        long long got = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        bad += got != want;
        sum += got;
        rows++;
    }
    PQclear(r);
    CHECK(rows > 0 && bad == 0,
          "user_activity message_count per (user, room) matches what was sent (%zu keys)", rows);
    CHECK_INT(sum, (long long)n, "user_activity counts add up to the messages stored");
    CHECK_INT(tl_pg_scalar(
                  env.pg,
                  "SELECT count(*) FROM user_activity ua WHERE first_activity <> "
                  "(SELECT min(client_timestamp) FROM messages m WHERE m.user_id = ua.user_id AND "
                  "m.room_id = ua.room_id) OR last_activity <> (SELECT max(client_timestamp) FROM "
                  "messages m WHERE m.user_id = ua.user_id AND m.room_id = ua.room_id)"),
              0, "user_activity first/last activity are the min/max client timestamps");
}

static json_t *receive_dlq(size_t want, int timeout_ms)
{
    json_t *all = json_array();
    sqs_receive_options o = {.max_messages = 10, .wait_seconds = 1, .visibility_timeout = 60};
    for (int waited = 0; json_array_size(all) < want && waited < timeout_ms; waited += 1000) {
        sqs_message *ms = NULL;
        size_t k = 0;
        sqs_error err;
        if (sqs_receive_message(env.q.sqs, env.dlq_url, &o, &ms, &k, &err) != SQS_OK) break;
        for (size_t i = 0; i < k; i++) {
            json_t *b = json_loads(ms[i].body, 0, NULL);
            if (b) json_object_set_new(b, "_group", json_string(ms[i].group_id));
            json_array_append_new(all, b ? b : json_null());
        }
        sqs_messages_free(ms, k);
    }
    return all;
}

static void test_poison(const tl_consumer *c)
{
    const char *garbage = "this is { not json";
    chat_message bad;
    tl_chat_message(&bad, 3, 42, "valid text, invalid username", "TEXT");
    snprintf(bad.username, sizeof bad.username, "x!");
    char *bad_body = queue_message_to_json(&bad);
    /* A valid message on the wrong shard: "team-alpha" lives on shard 2 of 4 (room.h). */
    chat_message misrouted;
    tl_chat_message(&misrouted, 1, 43, "valid, but on another room's shard", "TEXT");
    snprintf(misrouted.room_id, sizeof misrouted.room_id, "team-alpha");
    char *misrouted_body = queue_message_to_json(&misrouted);
    CHECK(tl_consumer_send_raw(&env, 2, garbage, "poison-1") &&
              tl_consumer_send_raw(&env, 3, bad_body, bad.message_id) &&
              tl_consumer_send_to_shard(&env, 1, &misrouted),
          "three poison bodies sent (shards 2, 3 and a misrouted one on 1)");

    /* The same rooms keep flowing after the poison. */
    size_t from = n_sent;
    for (int room = 2; room <= 3; room++)
        for (int i = 0; i < 10; i++)
            tl_chat_message(&sent[n_sent++], room, 7, "after the poison", "TEXT");
    CHECK(send_all(from, n_sent), "20 valid messages sent after the poison");
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", (long long)n_sent, 30000),
              (long long)n_sent, "the messages behind the poison are stored (%zu rows)", n_sent);

    json_t *dlq = receive_dlq(3, 15000);
    CHECK_INT(json_array_size(dlq), 3, "the three poison messages are in the DLQ");
    bool found_garbage = false, found_bad = false, found_misrouted = false;
    size_t i;
    json_t *d;
    json_array_foreach(dlq, i, d)
    {
        const char *orig = json_string_value(json_object_get(d, "originalMessage"));
        const char *reason = json_string_value(json_object_get(d, "failureReason"));
        const char *ts = json_string_value(json_object_get(d, "failureTimestamp"));
        json_int_t attempts = json_integer_value(json_object_get(d, "attemptCount"));
        int64_t ms;
        bool shape =
            orig && reason && reason[0] && ts && time_parse_iso8601(ts, &ms) && attempts >= 1;
        const char *group = json_string_value(json_object_get(d, "_group"));
        if (shape && strcmp(orig, garbage) == 0 && group && strcmp(group, "shard-2") == 0)
            found_garbage = true;
        if (shape && strcmp(orig, bad_body) == 0 && strstr(reason, "username")) found_bad = true;
        if (shape && strcmp(orig, misrouted_body) == 0 && strstr(reason, "belongs to shard 2") &&
            group && strcmp(group, "team-alpha") == 0)
            found_misrouted = true;
        NOTE("DLQ: reason \"%s\", attemptCount %lld, group %s", reason ? reason : "?",
             (long long)attempts, json_string_value(json_object_get(d, "_group")));
    }
    CHECK(found_garbage, "DLQ entry for the non-JSON body: originalMessage, failureReason, "
                         "failureTimestamp, attemptCount; group shard-2 (no room to name)");
    CHECK(found_misrouted, "DLQ entry for a room on the wrong shard names the right shard; group "
                           "is the room");
    CHECK(found_bad, "DLQ entry for the bad username names the field in failureReason");
    json_decref(dlq);
    free(bad_body);
    free(misrouted_body);
    CHECK_INT(tl_metric(c->admin_port, "chatflow_poison_messages_total", NULL), 3,
              "chatflow_poison_messages_total is 3");
    CHECK_INT(tl_metric(c->admin_port, "chatflow_dlq_messages_total", "reason=\"poison\""), 3,
              "chatflow_dlq_messages_total{reason=\"poison\"} is 3");
}

/* Rooms that are not numbers share the shard queues with the numbered ones and keep their own
 * order: ids of the three kinds, 20 messages each, interleaved, on shards 2, 3 and 1. */
static void test_string_rooms(void)
{
    static const char *const rooms[] = {"team-alpha", "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b",
                                        "1000"};
    enum { EACH = 20 };
    size_t from = n_sent;
    bool ok = true;
    for (int i = 0; i < EACH; i++)
        for (size_t r = 0; r < 3; r++) {
            chat_message *m = &sent[n_sent++];
            char text[64];
            snprintf(text, sizeof text, "%s #%02d", rooms[r], i);
            tl_chat_message(m, 1, 11 + (int)r, text, "TEXT");
            snprintf(m->room_id, sizeof m->room_id, "%s", rooms[r]);
            ok = ok && tl_consumer_send_to_room(&env, m);
        }
    CHECK(ok, "60 messages of rooms team-alpha, a UUID and 1000 sent to their shards");
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", (long long)n_sent, 30000),
              (long long)n_sent, "they are stored (%zu rows)", n_sent);
    for (size_t r = 0; r < 3; r++) {
        char sql[200];
        snprintf(sql, sizeof sql,
                 "SELECT message_id FROM messages WHERE room_id = '%s' ORDER BY sequence_number",
                 rooms[r]);
        PGresult *res = PQexec(env.pg, sql);
        int k = 0;
        bool in_order = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == EACH;
        for (size_t i = from; in_order && i < n_sent; i++)
            if (strcmp(sent[i].room_id, rooms[r]) == 0)
                in_order = strcmp(PQgetvalue(res, k++, 0), sent[i].message_id) == 0;
        CHECK(in_order, "room %s: its %d rows, in the order sent", rooms[r], EACH);
        PQclear(res);
    }
}

/* The same messageId arriving again (a redelivery) changes nothing. */
static void test_redelivery(const tl_consumer *c)
{
    long long before = tl_pg_scalar(env.pg, "SELECT sum(message_count) FROM user_activity");
    double written = tl_metric(c->admin_port, "chatflow_db_rows_written_total", NULL);
    bool ok = true;
    for (int i = 0; i < 5; i++) {
        char *body = queue_message_to_json(&sent[i]);
        char dedup[64];
        snprintf(dedup, sizeof dedup, "again-%d-%s", i, sent[i].message_id);
        ok = ok && tl_consumer_send_raw(&env, atoi(sent[i].room_id), body, dedup);
        free(body);
    }
    /* A marker after them: once it is stored, the five duplicates have been processed. */
    chat_message marker;
    tl_chat_message(&marker, 1, 9, "marker after duplicates", "TEXT");
    sent[n_sent++] = marker;
    ok = ok && tl_consumer_send_batch(&env, 1, &marker, 1);
    CHECK(ok, "5 already-stored messages sent again under new dedup ids, then a marker");
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", (long long)n_sent, 30000),
              (long long)n_sent, "only the marker is a new row");
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT sum(message_count) FROM user_activity"), before + 1,
              "user_activity grew by the marker only (duplicates not counted)");
    CHECK_INT(tl_metric(c->admin_port, "chatflow_db_rows_written_total", NULL), written + 1,
              "chatflow_db_rows_written_total counts new rows only");
}

/* A row the database refuses (a constraint added for the test) goes to the DLQ alone, with the
 * database's reason; the rows flushed with it are stored. */
static void test_rejected_row(const tl_consumer *c)
{
    CHECK(
        tl_pg_exec(env.pg,
                   "ALTER TABLE messages ADD CONSTRAINT it_reject CHECK (username <> 'rejectme')"),
        "test constraint added: username 'rejectme' is refused by the database");
    size_t from = n_sent;
    for (int room = 1; room <= ROOMS; room++)
        for (int i = 0; i < 3; i++)
            tl_chat_message(&sent[n_sent++], room, 11, "around the rejected row", "TEXT");
    chat_message bad;
    tl_chat_message(&bad, 4, 12, "the database will refuse this one", "TEXT");
    snprintf(bad.username, sizeof bad.username, "rejectme");
    char *bad_body = queue_message_to_json(&bad);
    CHECK(tl_consumer_send_raw(&env, 4, bad_body, bad.message_id) && send_all(from, n_sent),
          "one row the database refuses, sent among %zu good ones", n_sent - from);
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", (long long)n_sent, 30000),
              (long long)n_sent, "the good rows are stored");
    json_t *dlq = receive_dlq(1, 15000);
    json_t *d = json_array_get(dlq, 0);
    const char *orig = json_string_value(json_object_get(d, "originalMessage"));
    const char *reason = json_string_value(json_object_get(d, "failureReason"));
    CHECK(json_array_size(dlq) == 1 && orig && strcmp(orig, bad_body) == 0 && reason &&
              strstr(reason, "it_reject"),
          "the refused row is in the DLQ with the database's reason (%s)", reason ? reason : "-");
    CHECK_INT(tl_metric(c->admin_port, "chatflow_dlq_messages_total", "reason=\"db\""), 1,
              "chatflow_dlq_messages_total{reason=\"db\"} is 1");
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(*) FROM messages WHERE username = 'rejectme'"), 0,
              "it is not in the table");
    json_decref(dlq);
    free(bad_body);
    long depth = -1;
    for (int i = 0; i < 100 && depth != 0; i++) {
        depth = tl_consumer_rooms_depth(&env);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "the refused message was deleted from its queue (not retried forever)");
    tl_pg_exec(env.pg, "ALTER TABLE messages DROP CONSTRAINT it_reject");
}

typedef struct {
    broadcast_history_row rows[256];
    size_t n;
} collected;

static void collect(void *ctx, const broadcast_history_row *row)
{
    collected *c = ctx;
    if (c->n < 256) c->rows[c->n++] = *row;
}

/* The broadcaster's replay source (history_read) against the stored rows. */
static void test_history(void)
{
    history *h = history_new(env.db_url, 5000);
    char err[256] = "";
    /* Room 1 in sequence order; replay after its 50th message. */
    PGresult *r = PQexec(env.pg, "SELECT sequence_number::text FROM messages WHERE room_id = '1' "
                                 "ORDER BY messages.sequence_number");
    CHECK(h && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == PER_ROOM,
          "room 1 has %d stored rows", PER_ROOM);
    char since[64] = "0";
    if (PQntuples(r) == PER_ROOM) snprintf(since, sizeof since, "%s", PQgetvalue(r, 49, 0));
    PQclear(r);

    static collected got;
    got.n = 0;
    CHECK(history_read(h, "1", since, 1000, collect, &got, err, sizeof err),
          "history_read answers (%s)", err);
    CHECK_INT(got.n, PER_ROOM - 50, "replay after the 50th message returns the other %d",
              PER_ROOM - 50);
    if (got.n != PER_ROOM - 50) {
        char q[256];
        snprintf(q, sizeof q,
                 "SELECT count(*) FROM messages WHERE room_id = '1' AND sequence_number > %s",
                 since);
        NOTE("since %s; SQL count %lld; first %s last %s", since, tl_pg_scalar(env.pg, q),
             got.n ? got.rows[0].sequence_number : "-",
             got.n ? got.rows[got.n - 1].sequence_number : "-");
    }
    /* Send order is sequence order (check_order): room 1's messages from its 51st on. */
    size_t k = 0, wrong = 0, in_room = 0;
    for (size_t i = 0; i < n_sent && k < got.n; i++) {
        if (strcmp(sent[i].room_id, "1") != 0 || in_room++ < 50) continue;
        const broadcast_history_row *row = &got.rows[k++];
        char ts[ISO8601_BUF], ra[ISO8601_BUF];
        snprintf(ts, sizeof ts, "%s", normalise(sent[i].timestamp));
        snprintf(ra, sizeof ra, "%s", normalise(sent[i].received_at));
        bool ok = strcmp(row->msg.message_id, sent[i].message_id) == 0 &&
                  strcmp(row->msg.message, sent[i].message) == 0 &&
                  strcmp(row->msg.username, sent[i].username) == 0 &&
                  strcmp(row->msg.user_id, sent[i].user_id) == 0 &&
                  strcmp(row->msg.room_id, "1") == 0 &&
                  strcmp(row->msg.message_type, sent[i].message_type) == 0 &&
                  strcmp(row->msg.timestamp, ts) == 0 && strcmp(row->server_timestamp, ra) == 0 &&
                  strlen(row->sequence_number) == 49; /* a position: epoch, then 39 digits */
        if (!ok && wrong < 3)
            NOTE("replayed %s (seq %s) vs sent %s", row->msg.message_id, row->sequence_number,
                 sent[i].message_id);
        wrong += !ok;
    }
    CHECK(k == got.n && wrong == 0,
          "replayed rows are the sent messages, in send order, with every field (%zu checked)", k);

    got.n = 0;
    CHECK(history_read(h, "1", since, 7, collect, &got, err, sizeof err) && got.n == 7,
          "limit 7 returns 7 rows");
    got.n = 0;
    CHECK(history_read(h, "1", "999999999999999999999999999999999999999999999999999999999999", 10,
                       collect, &got, err, sizeof err) &&
              got.n == 0,
          "nothing after a sequence number beyond the newest");
    CHECK(!history_read(h, "1", "12a", 10, collect, &got, err, sizeof err) && strstr(err, "since"),
          "a since that is not a number is refused (%s)", err);
    got.n = 0;
    CHECK(!history_read(h, "a.b", "0", 10, collect, &got, err, sizeof err) &&
              strstr(err, "roomId") && got.n == 0,
          "a room that is not a room id is refused naming roomId (%s)", err);
    CHECK(history_read(h, "01", "0", 10, collect, &got, err, sizeof err) && got.n == 0,
          "room \"01\" is not room \"1\": ids compare as text (%s)", err);

    /* Numeric, not text, order: 10 < 11 < 20 < 100 < 2^64 (as text: 10, 100, 11, 18446..., 20),
     * in a room whose id is not a number. */
    CHECK(tl_pg_exec(env.pg,
                     "INSERT INTO messages (message_id, room_id, user_id, username, message_text, "
                     "message_type,"
                     " server_id, client_ip, sequence_number, client_timestamp, received_at) SELECT"
                     " gen_random_uuid(), 'seq-order', 1, 'user1', 'seq ' || s, 'TEXT', 'it', "
                     "'127.0.0.1', s,"
                     " now(), now() FROM unnest(ARRAY[100, 9, 20, 18446744073709551616, 11, "
                     "10]::numeric[]) s"),
          "room seq-order: rows with sequence numbers 9, 10, 11, 20, 100, 2^64");
    got.n = 0;
    bool ok = history_read(h, "seq-order", "9", 10, collect, &got, err, sizeof err);
    CHECK(ok && got.n == 5 && strcmp(got.rows[0].sequence_number, "00000000000000000010") == 0 &&
              strcmp(got.rows[1].sequence_number, "00000000000000000011") == 0 &&
              strcmp(got.rows[2].sequence_number, "00000000000000000020") == 0 &&
              strcmp(got.rows[3].sequence_number, "00000000000000000100") == 0 &&
              strcmp(got.rows[4].sequence_number, "18446744073709551616") == 0,
          "after 9 come 10, 11, 20, 100, 2^64, in numeric order, as 20-digit SQS sequence numbers");
    tl_pg_exec(env.pg, "DELETE FROM messages WHERE room_id = 'seq-order'");
    history_free(h);
}

/* The /metrics page now, into log_dir/NAME (prom_quantiles.py reads two of them). */
static bool save_metrics(const tl_consumer *c, const char *name, char *path, size_t path_len)
{
    long st = 0;
    char *body = tl_http("GET", c->admin_port, "/metrics", &st);
    snprintf(path, path_len, "%s/%s", env.log_dir, name);
    FILE *f = body && st == 200 ? fopen(path, "w") : NULL;
    bool ok = f && fputs(body, f) >= 0;
    if (f) ok = fclose(f) == 0 && ok;
    free(body);
    return ok;
}

/* chatflow_consumer_stage_seconds between two scrapes, as test/lib/prom_quantiles.py reads it
 * for the benchmarks: every one of the n messages went through every stage once. */
static void check_stages(const char *before, const char *after, long long n)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "python3 '%s/test/lib/prom_quantiles.py' '%s' '%s' chatflow_consumer_stage_seconds",
             tl_env("ROOT", "."), before, after);
    FILE *f = popen(cmd, "r");
    json_error_t je;
    json_t *doc = f ? json_loadf(f, 0, &je) : NULL;
    int rc = f ? pclose(f) : -1;
    CHECK(doc && rc == 0, "prom_quantiles.py summarises the scrapes (%s)", doc ? "ok" : je.text);
    static const char *const stages[] = {"queued", "write", "bus", "settle"};
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        char key[96];
        snprintf(key, sizeof key, "chatflow_consumer_stage_seconds{stage=\"%s\"}", stages[i]);
        json_t *s = json_object_get(doc, key);
        double p50 = json_number_value(json_object_get(s, "p50_ms"));
        double p99 = json_number_value(json_object_get(s, "p99_ms"));
        CHECK_INT(json_integer_value(json_object_get(s, "count")), n,
                  "stage %s: observed once for each of the %lld messages", stages[i], n);
        CHECK(json_is_number(json_object_get(s, "p50_ms")) && p50 >= 0 && p99 >= p50,
              "stage %s: p50 %.3f ms <= p99 %.3f ms", stages[i], p50, p99);
    }
    /* A commit takes time, and the 400 messages were queued before the pollers drained them. */
    json_t *write = json_object_get(doc, "chatflow_consumer_stage_seconds{stage=\"write\"}");
    json_t *queued = json_object_get(doc, "chatflow_consumer_stage_seconds{stage=\"queued\"}");
    CHECK(json_number_value(json_object_get(write, "mean_ms")) > 0 &&
              json_number_value(json_object_get(queued, "mean_ms")) > 0,
          "the write and queued stages measured time (means %.3f and %.3f ms)",
          json_number_value(json_object_get(write, "mean_ms")),
          json_number_value(json_object_get(queued, "mean_ms")));
    json_decref(doc);
}

int main(void)
{
    if (!tl_consumer_env_init(&env, "consumer_pipeline", ROOMS)) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }

    /* Migrations: applied by --migrate, and a second run applies nothing. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "DATABASE_URL='%s' CHATFLOW_MIGRATIONS_DIR='%s/db/migrations' '%s/chatflow-consumer' "
             "--migrate "
             ">>'%s/migrate.log' 2>&1",
             env.db_url, tl_env("ROOT", "."), tl_env("CHATFLOW_BIN", "build"), env.log_dir);
    CHECK(tl_sh(cmd), "chatflow-consumer --migrate succeeds");
    CHECK(tl_sh(cmd), "chatflow-consumer --migrate succeeds again");
    env.pg = tl_pg_connect(env.db_url);
    long long files = 0;
    {
        char ls[700];
        snprintf(ls, sizeof ls, "ls '%s/db/migrations' | grep -c '^[0-9]*_.*\\.sql$'",
                 tl_env("ROOT", "."));
        FILE *f = popen(ls, "r");
        if (f && fscanf(f, "%lld", &files) != 1) files = 0;
        if (f) pclose(f);
    }
    CHECK(env.pg && files > 0 &&
              tl_pg_scalar(env.pg, "SELECT count(*) FROM schema_migrations") == files,
          "schema_migrations has one row per migration file (%lld) after two runs", files);

    build_messages();
    const char *cenv[] = {"CHATFLOW_VISIBILITY_TIMEOUT_S=20", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer", cenv)) {
        CHECK(false, "consumer started");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    char before[1024], after[1024];
    CHECK(save_metrics(&c, "metrics-before.txt", before, sizeof before),
          "/metrics scraped before the messages are sent");
    CHECK(send_all(0, n_sent), "%d messages sent to %d room queues", N, ROOMS);
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", N, 60000), N,
              "all %d messages stored", N);
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(DISTINCT message_id) FROM messages"), N,
              "each exactly once");
    check_rows();
    check_order();
    check_user_activity(N);
    test_history();

    long depth = -1;
    for (int i = 0; i < 100 && depth != 0; i++) {
        depth = tl_consumer_rooms_depth(&env);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "the room queues are empty: every stored message was deleted");
    CHECK_INT(tl_metric(c.admin_port, "chatflow_messages_consumed_total", NULL), N,
              "chatflow_messages_consumed_total = %d", N);
    CHECK_INT(tl_metric(c.admin_port, "chatflow_db_rows_written_total", NULL), N,
              "chatflow_db_rows_written_total = %d", N);
    CHECK_INT(tl_metric(c.admin_port, "chatflow_db_up", NULL), 1, "chatflow_db_up = 1");
    CHECK(tl_metric(c.admin_port, "chatflow_db_batch_size_count", NULL) >= 1,
          "chatflow_db_batch_size observed flushes");
    /* A stage is observed just after its step: the last deletes can be a moment ahead. */
    CHECK_INT(
        tl_metric_wait_equal(c.admin_port, "chatflow_consumer_stage_seconds_count", 4.0 * N, 5000),
        4 * N, "four stages observed for each message");
    CHECK(save_metrics(&c, "metrics-after.txt", after, sizeof after),
          "/metrics scraped once every message was deleted");
    check_stages(before, after, N);

    long st;
    char *ready = tl_http("GET", c.admin_port, "/health/ready", &st);
    CHECK(st == 200 && ready && strstr(ready, "\"sqs\":{\"status\":\"UP\"") &&
              strstr(ready, "\"postgres\":{\"status\":\"UP\""),
          "/health/ready is 200 with sqs and postgres UP (%s)", ready ? ready : "no answer");
    free(ready);

    test_poison(&c);
    test_string_rooms();
    test_redelivery(&c);
    check_user_activity(n_sent);
    test_rejected_row(&c);

    bool in_time = false;
    int status = tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "SIGTERM: the consumer exits 0 within the stop timeout");

    tl_consumer_env_done(&env);
    return TEST_DONE();
}
