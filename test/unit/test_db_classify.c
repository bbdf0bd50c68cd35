/*
 * test_db_classify — db.h's pure parts, no server: which SQLSTATEs are the row's fault and which
 * the database's (kind and metric class), password redaction of URLs and keyword conninfo
 * strings and scrubbing of messages that quote them, the gate's bound, and the pool's bounded
 * acquire (pool connections are created unconnected, so no server is needed).
 */
/* test-passes: asan */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "timeutil.h"
#include "../../consumer/db.h"

static void expect_state(const char *state, db_error_kind kind, const char *class_name)
{
    const char *got_class = NULL;
    db_error_kind got = db_classify_sqlstate(state, &got_class);
    CHECK(got == kind, "SQLSTATE %s is %s (got %s)", state ? state : "(none)",
          db_error_kind_name(kind), db_error_kind_name(got));
    CHECK_STR(got_class, class_name, "SQLSTATE %s has class %s", state ? state : "(none)",
              class_name);
}

static void test_classification(void)
{
    /* the row's own faults */
    expect_state("22001", DB_ERR_DATA, "data"); /* value too long */
    expect_state("22P02", DB_ERR_DATA, "data"); /* invalid text representation */
    expect_state("23514", DB_ERR_DATA, "data"); /* check violation */
    expect_state("23502", DB_ERR_DATA, "data"); /* not null */
    expect_state("23505", DB_ERR_DATA, "data"); /* unique violation (another constraint) */
    /* the connection */
    expect_state(NULL, DB_ERR_CONNECTION, "connection");
    expect_state("", DB_ERR_CONNECTION, "connection");
    expect_state("08006", DB_ERR_CONNECTION, "connection");
    expect_state("57P01", DB_ERR_CONNECTION, "connection");
    expect_state("57P03", DB_ERR_CONNECTION, "connection");
    /* the database refuses the work */
    expect_state("25006", DB_ERR_UNAVAILABLE, "read_only");
    expect_state("42P01", DB_ERR_UNAVAILABLE, "schema");
    expect_state("42703", DB_ERR_UNAVAILABLE, "schema");
    expect_state("3F000", DB_ERR_UNAVAILABLE, "schema");
    expect_state("42501", DB_ERR_UNAVAILABLE, "permission");
    expect_state("28P01", DB_ERR_UNAVAILABLE, "permission");
    expect_state("53100", DB_ERR_UNAVAILABLE, "resources");
    expect_state("53300", DB_ERR_UNAVAILABLE, "resources");
    expect_state("58030", DB_ERR_UNAVAILABLE, "resources");
    /* worth retrying */
    expect_state("57014", DB_ERR_TRANSIENT, "timeout");
    expect_state("40001", DB_ERR_TRANSIENT, "conflict");
    expect_state("40P01", DB_ERR_TRANSIENT, "conflict");
    expect_state("55P03", DB_ERR_TRANSIENT, "conflict");
    /* everything else is the database's too, never DATA */
    expect_state("42601", DB_ERR_TRANSIENT, "other"); /* a syntax error is our bug */
    expect_state("XX000", DB_ERR_TRANSIENT, "other");
    expect_state("21000", DB_ERR_TRANSIENT, "other"); /* cardinality: the batch, not a row */
    expect_state("26000", DB_ERR_TRANSIENT, "other"); /* prepared statement missing */
    CHECK_STR(db_error_kind_name(DB_ERR_UNAVAILABLE), "unavailable", "kind names");
}

static void expect_redacted(const char *conninfo, const char *want)
{
    char out[512];
    db_redact(conninfo, out, sizeof out);
    CHECK_STR(out, want, "redact %s", want);
}

static void test_redaction(void)
{
    expect_redacted("postgresql://chatflow:s3cret@db.example:5432/chatflow",
                    "postgresql://chatflow:***@db.example:5432/chatflow");
    expect_redacted("postgres://u:p%40ss@h/db?sslmode=require",
                    "postgres://u:***@h/db?sslmode=require");
    expect_redacted("postgresql://u:pa@ss@h/db", "postgresql://u:***@h/db"); /* unencoded @ */
    expect_redacted("postgresql://u@h/db?password=hunter2&sslmode=require",
                    "postgresql://u@h/db?password=***&sslmode=require");
    expect_redacted("postgresql://chatflow@127.0.0.1:5432/chatflow",
                    "postgresql://chatflow@127.0.0.1:5432/chatflow");
    expect_redacted("host=h user=u password=hunter2 dbname=d",
                    "host=h user=u password=*** dbname=d");
    expect_redacted("host=h password = 'a b\\' c' dbname=d", "host=h password = *** dbname=d");
    expect_redacted("password=x", "password=***");
    expect_redacted("host=h user=u dbname=d", "host=h user=u dbname=d");
    char small[12];
    db_redact("postgresql://u:secretpassword@h/d", small, sizeof small);
    CHECK(strlen(small) == sizeof small - 1 && !strstr(small, "secret"), "redaction truncates (%s)",
          small);

    /* messages that quote the conninfo or its password */
    const char *url = "postgresql://u:p%40ss w0rd@h:badport/db";
    char msg[300];
    snprintf(msg, sizeof msg, "connect: invalid port \"badport\" in \"%s\"; password p@ss w0rd",
             url);
    db_scrub(url, msg, sizeof msg);
    CHECK(!strstr(msg, "p%40ss") && !strstr(msg, "p@ss") &&
              strstr(msg, "postgresql://u:***@h:badport/db"),
          "scrub removes the URL's password as written and decoded (%s)", msg);
    const char *kw = "host=h password='it''s' dbname=d";
    snprintf(msg, sizeof msg, "missing \"=\" after \"'it''s'\" in connection info string");
    db_scrub(kw, msg, sizeof msg);
    CHECK(!strstr(msg, "it''s"), "scrub removes a quoted keyword password (%s)", msg);
    snprintf(msg, sizeof msg, "FATAL: password authentication failed for user \"u\"");
    db_scrub("postgresql://u:zz@h/d", msg, sizeof msg);
    CHECK_STR(msg, "FATAL: password authentication failed for user \"u\"",
              "scrub leaves other text alone");
}

static void test_gate(void)
{
    db_gate *g = db_gate_new(2);
    CHECK(g && db_gate_limit(g) == 2, "gate of 2");
    CHECK(db_gate_try_enter(g) && db_gate_try_enter(g), "two enter");
    CHECK(!db_gate_try_enter(g), "a third is refused at once");
    db_gate_leave(g);
    CHECK(db_gate_try_enter(g), "one leaves, another enters");
    db_gate_free(g);
}

typedef struct {
    db_pool *pool;
    db_conn *held;
} releaser;

static void *release_later(void *arg)
{
    releaser *r = arg;
    time_sleep_ms(150);
    db_pool_release(r->pool, r->held);
    return NULL;
}

static void test_pool_timeout(void)
{
    /* no statements, never connected: only the hand-out is exercised */
    db_pool *p = db_pool_new("postgresql://nobody@127.0.0.1:1/none", 1000, "test", NULL, 0, 2);
    CHECK(p && db_pool_size(p) == 2, "pool of 2");
    db_conn *a = db_pool_acquire_timeout(p, 100), *b = db_pool_acquire_timeout(p, 100);
    CHECK(a && b && a != b, "two connections handed out");
    uint64_t t0 = time_mono_ns();
    db_conn *c = db_pool_acquire_timeout(p, 200);
    double ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(c == NULL && ms >= 190 && ms < 1000, "exhausted: NULL after the timeout (%.0f ms)", ms);
    t0 = time_mono_ns();
    c = db_pool_acquire_timeout(p, 0);
    CHECK(c == NULL && (time_mono_ns() - t0) < 50000000ull, "timeout 0: NULL at once");
    releaser r = {p, b};
    pthread_t t;
    pthread_create(&t, NULL, release_later, &r);
    t0 = time_mono_ns();
    c = db_pool_acquire_timeout(p, 5000);
    ms = (double)(time_mono_ns() - t0) / 1e6;
    pthread_join(t, NULL);
    CHECK(c == b && ms < 2000, "a released connection wakes a waiter (%.0f ms)", ms);

    /* a pool connection to a closed port fails, then fails fast within the backoff */
    char err[300];
    CHECK(!db_conn_ensure(a, err, sizeof err) && db_last_error_kind(a) == DB_ERR_CONNECTION,
          "connection refused is CONNECTION (%s)", err);
    t0 = time_mono_ns();
    CHECK(!db_conn_ensure(a, err, sizeof err) && strstr(err, "not retried for") &&
              db_last_error_kind(a) == DB_ERR_CONNECTION && (time_mono_ns() - t0) < 50000000ull,
          "within the backoff: the same error at once (%s)", err);
    db_pool_release(p, a);
    db_pool_release(p, c);
    db_pool_free(p);
}

int main(void)
{
    test_classification();
    test_redaction();
    test_gate();
    test_pool_timeout();
    return TEST_DONE();
}
