/*
 * it_consumer_dbapi — the consumer's database layer and the isolation of its HTTP API, against
 * the real PostgreSQL of the test stack (private databases and a private role; nothing shared is
 * stopped or changed).
 *
 *  1. Faults produced by a real server are classified as db.h says: a class-22 value and a
 *     class-23 constraint are DATA; a read-only database (default_transaction_read_only, new
 *     session) is UNAVAILABLE/read_only; a missing table — also when it breaks the preparation
 *     of statements — is UNAVAILABLE/schema, never DATA; a revoked INSERT grant is
 *     UNAVAILABLE/permission; a refused connection is CONNECTION; no error string carries the
 *     URL's password.
 *  2. db_check_writable() and db_health: "writable" when healthy, and the detail naming the
 *     condition (read-only, schema, permission) otherwise; the health check caches for 1 s.
 *  3. Bounded waits: an exhausted pool hands out NULL within the timeout; with the messages
 *     table locked, history reads fail with the statement timeout and a third caller gets
 *     "database busy" within the acquire timeout.
 *  4. Admin isolation with a real consumer: the messages table locked in an open transaction,
 *     10 concurrent history requests all answer 503 with Retry-After within a bound while
 *     /health/live answers 200 within 1 s every time; after the unlock, 200 again.
 *  5. Database down (the test database refusing connections): a page the history cache holds is
 *     still 200 (read positions null with the error), a page that needs PostgreSQL is 503 with
 *     Retry-After, fast; the replay source (history_read) fails fast with a clear error; after
 *     the database is back, pages come from PostgreSQL again.
 */
/* test-passes: asan */
#include <pthread.h>

#include <curl/curl.h>
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
#include "../../consumer/db.h"
#include "../../consumer/history.h"

#define SECRET "TopSecret77"
#define ROOM 1      /* for tl_chat_message() and the queue */
#define ROOM_ID "1" /* the same room as an id (room.h), for history and SQL */
#define N_MESSAGES 6
#define N_REQUESTS 10

static tl_consumer_env env;
static char role[64];
static char extra_dbs[2][64];

/* ---------------------------------------------------------------- set-up helpers */

static bool exec_on(const char *url, const char *sql)
{
    PGconn *c = tl_pg_connect(url);
    bool ok = c && tl_pg_exec(c, sql);
    if (c) PQfinish(c);
    return ok;
}

/* The stack's superuser (trust on loopback) on database db: creating a role needs it. */
static bool superuser_exec(const char *db, const char *sql)
{
    PGconn *c = tl_pg_connect(env.admin_url);
    if (!c) return false;
    char url[512];
    snprintf(url, sizeof url, "host=%s port=%s user=postgres dbname=%s", PQhost(c), PQport(c), db);
    PQfinish(c);
    return exec_on(url, sql);
}

static bool migrate(const char *url)
{
    char dir[600], err[512] = "";
    int applied = 0;
    snprintf(dir, sizeof dir, "%s/db/migrations", tl_env("ROOT", "."));
    bool ok = db_migrate(url, dir, 10000, &applied, err, sizeof err);
    if (!ok) NOTE("migrate: %s", err);
    return ok;
}

/* A database of this test's own next to env's: name into extra_dbs[slot], its URL into url. */
static bool extra_db(int slot, const char *suffix, bool with_schema, char *url, size_t len)
{
    snprintf(extra_dbs[slot], sizeof extra_dbs[slot], "itc_dbapi_%s_%d", suffix, (int)getpid());
    char sql[200];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", extra_dbs[slot]);
    bool ok = exec_on(env.admin_url, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", extra_dbs[slot]);
    ok = ok && exec_on(env.admin_url, sql) &&
         tl_pg_url_for(env.admin_url, extra_dbs[slot], url, len);
    return ok && (!with_schema || migrate(url));
}

/* Idempotent: called at the end and at exit (a failed run leaves nothing behind either). */
static void cleanup(void)
{
    char sql[200];
    for (int i = 0; i < 2; i++)
        if (extra_dbs[i][0]) {
            snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", extra_dbs[i]);
            exec_on(env.admin_url, sql);
            extra_dbs[i][0] = '\0';
        }
    if (role[0]) {
        snprintf(sql, sizeof sql, "DROP OWNED BY %s", role);
        superuser_exec(env.db_name, sql);
        snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", role);
        superuser_exec("postgres", sql);
        role[0] = '\0';
    }
}

static void expect_fault(db_conn *c, bool failed, db_error_kind kind, const char *class_name,
                         const char *state, const char *what, const char *err)
{
    CHECK(failed, "%s fails", what);
    CHECK(db_last_error_kind(c) == kind, "%s is %s (got %s: %s)", what, db_error_kind_name(kind),
          db_error_kind_name(db_last_error_kind(c)), err);
    CHECK_STR(db_last_error_class(c), class_name, "%s has class %s", what, class_name);
    if (state) CHECK_STR(db_last_sqlstate(c), state, "%s has SQLSTATE %s", what, state);
}

#define INSERT_ONE                                                                              \
    "INSERT INTO messages (message_id, room_id, user_id, username, message_text, message_type," \
    " server_id, client_ip, client_timestamp, received_at) VALUES"                              \
    " ('00000000-0000-4000-8000-000000000001', '1', 1, 'u', 't', $1, 's', '127.0.0.1', now(), " \
    "now())"

/* ---------------------------------------------------------------- 1 + 2: classification */

static void test_data_faults(void)
{
    char err[512] = "", detail[256] = "";
    db_conn *c = db_conn_new(env.db_url, 5000, "it-dbapi", NULL, 0, NULL, NULL);
    const char *bad_int[] = {"not-a-number"};
    PGresult *r = db_conn_ensure(c, err, sizeof err)
                      ? db_exec_params(c, "SELECT $1::int", 1, bad_int, err, sizeof err)
                      : NULL;
    expect_fault(c, r == NULL, DB_ERR_DATA, "data", "22P02", "a class-22 value", err);
    PQclear(r);
    const char *bad_type[] = {"NOPE"};
    r = db_exec_params(c, INSERT_ONE, 1, bad_type, err, sizeof err);
    expect_fault(c, r == NULL, DB_ERR_DATA, "data", "23514", "a row breaking a CHECK constraint",
                 err);
    PQclear(r);
    CHECK(db_check_writable(c, detail, sizeof detail) && strcmp(detail, "writable") == 0 &&
              db_last_error_kind(c) == DB_ERR_NONE && strcmp(db_last_error_class(c), "none") == 0,
          "db_check_writable on a healthy database: UP (%s)", detail);
    db_conn_free(c);
}

static void test_read_only(void)
{
    char url[1024], err[512] = "", detail[256] = "", sql[200];
    CHECK(extra_db(0, "ro", true, url, sizeof url), "a migrated database for the read-only case");
    snprintf(sql, sizeof sql, "ALTER DATABASE %s SET default_transaction_read_only = on",
             extra_dbs[0]);
    CHECK(exec_on(env.admin_url, sql), "the database made read-only");
    db_conn *c = db_conn_new(url, 5000, "it-dbapi", NULL, 0, NULL, NULL); /* a new session */
    const char *type[] = {"TEXT"};
    PGresult *r = db_conn_ensure(c, err, sizeof err)
                      ? db_exec_params(c, INSERT_ONE, 1, type, err, sizeof err)
                      : NULL;
    expect_fault(c, r == NULL, DB_ERR_UNAVAILABLE, "read_only", "25006",
                 "an INSERT into a read-only database", err);
    PQclear(r);
    bool up = db_check_writable(c, detail, sizeof detail);
    CHECK(!up && strstr(detail, "read-only") && strstr(detail, "transaction_read_only"),
          "db_check_writable names read-only (%s)", detail);
    CHECK(db_last_error_kind(c) == DB_ERR_UNAVAILABLE &&
              strcmp(db_last_error_class(c), "read_only") == 0,
          "db_check_writable sets UNAVAILABLE/read_only (%s/%s)",
          db_error_kind_name(db_last_error_kind(c)), db_last_error_class(c));
    db_conn_free(c);
}

static const db_statement needs_messages[] = {
    {"latest", "SELECT message_id FROM messages LIMIT $1::int", 1}};

static void test_missing_table(char *noschema_url, size_t len)
{
    char err[512] = "", detail[256] = "";
    CHECK(extra_db(1, "noschema", false, noschema_url, len), "a database without the schema");
    db_conn *c = db_conn_new(noschema_url, 5000, "it-dbapi", needs_messages, 1, NULL, NULL);
    bool ok = db_conn_ensure(c, err, sizeof err);
    expect_fault(c, !ok, DB_ERR_UNAVAILABLE, "schema", "42P01",
                 "preparing a statement on a missing table", err);
    CHECK(db_last_error_kind(c) != DB_ERR_DATA, "a prepare failing with 42P01 is not DATA");
    db_conn_free(c);

    c = db_conn_new(noschema_url, 5000, "it-dbapi", NULL, 0, NULL, NULL);
    const char *type[] = {"TEXT"};
    PGresult *r = db_conn_ensure(c, err, sizeof err)
                      ? db_exec_params(c, INSERT_ONE, 1, type, err, sizeof err)
                      : NULL;
    expect_fault(c, r == NULL, DB_ERR_UNAVAILABLE, "schema", "42P01",
                 "an INSERT into a missing table", err);
    PQclear(r);
    CHECK(!db_check_writable(c, detail, sizeof detail) &&
              strstr(detail, "public.messages does not exist") &&
              strcmp(db_last_error_class(c), "schema") == 0,
          "db_check_writable names the missing table, without an error of its own (%s)", detail);
    db_conn_free(c);
}

static void test_revoked_grant(void)
{
    char sql[300], url[1024], err[512] = "", detail[256] = "";
    snprintf(role, sizeof role, "itc_dbapi_role_%d", (int)getpid());
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN", role);
    bool ok = superuser_exec("postgres", sql);
    snprintf(sql, sizeof sql, "GRANT USAGE ON SCHEMA public TO %s; GRANT SELECT ON messages TO %s",
             role, role);
    ok = ok && exec_on(env.db_url, sql);
    PGconn *probe = tl_pg_connect(env.db_url);
    if (probe) {
        snprintf(url, sizeof url, "host=%s port=%s user=%s dbname=%s", PQhost(probe), PQport(probe),
                 role, env.db_name);
        PQfinish(probe);
    }
    CHECK(ok && probe, "a role that may read but not INSERT into messages");
    db_conn *c = db_conn_new(url, 5000, "it-dbapi", NULL, 0, NULL, NULL);
    const char *type[] = {"TEXT"};
    PGresult *r = db_conn_ensure(c, err, sizeof err)
                      ? db_exec_params(c, INSERT_ONE, 1, type, err, sizeof err)
                      : NULL;
    expect_fault(c, r == NULL, DB_ERR_UNAVAILABLE, "permission", "42501",
                 "an INSERT without the grant", err);
    PQclear(r);
    CHECK(!db_check_writable(c, detail, sizeof detail) &&
              strstr(detail, "may not INSERT into public.messages") && strstr(detail, role) &&
              strcmp(db_last_error_class(c), "permission") == 0,
          "db_check_writable names the missing grant (%s)", detail);
    db_conn_free(c);
}

static void test_connection_and_secrets(void)
{
    static const char *const urls[] = {
        "postgresql://chatflow:" SECRET "@127.0.0.1:1/none",
        "postgresql://chatflow:" SECRET "@[::1/none", /* libpq quotes what it cannot parse */
        "host=127.0.0.1 port=1 password=" SECRET " bogus",
        "postgresql://chatflow@127.0.0.1:1/none?password=" SECRET "&connect_timeout=x",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char err[512] = "", detail[256] = "";
        db_conn *c = db_conn_new(urls[i], 5000, "it-dbapi", NULL, 0, NULL, NULL);
        bool ok = db_conn_ensure(c, err, sizeof err);
        CHECK(!ok && db_last_error_kind(c) == DB_ERR_CONNECTION &&
                  strcmp(db_last_error_class(c), "connection") == 0,
              "bad URL %zu: CONNECTION (%s)", i, err);
        CHECK(err[0] && !strstr(err, SECRET) && !strstr(err, "TopSecret"),
              "bad URL %zu: no password in \"%s\"", i, err);
        CHECK(!db_check_writable(c, detail, sizeof detail) && detail[0] && !strstr(detail, SECRET),
              "bad URL %zu: the check is DOWN without the password (%s)", i, detail);
        db_conn_free(c);
        char redacted[512];
        db_redact(urls[i], redacted, sizeof redacted);
        CHECK(!strstr(redacted, SECRET) && strstr(redacted, "***"), "redacted: %s", redacted);
    }
}

static void test_health(const char *noschema_url)
{
    char detail[256] = "";
    db_health *h = db_health_new(env.db_url);
    uint64_t t0 = time_mono_ns();
    bool up = db_health_check(h, detail, sizeof detail);
    CHECK(up && strcmp(detail, "writable") == 0, "db_health UP on a healthy database (%s)", detail);
    t0 = time_mono_ns();
    up = db_health_check(h, detail, sizeof detail);
    CHECK(up && time_mono_ns() - t0 < 5000000ull,
          "a second probe within 1 s is the cached answer (%.2f ms)",
          (double)(time_mono_ns() - t0) / 1e6);
    db_health_free(h);
    h = db_health_new(noschema_url);
    up = db_health_check(h, detail, sizeof detail);
    CHECK(!up && strstr(detail, "schema not ready"), "db_health DOWN naming the schema (%s)",
          detail);
    db_health_free(h);
}

/* ---------------------------------------------------------------- 3: bounded waits */

typedef struct {
    history *h;
    bool ok;
    double ms;
    char err[400];
} reader;

static void ignore_row(void *ctx, const broadcast_history_row *row)
{
    (void)ctx;
    (void)row;
}

static void *read_page(void *arg)
{
    reader *r = arg;
    uint64_t t0 = time_mono_ns();
    r->ok = history_read_before(r->h, ROOM_ID, "", 5, ignore_row, NULL, r->err, sizeof r->err);
    r->ms = (double)(time_mono_ns() - t0) / 1e6;
    return NULL;
}

static PGconn *lock_messages(void)
{
    PGconn *c = tl_pg_connect(env.db_url);
    if (c && tl_pg_exec(c, "BEGIN") &&
        tl_pg_exec(c, "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        return c;
    if (c) PQfinish(c);
    return NULL;
}

static void unlock_messages(PGconn *c)
{
    if (!c) return;
    tl_pg_exec(c, "ROLLBACK");
    PQfinish(c);
}

static void test_bounded_waits(void)
{
    db_pool *p = db_pool_new(env.db_url, 1000, "it-dbapi", NULL, 0, 2);
    db_conn *a = db_pool_acquire_timeout(p, 100), *b = db_pool_acquire_timeout(p, 100);
    uint64_t t0 = time_mono_ns();
    db_conn *c = db_pool_acquire_timeout(p, 300);
    double ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(a && b && !c && ms >= 290 && ms < 1000,
          "an exhausted pool: NULL within the 300 ms timeout (%.0f ms)", ms);
    db_pool_release(p, a);
    db_pool_release(p, b);
    db_pool_free(p);

    history *h = history_new(env.db_url, 10000); /* capped at HISTORY_STATEMENT_TIMEOUT_MAX_MS */
    PGconn *lock = lock_messages();
    CHECK(h && lock, "messages locked in an open transaction");
    reader rs[3] = {{.h = h}, {.h = h}, {.h = h}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, read_page, &rs[i]);
    time_sleep_ms(300); /* both connections taken, both readers blocked on the lock */
    read_page(&rs[2]);
    CHECK(!rs[2].ok && strstr(rs[2].err, "database busy") && rs[2].ms < HISTORY_API_WAIT_MS + 400,
          "a third reader: \"database busy\" within the acquire timeout (%.0f ms: %s)", rs[2].ms,
          rs[2].err);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECK(!rs[i].ok && strstr(rs[i].err, "database unavailable (timeout)") && rs[i].ms < 2000,
              "reader %d: the statement timeout ends the wait (%.0f ms: %s)", i, rs[i].ms,
              rs[i].err);
    }
    unlock_messages(lock);
    reader after = {.h = h};
    read_page(&after);
    CHECK(!after.ok && strstr(after.err, "failing fast") && after.ms < 50,
          "right after the timeouts, reads fail fast (%.1f ms: %s)", after.ms, after.err);
    time_sleep_ms(HISTORY_FAIL_FAST_MS + 100);
    read_page(&after);
    CHECK(after.ok, "after the unlock and the fail-fast window, the same history reads (%s)",
          after.err);
    history_free(h);
}

/* ---------------------------------------------------------------- 4 + 5: the consumer's API */

typedef struct {
    int port;
    const char *path;
    long status;
    long retry_after;
    double ms;
    char *body;
} http_call;

static size_t header_line(char *line, size_t size, size_t n, void *ud)
{
    http_call *h = ud;
    size_t len = size * n;
    if (len > 12 && strncasecmp(line, "Retry-After:", 12) == 0)
        h->retry_after = strtol(line + 12, NULL, 10);
    return len;
}

static void *http_run(void *arg)
{
    http_call *h = arg;
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", h->port, h->path);
    CURL *c = curl_easy_init();
    tl_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tl_buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_line);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    h->status = 0;
    h->retry_after = 0;
    uint64_t t0 = time_mono_ns();
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &h->status);
    h->ms = (double)(time_mono_ns() - t0) / 1e6;
    curl_easy_cleanup(c);
    h->body = b.data;
    return NULL;
}

static http_call get(int port, const char *path)
{
    http_call h = {.port = port, .path = path};
    http_run(&h);
    return h;
}

/* A JSON body {"error": "..."}. */
static bool json_error(const char *body)
{
    json_t *o = body ? json_loads(body, 0, NULL) : NULL;
    bool ok = o && json_is_string(json_object_get(o, "error"));
    json_decref(o);
    return ok;
}

static void test_isolation(const tl_consumer *p)
{
    char path[64];
    snprintf(path, sizeof path, "/api/rooms/%d/messages?limit=5", ROOM);
    http_call warm = get(p->admin_port, path);
    CHECK(warm.status == 200, "history answers before the lock (%ld)", warm.status);
    free(warm.body);

    PGconn *lock = lock_messages();
    CHECK(lock != NULL, "messages locked in an open transaction");
    http_call calls[N_REQUESTS];
    pthread_t t[N_REQUESTS];
    for (int i = 0; i < N_REQUESTS; i++) {
        calls[i] = (http_call){.port = p->admin_port, .path = path};
        pthread_create(&t[i], NULL, http_run, &calls[i]);
    }
    /* probes while the history requests are in flight, and a little after */
    double worst = 0;
    int probes = 0, live_ok = 0;
    for (uint64_t until = time_mono_ns() + 4500000000ull; time_mono_ns() < until; probes++) {
        http_call live = get(p->admin_port, "/health/live");
        if (live.status == 200) live_ok++;
        if (live.ms > worst) worst = live.ms;
        free(live.body);
        time_sleep_ms(100);
    }
    CHECK(probes > 20 && live_ok == probes && worst < 1000,
          "/health/live: %d of %d probes 200 during the pile-up, slowest %.0f ms", live_ok, probes,
          worst);
    int bounded = 0, unavailable = 0;
    double slowest = 0;
    for (int i = 0; i < N_REQUESTS; i++) {
        pthread_join(t[i], NULL);
        if (calls[i].ms > slowest) slowest = calls[i].ms;
        if (calls[i].ms < 5000) bounded++;
        if (calls[i].status == 503 && calls[i].retry_after > 0 && json_error(calls[i].body))
            unavailable++;
        else
            NOTE("request %d: %ld Retry-After %ld in %.0f ms: %s", i, calls[i].status,
                 calls[i].retry_after, calls[i].ms, calls[i].body ? calls[i].body : "(none)");
        free(calls[i].body);
    }
    CHECK(unavailable == N_REQUESTS,
          "%d of %d history requests answered 503 + Retry-After + JSON error", unavailable,
          N_REQUESTS);
    CHECK(bounded == N_REQUESTS, "every history request answered within 5 s (slowest %.0f ms)",
          slowest);
    unlock_messages(lock);
    http_call again = {0};
    for (int i = 0; i < 50; i++) {
        free(again.body);
        again = get(p->admin_port, path);
        if (again.status == 200) break;
        time_sleep_ms(200);
    }
    CHECK(again.status == 200, "after the unlock, history answers 200 again (%ld)", again.status);
    free(again.body);
}

static bool allow_connections(bool allow)
{
    char sql[300];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS %s", env.db_name,
             allow ? "true" : "false");
    bool ok = exec_on(env.admin_url, sql);
    if (!allow) {
        snprintf(sql, sizeof sql,
                 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND "
                 "pid <> pg_backend_pid()",
                 env.db_name);
        ok = ok && exec_on(env.admin_url, sql);
    }
    return ok;
}

static void test_database_down(const tl_consumer *p)
{
    chat_message msgs[N_MESSAGES];
    for (int i = 0; i < N_MESSAGES; i++) {
        char text[32];
        snprintf(text, sizeof text, "dbapi %d", i);
        tl_chat_message(&msgs[i], ROOM, 10 + i, text, "TEXT");
    }
    CHECK(tl_consumer_send_batch(&env, ROOM, msgs, N_MESSAGES), "%d messages sent to room %d",
          N_MESSAGES, ROOM);
    PGconn *pg = tl_pg_connect(env.db_url);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id = '%d'", ROOM);
    CHECK(pg && tl_pg_wait_scalar(pg, sql, N_MESSAGES, 20000) == N_MESSAGES,
          "the messages are stored");
    if (pg) PQfinish(pg);

    char path[128];
    snprintf(path, sizeof path, "/api/rooms/%d/messages?limit=%d", ROOM, N_MESSAGES - 1);
    CHECK(allow_connections(false), "the test database refuses connections (sessions ended)");
    http_call cached = get(p->admin_port, path);
    json_t *o = cached.body ? json_loads(cached.body, 0, NULL) : NULL;
    const char *source = json_string_value(json_object_get(o, "source"));
    const char *next = json_string_value(json_object_get(o, "nextBefore"));
    CHECK(cached.status == 200 && source && strcmp(source, "cache") == 0 &&
              json_array_size(json_object_get(o, "messages")) == N_MESSAGES - 1 &&
              json_is_null(json_object_get(o, "readPositions")) &&
              json_is_string(json_object_get(o, "readPositionsError")) && cached.ms < 3000,
          "database down: the cached page is 200 from the cache, read positions null with the "
          "error (%.0f ms: %s)",
          cached.ms, cached.body ? cached.body : "(none)");
    char older[160];
    snprintf(older, sizeof older, "/api/rooms/%d/messages?limit=5&before=%s", ROOM,
             next ? next : "1");
    http_call down = get(p->admin_port, older);
    CHECK(down.status == 503 && down.retry_after > 0 && json_error(down.body) && down.ms < 3000 &&
              strstr(down.body, "database unavailable") && !strstr(down.body, env.db_name),
          "database down: a page that needs PostgreSQL is 503 + Retry-After %ld + a JSON error "
          "without server details, in %.0f ms (%s)",
          down.retry_after, down.ms, down.body ? down.body : "(none)");
    free(down.body);
    http_call pres = get(p->admin_port, "/api/rooms/1/presence");
    CHECK(pres.status == 200 && pres.body && strstr(pres.body, "\"recentlySeen\":null"),
          "database down: presence still 200 with recentlySeen null (%s)",
          pres.body ? pres.body : "(none)");
    free(pres.body);

    /* the replay source: what a subscriber's since= asks for */
    history *h = history_new(env.db_url, 1000);
    char err[400] = "";
    uint64_t t0 = time_mono_ns();
    bool ok = history_read(h, ROOM_ID, "0", 10, ignore_row, NULL, err, sizeof err);
    double ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(!ok && strstr(err, "database unavailable (connection)") && ms < 2500,
          "database down: history_read fails fast with a clear error (%.0f ms: %s)", ms, err);
    t0 = time_mono_ns();
    ok = history_read(h, ROOM_ID, "0", 10, ignore_row, NULL, err, sizeof err);
    ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(!ok && strstr(err, "failing fast") && ms < 100,
          "and again at once within the backoff (%.1f ms: %s)", ms, err);
    history_free(h);

    CHECK(allow_connections(true), "the test database accepts connections again");
    http_call back = {0};
    for (int i = 0; i < 50; i++) {
        free(back.body);
        back = get(p->admin_port, older);
        if (back.status == 200) break;
        time_sleep_ms(200);
    }
    CHECK(back.status == 200 && back.body && strstr(back.body, "\"hasMore\":false") &&
              strstr(back.body, "\"readPositions\":[]"),
          "database back: the page that needs PostgreSQL is 200 (%ld %s)", back.status,
          back.body ? back.body : "");
    free(back.body);
    json_decref(o);
    free(cached.body);
}

int main(void)
{
    if (!tl_consumer_env_init(&env, "dbapi", 2)) {
        CHECK(false, "test environment (stack, database, queues)");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    atexit(cleanup);
    CHECK(migrate(env.db_url), "the test database migrated");
    char noschema[1024];
    test_data_faults();
    test_read_only();
    test_missing_table(noschema, sizeof noschema);
    test_revoked_grant();
    test_connection_and_secrets();
    test_health(noschema);
    test_bounded_waits();

    tl_consumer p;
    bool started = tl_consumer_start(&env, &p, "consumer", NULL);
    CHECK(started, "consumer started (log %s)", p.log_path);
    if (started) {
        test_isolation(&p);
        test_database_down(&p);
        bool in_time = false;
        int st = tl_consumer_stop(&p, SIGTERM, 15000, &in_time);
        CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "consumer stopped by SIGTERM, exit 0");
    }
    cleanup();
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
