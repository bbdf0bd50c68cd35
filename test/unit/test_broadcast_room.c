/*
 * Unit tests of the broadcaster's socket-free parts: the subscription
 * path (any room id served, anything else refused), the per-room replay cache (with events lost
 * before it: incomplete below them, whole above), the replay merge (history pages + held live
 * frames) and the frame token bucket.
 */
/* test-passes: asan tsan */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"
#include "../../consumer/broadcast_path.h"
#include "../../consumer/broadcast_room.h"
#include "seqnum.h"

static bc_frame *frame(const char *seq)
{
    char body[96];
    snprintf(body, sizeof body, "{\"sequenceNumber\":\"%s\"}", seq);
    return bc_frame_new(body, strlen(body), seq);
}

/* "a,b,c" of the queue's sequence numbers. */
static const char *seqs(const bc_fqueue *q)
{
    static char out[1024];
    out[0] = '\0';
    for (size_t i = 0; i < bc_fqueue_len(q); i++) {
        if (i) strcat(out, ",");
        strcat(out, bc_fqueue_at(q, i)->seq);
    }
    return out;
}

static void push_seq(bc_room_cache *c, const char *seq)
{
    bc_frame *f = frame(seq);
    bc_room_cache_push(c, f);
    bc_frame_unref(f);
}

static int parse(const char *path, const char *arg, bc_target *t, char *reason)
{
    const char *args[1] = {arg};
    return bc_target_parse(path, args, arg ? 1 : 0, t, reason, 200);
}

/* Every consumer serves every room (room.h): any room id is accepted, kept as the client sent
 * it; only something that is not a room id is refused. */
static void test_path_rooms(void)
{
    bc_target t;
    char reason[200];
    CHECK_INT(parse("/chat/1", NULL, &t, reason), 0, "path: /chat/1 accepted");
    CHECK_STR(t.room, "1", "path: room \"1\"");
    CHECK_STR(t.since, "", "path: no since");
    CHECK_INT(parse("/chat/20", "since=12345678901234567890", &t, reason), 0,
              "path: room 20 with since");
    CHECK_STR(t.room, "20", "path: room \"20\"");
    CHECK_STR(t.since, "12345678901234567890", "path: since kept as given");

    const char *served[] = {"21",
                            "0",
                            "42",
                            "1000",
                            "007",
                            "-1",
                            "abc",
                            "team-alpha",
                            "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b",
                            "99999999999999999999"};
    for (size_t i = 0; i < sizeof served / sizeof served[0]; i++) {
        char path[96];
        snprintf(path, sizeof path, "/chat/%s", served[i]);
        CHECK(parse(path, NULL, &t, reason) == 0 && strcmp(t.room, served[i]) == 0,
              "path: room \"%s\" accepted as is (no range: every room is served)", served[i]);
    }
    char longest[6 + ROOM_ID_MAX + 2] = "/chat/";
    memset(longest + 6, 'r', ROOM_ID_MAX);
    longest[6 + ROOM_ID_MAX] = '\0';
    CHECK(parse(longest, NULL, &t, reason) == 0 && strlen(t.room) == ROOM_ID_MAX,
          "path: a %d-character room accepted whole", ROOM_ID_MAX);
    longest[6 + ROOM_ID_MAX] = 'r';
    longest[6 + ROOM_ID_MAX + 1] = '\0';
    CHECK_INT(parse(longest, NULL, &t, reason), 404, "path: a %d-character room refused",
              ROOM_ID_MAX + 1);

    CHECK_INT(parse("/chat/a.b", NULL, &t, reason), 404, "path: '.' in a room refused");
    CHECK_STR(reason, "room 'a.b' is not a room id (1-64 characters of A-Z a-z 0-9 _ -)",
              "path: the reason names the rule");
    CHECK_INT(parse("/chat/a b", NULL, &t, reason), 404, "path: a space in a room refused");
    CHECK_INT(parse("/chat/a%2Fb", NULL, &t, reason), 404, "path: '%%' in a room refused");
    CHECK_INT(parse("/chat/caf\xc3\xa9", NULL, &t, reason), 404, "path: a non-ASCII room refused");
    CHECK(strstr(reason, "'caf?"
                         "?'") /* not a trigraph */
              != NULL,
          "path: non-ASCII bytes echoed as '?': %s", reason);
    CHECK_INT(parse("/chat/", NULL, &t, reason), 404, "path: missing room refused");
    CHECK(strstr(reason, "not a room id") != NULL, "path: says it is not a room id: %s", reason);
    CHECK_INT(parse("/chat/1/x", NULL, &t, reason), 404, "path: extra segment refused");
    CHECK_INT(parse("/rooms/1", NULL, &t, reason), 404, "path: another prefix refused");
    CHECK(strstr(reason, "/chat/{roomId}") != NULL, "path: says what to use: %s", reason);
    CHECK_INT(parse(NULL, NULL, &t, reason), 404, "path: no path refused");
}

static void test_path(void)
{
    bc_target t;
    char reason[200];
    CHECK_INT(parse("/chat/3", "since=", &t, reason), 400, "path: empty since refused with 400");
    CHECK_INT(parse("/chat/3", "since=12x", &t, reason), 400, "path: non-numeric since refused");
    CHECK(strstr(reason, "since") != NULL, "path: reason names since: %s", reason);
    CHECK_INT(parse("/chat/3", "since=-5", &t, reason), 400, "path: negative since refused");
    CHECK_INT(parse("/chat/3",
                    "since=1234567890123456789012345678901234567890123456789012345678901", &t,
                    reason),
              400, "path: 61-digit since refused (a position has 60 at most)");
    CHECK_INT(
        parse("/chat/3", "since=1765112400000000000000000000000000000000000000042", &t, reason), 0,
        "path: a 49-digit position as since is taken");
    CHECK_INT(parse("/chat/3", "sinse=5", &t, reason), 400, "path: unknown argument refused");
    CHECK(strstr(reason, "sinse") != NULL, "path: reason names the unknown argument: %s", reason);
    const char *two[2] = {"since=1", "since=2"};
    CHECK_INT(bc_target_parse("/chat/3", two, 2, &t, reason, sizeof reason), 400,
              "path: since twice refused");
    CHECK_INT(parse("/chat/3", "since=0", &t, reason), 0, "path: since=0 accepted");
    CHECK_INT(parse("/chat/<b>x</b>", NULL, &t, reason), 404, "path: markup in the room refused");
    CHECK_STR(reason, "room '?b?x?/b?' is not a room id (1-64 characters of A-Z a-z 0-9 _ -)",
              "path: what the client sent is echoed without markup");
    CHECK_INT(parse("/chat/1", "x=\"><script>", &t, reason), 400,
              "path: markup in an argument refused");
    CHECK(strchr(reason, '<') == NULL && strchr(reason, '"') == NULL,
          "path: argument echoed without markup: %s", reason);
}

static void test_frames_and_queue(void)
{
    bc_frame *f = frame("5");
    CHECK(f != NULL && f->len == strlen("{\"sequenceNumber\":\"5\"}"),
          "frame: built with its length");
    CHECK(memcmp(bc_frame_payload(f), "{\"seq", 5) == 0, "frame: payload after LWS_PRE headroom");
    CHECK(bc_frame_new("x", 1, "5a") == NULL, "frame: an invalid sequence number is refused");
    bc_frame *nos = bc_frame_new("x", 1, NULL);
    CHECK(nos && nos->seq[0] == '\0', "frame: no sequence number allowed");
    CHECK(!bc_frame_after(nos, "1"), "frame: unnumbered frame is never 'after'");
    CHECK(bc_frame_after(f, "") && bc_frame_after(f, "4") && !bc_frame_after(f, "5"),
          "frame: after '' and 4, not after 5");

    bc_fqueue q;
    bc_fqueue_init(&q);
    char s[8];
    for (int i = 1; i <= 40; i++) { /* crosses the first growth (16) twice */
        snprintf(s, sizeof s, "%d", i);
        bc_frame *g = frame(s);
        bc_fqueue_push(&q, g);
        bc_frame_unref(g);
        if (i % 3 == 0) bc_frame_unref(bc_fqueue_pop(&q)); /* wrap the ring */
    }
    CHECK_INT(bc_fqueue_len(&q), 40 - 13, "queue: length after pushes and pops");
    CHECK_STR(bc_fqueue_peek(&q)->seq, "14", "queue: FIFO order kept across growth and wrap");
    CHECK_STR(bc_fqueue_at(&q, bc_fqueue_len(&q) - 1)->seq, "40", "queue: newest last");
    bc_fqueue_push(&q, f);
    CHECK_INT(f->refs, 2, "queue: push takes its own reference");
    bc_fqueue_clear(&q);
    CHECK_INT(f->refs, 1, "queue: clear drops its references");
    CHECK(bc_fqueue_pop(&q) == NULL, "queue: empty after clear");
    bc_frame_unref(f);
    bc_frame_unref(nos);
}

static void test_cache(void)
{
    bc_room_cache c;
    bc_room_cache_init(&c, 3);
    CHECK(bc_room_cache_oldest(&c) == NULL, "cache: empty has no oldest");
    CHECK(!bc_room_cache_serves(&c, "5"),
          "cache: empty, nothing evicted: cannot serve (store may have it)");
    push_seq(&c, "10");
    push_seq(&c, "20");
    CHECK(!bc_room_cache_serves(&c, "9"),
          "cache: since 9 < oldest 10, nothing evicted: history needed");
    CHECK(bc_room_cache_serves(&c, "10"), "cache: since == oldest served");
    CHECK(bc_room_cache_serves(&c, "15"), "cache: since between cached served");
    CHECK(bc_room_cache_serves(&c, "99"), "cache: since beyond newest served (nothing to send)");
    CHECK(!bc_room_cache_serves(&c, ""), "cache: no since is not a replay");
    push_seq(&c, "30");
    push_seq(&c, "40"); /* evicts 10 */
    CHECK_STR(c.evicted_upto, "10", "cache: evicted_upto is the newest evicted");
    CHECK_STR(bc_room_cache_oldest(&c), "20", "cache: oldest after eviction");
    CHECK(!bc_room_cache_serves(&c, "9"), "cache: since 9 < evicted 10: history needed");
    CHECK(bc_room_cache_serves(&c, "10"), "cache: since == evicted_upto: all after it is cached");
    CHECK(bc_room_cache_serves(&c, "11"), "cache: since between evicted and oldest served");
    bc_fqueue q;
    bc_fqueue_init(&q);
    bc_room_cache_copy_after(&c, "20", &q);
    CHECK_STR(seqs(&q), "30,40", "cache: copy after 20 gives 30,40");
    bc_fqueue_clear(&q);
    bc_room_cache_copy_after(&c, "19", &q);
    CHECK_STR(seqs(&q), "20,30,40", "cache: copy after 19 includes 20");
    bc_fqueue_clear(&q);
    bc_room_cache_copy_after(&c, "40", &q);
    CHECK_STR(seqs(&q), "", "cache: copy after newest gives nothing");
    bc_fqueue_clear(&q);
    bc_room_cache_free(&c);

    bc_room_cache none;
    bc_room_cache_init(&none, 0);
    push_seq(&none, "7");
    CHECK_STR(none.evicted_upto, "7", "cache of 0: every frame counts as evicted");
    CHECK(bc_room_cache_serves(&none, "7"), "cache of 0: since == newest: nothing to replay");
    CHECK(!bc_room_cache_serves(&none, "6"), "cache of 0: since older: history needed");
    bc_room_cache_free(&none);
}

/* An event that never reached the cache: it counts as evicted, the cache is incomplete below it
 * and whole at or above it, and evictions never move the mark back down. */
static void test_cache_lost_event(void)
{
    bc_room_cache c;
    bc_room_cache_init(&c, 4);
    push_seq(&c, "10");
    push_seq(&c, "20");
    CHECK(bc_room_cache_serves(&c, "10"),
          "lost: before the loss, since=10 is served (fresh cache)");
    bc_room_cache_mark_lost(&c, "30"); /* 30 dropped; 40 arrives */
    push_seq(&c, "40");
    CHECK_STR(c.evicted_upto, "30", "lost: the lost event counts as evicted");
    CHECK(!bc_room_cache_serves(&c, "10"),
          "lost: since=10 (below the loss, above the oldest) is not served");
    CHECK(!bc_room_cache_serves(&c, "20"),
          "lost: since=20 (just below the loss) is not served: 30 is missing");
    CHECK(!bc_room_cache_serves(&c, "29"), "lost: since=29 is not served");
    CHECK(bc_room_cache_serves(&c, "30"),
          "lost: since=30 (the lost one itself) is served: 40 is all there is after it");
    CHECK(bc_room_cache_serves(&c, "35"), "lost: since above the loss is served");
    bc_fqueue q;
    bc_fqueue_init(&q);
    bc_room_cache_copy_after(&c, "30", &q);
    CHECK_STR(seqs(&q), "40", "lost: since=30 from the cache gives 40");
    bc_fqueue_clear(&q);

    /* A replay from below the loss must make the store cover it before the held frames. */
    bc_replay r;
    bc_replay_begin(&r, &c, "10");
    CHECK_STR(r.need_cover, "30", "lost: a replay must cover up to the lost event");
    CHECK_STR(seqs(&r.held), "20,40", "lost: held starts with the cache after since");
    bc_fqueue out;
    bc_fqueue_init(&out);
    const char *p1[] = {"20"};
    for (size_t i = 0; i < 1; i++) {
        bc_frame *f = frame(p1[i]);
        if (bc_replay_accept(&r, f)) bc_fqueue_push(&out, f);
        bc_frame_unref(f);
    }
    CHECK_INT(bc_replay_after_page(&r, 1, 10), BC_REPLAY_RETRY,
              "lost: the store ends at 20, below the lost 30: retry, never finish with the gap");
    bc_frame *f30 = frame("30");
    if (bc_replay_accept(&r, f30)) bc_fqueue_push(&out, f30);
    bc_frame_unref(f30);
    CHECK_INT(bc_replay_after_page(&r, 1, 10), BC_REPLAY_DONE, "lost: once the store has 30: done");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "20,30,40", "lost: the replay has the lost event, no gap, no duplicate");
    bc_fqueue_clear(&out);
    bc_replay_free(&r);

    /* Evicting older frames never lowers the mark; once real evictions pass it, they lead. */
    push_seq(&c, "50");
    push_seq(&c, "60"); /* evicts 10: evicted_upto stays 30 */
    CHECK_STR(c.evicted_upto, "30", "lost: evicting 10 does not lower the mark below the lost 30");
    push_seq(&c, "70"); /* evicts 20 */
    push_seq(&c, "80"); /* evicts 40 */
    CHECK_STR(c.evicted_upto, "40",
              "lost: evictions beyond the loss move the mark on (whole again)");
    CHECK(bc_room_cache_serves(&c, "40") && !bc_room_cache_serves(&c, "39"),
          "lost: afterwards the cache serves exactly from what it evicted, as before the loss");
    bc_room_cache_mark_lost(&c, "35"); /* an older loss changes nothing */
    CHECK_STR(c.evicted_upto, "40", "lost: a loss below the mark does not move it");
    bc_room_cache_mark_lost(&c, "");
    bc_room_cache_mark_lost(&c, "x");
    CHECK_STR(c.evicted_upto, "40", "lost: a loss without a valid sequence number is ignored");
    /* Numeric order: a loss at 100 is above 80 although "100" < "80" as text. */
    bc_room_cache_mark_lost(&c, "100");
    CHECK(!bc_room_cache_serves(&c, "99") && bc_room_cache_serves(&c, "100"),
          "lost: sequence numbers compare as numbers (100 > 99)");
    bc_room_cache_free(&c);

    /* A cache of 0 keeps the mark too. */
    bc_room_cache none;
    bc_room_cache_init(&none, 0);
    bc_room_cache_mark_lost(&none, "9");
    push_seq(&none, "8");
    CHECK_STR(none.evicted_upto, "9", "lost: cache of 0: an older push does not lower the mark");
    bc_room_cache_free(&none);
}

static void test_bucket(void)
{
    bc_bucket bk = {0};
    uint64_t t = 5000000000ull; /* any monotonic start */
    int taken = 0;
    for (int i = 0; i < 20; i++) taken += bc_bucket_take(&bk, t, 5.0, 10.0);
    CHECK_INT(taken, 10, "bucket: a fresh bucket lets a burst of 10 through, not 20");
    CHECK(!bc_bucket_take(&bk, t + 100000000ull, 5.0, 10.0),
          "bucket: 100 ms later there is no whole token yet (0.5)");
    CHECK(bc_bucket_take(&bk, t + 200000000ull, 5.0, 10.0), "bucket: 200 ms later one token (5/s)");
    CHECK(!bc_bucket_take(&bk, t + 200000000ull, 5.0, 10.0), "bucket: and only one");
    taken = 0;
    for (int i = 0; i < 20; i++) taken += bc_bucket_take(&bk, t + 60000000000ull, 5.0, 10.0);
    CHECK_INT(taken, 10, "bucket: after a long pause the bucket holds the burst, no more");
    /* Steady 5 a second over 2 s: all pass at the rate, none beyond. */
    taken = 0;
    uint64_t t2 = t + 120000000000ull;
    bc_bucket steady = {0};
    for (int i = 0; i < 10; i++) bc_bucket_take(&steady, t2, 5.0, 10.0); /* empty it */
    for (int i = 1; i <= 40; i++)
        taken += bc_bucket_take(&steady, t2 + (uint64_t)i * 50000000ull, 5.0, 10.0);
    CHECK_INT(taken, 10, "bucket: 40 frames over 2 s (20/s) after the burst: 10 pass (5/s)");
}

/* A history page of the given sequence numbers, fed through bc_replay_accept into out. */
static size_t feed_page(bc_replay *r, bc_fqueue *out, const char *const *page, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bc_frame *f = frame(page[i]);
        if (bc_replay_accept(r, f)) bc_fqueue_push(out, f);
        bc_frame_unref(f);
    }
    return n;
}

static void hold_live(bc_replay *r, const char *seq)
{
    bc_frame *f = frame(seq);
    bc_fqueue_push(&r->held, f);
    bc_frame_unref(f);
}

static void test_replay_merge(void)
{
    bc_room_cache c;
    bc_room_cache_init(&c, 3);
    for (int i = 1; i <= 5; i++) { /* 1..5 broadcast; cache keeps 3,4,5; evicted_upto 2 */
        char s[4];
        snprintf(s, sizeof s, "%d", i);
        push_seq(&c, s);
    }
    bc_replay r;
    bc_fqueue out;
    bc_fqueue_init(&out);

    /* since=0: history has 1,2 committed (3..5 not yet); live 6 arrives during the replay. */
    bc_replay_begin(&r, &c, "0");
    CHECK_STR(r.need_cover, "2", "replay: must cover up to the evicted 2");
    CHECK_STR(seqs(&r.held), "3,4,5", "replay: held starts with the cache after since");
    hold_live(&r, "6");
    const char *p1[] = {"1", "2"};
    size_t n = feed_page(&r, &out, p1, 2);
    CHECK_INT(bc_replay_after_page(&r, n, 10), BC_REPLAY_DONE,
              "replay: history reached need_cover: done");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "1,2,3,4,5,6", "replay: history then held, no gap, no duplicate");
    CHECK_INT(bc_fqueue_len(&r.held), 0, "replay: held emptied");
    bc_fqueue_clear(&out);

    /* History overlaps the held frames (3,4 committed already): no duplicate. */
    bc_replay_begin(&r, &c, "1");
    const char *p2[] = {"2", "3", "4"};
    n = feed_page(&r, &out, p2, 3);
    CHECK_INT(bc_replay_after_page(&r, n, 10), BC_REPLAY_DONE, "replay: overlap: done");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "2,3,4,5", "replay: overlapping history and cache merged once");
    bc_fqueue_clear(&out);

    /* The store does not reach need_cover yet (2 not committed): retry, then done. */
    bc_replay_begin(&r, &c, "0");
    const char *p3[] = {"1"};
    n = feed_page(&r, &out, p3, 1);
    CHECK_INT(bc_replay_after_page(&r, n, 10), BC_REPLAY_RETRY,
              "replay: history ends at 1 < evicted 2: retry, never a gap");
    n = feed_page(&r, &out, p3, 1); /* the same row again is not accepted twice */
    CHECK_STR(seqs(&out), "1", "replay: a row already sent is not sent again");
    const char *p3b[] = {"2"};
    n = feed_page(&r, &out, p3b, 1);
    CHECK_INT(bc_replay_after_page(&r, n, 10), BC_REPLAY_DONE, "replay: retry reached 2: done");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "1,2,3,4,5", "replay: after the retry, complete");
    bc_fqueue_clear(&out);

    /* Full pages: ask for the next page, on both sides of the limit. */
    bc_replay_begin(&r, &c, "0");
    n = feed_page(&r, &out, p3, 1);
    CHECK_INT(bc_replay_after_page(&r, n, 1), BC_REPLAY_NEXT_PAGE,
              "replay: page of limit rows: next page");
    CHECK_INT(bc_replay_after_page(&r, 0, 1), BC_REPLAY_RETRY,
              "replay: page below limit short of cover: retry");
    n = feed_page(&r, &out, p3b, 1);
    CHECK_INT(bc_replay_after_page(&r, n, 1), BC_REPLAY_DONE,
              "replay: full page that reaches need_cover: done (the rest is held)");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "1,2,3,4,5", "replay: paged replay complete");
    bc_fqueue_clear(&out);
    bc_room_cache_free(&c);

    /* Nothing evicted yet (fresh consumer): the store is read until it ends. */
    bc_room_cache fresh;
    bc_room_cache_init(&fresh, 10);
    push_seq(&fresh, "100");
    bc_replay_begin(&r, &fresh, "50");
    CHECK_STR(r.need_cover, "", "replay: fresh cache has nothing to cover");
    const char *p4[] = {"60", "70"};
    n = feed_page(&r, &out, p4, 2);
    CHECK_INT(bc_replay_after_page(&r, n, 2), BC_REPLAY_NEXT_PAGE,
              "replay: fresh, full page: next page");
    const char *p5[] = {"80", "100"};
    n = feed_page(&r, &out, p5, 2);
    CHECK_INT(bc_replay_after_page(&r, n, 3), BC_REPLAY_DONE, "replay: fresh, short page: done");
    hold_live(&r, "90"); /* out of order in held: dropped, never sent backwards */
    hold_live(&r, "110");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "60,70,80,100,110", "replay: strictly increasing after the merge");
    bc_fqueue_clear(&out);

    /* Empty store and empty cache: live frames only. */
    bc_room_cache empty;
    bc_room_cache_init(&empty, 4);
    bc_replay_begin(&r, &empty, "5");
    hold_live(&r, "6");
    CHECK_INT(bc_replay_after_page(&r, 0, 4), BC_REPLAY_DONE,
              "replay: empty store, nothing evicted: done");
    bc_replay_finish(&r, &out);
    CHECK_STR(seqs(&out), "6", "replay: then live");
    bc_fqueue_clear(&out);
    bc_replay_free(&r);
    bc_room_cache_free(&empty);
    bc_room_cache_free(&fresh);
}

int main(void)
{
    test_path_rooms();
    test_path();
    test_frames_and_queue();
    test_cache();
    test_cache_lost_event();
    test_replay_merge();
    test_bucket();
    return TEST_DONE();
}
