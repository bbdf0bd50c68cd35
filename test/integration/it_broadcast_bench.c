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
/* test-passes: asan */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"
#include "metrics.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_fanout.h"
#include "tl_proc.h"
#include "uuid.h"
#include "../../consumer/broadcast.h"
#include "seqnum.h"

#define HOST "127.0.0.1"
#define ROOMS 20
#define PER_ROOM 50
#define CLIENT_THREADS 2

static size_t events_per_room;

static void publish_round(broadcaster *b, size_t i)
{
    char seq[SEQNUM_BUF], ts[ISO8601_BUF];
    snprintf(seq, sizeof seq, "%llu", TL_FANOUT_SEQ_BASE + (unsigned long long)i);
    time_format_iso8601(time_wall_ms(), ts);
    for (long r = 1; r <= ROOMS; r++) {
        chat_message m;
        memset(&m, 0, sizeof m);
        snprintf(m.user_id, sizeof m.user_id, "%ld", 100 + r);
        snprintf(m.username, sizeof m.username, "user%ld", 100 + r);
        snprintf(m.message, sizeof m.message,
                 "benchmark message %zu for room %ld, about the size of a chat line", i, r);
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
        .bind_addr = HOST,
        .port = 0,
        .rooms_max = ROOMS,
        .send_queue_max = 1024,
        .cache_per_room = 64,
        .max_subscribers = ROOMS * PER_ROOM + 10,
        .ping_interval_s = 30,
        .pong_timeout_s = 10,
        .history = NULL,
    };
    char err[200];
    /* Client contexts first: creating one sets the process-wide lws log level, which lws
     * threads read unlocked. */
    tl_fanout *clients = tl_fanout_new(CLIENT_THREADS, ROOMS, PER_ROOM, events_per_room);
    broadcaster *b = broadcast_start(&cfg, err, sizeof err);
    CHECK(b != NULL, "bench: broadcaster started (%s)", b ? "ok" : err);
    if (!b) {
        tl_fanout_finish(clients);
        return TEST_DONE();
    }
    tl_fanout_start(clients, HOST, broadcast_port(b));
    for (int i = 0; i < 500 && broadcast_subscriber_count(b) < ROOMS * PER_ROOM; i++)
        time_sleep_ms(10);
    CHECK_INT(broadcast_subscriber_count(b), ROOMS * PER_ROOM,
              "bench: 20 rooms x 50 subscribers connected");

    /* Publish round by round, keeping at most ~256 rounds ahead of the slowest deliveries so
     * the measure is of sustained delivery, not of queue growth. */
    double cpu_start = tl_proc_thread_cpu_seconds("cf-broadcast");
    uint64_t start = time_mono_ns();
    for (size_t i = 0; i < events_per_room; i++) {
        tl_fanout_pace(clients, i, 256);
        publish_round(b, i);
    }
    tl_fanout_result got = tl_fanout_finish(clients);
    double cpu_end = tl_proc_thread_cpu_seconds("cf-broadcast");
    unsigned long long total = got.deliveries;
    double secs = (double)((got.last_ns > start ? got.last_ns : start) - start) / 1e9;
    CHECK_INT(got.complete, ROOMS * PER_ROOM,
              "bench: all 1000 subscribers got all %zu events of their room once, in order",
              events_per_room);
    CHECK_INT(got.bad, 0, "bench: no subscriber missed, duplicated or reordered an event");
    char *text = metrics_render();
    CHECK(strstr(text, "\nchatflow_slow_subscribers_dropped_total 0\n") != NULL,
          "bench: nobody dropped as slow");
    free(text);
    NOTE("broadcast: %llu deliveries in %.2f s = %.0f deliveries/s (20 rooms x 50 subscribers, %zu "
         "events per room)",
         total, secs, secs > 0 ? (double)total / secs : 0.0, events_per_room);
    if (cpu_start >= 0 && cpu_end > cpu_start && total)
        NOTE("broadcast service thread: %.2f s CPU = %.1f us per delivery (%.0f deliveries per "
             "CPU-second)",
             cpu_end - cpu_start, (cpu_end - cpu_start) * 1e6 / (double)total,
             (double)total / (cpu_end - cpu_start));
    broadcast_stop(b);
    metrics_reset();
    return TEST_DONE();
}
