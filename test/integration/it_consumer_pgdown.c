/*
 * it_consumer_pgdown — PostgreSQL stopped for 10 s while messages flow, then started again:
 * /health/ready turns 503 naming postgres, nothing is deleted from SQS that was not committed,
 * visibility is extended meanwhile, writes resume by themselves, and in the end every message is
 * stored exactly once (none lost, none sent to the DLQ). Uses a private PostgreSQL (its own
 * stack directory, deploy/local/stack up --pg-only) so stopping it disturbs no other test.
 */
#include "it_consumer_lib.h"

#define ROOMS 4
#define BEFORE 1500
#define DURING 1500
#define N (BEFORE + DURING)

static itc_env_t env;
static chat_message sent[N];
static char stack_dir[700];

static bool stack(const char *cmd)
{
    char line[2048];
    snprintf(line, sizeof line, "CHATFLOW_STACK_DIR='%s' '%s/deploy/local/stack' %s >>'%s/stack.log' 2>&1", stack_dir,
             itc_env("ROOT", "."), cmd, env.log_dir);
    return itc_sh(line);
}

/* DATABASE_URL from the private stack's stack.env. */
static bool private_database_url(char *out, size_t len)
{
    char path[800];
    snprintf(path, sizeof path, "%s/stack.env", stack_dir);
    FILE *f = fopen(path, "r");
    char line[1024];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        if (strncmp(line, "DATABASE_URL=", 13) == 0) {
            line[strcspn(line, "\r\n")] = '\0';
            const char *v = line + 13;
            size_t vl = strlen(v);
            if (vl >= 2 && (v[0] == '"' || v[0] == '\'')) {
                v++;
                vl -= 2;
            }
            snprintf(out, len, "%.*s", (int)vl, v);
            found = true;
        }
    if (f) fclose(f);
    return found;
}

static bool send_range(size_t from, size_t to)
{
    for (size_t i = from; i < to; i += SQS_MAX_BATCH * ROOMS)
        for (int room = 1; room <= ROOMS; room++) {
            chat_message batch[SQS_MAX_BATCH];
            size_t k = 0;
            for (size_t j = i; j < to && j < i + SQS_MAX_BATCH * ROOMS; j++)
                if (atoi(sent[j].room_id) == room) batch[k++] = sent[j];
            if (k && !itc_send_batch(&env, room, batch, k)) return false;
        }
    return true;
}

/* With few attempts allowed, an outage sends the messages to the DLQ with the reason and the
 * attempt count, and deletes them: never retried forever, never dropped. */
static void test_attempts_exhausted(void)
{
    const char *cenv[] = {"CHATFLOW_DB_MAX_ATTEMPTS=3", "CHATFLOW_DB_RETRY_MAX_BACKOFF_MS=200",
                          "CHATFLOW_VISIBILITY_TIMEOUT_S=10", NULL};
    consumer_proc c;
    if (!consumer_start(&env, &c, "consumer-attempts", cenv)) {
        CHECK(false, "consumer with CHATFLOW_DB_MAX_ATTEMPTS=3 started");
        return;
    }
    long st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        free(itc_http("GET", c.admin_port, "/health/ready", &st));
        if (st != 200) time_sleep_ms(100);
    }
    PQfinish(env.pg);
    env.pg = NULL;
    CHECK(st == 200 && stack("stop-pg"), "ready, then PostgreSQL stopped again");
    chat_message m[5];
    for (int i = 0; i < 5; i++) itc_message(&m[i], 1, 100 + i, "nowhere to go", "TEXT");
    CHECK(itc_send_batch(&env, 1, m, 5), "5 messages sent while the database is down");
    long dlq = -1;
    for (int i = 0; i < 300 && dlq != 5; i++) {
        dlq = itc_queue_depth(&env, env.dlq_url);
        if (dlq != 5) time_sleep_ms(100);
    }
    CHECK_INT(dlq, 5, "after 3 failed attempts each, all 5 are in the DLQ");
    sqs_receive_options o = {.max_messages = 10, .wait_seconds = 1, .visibility_timeout = 60};
    size_t good = 0, seen = 0;
    for (int round = 0; round < 30 && seen < 5; round++) {
        sqs_message *ms = NULL;
        size_t k = 0;
        sqs_error err;
        if (sqs_receive_message(env.sqs, env.dlq_url, &o, &ms, &k, &err) != SQS_OK) break;
        for (size_t i = 0; i < k; i++, seen++) {
            json_t *b = json_loads(ms[i].body, 0, NULL);
            const char *reason = json_string_value(json_object_get(b, "failureReason"));
            if (reason && strstr(reason, "not stored after 3 attempts") &&
                json_integer_value(json_object_get(b, "attemptCount")) == 3 &&
                json_is_string(json_object_get(b, "originalMessage")))
                good++;
            else
                NOTE("DLQ body: %s", ms[i].body);
            json_decref(b);
            /* Delete as we read: a FIFO group hands out its next message only after that. */
            sqs_handle_entry he = {"d", ms[i].receipt_handle, 0};
            sqs_entry_result res;
            sqs_delete_message_batch(env.sqs, env.dlq_url, &he, 1, &res, &err);
        }
        sqs_messages_free(ms, k);
    }
    CHECK_INT(good, 5, "each DLQ entry says \"not stored after 3 attempts\" with attemptCount 3");
    long depth = -1;
    for (int i = 0; i < 100 && depth != 0; i++) {
        depth = itc_queue_depth(&env, env.urls[1]);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "and they were deleted from the room queue");
    CHECK_INT(itc_metric(c.admin_port, "chatflow_dlq_messages_total", "reason=\"db\""), 5,
              "chatflow_dlq_messages_total{reason=\"db\"} is 5");
    CHECK(stack("start-pg"), "PostgreSQL started");
    bool in_time = false;
    int status = consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGTERM: exits 0 in time");
}

/* SIGTERM while the database is down: the consumer gives up on the unwritten rows at its stop
 * deadline, exits 0 in time, and leaves those messages in SQS (not deleted, not in the DLQ). */
static void test_stop_while_down(void)
{
    const char *cenv[] = {"CHATFLOW_STOP_TIMEOUT_S=5", "CHATFLOW_VISIBILITY_TIMEOUT_S=10", NULL};
    consumer_proc c;
    if (!consumer_start(&env, &c, "consumer-stop-while-down", cenv)) {
        CHECK(false, "consumer with CHATFLOW_STOP_TIMEOUT_S=5 started");
        return;
    }
    long st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        free(itc_http("GET", c.admin_port, "/health/ready", &st));
        if (st != 200) time_sleep_ms(100);
    }
    long dlq_before = itc_queue_depth(&env, env.dlq_url);
    CHECK(st == 200 && stack("stop-pg"), "ready, then PostgreSQL stopped");
    chat_message m[3];
    for (int i = 0; i < 3; i++) itc_message(&m[i], 2 + i, 200 + i, "in flight at SIGTERM", "TEXT");
    bool all_sent = true;
    for (int i = 0; i < 3; i++) all_sent = all_sent && itc_send_batch(&env, 2 + i, &m[i], 1);
    CHECK(all_sent, "3 messages sent");
    double consumed = 0;
    for (int i = 0; i < 100 && consumed < 3; i++) {
        consumed = itc_metric(c.admin_port, "chatflow_messages_consumed_total", NULL);
        if (consumed < 3) time_sleep_ms(100);
    }
    CHECK(consumed >= 3, "the consumer holds them, waiting on the database");
    uint64_t t0 = time_mono_ns();
    bool in_time = false;
    int status = consumer_stop(&c, SIGTERM, 8000, &in_time);
    double took = (double)(time_mono_ns() - t0) / 1e9;
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0 && took < 5.5,
          "SIGTERM with the database down: exit 0 within the 5 s stop timeout (%.1f s)", took);
    long depth = 0;
    for (int r = 2; r <= 4; r++) depth += itc_queue_depth(&env, env.urls[r]);
    CHECK_INT(depth, 3, "the unwritten messages are still in SQS");
    /* Released (visibility 0), not left invisible for the visibility timeout. */
    sqs_receive_options o = {.max_messages = 10, .wait_seconds = 0, .visibility_timeout = 30};
    size_t visible = 0;
    for (int r = 2; r <= 4; r++) {
        sqs_message *ms = NULL;
        size_t k = 0;
        sqs_error err;
        if (sqs_receive_message(env.sqs, env.urls[r], &o, &ms, &k, &err) == SQS_OK) visible += k;
        sqs_messages_free(ms, k);
    }
    CHECK_INT(visible, 3, "they were released: receivable at once, not after the visibility timeout");
    CHECK_INT(itc_queue_depth(&env, env.dlq_url), dlq_before, "and none went to the DLQ");
    CHECK(stack("start-pg"), "PostgreSQL started");
}

static void cleanup(void)
{
    if (stack_dir[0]) {
        char line[1024];
        snprintf(line, sizeof line, "CHATFLOW_STACK_DIR='%s' '%s/deploy/local/stack' down --purge >/dev/null 2>&1",
                 stack_dir, itc_env("ROOT", "."));
        itc_sh(line);
    }
}

int main(void)
{
    snprintf(stack_dir, sizeof stack_dir, "%s/%s/test-stacks/consumer_pgdown", itc_env("ROOT", "."),
             itc_env("BUILD", "build"));
    snprintf(env.log_dir, sizeof env.log_dir, "%s/%s/test-logs/consumer_pgdown", itc_env("ROOT", "."),
             itc_env("BUILD", "build"));
    char mk[800];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", env.log_dir);
    itc_sh(mk);
    atexit(cleanup);
    char url[1024];
    if (!stack("up --pg-only") || !private_database_url(url, sizeof url)) {
        CHECK(false, "private PostgreSQL started (log %s/stack.log)", env.log_dir);
        return TEST_DONE();
    }
    setenv("DATABASE_URL", url, 1);
    if (!itc_init(&env, "consumer_pgdown", 1, ROOMS) || !(env.pg = itc_pg_connect(env.db_url))) {
        CHECK(false, "test environment (database, queues) set up");
        itc_done(&env);
        return TEST_DONE();
    }
    for (size_t i = 0; i < N; i++) {
        char text[64];
        snprintf(text, sizeof text, "outage test %zu", i);
        itc_message(&sent[i], 1 + (int)(i % ROOMS), 1 + (int)(i % 41), text, "TEXT");
    }
    /* Visibility 4 s: the 10 s outage outlasts it, so the pollers must extend it. */
    const char *cenv[] = {"CHATFLOW_VISIBILITY_TIMEOUT_S=4", "CHATFLOW_DB_RETRY_MAX_BACKOFF_MS=1000",
                          "CHATFLOW_DB_MAX_ATTEMPTS=100", "CHATFLOW_DB_STATEMENT_TIMEOUT_MS=3000", NULL};
    consumer_proc c;
    if (!consumer_start(&env, &c, "consumer", cenv)) {
        CHECK(false, "consumer started");
        itc_done(&env);
        return TEST_DONE();
    }
    CHECK(send_range(0, BEFORE), "%d messages sent", BEFORE);
    long long stored = 0;
    for (int i = 0; i < 500 && stored < 200; i++) {
        stored = itc_pg_scalar(env.pg, "SELECT count(*) FROM messages");
        time_sleep_ms(10);
    }
    PQfinish(env.pg);
    env.pg = NULL;
    CHECK(stack("stop-pg"), "PostgreSQL stopped with %lld of %d rows stored", stored, BEFORE);
    uint64_t stopped_at = time_mono_ns();
    CHECK(send_range(BEFORE, N), "%d more messages sent during the outage", DURING);

    /* During the outage: readiness names postgres; nothing unstored may leave the queues. */
    long st = 0;
    char *ready = NULL;
    for (int i = 0; i < 50; i++) {
        free(ready);
        ready = itc_http("GET", c.admin_port, "/health/ready", &st);
        if (st == 503) break;
        time_sleep_ms(100);
    }
    CHECK(st == 503 && ready && strstr(ready, "\"postgres\":{\"status\":\"DOWN\""),
          "/health/ready is 503 with postgres DOWN during the outage (%s)", ready ? ready : "no answer");
    free(ready);
    CHECK_INT(itc_metric(c.admin_port, "chatflow_db_up", NULL), 0, "chatflow_db_up is 0 during the outage");

    while (time_mono_ns() - stopped_at < 10000000000ull) time_sleep_ms(100);
    /* The queue depth gauge (refreshed every 2 s here) sees the backlog. */
    double gauge = itc_metric(c.admin_port, "chatflow_sqs_queue_depth", NULL);
    CHECK(gauge >= 1000, "chatflow_sqs_queue_depth{room} shows the backlog (%.0f messages over the rooms)", gauge);
    /* What the consumer committed before the outage (its own count: rows stored may grow between
     * the test's count and the moment PostgreSQL is down, more so on a slow sanitizer build). */
    double written = itc_metric(c.admin_port, "chatflow_db_rows_written_total", NULL);
    long queued = itc_rooms_depth(&env);
    CHECK(written >= (double)stored && queued >= (long)(N - written),
          "after 10 s down, the queues still hold every unstored message (%ld queued, %.0f stored before the "
          "outage)", queued, written);
    CHECK(stack("start-pg"), "PostgreSQL started again");
    env.pg = itc_pg_connect(env.db_url);
    CHECK(env.pg != NULL, "test reconnects to PostgreSQL");
    if (!env.pg) {
        itc_done(&env);
        return TEST_DONE();
    }
    CHECK_INT(itc_wait_scalar(env.pg, "SELECT count(*) FROM messages", N, 90000), N,
              "writes resumed by themselves: all %d messages stored", N);
    CHECK_INT(itc_pg_scalar(env.pg, "SELECT count(DISTINCT message_id) FROM messages"), N, "each exactly once");
    CHECK_INT(itc_pg_scalar(env.pg, "SELECT sum(message_count) FROM user_activity"), N,
              "user_activity counts each message once");
    size_t missing = 0;
    for (size_t i = 0; i < N; i++) {
        const char *p[] = {sent[i].message_id};
        PGresult *r = PQexecParams(env.pg, "SELECT 1 FROM messages WHERE message_id = $1::uuid", 1, NULL, p, NULL, NULL, 0);
        missing += PQntuples(r) != 1;
        PQclear(r);
    }
    CHECK_INT(missing, 0, "every sent messageId is stored");
    CHECK_INT(itc_queue_depth(&env, env.dlq_url), 0, "nothing went to the DLQ");
    CHECK(itc_metric(c.admin_port, "chatflow_db_flush_failures_total", NULL) >= 1, "flush failures were counted");

    ready = NULL;
    for (int i = 0; i < 100; i++) {
        free(ready);
        ready = itc_http("GET", c.admin_port, "/health/ready", &st);
        if (st == 200) break;
        time_sleep_ms(100);
    }
    CHECK(st == 200, "/health/ready is 200 again (%s)", ready ? ready : "no answer");
    free(ready);
    CHECK_INT(itc_metric(c.admin_port, "chatflow_db_up", NULL), 1, "chatflow_db_up is 1 again");

    FILE *f = fopen(c.log_path, "r");
    char line[2048];
    bool extended = false;
    while (f && fgets(line, sizeof line, f)) extended |= strstr(line, "extending visibility") != NULL;
    if (f) fclose(f);
    CHECK(extended, "visibility was extended while the database was down");

    long depth = -1;
    for (int i = 0; i < 100 && depth != 0; i++) {
        depth = itc_rooms_depth(&env);
        if (depth != 0) time_sleep_ms(100);
    }
    CHECK_INT(depth, 0, "the room queues are drained");
    bool in_time = false;
    int status = consumer_stop(&c, SIGTERM, 25000, &in_time);
    CHECK(in_time && WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGTERM: exits 0 in time");
    test_attempts_exhausted();
    test_stop_while_down();
    itc_done(&env);
    return TEST_DONE();
}
