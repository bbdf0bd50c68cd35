/*
 * tl_fanout — the subscriber side of the broadcast benchmarks
 * (test/integration/it_broadcast_bench.c against consumer/broadcast.c, test/bench/bench_ws_fanout.c
 * against bare libwebsockets): the same client code on both, so their figures compare. Part of
 * libtestsupport (tl_).
 *
 * Contract:
 *  - tl_fanout_new() creates the client threads' WebSocket contexts (one per thread). Call it
 *    before the server starts: creating a context sets lws's process-wide log level, which lws
 *    threads read unlocked.
 *  - tl_fanout_start() starts the threads; they share rooms x per_room subscribers, subscriber i
 *    on /chat/<1 + i % rooms>, all on host:port, and it returns when every thread has made its
 *    connections (a failed one is noted on stderr as "# ...").
 *  - Event i of every room must carry "sequenceNumber":"<TL_FANOUT_SEQ_BASE + i>"; a subscriber is
 *    complete when it got events 0..events_per_room-1 each once, in order. The check reads only
 *    that key, so the clients are not the bottleneck.
 *  - tl_fanout_pace() blocks the publisher of round i while it is more than `ahead` rounds past
 *    the deliveries, so a benchmark measures sustained delivery, not queue growth.
 *  - tl_fanout_finish() says publishing is over, waits for every thread (a thread gives up 30 s
 *    after that), frees the contexts and reports: complete subscribers, bad ones (missed,
 *    duplicated or reordered), deliveries, and when the last thread finished (time_mono_ns).
 */
#ifndef CHATFLOW_TL_FANOUT_H
#define CHATFLOW_TL_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#define TL_FANOUT_SEQ_BASE 10000000000000000000ULL

typedef struct tl_fanout tl_fanout;

typedef struct {
    size_t complete;
    size_t bad;
    unsigned long long deliveries;
    uint64_t last_ns;
} tl_fanout_result;

tl_fanout *tl_fanout_new(int threads, int rooms, int per_room, size_t events_per_room);
void tl_fanout_start(tl_fanout *f, const char *host, int port);
unsigned long long tl_fanout_delivered(tl_fanout *f);
void tl_fanout_pace(tl_fanout *f, size_t round, size_t ahead);
/* Joins the threads and frees f. */
tl_fanout_result tl_fanout_finish(tl_fanout *f);

#endif
