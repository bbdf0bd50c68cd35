/*
 * test_consumer — the consumer's pure parts, no servers: settings (defaults, environment, flags,
 * refusals), message -> row normalisation, the DLQ body, and the metrics API's time parameter.
 */
/* test-passes: asan */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"
#include "testlib.h"
#include "timeutil.h"
#include "../../consumer/api.h"
#include "../../consumer/batch_writer.h"
#include "../../consumer/dlq.h"
#include "../../consumer/settings.h"

static config_result load(consumer_settings *s, char **argv, int argc, char *err, size_t len)
{
    return consumer_settings_load(s, &argc, argv, err, len);
}

static void test_settings(void)
{
    consumer_settings s;
    char err[512];
    char *argv0[] = {"chatflow-consumer", NULL};
    unsetenv("CHATFLOW_POLLER_THREADS");
    CHECK(load(&s, argv0, 1, err, sizeof err) == CONFIG_OK, "defaults load (%s)", err);
    CHECK(s.ws_port == 8081 && s.admin_port == 9091 && s.poller_threads == 20 &&
              s.receive_wait_s == 20 && s.visibility_timeout_s == 30 && s.db_batch_size == 1000 &&
              s.db_max_wait_ms == 1000 && s.stop_timeout_s == 25 && !s.migrate_on_start &&
              strcmp(s.db_write_method, "copy") == 0,
          "defaults are the documented ones");

    setenv("CHATFLOW_POLLER_THREADS", "7", 1);
    char *argv1[] = {"chatflow-consumer", "--db-batch-size", "250", "--migrate-on-start", NULL};
    CHECK(load(&s, argv1, 4, err, sizeof err) == CONFIG_OK && s.poller_threads == 7 &&
              s.db_batch_size == 250 && s.migrate_on_start,
          "environment and flags apply");
    unsetenv("CHATFLOW_POLLER_THREADS");

    /* Identity tokens on: answers carry users' data, so any-origin CORS is refused. */
    char *argv_cors[] = {"chatflow-consumer",
                         "--auth",
                         "on",
                         "--auth-hs256-secret",
                         "0123456789abcdef0123456789abcdef",
                         NULL};
    CHECK(load(&s, argv_cors, 5, err, sizeof err) == CONFIG_ERROR &&
              strstr(err, "CHATFLOW_API_ALLOW_ORIGIN") && strstr(err, "CHATFLOW_AUTH"),
          "auth on with CHATFLOW_API_ALLOW_ORIGIN=* is refused (%s)", err);
    char *argv_cors_ok[] = {"chatflow-consumer",
                            "--auth",
                            "on",
                            "--auth-hs256-secret",
                            "0123456789abcdef0123456789abcdef",
                            "--api-allow-origin",
                            "https://chat.example",
                            NULL};
    CHECK(load(&s, argv_cors_ok, 7, err, sizeof err) == CONFIG_OK,
          "auth on with a listed origin loads (%s)", err);

    char *argv2[] = {"chatflow-consumer", "--db-batch-size", "0", NULL};
    CHECK(load(&s, argv2, 3, err, sizeof err) == CONFIG_ERROR &&
              strstr(err, "CHATFLOW_DB_BATCH_SIZE"),
          "batch size 0 refused naming the variable (%s)", err);
    char *argv3[] = {"chatflow-consumer", "--db-write-method", "insert", NULL};
    CHECK(load(&s, argv3, 3, err, sizeof err) == CONFIG_ERROR &&
              strstr(err, "CHATFLOW_DB_WRITE_METHOD"),
          "unknown write method refused (%s)", err);
    char *argv4[] = {"chatflow-consumer", "--ping-interval-s", "5", "--pong-timeout-s", "5", NULL};
    CHECK(load(&s, argv4, 5, err, sizeof err) == CONFIG_ERROR &&
              strstr(err, "CHATFLOW_PONG_TIMEOUT_S"),
          "pong timeout not below the ping interval refused (%s)", err);
    char *argv5[] = {"chatflow-consumer", "--shard-first", "5", "--shard-last", "4", NULL};
    CHECK(load(&s, argv5, 5, err, sizeof err) == CONFIG_ERROR &&
              strstr(err, "CHATFLOW_SHARD_FIRST"),
          "first shard after the last refused (%s)", err);
    char *argv6[] = {"chatflow-consumer", "--queue-shards", "4", "--shard-last", "5", NULL};
    CHECK(load(&s, argv6, 5, err, sizeof err) == CONFIG_ERROR,
          "a shard beyond the shards refused (%s)", err);
    char *argv7[] = {"chatflow-consumer", "--queue-shards", "8", NULL};
    CHECK(load(&s, argv7, 3, err, sizeof err) == CONFIG_OK && s.shard_first == 1 &&
              s.shard_last == 8,
          "by default a consumer polls every shard (%s)", err);
}

static chat_message valid_message(void)
{
    chat_message m;
    memset(&m, 0, sizeof m);
    strcpy(m.user_id, "42");
    strcpy(m.username, "user42");
    strcpy(m.message, "hello");
    strcpy(m.timestamp, "2026-11-23T12:00:00.5+02:00");
    strcpy(m.message_type, "TEXT");
    strcpy(m.message_id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    strcpy(m.room_id, "7");
    strcpy(m.server_id, "p1");
    strcpy(m.client_ip, "10.0.0.1");
    strcpy(m.received_at, "2026-11-23T10:00:01Z");
    return m;
}

/* The row keeps the room id byte for byte (the database checks the same rule, 0004_room_ids). */
static void test_row_rooms(void)
{
    write_row r;
    char err[256];
    chat_message m = valid_message();
    const char *kept[] = {
        "0", "07", "1000", "team-alpha", "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b", "Room_9"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        snprintf(m.room_id, sizeof m.room_id, "%s", kept[i]);
        CHECK(write_row_init(&r, &m, "1", err, sizeof err) && strcmp(r.room_id, kept[i]) == 0,
              "room \"%s\" becomes a row with that room id (%s)", kept[i], err);
    }
    memset(m.room_id, 'r', ROOM_ID_MAX);
    m.room_id[ROOM_ID_MAX] = '\0';
    CHECK(write_row_init(&r, &m, "1", err, sizeof err) && strlen(r.room_id) == ROOM_ID_MAX,
          "a %d-character room id is kept whole", ROOM_ID_MAX);
    const char *refused[] = {"", "a.b", "a b", "a/b", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        snprintf(m.room_id, sizeof m.room_id, "%s", refused[i]);
        err[0] = '\0';
        CHECK(!write_row_init(&r, &m, "1", err, sizeof err) && strstr(err, "roomId"),
              "room id #%zu (not [A-Za-z0-9_-]{1,64}) refused naming roomId (%s)", i, err);
    }
}

static void test_rows(void)
{
    write_row r;
    char err[256];
    chat_message m = valid_message();
    CHECK(write_row_init(&r, &m, "18446744073709551616123", err, sizeof err),
          "a valid message becomes a row");
    CHECK_STR(r.client_timestamp, "2026-11-23T10:00:00.500Z", "client timestamp normalised to UTC");
    CHECK_STR(r.received_at, "2026-11-23T10:00:01.000Z", "receivedAt normalised");
    CHECK(strcmp(r.room_id, "7") == 0 && r.user_id == 42 && r.status == WRITE_PENDING &&
              r.attempts == 0,
          "ids parsed (room \"7\" kept as text), row pending");
    CHECK_STR(r.sequence_number, "18446744073709551616123",
              "a sequence number beyond 64 bits is kept as text");
    CHECK(write_row_init(&r, &m, "", err, sizeof err) && r.sequence_number[0] == '\0',
          "no sequence number -> NULL");
    CHECK(!write_row_init(&r, &m, "12a", err, sizeof err) && strstr(err, "SequenceNumber"),
          "a non-decimal sequence number is refused");
    test_row_rooms();
    m = valid_message();
    strcpy(m.timestamp, "yesterday");
    CHECK(!write_row_init(&r, &m, "1", err, sizeof err) && strstr(err, "timestamp"),
          "a bad timestamp is refused (%s)", err);
}

static void test_dlq_body(void)
{
    char *b =
        dlq_body("{\"not\": \"stored\"}\n\ttab", "database rejected the row", 3, 1700000000123LL);
    json_t *j = b ? json_loads(b, 0, NULL) : NULL;
    CHECK(j != NULL, "DLQ body is JSON");
    CHECK_STR(json_string_value(json_object_get(j, "originalMessage")),
              "{\"not\": \"stored\"}\n\ttab", "originalMessage is the body, verbatim");
    CHECK_STR(json_string_value(json_object_get(j, "failureReason")), "database rejected the row",
              "failureReason");
    CHECK_STR(json_string_value(json_object_get(j, "failureTimestamp")), "2023-11-14T22:13:20.123Z",
              "failureTimestamp (ISO-8601)");
    CHECK_INT(json_integer_value(json_object_get(j, "attemptCount")), 3, "attemptCount");
    CHECK_INT(json_object_size(j), 4, "exactly the four fields of protocol.md §5");
    json_decref(j);
    free(b);
    b = dlq_body("\xff\xfe not utf-8", "poison", 1, 0);
    j = b ? json_loads(b, 0, NULL) : NULL;
    CHECK(j && json_is_string(json_object_get(j, "originalMessage")),
          "a non-UTF-8 original still yields a DLQ record");
    json_decref(j);
    free(b);
}

static void test_api_time(void)
{
    int64_t ms = 0;
    CHECK(api_parse_time("1767225600000", &ms) && ms == 1767225600000LL, "epoch milliseconds");
    CHECK(api_parse_time("2026-01-01T00:00:00Z", &ms) && ms == 1767225600000LL, "ISO-8601 UTC");
    CHECK(api_parse_time("2026-01-01T01:00:00+01:00", &ms) && ms == 1767225600000LL,
          "ISO-8601 with offset");
    CHECK(api_parse_time("2026-01-01T01:00:00 01:00", &ms) && ms == 1767225600000LL,
          "an offset whose '+' was decoded to a space");
    CHECK(!api_parse_time("", &ms) && !api_parse_time("2026-01-01", &ms) &&
              !api_parse_time("-5", &ms) && !api_parse_time("2026-01-01T00:00:00", &ms) &&
              !api_parse_time("12345678901234567890", &ms),
          "empty, date-only, negative, zone-less and overlong values refused");
}

int main(void)
{
    log_init("error", "text");
    test_settings();
    test_rows();
    test_dlq_body();
    test_api_time();
    return TEST_DONE();
}
