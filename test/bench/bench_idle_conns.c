/*
 * bench_idle_conns — resident memory per idle WebSocket connection of a server process, and the
 * baseline: a bare libwebsockets server holding the same connections.
 *
 *   bench_idle_conns serve                 a bare lws vhost on a free loopback port: upgrades
 *                                          /chat/{room} and does nothing else; prints
 *                                          "port N" on stdout, serves until SIGTERM
 *   bench_idle_conns hold --port P --pid PID [--connections N] [--rooms R] [--members]
 *                                          opens N WebSockets to 127.0.0.1:P, /chat/1..R
 *                                          round-robin (with --members, connection i names
 *                                          itself ?userId=i&username=user<i>), waits until the
 *                                          server's VmRSS settles, and prints one JSON line:
 *                                          connections, rss_before_kb, rss_after_kb,
 *                                          kib_per_connection
 *
 * Connections are opened 200 at a time on one client loop (the project's WebSocket client) and
 * kept open, idle, while /proc/PID/status is read; the server's RSS is read before the first and
 * after the last has upgraded and 2 s of quiet, the best of three reads each (RSS moves by a page
 * or two as allocator arenas settle). Exit 1 when fewer than N connections opened.
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tl_proc.h"
#include "timeutil.h"
#include "wsclient.h"

#define HOST "127.0.0.1"
#define OPEN_BATCH 200

/* ---- serve: the baseline server ---- */

static volatile sig_atomic_t serve_stop;

static void on_term(int sig)
{
    (void)sig;
    serve_stop = 1;
}

static int bare_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    (void)wsi, (void)user, (void)in, (void)len;
    return reason == LWS_CALLBACK_HTTP ? -1 : 0; /* only upgrades are served */
}

static int serve(void)
{
    static const struct lws_protocols protocols[] = {
        {"bare", bare_callback, 0, 0, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
    };
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = 0;
    info.iface = HOST;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "bench_idle_conns: cannot listen on %s\n", HOST);
        return 1;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    struct lws_vhost *vh = lws_get_vhost_by_name(ctx, "default");
    printf("port %d\n", vh ? lws_get_vhost_listen_port(vh) : -1);
    fflush(stdout);
    while (!serve_stop && lws_service(ctx, 0) >= 0) {
    }
    lws_context_destroy(ctx);
    return 0;
}

/* ---- hold: open N connections, read the server's RSS ---- */

/* The lowest of three reads 300 ms apart, servicing the client loop meanwhile. */
static long settled_rss_kb(wsc_ctx *ctx, pid_t pid)
{
    long best = -1;
    for (int i = 0; i < 3; i++) {
        uint64_t until = time_mono_ns() + 300000000ull;
        while (time_mono_ns() < until) wsc_service(ctx, 50);
        long kb = tl_proc_rss_kb(pid);
        if (kb >= 0 && (best < 0 || kb < best)) best = kb;
    }
    return best;
}

/* Starts conns[from..to) and services until each is open or failed (30 s at most). */
static size_t open_batch(wsc_ctx *ctx, wsc_conn **conns, size_t from, size_t to, int port,
                         int rooms, bool members)
{
    for (size_t i = from; i < to; i++) {
        char path[128];
        int room = (int)(i % (size_t)rooms) + 1;
        if (members)
            snprintf(path, sizeof path, "/chat/%d?userId=%zu&username=user%zu", room, i + 1, i + 1);
        else
            snprintf(path, sizeof path, "/chat/%d", room);
        conns[i] = wsc_connect_start(ctx, HOST, port, path);
    }
    uint64_t deadline = time_mono_ns() + 30000000000ull;
    size_t open = 0;
    while (time_mono_ns() < deadline) {
        size_t pending = 0;
        open = 0;
        for (size_t i = from; i < to; i++) {
            if (!conns[i]) continue;
            if (wsc_is_open(conns[i]))
                open++;
            else if (!wsc_has_failed(conns[i], NULL))
                pending++;
        }
        if (!pending) break;
        wsc_service(ctx, 20);
    }
    return open;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_idle_conns serve\n"
                    "       bench_idle_conns hold --port P --pid PID [--connections N] [--rooms R] "
                    "[--members]\n");
    return 2;
}

static int hold(int argc, char **argv)
{
    long port = 0, pid = 0, n = 2000, rooms = 20;
    bool members = false;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--members")) {
            members = true;
            continue;
        }
        if (i + 1 >= argc) return usage();
        char *end = NULL;
        long v = strtol(argv[++i], &end, 10);
        bool number = end && *end == '\0' && v > 0;
        if (!strcmp(flag, "--port") && number && v < 65536)
            port = v;
        else if (!strcmp(flag, "--pid") && number)
            pid = v;
        else if (!strcmp(flag, "--connections") && number && v <= 100000)
            n = v;
        else if (!strcmp(flag, "--rooms") && number && v <= 1000)
            rooms = v;
        else
            return usage();
    }
    if (!port || !pid) return usage();
    wsc_ctx *ctx = wsc_ctx_new();
    wsc_conn **conns = calloc((size_t)n, sizeof *conns);
    if (!ctx || !conns) {
        fprintf(stderr, "bench_idle_conns: out of memory\n");
        return 1;
    }
    long before = settled_rss_kb(ctx, (pid_t)pid);
    size_t open = 0;
    for (size_t from = 0; from < (size_t)n; from += OPEN_BATCH) {
        size_t to = from + OPEN_BATCH < (size_t)n ? from + OPEN_BATCH : (size_t)n;
        open += open_batch(ctx, conns, from, to, (int)port, (int)rooms, members);
    }
    uint64_t quiet = time_mono_ns() + 2000000000ull;
    while (time_mono_ns() < quiet) wsc_service(ctx, 50);
    long after = settled_rss_kb(ctx, (pid_t)pid);
    double per = open ? (double)(after - before) / (double)open : 0;
    printf("{\"connections\":%zu,\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"kib_per_connection\":"
           "%.2f}\n",
           open, before, after, per);
    for (long i = 0; i < n; i++)
        if (conns[i]) wsc_free(conns[i]);
    free(conns);
    wsc_ctx_free(ctx);
    if (open < (size_t)n || before < 0 || after < 0) {
        fprintf(stderr,
                "bench_idle_conns: %zu of %ld connections opened (server RSS %ld -> %ld KiB)\n",
                open, n, before, after);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "serve") && argc == 2) return serve();
    if (argc >= 2 && !strcmp(argv[1], "hold")) return hold(argc - 2, argv + 2);
    return usage();
}
