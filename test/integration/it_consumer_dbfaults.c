/*
 * it_consumer_dbfaults — database faults are the database's, never the message's. With the
 * database read-only (a failover onto a reader), the schema missing (a consumer started before
 * --migrate) or the INSERT grant revoked, every message is still broadcast live, moved to the spill
 * queue and deleted from its room queue (the room keeps flowing); nothing goes to the DLQ;
 * /health/ready says postgres DOWN while /health/live stays UP; chatflow_db_failures_total counts
 * the fault by class. Once the fault is fixed, every message is stored exactly once and the spill
 * queue is empty. Each scenario has its own database and queues on the shared test stack.
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
#include "wsclient.h"

#define K 20
#define ROLE "chatflow_it_writer"

static tl_consumer_env env;

static PGconn *admin(void) { return tl_pg_connect(env.admin_url); }

/* The stack's superuser (trust on loopback): creating a role needs it. */
static PGconn *superuser(const char *db)
{
    PGconn *c = tl_pg_connect(env.admin_url);
    char url[512];
    if (!c) return NULL;
    snprintf(url, sizeof url, "host=%s port=%s user=postgres dbname=%s", PQhost(c), PQport(c), db);
    PQfinish(c);
    return tl_pg_connect(url);
}

static bool admin_exec(const char *sql)
{
    PGconn *c = admin();
    bool ok = c && tl_pg_exec(c, sql);
    if (c) PQfinish(c);
    return ok;
}

/* Ends the consumer's sessions so that the next ones start with the database's new settings
 * (what a failover does to every client). */
static bool cut_sessions(void)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND pid "
             "<> pg_backend_pid()",
             env.db_name);
    return admin_exec(sql);
}

static bool fault_read_only(bool on)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             on ? "ALTER DATABASE %s SET default_transaction_read_only = on"
                : "ALTER DATABASE %s RESET default_transaction_read_only",
             env.db_name);
    return admin_exec(sql) && cut_sessions();
}

static bool fault_no_schema(bool on)
{
    if (on) return true; /* the consumer starts without migrations: the tables are missing */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "DATABASE_URL='%s' CHATFLOW_MIGRATIONS_DIR='%s/db/migrations' '%s/chatflow-consumer' "
             "--migrate >>'%s/migrate.log' 2>&1",
             env.db_url, tl_env("ROOT", "."), tl_env("CHATFLOW_BIN", "build"), env.log_dir);
    return tl_sh(cmd);
}

static bool fault_revoked(bool on)
{
    PGconn *c = tl_pg_connect(env.db_url);
    bool ok = c && tl_pg_exec(c, on ? "REVOKE INSERT ON messages FROM " ROLE
                                    : "GRANT INSERT ON messages TO " ROLE);
    if (c) PQfinish(c);
    return ok;
}

/* The writer role of the revoked-grant scenario: the tables migrated by the superuser, every
 * right a consumer needs granted to a role of its own. */
static bool prepare_role(char *url, size_t len)
{
    PGconn *c = superuser(env.db_name);
    bool ok =
        c && fault_no_schema(false) &&
        tl_pg_exec(c,
                   "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" ROLE "') "
                   "THEN CREATE ROLE " ROLE " LOGIN; END IF; END $$") &&
        tl_pg_exec(c, "GRANT USAGE ON SCHEMA public TO " ROLE) &&
        tl_pg_exec(c, "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO " ROLE) &&
        tl_pg_exec(c, "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO " ROLE);
    if (c) {
        snprintf(url, len, "host=%s port=%s user=" ROLE " dbname=%s", PQhost(c), PQport(c),
                 env.db_name);
        PQfinish(c);
    }
    return ok;
}

static long wait_http(int port, const char *path, long want, int timeout_ms, char **body_out)
{
    long st = 0;
    char *body = NULL;
    for (int t = 0; t <= timeout_ms; t += 100) {
        free(body);
        body = tl_http("GET", port, path, &st);
        if (st == want) break;
        time_sleep_ms(100);
    }
    if (body_out)
        *body_out = body;
    else
        free(body);
    return st;
}

/* Reads frames until every message id has been seen (or timeout); returns how many were seen. */
static size_t receive_all(wsc_conn *ws, chat_message *m, size_t n, int timeout_ms)
{
    bool seen[K] = {0};
    size_t got = 0;
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (got < n && time_mono_ns() < until) {
        size_t len;
        char *frame = wsc_recv(ws, 500, &len);
        for (size_t i = 0; frame && i < n; i++)
            if (!seen[i] && strstr(frame, m[i].message_id)) {
                seen[i] = true;
                got++;
            }
        free(frame);
    }
    return got;
}

typedef bool (*fault_fn)(bool on);

static void scenario(const char *name, fault_fn fault, const char *fault_class, bool migrate,
                     const char *db_url)
{
    if (!tl_consumer_env_init(&env, name, 2)) {
        CHECK(false, "%s: test environment set up", name);
        tl_consumer_env_done(&env);
        return;
    }
    char url[1024] = "";
    if (db_url && !prepare_role(url, sizeof url)) {
        CHECK(false, "%s: writer role prepared", name);
        tl_consumer_env_done(&env);
        return;
    }
    char url_env[1100], spill_env[64];
    snprintf(url_env, sizeof url_env, "DATABASE_URL=%s", url);
    snprintf(spill_env, sizeof spill_env, "CHATFLOW_DB_SPILL_AFTER_MS=1000");
    const char *cenv[] = {
        migrate ? "CHATFLOW_MIGRATE_ON_START=true" : "CHATFLOW_MIGRATE_ON_START=false",
        "CHATFLOW_DB_RETRY_MAX_BACKOFF_MS=500", spill_env, db_url ? url_env : NULL, NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer", cenv)) {
        CHECK(false, "%s: consumer started", name);
        tl_consumer_env_done(&env);
        return;
    }
    if (migrate)
        CHECK(wait_http(c.admin_port, "/health/ready", 200, 10000, NULL) == 200,
              "%s: ready before the fault", name);
    CHECK(fault(true), "%s: fault applied", name);

    wsc_ctx *ctx = wsc_ctx_new();
    int status = 0;
    char err[256];
    wsc_conn *ws =
        ctx ? wsc_connect(ctx, "127.0.0.1", c.ws_port, "/chat/1", 5000, &status, err, sizeof err)
            : NULL;
    CHECK(ws != NULL, "%s: a subscriber of room 1 connects", name);

    chat_message m[K];
    for (int i = 0; i < K; i++) {
        char text[64];
        snprintf(text, sizeof text, "%s %d", name, i);
        tl_chat_message(&m[i], 1, 1 + i % 3, text, "TEXT");
    }
    bool sent = true;
    for (int i = 0; i < K; i += SQS_MAX_BATCH)
        sent = sent && tl_consumer_send_batch(&env, 1, &m[i], SQS_MAX_BATCH);
    CHECK(sent, "%s: %d messages sent while the fault lasts", name, K);
    CHECK_INT(ws ? receive_all(ws, m, K, 20000) : 0, K, "%s: every message is broadcast live",
              name);

    long depth = -1;
    for (int i = 0; i < 200 && depth != 0; i++) {
        depth = tl_sqs_depth(&env.q, env.q.urls[1]);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "%s: the room queue flows on (its messages were moved out)", name);
    CHECK_INT(tl_sqs_depth(&env.q, env.spill_url), K, "%s: all %d wait in the spill queue", name,
              K);
    CHECK_INT(tl_sqs_depth(&env.q, env.dlq_url), 0, "%s: none went to the DLQ", name);
    CHECK_INT(tl_metric(c.admin_port, "chatflow_spill_messages_total", NULL), K,
              "%s: chatflow_spill_messages_total is %d", name, K);
    char label[64];
    snprintf(label, sizeof label, "class=\"%s\"", fault_class);
    CHECK(tl_metric(c.admin_port, "chatflow_db_failures_total", label) >= 1,
          "%s: chatflow_db_failures_total{%s} counts the fault", name, label);
    char *ready = NULL;
    long st = wait_http(c.admin_port, "/health/ready", 503, 5000, &ready);
    CHECK(st == 503 && ready && strstr(ready, "\"postgres\":{\"status\":\"DOWN\""),
          "%s: /health/ready is 503 with postgres DOWN (%s)", name, ready ? ready : "no answer");
    free(ready);
    CHECK_INT(wait_http(c.admin_port, "/health/live", 200, 0, NULL), 200,
              "%s: /health/live stays 200", name);

    CHECK(fault(false), "%s: fault fixed", name);
    PGconn *pg = tl_pg_connect(env.db_url);
    CHECK_INT(pg ? tl_pg_wait_scalar(pg, "SELECT count(*) FROM messages", K, 30000) : -1, K,
              "%s: all %d stored once the database takes writes again", name, K);
    CHECK_INT(pg ? tl_pg_scalar(pg, "SELECT count(DISTINCT message_id) FROM messages") : -1, K,
              "%s: each exactly once", name);
    if (pg) PQfinish(pg);
    long spill = -1;
    for (int i = 0; i < 100 && spill != 0; i++) {
        spill = tl_sqs_depth(&env.q, env.spill_url);
        if (spill != 0) time_sleep_ms(100);
    }
    CHECK_INT(spill, 0, "%s: the spill queue is drained", name);
    CHECK(tl_metric(c.admin_port, "chatflow_spill_drained_total", NULL) >= K,
          "%s: chatflow_spill_drained_total counts them", name);
    CHECK_INT(wait_http(c.admin_port, "/health/ready", 200, 10000, NULL), 200, "%s: ready again",
              name);
    if (ws) wsc_free(ws);
    if (ctx) wsc_ctx_free(ctx);
    bool in_time = false;
    int s = tl_consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(s) && WEXITSTATUS(s) == 0, "%s: SIGTERM: exit 0 in time", name);
    tl_consumer_env_done(&env);
}

int main(void)
{
    scenario("dbfault_read_only", fault_read_only, "read_only", true, NULL);
    scenario("dbfault_no_schema", fault_no_schema, "schema", false, NULL);
    scenario("dbfault_revoked", fault_revoked, "permission", false, "role");
    PGconn *su = superuser("postgres");
    if (su) {
        tl_pg_exec(su, "DROP ROLE IF EXISTS " ROLE);
        PQfinish(su);
    }
    return TEST_DONE();
}
