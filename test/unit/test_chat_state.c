/* test_chat_state — the consumer's chat-feature state without sockets: presence (members, cap,
 * connection counts, read positions, the API snapshot), the recent-message cache (order,
 * redeliveries, eviction, paging and where PostgreSQL takes over), the subscriber READ frame
 * parser and the member query arguments; plus the cache under concurrent writers and readers
 * (run under ThreadSanitizer by test/run). */
/* test-passes: asan tsan */
#include <pthread.h>

#include "../../consumer/broadcast_path.h"
#include "../../consumer/events.h"
#include "../../consumer/presence.h"
#include "../../consumer/recent.h"
#include "testlib.h"

static void test_presence_members(void)
{
    presence *p = presence_new(1, 3, 2);
    size_t online = 0;
    CHECK(p != NULL, "presence for rooms 1-3, cap 2");
    CHECK_INT(presence_join(p, 1, 7, "alice", 1000, &online), PRESENCE_FIRST,
              "first connection of 7: FIRST");
    CHECK_INT(online, 1, "1 online");
    CHECK_INT(presence_join(p, 1, 7, "alice", 1100, &online), PRESENCE_AGAIN,
              "second connection of 7: AGAIN");
    CHECK_INT(online, 1, "still 1 online");
    CHECK_INT(presence_join(p, 1, 3, "bob", 1200, &online), PRESENCE_FIRST, "user 3: FIRST");
    CHECK(!presence_admits(p, 1, 9), "the room is full for a new user");
    CHECK(presence_admits(p, 1, 7), "but not for one already in it");
    CHECK_INT(presence_join(p, 1, 9, "carol", 1300, &online), PRESENCE_FULL, "a third user: FULL");
    CHECK_INT(online, 2, "nothing changed (2 online)");
    CHECK(presence_admits(p, 2, 9), "another room has its own cap");
    CHECK_INT(presence_join(p, 4, 9, "carol", 1300, &online), PRESENCE_FULL,
              "a room outside the range takes nobody");

    presence_member m[4];
    CHECK_INT(presence_members(p, 1, m, 4), 2, "two members listed");
    CHECK(m[0].user_id == 3 && m[1].user_id == 7, "in user id order");
    CHECK(m[1].connections == 2 && m[1].since_ms == 1000, "7 has 2 connections since its first");
    CHECK_STR(m[1].username, "alice", "with its username");
    size_t n_copy = 99;
    presence_member *copy = presence_members_copy(p, 1, &n_copy);
    CHECK(copy && n_copy == 2 && copy[0].user_id == 3 && copy[1].user_id == 7 &&
              copy[1].connections == 2,
          "presence_members_copy: both members, in user id order");
    free(copy);
    copy = presence_members_copy(p, 2, &n_copy);
    CHECK(copy && n_copy == 0,
          "presence_members_copy: an empty room gives an empty array, not NULL");
    free(copy);

    presence_seen(p, 1, 7, 5000);
    json_t *j = presence_room_json(p, 1);
    json_t *list = json_object_get(j, "online");
    CHECK(json_integer_value(json_object_get(j, "onlineCount")) == 2 &&
              json_array_size(list) == 2 &&
              json_integer_value(json_object_get(j, "memberCap")) == 2,
          "API snapshot: count, cap and list");
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "lastSeen")),
              "1970-01-01T00:00:05.000Z", "last seen is the latest activity");
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "userId")), "7",
              "ids as strings");
    json_decref(j);

    CHECK(presence_advance_read(p, 1, 7, "00000000000000000020"), "first READ position is taken");
    CHECK(!presence_advance_read(p, 1, 7, "19"), "an older one is not");
    CHECK(!presence_advance_read(p, 1, 7, "20"), "nor the same one (leading zeros do not matter)");
    CHECK(presence_advance_read(p, 1, 7, "100"), "a newer one is");
    CHECK(!presence_advance_read(p, 1, 99, "200"), "a non-member has no position");
    CHECK(!presence_advance_read(p, 1, 3, "12a"), "an invalid sequence number is ignored");

    CHECK(!presence_leave(p, 1, 7, 6000, &online), "closing one of two connections: still online");
    CHECK(presence_leave(p, 1, 7, 6100, &online), "closing the last: gone");
    CHECK_INT(online, 1, "1 online");
    CHECK(!presence_leave(p, 1, 7, 6200, &online), "leaving again changes nothing");
    CHECK_INT(presence_join(p, 1, 9, "carol", 7000, &online), PRESENCE_FIRST,
              "a place is free again");
    CHECK_INT(presence_join(p, 1, 7, "alice", 7100, &online), PRESENCE_FULL,
              "and now the room is full for 7");
    presence_free(p);
    CHECK(presence_new(3, 1, 5) == NULL && presence_new(1, 2, 0) == NULL,
          "bad range or cap refused");
}

static char *event(int i)
{
    char *s = malloc(32);
    snprintf(s, 32, "{\"n\":%d}", i);
    return s;
}

static void add(recent_cache *c, long room, const char *seq, int i)
{
    char *e = event(i);
    recent_add(c, room, seq, e);
    free(e);
}

static void test_recent_cache(void)
{
    recent_cache *c = recent_new(1, 2, 3);
    recent_entry out[8];
    char db_before[SEQNUM_BUF];
    CHECK(c != NULL, "cache of 3 per room");
    CHECK_INT(recent_page(c, 1, NULL, 5, out, db_before), 0, "empty room: nothing");
    CHECK_STR(db_before, "", "empty cache, no before: PostgreSQL from the newest");
    CHECK_INT(recent_page(c, 1, "50", 5, out, db_before), 0, "empty room with before: nothing");
    CHECK_STR(db_before, "50", "PostgreSQL below before");

    add(c, 1, "10", 1);
    add(c, 1, "20", 2);
    add(c, 1, "20", 99); /* redelivery */
    add(c, 1, "15", 98); /* older than the newest: redelivery */
    add(c, 1, "x", 97);  /* no valid sequence number */
    size_t n = recent_page(c, 1, NULL, 5, out, db_before);
    CHECK(n == 2 && strcmp(out[0].seq, "20") == 0 && strcmp(out[1].seq, "10") == 0 &&
              strcmp(out[0].json, "{\"n\":2}") == 0,
          "two entries, newest first; redeliveries and unnumbered events ignored");
    CHECK_STR(db_before, "10", "PostgreSQL takes over below the oldest cached");
    recent_entries_free(out, n);

    add(c, 1, "30", 3);
    add(c, 1, "100", 4); /* numeric order: 100 > 30 */
    n = recent_page(c, 1, NULL, 8, out, db_before);
    CHECK(n == 3 && strcmp(out[0].seq, "100") == 0 && strcmp(out[2].seq, "20") == 0,
          "full at 3: the oldest left; numeric order");
    CHECK_STR(db_before, "20", "PostgreSQL below the new oldest");
    recent_entries_free(out, n);

    n = recent_page(c, 1, "100", 1, out, db_before);
    CHECK(n == 1 && strcmp(out[0].seq, "30") == 0, "before=100 limit 1: the one just below");
    CHECK_STR(db_before, "20", "db bound is the cache's oldest (the cache covers 20..100)");
    recent_entries_free(out, n);
    n = recent_page(c, 1, "20", 5, out, db_before);
    CHECK_INT(n, 0, "before=20: nothing cached below");
    CHECK_STR(db_before, "20", "PostgreSQL below 20");
    n = recent_page(c, 1, "5", 5, out, db_before);
    CHECK_INT(n, 0, "before below the cache");
    CHECK_STR(db_before, "5", "PostgreSQL below before, not below the cache");
    CHECK_INT(recent_page(c, 2, NULL, 5, out, db_before), 0, "room 2 has its own ring");
    CHECK_INT(recent_page(c, 7, NULL, 5, out, db_before), 0,
              "a room outside the range has nothing");
    recent_free(c);

    c = recent_new(1, 1, 0);
    add(c, 1, "10", 1);
    CHECK_INT(recent_page(c, 1, NULL, 5, out, db_before), 0, "per_room 0 keeps nothing");
    CHECK_STR(db_before, "", "and sends everything to PostgreSQL");
    recent_free(c);
}

typedef struct {
    recent_cache *c;
    long room;
    int errors;
} worker_arg;

static void *writer(void *arg)
{
    worker_arg *w = arg;
    for (int i = 1; i <= 2000; i++) {
        char seq[24];
        snprintf(seq, sizeof seq, "%d", i);
        add(w->c, w->room, seq, i);
    }
    return NULL;
}

static void *reader(void *arg)
{
    worker_arg *w = arg;
    recent_entry out[16];
    char db_before[SEQNUM_BUF];
    for (int i = 0; i < 2000; i++) {
        size_t n = recent_page(w->c, 1 + i % 2, NULL, 16, out, db_before);
        for (size_t k = 1; k < n; k++)
            if (seqnum_cmp(out[k - 1].seq, out[k].seq) <= 0) w->errors++;
        recent_entries_free(out, n);
    }
    return NULL;
}

static void test_recent_concurrent(void)
{
    recent_cache *c = recent_new(1, 2, 50);
    worker_arg w1 = {c, 1, 0}, w2 = {c, 2, 0}, r = {c, 0, 0};
    pthread_t t[3];
    pthread_create(&t[0], NULL, writer, &w1);
    pthread_create(&t[1], NULL, writer, &w2);
    pthread_create(&t[2], NULL, reader, &r);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK_INT(r.errors, 0, "pages read while two pollers write are always strictly newest first");
    recent_entry out[60];
    char db_before[SEQNUM_BUF];
    size_t n = recent_page(c, 1, NULL, 60, out, db_before);
    CHECK(n == 50 && strcmp(out[0].seq, "2000") == 0 && strcmp(out[49].seq, "1951") == 0,
          "afterwards the room holds exactly its newest 50");
    recent_entries_free(out, n);
    recent_free(c);
}

static void test_read_frames(void)
{
    char seq[SEQNUM_BUF], err[200];
    const char *ok =
        "{\"type\":\"READ\",\"roomId\":\"7\",\"sequenceNumber\":\"18446744073709551617\"}";
    CHECK_INT(subscriber_frame_parse(ok, strlen(ok), 7, seq, err, sizeof err), CHAT_OK,
              "a READ frame parses (%s)", err);
    CHECK_STR(seq, "18446744073709551617", "its sequence number (beyond 64 bits)");
    static const struct {
        const char *frame;
        chat_status st;
        const char *starts;
    } bad[] = {
        {"{\"type\":\"READ\",\"roomId\":\"8\",\"sequenceNumber\":\"1\"}", CHAT_VALIDATION_ERROR,
         "roomId"},
        {"{\"type\":\"READ\",\"roomId\":7,\"sequenceNumber\":\"1\"}", CHAT_VALIDATION_ERROR,
         "roomId"},
        {"{\"type\":\"READ\",\"roomId\":\"7\",\"sequenceNumber\":1}", CHAT_VALIDATION_ERROR,
         "sequenceNumber"},
        {"{\"type\":\"READ\",\"roomId\":\"7\",\"sequenceNumber\":\"-1\"}", CHAT_VALIDATION_ERROR,
         "sequenceNumber"},
        {"{\"type\":\"READ\",\"roomId\":\"7\"}", CHAT_VALIDATION_ERROR, "sequenceNumber"},
        {"{\"type\":\"TYPING\",\"roomId\":\"7\",\"sequenceNumber\":\"1\"}", CHAT_VALIDATION_ERROR,
         "type"},
        {"{\"roomId\":\"7\",\"sequenceNumber\":\"1\"}", CHAT_VALIDATION_ERROR, "type"},
        {"[1]", CHAT_INVALID_JSON, "frame"},
        {"{\"type\":", CHAT_INVALID_JSON, "frame"},
        {"{\"type\":\"READ\",\"type\":\"READ\",\"roomId\":\"7\",\"sequenceNumber\":\"1\"}",
         CHAT_INVALID_JSON, "frame"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        chat_status st =
            subscriber_frame_parse(bad[i].frame, strlen(bad[i].frame), 7, seq, err, sizeof err);
        CHECK(st == bad[i].st && strncmp(err, bad[i].starts, strlen(bad[i].starts)) == 0,
              "%s -> %s naming %s (%s)", bad[i].frame, chat_status_code(bad[i].st), bad[i].starts,
              err);
    }
    char big[SUBSCRIBER_FRAME_MAX + 10];
    memset(big, ' ', sizeof big);
    CHECK_INT(subscriber_frame_parse(big, sizeof big, 7, seq, err, sizeof err),
              CHAT_MESSAGE_TOO_LARGE, "a frame over %d bytes is MESSAGE_TOO_LARGE",
              SUBSCRIBER_FRAME_MAX);

    char *e = presence_event_json(7, 42, "alice", "OFFLINE", "timeout", 0, 3);
    json_t *j = json_loads(e, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "type")), "PRESENCE") == 0 &&
              strcmp(json_string_value(json_object_get(j, "userId")), "42") == 0 &&
              strcmp(json_string_value(json_object_get(j, "reason")), "timeout") == 0 &&
              json_integer_value(json_object_get(j, "online")) == 3 && json_object_size(j) == 8,
          "PRESENCE event: 8 members, ids as strings");
    json_decref(j);
    free(e);
    e = read_event_json(7, 42, "alice", "99", 0);
    j = json_loads(e, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "sequenceNumber")), "99") == 0 &&
              json_object_size(j) == 6,
          "READ event: 6 members");
    json_decref(j);
    free(e);
    e = subscriber_error_json(CHAT_VALIDATION_ERROR, "roomId: wrong");
    CHECK_STR(e,
              "{\"type\":\"ERROR\",\"errorCode\":\"VALIDATION_ERROR\",\"errorMessage\":\"roomId: "
              "wrong\"}",
              "ERROR event");
    free(e);
}

static int target(const char *a1, const char *a2, const char *a3, bc_target *t, char *reason)
{
    const char *args[3];
    size_t n = 0;
    if (a1) args[n++] = a1;
    if (a2) args[n++] = a2;
    if (a3) args[n++] = a3;
    return bc_target_parse("/chat/5", args, n, 1, 20, t, reason, 200);
}

static void test_member_arguments(void)
{
    bc_target t;
    char reason[200];
    CHECK_INT(target("userId=42", "username=alice", NULL, &t, reason), 0,
              "userId and username accepted (%s)", reason);
    CHECK(t.user_id == 42 && strcmp(t.username, "alice") == 0 && t.room == 5,
          "they identify the member");
    CHECK_INT(target("since=10", "username=alice", "userId=42", &t, reason), 0,
              "with since, in any order");
    CHECK_STR(t.since, "10", "since kept");
    CHECK_INT(target(NULL, NULL, NULL, &t, reason), 0, "no arguments: anonymous");
    CHECK_INT(t.user_id, 0, "anonymous has user 0");
    static const struct {
        const char *a1, *a2;
        const char *why;
    } bad[] = {
        {"userId=42", NULL, "give both"},
        {"username=alice", NULL, "give both"},
        {"userId=0", "username=alice", "userId"},
        {"userId=100001", "username=alice", "userId"},
        {"userId=042", "username=alice", "userId"},
        {"userId=4x", "username=alice", "userId"},
        {"userId=42", "username=al", "username"},
        {"userId=42", "username=al_ice", "username"},
        {"userId=42", "userId=43", "more than once"},
        {"nick=alice", NULL, "unknown query argument"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(target(bad[i].a1, bad[i].a2, NULL, &t, reason) == 400 && strstr(reason, bad[i].why),
              "%s %s -> 400 (%s)", bad[i].a1, bad[i].a2 ? bad[i].a2 : "", reason);
}

int main(void)
{
    test_presence_members();
    test_recent_cache();
    test_recent_concurrent();
    test_read_frames();
    test_member_arguments();
    return TEST_DONE();
}
