/*
 * Integration test of the consumer's broadcaster over real sockets: the broadcaster runs
 * in-process on a free loopback port, subscribers are the project's WebSocket client
 * (test/lib/wsclient.h). The history store is an in-memory test double (the store is not what
 * is under test here; the consumer's PostgreSQL history has its own tests), whose "committed"
 * rows the test controls to create every replay situation.
 *
 * Checks: fan-out to 20 rooms x 3 subscribers (every event of its room once, in order, none of
 * other rooms); a subscriber that never reads is dropped with 4008 "slow subscriber: N frames
 * behind" and counted while the other subscriber of its room gets everything; since replay from
 * the cache, from history (merged with live events published during the replay), paged, with a
 * store that lags behind the cache, and with a failing store; refusals at the handshake (status
 * and body as a raw client sees them); the connection cap; keepalive hang-up of a client that
 * never answers pings; stop closes subscribers with 1001 "going away".
 */
/* test-passes: asan tsan */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "message.h"
#include "metrics.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_http.h"
#include "uuid.h"
#include "wsclient.h"
#include "../../consumer/broadcast.h"
#include "seqnum.h"

#define HOST "127.0.0.1"
#define ROOMS 20
#define MAX_COMMITTED 512

/* ---- the history store double ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char committed[ROOMS + 1][MAX_COMMITTED][SEQNUM_BUF];
    size_t n_committed[ROOMS + 1];
    bool failing[ROOMS + 1];
    bool gate_closed; /* while true, history calls wait (to publish during a replay) */
    int waiting;      /* history calls waiting at the gate */
    int calls;
} fake_store;

static fake_store store = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void make_msg(chat_message *m, long room, const char *seq, const char *text)
{
    memset(m, 0, sizeof *m);
    snprintf(m->user_id, sizeof m->user_id, "7");
    snprintf(m->username, sizeof m->username, "user7");
    snprintf(m->message, sizeof m->message, "%s", text ? text : seq);
    time_format_iso8601(time_wall_ms() - 5, m->timestamp);
    snprintf(m->message_type, sizeof m->message_type, "TEXT");
    uuid_v4(m->message_id);
    snprintf(m->room_id, sizeof m->room_id, "%ld", room);
    snprintf(m->server_id, sizeof m->server_id, "it-broadcast");
    snprintf(m->client_ip, sizeof m->client_ip, "127.0.0.1");
    time_format_iso8601(time_wall_ms(), m->received_at);
}

static void store_commit(long room, const char *seq)
{
    pthread_mutex_lock(&store.mu);
    if (store.n_committed[room] < MAX_COMMITTED)
        snprintf(store.committed[room][store.n_committed[room]++], SEQNUM_BUF, "%s", seq);
    pthread_mutex_unlock(&store.mu);
}

static void store_gate(bool closed)
{
    pthread_mutex_lock(&store.mu);
    store.gate_closed = closed;
    pthread_cond_broadcast(&store.cv);
    pthread_mutex_unlock(&store.mu);
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
    pthread_mutex_lock(&store.mu);
    store.calls++;
    store.waiting++;
    while (store.gate_closed) pthread_cond_wait(&store.cv, &store.mu);
    store.waiting--;
    if (store.failing[room]) {
        pthread_mutex_unlock(&store.mu);
        if (room == 10) /* a long reason of 2-byte characters: cut at a character boundary */
            for (size_t i = 0; i + 2 < err_len && i < 200; i += 2) memcpy(err + i, "\xC3\xA9", 3);
        else
            snprintf(err, err_len, "store is down (test)");
        return false;
    }
    size_t sent = 0;
    for (size_t i = 0; i < store.n_committed[room] && sent < limit; i++) {
        if (seqnum_cmp(store.committed[room][i], since_seq) <= 0) continue;
        broadcast_history_row row;
        make_msg(&row.msg, room, store.committed[room][i], NULL);
        snprintf(row.sequence_number, sizeof row.sequence_number, "%s", store.committed[room][i]);
        time_format_iso8601(time_wall_ms(), row.server_timestamp);
        emit(emit_ctx, &row);
        sent++;
    }
    pthread_mutex_unlock(&store.mu);
    return true;
}

/* ---- helpers ---- */

static double metric(const char *series)
{
    char *text = metrics_render();
    double v = tl_metric_sum(text, series, NULL);
    free(text);
    return v;
}

static broadcast_config base_config(void)
{
    broadcast_config c = {
        .bind_addr = HOST,
        .port = 0,
        .rooms_max = 100,
        .send_queue_max = 64,
        .cache_per_room = 16,
        .max_subscribers = 200,
        .ping_interval_s = 20,
        .pong_timeout_s = 5,
        .history = fake_history,
        .history_ctx = NULL,
    };
    return c;
}

static void publish(broadcaster *b, long room, const char *seq, const char *text)
{
    chat_message m;
    char ts[ISO8601_BUF];
    make_msg(&m, room, seq, text);
    time_format_iso8601(time_wall_ms(), ts);
    for (int tries = 0; !broadcast_publish(b, &m, seq, ts); tries++) {
        if (tries > 5000) {
            CHECK(0, "publish room %ld seq %s accepted by the hand-off queue", room, seq);
            return;
        }
        time_sleep_ms(1);
    }
}

static wsc_conn *subscribe(wsc_ctx *ws, int port, const char *path)
{
    char err[200] = "";
    int status = 0;
    wsc_conn *c = wsc_connect(ws, HOST, port, path, 5000, &status, err, sizeof err);
    if (!c) printf("# connect %s failed: status %d, %s\n", path, status, err);
    return c;
}

static void wait_subscribers(broadcaster *b, size_t n)
{
    for (int i = 0; i < 500 && broadcast_subscriber_count(b) != n; i++) time_sleep_ms(10);
}

/* Next BroadcastEvent: its room and sequence number; false on timeout/close/bad JSON. */
static bool recv_event(wsc_conn *c, int timeout_ms, long *room, char seq[SEQNUM_BUF], char *text,
                       size_t text_len)
{
    size_t len;
    char *data = wsc_recv(c, timeout_ms, &len);
    if (!data) return false;
    json_error_t jerr;
    json_t *o = json_loadb(data, len, 0, &jerr);
    free(data);
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *r = json_string_value(json_object_get(o, "roomId"));
    const char *s = json_string_value(json_object_get(o, "sequenceNumber"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    bool ok = o && type && strcmp(type, "MESSAGE") == 0 && r && s;
    if (ok) {
        *room = strtol(r, NULL, 10);
        snprintf(seq, SEQNUM_BUF, "%s", s);
        if (text) snprintf(text, text_len, "%s", msg ? msg : "");
    }
    json_decref(o);
    return ok;
}

/* Receives exactly the expected sequence numbers of room, in order. Returns how many matched
 * before the first mismatch (== n when all did). */
static size_t expect_seqs(wsc_conn *c, long room, char (*want)[SEQNUM_BUF], size_t n,
                          const char *who)
{
    for (size_t i = 0; i < n; i++) {
        long got_room;
        char got[SEQNUM_BUF];
        if (!recv_event(c, 5000, &got_room, got, NULL, 0)) {
            printf("# %s: event %zu (seq %s) did not arrive\n", who, i, want[i]);
            return i;
        }
        if (got_room != room || strcmp(got, want[i]) != 0) {
            printf("# %s: event %zu: got room %ld seq %s, want room %ld seq %s\n", who, i, got_room,
                   got, room, want[i]);
            return i;
        }
    }
    return n;
}

static bool nothing_more(wsc_conn *c, int wait_ms)
{
    size_t len;
    char *extra = wsc_recv(c, wait_ms, &len);
    if (extra) printf("# unexpected extra frame: %.200s\n", extra);
    free(extra);
    return extra == NULL;
}

static void seq_of(char out[SEQNUM_BUF], unsigned long long n)
{
    snprintf(out, SEQNUM_BUF, "%llu", n);
}

/* ---- raw client: what a plain HTTP/WebSocket client sees ---- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, HOST, &a.sin_addr);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool raw_send_upgrade(int fd, const char *path)
{
    char req[512];
    int n = snprintf(
        req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path);
    return write(fd, req, (size_t)n) == n;
}

/* The whole answer to an upgrade request (until the server closes); returns the status. */
static int raw_handshake(int port, const char *path, char *resp, size_t resp_len)
{
    resp[0] = '\0';
    int fd = raw_connect(port);
    if (fd < 0 || !raw_send_upgrade(fd, path)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t n;
    while (got + 1 < resp_len && (n = read(fd, resp + got, resp_len - 1 - got)) > 0)
        got += (size_t)n;
    resp[got] = '\0';
    close(fd);
    int status = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) status = -1;
    return status;
}

/* ---- the checks ---- */

static void test_refusals(broadcaster *b, wsc_ctx *ws)
{
    int port = broadcast_port(b);
    char resp[2048];
    int st = raw_handshake(port, "/chat/a.b", resp, sizeof resp);
    CHECK_INT(st, 404, "refusal: room 'a.b' answered with HTTP 404 at the handshake");
    CHECK(strstr(resp, "room 'a.b' is not a room id (1-64 characters of A-Z a-z 0-9 _ -)") != NULL,
          "refusal: the body names the rule");
    st = raw_handshake(port, "/chat/", resp, sizeof resp);
    CHECK_INT(st, 404, "refusal: an empty room id -> 404");
    st = raw_handshake(port,
                       "/chat/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                       resp, sizeof resp);
    CHECK_INT(st, 404, "refusal: a 65-character room id -> 404");
    st = raw_handshake(port, "/chat/a%20b", resp, sizeof resp);
    CHECK_INT(st, 404, "refusal: a room id with a space -> 404");
    st = raw_handshake(port, "/chat/team-alpha", resp, sizeof resp);
    CHECK_INT(st, 101, "a slug room id is upgraded (101)");
    st = raw_handshake(port, "/chat/3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b", resp, sizeof resp);
    CHECK_INT(st, 101, "a UUID room id is upgraded (101)");
    st = raw_handshake(port, "/chat/1000", resp, sizeof resp);
    CHECK_INT(st, 101, "room 1000 is upgraded (101): any room is served");
    st = raw_handshake(port, "/chat/3?since=abc", resp, sizeof resp);
    CHECK_INT(st, 400, "refusal: since=abc -> 400");
    CHECK(strstr(resp, "since 'abc' is not a sequence number") != NULL,
          "refusal: the body says why (since)");
    st = raw_handshake(port, "/chat/3?sinse=5", resp, sizeof resp);
    CHECK_INT(st, 400, "refusal: unknown query argument -> 400");
    st = raw_handshake(port, "/other", resp, sizeof resp);
    CHECK_INT(st, 404, "refusal: another path -> 404");
    st = raw_handshake(port, "/chat/3", resp, sizeof resp);
    CHECK_INT(st, 101, "refusal: a good path is upgraded (101)");

    int fd = raw_connect(port);
    const char *plain = "GET /chat/3 HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
    size_t got = 0;
    ssize_t n;
    if (fd >= 0 && write(fd, plain, strlen(plain)) == (ssize_t)strlen(plain))
        while (got + 1 < sizeof resp && (n = read(fd, resp + got, sizeof resp - 1 - got)) > 0) {
            got += (size_t)n;
            if (strstr(resp, "</html>")) break;
        }
    resp[got] = '\0';
    if (fd >= 0) close(fd);
    CHECK(strncmp(resp, "HTTP/1.1 400", 12) == 0 &&
              strstr(resp, "subscribe with a WebSocket upgrade"),
          "refusal: a plain HTTP request gets 400 and says to upgrade");

    int status = 0;
    char err[200];
    wsc_conn *c = wsc_connect(ws, HOST, port, "/chat/x~y", 3000, &status, err, sizeof err);
    CHECK(c == NULL, "refusal: the WebSocket client does not get a connection to room 'x~y'");
    CHECK_INT(status, 404, "refusal: the WebSocket client sees HTTP 404");
    if (c) wsc_free(c);
    wait_subscribers(b, 0);
    CHECK_INT(broadcast_subscriber_count(b), 0, "refusal: refused handshakes leave no subscriber");
}

static void test_fan_out(broadcaster *b, wsc_ctx *ws)
{
    enum { PER_ROOM = 3, EVENTS = 30 };
    int port = broadcast_port(b);
    wsc_conn *subs[ROOMS + 1][PER_ROOM];
    bool all_open = true;
    char path[64];
    for (long r = 1; r <= ROOMS; r++)
        for (int k = 0; k < PER_ROOM; k++) {
            snprintf(path, sizeof path, "/chat/%ld", r);
            subs[r][k] = subscribe(ws, port, path);
            all_open = all_open && subs[r][k];
        }
    CHECK(all_open, "fan-out: 20 rooms x 3 subscribers connected");
    if (!all_open) return;
    wait_subscribers(b, ROOMS * PER_ROOM);
    CHECK_INT(broadcast_subscriber_count(b), ROOMS * PER_ROOM,
              "fan-out: broadcaster counts 60 subscribers");

    /* Interleave the rooms; sequence numbers cross 99 -> 100 (numeric order). */
    static char want[ROOMS + 1][EVENTS][SEQNUM_BUF];
    unsigned long long next = 90;
    for (int i = 0; i < EVENTS; i++)
        for (long r = 1; r <= ROOMS; r++) {
            seq_of(want[r][i], next++);
            publish(b, r, want[r][i], NULL);
        }
    size_t complete = 0, silent_after = 0;
    for (long r = 1; r <= ROOMS; r++)
        for (int k = 0; k < PER_ROOM; k++) {
            char who[32];
            snprintf(who, sizeof who, "room %ld sub %d", r, k);
            if (expect_seqs(subs[r][k], r, want[r], EVENTS, who) == EVENTS) complete++;
        }
    for (long r = 1; r <= ROOMS; r++)
        for (int k = 0; k < PER_ROOM; k++)
            silent_after += nothing_more(subs[r][k], r == 1 && k == 0 ? 300 : 1);
    CHECK_INT(
        complete, ROOMS * PER_ROOM,
        "fan-out: each of 60 subscribers got its room's 30 events once, in order, no other room's");
    CHECK_INT(silent_after, ROOMS * PER_ROOM,
              "fan-out: nothing more (no duplicate, no other room)");

    /* A redelivered message (same or older sequence number) is not broadcast again. */
    publish(b, 4, want[4][EVENTS - 1], NULL);
    publish(b, 4, want[4][3], NULL);
    char newer[1][SEQNUM_BUF];
    seq_of(newer[0], next++);
    publish(b, 4, newer[0], NULL);
    CHECK_INT(expect_seqs(subs[4][0], 4, newer, 1, "room 4 after redelivery"), 1,
              "fan-out: redelivered sequence numbers are skipped; the next new one arrives");
    for (long r = 1; r <= ROOMS; r++)
        for (int k = 0; k < PER_ROOM; k++) wsc_free(subs[r][k]);
    wait_subscribers(b, 0);
    CHECK_INT(broadcast_subscriber_count(b), 0, "fan-out: closed subscribers are gone");
}

static void test_slow_subscriber(broadcaster *b, wsc_ctx *ws)
{
    int port = broadcast_port(b);
    wsc_conn *slow = subscribe(ws, port, "/chat/5");
    wsc_conn *good = subscribe(ws, port, "/chat/5");
    wsc_conn *other = subscribe(ws, port, "/chat/6");
    CHECK(slow && good && other, "slow: three subscribers connected");
    if (!slow || !good || !other) return;
    wait_subscribers(b, 3);
    wsc_set_reading(slow, false);

    /* 2,000-byte messages fill the socket buffers of the subscriber that does not read. */
    static char big[CHAT_TEXT_BUF];
    big[0] = '\0';
    for (int i = 0; i < 500; i++) strcat(big, "\xF0\x9F\x98\x80");
    double dropped_before = metric("chatflow_slow_subscribers_dropped_total");
    enum { CHUNK = 16, MAX_EVENTS = 40000 };
    static char want[MAX_EVENTS][SEQNUM_BUF];
    size_t published = 0, good_got = 0;
    bool good_in_order = true;
    while (published < MAX_EVENTS &&
           metric("chatflow_slow_subscribers_dropped_total") == dropped_before) {
        for (int i = 0; i < CHUNK; i++, published++) {
            seq_of(want[published], 5000000000000000000ULL + published);
            publish(b, 5, want[published], big);
        }
        while (good_got < published) {
            long room;
            char seq[SEQNUM_BUF];
            if (!recv_event(good, 5000, &room, seq, NULL, 0)) break;
            if (room != 5 || strcmp(seq, want[good_got]) != 0) good_in_order = false;
            good_got++;
        }
    }
    CHECK(metric("chatflow_slow_subscribers_dropped_total") == dropped_before + 1,
          "slow: the subscriber that never reads is dropped and counted (after %zu events)",
          published);
    /* The others keep receiving after the drop. */
    for (int i = 0; i < CHUNK; i++, published++) {
        seq_of(want[published], 5000000000000000000ULL + published);
        publish(b, 5, want[published], big);
    }
    char other_seq[1][SEQNUM_BUF];
    seq_of(other_seq[0], 100000); /* newer than the fan-out's */
    publish(b, 6, other_seq[0], NULL);
    while (good_got < published) {
        long room;
        char seq[SEQNUM_BUF];
        if (!recv_event(good, 5000, &room, seq, NULL, 0)) break;
        if (room != 5 || strcmp(seq, want[good_got]) != 0) good_in_order = false;
        good_got++;
    }
    CHECK(good_got == published && good_in_order,
          "slow: the reading subscriber of the same room got all %zu events in order (got %zu)",
          published, good_got);
    CHECK_INT(expect_seqs(other, 6, other_seq, 1, "room 6"), 1, "slow: another room is unaffected");
    CHECK(!wsc_is_closed(good) && !wsc_is_closed(other), "slow: the others stay connected");

    /* What the dropped client sees once it reads again: a prefix of the events, then the close. */
    wsc_set_reading(slow, true);
    size_t prefix = 0;
    bool prefix_in_order = true;
    for (;;) {
        long room;
        char seq[SEQNUM_BUF];
        if (!recv_event(slow, 5000, &room, seq, NULL, 0)) break;
        if (prefix >= published || strcmp(seq, want[prefix]) != 0) prefix_in_order = false;
        prefix++;
    }
    CHECK(prefix_in_order && prefix < published,
          "slow: the dropped subscriber got an in-order prefix (%zu of %zu events)", prefix,
          published);
    CHECK(wsc_wait_closed(slow, 5000), "slow: the dropped subscriber is closed");
    int code = 0;
    const char *reason = NULL;
    wsc_close_info(slow, &code, &reason);
    CHECK_INT(code, 4008, "slow: close code 4008");
    unsigned long behind = 0;
    CHECK(reason && sscanf(reason, "slow subscriber: %lu frames behind", &behind) == 1 &&
              behind > 64,
          "slow: close reason \"%s\"", reason ? reason : "(none)");
    wsc_free(slow);
    wsc_free(good);
    wsc_free(other);
    wait_subscribers(b, 0);
}

static void test_replay_from_cache(broadcaster *b, wsc_ctx *ws)
{
    enum { N = 12 };
    char want[N + 2][SEQNUM_BUF];
    double cache_before = metric("chatflow_replay_requests_total{source=\"cache\"}");
    double history_before = metric("chatflow_replay_requests_total{source=\"history\"}");
    /* Publishing is asynchronous: a live subscriber that has seen all events says they passed. */
    wsc_conn *marker = subscribe(ws, broadcast_port(b), "/chat/7");
    wait_subscribers(b, 1);
    for (int i = 0; i < N; i++) {
        seq_of(want[i], 7000 + (unsigned long long)i * 10);
        publish(b, 7, want[i], NULL);
    }
    CHECK(marker && expect_seqs(marker, 7, want, N, "marker") == N,
          "cache replay: 12 events published");
    char path[96];
    /* since = the 4th event: events 5..12 from the cache; since between two numbers works too. */
    snprintf(path, sizeof path, "/chat/7?since=%s", want[3]);
    wsc_conn *c = subscribe(ws, broadcast_port(b), path);
    snprintf(path, sizeof path, "/chat/7?since=%llu", 7000ULL + 3 * 10 + 5);
    wsc_conn *c2 = subscribe(ws, broadcast_port(b), path);
    CHECK(c && c2 && marker, "cache replay: subscribers connected");
    if (!c || !c2 || !marker) return;
    CHECK_INT(expect_seqs(c, 7, want + 4, N - 4, "cache replay"), N - 4,
              "cache replay: since=<4th> gives exactly events 5..12 in order");
    CHECK_INT(expect_seqs(c2, 7, want + 4, N - 4, "cache replay between"), N - 4,
              "cache replay: since between two sequence numbers gives the newer ones");
    seq_of(want[N], 9000);
    seq_of(want[N + 1], 10000);
    publish(b, 7, want[N], NULL);
    publish(b, 7, want[N + 1], NULL);
    CHECK_INT(expect_seqs(c, 7, want + N, 2, "cache replay live"), 2,
              "cache replay: then live events");
    CHECK(nothing_more(c, 200), "cache replay: no duplicate");
    double cache_after = metric("chatflow_replay_requests_total{source=\"cache\"}");
    CHECK(cache_after == cache_before + 2, "cache replay: counted as source=cache (%.0f -> %.0f)",
          cache_before, cache_after);
    CHECK(metric("chatflow_replay_requests_total{source=\"history\"}") == history_before,
          "cache replay: the store was not asked");
    wsc_free(c);
    wsc_free(c2);
    wsc_free(marker);
    wait_subscribers(b, 0);
}

static void test_replay_from_history(broadcaster *b, wsc_ctx *ws)
{
    /* Room 8: 40 events broadcast, 35 committed; the cache (16) keeps 25..40. */
    enum { N = 40, COMMITTED = 35, LIVE = 5 };
    char want[N + LIVE][SEQNUM_BUF];
    wsc_conn *marker = subscribe(ws, broadcast_port(b), "/chat/8");
    wait_subscribers(b, 1);
    for (int i = 0; i < N; i++) {
        seq_of(want[i], 18000000000000000000ULL + (unsigned long long)i);
        publish(b, 8, want[i], NULL);
        if (i < COMMITTED) store_commit(8, want[i]);
    }
    CHECK(marker && expect_seqs(marker, 8, want, N, "marker") == N,
          "history replay: 40 events published");
    if (marker) wsc_free(marker);
    wait_subscribers(b, 0);
    double history_before = metric("chatflow_replay_requests_total{source=\"history\"}");
    store_gate(true);
    char path[96];
    snprintf(path, sizeof path, "/chat/8?since=%s", want[2]);
    wsc_conn *c = subscribe(ws, broadcast_port(b), path);
    CHECK(c != NULL, "history replay: subscriber connected");
    if (!c) {
        store_gate(false);
        return;
    }
    /* While the store is answering, live events arrive. */
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&store.mu);
        int waiting = store.waiting;
        pthread_mutex_unlock(&store.mu);
        if (waiting) break;
        time_sleep_ms(10);
    }
    for (int i = N; i < N + LIVE; i++) {
        seq_of(want[i], 18000000000000000000ULL + (unsigned long long)i);
        publish(b, 8, want[i], NULL);
    }
    CHECK(nothing_more(c, 200), "history replay: nothing is sent before history answers");
    store_gate(false);
    CHECK_INT(
        expect_seqs(c, 8, want + 3, N + LIVE - 3, "history replay"), N + LIVE - 3,
        "history replay: events 4..45 exactly once in order (history, cache, live during replay)");
    CHECK(nothing_more(c, 200), "history replay: no duplicate after the merge");
    CHECK(metric("chatflow_replay_requests_total{source=\"history\"}") == history_before + 1,
          "history replay: counted as source=history");
    wsc_free(c);

    /* A failing store (the database busy or down): the subscriber is told to come back (4013, the
     * WebSocket form of a 503), and the store's own message — it may name hosts — stays in the log.
     */
    pthread_mutex_lock(&store.mu);
    store.failing[9] = true;
    pthread_mutex_unlock(&store.mu);
    /* The fan-out test left room 9's cache evicted beyond since=1: the store is asked. */
    wsc_conn *f = subscribe(ws, broadcast_port(b), "/chat/9?since=1");
    CHECK(f && wsc_wait_closed(f, 5000), "history failure: the subscriber is closed");
    if (f) {
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(f, &code, &reason);
        CHECK_INT(code, 4013, "history failure: close code 4013 (try again)");
        CHECK_STR(reason, "history unavailable; reconnect with since= shortly",
                  "history failure: a reason the client can act on, without the store's message");
        wsc_free(f);
    }
    wait_subscribers(b, 0);
}

/* A small queue makes history come in pages; a store behind the cache makes the replay wait. */
static void test_replay_paged_and_lagging(wsc_ctx *ws)
{
    broadcast_config cfg = base_config();
    cfg.send_queue_max = 8;
    cfg.cache_per_room = 4;
    char err[200];
    broadcaster *b = broadcast_start(&cfg, err, sizeof err);
    CHECK(b != NULL, "paged: second broadcaster started (%s)", b ? "ok" : err);
    if (!b) return;
    enum { N = 30, COMMITTED_FIRST = 20 };
    char want[N][SEQNUM_BUF];
    for (int i = 0; i < N; i++) {
        seq_of(want[i], 99990 + (unsigned long long)i); /* crosses 99999 -> 100000 */
        publish(b, 2, want[i], NULL);
        if (i < COMMITTED_FIRST) store_commit(2, want[i]);
    }
    pthread_mutex_lock(&store.mu);
    int calls_before = store.calls;
    pthread_mutex_unlock(&store.mu);
    /* Wait for the 30 events to pass the broadcaster (a live subscriber sees the last one). */
    char path[96];
    snprintf(path, sizeof path, "/chat/2?since=%s", want[N - 2]);
    wsc_conn *marker = subscribe(ws, broadcast_port(b), path);
    CHECK(marker && expect_seqs(marker, 2, want + N - 1, 1, "marker") == 1,
          "paged: events published");
    /* Cache holds 27..30 (evicted up to 26) but the store only has 1..20 committed. */
    wsc_conn *c = subscribe(ws, broadcast_port(b), "/chat/2?since=0");
    CHECK(c != NULL, "paged: replaying subscriber connected");
    if (c) {
        CHECK_INT(expect_seqs(c, 2, want, COMMITTED_FIRST, "paged"), COMMITTED_FIRST,
                  "paged: the 20 committed events arrive in pages of 8, in order");
        CHECK(nothing_more(c, 300), "paged: the replay waits while the store is behind the cache");
        for (int i = COMMITTED_FIRST; i < N; i++) store_commit(2, want[i]);
        CHECK_INT(expect_seqs(c, 2, want + COMMITTED_FIRST, N - COMMITTED_FIRST, "paged rest"),
                  N - COMMITTED_FIRST, "paged: once committed, the rest arrives with no gap");
        CHECK(nothing_more(c, 200), "paged: no duplicate");
        pthread_mutex_lock(&store.mu);
        int calls = store.calls - calls_before;
        pthread_mutex_unlock(&store.mu);
        CHECK(calls >= 4, "paged: the store was asked page by page (%d calls)", calls);
        wsc_free(c);
    }
    /* A store that never catches up with the cache: the replay gives up with a reason rather
     * than leave a gap (room 3: 10 events broadcast, cache keeps 4, nothing committed). */
    char r3[10][SEQNUM_BUF];
    wsc_conn *live3 = subscribe(ws, broadcast_port(b), "/chat/3");
    wait_subscribers(b, 3);
    for (int i = 0; i < 10; i++) {
        seq_of(r3[i], 500 + (unsigned long long)i);
        publish(b, 3, r3[i], NULL);
    }
    CHECK(live3 && expect_seqs(live3, 3, r3, 10, "room 3 live") == 10,
          "burst: 10 events fanned out at once to a reader with send_queue_max 8 all arrive (no "
          "drop)");
    wsc_conn *g = subscribe(ws, broadcast_port(b), "/chat/3?since=100");
    CHECK(g && wsc_wait_closed(g, 10000), "lagging store: the replay gives up");
    if (g) {
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(g, &code, &reason);
        CHECK_INT(code, 4013, "lagging store: close code 4013 (try again later)");
        CHECK_STR(reason,
                  "replay incomplete: history ends at 100, not stored up to 505 yet; reconnect",
                  "lagging store: the reason says where history ends");
        CHECK(nothing_more(g, 1), "lagging store: nothing with a gap was sent");
        wsc_free(g);
    }
    /* A replay that cannot finish while live events pile up is bounded too: more than
     * cache_per_room + send_queue_max (12) held frames drop it as slow. */
    double dropped_before = metric("chatflow_slow_subscribers_dropped_total");
    store_gate(true);
    wsc_conn *h = subscribe(ws, broadcast_port(b), "/chat/4?since=1");
    CHECK(h != NULL, "held: replaying subscriber connected");
    wait_subscribers(b, 3);
    char r4[13][SEQNUM_BUF];
    for (int i = 0; i < 13; i++) {
        seq_of(r4[i], 700 + (unsigned long long)i);
        publish(b, 4, r4[i], NULL);
    }
    if (h) {
        CHECK(wsc_wait_closed(h, 5000), "held: the replaying subscriber is closed");
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(h, &code, &reason);
        CHECK(code == 4008 && reason && strcmp(reason, "slow subscriber: 13 frames behind") == 0,
              "held: closed with 4008 \"%s\"", reason ? reason : "");
        wsc_free(h);
    }
    store_gate(false);
    CHECK(metric("chatflow_slow_subscribers_dropped_total") == dropped_before + 1,
          "held: counted as slow");
    if (live3) wsc_free(live3);
    if (marker) wsc_free(marker);
    broadcast_stop(b);
}

/* The room table holds at most rooms_max rooms: a room with subscribers is never forgotten (a new
 * room is refused meanwhile), an idle one makes place, and the room it was still works. */
static void test_room_table(wsc_ctx *ws)
{
    broadcast_config cfg = base_config();
    cfg.rooms_max = 2;
    char err[200];
    broadcaster *b = broadcast_start(&cfg, err, sizeof err);
    CHECK(b != NULL, "room table: broadcaster with rooms_max 2 started (%s)", b ? "ok" : err);
    if (!b) return;
    int port = broadcast_port(b);
    double forgotten = metric("chatflow_broadcast_rooms_forgotten_total");
    wsc_conn *one = subscribe(ws, port, "/chat/1");
    wsc_conn *two = subscribe(ws, port, "/chat/2");
    wait_subscribers(b, 2);
    char resp[2048];
    int st = raw_handshake(port, "/chat/3", resp, sizeof resp);
    CHECK_INT(st, 503,
              "room table: a third room is refused while both held rooms have subscribers");
    CHECK(strstr(resp, "CHATFLOW_ROOMS_MAX") != NULL, "room table: the body names the setting");
    if (one) wsc_free(one);
    wait_subscribers(b, 1);
    wsc_conn *three = subscribe(ws, port, "/chat/3");
    CHECK(three != NULL, "room table: once room 1 has no subscriber, room 3 takes its place");
    CHECK(metric("chatflow_broadcast_rooms_forgotten_total") >= forgotten + 1,
          "room table: the forgotten room is counted");
    char want[1][SEQNUM_BUF];
    seq_of(want[0], 7001);
    publish(b, 3, want[0], NULL);
    publish(b, 2, want[0], NULL);
    CHECK_INT(expect_seqs(three, 3, want, 1, "room 3"), 1,
              "room table: the new room gets its events");
    CHECK_INT(expect_seqs(two, 2, want, 1, "room 2"), 1,
              "room table: the kept room still gets its");
    if (two) wsc_free(two);
    if (three) wsc_free(three);
    broadcast_stop(b);
}

static void test_cap_and_keepalive(wsc_ctx *ws)
{
    broadcast_config cfg = base_config();
    cfg.max_subscribers = 2;
    cfg.ping_interval_s = 1;
    cfg.pong_timeout_s = 1;
    char err[200];
    broadcaster *b = broadcast_start(&cfg, err, sizeof err);
    CHECK(b != NULL, "cap: broadcaster with max_subscribers 2 started (%s)", b ? "ok" : err);
    if (!b) return;
    int port = broadcast_port(b);
    wsc_conn *a = subscribe(ws, port, "/chat/1");
    wsc_conn *c = subscribe(ws, port, "/chat/1");
    wait_subscribers(b, 2);
    char resp[2048];
    int st = raw_handshake(port, "/chat/1", resp, sizeof resp);
    CHECK_INT(st, 503, "cap: the third subscriber is refused with 503");
    CHECK(strstr(resp, "subscriber limit reached (2)") != NULL, "cap: the body says why");
    if (a) wsc_free(a);
    if (c) wsc_free(c);
    wait_subscribers(b, 0);

    /* A client that never answers pings is hung up after ping_interval + pong_timeout. */
    int fd = raw_connect(port);
    bool upgraded = fd >= 0 && raw_send_upgrade(fd, "/chat/1");
    uint64_t start = time_mono_ns();
    char buf[4096];
    ssize_t n;
    bool eof = false;
    while (upgraded && time_mono_ns() - start < 8000000000ULL) {
        n = read(fd, buf, sizeof buf);
        if (n == 0) {
            eof = true;
            break;
        }
        if (n < 0) continue; /* receive timeout; keep waiting */
    }
    double secs = (double)(time_mono_ns() - start) / 1e9;
    CHECK(eof && secs >= 1.0, "keepalive: a client that never answers pings is hung up (%.1f s)",
          secs);
    if (fd >= 0) close(fd);
    broadcast_stop(b);
}

static void *stop_thread(void *arg)
{
    broadcast_stop(arg);
    return NULL;
}

static void test_stop(broadcaster *b, wsc_ctx *ws)
{
    wsc_conn *c[3];
    c[0] = subscribe(ws, broadcast_port(b), "/chat/1");
    c[1] = subscribe(ws, broadcast_port(b), "/chat/10");
    c[2] = subscribe(ws, broadcast_port(b), "/chat/20?since=1");
    CHECK(c[0] && c[1] && c[2], "stop: three subscribers connected");
    wait_subscribers(b, 3);
    pthread_t t;
    pthread_create(&t, NULL, stop_thread, b);
    int closed_1001 = 0;
    for (int i = 0; i < 3; i++) {
        if (!c[i] || !wsc_wait_closed(c[i], 5000)) continue;
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(c[i], &code, &reason);
        if (code == 1001 && reason && strcmp(reason, "going away") == 0)
            closed_1001++;
        else
            printf("# stop: subscriber %d closed with %d \"%s\"\n", i, code, reason ? reason : "");
    }
    pthread_join(t, NULL);
    CHECK_INT(closed_1001, 3, "stop: every subscriber is closed with 1001 \"going away\"");
    for (int i = 0; i < 3; i++)
        if (c[i]) wsc_free(c[i]);
}

int main(void)
{
    log_init("warn", "text");
    wsc_ctx *ws = wsc_ctx_new();
    CHECK(ws != NULL, "WebSocket client context created");
    broadcast_config cfg = base_config();
    char err[200] = "";
    broadcaster *b = broadcast_start(&cfg, err, sizeof err);
    CHECK(b != NULL && broadcast_port(b) > 0, "broadcaster started on a free port (%s)",
          b ? "ok" : err);
    if (!b || !ws) return TEST_DONE();

    cfg.rooms_max = 0;
    CHECK(broadcast_start(&cfg, err, sizeof err) == NULL && strstr(err, "rooms_max"),
          "a room table of 0 rooms is refused: %s", err);

    test_refusals(b, ws);
    test_fan_out(b, ws);
    test_slow_subscriber(b, ws);
    test_replay_from_cache(b, ws);
    test_replay_from_history(b, ws);
    test_replay_paged_and_lagging(ws);
    test_cap_and_keepalive(ws);
    test_room_table(ws);
    test_stop(b, ws);
    wsc_ctx_free(ws);
    metrics_reset();
    return TEST_DONE();
}
