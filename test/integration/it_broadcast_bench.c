/*
 * Broadcast under load: 20 rooms x 50 subscribers on real loopback sockets. Asserts that every
 * subscriber receives every event of its room exactly once, in order, and that nobody is
 * dropped as slow; prints (never asserts) the deliveries per second.
 *
 * As a test it runs CHATFLOW_BENCH_EVENTS (default 50) events per room, 50,000 deliveries.
 * As the benchmark (make bench-consumer), run it with more, e.g.
 *   CHATFLOW_BENCH_EVENTS=1000 build/test/it_broadcast_bench     (1,000,000 deliveries)
 * The broadcaster's one service thread and the two client threads share this machine's cores,
 * so the figure is a lower bound of what the broadcaster alone sustains.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "message.h"
#include "metrics.h"
#include "testlib.h"
#include "timeutil.h"
#include "uuid.h"
#include "wsclient.h"
#include "../../consumer/broadcast.h"
#include "../../consumer/seqnum.h"

#define HOST "127.0.0.1"
#define ROOMS 20
#define PER_ROOM 50
#define CLIENT_THREADS 2
#define SUBS_PER_THREAD (ROOMS * PER_ROOM / CLIENT_THREADS)

static size_t events_per_room;
static int port;
static atomic_ullong delivered;
static atomic_int threads_connected;
static atomic_bool publishing_done;

typedef struct {
    long room;
    size_t next;          /* index of the next expected event */
    bool out_of_order;
} sub_state;

typedef struct {
    wsc_ctx *ws;
    wsc_conn *conns[SUBS_PER_THREAD];
    sub_state subs[SUBS_PER_THREAD];
    int index;
    size_t connected;
    size_t complete;
    size_t bad;
    uint64_t last_ns;
} client_thread;

/* Event i of every room has sequence number BASE + i (numeric order is the index order). */
#define SEQ_BASE 10000000000000000000ULL

static void on_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    sub_state *s = user;
    /* A cheap look at "sequenceNumber":"..." keeps the clients from being the bottleneck. */
    const char *key = "\"sequenceNumber\":\"";
    const char *p = memmem(data, len, key, strlen(key));
    unsigned long long seq = p ? strtoull(p + strlen(key), NULL, 10) : 0;
    if (seq != SEQ_BASE + s->next) s->out_of_order = true;
    s->next++;
    atomic_fetch_add_explicit(&delivered, 1, memory_order_relaxed);
}

static void *client_main(void *arg)
{
    client_thread *t = arg;
    char path[32], err[200];
    for (int i = 0; i < SUBS_PER_THREAD; i++) {
        /* thread 0 takes subscribers 0..24 of each room, thread 1 the others */
        t->subs[i].room = 1 + i % ROOMS;
        snprintf(path, sizeof path, "/chat/%ld", t->subs[i].room);
        int status = 0;
        t->conns[i] = wsc_connect(t->ws, HOST, port, path, 5000, &status, err, sizeof err);
        if (!t->conns[i]) {
            printf("# thread %d: connect %s failed: %d %s\n", t->index, path, status, err);
            continue;
        }
        wsc_set_callbacks(t->conns[i], on_message, NULL, &t->subs[i]);
        t->connected++;
    }
    atomic_fetch_add(&threads_connected, 1);
    uint64_t deadline = 0;
    for (;;) {
        size_t done = 0;
        for (int i = 0; i < SUBS_PER_THREAD; i++) done += t->subs[i].next >= events_per_room;
        if (done == t->connected) break;
        if (atomic_load(&publishing_done)) {
            if (!deadline) deadline = time_mono_ns() + 30ULL * 1000000000ULL;
            if (time_mono_ns() > deadline) break;
        }
        wsc_service(t->ws, 50);
    }
    t->last_ns = time_mono_ns();
    for (int i = 0; i < SUBS_PER_THREAD; i++) {
        if (t->subs[i].next == events_per_room && !t->subs[i].out_of_order) t->complete++;
        else if (t->conns[i]) t->bad++;
        if (t->conns[i]) wsc_free(t->conns[i]);
    }
    return NULL;
}

/* CPU seconds used so far by this process's thread named `name` (the broadcaster's service
 * thread is "cf-broadcast"), from /proc; -1 when not found. */
static double thread_cpu_seconds(const char *name)
{
    char path[300], comm[64], stat[1024];
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return -1;
    double secs = -1;
    for (struct dirent *e; secs < 0 && (e = readdir(dir));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        bool match = fgets(comm, sizeof comm, f) && strncmp(comm, name, strlen(name)) == 0;
        fclose(f);
        if (!match) continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        f = fopen(path, "r");
        if (!f) break;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        /* fields after the ")" that ends comm: state is 3rd, utime 14th, stime 15th */
        const char *p = strrchr(stat, ')');
        unsigned long long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            secs = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        break;
    }
    closedir(dir);
    return secs;
}

static void publish_round(broadcaster *b, size_t i)
{
    char seq[SEQNUM_BUF], ts[ISO8601_BUF];
    snprintf(seq, sizeof seq, "%llu", SEQ_BASE + (unsigned long long)i);
    time_format_iso8601(time_wall_ms(), ts);
    for (long r = 1; r <= ROOMS; r++) {
        chat_message m;
        memset(&m, 0, sizeof m);
        snprintf(m.user_id, sizeof m.user_id, "%ld", 100 + r);
        snprintf(m.username, sizeof m.username, "user%ld", 100 + r);
        snprintf(m.message, sizeof m.message, "benchmark message %zu for room %ld, about the size of a chat line", i, r);
        snprintf(m.timestamp, sizeof m.timestamp, "%s", ts);
        snprintf(m.message_type, sizeof m.message_type, "TEXT");
        uuid_v4(m.message_id);
        snprintf(m.room_id, sizeof m.room_id, "%ld", r);
        while (!broadcast_publish(b, &m, seq, ts)) time_sleep_ms(1);
    }
}

int main(void)
{
    log_init("warn", "text");
    const char *env = getenv("CHATFLOW_BENCH_EVENTS");
    events_per_room = env && atol(env) > 0 ? (size_t)atol(env) : 50;
    broadcast_config cfg = {
        .bind_addr = HOST, .port = 0, .room_min = 1, .room_max = ROOMS, .send_queue_max = 1024,
        .cache_per_room = 64, .max_subscribers = ROOMS * PER_ROOM + 10, .ping_interval_s = 30,
        .pong_timeout_s = 10, .history = NULL,
    };
    char err[200];
    /* Client contexts first: creating one sets the process-wide lws log level, which lws
     * threads read unlocked. */
    client_thread threads[CLIENT_THREADS];
    memset(threads, 0, sizeof threads);
    for (int k = 0; k < CLIENT_THREADS; k++) {
        threads[k].index = k;
        threads[k].ws = wsc_ctx_new();
    }
    broadcaster *b = broadcast_start(&cfg, err, sizeof err);
    CHECK(b != NULL, "bench: broadcaster started (%s)", b ? "ok" : err);
    if (!b) return TEST_DONE();
    port = broadcast_port(b);

    pthread_t tids[CLIENT_THREADS];
    for (int k = 0; k < CLIENT_THREADS; k++) pthread_create(&tids[k], NULL, client_main, &threads[k]);
    while (atomic_load(&threads_connected) < CLIENT_THREADS) time_sleep_ms(10);
    for (int i = 0; i < 500 && broadcast_subscriber_count(b) < ROOMS * PER_ROOM; i++) time_sleep_ms(10);
    CHECK_INT(broadcast_subscriber_count(b), ROOMS * PER_ROOM, "bench: 20 rooms x 50 subscribers connected");

    /* Publish round by round, keeping at most ~256 rounds ahead of the slowest deliveries so
     * the measure is of sustained delivery, not of queue growth. */
    double cpu_start = thread_cpu_seconds("cf-broadcast");
    uint64_t start = time_mono_ns();
    for (size_t i = 0; i < events_per_room; i++) {
        while (i > 256 && atomic_load(&delivered) / (ROOMS * PER_ROOM) + 256 < i) time_sleep_ms(1);
        publish_round(b, i);
    }
    atomic_store(&publishing_done, true);
    double cpu_end = cpu_start;
    uint64_t end = start;
    size_t complete = 0, bad = 0;
    for (int k = 0; k < CLIENT_THREADS; k++) {
        pthread_join(tids[k], NULL);
        if (threads[k].last_ns > end) end = threads[k].last_ns;
        complete += threads[k].complete;
        bad += threads[k].bad;
        wsc_ctx_free(threads[k].ws);
    }
    cpu_end = thread_cpu_seconds("cf-broadcast");
    unsigned long long total = atomic_load(&delivered);
    double secs = (double)(end - start) / 1e9;
    CHECK_INT(complete, ROOMS * PER_ROOM,
              "bench: all 1000 subscribers got all %zu events of their room once, in order", events_per_room);
    CHECK_INT(bad, 0, "bench: no subscriber missed, duplicated or reordered an event");
    char *text = metrics_render();
    CHECK(strstr(text, "\nchatflow_slow_subscribers_dropped_total 0\n") != NULL, "bench: nobody dropped as slow");
    free(text);
    NOTE("broadcast: %llu deliveries in %.2f s = %.0f deliveries/s (20 rooms x 50 subscribers, %zu events per room)",
         total, secs, secs > 0 ? (double)total / secs : 0.0, events_per_room);
    if (cpu_start >= 0 && cpu_end > cpu_start && total)
        NOTE("broadcast service thread: %.2f s CPU = %.1f us per delivery (%.0f deliveries per CPU-second)",
             cpu_end - cpu_start, (cpu_end - cpu_start) * 1e6 / (double)total,
             (double)total / (cpu_end - cpu_start));
    broadcast_stop(b);
    metrics_reset();
    return TEST_DONE();
}
