/*
 * it_broadcast_backpressure — "nothing dropped silently" for the consumer's broadcaster, in
 * process over real sockets (like it_broadcast), with an in-memory history store.
 *
 * The service thread is stalled on purpose: a SIGUSR1 sent to it (found by its name,
 * "cf-broadcast") runs a handler that blocks on a pipe until the test releases it. Checks:
 *  - backpressure: with a 4-message inbox and the thread stalled, a publisher blocks instead of
 *    dropping (counted in chatflow_broadcast_publish_waits_total); released, every event arrives
 *    once and in order, nothing counted as dropped;
 *  - the same under load without a stall: two publishers, a tiny inbox, a room of 40
 *    subscribers: every subscriber gets every event in order, nothing dropped;
 *  - forced drops (publish_wait_ms 200): the wait runs out, broadcast_publish() returns false and
 *    the drop is counted by kind (message, typing); a second drop while still stalled does not
 *    wait again; the room's subscribers are closed with 4013 and the reason; a reconnect with
 *    since= below the lost events is replayed from the store (source="history") with no gap, one
 *    at or above them from the cache;
 *  - READ frames: refused while the room's newest is unknown, beyond it (numeric comparison, 40
 *    digits refused), accepted zero-padded; a flood of 15 is cut by the token bucket (ERROR
 *    RATE_LIMITED, counted, not announced); announcements are coalesced (at most one a second,
 *    the newest position last);
 *  - liveness: both broadcaster loops are registered with the watchdog and an idle broadcaster
 *    stays live past the service loop's 10 s turn expectation (the 1 s lws tick).
 */
/* test-passes: asan tsan */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "message.h"
#include "metrics.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_http.h"
#include "uuid.h"
#include "watchdog.h"
#include "wsclient.h"
#include "../../consumer/broadcast.h"
#include "../../consumer/presence.h"
#include "seqnum.h"

#define HOST "127.0.0.1"
#define ROOMS 8
#define MAX_STORED 256

/* ---- the history store double: every published message counts as stored ---- */

static pthread_mutex_t store_mu = PTHREAD_MUTEX_INITIALIZER;
static char stored[ROOMS + 1][MAX_STORED][SEQNUM_BUF];
static size_t n_stored[ROOMS + 1];

static void make_msg(chat_message *m, long room, const char *seq, chat_kind kind)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
    snprintf(m->user_id, sizeof m->user_id, "7");
    snprintf(m->username, sizeof m->username, "user7");
    snprintf(m->message, sizeof m->message, "m%s", seq);
    time_format_iso8601(time_wall_ms(), m->timestamp);
    snprintf(m->message_type, sizeof m->message_type, "TEXT");
    uuid_v4(m->message_id);
    snprintf(m->room_id, sizeof m->room_id, "%ld", room);
    snprintf(m->server_id, sizeof m->server_id, "it-bp");
    time_format_iso8601(time_wall_ms(), m->received_at);
}

static void store_add(long room, const char *seq)
{
    pthread_mutex_lock(&store_mu);
    if (n_stored[room] < MAX_STORED)
        snprintf(stored[room][n_stored[room]++], SEQNUM_BUF, "%s", seq);
    pthread_mutex_unlock(&store_mu);
}

static bool fake_history(void *ctx, const char *room_id, const char *since_seq, size_t limit,
                         void (*emit)(void *emit_ctx, const broadcast_history_row *row),
                         void *emit_ctx, char *err, size_t err_len)
{
    (void)ctx;
    long room = atol(room_id); /* the test's rooms are "1".."ROOMS": they index its store */
    if (room < 1 || room > ROOMS) {
        snprintf(err, err_len, "room %s is not in the test store", room_id);
        return false;
    }
    pthread_mutex_lock(&store_mu);
    size_t sent = 0;
    for (size_t i = 0; i < n_stored[room] && sent < limit; i++) {
        if (seqnum_cmp(stored[room][i], since_seq) <= 0) continue;
        broadcast_history_row row;
        make_msg(&row.msg, room, stored[room][i], CHAT_KIND_MESSAGE);
        snprintf(row.sequence_number, sizeof row.sequence_number, "%s", stored[room][i]);
        time_format_iso8601(time_wall_ms(), row.server_timestamp);
        emit(emit_ctx, &row);
        sent++;
    }
    pthread_mutex_unlock(&store_mu);
    return true;
}

/* Publishes one event (a MESSAGE is stored first, as the poller's order of events implies). */
static bool publish(broadcaster *b, long room, unsigned long long n, chat_kind kind)
{
    char seq[SEQNUM_BUF], ts[ISO8601_BUF];
    chat_message m;
    snprintf(seq, sizeof seq, "%llu", n);
    make_msg(&m, room, seq, kind);
    if (kind == CHAT_KIND_MESSAGE) store_add(room, seq);
    time_format_iso8601(time_wall_ms(), ts);
    return broadcast_publish(b, &m, seq, ts);
}

/* ---- stalling the service thread ---- */

static int stall_pipe[2];
static atomic_int in_stall;

static void on_stall_signal(int sig)
{
    (void)sig;
    int saved = errno;
    char c;
    atomic_store(&in_stall, 1);
    while (read(stall_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    atomic_store(&in_stall, 0);
    errno = saved;
}

static pid_t service_tid(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    pid_t found = 0;
    while (d && !found && (e = readdir(d))) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(name, sizeof name, f) && strncmp(name, "cf-broadcast", 12) == 0)
            found = (pid_t)atoi(e->d_name);
        fclose(f);
    }
    if (d) closedir(d);
    return found;
}

static bool stall_service(void)
{
    pid_t tid = service_tid();
    if (!tid || syscall(SYS_tgkill, getpid(), tid, SIGUSR1) != 0) return false;
    for (int i = 0; i < 500 && !atomic_load(&in_stall); i++) time_sleep_ms(5);
    return atomic_load(&in_stall) != 0;
}

static void release_service(void)
{
    if (write(stall_pipe[1], "x", 1) != 1) NOTE("release: write failed");
    for (int i = 0; i < 500 && atomic_load(&in_stall); i++) time_sleep_ms(5);
}

/* ---- helpers ---- */

static double metric(const char *series)
{
    char *text = metrics_render();
    double v = tl_metric_sum(text, series, NULL);
    free(text);
    return v;
}

static broadcaster *start(size_t inbox, long wait_ms, presence *pr)
{
    broadcast_config c = {
        .bind_addr = HOST,
        .rooms_max = 100,
        .send_queue_max = 2000,
        .cache_per_room = 64,
        .max_subscribers = 200,
        .ping_interval_s = 20,
        .pong_timeout_s = 5,
        .history = fake_history,
        .presence = pr,
        .inbox_capacity = inbox,
        .publish_wait_ms = wait_ms,
    };
    char err[200] = "";
    broadcaster *b = broadcast_start(&c, err, sizeof err);
    if (!b) NOTE("broadcast_start: %s", err);
    return b;
}

static wsc_conn *subscribe(wsc_ctx *ws, broadcaster *b, const char *path)
{
    char err[200] = "";
    int status = 0;
    wsc_conn *c = wsc_connect(ws, HOST, broadcast_port(b), path, 5000, &status, err, sizeof err);
    if (!c) NOTE("connect %s: status %d, %s", path, status, err);
    return c;
}

static void wait_subscribers(broadcaster *b, size_t n)
{
    for (int i = 0; i < 500 && broadcast_subscriber_count(b) != n; i++) time_sleep_ms(10);
}

/* The next frame of type `type` (others skipped), NULL on timeout or close. */
static json_t *next_of(wsc_conn *c, const char *type, int timeout_ms)
{
    uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (time_mono_ns() < end) {
        size_t len;
        char *data = wsc_recv(c, (int)((end - time_mono_ns()) / 1000000ull) + 1, &len);
        if (!data) return NULL;
        json_t *j = json_loadb(data, len, 0, NULL);
        free(data);
        const char *t = json_string_value(json_object_get(j, "type"));
        if (t && strcmp(t, type) == 0) return j;
        json_decref(j);
    }
    return NULL;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Receives MESSAGE events first..last (step) in order; returns how many matched. */
static unsigned long long expect_range(wsc_conn *c, unsigned long long first,
                                       unsigned long long last, unsigned long long step,
                                       const char *who)
{
    unsigned long long got = 0;
    for (unsigned long long n = first; n <= last; n += step) {
        json_t *j = next_of(c, "MESSAGE", 5000);
        char want[SEQNUM_BUF];
        snprintf(want, sizeof want, "%llu", n);
        bool ok = j && strcmp(str(j, "sequenceNumber"), want) == 0;
        if (!ok)
            NOTE("%s: wanted %s, got %s", who, want, j ? str(j, "sequenceNumber") : "(nothing)");
        json_decref(j);
        if (!ok) break;
        got++;
    }
    return got;
}

/* ---- the checks ---- */

typedef struct {
    broadcaster *b;
    long room;
    unsigned long long first, count;
    atomic_ullong done;
    atomic_ullong refused;
} pub_job;

static void *publisher(void *arg)
{
    pub_job *j = arg;
    for (unsigned long long i = 0; i < j->count; i++) {
        if (!publish(j->b, j->room, j->first + i, CHAT_KIND_MESSAGE))
            atomic_fetch_add(&j->refused, 1);
        atomic_fetch_add(&j->done, 1);
    }
    return NULL;
}

static void test_publisher_blocks(wsc_ctx *ws)
{
    broadcaster *b = start(4, 5000, NULL);
    if (!b) return;
    wsc_conn *c = subscribe(ws, b, "/chat/1");
    wait_subscribers(b, 1);
    double waits = metric("chatflow_broadcast_publish_waits_total");
    double dropped = metric("chatflow_broadcast_events_dropped_total{kind=\"message\"}");
    CHECK(stall_service(), "blocks: the service thread is stalled");
    pub_job job = {.b = b, .room = 1, .first = 1000, .count = 20};
    pthread_t t;
    pthread_create(&t, NULL, publisher, &job);
    time_sleep_ms(400);
    unsigned long long done = atomic_load(&job.done);
    CHECK(done <= 4,
          "blocks: with the thread stalled the publisher got no further than the inbox (4): %llu",
          done);
    CHECK(metric("chatflow_broadcast_publish_waits_total") > waits, "blocks: the wait is counted");
    release_service();
    pthread_join(t, NULL);
    CHECK_INT(atomic_load(&job.refused), 0, "blocks: once released, no publish was refused");
    CHECK(c && expect_range(c, 1000, 1019, 1, "blocks") == 20,
          "blocks: all 20 events arrive once, in order");
    CHECK(metric("chatflow_broadcast_events_dropped_total{kind=\"message\"}") == dropped,
          "blocks: nothing counted as dropped");
    if (c) wsc_free(c);
    broadcast_stop(b);
}

static void test_load_tiny_inbox(wsc_ctx *ws)
{
    enum { SUBS = 40, N = 300 };
    broadcaster *b = start(2, 5000, NULL);
    if (!b) return;
    wsc_conn *subs[SUBS];
    bool all = true;
    for (int i = 0; i < SUBS; i++) all = (subs[i] = subscribe(ws, b, "/chat/2")) && all;
    wsc_conn *other = subscribe(ws, b, "/chat/3");
    wait_subscribers(b, SUBS + 1);
    CHECK(all && other, "load: 40 subscribers in room 2, one in room 3");
    double dropped = metric("chatflow_broadcast_events_dropped_total{kind=\"message\"}");
    pub_job j2 = {.b = b, .room = 2, .first = 5000, .count = N};
    pub_job j3 = {.b = b, .room = 3, .first = 9000, .count = N};
    pthread_t t2, t3;
    pthread_create(&t2, NULL, publisher, &j2);
    pthread_create(&t3, NULL, publisher, &j3);
    /* Read while publishing: the subscribers' socket buffers must not be what limits. */
    size_t complete = 0;
    for (int i = 0; all && i < SUBS; i++)
        complete += expect_range(subs[i], 5000, 5000 + N - 1, 1, "load") == N;
    bool other_ok = other && expect_range(other, 9000, 9000 + N - 1, 1, "load other") == N;
    pthread_join(t2, NULL);
    pthread_join(t3, NULL);
    CHECK_INT(atomic_load(&j2.refused) + atomic_load(&j3.refused), 0, "load: no publish refused");
    CHECK_INT(complete, SUBS, "load: each of the 40 subscribers got all 300 events in order");
    CHECK(other_ok, "load: the other room's subscriber got its 300 in order");
    CHECK(metric("chatflow_broadcast_events_dropped_total{kind=\"message\"}") == dropped,
          "load: nothing dropped");
    NOTE("load: %.0f publishes waited for room in the inbox so far",
         metric("chatflow_broadcast_publish_waits_total"));
    for (int i = 0; i < SUBS; i++)
        if (subs[i]) wsc_free(subs[i]);
    if (other) wsc_free(other);
    broadcast_stop(b);
}

static void test_forced_drop(wsc_ctx *ws)
{
    broadcaster *b = start(2, 200, NULL);
    if (!b) return;
    wsc_conn *live = subscribe(ws, b, "/chat/4");
    wsc_conn *bystander = subscribe(ws, b, "/chat/5");
    wait_subscribers(b, 2);
    for (unsigned long long n = 100; n <= 110; n += 10) publish(b, 4, n, CHAT_KIND_MESSAGE);
    CHECK(live && expect_range(live, 100, 110, 10, "drop: before") == 2, "drop: 100, 110 live");
    double d_msg = metric("chatflow_broadcast_events_dropped_total{kind=\"message\"}");
    double d_typ = metric("chatflow_broadcast_events_dropped_total{kind=\"typing\"}");
    double from_history = metric("chatflow_replay_requests_total{source=\"history\"}");

    CHECK(stall_service(), "drop: the service thread is stalled");
    bool a = publish(b, 4, 120, CHAT_KIND_MESSAGE), a2 = publish(b, 4, 130, CHAT_KIND_MESSAGE);
    CHECK(a && a2, "drop: 120 and 130 fill the inbox of 2");
    uint64_t t0 = time_mono_ns();
    bool lost1 = publish(b, 4, 140, CHAT_KIND_MESSAGE);
    double waited_ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(!lost1 && waited_ms >= 150 && waited_ms < 2000,
          "drop: 140 is refused after waiting about the 200 ms bound (%.0f ms)", waited_ms);
    t0 = time_mono_ns();
    bool lost2 = publish(b, 4, 150, CHAT_KIND_MESSAGE);
    bool lost_typing = publish(b, 4, 151, CHAT_KIND_TYPING);
    waited_ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(!lost2 && !lost_typing && waited_ms < 100,
          "drop: while nothing was drained since, the next ones do not wait again (%.0f ms)",
          waited_ms);
    CHECK(metric("chatflow_broadcast_events_dropped_total{kind=\"message\"}") == d_msg + 2,
          "drop: two messages counted as dropped");
    CHECK(metric("chatflow_broadcast_events_dropped_total{kind=\"typing\"}") == d_typ + 1,
          "drop: the typing event counted as dropped, by kind");
    release_service();
    publish(b, 4, 160, CHAT_KIND_MESSAGE);
    publish(b, 5, 10, CHAT_KIND_MESSAGE);

    CHECK(live && wsc_wait_closed(live, 5000), "drop: the room's subscriber is closed");
    if (live) {
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(live, &code, &reason);
        CHECK_INT(code, 4013, "drop: close code 4013 (try again)");
        CHECK(reason && strstr(reason, "events lost here") && strstr(reason, "since="),
              "drop: the reason says to reconnect with since= (\"%s\")", reason ? reason : "");
        wsc_free(live);
    }
    CHECK(bystander && expect_range(bystander, 10, 10, 1, "drop: other room") == 1 &&
              !wsc_is_closed(bystander),
          "drop: another room's subscriber is untouched");

    /* Reconnecting from the last event received: the lost ones come from the store. */
    wsc_conn *again = subscribe(ws, b, "/chat/4?since=110");
    CHECK(again && expect_range(again, 120, 160, 10, "drop: replay") == 5,
          "drop: since=110 replays 120..160 with the lost 140, 150: no gap, in order");
    CHECK(metric("chatflow_replay_requests_total{source=\"history\"}") == from_history + 1,
          "drop: that replay came from the store, not the cache");
    wsc_conn *above = subscribe(ws, b, "/chat/4?since=150");
    CHECK(above && expect_range(above, 160, 160, 10, "drop: above") == 1,
          "drop: since=150 (at the newest lost event) is served from the cache: 160");
    CHECK(metric("chatflow_replay_requests_total{source=\"history\"}") == from_history + 1,
          "drop: ... without asking the store");
    publish(b, 4, 170, CHAT_KIND_MESSAGE);
    CHECK(again && expect_range(again, 170, 170, 10, "drop: live after") == 1,
          "drop: then live again");
    if (again) wsc_free(again);
    if (above) wsc_free(above);
    if (bystander) wsc_free(bystander);
    broadcast_stop(b);
}

static bool send_read(wsc_conn *c, long room, const char *seq)
{
    char frame[160];
    int n = snprintf(frame, sizeof frame,
                     "{\"type\":\"READ\",\"roomId\":\"%ld\",\"sequenceNumber\":\"%s\"}", room, seq);
    return wsc_send_text(c, frame, (size_t)n);
}

static void test_read_frames(wsc_ctx *ws)
{
    presence *pr = presence_new(ROOMS, 100);
    broadcaster *b = pr ? start(0, 0, pr) : NULL;
    if (!b) {
        presence_free(pr);
        return;
    }
    wsc_conn *alice = subscribe(ws, b, "/chat/6?userId=42&username=alice");
    wsc_conn *bob = subscribe(ws, b, "/chat/6?userId=43&username=bob");
    wait_subscribers(b, 2);
    if (!alice || !bob) goto out;
    CHECK(send_read(alice, 6, "5"), "read: alice sends READ before the room had any message here");
    json_t *j = next_of(alice, "ERROR", 5000);
    CHECK(j && strcmp(str(j, "errorCode"), "VALIDATION_ERROR") == 0 &&
              strstr(str(j, "errorMessage"), "not known here yet"),
          "read: refused while the room's newest is unknown (%s)",
          j ? str(j, "errorMessage") : "none");
    json_decref(j);
    for (unsigned long long n = 1000; n < 1020; n++) publish(b, 6, n, CHAT_KIND_MESSAGE);
    CHECK(expect_range(alice, 1000, 1019, 1, "read: alice") == 20 &&
              expect_range(bob, 1000, 1019, 1, "read: bob") == 20,
          "read: 20 messages arrived");
    CHECK(send_read(alice, 6, "1020"), "read: alice sends READ beyond the newest (1019)");
    j = next_of(alice, "ERROR", 5000);
    CHECK(j && strstr(str(j, "errorMessage"), "beyond the room's newest message 1019"),
          "read: beyond the newest refused");
    json_decref(j);
    CHECK(send_read(alice, 6, "1000000000000000000000000000000000001019"),
          "read: alice sends a 40-digit READ");
    j = next_of(alice, "ERROR", 5000);
    CHECK(j && strncmp(str(j, "errorMessage"), "sequenceNumber", 14) == 0,
          "read: 40 digits refused (%s)", j ? str(j, "errorMessage") : "none");
    json_decref(j);
    time_sleep_ms(2200); /* the bucket refills (3 frames spent) */

    double limited = metric("chatflow_subscriber_frames_total{result=\"rate_limited\"}");
    char seq[SEQNUM_BUF];
    for (int i = 0; i < 15; i++) {
        snprintf(seq, sizeof seq, "%d", 1000 + i);
        send_read(alice, 6, seq);
    }
    int refused = 0;
    while ((j = next_of(alice, "ERROR", 1500))) {
        if (strcmp(str(j, "errorCode"), "RATE_LIMITED") == 0)
            refused++;
        else
            NOTE("read: unexpected ERROR %s", str(j, "errorMessage"));
        json_decref(j);
    }
    CHECK(refused >= 3 && refused <= 5,
          "read: a burst of 15 READs: the ones past the burst of 10 are refused "
          "RATE_LIMITED (%d)",
          refused);
    CHECK(metric("chatflow_subscriber_frames_total{result=\"rate_limited\"}") == limited + refused,
          "read: counted as rate_limited");
    /* bob sees at most a few announcements, increasing, the last the newest accepted position. */
    char last[SEQNUM_BUF] = "";
    int announced = 0;
    bool increasing = true;
    while ((j = next_of(bob, "READ", 2500))) {
        if (last[0] && seqnum_cmp(str(j, "sequenceNumber"), last) <= 0) increasing = false;
        snprintf(last, sizeof last, "%s", str(j, "sequenceNumber"));
        announced++;
        json_decref(j);
    }
    char want[SEQNUM_BUF] = "";
    presence_read_position(pr, "6", 42, want);
    CHECK(announced >= 1 && announced <= 3 && increasing,
          "read: %d accepted READs announced %d times (coalesced, increasing)", 15 - refused,
          announced);
    CHECK(want[0] && strcmp(last, want) == 0,
          "read: the last announcement is alice's newest position (%s, %s)", last, want);

    time_sleep_ms(2200); /* refill */
    CHECK(send_read(alice, 6, "00000000000000001019"), "read: alice sends the newest, zero-padded");
    j = next_of(bob, "READ", 3000);
    CHECK(j && strcmp(str(j, "sequenceNumber"), "00000000000000001019") == 0,
          "read: accepted and announced (compared as a number, not as text)");
    json_decref(j);
    j = next_of(alice, "ERROR", 300);
    CHECK(j == NULL, "read: no ERROR for it");
    json_decref(j);
out:
    if (alice) wsc_free(alice);
    if (bob) wsc_free(bob);
    broadcast_stop(b);
    presence_free(pr);
}

static void test_liveness(void)
{
    watchdog_reset();
    broadcaster *b = start(0, 0, NULL);
    if (!b) return;
    char detail[256];
    time_sleep_ms(300);
    CHECK(watchdog_check(detail, sizeof detail) && strstr(detail, "2 loops"),
          "liveness: the service loop and the replay worker are watched (%s)", detail);
    time_sleep_ms(11000); /* idle past the 10 s turn expectation */
    CHECK(watchdog_check(detail, sizeof detail),
          "liveness: an idle broadcaster stays live after 11 s (%s)", detail);
    broadcast_stop(b);
    CHECK(watchdog_check(detail, sizeof detail) && strstr(detail, "0 loops"),
          "liveness: stopped, its loops are no longer watched (%s)", detail);
}

int main(void)
{
    log_init("error", "text");
    if (pipe(stall_pipe) != 0) return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stall_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    wsc_ctx *ws = wsc_ctx_new();
    CHECK(ws != NULL, "WebSocket client context created");
    if (!ws) return TEST_DONE();
    test_publisher_blocks(ws);
    test_load_tiny_inbox(ws);
    test_forced_drop(ws);
    test_read_frames(ws);
    test_liveness();
    wsc_ctx_free(ws);
    metrics_reset();
    return TEST_DONE();
}
