/*
 * it_chat_features — the chat features of docs/protocol.md against the real chain (a producer and
 * a consumer on their own queues and database, real fauxqs and PostgreSQL):
 *  - members and anonymous subscribers: presence snapshot, ONLINE/OFFLINE events, the presence
 *    API (with CORS), the member cap (403), a second connection of a member, OFFLINE "timeout"
 *    for a member that stops answering pings;
 *  - the ack's delivery receipt and the live event's clientMessageId;
 *  - TYPING: not answered, throttled, members only, never stored; a bad one gets an error;
 *  - READ: announced to members, stored (never backwards), returned by the history API; refused
 *    from anonymous subscribers, beyond the newest message, or malformed;
 *  - history: pages backwards without gap or duplicate from the cache, then PostgreSQL ("mixed"),
 *    and after a restart from PostgreSQL alone; bad parameters; the index range scan.
 */
/* test-passes: asan tsan */
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
#include "tl_producer.h"
#include "tl_rawws.h"

#include "../../consumer/history.h"

#define ROOM_A 1    /* presence, typing, read */
#define ROOM_HIST 2 /* history paging */
#define ROOM_BEAT 3 /* missed heartbeat */
#define HIST_MESSAGES 45
#define HIST_CACHE 30
#define MEMBER_CAP 3

static tl_consumer_env env;
static tl_consumer cons;
static tl_producer prod;
static wsc_ctx *ws;

/* ---------------------------------------------------------------- helpers */

static wsc_conn *subscribe(int room, int user, const char *name, const char *extra, int *status)
{
    char path[256], err[256];
    if (user)
        snprintf(path, sizeof path, "/chat/%d?userId=%d&username=%s%s", room, user, name,
                 extra ? extra : "");
    else
        snprintf(path, sizeof path, "/chat/%d%s", room, extra ? extra : "");
    int st = 0;
    wsc_conn *c = wsc_connect(ws, "127.0.0.1", cons.ws_port, path, 5000, &st, err, sizeof err);
    if (status) *status = st;
    if (!c && !status) NOTE("subscribe %s: %s (HTTP %d)", path, err, st);
    return c;
}

/* The next frame as JSON (NULL on timeout or close). */
static json_t *next_frame(wsc_conn *c, int timeout_ms)
{
    char *text = wsc_recv(c, timeout_ms, NULL);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return j;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Reads frames until one of `type` (others are appended to skipped, when given). */
static json_t *wait_type(wsc_conn *c, const char *type, int timeout_ms, json_t *skipped)
{
    uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (time_mono_ns() < end) {
        json_t *j = next_frame(c, 100);
        if (!j) continue;
        if (strcmp(str(j, "type"), type) == 0) return j;
        if (skipped) json_array_append(skipped, j);
        json_decref(j);
    }
    return NULL;
}

/* Frames until the MESSAGE with messageId; counts the frames of `type` seen before it. */
static int count_before_message(wsc_conn *c, const char *message_id, const char *type, bool *found)
{
    int n = 0;
    *found = false;
    uint64_t end = time_mono_ns() + 10000000000ull;
    while (time_mono_ns() < end) {
        json_t *j = next_frame(c, 100);
        if (!j) continue;
        bool done =
            strcmp(str(j, "type"), "MESSAGE") == 0 && strcmp(str(j, "messageId"), message_id) == 0;
        if (strcmp(str(j, "type"), type) == 0) n++;
        json_decref(j);
        if (done) {
            *found = true;
            break;
        }
    }
    return n;
}

static bool send_json(wsc_conn *c, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    bool ok = s && wsc_send_text(c, s, strlen(s));
    free(s);
    return ok;
}

/* Sends a chat message on the producer connection and returns its ack (NULL when none). */
static json_t *say(wsc_conn *p, int user, const char *text, const char *cmid)
{
    char *frame = tl_frame(user, text, cmid);
    bool sent = wsc_send_text(p, frame, strlen(frame));
    free(frame);
    return sent ? next_frame(p, 10000) : NULL;
}

static bool send_typing(wsc_conn *p, int user, const char *name)
{
    char uid[12];
    snprintf(uid, sizeof uid, "%d", user);
    return send_json(
        p, json_pack("{s:s, s:s, s:s}", "type", "TYPING", "userId", uid, "username", name));
}

static bool send_read(wsc_conn *c, int room, const char *seq)
{
    char r[12];
    snprintf(r, sizeof r, "%d", room);
    return send_json(
        c, json_pack("{s:s, s:s, s:s}", "type", "READ", "roomId", r, "sequenceNumber", seq));
}

/* GET on the consumer's admin port: JSON body, status, and the CORS header. */
static json_t *api_get(const char *path, long *status, char *allow_origin, size_t ao_len)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", cons.admin_port, path);
    CURL *cu = curl_easy_init();
    tl_buf body = {0}, headers = {0};
    curl_easy_setopt(cu, CURLOPT_URL, url);
    curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, tl_buf_write);
    curl_easy_setopt(cu, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(cu, CURLOPT_HEADERFUNCTION, tl_buf_write);
    curl_easy_setopt(cu, CURLOPT_HEADERDATA, &headers);
    curl_easy_setopt(cu, CURLOPT_TIMEOUT_MS, 20000L);
    *status = 0;
    if (curl_easy_perform(cu) == CURLE_OK) curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(cu);
    if (allow_origin) {
        allow_origin[0] = '\0';
        const char *h =
            headers.data ? strcasestr(headers.data, "\nAccess-Control-Allow-Origin: ") : NULL;
        if (h) snprintf(allow_origin, ao_len, "%.*s", (int)strcspn(h + 30, "\r\n"), h + 30);
    }
    free(headers.data);
    json_t *j = body.data ? json_loads(body.data, 0, NULL) : NULL;
    if (!j) NOTE("%s -> %ld: %.200s", path, *status, body.data ? body.data : "(no body)");
    free(body.data);
    return j;
}

static bool start_consumer(const char *log, const char *ping, const char *pong)
{
    static char ping_env[64], pong_env[64];
    snprintf(ping_env, sizeof ping_env, "CHATFLOW_PING_INTERVAL_S=%s", ping);
    snprintf(pong_env, sizeof pong_env, "CHATFLOW_PONG_TIMEOUT_S=%s", pong);
    const char *extra[] = {"CHATFLOW_ROOM_MEMBER_CAP=3", "CHATFLOW_HISTORY_CACHE_PER_ROOM=30",
                           ping_env, pong_env, NULL};
    if (!tl_consumer_start(&env, &cons, log, extra)) return false;
    for (int i = 0; i < 200; i++) { /* ready: queues resolved, database up */
        long st;
        char *body = tl_http("GET", cons.admin_port, "/health/ready", &st);
        free(body);
        if (st == 200) return true;
        time_sleep_ms(100);
    }
    return false;
}

/* ---------------------------------------------------------------- tests */

static char seq_m1[64], seq_m2[64], id_m2[64];

static void test_presence_and_messages(wsc_conn *p, wsc_conn *anon, wsc_conn **alice_out,
                                       wsc_conn **bob_out)
{
    wsc_conn *alice = subscribe(ROOM_A, 11, "alice", NULL, NULL);
    CHECK(alice != NULL, "member alice subscribes to room %d", ROOM_A);
    json_t *j = alice ? wait_type(alice, "PRESENCE", 5000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "userId"), "11") == 0 && strcmp(str(j, "status"), "ONLINE") == 0 &&
              strcmp(str(j, "reason"), "joined") == 0 &&
              json_integer_value(json_object_get(j, "online")) == 1,
          "alice is told of her own arrival: ONLINE joined, 1 online");
    json_decref(j);

    wsc_conn *bob = subscribe(ROOM_A, 12, "bob", NULL, NULL);
    CHECK(bob != NULL, "member bob subscribes");
    j = bob ? wait_type(bob, "PRESENCE", 5000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "userId"), "11") == 0 && strcmp(str(j, "reason"), "present") == 0 &&
              strcmp(str(j, "username"), "alice") == 0,
          "bob's first frame is the snapshot: alice present");
    json_decref(j);
    j = bob ? wait_type(bob, "PRESENCE", 5000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "userId"), "12") == 0 && strcmp(str(j, "reason"), "joined") == 0,
          "then bob's own ONLINE joined");
    json_decref(j);
    j = alice ? wait_type(alice, "PRESENCE", 5000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "userId"), "12") == 0 && strcmp(str(j, "status"), "ONLINE") == 0 &&
              json_integer_value(json_object_get(j, "online")) == 2,
          "alice sees bob come online (2 online)");
    json_decref(j);

    long st;
    char origin[64];
    j = api_get("/api/rooms/1/presence", &st, origin, sizeof origin);
    CHECK_INT(st, 200, "GET /api/rooms/1/presence answers 200");
    CHECK_STR(origin, "*", "the room API carries Access-Control-Allow-Origin: *");
    json_t *online = json_object_get(j, "online");
    CHECK(json_array_size(online) == 2 &&
              strcmp(str(json_array_get(online, 0), "userId"), "11") == 0 &&
              strcmp(str(json_array_get(online, 1), "username"), "bob") == 0 &&
              json_integer_value(json_object_get(j, "memberCap")) == MEMBER_CAP &&
              json_is_string(json_object_get(json_array_get(online, 0), "lastSeen")),
          "presence lists alice and bob with their last-seen time, and the member cap");
    CHECK(json_is_array(json_object_get(j, "recentlySeen")), "presence has a recentlySeen list");
    json_decref(j);

    /* a message: the ack says "sent"; members and the anonymous subscriber get it */
    j = say(p, 11, "hello room", "cm-hello");
    CHECK(j && strcmp(str(j, "status"), "SUCCESS") == 0 && strcmp(str(j, "delivery"), "sent") == 0,
          "the ack carries delivery: sent");
    snprintf(seq_m1, sizeof seq_m1, "%s", str(j, "sequenceNumber"));
    char id_m1[64];
    snprintf(id_m1, sizeof id_m1, "%s", str(j, "messageId"));
    json_decref(j);
    j = bob ? wait_type(bob, "MESSAGE", 10000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "messageId"), id_m1) == 0 &&
              strcmp(str(j, "clientMessageId"), "cm-hello") == 0,
          "the live MESSAGE event carries the sender's clientMessageId");
    json_decref(j);
    json_t *skipped = json_array();
    j = wait_type(anon, "MESSAGE", 10000, skipped);
    CHECK(j && strcmp(str(j, "messageId"), id_m1) == 0,
          "the anonymous subscriber gets the MESSAGE");
    CHECK_INT(json_array_size(skipped), 0,
              "and nothing else before it: no PRESENCE for old clients");
    json_decref(j);
    json_decref(skipped);
    *alice_out = alice;
    *bob_out = bob;
}

static void test_typing(wsc_conn *p, wsc_conn *anon, wsc_conn *alice, wsc_conn *bob)
{
    double published0 =
        tl_producer_metric(&prod, "chatflow_typing_frames_total", "result=\"published\"");
    CHECK(send_typing(p, 11, "alice"), "TYPING sent");
    json_t *j = next_frame(p, 1500);
    CHECK(j == NULL, "a TYPING frame gets no answer");
    json_decref(j);
    CHECK(send_typing(p, 11, "alice"),
          "a second TYPING right after it (inside the typing interval)");
    j = say(p, 11, "after typing", NULL);
    CHECK(j && strcmp(str(j, "status"), "SUCCESS") == 0, "the next message is acked as usual");
    snprintf(id_m2, sizeof id_m2, "%s", str(j, "messageId"));
    snprintf(seq_m2, sizeof seq_m2, "%s", str(j, "sequenceNumber"));
    json_decref(j);
    bool found;
    int typing = count_before_message(bob, id_m2, "TYPING", &found);
    CHECK(found && typing == 1,
          "bob saw exactly one TYPING before the message (the second was throttled; got %d)",
          typing);
    typing = count_before_message(anon, id_m2, "TYPING", &found);
    CHECK(found && typing == 0, "the anonymous subscriber saw no TYPING");
    typing = count_before_message(alice, id_m2, "TYPING", &found);
    CHECK(found && typing == 1, "alice (a member) saw it too");
    CHECK(tl_producer_metric(&prod, "chatflow_typing_frames_total", "result=\"throttled\"") >= 1,
          "the throttled TYPING is counted");
    CHECK_INT(tl_producer_metric(&prod, "chatflow_typing_frames_total", "result=\"published\"") -
                  published0,
              1, "one TYPING was published");

    CHECK(send_json(
              p, json_pack("{s:s, s:s, s:s}", "type", "TYPING", "userId", "11", "username", "a")),
          "a TYPING with a bad username");
    j = next_frame(p, 5000);
    CHECK(j && strcmp(str(j, "errorCode"), "VALIDATION_ERROR") == 0 &&
              strncmp(str(j, "errorMessage"), "username", 8) == 0,
          "is answered VALIDATION_ERROR naming username");
    json_decref(j);
    CHECK(send_json(
              p, json_pack("{s:s, s:s, s:s}", "type", "WAVE", "userId", "11", "username", "alice")),
          "an unknown frame type");
    j = next_frame(p, 5000);
    CHECK(j && strcmp(str(j, "errorCode"), "VALIDATION_ERROR") == 0 &&
              strncmp(str(j, "errorMessage"), "type", 4) == 0,
          "is answered VALIDATION_ERROR naming type");
    json_decref(j);
    CHECK_INT(
        tl_pg_wait_scalar(env.pg, "select count(*) from messages where room_id = '1'", 2, 10000), 2,
        "the database holds the two messages and no typing indicator");
}

static void test_read_receipts(wsc_conn *p, wsc_conn *anon, wsc_conn *alice, wsc_conn *bob)
{
    CHECK(send_read(bob, ROOM_A, seq_m2), "bob sends READ up to the second message");
    json_t *j = wait_type(alice, "READ", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "12") == 0 &&
              strcmp(str(j, "sequenceNumber"), seq_m2) == 0 &&
              strcmp(str(j, "username"), "bob") == 0,
          "alice gets bob's READ event with the sequence number");
    json_decref(j);
    char sql[256];
    snprintf(sql, sizeof sql,
             "select count(*) from read_positions where room_id = '1' and user_id = 12 and "
             "sequence_number = %s",
             seq_m2);
    CHECK_INT(tl_pg_wait_scalar(env.pg, sql, 1, 10000), 1, "bob's read position is stored");

    CHECK(send_read(bob, ROOM_A, seq_m1), "bob sends READ for an older message");
    CHECK(send_read(anon, ROOM_A, seq_m2), "the anonymous subscriber sends READ");
    j = wait_type(anon, "ERROR", 5000, NULL);
    CHECK(j && strcmp(str(j, "errorCode"), "VALIDATION_ERROR") == 0 &&
              strstr(str(j, "errorMessage"), "userId"),
          "anonymous READ is answered with an ERROR event saying how to become a member");
    json_decref(j);
    char beyond[80];
    snprintf(beyond, sizeof beyond, "9%s", seq_m2);
    CHECK(send_read(bob, ROOM_A, beyond), "bob sends READ beyond the newest message");
    j = wait_type(bob, "ERROR", 5000, NULL);
    CHECK(j && strncmp(str(j, "errorMessage"), "sequenceNumber", 14) == 0,
          "refused: ERROR naming sequenceNumber");
    json_decref(j);
    CHECK(wsc_send_text(bob, "{\"type\":\"READ\",\"roomId\":\"2\",\"sequenceNumber\":\"1\"}", 49),
          "bob sends READ for another room");
    j = wait_type(bob, "ERROR", 5000, NULL);
    CHECK(j && strncmp(str(j, "errorMessage"), "roomId", 6) == 0, "refused: ERROR naming roomId");
    json_decref(j);
    CHECK(wsc_send_text(bob, "not json", 8), "bob sends text that is not JSON");
    j = wait_type(bob, "ERROR", 5000, NULL);
    CHECK(j && strcmp(str(j, "errorCode"), "INVALID_JSON") == 0,
          "refused: INVALID_JSON, connection open");
    json_decref(j);

    json_t *m3 = say(p, 12, "third", NULL);
    char id_m3[64];
    snprintf(id_m3, sizeof id_m3, "%s", str(m3, "messageId"));
    json_decref(m3);
    bool found;
    int reads = count_before_message(alice, id_m3, "READ", &found);
    CHECK(found && reads == 0, "an older READ moves nothing: alice saw no READ event for it");
    snprintf(
        sql, sizeof sql,
        "select sequence_number::text from read_positions where room_id = '1' and user_id = 12");
    PGresult *r = PQexec(env.pg, sql);
    CHECK(PQntuples(r) == 1 && strtod(PQgetvalue(r, 0, 0), NULL) == strtod(seq_m2, NULL),
          "the stored position did not move backwards");
    PQclear(r);

    long st;
    j = api_get("/api/rooms/1/messages?userId=12", &st, NULL, 0);
    CHECK_INT(st, 200, "history of room 1 with userId answers 200");
    json_t *mine = json_object_get(j, "readPosition");
    CHECK(json_is_object(mine) && strtod(str(mine, "sequenceNumber"), NULL) == strtod(seq_m2, NULL),
          "the history API returns bob's read position");
    CHECK(json_array_size(json_object_get(j, "readPositions")) == 1,
          "and the room's read positions");
    json_decref(j);
}

static void test_member_limits(wsc_conn *p, wsc_conn *alice, wsc_conn *bob)
{
    wsc_conn *carol = subscribe(ROOM_A, 13, "carol", NULL, NULL);
    CHECK(carol != NULL, "a third member joins (the cap is %d)", MEMBER_CAP);
    json_t *j = wait_type(alice, "PRESENCE", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "13") == 0 && strcmp(str(j, "status"), "ONLINE") == 0,
          "alice sees carol come online");
    json_decref(j);
    j = wait_type(bob, "PRESENCE", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "13") == 0 &&
              json_integer_value(json_object_get(j, "online")) == 3,
          "so does bob (3 online)");
    json_decref(j);
    int st = 0;
    wsc_conn *dave = subscribe(ROOM_A, 14, "dave", NULL, &st);
    CHECK(dave == NULL && st == 403, "a fourth user is refused at the handshake with 403 (got %d)",
          st);
    wsc_free(dave);
    wsc_conn *alice2 = subscribe(ROOM_A, 11, "alice", NULL, NULL);
    CHECK(alice2 != NULL, "a member already online may open a second connection in a full room");
    j = alice2 ? wait_type(alice2, "PRESENCE", 5000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "reason"), "present") == 0, "the second connection gets the snapshot");
    json_decref(j);
    j = alice2 ? wait_type(alice2, "READ", 5000, NULL) : NULL;
    CHECK(j && strcmp(str(j, "userId"), "12") == 0 && strcmp(str(j, "sequenceNumber"), seq_m2) == 0,
          "and bob's read position, sent before it connected (READ events are not replayed)");
    json_decref(j);
    CHECK(tl_metric(cons.admin_port, "chatflow_room_full_refusals_total", NULL) >= 1,
          "the refusal is counted");

    /* alice's second connection closes: she is still online, nobody is told */
    wsc_free(alice2);
    wsc_free(carol);
    j = wait_type(bob, "PRESENCE", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "13") == 0 && strcmp(str(j, "status"), "OFFLINE") == 0 &&
              strcmp(str(j, "reason"), "left") == 0,
          "carol closing is announced OFFLINE left (and alice's second connection is not)");
    json_decref(j);
    json_t *m = say(p, 12, "marker", NULL);
    char id[64];
    snprintf(id, sizeof id, "%s", str(m, "messageId"));
    json_decref(m);
    bool found;
    int presence_events = count_before_message(bob, id, "PRESENCE", &found);
    CHECK(found && presence_events == 0, "no other PRESENCE before the next message");
    j = wait_type(alice, "PRESENCE", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "13") == 0 && strcmp(str(j, "status"), "OFFLINE") == 0,
          "alice too sees carol go offline");
    json_decref(j);

    wsc_free(bob);
    j = wait_type(alice, "PRESENCE", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "12") == 0 && strcmp(str(j, "status"), "OFFLINE") == 0 &&
              json_integer_value(json_object_get(j, "online")) == 1,
          "bob leaving is announced OFFLINE to alice (1 online)");
    json_decref(j);
    long hst;
    j = api_get("/api/rooms/1/presence", &hst, NULL, 0);
    json_t *seen = json_object_get(j, "recentlySeen");
    bool bob_seen = false;
    for (size_t i = 0; i < json_array_size(seen); i++)
        bob_seen |= strcmp(str(json_array_get(seen, i), "userId"), "12") == 0;
    CHECK(json_integer_value(json_object_get(j, "onlineCount")) == 1 && bob_seen,
          "presence: alice online, bob among the recently seen (his last activity)");
    json_decref(j);
}

/* Every page of room ROOM_HIST, walked backwards; true when it is all HIST_MESSAGES in order. */
static bool walk_history(char ids[][64], const char *label, const char **first_source)
{
    char before[80] = "";
    char got[HIST_MESSAGES + 5][64];
    size_t n = 0;
    bool has_more = true, ok = true;
    for (int page = 0; has_more && page < 10; page++) {
        char path[256];
        snprintf(path, sizeof path, "/api/rooms/%d/messages?limit=20%s%s", ROOM_HIST,
                 before[0] ? "&before=" : "", before);
        long st;
        json_t *j = api_get(path, &st, NULL, 0);
        if (!j || st != 200) {
            json_decref(j);
            return false;
        }
        json_t *msgs = json_object_get(j, "messages");
        NOTE("%s page %d: %zu messages, source %s, hasMore %s", label, page, json_array_size(msgs),
             str(j, "source"), json_is_true(json_object_get(j, "hasMore")) ? "true" : "false");
        if (page == 0 && first_source) {
            static char src[16];
            snprintf(src, sizeof src, "%s", str(j, "source"));
            *first_source = src;
        }
        /* this page is oldest first; pages come newest first: prepend */
        size_t k = json_array_size(msgs);
        if (n + k > HIST_MESSAGES + 5) ok = false;
        for (size_t i = 0; ok && i < n; i++) memmove(got[n + k - 1 - i], got[n - 1 - i], 64);
        for (size_t i = 0; ok && i < k; i++)
            snprintf(got[i], 64, "%s", str(json_array_get(msgs, i), "messageId"));
        n += ok ? k : 0;
        has_more = json_is_true(json_object_get(j, "hasMore"));
        snprintf(before, sizeof before, "%s", str(j, "nextBefore"));
        json_decref(j);
    }
    if (!ok || n != HIST_MESSAGES) {
        NOTE("%s: %zu messages over all pages", label, n);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(got[i], ids[i]) != 0) return false;
    return true;
}

static void test_history(void)
{
    char err[256];
    int st = 0;
    char path[64];
    snprintf(path, sizeof path, "/chat/%d", ROOM_HIST);
    wsc_conn *p = wsc_connect(ws, "127.0.0.1", prod.ws_port, path, 5000, &st, err, sizeof err);
    CHECK(p != NULL, "producer connection for room %d", ROOM_HIST);
    if (!p) return;
    static char ids[HIST_MESSAGES][64];
    int acked = 0;
    for (int i = 0; i < HIST_MESSAGES; i++) {
        char text[32];
        snprintf(text, sizeof text, "history %d", i);
        json_t *a = say(p, 20 + i % 3, text, NULL);
        if (a && strcmp(str(a, "status"), "SUCCESS") == 0) acked++;
        snprintf(ids[i], sizeof ids[i], "%s", a ? str(a, "messageId") : "");
        json_decref(a);
    }
    wsc_free(p);
    CHECK_INT(acked, HIST_MESSAGES, "%d messages acked in room %d", HIST_MESSAGES, ROOM_HIST);
    char sql[128];
    snprintf(sql, sizeof sql, "select count(*) from messages where room_id = '%d'", ROOM_HIST);
    CHECK_INT(tl_pg_wait_scalar(env.pg, sql, HIST_MESSAGES, 20000), HIST_MESSAGES,
              "all of them stored");

    long hst;
    json_t *j = api_get("/api/rooms/2/messages", &hst, NULL, 0);
    json_t *msgs = json_object_get(j, "messages");
    CHECK(hst == 200 && json_array_size(msgs) == 20 &&
              strcmp(str(json_array_get(msgs, 19), "messageId"), ids[HIST_MESSAGES - 1]) == 0 &&
              strcmp(str(json_array_get(msgs, 0), "messageId"), ids[HIST_MESSAGES - 20]) == 0,
          "the default page is the newest 20, oldest first");
    CHECK_STR(str(j, "source"), "cache", "the newest page comes from the in-memory cache");
    CHECK(json_is_true(json_object_get(j, "hasMore")), "hasMore: older messages exist");
    CHECK_STR(str(json_array_get(msgs, 0), "type"), "MESSAGE", "entries are BroadcastEvents");
    json_decref(j);

    CHECK(walk_history(ids, "with cache", NULL),
          "paging backwards gives all %d messages, in order, once each", HIST_MESSAGES);
    char p2[128];
    j = api_get("/api/rooms/2/messages?limit=20", &hst, NULL, 0);
    snprintf(p2, sizeof p2, "/api/rooms/2/messages?limit=20&before=%s", str(j, "nextBefore"));
    json_decref(j);
    j = api_get(p2, &hst, NULL, 0);
    CHECK_STR(str(j, "source"), "mixed",
              "the second page (past the %d cached) is cache plus PostgreSQL", HIST_CACHE);
    json_decref(j);

    static const struct {
        const char *query;
        long status;
        const char *field;
    } bad[] = {
        {"/api/rooms/2/messages?limit=101", 400, "limit"},
        {"/api/rooms/2/messages?limit=0", 400, "limit"},
        {"/api/rooms/2/messages?before=abc", 400, "before"},
        {"/api/rooms/2/messages?userId=0", 400, "userId"},
        {"/api/rooms/2/presence?recent=101", 400, "recent"},
        {"/api/rooms/a.b/messages", 400, "roomId"}, /* not a room id (room.h) */
        {"/api/rooms/a.b/presence", 400, "roomId"},
        {"/api/rooms/2/nothing", 404, "no such path"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char origin[16];
        j = api_get(bad[i].query, &hst, origin, sizeof origin);
        CHECK(hst == bad[i].status && strstr(str(j, "error"), bad[i].field) &&
                  strcmp(origin, "*") == 0,
              "%s -> %ld with an error naming %s (and the CORS header)", bad[i].query,
              bad[i].status, bad[i].field);
        json_decref(j);
    }

    /* Every consumer serves every room: one nobody wrote to is an empty page, not a 404. */
    j = api_get("/api/rooms/9/messages", &hst, NULL, 0);
    CHECK(hst == 200 && strcmp(str(j, "roomId"), "9") == 0 &&
              json_array_size(json_object_get(j, "messages")) == 0 &&
              json_is_false(json_object_get(j, "hasMore")),
          "/api/rooms/9/messages (an empty room) -> 200, roomId \"9\", no messages");
    json_decref(j);

    /* the history query is an index range scan */
    char explain[2048];
    snprintf(explain, sizeof explain, "EXPLAIN %s", history_query_sql("history_before"));
    tl_pg_exec(env.pg, "SET enable_seqscan = off");
    PGresult *r = PQprepare(env.pg, "explain_before", explain, 3, NULL);
    PQclear(r);
    const char *params[] = {"2", "99999999999999999999", "21"};
    r = PQexecPrepared(env.pg, "explain_before", 3, params, NULL, NULL, 0);
    bool index_scan = false, seq_scan = false;
    for (int i = 0; i < PQntuples(r); i++) {
        index_scan |= strstr(PQgetvalue(r, i, 0), "messages_room_seq_idx") != NULL;
        seq_scan |= strstr(PQgetvalue(r, i, 0), "Seq Scan on messages") != NULL;
    }
    PQclear(r);
    tl_pg_exec(env.pg, "RESET enable_seqscan");
    CHECK(index_scan && !seq_scan,
          "history_before is a scan of messages_room_seq_idx, not of the table");
}

static void test_history_after_restart(void)
{
    /* ids in order from the database (a new consumer starts with an empty cache) */
    static char ids[HIST_MESSAGES][64];
    PGresult *r = PQexec(
        env.pg,
        "select message_id::text from messages where room_id = '2' order by sequence_number");
    for (int i = 0; i < PQntuples(r) && i < HIST_MESSAGES; i++)
        snprintf(ids[i], 64, "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    const char *source = NULL;
    CHECK(walk_history(ids, "after restart", &source),
          "after a restart, the same %d messages in order", HIST_MESSAGES);
    CHECK_STR(source, "database", "served from PostgreSQL (the cache starts empty)");
}

/* The chat page and its /config.json on the producer's WebSocket port. */
static void test_page(void)
{
    long st;
    char *body = tl_http_get(prod.ws_port, "/", &st);
    CHECK(st == 200 && body && strstr(body, "<html") && strstr(body, "app.js"),
          "GET / on the producer serves the page");
    free(body);
    body = tl_http_get(prod.ws_port, "/app.js", &st);
    CHECK(st == 200 && body && strlen(body) > 100, "GET /app.js serves its script");
    free(body);
    body = tl_http_get(prod.ws_port, "/config.json", &st);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    json_t *limits = json_object_get(j, "limits");
    /* no room range any more: every room id is served (room.h) */
    CHECK(st == 200 && json_integer_value(json_object_get(limits, "typingIntervalMs")) == 3000 &&
              json_integer_value(json_object_get(limits, "maxMessageChars")) == 500 &&
              json_is_string(json_object_get(j, "eventsUrl")),
          "GET /config.json tells the page the limits and where the consumer is");
    json_decref(j);
    free(body);
    body = tl_http_get(prod.ws_port, "/../../etc/passwd", &st);
    CHECK(st == 404, "any other path is 404 (got %ld)", st);
    free(body);
}

/* A member that stops answering pings is dropped and announced OFFLINE "timeout". */
static void test_missed_heartbeat(void)
{
    wsc_conn *watcher = subscribe(ROOM_BEAT, 31, "watcher", NULL, NULL);
    CHECK(watcher != NULL, "a watcher member in room %d", ROOM_BEAT);
    if (!watcher) return;
    json_t *j = wait_type(watcher, "PRESENCE", 5000, NULL);
    json_decref(j);
    char path[128];
    snprintf(path, sizeof path, "/chat/%d?userId=32&username=silent", ROOM_BEAT);
    int fd = tl_raw_ws_open(cons.ws_port, path, 0);
    CHECK(fd >= 0, "a raw member connection that will never answer a ping");
    j = wait_type(watcher, "PRESENCE", 5000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "32") == 0 && strcmp(str(j, "status"), "ONLINE") == 0,
          "the silent member comes online");
    json_decref(j);
    j = wait_type(watcher, "PRESENCE", 15000, NULL);
    CHECK(j && strcmp(str(j, "userId"), "32") == 0 && strcmp(str(j, "status"), "OFFLINE") == 0 &&
              strcmp(str(j, "reason"), "timeout") == 0,
          "it is dropped for the missed heartbeat and announced OFFLINE timeout (%s)",
          j ? str(j, "reason") : "none");
    json_decref(j);
    if (fd >= 0) close(fd);
    wsc_free(watcher);
}

int main(void)
{
    tl_init();
    if (!tl_consumer_env_init(&env, "chat_features", 3)) {
        CHECK(false, "test environment (database, queues)");
        return TEST_DONE();
    }
    ws = wsc_ctx_new();
    CHECK(start_consumer("consumer", "25", "8"), "consumer started on rooms 1-3");
    env.pg = tl_pg_connect(env.db_url);
    CHECK(env.pg != NULL, "connected to the test's database");
    static char prefix_env[128], dlq_env[160], plog[700];
    snprintf(prefix_env, sizeof prefix_env, "CHATFLOW_QUEUE_PREFIX=%s", env.q.prefix);
    snprintf(dlq_env, sizeof dlq_env, "CHATFLOW_DLQ_NAME=%s", env.dlq_name);
    snprintf(plog, sizeof plog, "%s/producer.log", env.log_dir);
    const char *penv[] = {prefix_env,
                          dlq_env,
                          "CHATFLOW_QUEUE_SHARDS=3",
                          "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                          "CHATFLOW_TYPING_INTERVAL_MS=3000",
                          NULL};
    CHECK(tl_producer_start(&prod, plog, penv), "producer started on the same queues");
    for (int i = 0; i < 100; i++) { /* ready: every room's queue URL resolved */
        long st;
        char *b = tl_http_get(prod.admin_port, "/health/ready", &st);
        free(b);
        if (st == 200) break;
        time_sleep_ms(100);
    }
    char err[256];
    int st;
    wsc_conn *p = wsc_connect(ws, "127.0.0.1", prod.ws_port, "/chat/1", 5000, &st, err, sizeof err);
    wsc_conn *anon = subscribe(ROOM_A, 0, NULL, NULL, NULL);
    CHECK(p && anon, "a producer connection and an anonymous subscriber on room %d", ROOM_A);
    if (p && anon && cons.pid > 0 && prod.pid > 0) {
        wsc_conn *alice = NULL, *bob = NULL;
        test_presence_and_messages(p, anon, &alice, &bob);
        if (alice && bob) {
            test_typing(p, anon, alice, bob);
            test_read_receipts(p, anon, alice, bob);
            test_member_limits(p, alice, bob);
        }
        wsc_free(alice);
        test_history();
        test_page();
    }
    wsc_free(anon);
    wsc_free(p);
    bool in_time;
    CHECK(WIFEXITED(tl_consumer_stop(&cons, SIGTERM, 30000, &in_time)) && in_time,
          "consumer stops on SIGTERM");
    /* a fresh consumer: empty cache, and a heartbeat short enough to watch one being missed */
    CHECK(start_consumer("consumer-restarted", "2", "1"),
          "consumer restarted (ping 2 s, pong 1 s)");
    if (cons.pid > 0) {
        test_history_after_restart();
        test_missed_heartbeat();
    }
    tl_consumer_stop(&cons, SIGTERM, 30000, &in_time);
    tl_producer_stop(&prod, SIGTERM, 30000, &in_time);
    wsc_ctx_free(ws);
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
