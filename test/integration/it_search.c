/*
 * it_search — GET /api/rooms/{roomId}/search against a real consumer and PostgreSQL (migration
 * 0006's pg_trgm index): every bad parameter is a 400 naming it; results contain q
 * case-insensitively, come only from the room asked for, best match first with a score; % _ and
 * \ in q are literal, never wildcards; paging by offset gives every match once; the trigram
 * index serves the ILIKE; with the messages table locked the answer is a 503 with Retry-After,
 * within a bound, not a hang.
 */
/* test-passes: asan */
#include <jansson.h>
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

#include "../../consumer/history.h"

static tl_consumer_env env;

/* A stored message of room, straight into the table (the consumer's path is tested elsewhere). */
static bool store(const char *room, int seq, const char *text)
{
    char *lit = PQescapeLiteral(env.pg, text, strlen(text));
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO messages (message_id, room_id, user_id, username, message_text,"
             " message_type, server_id, client_ip, sequence_number, client_timestamp, received_at)"
             " VALUES (gen_random_uuid(), '%s', 7, 'searcher', %s, 'TEXT', 'it', '127.0.0.1', %d,"
             " now(), now())",
             room, lit ? lit : "NULL", seq);
    PQfreemem(lit);
    return tl_pg_exec(env.pg, sql);
}

/* GET path on the consumer's API: the status, and the parsed body (NULL when none). */
static json_t *get(int port, const char *path, long *status)
{
    char *body = tl_http("GET", port, path, status);
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return doc;
}

static void expect_400(int port, const char *path, const char *names)
{
    long st = 0;
    json_t *doc = get(port, path, &st);
    const char *error = json_string_value(json_object_get(doc, "error"));
    CHECK(st == 400 && error && strncmp(error, names, strlen(names)) == 0,
          "%s -> 400 naming %s (%ld: %s)", path, names, st, error ? error : "no error");
    json_decref(doc);
}

static void test_bad_input(int port)
{
    expect_400(port, "/api/rooms/s1/search", "q:");
    expect_400(port, "/api/rooms/s1/search?q=ab", "q:");
    expect_400(port, "/api/rooms/s1/search?q=%FF%FE%FD", "q:");
    char long_q[300];
    memset(long_q, 'x', 201);
    long_q[201] = '\0';
    char path[400];
    snprintf(path, sizeof path, "/api/rooms/s1/search?q=%s", long_q);
    expect_400(port, path, "q:");
    expect_400(port, "/api/rooms/s1/search?q=hello&limit=0", "limit:");
    expect_400(port, "/api/rooms/s1/search?q=hello&limit=101", "limit:");
    expect_400(port, "/api/rooms/s1/search?q=hello&offset=1001", "offset:");
    expect_400(port, "/api/rooms/s1/search?q=hello&offset=-1", "offset:");
    expect_400(port, "/api/rooms/a.b/search?q=hello", "roomId:");
}

/* The texts of a search's results, in order, and whether every score is in 0..1, descending. */
static size_t results_of(json_t *doc, const char *texts[], size_t max, bool *scores_ok)
{
    json_t *results = json_object_get(doc, "results");
    size_t n = json_array_size(results);
    double last = 2;
    *scores_ok = true;
    for (size_t i = 0; i < n && i < max; i++) {
        json_t *r = json_array_get(results, i);
        texts[i] = json_string_value(json_object_get(r, "message"));
        double score = json_number_value(json_object_get(r, "score"));
        if (!json_is_number(json_object_get(r, "score")) || score < 0 || score > 1 || score > last)
            *scores_ok = false;
        last = score;
    }
    return n;
}

static void test_matches(int port)
{
    long st = 0;
    const char *texts[16];
    bool scores_ok = false;
    json_t *doc = get(port, "/api/rooms/s1/search?q=hello", &st);
    size_t n = results_of(doc, texts, 16, &scores_ok);
    bool contain = n > 0;
    for (size_t i = 0; i < n && i < 16; i++)
        contain = contain && texts[i] && strcasestr(texts[i], "hello");
    CHECK(st == 200 && n == 3 && contain,
          "q=hello in s1: the 3 messages containing it in any case, none of room s2 (%ld, %zu)", st,
          n);
    CHECK(scores_ok, "each result has a score 0-1, best match first");
    CHECK(n >= 1 && texts[0] && strcmp(texts[0], "hello") == 0,
          "the message that is exactly the word ranks first (%s)", n && texts[0] ? texts[0] : "-");
    CHECK_STR(json_string_value(json_object_get(doc, "query")), "hello", "the answer names q");
    CHECK(json_is_false(json_object_get(doc, "hasMore")) &&
              json_is_null(json_object_get(doc, "nextOffset")),
          "hasMore false, nextOffset null");
    json_decref(doc);

    doc = get(port, "/api/rooms/s1/search?q=50%25%20o", &st);
    n = results_of(doc, texts, 16, &scores_ok);
    CHECK(st == 200 && n == 1 && texts[0] && strcmp(texts[0], "50% off today") == 0,
          "q='50%% o': %% is literal: only the text that has it (%zu results)", n);
    json_decref(doc);
    doc = get(port, "/api/rooms/s1/search?q=z_a", &st);
    n = results_of(doc, texts, 16, &scores_ok);
    CHECK(st == 200 && n == 0, "q='z_a': _ is literal: 'xyz abc' does not match (%zu results)", n);
    json_decref(doc);
    doc = get(port, "/api/rooms/s1/search?q=a%5Cb", &st);
    n = results_of(doc, texts, 16, &scores_ok);
    CHECK(st == 200 && n == 1 && texts[0] && strcmp(texts[0], "path a\\b here") == 0,
          "q='a\\b': a backslash is literal (%zu results)", n);
    json_decref(doc);
    doc = get(port, "/api/rooms/s1/search?q=%C3%A9t%C3%A9", &st);
    n = results_of(doc, texts, 16, &scores_ok);
    CHECK(st == 200 && n == 1, "q='été' (3 characters of UTF-8) finds 'Un été chaud' (%zu)", n);
    json_decref(doc);
    doc = get(port, "/api/rooms/nobody-here/search?q=hello", &st);
    CHECK(st == 200 && json_array_size(json_object_get(doc, "results")) == 0,
          "a room with no messages answers an empty list");
    json_decref(doc);
}

static void test_paging(int port)
{
    char seen[25][UUID_STR_BUF];
    size_t n_seen = 0;
    bool pages_ok = true;
    const int offsets[] = {0, 10, 20};
    for (size_t p = 0; p < 3; p++) {
        char path[128];
        snprintf(path, sizeof path, "/api/rooms/s3/search?q=needle&limit=10&offset=%d", offsets[p]);
        long st = 0;
        json_t *doc = get(port, path, &st);
        json_t *results = json_object_get(doc, "results");
        size_t want = p < 2 ? 10 : 5;
        bool more = json_is_true(json_object_get(doc, "hasMore"));
        json_t *next = json_object_get(doc, "nextOffset");
        pages_ok = pages_ok && st == 200 && json_array_size(results) == want && more == (p < 2) &&
                   (p < 2 ? json_integer_value(next) == offsets[p] + 10 : json_is_null(next));
        for (size_t i = 0; i < json_array_size(results) && n_seen < 25; i++) {
            const char *id =
                json_string_value(json_object_get(json_array_get(results, i), "messageId"));
            bool dup = false;
            for (size_t k = 0; id && k < n_seen; k++) dup = dup || strcmp(seen[k], id) == 0;
            if (id && !dup) snprintf(seen[n_seen++], sizeof seen[0], "%s", id);
        }
        json_decref(doc);
    }
    CHECK(pages_ok, "25 matches in pages of 10: 10 (hasMore, nextOffset 10), 10, 5 (no more)");
    CHECK_INT((long long)n_seen, 25, "the three pages hold every match once");
}

static void test_index_used(void)
{
    const char *sql = history_query_sql("search");
    CHECK(sql && strstr(sql, "ILIKE"), "the search statement filters with ILIKE");
    PGresult *r = PQexec(env.pg, "SET enable_seqscan = off; EXPLAIN SELECT message_id FROM "
                                 "messages WHERE message_text ILIKE '%needle%'");
    bool uses = false;
    for (int i = 0; r && PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
        uses = uses || strstr(PQgetvalue(r, i, 0), "messages_text_trgm_idx");
    PQclear(r);
    PQclear(PQexec(env.pg, "RESET enable_seqscan"));
    CHECK(uses, "a text-contains filter can be served by messages_text_trgm_idx (pg_trgm)");
}

/* The messages table locked by another session: a bounded 503, never a hang. */
static void test_locked(int port)
{
    PGconn *locker = tl_pg_connect(env.db_url);
    bool locked = locker && tl_pg_exec(locker, "BEGIN") &&
                  tl_pg_exec(locker, "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
    CHECK(locked, "another session holds an exclusive lock on messages");
    uint64_t t0 = time_mono_ns();
    long st = 0;
    json_t *doc = get(port, "/api/rooms/s1/search?q=hello", &st);
    long ms = (long)((time_mono_ns() - t0) / 1000000ull);
    CHECK(st == 503 && json_is_string(json_object_get(doc, "error")) && ms < 5000,
          "locked: 503 with the reason in %ld ms (bounded by the statement timeout)", ms);
    json_decref(doc);
    if (locker) {
        tl_pg_exec(locker, "ROLLBACK");
        PQfinish(locker);
    }
    bool back = false;
    for (int i = 0; i < 40 && !back; i++) {
        doc = get(port, "/api/rooms/s1/search?q=hello", &st);
        back = st == 200;
        json_decref(doc);
        if (!back) time_sleep_ms(100);
    }
    CHECK(back, "unlocked: 200 again (once the fail-fast window has passed)");
}

int main(void)
{
    if (!tl_consumer_env_init(&env, "search", 2)) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer", NULL)) {
        CHECK(false, "consumer started");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    env.pg = tl_pg_connect(env.db_url);
    static const char *const s1[] = {"Hello World",    "say HELLO again", "hello",
                                     "goodbye",        "50% off today",   "xyz abc",
                                     "path a\\b here", "Un été chaud"};
    bool ok = env.pg != NULL;
    for (size_t i = 0; ok && i < sizeof s1 / sizeof s1[0]; i++) ok = store("s1", (int)i + 1, s1[i]);
    ok = ok && store("s2", 1, "hello from the other room");
    for (int i = 0; ok && i < 25; i++) {
        char text[64];
        snprintf(text, sizeof text, "a needle in haystack %d", i);
        ok = store("s3", i + 1, text);
    }
    CHECK(ok, "34 messages stored in rooms s1, s2 and s3");

    test_bad_input(c.admin_port);
    test_matches(c.admin_port);
    test_paging(c.admin_port);
    test_index_used();
    test_locked(c.admin_port);

    bool in_time = false;
    int status = tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "SIGTERM: the consumer exits 0");
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
