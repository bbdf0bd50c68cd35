/*
 * it_consumer_bus — the cluster bus (consumer/bus.h) against real processes: three consumers
 * (bus-a, bus-b, bus-c) competing for the same queue shards of one database, a private
 * redis-server (tl_redis.h), two producers, real fauxqs and PostgreSQL, all on loopback:
 *  1. fan-out: rooms 1, 20, 1000, a UUID and team-alpha with a subscriber on every consumer;
 *     messages through both producers: every subscriber receives every acked message of its room
 *     exactly once, in sequence order (so the three of a room in the same order), the room API of
 *     every consumer returns them, and the bus metrics moved (published on one node, delivered
 *     on at least two); a member's READ on one node reaches a member on another;
 *  2. redis-server killed (-9) under paced load and restarted on the same port a second later with
 *     its data lost: subscribers closed with 4013 resume with since=<last sequenceNumber received>,
 *     and in the end each received exactly the acked messages, in order — also in quiet rooms,
 * whose last message is sent while Redis is away and followed by nothing; /health/live stays 200 on
 *     every consumer and the "bus" readiness check is UP again;
 *  3. a consumer killed (-9) under paced load: its subscribers resume on another consumer with
 *     since=, with no gap and no duplicate; every acked message is stored exactly once;
 *  4. a rolling restart under paced load: each consumer in turn stopped with SIGTERM (exit 0 in
 *     time) and started again (on a thread: the load goes on meanwhile), the others carrying every
 *     room; its subscribers resume elsewhere or on it again with since=: every acked message
 *     reaches every subscriber once, in order, and is stored exactly once, and no acked message
 *     waits for its first delivery as long as the visibility timeout (no room left without a
 *     consumer that long);
 *  5. fauxqs restarted between two rounds of messages (its queues made again, numbering from 1)
 *     while PostgreSQL keeps its rows: every position after the restart sorts above every one
 *     before (queue_epoch.h), subscribers see each message once in order across it, each event
 *     carries its ack's position, the room API returns both rounds in order, since=<a position
 *     from before> replays exactly the second round and since=0 the whole room.
 * SQS is a private fauxqs (tl_stack.h), so part 5 restarts nobody else's.
 */
/* test-passes: asan */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_pg.h"
#include "tl_proc.h"
#include "tl_producer.h"
#include "tl_redis.h"
#include "tl_stack.h"
#include "uuid.h"
#include "wsclient.h"

#include "seqnum.h"

#define SHARDS 4
#define NODES 3
#define PRODUCERS 2
#define FAN_ROOMS 5
#define FAN_PER_ROOM 30
#define PACE_MS 20            /* one message every 20 ms under "load" */
#define ACK_WAIT_MS 30000     /* a producer answers within its publish deadline */
#define DELIVER_WAIT_MS 60000 /* a held SQS message comes back after the 5 s visibility timeout */
#define RESUME_ATTEMPTS 20
#define RESUMES_MAX 50 /* per subscriber: a resume loop would otherwise never end */

static tl_consumer_env env;
static tl_redis redis;
static tl_stack stack; /* a private fauxqs: part 5 restarts it */
static tl_consumer nodes[NODES];
static tl_producer prods[PRODUCERS];
static wsc_ctx *ws;
static const char *const node_ids[NODES] = {"bus-a", "bus-b", "bus-c"};
static size_t total_acked; /* over every part: what PostgreSQL must hold */

/* ---------------------------------------------------------------- event lists */

typedef struct {
    char id[UUID_STR_BUF];
    char seq[SEQNUM_BUF];
    uint64_t at_ns; /* when the test received it (an ack, or an event) */
} ev;

typedef struct {
    ev *v;
    size_t n, cap;
} ev_list;

static void ev_push(ev_list *l, const char *id, const char *seq)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        ev *grown = realloc(l->v, cap * sizeof *grown);
        if (!grown) abort(); /* a test cannot go on without its records */
        l->v = grown;
        l->cap = cap;
    }
    snprintf(l->v[l->n].id, sizeof l->v[l->n].id, "%s", id);
    snprintf(l->v[l->n].seq, sizeof l->v[l->n].seq, "%s", seq);
    l->v[l->n].at_ns = time_mono_ns();
    l->n++;
}

static int ev_by_seq(const void *a, const void *b)
{
    return seqnum_cmp(((const ev *)a)->seq, ((const ev *)b)->seq);
}

static bool ev_has(const ev_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].id, id) == 0) return true;
    return false;
}

/* ---------------------------------------------------------------- subscribers */

typedef struct {
    const char *room;
    int node; /* the consumer it is connected to now */
    wsc_conn *c;
    ev_list got;
    int closes_4013, closes_other, resumes;
    bool gave_up;
} sub;

/* Set while a node is being restarted by the roller thread (part 4), which then owns nodes[i]. */
static atomic_bool node_rolling[NODES];

static bool node_alive(int i) { return !atomic_load(&node_rolling[i]) && nodes[i].pid > 0; }

/* The consumer a subscriber of node `from` goes to: the same while it runs, else the next. */
static int resume_node(int from)
{
    for (int k = 0; k < NODES; k++)
        if (node_alive((from + k) % NODES)) return (from + k) % NODES;
    return -1;
}

static bool sub_open(sub *s, int node, const char *since)
{
    char path[256], err[256];
    int status = 0;
    if (since)
        snprintf(path, sizeof path, "/chat/%s?since=%s", s->room, since);
    else
        snprintf(path, sizeof path, "/chat/%s", s->room);
    s->node = node;
    s->c = wsc_connect(ws, "127.0.0.1", nodes[node].ws_port, path, 5000, &status, err, sizeof err);
    if (!s->c) NOTE("subscribe %s on %s: %s (HTTP %d)", path, node_ids[node], err, status);
    return s->c != NULL;
}

/* Records the MESSAGE events queued on the subscriber (anonymous: it gets nothing else). */
static void sub_drain(sub *s)
{
    for (char *text; s->c && (text = wsc_recv(s->c, 0, NULL));) {
        json_t *j = json_loads(text, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        const char *id = json_string_value(json_object_get(j, "messageId"));
        const char *seq = json_string_value(json_object_get(j, "sequenceNumber"));
        if (type && strcmp(type, "MESSAGE") == 0 && id && seq)
            ev_push(&s->got, id, seq);
        else
            NOTE("room %s on %s: unexpected frame %.200s", s->room, node_ids[s->node], text);
        json_decref(j);
        free(text);
    }
}

/* Reconnects with since=<last sequenceNumber received> (0: nothing yet, the whole room — every
 * room of this test is fresh), a bounded number of times: replayed events come first, then live
 * ones, so the list just goes on. */
static void sub_resume(sub *s)
{
    char since[SEQNUM_BUF];
    snprintf(since, sizeof since, "%s", s->got.n ? s->got.v[s->got.n - 1].seq : "0");
    for (int attempt = 0; attempt < RESUME_ATTEMPTS && s->resumes < RESUMES_MAX; attempt++) {
        int node = resume_node(s->node);
        if (node >= 0 && sub_open(s, node, since)) {
            s->resumes++;
            return;
        }
        wsc_service(ws, 250);
    }
    s->gave_up = true;
    NOTE("room %s: gave up resuming after %d resumes", s->room, s->resumes);
}

/* After its queue is drained: a closed subscriber is counted by close code and resumed. */
static void sub_check_closed(sub *s)
{
    if (!s->c || !wsc_is_closed(s->c)) return;
    int code = 0;
    const char *reason = NULL;
    wsc_close_info(s->c, &code, &reason);
    NOTE("room %s on %s closed %d \"%s\" after %zu events; resuming", s->room, node_ids[s->node],
         code, reason ? reason : "", s->got.n);
    if (code == 4013)
        s->closes_4013++;
    else
        s->closes_other++;
    wsc_free(s->c);
    s->c = NULL;
    sub_resume(s);
}

static void sub_free(sub *s)
{
    if (s->c) wsc_free(s->c);
    s->c = NULL;
    free(s->got.v);
    s->got.v = NULL;
}

/* ---------------------------------------------------------------- senders */

/* One room's traffic: a connection on each producer, acks recorded. */
typedef struct {
    const char *room;
    wsc_conn *conn[PRODUCERS];
    int pending[PRODUCERS]; /* frames sent and not answered yet */
    int sent, errors;
    ev_list acked;
} room_tx;

static bool tx_open(room_tx *t)
{
    for (int p = 0; p < PRODUCERS; p++)
        if (!(t->conn[p] = tl_producer_open_room(ws, &prods[p], t->room, NULL))) return false;
    return true;
}

static bool tx_send(room_tx *t, int p)
{
    char text[96];
    snprintf(text, sizeof text, "bus %s #%d via producer %d", t->room, t->sent, p + 1);
    char *frame = tl_frame(1 + t->sent % 50, text, NULL);
    bool ok = frame && t->conn[p] && tl_ws_send_str(t->conn[p], frame);
    free(frame);
    if (ok) {
        t->pending[p]++;
        t->sent++;
    }
    return ok;
}

static void tx_take_ack(room_tx *t, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    const char *status = json_string_value(json_object_get(j, "status"));
    const char *id = json_string_value(json_object_get(j, "messageId"));
    const char *seq = json_string_value(json_object_get(j, "sequenceNumber"));
    if (status && strcmp(status, "SUCCESS") == 0 && id && seq) {
        ev_push(&t->acked, id, seq);
    } else {
        t->errors++;
        NOTE("room %s: answer %.200s", t->room, text);
    }
    json_decref(j);
}

static void tx_drain(room_tx *t)
{
    for (int p = 0; p < PRODUCERS; p++)
        for (char *text; t->conn[p] && (text = wsc_recv(t->conn[p], 0, NULL));) {
            tx_take_ack(t, text);
            t->pending[p]--;
            free(text);
        }
}

static int tx_pending(const room_tx *t)
{
    int n = 0;
    for (int p = 0; p < PRODUCERS; p++) n += t->pending[p];
    return n;
}

static void tx_free(room_tx *t)
{
    for (int p = 0; p < PRODUCERS; p++)
        if (t->conn[p]) wsc_free(t->conn[p]);
    free(t->acked.v);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- one part's world */

typedef struct {
    room_tx *tx;
    size_t ntx;
    size_t paced; /* the paced load goes to tx[0..paced) (0: every room); the others are quiet */
    sub *subs;
    size_t nsubs;
} world;

/* Services every socket once (at most ms), then takes what arrived. */
static void pump(world *w, int ms)
{
    wsc_service(ws, ms);
    for (size_t i = 0; i < w->ntx; i++) tx_drain(&w->tx[i]);
    for (size_t i = 0; i < w->nsubs; i++) {
        sub_drain(&w->subs[i]);
        sub_check_closed(&w->subs[i]);
    }
}

static room_tx *tx_of(world *w, const char *room)
{
    for (size_t i = 0; i < w->ntx; i++)
        if (strcmp(w->tx[i].room, room) == 0) return &w->tx[i];
    return NULL;
}

/* Rooms rooms[0..n), a sender on both producers and a subscriber on every consumer each. */
static bool world_open(world *w, const char *const *rooms, size_t n)
{
    w->tx = calloc(n, sizeof *w->tx);
    w->subs = calloc(n * NODES, sizeof *w->subs);
    if (!w->tx || !w->subs) return false;
    w->ntx = n;
    w->nsubs = n * NODES;
    bool ok = true;
    for (size_t r = 0; r < n; r++) {
        w->tx[r].room = rooms[r];
        ok = tx_open(&w->tx[r]) && ok;
        for (int k = 0; k < NODES; k++) {
            sub *s = &w->subs[r * NODES + (size_t)k];
            s->room = rooms[r];
            ok = sub_open(s, k, NULL) && ok;
        }
    }
    return ok;
}

static void world_free(world *w)
{
    for (size_t i = 0; i < w->ntx; i++) tx_free(&w->tx[i]);
    for (size_t i = 0; i < w->nsubs; i++) sub_free(&w->subs[i]);
    free(w->tx);
    free(w->subs);
    memset(w, 0, sizeof *w);
}

static int world_pending(const world *w)
{
    int n = 0;
    for (size_t i = 0; i < w->ntx; i++) n += tx_pending(&w->tx[i]);
    return n;
}

/* Every sent frame answered (ACK_WAIT_MS); then each room's acks in sequence order. */
/* Until every frame sent is answered (ACK_WAIT_MS). */
static bool world_wait_answers(world *w)
{
    uint64_t until = time_mono_ns() + (uint64_t)ACK_WAIT_MS * 1000000ull;
    while (world_pending(w) > 0 && time_mono_ns() < until) pump(w, 20);
    return world_pending(w) == 0;
}

/* Once a part's sending is over: answers in, each room's acks in sequence order, counted. */
static bool world_wait_acks(world *w)
{
    bool answered = world_wait_answers(w);
    for (size_t i = 0; i < w->ntx; i++) {
        room_tx *t = &w->tx[i];
        qsort(t->acked.v, t->acked.n, sizeof *t->acked.v, ev_by_seq);
        total_acked += t->acked.n;
    }
    return answered;
}

static bool world_delivered(world *w)
{
    for (size_t i = 0; i < w->nsubs; i++) {
        sub *s = &w->subs[i];
        if (!s->gave_up && s->got.n < tx_of(w, s->room)->acked.n) return false;
    }
    return true;
}

/* Until every subscriber has as many events as its room has acks (DELIVER_WAIT_MS), then one
 * more second: a late duplicate is then seen too. */
static void world_wait_delivered(world *w)
{
    uint64_t until = time_mono_ns() + (uint64_t)DELIVER_WAIT_MS * 1000000ull;
    while (!world_delivered(w) && time_mono_ns() < until) pump(w, 50);
    for (int i = 0; i < 20; i++) pump(w, 50);
}

/* ---------------------------------------------------------------- the checks */

/* got against the room's acks in sequence order; false with the first difference in why. */
static bool same_events(const ev_list *got, const ev_list *want, char *why, size_t len)
{
    size_t missing = 0, extra = 0, dups = 0, back = 0;
    for (size_t i = 0; i < want->n; i++) missing += !ev_has(got, want->v[i].id);
    for (size_t i = 0; i < got->n; i++) {
        extra += !ev_has(want, got->v[i].id);
        for (size_t k = 0; k < i; k++) dups += strcmp(got->v[k].id, got->v[i].id) == 0;
        back += i > 0 && seqnum_cmp(got->v[i - 1].seq, got->v[i].seq) >= 0;
    }
    size_t first = 0;
    while (first < got->n && first < want->n && strcmp(got->v[first].id, want->v[first].id) == 0)
        first++;
    bool same = first == got->n && first == want->n;
    snprintf(why, len,
             "got %zu want %zu: %zu missing, %zu not acked, %zu duplicates, %zu out of order; "
             "first difference at %zu (got seq %s, want seq %s)",
             got->n, want->n, missing, extra, dups, back, first,
             first < got->n ? got->v[first].seq : "-", first < want->n ? want->v[first].seq : "-");
    return same;
}

static void check_subscribers(world *w, const char *part)
{
    for (size_t i = 0; i < w->nsubs; i++) {
        sub *s = &w->subs[i];
        char why[400];
        bool same = same_events(&s->got, &tx_of(w, s->room)->acked, why, sizeof why);
        CHECK(same && !s->gave_up,
              "%s: room %s, subscriber of %s: every acked message once, in sequence order (%zu, "
              "%d resumes)",
              part, s->room, node_ids[i % NODES], s->got.n, s->resumes);
        if (!same) {
            NOTE("  %s", why);
            char around[1200] = "";
            size_t used = 0;
            for (size_t k = s->got.n > 70 ? 60 : 0; k < s->got.n && k < 75 && used < sizeof around;
                 k++)
                used += (size_t)snprintf(around + used, sizeof around - used, "%s ",
                                         s->got.v[k].seq + strspn(s->got.v[k].seq, "0"));
            NOTE("  received (from #%d): %s", s->got.n > 70 ? 60 : 0, around);
        }
    }
}

static void check_acked(world *w, const char *part)
{
    for (size_t i = 0; i < w->ntx; i++) {
        room_tx *t = &w->tx[i];
        CHECK(t->errors == 0 && (int)t->acked.n == t->sent,
              "%s: room %s: all %d messages acked (%zu acks, %d errors)", part, t->room, t->sent,
              t->acked.n, t->errors);
    }
}

static double node_metric(int i, const char *name, const char *filter)
{
    return node_alive(i) ? tl_metric(nodes[i].admin_port, name, filter) : -1;
}

static void note_bus_metrics(const char *when)
{
    for (int i = 0; i < NODES; i++)
        if (node_alive(i))
            NOTE("%s %s: published %.0f, delivered %.0f, own %.0f, duplicate %.0f, gaps stream "
                 "%.0f lost %.0f",
                 when, node_ids[i], node_metric(i, "chatflow_bus_published_total", NULL),
                 node_metric(i, "chatflow_bus_received_total", "result=\"delivered\""),
                 node_metric(i, "chatflow_bus_received_total", "result=\"own\""),
                 node_metric(i, "chatflow_bus_received_total", "result=\"duplicate\""),
                 node_metric(i, "chatflow_bus_gaps_total", "recovered=\"stream\""),
                 node_metric(i, "chatflow_bus_gaps_total", "recovered=\"lost\""));
}

/* The "bus" check of /health/ready: its status ("UP", "DOWN"; "" without an answer or check). */
static void bus_readiness(int i, char *out, size_t len)
{
    long st = 0;
    char *body = tl_http_get(nodes[i].admin_port, "/health/ready", &st);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    json_t *bus = json_object_get(json_object_get(j, "checks"), "bus");
    const char *status = json_string_value(json_object_get(bus, "status"));
    snprintf(out, len, "%s", status ? status : "");
    json_decref(j);
    free(body);
}

static bool wait_bus_up(int i, int timeout_ms)
{
    char status[16];
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    bus_readiness(i, status, sizeof status);
    while (strcmp(status, "UP") != 0 && time_mono_ns() < until) {
        time_sleep_ms(200);
        bus_readiness(i, status, sizeof status);
    }
    return strcmp(status, "UP") == 0;
}

/* ---------------------------------------------------------------- start-up */

static bool start_redis(void)
{
    return tl_redis_start(&redis, env.log_dir) && tl_redis_ping(redis.port, 1000);
}

static bool start_node(int i)
{
    static char url[NODES][128], id[NODES][64];
    snprintf(url[i], sizeof url[i], "CHATFLOW_REDIS_URL=%s", tl_redis_url(&redis));
    snprintf(id[i], sizeof id[i], "CHATFLOW_SERVER_ID=%s", node_ids[i]);
    const char *extra[] = {url[i],
                           id[i],
                           "CHATFLOW_REDIS_PREFIX=itbus",
                           "CHATFLOW_VISIBILITY_TIMEOUT_S=5", /* a killed node's messages return */
                           "CHATFLOW_STOP_TIMEOUT_S=10",
                           NULL};
    char log[32];
    snprintf(log, sizeof log, "consumer-%s", node_ids[i]);
    return tl_consumer_start(&env, &nodes[i], log, extra) &&
           tl_http_wait_status(nodes[i].admin_port, "/health/ready", 200, 30000);
}

static bool start_producer(int p)
{
    static char prefix[PRODUCERS][128], dlq[PRODUCERS][160], id[PRODUCERS][64], shards[32];
    char log[700];
    snprintf(shards, sizeof shards, "CHATFLOW_QUEUE_SHARDS=%d", SHARDS); /* the consumers' too */
    snprintf(prefix[p], sizeof prefix[p], "CHATFLOW_QUEUE_PREFIX=%s", env.q.prefix);
    snprintf(dlq[p], sizeof dlq[p], "CHATFLOW_DLQ_NAME=%s", env.dlq_name);
    snprintf(id[p], sizeof id[p], "CHATFLOW_SERVER_ID=bus-producer-%d", p + 1);
    snprintf(log, sizeof log, "%s/producer-%d.log", env.log_dir, p + 1);
    const char *penv[] = {prefix[p],
                          dlq[p],
                          id[p],
                          shards,
                          "CHATFLOW_RATE_LIMIT_PER_MINUTE=0", /* off: the test's own pace */
                          NULL};
    return tl_producer_start(&prods[p], log, penv) &&
           tl_http_wait_status(prods[p].admin_port, "/health/ready", 200, 30000);
}

static bool start_all(void)
{
    if (!start_redis()) {
        CHECK(false, "redis-server started on a free port (log %s)", redis.log_path);
        return false;
    }
    CHECK(true, "redis-server started on port %d", redis.port);
    bool ok = true;
    for (int i = 0; i < NODES; i++) {
        bool up = start_node(i);
        CHECK(up, "consumer %s started with the bus on and ready", node_ids[i]);
        ok = ok && up;
    }
    for (int p = 0; p < PRODUCERS && ok; p++) {
        bool up = start_producer(p);
        CHECK(up, "producer %d started and ready", p + 1);
        ok = ok && up;
    }
    return ok;
}

/* ---------------------------------------------------------------- 1. fan-out */

static const char *const fan_rooms[FAN_ROOMS] = {
    "1", "20", "1000", "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", "team-alpha"};

/* The room API of node i returns the room's acked messages, oldest first. */
static void check_room_api(int i, const room_tx *t)
{
    char path[160];
    long st = 0;
    snprintf(path, sizeof path, "/api/rooms/%s/messages?limit=100", t->room);
    char *body = tl_http("GET", nodes[i].admin_port, path, &st);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    json_t *ms = json_object_get(j, "messages");
    ev_list got = {0};
    for (size_t k = 0; k < json_array_size(ms); k++) {
        json_t *m = json_array_get(ms, k);
        const char *id = json_string_value(json_object_get(m, "messageId"));
        const char *seq = json_string_value(json_object_get(m, "sequenceNumber"));
        ev_push(&got, id ? id : "", seq ? seq : "0");
    }
    char why[400];
    bool same = st == 200 && same_events(&got, &t->acked, why, sizeof why);
    const char *source = json_string_value(json_object_get(j, "source"));
    CHECK(same, "GET /api/rooms/%s/messages on %s: the %zu acked messages in order (HTTP %ld, %s)",
          t->room, node_ids[i], t->acked.n, st, source ? source : "no source");
    if (!same && st == 200) NOTE("  %s", why);
    free(got.v);
    json_decref(j);
    free(body);
}

static long long stored_of(world *w)
{
    char sql[600];
    size_t off =
        (size_t)snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id IN (");
    for (size_t i = 0; i < w->ntx && off < sizeof sql; i++)
        off += (size_t)snprintf(sql + off, sizeof sql - off, "%s'%s'", i ? "," : "", w->tx[i].room);
    if (off < sizeof sql) snprintf(sql + off, sizeof sql - off, ")");
    return tl_pg_scalar(env.pg, sql);
}

static void check_fanout_metrics(void)
{
    int publishing = 0, delivering = 0;
    for (int i = 0; i < NODES; i++) {
        publishing += node_metric(i, "chatflow_bus_published_total", NULL) > 0;
        delivering += node_metric(i, "chatflow_bus_received_total", "result=\"delivered\"") > 0;
    }
    note_bus_metrics("after the fan-out:");
    CHECK(publishing >= 1, "chatflow_bus_published_total > 0 on %d node(s)", publishing);
    CHECK(delivering >= 2, "chatflow_bus_received_total{result=\"delivered\"} > 0 on %d nodes",
          delivering);
}

/* A member's READ on one node reaches a member of the room on another node (the bus relays
 * member events): read receipts do not depend on which node a reader is connected to. */
static void check_read_relay(const char *room, const char *seq)
{
    char path_a[160], path_b[160], err[256];
    snprintf(path_a, sizeof path_a, "/chat/%s?userId=101&username=alice", room);
    snprintf(path_b, sizeof path_b, "/chat/%s?userId=102&username=bob", room);
    int st = 0;
    wsc_conn *alice =
        wsc_connect(ws, "127.0.0.1", nodes[0].ws_port, path_a, 5000, &st, err, sizeof err);
    wsc_conn *bob =
        wsc_connect(ws, "127.0.0.1", nodes[1].ws_port, path_b, 5000, &st, err, sizeof err);
    CHECK(alice && bob, "members alice on %s and bob on %s of room %s", node_ids[0], node_ids[1],
          room);
    char frame[300];
    snprintf(frame, sizeof frame, "{\"type\":\"READ\",\"roomId\":\"%s\",\"sequenceNumber\":\"%s\"}",
             room, seq);
    bool sent = alice && bob && tl_ws_send_str(alice, frame);
    bool seen = false;
    uint64_t until = time_mono_ns() + 10000ull * 1000000ull;
    while (sent && !seen && time_mono_ns() < until) {
        wsc_service(ws, 50);
        for (char *text; !seen && (text = wsc_recv(bob, 0, NULL));) {
            json_t *j = json_loads(text, 0, NULL);
            const char *type = json_string_value(json_object_get(j, "type"));
            const char *user = json_string_value(json_object_get(j, "userId"));
            const char *at = json_string_value(json_object_get(j, "sequenceNumber"));
            seen = type && user && at && strcmp(type, "READ") == 0 && strcmp(user, "101") == 0 &&
                   strcmp(at, seq) == 0;
            json_decref(j);
            free(text);
        }
        for (char *text; alice && (text = wsc_recv(alice, 0, NULL));) free(text);
    }
    CHECK(seen, "alice's READ on %s reaches bob on %s through the bus", node_ids[0], node_ids[1]);
    /* Redis delivers to the subscribers before it answers the publisher, so bob may have the READ
     * before bus-a has counted its PUBLISH: wait (bounded) for the counters. */
    bool counted = false;
    for (int i = 0; i < 50 && !counted; i++) {
        counted = node_metric(0, "chatflow_bus_member_events_total", "result=\"published\"") >= 1 &&
                  node_metric(1, "chatflow_bus_member_events_total", "result=\"received\"") >= 1;
        if (!counted) time_sleep_ms(100);
    }
    CHECK(counted, "chatflow_bus_member_events_total: published on %s, received on %s", node_ids[0],
          node_ids[1]);
    if (alice) wsc_free(alice);
    if (bob) wsc_free(bob);
}

static void test_fanout(void)
{
    world w = {0};
    CHECK(world_open(&w, fan_rooms, FAN_ROOMS),
          "fan-out: a sender on both producers and a subscriber on every consumer for %d rooms",
          FAN_ROOMS);
    for (int i = 0; i < FAN_PER_ROOM; i++) /* alternating the producers, pipelined */
        for (size_t r = 0; r < w.ntx; r++) tx_send(&w.tx[r], i % PRODUCERS);
    CHECK(world_wait_acks(&w), "fan-out: every frame answered");
    check_acked(&w, "fan-out");
    world_wait_delivered(&w);
    check_subscribers(&w, "fan-out");
    long long want = FAN_ROOMS * FAN_PER_ROOM, stored = stored_of(&w);
    for (int i = 0; i < 600 && stored != want; i++) { /* 60 s: the batch writers commit */
        time_sleep_ms(100);
        stored = stored_of(&w);
    }
    CHECK_INT(stored, want, "fan-out: all %lld messages stored", want);
    for (size_t r = 0; r < w.ntx; r++) check_room_api((int)(r % NODES), &w.tx[r]);
    for (int i = 0; i < NODES; i++) check_room_api(i, &w.tx[FAN_ROOMS - 1]);
    check_fanout_metrics();
    const ev_list *acked = &w.tx[FAN_ROOMS - 1].acked; /* in sequence order */
    if (acked->n) check_read_relay(w.tx[FAN_ROOMS - 1].room, acked->v[acked->n - 1].seq);
    world_free(&w);
}

/* ---------------------------------------------------------------- paced load */

/* What happens at a given time of a paced run (the fault). */
typedef void (*load_event_fn)(uint64_t elapsed_ms, void *ctx);

typedef struct {
    int probes, live_bad;
} live_probe;

/* /health/live of every running consumer: it must stay 200 whatever the bus's state. */
static void probe_live(live_probe *lp)
{
    for (int i = 0; i < NODES; i++) {
        if (!node_alive(i)) continue;
        long st = tl_http_status(nodes[i].admin_port, "/health/live");
        lp->probes++;
        if (st != 200) {
            lp->live_bad++;
            NOTE("%s /health/live answered %ld", node_ids[i], st);
        }
    }
}

/* Sends one message every PACE_MS for run_ms, alternating the rooms and the producers, while the
 * subscribers are serviced (and resumed) and `event` runs; /health/live probed every 500 ms. */
static void paced_run(world *w, int run_ms, load_event_fn event, void *ctx, live_probe *lp)
{
    uint64_t t0 = time_mono_ns(), next_send = 0, next_probe = 0;
    int rooms = (int)(w->paced ? w->paced : w->ntx);
    for (int k = 0;;) {
        uint64_t elapsed = (time_mono_ns() - t0) / 1000000ull;
        if (elapsed >= (uint64_t)run_ms) break;
        if (event) event(elapsed, ctx);
        if (elapsed >= next_send) {
            tx_send(&w->tx[k % rooms], (k / rooms) % PRODUCERS);
            k++;
            next_send = elapsed + PACE_MS;
        }
        if (lp && elapsed >= next_probe) {
            probe_live(lp);
            next_probe = elapsed + 500;
        }
        pump(w, 5);
    }
}

static int closes_4013(const world *w)
{
    int n = 0;
    for (size_t i = 0; i < w->nsubs; i++) n += w->subs[i].closes_4013;
    return n;
}

static int closes_other(const world *w)
{
    int n = 0;
    for (size_t i = 0; i < w->nsubs; i++) n += w->subs[i].closes_other;
    return n;
}

/* ---------------------------------------------------------------- 2. Redis restarted */

#define REDIS_KILL_AT_MS 3000
#define REDIS_DOWN_MS 1000
#define REDIS_RUN_MS 8000

#define QUIET_ROOMS 3

typedef struct {
    world *w;
    bool killed, restarted, restart_ok;
    int quiet_sent; /* messages sent to each quiet room so far */
    int ready_down; /* nodes seen with the bus check not UP while Redis was away */
} redis_fault;

/* The quiet rooms get one message at the start (so every node knows them in Redis's first
 * epoch) and one while Redis is away, then nothing: no later event of theirs can make up for a
 * loss the bus noticed but did not act on when it caught up after reconnecting. */
static void send_quiet(redis_fault *f, uint64_t elapsed_ms)
{
    bool due = f->quiet_sent == 0 ||
               (f->quiet_sent == 1 && elapsed_ms >= REDIS_KILL_AT_MS + REDIS_DOWN_MS / 2);
    if (!due) return;
    for (size_t i = f->w->paced; i < f->w->ntx; i++) tx_send(&f->w->tx[i], 0);
    f->quiet_sent++;
}

static void note_readiness_during_outage(redis_fault *f)
{
    for (int i = 0; i < NODES; i++) {
        char status[16];
        bus_readiness(i, status, sizeof status);
        f->ready_down += strcmp(status, "UP") != 0;
    }
}

static void redis_fault_event(uint64_t elapsed_ms, void *ctx)
{
    redis_fault *f = ctx;
    send_quiet(f, elapsed_ms);
    if (!f->killed && elapsed_ms >= REDIS_KILL_AT_MS) {
        tl_redis_kill(&redis);
        f->killed = true;
        NOTE("redis-server killed (-9) at %llu ms", (unsigned long long)elapsed_ms);
    }
    if (f->killed && !f->restarted && elapsed_ms >= REDIS_KILL_AT_MS + REDIS_DOWN_MS) {
        note_readiness_during_outage(f);
        f->restart_ok = tl_redis_restart(&redis);
        f->restarted = true;
        NOTE("redis-server restarted on port %d at %llu ms", redis.port,
             (unsigned long long)elapsed_ms);
    }
}

/* Where Redis's new epoch stands for each room (evidence for a failure: an event published there
 * that some node never delivered). */
static void note_redis_rooms(world *w)
{
    for (size_t i = 0; i < w->ntx; i++) {
        char cmd[200], epoch[64], offset[64];
        snprintf(cmd, sizeof cmd, "HGET itbus:meta:%s e", w->tx[i].room);
        tl_redis_call(redis.port, cmd, epoch, sizeof epoch, 1000);
        snprintf(cmd, sizeof cmd, "HGET itbus:meta:%s o", w->tx[i].room);
        tl_redis_call(redis.port, cmd, offset, sizeof offset, 1000);
        NOTE("restarted redis-server: itbus:meta:%s e=%s o=%s (%zu acked, %s)", w->tx[i].room,
             epoch, offset, w->tx[i].acked.n, i < w->paced ? "busy" : "quiet");
    }
}

static void test_redis_restart(void)
{
    static const char *const rooms[] = {"2", "redis-loss", "quiet-1", "quiet-2", "quiet-3"};
    world w = {.paced = 2};
    CHECK(world_open(&w, rooms, 2 + QUIET_ROOMS),
          "redis restart: senders and a subscriber per consumer ready (2 busy rooms, %d quiet)",
          QUIET_ROOMS);
    redis_fault f = {.w = &w};
    live_probe lp = {0};
    paced_run(&w, REDIS_RUN_MS, redis_fault_event, &f, &lp);
    CHECK(f.killed && f.restart_ok, "redis-server killed -9 and restarted on the same port");
    char dbsize[32];
    tl_redis_call(redis.port, "DBSIZE", dbsize, sizeof dbsize, 1000);
    NOTE("keys in the restarted redis-server: %s; bus check not UP on %d node probe(s) during "
         "the outage",
         dbsize, f.ready_down);
    CHECK(world_wait_acks(&w), "redis restart: every frame answered");
    check_acked(&w, "redis restart");
    world_wait_delivered(&w);
    note_redis_rooms(&w);
    check_subscribers(&w, "redis restart");
    CHECK(closes_4013(&w) >= 1,
          "redis restart: subscribers were closed with 4013 (%d) and resumed with since=",
          closes_4013(&w));
    CHECK_INT(closes_other(&w), 0, "redis restart: no subscriber closed with another code");
    CHECK(lp.probes > 0 && lp.live_bad == 0, "/health/live stayed 200 (%d probes, %d not 200)",
          lp.probes, lp.live_bad);
    for (int i = 0; i < NODES; i++)
        CHECK(wait_bus_up(i, 30000), "%s: the \"bus\" readiness check is UP again", node_ids[i]);
    double lost = 0;
    for (int i = 0; i < NODES; i++)
        lost += node_metric(i, "chatflow_bus_gaps_total", "recovered=\"lost\"");
    note_bus_metrics("after the redis restart:");
    CHECK(lost >= 1, "chatflow_bus_gaps_total{recovered=\"lost\"} counted the loss (%.0f)", lost);
    world_free(&w);
}

/* ---------------------------------------------------------------- 3. a consumer killed */

#define NODE_KILL_AT_MS 2000
#define NODE_RUN_MS 6000
#define VICTIM 2

static void node_kill_event(uint64_t elapsed_ms, void *ctx)
{
    bool *killed = ctx;
    if (!*killed && elapsed_ms >= NODE_KILL_AT_MS) {
        bool in_time = false;
        tl_consumer_stop(&nodes[VICTIM], SIGKILL, 5000, &in_time);
        *killed = true;
        NOTE("%s killed (-9) at %llu ms", node_ids[VICTIM], (unsigned long long)elapsed_ms);
    }
}

/* Every acked id of the whole test in PostgreSQL, each once. */
static void check_stored_once(void)
{
    long long want = (long long)total_acked;
    CHECK_INT(tl_pg_wait_scalar(env.pg, "SELECT count(*) FROM messages", want, 60000), want,
              "PostgreSQL holds %lld messages: every acked one of the test", want);
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(DISTINCT message_id) FROM messages"), want,
              "each stored exactly once (count by message id)");
}

static void check_victims_resumed(world *w)
{
    for (size_t i = 0; i < w->nsubs; i++) {
        sub *s = &w->subs[i];
        if (i % NODES != VICTIM) continue;
        CHECK(s->resumes >= 1 && s->node != VICTIM,
              "room %s: the subscriber of the killed %s resumed on %s with since=", s->room,
              node_ids[VICTIM], node_ids[s->node]);
    }
}

/* Every acked id of the part's rooms is in PostgreSQL (they are stored in the end, whichever
 * node took them: the killed one's come back to another after their visibility timeout). */
static void check_ids_stored(world *w, const char *part)
{
    size_t n = 0;
    for (size_t i = 0; i < w->ntx; i++) n += w->tx[i].acked.n;
    char *sql = n ? malloc(100 + n * (UUID_STR_BUF + 4)) : NULL;
    if (!sql) return;
    size_t off = (size_t)sprintf(sql, "SELECT count(*) FROM messages WHERE message_id IN (");
    const char *sep = "";
    for (size_t i = 0; i < w->ntx; i++)
        for (size_t k = 0; k < w->tx[i].acked.n; k++, sep = ",")
            off += (size_t)sprintf(sql + off, "%s'%s'", sep, w->tx[i].acked.v[k].id);
    sprintf(sql + off, ")");
    CHECK_INT(tl_pg_wait_scalar(env.pg, sql, (long long)n, 60000), n,
              "%s: each of the %zu acked messages is stored", part, n);
    free(sql);
}

static void test_consumer_killed(void)
{
    static const char *const rooms[] = {"3", "node-crash"};
    world w = {0};
    CHECK(world_open(&w, rooms, 2), "consumer kill: senders and a subscriber per consumer ready");
    bool killed = false;
    paced_run(&w, NODE_RUN_MS, node_kill_event, &killed, NULL);
    CHECK(killed, "%s killed under load", node_ids[VICTIM]);
    CHECK(world_wait_acks(&w), "consumer kill: every frame answered");
    check_acked(&w, "consumer kill");
    world_wait_delivered(&w);
    check_subscribers(&w, "consumer kill");
    check_victims_resumed(&w);
    check_ids_stored(&w, "consumer kill");
    check_stored_once();
    note_bus_metrics("after the consumer kill:");
    world_free(&w);
}

/* ---------------------------------------------------------------- 4. a rolling restart */

#define ROLL_FIRST_AT_MS 1500
#define ROLL_GAP_MS 2500 /* between one node back and the next one stopped */
#define ROLL_RUN_MS 20000

#define ROLL_VISIBILITY_MS 5000 /* CHATFLOW_VISIBILITY_TIMEOUT_S of the nodes (start_node) */

/* One node's restart, on a thread of its own so the test keeps sending and reading meanwhile
 * (a deployment does not stop the traffic either). */
typedef struct {
    int node;
    pthread_t thread;
    atomic_bool done;
    int rc;
    bool in_time, back;
    uint64_t started_ms;
} roll_job;

static void *roll_main(void *arg)
{
    roll_job *j = arg;
    j->rc = tl_consumer_stop(&nodes[j->node], SIGTERM, 15000, &j->in_time);
    j->back = start_node(j->node);
    atomic_store(&j->done, true);
    return NULL;
}

typedef struct {
    int next;    /* the node to restart next */
    uint64_t at; /* not before this elapsed time */
    roll_job job;
    bool running;
    int restarted, clean_exits;
} roll_state;

static void roll_finish(roll_state *r, uint64_t elapsed_ms)
{
    pthread_join(r->job.thread, NULL);
    r->running = false;
    r->clean_exits += r->job.rc == 0 && r->job.in_time;
    r->restarted += r->job.back;
    atomic_store(&node_rolling[r->job.node], false);
    NOTE("%s stopped at %llu ms (exit %d%s) and %s at %llu ms", node_ids[r->job.node],
         (unsigned long long)r->job.started_ms, r->job.rc, r->job.in_time ? "" : ", killed",
         r->job.back ? "ready again" : "NOT back", (unsigned long long)elapsed_ms);
    r->at = elapsed_ms + ROLL_GAP_MS;
}

/* One node at a time: SIGTERM (a deployment's stop), wait for it, start it again and wait until
 * it is ready, then the next one a little later. The others carry every room meanwhile. */
static void roll_event(uint64_t elapsed_ms, void *ctx)
{
    roll_state *r = ctx;
    if (r->running) {
        if (atomic_load(&r->job.done)) roll_finish(r, elapsed_ms);
        return;
    }
    if (r->next >= NODES || elapsed_ms < r->at) return;
    r->job = (roll_job){.node = r->next++, .started_ms = elapsed_ms};
    atomic_store(&node_rolling[r->job.node], true); /* its subscribers resume elsewhere */
    if (pthread_create(&r->job.thread, NULL, roll_main, &r->job) != 0) {
        atomic_store(&node_rolling[r->job.node], false);
        NOTE("could not start the roller thread");
        return;
    }
    r->running = true;
}

/* The longest an acked message of the room waited for its first delivery to any subscriber:
 * what a room "left without a consumer" would show. */
static double room_longest_wait_ms(const world *w, const room_tx *t)
{
    double longest = 0;
    for (size_t a = 0; a < t->acked.n; a++) {
        uint64_t first = 0;
        for (size_t i = 0; i < w->nsubs; i++) {
            const sub *s = &w->subs[i];
            if (strcmp(s->room, t->room) != 0) continue;
            for (size_t k = 0; k < s->got.n; k++)
                if (strcmp(s->got.v[k].id, t->acked.v[a].id) == 0) {
                    if (!first || s->got.v[k].at_ns < first) first = s->got.v[k].at_ns;
                    break;
                }
        }
        if (!first) continue; /* never delivered: check_subscribers says so */
        double wait = first > t->acked.v[a].at_ns ? (double)(first - t->acked.v[a].at_ns) / 1e6 : 0;
        if (wait > longest) longest = wait;
    }
    return longest;
}

static void test_rolling_restart(void)
{
    /* the node killed in part 3 comes back first, as its replacement task would */
    CHECK(start_node(VICTIM), "%s started again", node_ids[VICTIM]);
    static const char *const rooms[] = {"4", "rolling"};
    world w = {0};
    CHECK(world_open(&w, rooms, 2), "rolling restart: senders and a subscriber per consumer ready");
    roll_state r = {.next = 0, .at = ROLL_FIRST_AT_MS};
    paced_run(&w, ROLL_RUN_MS, roll_event, &r, NULL);
    /* On a slow machine the last restarts may still be under way: let them end (60 s). */
    for (int i = 0; i < 1200 && (r.running || r.next < NODES); i++) {
        pump(&w, 50);
        roll_event(ROLL_RUN_MS + (uint64_t)i * 50, &r);
    }
    CHECK_INT(r.restarted, NODES,
              "rolling restart: every consumer stopped and back, one at a time");
    CHECK_INT(r.clean_exits, NODES, "rolling restart: each stopped on SIGTERM in time, exit 0");
    CHECK(world_wait_acks(&w), "rolling restart: every frame answered");
    check_acked(&w, "rolling restart");
    world_wait_delivered(&w);
    check_subscribers(&w, "rolling restart");
    for (size_t i = 0; i < w.ntx; i++) {
        double wait = room_longest_wait_ms(&w, &w.tx[i]);
        CHECK(wait < ROLL_VISIBILITY_MS,
              "rolling restart: room %s never without a consumer for the visibility timeout "
              "(longest wait from ack to first delivery %.0f ms < %d ms)",
              w.tx[i].room, wait, ROLL_VISIBILITY_MS);
    }
    check_ids_stored(&w, "rolling restart");
    check_stored_once();
    note_bus_metrics("after the rolling restart:");
    world_free(&w);
}

/* ---------------------------------------------------------------- 5. the emulator restarted */

#define EPOCH_PER_PHASE 12

/* Sends n frames per room (alternating the producers) and waits for their answers. */
static bool send_phase(world *w, int n)
{
    for (int i = 0; i < n; i++)
        for (size_t r = 0; r < w->ntx; r++) tx_send(&w->tx[r], i % PRODUCERS);
    return world_wait_answers(w);
}

static const char *newest_seq(const ev_list *l)
{
    const char *newest = NULL;
    for (size_t i = 0; i < l->n; i++)
        if (!newest || seqnum_cmp(l->v[i].seq, newest) > 0) newest = l->v[i].seq;
    return newest;
}

/* The acks of a room from index `from` on (the second phase), in sequence order. */
static ev_list acks_from(const room_tx *t, const ev_list *phase1)
{
    ev_list out = {0};
    for (size_t i = 0; i < t->acked.n; i++)
        if (!ev_has(phase1, t->acked.v[i].id)) ev_push(&out, t->acked.v[i].id, t->acked.v[i].seq);
    return out;
}

/* Every event a subscriber received carries the position its ack carried: the producer and the
 * consumers compose it on their own (queue_epoch.h) and must agree. */
static size_t seqs_disagreeing(const ev_list *got, const ev_list *acked)
{
    size_t bad = 0;
    for (size_t i = 0; i < got->n; i++)
        for (size_t k = 0; k < acked->n; k++)
            if (strcmp(got->v[i].id, acked->v[k].id) == 0) {
                bad += seqnum_cmp(got->v[i].seq, acked->v[k].seq) != 0;
                break;
            }
    return bad;
}

/* A new subscriber of `room` on node i with since=`since` receives exactly `want`, in order. */
static void check_resume(int i, const char *room, const char *since, const ev_list *want,
                         const char *what)
{
    sub s = {.room = room};
    bool open = sub_open(&s, i, since);
    uint64_t until = time_mono_ns() + 20000ull * 1000000ull;
    while (open && s.got.n < want->n && time_mono_ns() < until) {
        wsc_service(ws, 50);
        sub_drain(&s);
    }
    for (int k = 0; k < 10 && open; k++) { /* a late duplicate would show now */
        wsc_service(ws, 50);
        sub_drain(&s);
    }
    char why[400];
    bool same = open && same_events(&s.got, want, why, sizeof why);
    CHECK(same, "room %s on %s, since=%s (%s): the %zu messages after it, once, in order", room,
          node_ids[i], since, what, want->n);
    if (!same) NOTE("  %s", why);
    sub_free(&s);
}

static bool restart_sqs(void)
{
    return tl_stack_cmd(&stack, "restart-sqs") && tl_stack_load_env(&stack) &&
           tl_consumer_env_recreate_queues(&env);
}

static void test_sqs_restart(void)
{
    static const char *const rooms[] = {"7", "epoch-room"};
    const size_t nrooms = sizeof rooms / sizeof rooms[0];
    world w = {0};
    CHECK(world_open(&w, rooms, nrooms), "emulator restart: senders and subscribers open");
    CHECK(send_phase(&w, EPOCH_PER_PHASE), "emulator restart: the first %d per room answered",
          EPOCH_PER_PHASE);
    world_wait_delivered(&w);
    ev_list phase1[2] = {{0}};
    char last_old[2][SEQNUM_BUF];
    for (size_t r = 0; r < nrooms; r++) {
        for (size_t i = 0; i < w.tx[r].acked.n; i++)
            ev_push(&phase1[r], w.tx[r].acked.v[i].id, w.tx[r].acked.v[i].seq);
        const char *newest = newest_seq(&phase1[r]);
        snprintf(last_old[r], sizeof last_old[r], "%s", newest ? newest : "0");
    }

    bool restarted = restart_sqs();
    CHECK(restarted, "fauxqs restarted on the same endpoint, empty; the test's queues made again "
                     "(new sequence numbers; PostgreSQL keeps its rows)");
    if (!restarted) {
        for (size_t r = 0; r < nrooms; r++) free(phase1[r].v);
        world_free(&w);
        return;
    }
    CHECK(send_phase(&w, EPOCH_PER_PHASE), "emulator restart: the next %d per room answered",
          EPOCH_PER_PHASE);
    world_wait_acks(&w);
    check_acked(&w, "emulator restart");
    world_wait_delivered(&w);
    check_subscribers(&w, "emulator restart");

    for (size_t r = 0; r < nrooms; r++) {
        ev_list phase2 = acks_from(&w.tx[r], &phase1[r]);
        qsort(phase2.v, phase2.n, sizeof *phase2.v, ev_by_seq);
        CHECK(phase2.n > 0 && seqnum_cmp(phase2.v[0].seq, last_old[r]) > 0,
              "room %s: every position after the restart is above every one before (%s > %s)",
              rooms[r], phase2.n ? phase2.v[0].seq : "-", last_old[r]);
        size_t bad = 0;
        for (size_t i = 0; i < w.nsubs; i++)
            if (strcmp(w.subs[i].room, rooms[r]) == 0)
                bad += seqs_disagreeing(&w.subs[i].got, &w.tx[r].acked);
        CHECK(bad == 0, "room %s: each event carries the position of its ack (%zu differ)",
              rooms[r], bad);
        for (int i = 0; i < NODES; i++) check_room_api(i, &w.tx[r]);
        check_resume((int)r % NODES, rooms[r], last_old[r], &phase2, "from before the restart");
        check_resume((int)(r + 1) % NODES, rooms[r], "0", &w.tx[r].acked, "the whole room");
        free(phase2.v);
        free(phase1[r].v);
    }
    long long want = (long long)(nrooms * 2 * EPOCH_PER_PHASE), stored = stored_of(&w);
    for (int i = 0; i < 600 && stored != want; i++) {
        time_sleep_ms(100);
        stored = stored_of(&w);
    }
    CHECK_INT(stored, want, "emulator restart: all %lld messages stored", want);
    CHECK_INT(tl_pg_scalar(env.pg, "SELECT count(*) - count(DISTINCT (room_id, sequence_number)) "
                                   "FROM messages WHERE room_id IN ('7', 'epoch-room')"),
              0, "emulator restart: no two stored messages of a room share a position");
    double producers = 0, consumers = 0;
    for (int p = 0; p < PRODUCERS; p++) {
        double v = tl_metric(prods[p].admin_port, "chatflow_queue_epoch_changes_total", NULL);
        producers += v > 0 ? v : 0;
    }
    for (int i = 0; i < NODES; i++) {
        double v = node_metric(i, "chatflow_queue_epoch_changes_total", NULL);
        consumers += v > 0 ? v : 0;
    }
    CHECK(producers >= 1 && consumers >= 1,
          "chatflow_queue_epoch_changes_total moved: %.0f on the producers, %.0f on the "
          "consumers",
          producers, consumers);
    world_free(&w);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    tl_init();
    char log_dir[512];
    tl_log_dir("consumer_bus", log_dir, sizeof log_dir);
    tl_stack_init(&stack, "it_consumer_bus", log_dir);
    bool sqs = tl_stack_cmd(&stack, "up --sqs-only") && tl_stack_load_env(&stack);
    CHECK(sqs, "a private fauxqs started (part 5 restarts it)");
    if (!sqs || !tl_consumer_env_init(&env, "consumer_bus", SHARDS) ||
        !(env.pg = tl_pg_connect(env.db_url))) {
        CHECK(false, "test environment (database, queues) set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    ws = wsc_ctx_new();
    if (ws && start_all()) {
        test_fanout();
        test_redis_restart();
        test_consumer_killed();
        test_rolling_restart();
        test_sqs_restart();
    }
    if (ws) wsc_ctx_free(ws);
    for (int p = 0; p < PRODUCERS; p++)
        if (prods[p].pid > 0) tl_producer_stop(&prods[p], SIGTERM, 15000, NULL);
    for (int i = 0; i < NODES; i++)
        if (nodes[i].pid > 0) tl_consumer_stop(&nodes[i], SIGTERM, 15000, NULL);
    tl_redis_done(&redis);
    tl_consumer_env_done(&env);
    curl_global_cleanup();
    return TEST_DONE();
}
