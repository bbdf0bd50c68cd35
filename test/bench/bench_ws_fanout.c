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
#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "timeutil.h"
#include "tl_fanout.h"
#include "tl_proc.h"
#include "uuid.h"

#define HOST "127.0.0.1"
#define ROOMS 20
#define PER_ROOM 50
#define CLIENT_THREADS 2
#define AHEAD 256

/* ---- the server: one lws service thread ---- */

typedef struct {
    struct lws *wsi;
    int room;    /* 0-based; -1 before ESTABLISHED */
    size_t next; /* next event index to write */
} fan_sub;

typedef struct {
    fan_sub *subs[PER_ROOM * 2];
    size_t n;
} fan_room;

static size_t events_per_room = 1000;
static unsigned char **frames; /* [room * events + i] -> LWS_PRE headroom + payload */
static size_t *frame_len;
static fan_room rooms[ROOMS];
static atomic_size_t published[ROOMS]; /* events of each room released by the publisher */
static size_t woken[ROOMS];            /* what the service thread has asked WRITEABLE for */
static atomic_bool server_stop;
static atomic_int server_subs;
static struct lws_context *server_ctx;

static int fan_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    (void)in;
    (void)len;
    fan_sub *s = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        char path[64] = "";
        lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
        int room = strncmp(path, "/chat/", 6) == 0 ? atoi(path + 6) : 0;
        if (room < 1 || room > ROOMS || rooms[room - 1].n == PER_ROOM * 2) return -1;
        s->wsi = wsi;
        s->room = room - 1;
        s->next = 0;
        rooms[s->room].subs[rooms[s->room].n++] = s;
        atomic_fetch_add(&server_subs, 1);
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (!s || s->room < 0 || !s->wsi) break;
        size_t avail = atomic_load_explicit(&published[s->room], memory_order_acquire);
        if (s->next < avail) {
            size_t k = (size_t)s->room * events_per_room + s->next;
            int n = lws_write(wsi, frames[k] + LWS_PRE, frame_len[k], LWS_WRITE_TEXT);
            if (n < (int)frame_len[k]) return -1;
            s->next++;
        }
        if (s->next < avail) lws_callback_on_writable(wsi);
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
            if (avail == woken[r]) continue;
            woken[r] = avail;
            for (size_t i = 0; i < rooms[r].n; i++) lws_callback_on_writable(rooms[r].subs[i]->wsi);
        }
        break;
    default: break;
    }
    return 0;
}

static const struct lws_protocols fan_protocols[] = {
    {"chatflow-fanout", fan_callback, sizeof(fan_sub), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *server_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "fanout");
    while (!atomic_load(&server_stop))
        if (lws_service(server_ctx, 0) < 0) break;
    return NULL;
}

/* ---- the clients: as in it_broadcast_bench ---- */

/* A frame like the broadcaster's BroadcastEvent for event i of room r (1-based). */
static bool render_frames(void)
{
    size_t n = (size_t)ROOMS * events_per_room;
    frames = calloc(n, sizeof *frames);
    frame_len = calloc(n, sizeof *frame_len);
    if (!frames || !frame_len) return false;
    char ts[ISO8601_BUF], id[UUID_STR_BUF], json[1024];
    time_format_iso8601(time_wall_ms(), ts);
    for (int r = 1; r <= ROOMS; r++)
        for (size_t i = 0; i < events_per_room; i++) {
            uuid_v4(id);
            int len = snprintf(
                json, sizeof json,
                "{\"type\":\"MESSAGE\",\"messageId\":\"%s\",\"roomId\":\"%d\",\"userId\":\"%d\","
                "\"username\":\"user%d\",\"message\":\"benchmark message %zu for room %d, about "
                "the "
                "size of a chat line\",\"timestamp\":\"%s\",\"messageType\":\"TEXT\","
                "\"serverTimestamp\":\"%s\",\"sequenceNumber\":\"%llu\"}",
                id, r, 100 + r, 100 + r, i, r, ts, ts, TL_FANOUT_SEQ_BASE + (unsigned long long)i);
            size_t k = (size_t)(r - 1) * events_per_room + i;
            frames[k] = malloc(LWS_PRE + (size_t)len);
            if (!frames[k]) return false;
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
    /* Client contexts first: creating one sets lws's process-wide log level. */
    tl_fanout *clients = tl_fanout_new(CLIENT_THREADS, ROOMS, PER_ROOM, events_per_room);
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
    int port = lws_get_vhost_listen_port(vh);
    pthread_t server;
    pthread_create(&server, NULL, server_main, NULL);

    tl_fanout_start(clients, HOST, port);
    for (int i = 0; i < 500 && atomic_load(&server_subs) < ROOMS * PER_ROOM; i++) time_sleep_ms(10);

    double cpu_start = tl_proc_thread_cpu_seconds("fanout");
    uint64_t start = time_mono_ns();
    for (size_t i = 0; i < events_per_room; i++) {
        tl_fanout_pace(clients, i, AHEAD);
        for (int r = 0; r < ROOMS; r++)
            atomic_store_explicit(&published[r], i + 1, memory_order_release);
        lws_cancel_service(server_ctx);
    }
    tl_fanout_result got = tl_fanout_finish(clients);
    double cpu_end = tl_proc_thread_cpu_seconds("fanout");
    atomic_store(&server_stop, true);
    lws_cancel_service(server_ctx);
    pthread_join(server, NULL);
    lws_context_destroy(server_ctx);

    unsigned long long total = got.deliveries;
    double secs = (double)((got.last_ns > start ? got.last_ns : start) - start) / 1e9;
    size_t complete = got.complete, bad = got.bad;
    bool ok = complete == ROOMS * PER_ROOM && bad == 0;
    if (!ok)
        fprintf(stderr,
                "bench_ws_fanout: %zu of %d subscribers complete, %zu missed or reordered frames\n",
                complete, ROOMS * PER_ROOM, bad);
    printf("{\"rooms\":%d,\"subscribers_per_room\":%d,\"events_per_room\":%zu,\"deliveries\":%llu,"
           "\"seconds\":%.3f,"
           "\"deliveries_per_s\":%.0f,\"server_cpu_us_per_delivery\":%.2f,\"complete\":%s}\n",
           ROOMS, PER_ROOM, events_per_room, total, secs, secs > 0 ? (double)total / secs : 0.0,
           total && cpu_end > cpu_start ? (cpu_end - cpu_start) * 1e6 / (double)total : 0.0,
           ok ? "true" : "false");
    for (size_t k = 0; k < (size_t)ROOMS * events_per_room; k++) free(frames[k]);
    free(frames);
    free(frame_len);
    return ok ? 0 : 1;
}
