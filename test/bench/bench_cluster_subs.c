/*
 * bench_cluster_subs — the subscribers of the cluster benchmark (test/bench/cluster.sh): anonymous
 * WebSocket subscribers spread evenly over one or more consumer nodes, each checked at the end
 * against the messages PostgreSQL holds.
 *
 *   bench_cluster_subs --ports P1[,P2,...] --expect FILE [--rooms R] [--per-room N] [--threads T]
 *                      [--drain-timeout S]
 *
 * Subscriber s (0 .. R*N-1) listens on 127.0.0.1:<node's port>/chat/<1 + s % R> of node
 * (s / R) % nodes, so each room's N subscribers are dealt round-robin over the nodes (evenly when
 * the node count divides N). T client threads (2) of the project's WebSocket client share them.
 *
 *  1. Connects every subscriber, then prints "ready <subscribers>" on stdout. Exit 1 when one
 *     did not open.
 *  2. Receives until FILE exists (the caller writes it under another name, then renames it):
 *     lines "<roomId> <messageId>", every message the run stored. Rooms are "1".."R".
 *  3. Waits until every subscriber has received at least its room's count (at most S seconds,
 *     120), then 300 ms more so a late duplicate is still seen, and stops.
 *  4. Checks each subscriber: every messageId of its room exactly once, nothing else, in
 *     increasing sequenceNumber order (compared as numbers), and never closed by the consumer.
 *     Prints one JSON line: subscribers, complete, bad, deliveries (MESSAGE events received),
 *     expected_deliveries, missing, duplicated, unexpected, out_of_order, closed, per node
 *     {port, subscribers, deliveries}, and first_ns / last_ns: the wall clock (CLOCK_REALTIME,
 *     ns since the epoch) of the first and last MESSAGE event received, so a shell script can
 *     set them against `date +%s%N`. Exit 0 when every subscriber is complete, 1 otherwise.
 *
 * The per-event work is a memmem for two keys and a copy of 16 bytes, so the clients stay far
 * below the consumers' cost per delivery; ids are sorted and compared only after the run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "timeutil.h"
#include "tl_proc.h"
#include "uuid.h"
#include "wsclient.h"

#define HOST "127.0.0.1"
#define MAX_NODES 16
#define MAX_ROOMS 1000
#define SEQ_MAX 72
#define SETTLE_MS 300

typedef struct {
    uint8_t b[16];
} msg_id;

typedef struct {
    int room, node;
    wsc_conn *conn;
    atomic_size_t received; /* MESSAGE events; read by the main thread for progress */
    msg_id *ids;            /* what was received, in arrival order (owned by the thread) */
    size_t cap;
    char last_seq[SEQ_MAX];
    size_t last_seq_len;
    size_t out_of_order, malformed;
    atomic_int close_code; /* 0 while open */
} subscriber;

typedef struct {
    pthread_t tid;
    wsc_ctx *ws;
    size_t *members; /* indexes into subs */
    size_t count;
    uint64_t first_ns, last_ns; /* wall clock of the first / last MESSAGE event */
} client_thread;

static int rooms = 20, per_room = 30, threads = 2, drain_timeout_s = 120;
static int ports[MAX_NODES], nodes;
static const char *expect_path;
static subscriber *subs;
static size_t nsubs;
static client_thread *clients;
static atomic_bool stop;
static atomic_int threads_connected;
static atomic_size_t connect_failures;

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- receiving ---- */

/* Positions are decimal strings without leading zeros: a longer one is larger. */
static int seq_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen) return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

/* The value of "key":"<value>" in a frame, without parsing the JSON: the consumer renders these
 * keys once per event and never inside another string (ids and positions have no quotes). */
static const char *find_string_value(const char *data, size_t len, const char *key, size_t *vlen)
{
    const char *p = memmem(data, len, key, strlen(key));
    if (!p) return NULL;
    p += strlen(key);
    const char *end = memchr(p, '"', (size_t)(data + len - p));
    if (!end) return NULL;
    *vlen = (size_t)(end - p);
    return p;
}

static void on_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    subscriber *s = user;
    client_thread *t = &clients[(size_t)(s - subs) % (size_t)threads];
    size_t idlen = 0, seqlen = 0;
    if (!memmem(data, len, "\"type\":\"MESSAGE\"", 16)) return; /* nothing else is checked */
    const char *id = find_string_value(data, len, "\"messageId\":\"", &idlen);
    const char *seq = find_string_value(data, len, "\"sequenceNumber\":\"", &seqlen);
    char idbuf[UUID_STR_BUF];
    msg_id m;
    if (!id || idlen != 36 || !seq || seqlen == 0 || seqlen >= SEQ_MAX) {
        s->malformed++;
        return;
    }
    memcpy(idbuf, id, 36);
    idbuf[36] = '\0';
    if (!uuid_parse(idbuf, m.b)) {
        s->malformed++;
        return;
    }
    if (s->last_seq_len && seq_cmp(seq, seqlen, s->last_seq, s->last_seq_len) <= 0)
        s->out_of_order++;
    memcpy(s->last_seq, seq, seqlen);
    s->last_seq_len = seqlen;
    size_t n = atomic_load_explicit(&s->received, memory_order_relaxed);
    if (n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        msg_id *grown = realloc(s->ids, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "bench_cluster_subs: out of memory\n");
            exit(1);
        }
        s->ids = grown;
        s->cap = cap;
    }
    s->ids[n] = m;
    atomic_store_explicit(&s->received, n + 1, memory_order_relaxed);
    uint64_t now = wall_ns();
    if (!t->first_ns) t->first_ns = now;
    t->last_ns = now;
}

static void on_close(wsc_conn *c, int code, const char *reason, void *user)
{
    (void)c;
    (void)reason;
    subscriber *s = user;
    atomic_store(&s->close_code, code ? code : 1006);
}

static void *client_main(void *arg)
{
    client_thread *t = arg;
    char path[32], err[200];
    for (size_t i = 0; i < t->count; i++) {
        subscriber *s = &subs[t->members[i]];
        snprintf(path, sizeof path, "/chat/%d", 1 + s->room);
        int status = 0;
        s->conn = wsc_connect(t->ws, HOST, ports[s->node], path, 10000, &status, err, sizeof err);
        if (!s->conn) {
            fprintf(stderr, "bench_cluster_subs: %s:%d%s did not open: %d %s\n", HOST,
                    ports[s->node], path, status, err);
            atomic_fetch_add(&connect_failures, 1);
            continue;
        }
        wsc_set_callbacks(s->conn, on_message, on_close, s);
    }
    atomic_fetch_add(&threads_connected, 1);
    while (!atomic_load(&stop)) wsc_service(t->ws, 50);
    return NULL;
}

/* ---- what the run stored ---- */

typedef struct {
    msg_id *ids;
    size_t n, cap;
} room_set;

static room_set *expected;

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, sizeof(msg_id)); }

static bool load_expected(void)
{
    FILE *f = fopen(expect_path, "r");
    if (!f) {
        fprintf(stderr, "bench_cluster_subs: %s: %s\n", expect_path, strerror(errno));
        return false;
    }
    expected = calloc((size_t)rooms, sizeof *expected);
    char line[256], idbuf[UUID_STR_BUF];
    int lineno = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        char *sp = strchr(line, ' ');
        char *end = NULL;
        long room = strtol(line, &end, 10);
        msg_id m;
        if (!sp || end != sp || room < 1 || room > rooms || strlen(sp + 1) < 36) {
            ok = false;
            break;
        }
        memcpy(idbuf, sp + 1, 36);
        idbuf[36] = '\0';
        if (!uuid_parse(idbuf, m.b)) {
            ok = false;
            break;
        }
        room_set *r = &expected[room - 1];
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 1024;
            r->ids = realloc(r->ids, r->cap * sizeof *r->ids);
            if (!r->ids) ok = false;
        }
        if (ok) r->ids[r->n++] = m;
    }
    fclose(f);
    if (!ok) {
        fprintf(stderr, "bench_cluster_subs: %s line %d is not \"<room 1..%d> <uuid>\"\n",
                expect_path, lineno, rooms);
        return false;
    }
    for (int r = 0; r < rooms; r++) qsort(expected[r].ids, expected[r].n, sizeof(msg_id), id_cmp);
    return true;
}

static bool all_received(void)
{
    for (size_t i = 0; i < nsubs; i++)
        if (atomic_load_explicit(&subs[i].received, memory_order_relaxed) <
            expected[subs[i].room].n)
            return false;
    return true;
}

/* ---- the check ---- */

typedef struct {
    size_t missing, duplicated, unexpected;
} diff;

/* Merges a subscriber's sorted ids with its room's expected ones (sorted, each once). */
static diff compare_ids(msg_id *got, size_t ngot, const room_set *want)
{
    diff d = {0};
    qsort(got, ngot, sizeof *got, id_cmp);
    size_t i = 0, j = 0;
    while (i < ngot || j < want->n) {
        int c = i == ngot ? 1 : j == want->n ? -1 : id_cmp(&got[i], &want->ids[j]);
        if (c < 0) { /* received, not stored */
            d.unexpected++;
            i++;
        } else if (c > 0) { /* stored, not received */
            d.missing++;
            j++;
        } else {
            i++;
            j++;
        }
        /* Further copies of what was just matched or counted. */
        while (i > 0 && i < ngot && id_cmp(&got[i], &got[i - 1]) == 0) {
            d.duplicated++;
            i++;
        }
    }
    return d;
}

static int report(void)
{
    size_t complete = 0, bad = 0, closed = 0, malformed = 0;
    unsigned long long deliveries = 0, want = 0, node_deliveries[MAX_NODES] = {0};
    size_t node_subs[MAX_NODES] = {0};
    size_t missing = 0, duplicated = 0, unexpected = 0, out_of_order = 0;
    for (size_t i = 0; i < nsubs; i++) {
        subscriber *s = &subs[i];
        size_t n = atomic_load(&s->received);
        diff d = compare_ids(s->ids, n, &expected[s->room]);
        int code = atomic_load(&s->close_code);
        bool ok = s->conn && !d.missing && !d.duplicated && !d.unexpected && !s->out_of_order &&
                  !s->malformed && !code;
        if (ok)
            complete++;
        else {
            bad++;
            if (bad <= 5)
                fprintf(stderr,
                        "bench_cluster_subs: subscriber %zu (room %d, port %d): received %zu of "
                        "%zu, missing %zu, duplicated %zu, unexpected %zu, out of order %zu, "
                        "malformed %zu, close code %d\n",
                        i, 1 + s->room, ports[s->node], n, expected[s->room].n, d.missing,
                        d.duplicated, d.unexpected, s->out_of_order, s->malformed, code);
        }
        closed += code != 0;
        malformed += s->malformed;
        missing += d.missing;
        duplicated += d.duplicated;
        unexpected += d.unexpected;
        out_of_order += s->out_of_order;
        deliveries += n;
        want += expected[s->room].n;
        node_deliveries[s->node] += n;
        node_subs[s->node]++;
    }
    uint64_t first = 0, last = 0;
    for (int k = 0; k < threads; k++) {
        if (clients[k].first_ns && (!first || clients[k].first_ns < first))
            first = clients[k].first_ns;
        if (clients[k].last_ns > last) last = clients[k].last_ns;
    }
    printf("{\"subscribers\":%zu,\"rooms\":%d,\"per_room\":%d,\"complete\":%zu,\"bad\":%zu,"
           "\"deliveries\":%llu,\"expected_deliveries\":%llu,\"missing\":%zu,\"duplicated\":%zu,"
           "\"unexpected\":%zu,\"out_of_order\":%zu,\"malformed\":%zu,\"closed\":%zu,"
           "\"first_ns\":%llu,\"last_ns\":%llu,\"nodes\":[",
           nsubs, rooms, per_room, complete, bad, deliveries, want, missing, duplicated, unexpected,
           out_of_order, malformed, closed, (unsigned long long)first, (unsigned long long)last);
    for (int k = 0; k < nodes; k++)
        printf("%s{\"port\":%d,\"subscribers\":%zu,\"deliveries\":%llu}", k ? "," : "", ports[k],
               node_subs[k], node_deliveries[k]);
    printf("]}\n");
    fflush(stdout);
    return bad == 0 ? 0 : 1;
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: bench_cluster_subs --ports P1[,P2,...] --expect FILE [--rooms R] "
                    "[--per-room N] [--threads T] [--drain-timeout S]\n");
    return 2;
}

static bool parse_int(const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

static bool parse_ports(char *list)
{
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (nodes == MAX_NODES || !parse_int(tok, 1, 65535, &ports[nodes])) return false;
        nodes++;
    }
    return nodes > 0;
}

static bool parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) return false;
        const char *k = argv[i], *v = argv[i + 1];
        bool ok = !strcmp(k, "--ports")           ? parse_ports(argv[i + 1])
                  : !strcmp(k, "--expect")        ? (expect_path = v, true)
                  : !strcmp(k, "--rooms")         ? parse_int(v, 1, MAX_ROOMS, &rooms)
                  : !strcmp(k, "--per-room")      ? parse_int(v, 1, 10000, &per_room)
                  : !strcmp(k, "--threads")       ? parse_int(v, 1, 64, &threads)
                  : !strcmp(k, "--drain-timeout") ? parse_int(v, 1, 86400, &drain_timeout_s)
                                                  : false;
        if (!ok) return false;
    }
    return nodes > 0 && expect_path;
}

/* Deals the subscribers to nodes and threads (see the header). */
static void deal(void)
{
    nsubs = (size_t)rooms * (size_t)per_room;
    subs = calloc(nsubs, sizeof *subs);
    clients = calloc((size_t)threads, sizeof *clients);
    for (int k = 0; k < threads; k++) {
        clients[k].members = calloc(nsubs / (size_t)threads + 1, sizeof(size_t));
        clients[k].ws = wsc_ctx_new();
    }
    for (size_t s = 0; s < nsubs; s++) {
        subs[s].room = (int)(s % (size_t)rooms);
        subs[s].node = (int)((s / (size_t)rooms) % (size_t)nodes);
        client_thread *t = &clients[s % (size_t)threads];
        t->members[t->count++] = s;
    }
}

static void stop_clients(void)
{
    atomic_store(&stop, true);
    for (int k = 0; k < threads; k++) pthread_join(clients[k].tid, NULL);
}

int main(int argc, char **argv)
{
    tl_init();
    if (!parse_args(argc, argv)) return usage();
    deal();
    for (int k = 0; k < threads; k++)
        pthread_create(&clients[k].tid, NULL, client_main, &clients[k]);
    while (atomic_load(&threads_connected) < threads) time_sleep_ms(10);
    if (atomic_load(&connect_failures)) {
        fprintf(stderr, "bench_cluster_subs: %zu of %zu subscribers did not open\n",
                atomic_load(&connect_failures), nsubs);
        stop_clients();
        return 1;
    }
    printf("ready %zu\n", nsubs);
    fflush(stdout);

    /* Until the caller says what was stored; the caller stops this process when it gives up. */
    struct stat st;
    while (stat(expect_path, &st) != 0) time_sleep_ms(20);
    if (!load_expected()) {
        stop_clients();
        return 1;
    }
    uint64_t deadline = time_mono_ns() + (uint64_t)drain_timeout_s * 1000000000ull;
    while (!all_received() && time_mono_ns() < deadline) time_sleep_ms(20);
    time_sleep_ms(SETTLE_MS);
    stop_clients();
    return report();
}
