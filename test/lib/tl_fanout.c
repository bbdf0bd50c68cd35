/* tl_fanout — see tl_fanout.h. */
#include "tl_fanout.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"
#include "wsclient.h"

#define GIVE_UP_NS (30ULL * 1000000000ULL)

typedef struct {
    size_t next; /* index of the next expected event */
    bool out_of_order;
    atomic_ullong *delivered;
} sub_state;

typedef struct {
    tl_fanout *f;
    wsc_ctx *ws;
    wsc_conn **conns;
    sub_state *subs;
    int index;
    size_t first, count; /* this thread's subscribers: first .. first + count - 1 */
    size_t connected, complete, bad;
    uint64_t last_ns;
    pthread_t tid;
} client_thread;

struct tl_fanout {
    int threads, rooms;
    size_t subscribers, events_per_room;
    const char *host;
    int port;
    atomic_ullong delivered;
    atomic_int threads_connected;
    atomic_bool publishing_done;
    client_thread *t;
};

tl_fanout *tl_fanout_new(int threads, int rooms, int per_room, size_t events_per_room)
{
    tl_fanout *f = calloc(1, sizeof *f);
    f->threads = threads;
    f->rooms = rooms;
    f->subscribers = (size_t)rooms * (size_t)per_room;
    f->events_per_room = events_per_room;
    f->t = calloc((size_t)threads, sizeof *f->t);
    size_t per_thread = f->subscribers / (size_t)threads;
    for (int k = 0; k < threads; k++) {
        client_thread *t = &f->t[k];
        t->f = f;
        t->index = k;
        t->first = (size_t)k * per_thread;
        t->count = k == threads - 1 ? f->subscribers - t->first : per_thread;
        t->conns = calloc(t->count, sizeof *t->conns);
        t->subs = calloc(t->count, sizeof *t->subs);
        t->ws = wsc_ctx_new();
    }
    return f;
}

static void on_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    sub_state *s = user;
    const char *key = "\"sequenceNumber\":\"";
    const char *p = memmem(data, len, key, strlen(key));
    unsigned long long seq = p ? strtoull(p + strlen(key), NULL, 10) : 0;
    if (seq != TL_FANOUT_SEQ_BASE + s->next) s->out_of_order = true;
    s->next++;
    atomic_fetch_add_explicit(s->delivered, 1, memory_order_relaxed);
}

static void connect_all(client_thread *t)
{
    char path[32], err[200];
    for (size_t i = 0; i < t->count; i++) {
        snprintf(path, sizeof path, "/chat/%d", 1 + (int)((t->first + i) % (size_t)t->f->rooms));
        t->subs[i].delivered = &t->f->delivered;
        int status = 0;
        t->conns[i] =
            wsc_connect(t->ws, t->f->host, t->f->port, path, 5000, &status, err, sizeof err);
        if (!t->conns[i]) {
            fprintf(stderr, "# fan-out thread %d: connect %s failed: %d %s\n", t->index, path,
                    status, err);
            continue;
        }
        wsc_set_callbacks(t->conns[i], on_message, NULL, &t->subs[i]);
        t->connected++;
    }
}

static bool all_received(const client_thread *t)
{
    size_t done = 0;
    for (size_t i = 0; i < t->count; i++) done += t->subs[i].next >= t->f->events_per_room;
    return done == t->connected;
}

static void tally(client_thread *t)
{
    for (size_t i = 0; i < t->count; i++) {
        if (t->subs[i].next == t->f->events_per_room && !t->subs[i].out_of_order)
            t->complete++;
        else if (t->conns[i])
            t->bad++;
        if (t->conns[i]) wsc_free(t->conns[i]);
    }
}

static void *client_main(void *arg)
{
    client_thread *t = arg;
    connect_all(t);
    atomic_fetch_add(&t->f->threads_connected, 1);
    uint64_t deadline = 0;
    while (!all_received(t)) {
        if (atomic_load(&t->f->publishing_done)) {
            if (!deadline) deadline = time_mono_ns() + GIVE_UP_NS;
            if (time_mono_ns() > deadline) break;
        }
        wsc_service(t->ws, 50);
    }
    t->last_ns = time_mono_ns();
    tally(t);
    return NULL;
}

void tl_fanout_start(tl_fanout *f, const char *host, int port)
{
    f->host = host;
    f->port = port;
    for (int k = 0; k < f->threads; k++) pthread_create(&f->t[k].tid, NULL, client_main, &f->t[k]);
    while (atomic_load(&f->threads_connected) < f->threads) time_sleep_ms(10);
}

unsigned long long tl_fanout_delivered(tl_fanout *f) { return atomic_load(&f->delivered); }

void tl_fanout_pace(tl_fanout *f, size_t round, size_t ahead)
{
    while (round > ahead && atomic_load(&f->delivered) / f->subscribers + ahead < round)
        time_sleep_ms(1);
}

tl_fanout_result tl_fanout_finish(tl_fanout *f)
{
    tl_fanout_result r = {0};
    atomic_store(&f->publishing_done, true);
    for (int k = 0; k < f->threads; k++) {
        client_thread *t = &f->t[k];
        if (f->host) pthread_join(t->tid, NULL);
        if (t->last_ns > r.last_ns) r.last_ns = t->last_ns;
        r.complete += t->complete;
        r.bad += t->bad;
        wsc_ctx_free(t->ws);
        free(t->conns);
        free(t->subs);
    }
    r.deliveries = atomic_load(&f->delivered);
    free(f->t);
    free(f);
    return r;
}
