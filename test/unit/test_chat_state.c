/* test_chat_state — the consumer's chat-feature state without sockets: presence (members, cap,
 * connection counts, read positions, the API snapshot), the recent-message cache (order,
 * redeliveries, eviction, paging and where PostgreSQL takes over), the subscriber READ frame
 * parser and the member query arguments; rooms as string ids ("7", "team-alpha", a UUID) and the
 * rooms_max bound of presence and the cache; plus the cache under concurrent writers and readers,
 * with and without rooms being forgotten (run under ThreadSanitizer by test/run). */
/* test-passes: asan tsan */
#include <pthread.h>

#include "../../consumer/broadcast_path.h"
#include "../../consumer/events.h"
#include "../../consumer/presence.h"
#include "../../consumer/recent.h"
#include "testlib.h"

static void test_presence_members(void)
{
    presence *p = presence_new(10, 2);
    size_t online = 0;
    CHECK(p != NULL, "presence for 10 rooms, cap 2");
    CHECK_INT(presence_join(p, "1", 7, "alice", 1000, &online), PRESENCE_FIRST,
              "first connection of 7: FIRST");
    CHECK_INT(online, 1, "1 online");
    CHECK_INT(presence_join(p, "1", 7, "alice", 1100, &online), PRESENCE_AGAIN,
              "second connection of 7: AGAIN");
    CHECK_INT(online, 1, "still 1 online");
    CHECK_INT(presence_join(p, "1", 3, "bob", 1200, &online), PRESENCE_FIRST, "user 3: FIRST");
    CHECK(!presence_admits(p, "1", 9), "the room is full for a new user");
    CHECK(presence_admits(p, "1", 7), "but not for one already in it");
    CHECK_INT(presence_join(p, "1", 9, "carol", 1300, &online), PRESENCE_FULL,
              "a third user: FULL");
    CHECK_INT(online, 2, "nothing changed (2 online)");
    CHECK(presence_admits(p, "2", 9), "another room has its own cap");
    CHECK_INT(presence_join(p, "a?b", 9, "carol", 1300, &online), PRESENCE_FULL,
              "an invalid room id takes nobody");
    CHECK(!presence_admits(p, "", 9), "nor does the empty id");
    CHECK_INT(presence_room_count(p), 1, "only the room with members has an entry");

    presence_member m[4];
    CHECK_INT(presence_members(p, "1", m, 4), 2, "two members listed");
    CHECK(m[0].user_id == 3 && m[1].user_id == 7, "in user id order");
    CHECK(m[1].connections == 2 && m[1].since_ms == 1000, "7 has 2 connections since its first");
    CHECK_STR(m[1].username, "alice", "with its username");
    size_t n_copy = 99;
    presence_member *copy = presence_members_copy(p, "1", &n_copy);
    CHECK(copy && n_copy == 2 && copy[0].user_id == 3 && copy[1].user_id == 7 &&
              copy[1].connections == 2,
          "presence_members_copy: both members, in user id order");
    free(copy);
    copy = presence_members_copy(p, "2", &n_copy);
    CHECK(copy && n_copy == 0,
          "presence_members_copy: an empty room gives an empty array, not NULL");
    free(copy);

    presence_seen(p, "1", 7, 5000);
    json_t *j = presence_room_json(p, "1");
    json_t *list = json_object_get(j, "online");
    CHECK(json_integer_value(json_object_get(j, "onlineCount")) == 2 &&
              json_array_size(list) == 2 &&
              json_integer_value(json_object_get(j, "memberCap")) == 2,
          "API snapshot: count, cap and list");
    CHECK_STR(json_string_value(json_object_get(j, "roomId")), "1", "roomId as given");
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "lastSeen")),
              "1970-01-01T00:00:05.000Z", "last seen is the latest activity");
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "userId")), "7",
              "ids as strings");
    json_decref(j);

    CHECK(presence_advance_read(p, "1", 7, "00000000000000000020"), "first READ position is taken");
    CHECK(!presence_advance_read(p, "1", 7, "19"), "an older one is not");
    CHECK(!presence_advance_read(p, "1", 7, "20"),
          "nor the same one (leading zeros do not matter)");
    CHECK(presence_advance_read(p, "1", 7, "100"), "a newer one is");
    CHECK(!presence_advance_read(p, "1", 99, "200"), "a non-member has no position");
    CHECK(!presence_advance_read(p, "1", 3, "12a"), "an invalid sequence number is ignored");

    CHECK(!presence_leave(p, "1", 7, 6000, &online),
          "closing one of two connections: still online");
    CHECK(presence_leave(p, "1", 7, 6100, &online), "closing the last: gone");
    CHECK_INT(online, 1, "1 online");
    CHECK(!presence_leave(p, "1", 7, 6200, &online), "leaving again changes nothing");
    CHECK_INT(presence_join(p, "1", 9, "carol", 7000, &online), PRESENCE_FIRST,
              "a place is free again");
    CHECK_INT(presence_join(p, "1", 7, "alice", 7100, &online), PRESENCE_FULL,
              "and now the room is full for 7");
    presence_free(p);
    CHECK(presence_new(0, 5) == NULL && presence_new(2, 0) == NULL, "rooms_max or cap 0 refused");
}

#define UUID_ROOM "3f2b8c1e-9d4a-4e7b-a1c2-5d6e7f8a9b0c"

/* Rooms are ids: strings compared as bytes, made on first join, gone with their last member, and
 * at most rooms_max of them at once. */
static void test_presence_room_ids(void)
{
    presence *p = presence_new(2, 5);
    size_t online = 0;
    CHECK_INT(presence_join(p, "team-alpha", 1, "alice", 1000, &online), PRESENCE_FIRST,
              "team-alpha: first member");
    CHECK_INT(presence_join(p, UUID_ROOM, 2, "bobby", 1000, &online), PRESENCE_FIRST,
              "a UUID room: first member");
    CHECK_INT(presence_room_count(p), 2, "two rooms have entries");
    CHECK(!presence_admits(p, "third", 3), "rooms_max 2: a third room is refused at the handshake");
    CHECK_INT(presence_join(p, "third", 3, "carol", 1000, &online), PRESENCE_FULL,
              "and on join, like a full room");
    CHECK_INT(online, 0, "nobody is online in the refused room");
    CHECK_INT(presence_room_count(p), 2, "no entry was made for it");
    CHECK(presence_admits(p, "team-alpha", 3), "an existing room still takes new members");
    CHECK_INT(presence_join(p, "team-alpha", 3, "carol", 1100, &online), PRESENCE_FIRST,
              "carol joins team-alpha");
    CHECK_INT(online, 2, "2 online in team-alpha");

    presence_member m[4];
    CHECK_INT(presence_members(p, UUID_ROOM, m, 4), 1, "the UUID room has its one member");
    CHECK(m[0].user_id == 2, "user 2");
    CHECK_INT(presence_members(p, "TEAM-ALPHA", m, 4), 0, "ids are case-sensitive");
    CHECK(!presence_advance_read(p, "Team-alpha", 1, "5"), "no member under another spelling");
    CHECK(presence_advance_read(p, "team-alpha", 1, "5"), "a member under its own");

    CHECK(presence_leave(p, UUID_ROOM, 2, 2000, &online), "the UUID room's last member leaves");
    CHECK_INT(online, 0, "0 online there");
    CHECK_INT(presence_room_count(p), 1, "and its entry is freed");
    CHECK_INT(presence_join(p, "third", 3, "carol", 2100, &online), PRESENCE_FIRST,
              "so a third room now fits");
    json_t *j = presence_room_json(p, UUID_ROOM);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "roomId")), UUID_ROOM) == 0 &&
              json_integer_value(json_object_get(j, "onlineCount")) == 0 &&
              json_array_size(json_object_get(j, "online")) == 0 &&
              json_integer_value(json_object_get(j, "memberCap")) == 5,
          "presence_room_json of an empty room: the same shape, zero members");
    json_decref(j);
    CHECK(presence_room_json(p, "no/such") == NULL, "an invalid id has no answer");

    presence *q = presence_new(5, 5);
    CHECK_INT(presence_join(q, "7", 1, "alice", 0, &online), PRESENCE_FIRST, "room 7");
    CHECK_INT(presence_join(q, "07", 1, "alice", 0, &online), PRESENCE_FIRST,
              "room 07 is another room (bytes, not numbers)");
    CHECK_INT(presence_room_count(q), 2, "two entries");
    char id64[ROOM_ID_MAX + 2];
    memset(id64, 'x', ROOM_ID_MAX + 1);
    id64[ROOM_ID_MAX + 1] = '\0';
    CHECK_INT(presence_join(q, id64, 1, "alice", 0, &online), PRESENCE_FULL,
              "a 65-character id is refused");
    id64[ROOM_ID_MAX] = '\0';
    CHECK_INT(presence_join(q, id64, 1, "alice", 0, &online), PRESENCE_FIRST,
              "a 64-character id is a room");
    presence_free(q); /* frees rooms that still have members */
    presence_free(p);
}

static char *event(int i)
{
    char *s = malloc(32);
    snprintf(s, 32, "{\"n\":%d}", i);
    return s;
}

static void add(recent_cache *c, const char *room, const char *seq, int i)
{
    char *e = event(i);
    recent_add(c, room, seq, e);
    free(e);
}

static void test_recent_cache(void)
{
    recent_cache *c = recent_new(2, 3);
    recent_entry out[8];
    char db_before[SEQNUM_BUF];
    CHECK(c != NULL, "cache of 3 per room");
    CHECK_INT(recent_page(c, "1", NULL, 5, out, db_before), 0, "empty room: nothing");
    CHECK_STR(db_before, "", "empty cache, no before: PostgreSQL from the newest");
    CHECK_INT(recent_page(c, "1", "50", 5, out, db_before), 0, "empty room with before: nothing");
    CHECK_STR(db_before, "50", "PostgreSQL below before");

    add(c, "1", "10", 1);
    add(c, "1", "20", 2);
    add(c, "1", "20", 99); /* redelivery */
    add(c, "1", "15", 98); /* older than the newest: redelivery */
    add(c, "1", "x", 97);  /* no valid sequence number */
    size_t n = recent_page(c, "1", NULL, 5, out, db_before);
    CHECK(n == 2 && strcmp(out[0].seq, "20") == 0 && strcmp(out[1].seq, "10") == 0 &&
              strcmp(out[0].json, "{\"n\":2}") == 0,
          "two entries, newest first; redeliveries and unnumbered events ignored");
    CHECK_STR(db_before, "10", "PostgreSQL takes over below the oldest cached");
    recent_entries_free(out, n);

    add(c, "1", "30", 3);
    add(c, "1", "100", 4); /* numeric order: 100 > 30 */
    n = recent_page(c, "1", NULL, 8, out, db_before);
    CHECK(n == 3 && strcmp(out[0].seq, "100") == 0 && strcmp(out[2].seq, "20") == 0,
          "full at 3: the oldest left; numeric order");
    CHECK_STR(db_before, "20", "PostgreSQL below the new oldest");
    recent_entries_free(out, n);

    n = recent_page(c, "1", "100", 1, out, db_before);
    CHECK(n == 1 && strcmp(out[0].seq, "30") == 0, "before=100 limit 1: the one just below");
    CHECK_STR(db_before, "20", "db bound is the cache's oldest (the cache covers 20..100)");
    recent_entries_free(out, n);
    n = recent_page(c, "1", "20", 5, out, db_before);
    CHECK_INT(n, 0, "before=20: nothing cached below");
    CHECK_STR(db_before, "20", "PostgreSQL below 20");
    n = recent_page(c, "1", "5", 5, out, db_before);
    CHECK_INT(n, 0, "before below the cache");
    CHECK_STR(db_before, "5", "PostgreSQL below before, not below the cache");
    CHECK_INT(recent_page(c, "2", NULL, 5, out, db_before), 0, "room 2 has its own ring");
    CHECK_INT(recent_page(c, "7", NULL, 5, out, db_before), 0, "a room never added to has nothing");
    CHECK_INT(recent_page(c, "no/such", "9", 5, out, db_before), 0, "nor has an invalid id");
    CHECK_STR(db_before, "9", "PostgreSQL below before");
    recent_free(c);

    c = recent_new(1, 0);
    add(c, "1", "10", 1);
    CHECK_INT(recent_page(c, "1", NULL, 5, out, db_before), 0, "per_room 0 keeps nothing");
    CHECK_STR(db_before, "", "and sends everything to PostgreSQL");
    CHECK_INT(recent_room_count(c), 0, "not even an entry for the room");
    recent_free(c);
    CHECK(recent_new(0, 5) == NULL, "rooms_max 0 refused");
}

/* At most rooms_max rooms: a new one forgets the room least recently added to, entirely. */
static void test_recent_rooms_max(void)
{
    recent_cache *c = recent_new(2, 3);
    recent_entry out[8];
    char db_before[SEQNUM_BUF];
    add(c, "team-alpha", "10", 1);
    add(c, UUID_ROOM, "11", 2);
    add(c, "team-alpha", "12", 3); /* the UUID room is now the least recently added to */
    CHECK_INT(recent_room_count(c), 2, "two rooms cached");
    add(c, "third", "13", 4);
    CHECK_INT(recent_room_count(c), 2, "still two after a third room");
    CHECK_INT(recent_page(c, UUID_ROOM, NULL, 5, out, db_before), 0,
              "the least recently added-to room (the UUID) was forgotten");
    CHECK_STR(db_before, "", "its pages come from PostgreSQL");
    size_t n = recent_page(c, "team-alpha", NULL, 5, out, db_before);
    CHECK(n == 2 && strcmp(out[0].seq, "12") == 0 && strcmp(out[1].seq, "10") == 0,
          "team-alpha (added to more recently) kept both entries");
    CHECK_STR(db_before, "10", "PostgreSQL below its oldest");
    recent_entries_free(out, n);

    /* team-alpha was just read, but reading is not adding: "third" was added to after it */
    add(c, UUID_ROOM, "20", 5); /* forgets team-alpha */
    add(c, UUID_ROOM, "21", 6);
    n = recent_page(c, UUID_ROOM, NULL, 5, out, db_before);
    CHECK(n == 2 && strcmp(out[0].seq, "21") == 0 && strcmp(out[1].seq, "20") == 0,
          "the UUID room starts afresh with what came after");
    CHECK_STR(db_before, "20", "and PostgreSQL takes over below its new oldest entry");
    recent_entries_free(out, n);
    CHECK_INT(recent_page(c, "team-alpha", NULL, 5, out, db_before), 0,
              "team-alpha, least recently added to (reads do not count), was forgotten");
    n = recent_page(c, "third", NULL, 5, out, db_before);
    CHECK(n == 1 && strcmp(out[0].seq, "13") == 0, "\"third\" is still cached");
    recent_entries_free(out, n);
    add(c, "7", "1", 7);
    add(c, "07", "1", 8);
    n = recent_page(c, "07", NULL, 5, out, db_before);
    CHECK(n == 1 && strcmp(out[0].json, "{\"n\":8}") == 0, "07 and 7 are two rooms");
    recent_entries_free(out, n);
    CHECK_INT(recent_room_count(c), 2, "never more than rooms_max");
    recent_free(c);
}

typedef struct {
    recent_cache *c;
    const char *room;
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
        static const char *const rooms[] = {"1", "team-alpha", UUID_ROOM};
        size_t n = recent_page(w->c, rooms[i % 3], NULL, 16, out, db_before);
        for (size_t k = 1; k < n; k++)
            if (seqnum_cmp(out[k - 1].seq, out[k].seq) <= 0) w->errors++;
        recent_entries_free(out, n);
    }
    return NULL;
}

static void test_recent_concurrent(void)
{
    recent_cache *c = recent_new(2, 50);
    worker_arg w1 = {c, "1", 0}, w2 = {c, "team-alpha", 0}, r = {c, NULL, 0};
    pthread_t t[3];
    pthread_create(&t[0], NULL, writer, &w1);
    pthread_create(&t[1], NULL, writer, &w2);
    pthread_create(&t[2], NULL, reader, &r);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK_INT(r.errors, 0, "pages read while two pollers write are always strictly newest first");
    recent_entry out[60];
    char db_before[SEQNUM_BUF];
    size_t n = recent_page(c, "1", NULL, 60, out, db_before);
    CHECK(n == 50 && strcmp(out[0].seq, "2000") == 0 && strcmp(out[49].seq, "1951") == 0,
          "afterwards the room holds exactly its newest 50");
    recent_entries_free(out, n);
    recent_free(c);

    /* three writers on rooms_max 2: rooms are forgotten and made again while pages are read */
    c = recent_new(2, 50);
    worker_arg e1 = {c, "1", 0}, e2 = {c, "team-alpha", 0}, e3 = {c, UUID_ROOM, 0},
               er = {c, NULL, 0};
    pthread_create(&t[0], NULL, writer, &e1);
    pthread_create(&t[1], NULL, writer, &e2);
    pthread_create(&t[2], NULL, writer, &e3);
    pthread_t rt;
    pthread_create(&rt, NULL, reader, &er);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    pthread_join(rt, NULL);
    CHECK_INT(er.errors, 0, "with eviction too, pages are always strictly newest first");
    CHECK(recent_room_count(c) <= 2, "and at most rooms_max rooms are cached");
    recent_free(c);
}

static void test_read_frames(void)
{
    char seq[SEQNUM_BUF], err[200] = "";
    const char *ok =
        "{\"type\":\"READ\",\"roomId\":\"7\",\"sequenceNumber\":\"18446744073709551617\"}";
    CHECK_INT(subscriber_frame_parse(ok, strlen(ok), "7", seq, err, sizeof err), CHAT_OK,
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
        {"{\"type\":\"READ\",\"roomId\":\"07\",\"sequenceNumber\":\"1\"}", CHAT_VALIDATION_ERROR,
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
            subscriber_frame_parse(bad[i].frame, strlen(bad[i].frame), "7", seq, err, sizeof err);
        CHECK(st == bad[i].st && strncmp(err, bad[i].starts, strlen(bad[i].starts)) == 0,
              "%s -> %s naming %s (%s)", bad[i].frame, chat_status_code(bad[i].st), bad[i].starts,
              err);
    }
    const char *alpha = "{\"type\":\"READ\",\"roomId\":\"team-alpha\",\"sequenceNumber\":\"5\"}";
    err[0] = '\0';
    CHECK_INT(subscriber_frame_parse(alpha, strlen(alpha), "team-alpha", seq, err, sizeof err),
              CHAT_OK, "a READ frame of room team-alpha (%s)", err);
    CHECK_INT(subscriber_frame_parse(alpha, strlen(alpha), "team-Alpha", seq, err, sizeof err),
              CHAT_VALIDATION_ERROR, "is not one of room team-Alpha (bytes compared)");
    CHECK(strstr(err, "\"team-Alpha\"") != NULL, "the error names the subscription's room (%s)",
          err);
    const char *uuid = "{\"type\":\"READ\",\"roomId\":\"" UUID_ROOM "\",\"sequenceNumber\":\"6\"}";
    err[0] = '\0';
    CHECK_INT(subscriber_frame_parse(uuid, strlen(uuid), UUID_ROOM, seq, err, sizeof err), CHAT_OK,
              "a READ frame of a UUID room (%s)", err);
    CHECK_STR(seq, "6", "its sequence number");
    char big[SUBSCRIBER_FRAME_MAX + 10];
    memset(big, ' ', sizeof big);
    CHECK_INT(subscriber_frame_parse(big, sizeof big, "7", seq, err, sizeof err),
              CHAT_MESSAGE_TOO_LARGE, "a frame over %d bytes is MESSAGE_TOO_LARGE",
              SUBSCRIBER_FRAME_MAX);

    char *e = presence_event_json("7", 42, "alice", "OFFLINE", "timeout", 0, 3);
    json_t *j = json_loads(e, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "type")), "PRESENCE") == 0 &&
              strcmp(json_string_value(json_object_get(j, "userId")), "42") == 0 &&
              strcmp(json_string_value(json_object_get(j, "reason")), "timeout") == 0 &&
              json_integer_value(json_object_get(j, "online")) == 3 && json_object_size(j) == 8,
          "PRESENCE event: 8 members, ids as strings");
    json_decref(j);
    free(e);
    e = presence_event_json(UUID_ROOM, 42, "alice", "ONLINE", "joined", 0, 1);
    j = json_loads(e, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "roomId")), UUID_ROOM) == 0,
          "PRESENCE event of a UUID room carries the id as given");
    json_decref(j);
    free(e);
    e = read_event_json("7", 42, "alice", "99", 0);
    j = json_loads(e, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "sequenceNumber")), "99") == 0 &&
              strcmp(json_string_value(json_object_get(j, "roomId")), "7") == 0 &&
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
    return bc_target_parse("/chat/5", args, n, t, reason, 200);
}

static void test_member_arguments(void)
{
    bc_target t;
    char reason[200] = "";
    CHECK_INT(target("userId=42", "username=alice", NULL, &t, reason), 0,
              "userId and username accepted (%s)", reason);
    CHECK(t.user_id == 42 && strcmp(t.username, "alice") == 0 && strcmp(t.room, "5") == 0,
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
    test_presence_room_ids();
    test_recent_cache();
    test_recent_rooms_max();
    test_recent_concurrent();
    test_read_frames();
    test_member_arguments();
    return TEST_DONE();
}
