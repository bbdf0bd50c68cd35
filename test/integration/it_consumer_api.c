/*
 * it_consumer_api — the consumer's /api/metrics endpoints against a dataset with known answers
 * (exact counts for the four core queries, the analytics and the stats), 400s with a JSON error
 * for every kind of bad parameter, POST refresh of the materialized views, and EXPLAIN of core
 * queries 1, 2 and 4 on a table large enough for the planner to care: no Seq Scan on messages.
 * And string room ids end to end: rooms "1", "20", "1000", a UUID and "team-alpha" sent to their
 * shards (three of them) are stored under that room_id in send order and paged back by
 * /api/rooms/{roomId}/messages, from memory and, after a restart, from PostgreSQL; an id that is
 * not one is a 400 naming roomId.
 */
/* test-passes: asan tsan valgrind */
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
#include "room.h"
#include "uuid.h"

#include "../../consumer/api.h"

static tl_consumer_env env;
static tl_consumer c;

/* Known dataset. Window W = [2026-01-01T00:00:00Z, 2026-01-01T00:01:00Z].
 * In W: room 1 has 7 (user 10 x4, user 20 x3), room 2 has 2 (user 10), room 3 has 1 (user 30);
 * outside W: user 30 in room 1 at 00:02:00, user 40 in room 2 the day before.
 * Busiest second in W: 00:00:03 with 4 messages. */
static const struct {
    int room, user;
    const char *ts;
} rows[] = {
    {1, 10, "2026-01-01T00:00:01Z"},   {1, 10, "2026-01-01T00:00:02Z"},
    {1, 10, "2026-01-01T00:00:03Z"},   {1, 10, "2026-01-01T00:00:03.5Z"},
    {2, 10, "2026-01-01T00:00:10Z"},   {2, 10, "2026-01-01T00:00:11Z"},
    {1, 20, "2026-01-01T00:00:03.1Z"}, {1, 20, "2026-01-01T00:00:03.2Z"},
    {1, 20, "2026-01-01T00:00:20Z"},   {3, 30, "2026-01-01T00:00:30Z"},
    {1, 30, "2026-01-01T00:02:00Z"},   {2, 40, "2025-12-31T23:59:59Z"},
};
#define N_ROWS (sizeof rows / sizeof rows[0])

static bool load_dataset(void)
{
    bool ok = true;
    for (size_t i = 0; ok && i < N_ROWS; i++) {
        char room[8], user[8], name[16], seq[24], id[UUID_STR_BUF];
        snprintf(room, sizeof room, "%d", rows[i].room);
        snprintf(user, sizeof user, "%d", rows[i].user);
        snprintf(name, sizeof name, "user%d", rows[i].user);
        snprintf(seq, sizeof seq, "%zu", 1000 + i);
        uuid_v4(id);
        const char *p[] = {id, room, user, name, rows[i].ts, seq};
        PGresult *r = PQexecParams(
            env.pg,
            "INSERT INTO messages (message_id, room_id, user_id, username, message_text,"
            " message_type, server_id, client_ip, sequence_number, client_timestamp, received_at)"
            " VALUES ($1, $2, $3, $4, 'known', 'TEXT', 'it', '127.0.0.1', $6, $5, $5)",
            6, NULL, p, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) NOTE("insert: %s", PQerrorMessage(env.pg));
        PQclear(r);
    }
    return ok &&
           tl_pg_exec(env.pg,
                      "INSERT INTO user_activity SELECT user_id, room_id, min(client_timestamp),"
                      " max(client_timestamp), count(*) FROM messages GROUP BY 1, 2");
}

static json_t *get_json(const char *path, long *status)
{
    char *body = tl_http("GET", c.admin_port, path, status);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    if (!j) NOTE("%s -> %ld, not JSON: %.200s", path, *status, body ? body : "(none)");
    free(body);
    return j;
}

static long long jint(json_t *root, const char *path)
{
    /* path like "coreQueries.roomMessages.resultCount" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = root;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur;
         tok = strtok_r(NULL, ".", &save))
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_is_integer(cur) ? (long long)json_integer_value(cur)
           : json_is_real(cur)  ? (long long)json_real_value(cur)
                                : -1;
}

static const char *jstr(json_t *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = root;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur;
         tok = strtok_r(NULL, ".", &save))
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_is_string(cur) ? json_string_value(cur) : "(not a string)";
}

static void check_known_answers(const char *query, const char *how)
{
    char path[512];
    long st;
    snprintf(path, sizeof path, "/api/metrics/all?%s", query);
    json_t *j = get_json(path, &st);
    CHECK_INT(st, 200, "GET /api/metrics/all (%s) answers 200", how);
    if (!j) return;
    CHECK_INT(jint(j, "coreQueries.roomMessages.resultCount"), 7,
              "%s: room 1 has 7 messages in the window", how);
    CHECK_STR(jstr(j, "coreQueries.roomMessages.roomId"), "1", "%s: room \"1\" queried", how);
    CHECK_INT(jint(j, "coreQueries.userHistory.resultCount"), 6,
              "%s: user 10 has 6 messages in the window", how);
    CHECK_INT(jint(j, "coreQueries.activeUsers.resultCount"), 3, "%s: 3 users active in the window",
              how);
    CHECK_INT(jint(j, "coreQueries.activeUsers.sampleData.0.userId"), 10,
              "%s: most active user first (10)", how);
    CHECK_INT(jint(j, "coreQueries.activeUsers.sampleData.0.messageCount"), 6,
              "%s: with 6 messages", how);
    CHECK_INT(jint(j, "coreQueries.userRooms.resultCount"), 2, "%s: user 10 posted in 2 rooms",
              how);
    json_t *sample = json_object_get(
        json_object_get(json_object_get(j, "coreQueries"), "roomMessages"), "sampleData");
    CHECK(json_array_size(sample) == 7 &&
              strcmp(json_string_value(json_object_get(json_array_get(sample, 0), "timestamp")),
                     "2026-01-01T00:00:01.000Z") == 0,
          "%s: sampleData has the 7 rows, earliest first", how);
    json_t *t = json_object_get(json_object_get(json_object_get(j, "coreQueries"), "userHistory"),
                                "executionTimeMs");
    CHECK(json_is_number(t) && json_number_value(t) >= 0, "%s: executionTimeMs reported", how);
    CHECK_INT(jint(j, "analytics.messagesPerSecond.messages"), 10, "%s: 10 messages in the window",
              how);
    CHECK_INT(jint(j, "analytics.messagesPerSecond.peak"), 4, "%s: peak 4 messages in one second",
              how);
    json_t *avg = json_object_get(
        json_object_get(json_object_get(j, "analytics"), "messagesPerSecond"), "avg");
    CHECK(json_is_number(avg) && json_number_value(avg) > 0.1666 && json_number_value(avg) < 0.1667,
          "%s: average 10/60 messages per second", how);
    CHECK_INT(jint(j, "analytics.topUsers.0.userId"), 10, "%s: top user 10", how);
    CHECK_INT(jint(j, "analytics.topUsers.0.messageCount"), 6, "%s: with 6 messages", how);
    CHECK_INT(jint(j, "analytics.topUsers.3.userId"), 40, "%s: fourth user 40", how);
    CHECK_STR(jstr(j, "analytics.topRooms.0.roomId"), "1", "%s: top room \"1\"", how);
    CHECK_INT(jint(j, "analytics.topRooms.0.messageCount"), 8, "%s: with 8 messages (all time)",
              how);
    CHECK_INT(jint(j, "analytics.userParticipation.0.roomsJoined"), 1, "%s: participation: 1 room",
              how);
    CHECK_INT(jint(j, "analytics.userParticipation.0.userCount"), 2, "%s: ... 2 users", how);
    CHECK_INT(jint(j, "analytics.userParticipation.1.roomsJoined"), 2, "%s: participation: 2 rooms",
              how);
    CHECK_INT(jint(j, "analytics.userParticipation.1.userCount"), 2, "%s: ... 2 users", how);
    CHECK_INT(jint(j, "dbStats.messagesRows"), (long long)N_ROWS, "%s: dbStats counts %zu messages",
              how, N_ROWS);
    CHECK_INT(jint(j, "dbStats.userActivityRows"), 6, "%s: dbStats counts 6 user_activity rows",
              how);
    json_decref(j);
}

static void check_bad(const char *query, const char *needle, const char *what)
{
    char path[512];
    long st;
    snprintf(path, sizeof path, "/api/metrics/all%s", query);
    json_t *j = get_json(path, &st);
    const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
    CHECK(st == 400 && e && strstr(e, needle), "400 with a JSON error naming %s for %s (%s)",
          needle, what, e ? e : "-");
    json_decref(j);
}

/* A room id that is not a number is a room like any other in core query 1; "01" is not "1". */
static void check_room_param(void)
{
    static const char window[] =
        "/api/metrics/all?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z";
    char path[256];
    long st;
    snprintf(path, sizeof path, "%s&roomId=team-alpha", window);
    json_t *j = get_json(path, &st);
    CHECK(st == 200 && strcmp(jstr(j, "coreQueries.roomMessages.roomId"), "team-alpha") == 0 &&
              jint(j, "coreQueries.roomMessages.resultCount") == 0,
          "roomId=team-alpha: 200, roomId \"team-alpha\" echoed as a string, 0 messages");
    json_decref(j);
    snprintf(path, sizeof path, "%s&roomId=01", window);
    j = get_json(path, &st);
    CHECK(st == 200 && strcmp(jstr(j, "coreQueries.roomMessages.roomId"), "01") == 0 &&
              jint(j, "coreQueries.roomMessages.resultCount") == 0,
          "roomId=01: 0 messages (room ids compare as text: \"01\" is not \"1\")");
    json_decref(j);
}

/* ---------------------------------------------------------------- string rooms end to end */

static const char *const E2E_ROOMS[] = {"1", "20", "1000", "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b",
                                        "team-alpha"};
#define E2E_N_ROOMS (sizeof E2E_ROOMS / sizeof E2E_ROOMS[0])
#define E2E_EACH 8
static chat_message e2e[E2E_N_ROOMS * E2E_EACH];

/* Room r's messages in send order are e2e[r + k * E2E_N_ROOMS]: the rooms were interleaved. */
static const chat_message *e2e_msg(size_t r, size_t k) { return &e2e[r + k * E2E_N_ROOMS]; }

/* The room's stored rows of this test, by sequence number, are its messages in send order. */
static bool stored_in_order(size_t r)
{
    const char *p[] = {E2E_ROOMS[r]};
    PGresult *res = PQexecParams(env.pg,
                                 "SELECT message_id::text FROM messages WHERE room_id = $1"
                                 " AND message_text LIKE 'e2e %' ORDER BY sequence_number",
                                 1, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == E2E_EACH;
    for (int k = 0; ok && k < E2E_EACH; k++)
        ok = strcmp(PQgetvalue(res, k, 0), e2e_msg(r, (size_t)k)->message_id) == 0;
    if (!ok)
        NOTE("room %s: %d rows (%s)", E2E_ROOMS[r],
             PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : -1,
             PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

/* GET /api/rooms/<id>/messages?limit=E2E_EACH: the room's messages of this test, oldest first,
 * each with its roomId; the page's source is returned in source. */
static bool api_page_matches(size_t r, char *source, size_t source_len)
{
    char path[160];
    long st;
    snprintf(path, sizeof path, "/api/rooms/%s/messages?limit=%d", E2E_ROOMS[r], E2E_EACH);
    json_t *j = get_json(path, &st);
    json_t *msgs = json_object_get(j, "messages");
    bool ok = st == 200 && strcmp(jstr(j, "roomId"), E2E_ROOMS[r]) == 0 &&
              json_array_size(msgs) == E2E_EACH;
    for (size_t k = 0; ok && k < E2E_EACH; k++) {
        json_t *m = json_array_get(msgs, k);
        ok = strcmp(jstr(m, "messageId"), e2e_msg(r, k)->message_id) == 0 &&
             strcmp(jstr(m, "roomId"), E2E_ROOMS[r]) == 0 &&
             strcmp(jstr(m, "message"), e2e_msg(r, k)->message) == 0;
    }
    snprintf(source, source_len, "%s", jstr(j, "source"));
    if (!ok) NOTE("%s -> %ld, %zu messages", path, st, json_array_size(msgs));
    json_decref(j);
    return ok;
}

static void check_pages(const char *want_source, const char *when)
{
    for (size_t r = 0; r < E2E_N_ROOMS; r++) {
        char source[32];
        bool ok = api_page_matches(r, source, sizeof source);
        CHECK(ok && strcmp(source, want_source) == 0,
              "%s: /api/rooms/%s/messages returns its %d messages, oldest first, roomId \"%s\" "
              "(source %s)",
              when, E2E_ROOMS[r], E2E_EACH, E2E_ROOMS[r], source);
    }
}

static void check_room_path_refused(const char *path, const char *what)
{
    long st;
    json_t *j = get_json(path, &st);
    const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
    CHECK(st == 400 && e && strncmp(e, "roomId", 6) == 0,
          "%s: 400 with a JSON error naming roomId (%ld, %s)", what, st, e ? e : "-");
    json_decref(j);
}

/* Rooms "1", "20" and the UUID share shard 1 of 3, "1000" is on shard 2, "team-alpha" on 3
 * (room.h): each keeps its own order on a shared FIFO queue, lands in PostgreSQL under its id, and
 * the room API pages it back — from the consumer's memory, and after a restart from PostgreSQL. */
static void test_string_rooms_end_to_end(void)
{
    /* The known dataset's room-1 rows carry made-up sequence numbers (1000...) that no queue
     * issued: they would sort anywhere among fauxqs's. Their answers are checked: drop them. */
    CHECK(tl_pg_exec(env.pg, "DELETE FROM messages WHERE room_id = '1' AND message_text = 'known'"),
          "the known dataset's room-1 rows removed");
    bool sent = true;
    for (size_t k = 0; k < E2E_EACH; k++)
        for (size_t r = 0; r < E2E_N_ROOMS; r++) {
            chat_message *m = &e2e[r + k * E2E_N_ROOMS];
            char text[96];
            snprintf(text, sizeof text, "e2e %s #%zu", E2E_ROOMS[r], k);
            tl_chat_message(m, 1, 50 + (int)r, text, "TEXT");
            snprintf(m->room_id, sizeof m->room_id, "%s", E2E_ROOMS[r]);
            sent = sent && tl_consumer_send_to_room(&env, m);
        }
    NOTE("shards of 3: 1->%d 20->%d 1000->%d uuid->%d team-alpha->%d", room_shard("1", 3),
         room_shard("20", 3), room_shard("1000", 3), room_shard(E2E_ROOMS[3], 3),
         room_shard("team-alpha", 3));
    CHECK(sent, "%zu messages of rooms 1, 20, 1000, a UUID and team-alpha sent to their shards",
          sizeof e2e / sizeof e2e[0]);
    CHECK_INT(tl_pg_wait_scalar(env.pg,
                                "SELECT count(*) FROM messages WHERE message_text LIKE 'e2e %'",
                                (long long)(sizeof e2e / sizeof e2e[0]), 30000),
              (long long)(sizeof e2e / sizeof e2e[0]), "they are all stored");
    for (size_t r = 0; r < E2E_N_ROOMS; r++)
        CHECK(stored_in_order(r), "room \"%s\": its %d rows have room_id '%s', in send order",
              E2E_ROOMS[r], E2E_EACH, E2E_ROOMS[r]);
    check_pages("cache", "from memory");

    check_room_path_refused("/api/rooms/a.b/messages", "GET /api/rooms/a.b/messages");
    check_room_path_refused("/api/rooms/a.b/presence", "GET /api/rooms/a.b/presence");
    check_room_path_refused("/api/rooms//messages", "an empty room id");
    check_room_path_refused(
        "/api/rooms/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/messages",
        "a 65-character room id");
    check_room_path_refused("/api/rooms/a%2Eb/messages", "an encoded '.' (a%2Eb)");
    long st;
    json_t *j = get_json("/api/rooms/team-alpha/presence", &st);
    CHECK(st == 200 && strcmp(jstr(j, "roomId"), "team-alpha") == 0 && jint(j, "onlineCount") == 0,
          "GET /api/rooms/team-alpha/presence: 200, roomId \"team-alpha\", nobody online");
    json_decref(j);

    /* A restarted consumer has an empty cache: the same pages come from PostgreSQL. */
    bool in_time = false;
    int status = tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "consumer stopped for the restart");
    CHECK(tl_consumer_start(&env, &c, "consumer-restarted", NULL), "consumer started again");
    check_pages("database", "after a restart");
}

static void explain_core_queries(void)
{
    /* Enough rows that a sequential scan would be the planner's choice without the indexes. */
    CHECK(
        tl_pg_exec(
            env.pg,
            "INSERT INTO messages (message_id, room_id, user_id, username, message_text, "
            "message_type,"
            " server_id, client_ip, sequence_number, client_timestamp, received_at)"
            " SELECT gen_random_uuid(), (1 + g % 20)::text, 1 + (g * 7919) % 100000, 'user' || g, "
            "'bulk', 'TEXT', 'it',"
            " '127.0.0.1', 100000 + g, timestamptz '2026-02-01' + g * interval '173 ms',"
            " timestamptz '2026-02-01' FROM generate_series(1, 200000) g") &&
            tl_pg_exec(env.pg,
                       "INSERT INTO user_activity SELECT user_id, room_id, min(client_timestamp),"
                       " max(client_timestamp), count(*) FROM messages WHERE message_text = 'bulk'"
                       " GROUP BY 1, 2 ON CONFLICT DO NOTHING") &&
            tl_pg_exec(env.pg, "ANALYZE messages; ANALYZE user_activity"),
        "200,000 more rows loaded and analyzed");
    struct {
        const char *name;
        const char *args;
    } q[] = {
        {"room_messages", "('7', '2026-02-01T01:00:00Z', '2026-02-01T01:10:00Z')"},
        {"user_history", "('7919', '2026-02-01T00:00:00Z', '2026-02-02T00:00:00Z')"},
        {"user_rooms", "('7919')"},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        const char *sql = api_query_sql(q[i].name);
        char *stmt = malloc(strlen(sql) + 128);
        sprintf(stmt, "PREPARE explain_%s AS %s", q[i].name, sql);
        bool ok = sql && tl_pg_exec(env.pg, stmt);
        free(stmt);
        char ex[256];
        snprintf(ex, sizeof ex, "EXPLAIN EXECUTE explain_%s%s", q[i].name, q[i].args);
        PGresult *r = ok ? PQexec(env.pg, ex) : NULL;
        bool seq = false, any = false;
        for (int k = 0; r && PQresultStatus(r) == PGRES_TUPLES_OK && k < PQntuples(r); k++) {
            any = true;
            if (strstr(PQgetvalue(r, k, 0), "Seq Scan on messages")) seq = true;
        }
        for (int k = 0; r && PQresultStatus(r) == PGRES_TUPLES_OK && k < PQntuples(r); k++)
            if (seq || strstr(PQgetvalue(r, k, 0), " on "))
                NOTE("%s: %s", q[i].name, PQgetvalue(r, k, 0));
        CHECK(any && !seq, "EXPLAIN of core query %s shows no Seq Scan on messages", q[i].name);
        PQclear(r);
    }
}

int main(void)
{
    if (!tl_consumer_env_init(&env, "consumer_api", 3)) {
        CHECK(false, "test environment set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    if (!tl_consumer_start(&env, &c, "consumer", NULL) || !(env.pg = tl_pg_connect(env.db_url))) {
        CHECK(false, "consumer started");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    CHECK(load_dataset(), "known dataset of %zu messages loaded", N_ROWS);

    long st;
    char *body = tl_http("POST", c.admin_port, "/api/metrics/refresh", &st);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    CHECK(st == 200 && json_array_size(json_object_get(j, "refreshed")) == 5,
          "POST /api/metrics/refresh refreshes the 5 materialized views (%s)", body ? body : "-");
    json_decref(j);
    free(body);
    body = tl_http("GET", c.admin_port, "/api/metrics/refresh", &st);
    CHECK_INT(st, 405, "GET /api/metrics/refresh is 405");
    free(body);

    check_known_answers(
        "testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&roomId=1&userId=10",
        "ISO-8601 times");
    check_known_answers("testStartTime=1767225600000&testEndTime=1767225660000&roomId=1&userId=10",
                        "epoch ms");
    check_known_answers(
        "testStartTime=2026-01-01T01:00:00%2B01:00&testEndTime=2026-01-01T00:01:00.000Z",
        "zone offset, defaults for room and user");

    check_bad("", "testStartTime", "no parameters");
    check_bad("?testStartTime=2026-01-01T00:00:00Z", "testEndTime", "a missing end");
    check_bad("?testStartTime=yesterday&testEndTime=2026-01-01T00:01:00Z", "testStartTime",
              "a malformed start");
    check_bad("?testStartTime=2026-01-01T00:00:00&testEndTime=2026-01-01T00:01:00Z",
              "testStartTime", "a start without zone");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-13-01T00:01:00Z", "testEndTime",
              "month 13");
    check_bad("?testStartTime=2026-01-01T00:02:00Z&testEndTime=2026-01-01T00:01:00Z", "after",
              "an inverted window");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&userId=0",
              "userId", "userId 0");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&userId=100001",
              "userId", "userId 100001");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&userId=abc",
              "userId", "userId abc");
    /* "-1" and "1x" are room ids now; these are not (room.h) */
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&roomId=a.b",
              "roomId: must be 1-64 characters", "roomId a.b");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&roomId=",
              "roomId", "an empty roomId");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&roomId=a%20b",
              "roomId", "roomId 'a b'");
    check_bad("?testStartTime=2026-01-01T00:00:00Z&testEndTime=2026-01-01T00:01:00Z&roomId="
              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
              "roomId", "a 65-character roomId");
    check_room_param();

    j = get_json("/api/metrics/db-stats", &st);
    CHECK(st == 200 && jint(j, "messagesRows") == (long long)N_ROWS &&
              jint(j, "userActivityRows") == 6 && jint(j, "messagesTotalBytes") > 0 &&
              json_array_size(json_object_get(j, "indexes")) >= 5,
          "GET /api/metrics/db-stats: row counts, sizes and indexes");
    json_decref(j);

    test_string_rooms_end_to_end();
    explain_core_queries();

    bool in_time = false;
    int status = tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGTERM: exits 0 in time");
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
