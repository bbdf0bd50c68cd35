/*
 * bench_ws_fanout — the baseline of the broadcast benchmark: what libwebsockets itself fans out
 * on this machine, with none of the broadcaster's work (no frame rendering, no per-subscriber
 * queue, no metrics, no replay cache).
 *
 *   bench_ws_fanout [--events N]      (N events per room, default 1000)
 *
 * The same shape as test/integration/it_broadcast_bench.c, which measures consumer/broadcast.c:
 * 20 rooms x 50 subscribers on real loopback sockets, the same client code (two threads of the
 * project's WebSocket client, 500 subscribers each), frames of the same size and the same flow
 * control (the publisher stays at most 256 rounds ahead of the deliveries). The server is a bare
 * lws vhost on one service thread: every frame is rendered before the clock starts; the publisher
 * only moves a per-room counter and calls lws_cancel_service; on the wake the service thread asks
 * WRITEABLE for the subscribers of rooms with new events, and each WRITEABLE writes the next frame.
 * Prints one JSON line: deliveries, seconds, deliveries_per_s, and the service thread's CPU per
 * delivery. Exit 1 when a subscriber missed, duplicated or reordered a frame.
 */
#include <dirent.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "timeutil.h"
#include "uuid.h"
#include "wsclient.h"

#define HOST "127.0.0.1"
#define ROOMS 20
#define PER_ROOM 50
#define CLIENT_THREADS 2
#define SUBS_PER_THREAD (ROOMS * PER_ROOM / CLIENT_THREADS)
#define SEQ_BASE 10000000000000000000ULL
#define AHEAD 256

/* ---- the server: one lws service thread ---- */

typedef struct {
    struct lws *wsi;
    int room;        /* 0-based; -1 before ESTABLISHED */
    size_t next;     /* next event index to write */
} fan_sub;

typedef struct {
    fan_sub *subs[PER_ROOM * 2];
    size_t n;
} fan_room;

static size_t events_per_room = 1000;
static unsigned char **frames;          /* [room * events + i] -> LWS_PRE headroom + payload */
static size_t *frame_len;
static fan_room rooms[ROOMS];
static atomic_size_t published[ROOMS];  /* events of each room released by the publisher */
static size_t woken[ROOMS];             /* what the service thread has asked WRITEABLE for */
static atomic_bool server_stop;
static atomic_int server_subs;
static struct lws_context *server_ctx;

static int fan_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)in;
    (void)len;
    fan_sub *s = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        char path[64] = "";
        lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
        int room = strncmp(path, "/chat/", 6) == 0 ? atoi(path + 6) : 0;
        if (room < 1 || room > ROOMS || rooms[room - 1].n == PER_ROOM * 2)
            return -1;
        s->wsi = wsi;
        s->room = room - 1;
        s->next = 0;
        rooms[s->room].subs[rooms[s->room].n++] = s;
        atomic_fetch_add(&server_subs, 1);
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (!s || s->room < 0 || !s->wsi)
            break;
        size_t avail = atomic_load_explicit(&published[s->room], memory_order_acquire);
        if (s->next < avail) {
            size_t k = (size_t)s->room * events_per_room + s->next;
            int n = lws_write(wsi, frames[k] + LWS_PRE, frame_len[k], LWS_WRITE_TEXT);
            if (n < (int)frame_len[k])
                return -1;
            s->next++;
        }
        if (s->next < avail)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLOSED:
        if (s && s->wsi) {
            fan_room *r = &rooms[s->room];
            for (size_t i = 0; i < r->n; i++)
                if (r->subs[i] == s) {
                    r->subs[i] = r->subs[--r->n];
                    break;
                }
            s->wsi = NULL;
            atomic_fetch_sub(&server_subs, 1);
        }
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        for (int r = 0; r < ROOMS; r++) {
            size_t avail = atomic_load_explicit(&published[r], memory_order_acquire);
            if (avail == woken[r])
                continue;
            woken[r] = avail;
            for (size_t i = 0; i < rooms[r].n; i++)
                lws_callback_on_writable(rooms[r].subs[i]->wsi);
        }
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols fan_protocols[] = {
    { "chatflow-fanout", fan_callback, sizeof(fan_sub), 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void *server_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "fanout");
    while (!atomic_load(&server_stop))
        if (lws_service(server_ctx, 0) < 0)
            break;
    return NULL;
}

/* ---- the clients: as in it_broadcast_bench ---- */

static int port;
static atomic_ullong delivered;
static atomic_int threads_connected;
static atomic_bool publishing_done;

typedef struct {
    long room;
    size_t next;
    bool out_of_order;
} sub_state;

typedef struct {
    wsc_ctx *ws;
    wsc_conn *conns[SUBS_PER_THREAD];
    sub_state subs[SUBS_PER_THREAD];
    int index;
    size_t connected, complete, bad;
    uint64_t last_ns;
} client_thread;

static void on_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    sub_state *s = user;
    const char *key = "\"sequenceNumber\":\"";
    const char *p = memmem(data, len, key, strlen(key));
    unsigned long long seq = p ? strtoull(p + strlen(key), NULL, 10) : 0;
    if (seq != SEQ_BASE + s->next)
        s->out_of_order = true;
    s->next++;
    atomic_fetch_add_explicit(&delivered, 1, memory_order_relaxed);
}

static void *client_main(void *arg)
{
    client_thread *t = arg;
    char path[32], err[200];
    for (int i = 0; i < SUBS_PER_THREAD; i++) {
        t->subs[i].room = 1 + i % ROOMS;
        snprintf(path, sizeof path, "/chat/%ld", t->subs[i].room);
        int status = 0;
        t->conns[i] = wsc_connect(t->ws, HOST, port, path, 5000, &status, err, sizeof err);
        if (!t->conns[i]) {
            fprintf(stderr, "bench_ws_fanout: thread %d: connect %s failed: %d %s\n", t->index, path, status, err);
            continue;
        }
        wsc_set_callbacks(t->conns[i], on_message, NULL, &t->subs[i]);
        t->connected++;
    }
    atomic_fetch_add(&threads_connected, 1);
    uint64_t deadline = 0;
    for (;;) {
        size_t done = 0;
        for (int i = 0; i < SUBS_PER_THREAD; i++)
            done += t->subs[i].next >= events_per_room;
        if (done == t->connected)
            break;
        if (atomic_load(&publishing_done)) {
            if (!deadline)
                deadline = time_mono_ns() + 30ULL * 1000000000ULL;
            if (time_mono_ns() > deadline)
                break;
        }
        wsc_service(t->ws, 50);
    }
    t->last_ns = time_mono_ns();
    for (int i = 0; i < SUBS_PER_THREAD; i++) {
        if (t->subs[i].next == events_per_room && !t->subs[i].out_of_order)
            t->complete++;
        else if (t->conns[i])
            t->bad++;
        if (t->conns[i])
            wsc_free(t->conns[i]);
    }
    return NULL;
}

/* CPU seconds of this process's thread named `name`, from /proc; -1 when not found. */
static double thread_cpu_seconds(const char *name)
{
    char path[300], comm[64], stat[1024];
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    double secs = -1;
    for (struct dirent *e; secs < 0 && (e = readdir(dir));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        bool match = fgets(comm, sizeof comm, f) && strncmp(comm, name, strlen(name)) == 0;
        fclose(f);
        if (!match)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        f = fopen(path, "r");
        if (!f)
            break;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        const char *p = strrchr(stat, ')');
        unsigned long long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            secs = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    closedir(dir);
    return secs;
}

/* A frame like the broadcaster's BroadcastEvent for event i of room r (1-based). */
static bool render_frames(void)
{
    size_t n = (size_t)ROOMS * events_per_room;
    frames = calloc(n, sizeof *frames);
    frame_len = calloc(n, sizeof *frame_len);
    if (!frames || !frame_len)
        return false;
    char ts[ISO8601_BUF], id[UUID_STR_BUF], json[1024];
    time_format_iso8601(time_wall_ms(), ts);
    for (int r = 1; r <= ROOMS; r++)
        for (size_t i = 0; i < events_per_room; i++) {
            uuid_v4(id);
            int len = snprintf(json, sizeof json,
                               "{\"type\":\"MESSAGE\",\"messageId\":\"%s\",\"roomId\":\"%d\",\"userId\":\"%d\","
                               "\"username\":\"user%d\",\"message\":\"benchmark message %zu for room %d, about the "
                               "size of a chat line\",\"timestamp\":\"%s\",\"messageType\":\"TEXT\","
                               "\"serverTimestamp\":\"%s\",\"sequenceNumber\":\"%llu\"}",
                               id, r, 100 + r, 100 + r, i, r, ts, ts, SEQ_BASE + (unsigned long long)i);
            size_t k = (size_t)(r - 1) * events_per_room + i;
            frames[k] = malloc(LWS_PRE + (size_t)len);
            if (!frames[k])
                return false;
            memcpy(frames[k] + LWS_PRE, json, (size_t)len);
            frame_len[k] = (size_t)len;
        }
    return true;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--events") == 0 && atol(argv[i + 1]) > 0)
            events_per_room = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_ws_fanout [--events N]\n");
            return 2;
        }
    }
    if (!render_frames()) {
        fprintf(stderr, "bench_ws_fanout: out of memory\n");
        return 1;
    }
    client_thread threads[CLIENT_THREADS];
    memset(threads, 0, sizeof threads);
    /* Client contexts first: creating one sets lws's process-wide log level. */
    for (int k = 0; k < CLIENT_THREADS; k++) {
        threads[k].index = k;
        threads[k].ws = wsc_ctx_new();
    }
    lws_set_log_level(LLL_ERR, NULL);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.gid = -1;
    info.uid = -1;
    server_ctx = lws_create_context(&info);
    info.port = 0;
    info.iface = HOST;
    info.protocols = fan_protocols;
    info.vhost_name = "fanout";
    struct lws_vhost *vh = server_ctx ? lws_create_vhost(server_ctx, &info) : NULL;
    if (!vh) {
        fprintf(stderr, "bench_ws_fanout: cannot listen on %s\n", HOST);
        return 1;
    }
    port = lws_get_vhost_listen_port(vh);
    pthread_t server;
    pthread_create(&server, NULL, server_main, NULL);

    pthread_t tids[CLIENT_THREADS];
    for (int k = 0; k < CLIENT_THREADS; k++)
        pthread_create(&tids[k], NULL, client_main, &threads[k]);
    while (atomic_load(&threads_connected) < CLIENT_THREADS)
        time_sleep_ms(10);
    for (int i = 0; i < 500 && atomic_load(&server_subs) < ROOMS * PER_ROOM; i++)
        time_sleep_ms(10);

    double cpu_start = thread_cpu_seconds("fanout");
    uint64_t start = time_mono_ns();
    for (size_t i = 0; i < events_per_room; i++) {
        while (i > AHEAD && atomic_load(&delivered) / (ROOMS * PER_ROOM) + AHEAD < i)
            time_sleep_ms(1);
        for (int r = 0; r < ROOMS; r++)
            atomic_store_explicit(&published[r], i + 1, memory_order_release);
        lws_cancel_service(server_ctx);
    }
    atomic_store(&publishing_done, true);
    uint64_t end = start;
    size_t complete = 0, bad = 0;
    for (int k = 0; k < CLIENT_THREADS; k++) {
        pthread_join(tids[k], NULL);
        if (threads[k].last_ns > end)
            end = threads[k].last_ns;
        complete += threads[k].complete;
        bad += threads[k].bad;
        wsc_ctx_free(threads[k].ws);
    }
    double cpu_end = thread_cpu_seconds("fanout");
    atomic_store(&server_stop, true);
    lws_cancel_service(server_ctx);
    pthread_join(server, NULL);
    lws_context_destroy(server_ctx);

    unsigned long long total = atomic_load(&delivered);
    double secs = (double)(end - start) / 1e9;
    bool ok = complete == ROOMS * PER_ROOM && bad == 0;
    if (!ok)
        fprintf(stderr, "bench_ws_fanout: %zu of %d subscribers complete, %zu missed or reordered frames\n", complete,
                ROOMS * PER_ROOM, bad);
    printf("{\"rooms\":%d,\"subscribers_per_room\":%d,\"events_per_room\":%zu,\"deliveries\":%llu,\"seconds\":%.3f,"
           "\"deliveries_per_s\":%.0f,\"server_cpu_us_per_delivery\":%.2f,\"complete\":%s}\n",
           ROOMS, PER_ROOM, events_per_room, total, secs, secs > 0 ? (double)total / secs : 0.0,
           total && cpu_end > cpu_start ? (cpu_end - cpu_start) * 1e6 / (double)total : 0.0, ok ? "true" : "false");
    for (size_t k = 0; k < (size_t)ROOMS * events_per_room; k++)
        free(frames[k]);
    free(frames);
    free(frame_len);
    return ok ? 0 : 1;
}
