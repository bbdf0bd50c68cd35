/* test_workqueue — bounded FIFO semantics, close, timeouts, notify, and MPMC exactly-once delivery.
 */
/* test-passes: asan tsan */
#include "testlib.h"
#include "workqueue.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define PRODUCERS 4
#define CONSUMERS 3
#define PER_PRODUCER 20000
#define TOTAL (PRODUCERS * PER_PRODUCER)

static void *item(uintptr_t n) { return (void *)n; }

static long elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

static void test_fifo_and_bounds(void)
{
    CHECK(workqueue_new(0, NULL, NULL) == NULL, "capacity 0 is refused");
    workqueue *q = workqueue_new(3, NULL, NULL);
    CHECK(q != NULL, "new queue");
    /* CHECK evaluates its condition twice on failure: side effects happen outside it. */
    bool pushed =
        workqueue_push(q, item(1)) && workqueue_push(q, item(2)) && workqueue_push(q, item(3));
    CHECK(pushed, "three pushes fit capacity 3");
    pushed = workqueue_push(q, item(4));
    CHECK(!pushed, "push to a full queue fails without blocking");
    CHECK_INT(workqueue_length(q), 3, "length 3");
    void *popped = workqueue_pop_wait(q, 0);
    CHECK(popped == item(1), "FIFO order: 1");
    pushed = workqueue_push(q, item(4));
    CHECK(pushed, "room again after a pop (ring wraps)");
    void *got[8];
    size_t n = workqueue_pop_many(q, got, 2);
    CHECK(n == 2 && got[0] == item(2) && got[1] == item(3), "pop_many takes at most max, in order");
    n = workqueue_pop_many(q, got, 8);
    CHECK(n == 1 && got[0] == item(4), "pop_many drains the rest");
    n = workqueue_pop_many(q, got, 8);
    CHECK_INT(n, 0, "pop_many on empty returns 0 at once");
    popped = workqueue_pop_wait(q, 0);
    CHECK(popped == NULL, "pop_wait(0) on empty returns NULL at once");

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    popped = workqueue_pop_wait(q, 120);
    CHECK(popped == NULL, "pop_wait times out with NULL");
    CHECK(elapsed_ms(&start) >= 115, "pop_wait waited for its timeout before giving up");

    workqueue_push(q, item(5));
    workqueue_close(q);
    pushed = workqueue_push(q, item(6));
    CHECK(!pushed, "push after close fails");
    popped = workqueue_pop_wait(q, -1);
    CHECK(popped == item(5), "queued item still pops after close");
    popped = workqueue_pop_wait(q, -1);
    CHECK(popped == NULL, "closed and empty: pop_wait(-1) returns NULL");
    workqueue_free(q);
    workqueue_free(NULL);
}

static void *wait_forever(void *arg) { return workqueue_pop_wait(arg, -1); }

static void test_close_wakes_waiters(void)
{
    workqueue *q = workqueue_new(4, NULL, NULL);
    pthread_t a, b;
    pthread_create(&a, NULL, wait_forever, q);
    pthread_create(&b, NULL, wait_forever, q);
    struct timespec pause = {0, 50 * 1000000L};
    nanosleep(&pause, NULL); /* let both block; the check holds either way */
    workqueue_close(q);
    void *ra = item(1), *rb = item(1);
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    CHECK(ra == NULL && rb == NULL, "close wakes every blocked waiter with NULL");
    workqueue_free(q);
}

struct notify_probe {
    workqueue *q;
    atomic_int calls;
    atomic_int length_seen;
};

static void count_notify(void *ctx)
{
    struct notify_probe *p = ctx;
    /* Taking the queue's lock here would deadlock if notify ran under it. */
    atomic_store(&p->length_seen, (int)workqueue_length(p->q));
    atomic_fetch_add(&p->calls, 1);
}

static void test_notify(void)
{
    struct notify_probe probe = {0};
    workqueue *q = workqueue_new(2, count_notify, &probe);
    probe.q = q;
    workqueue_push(q, item(1));
    CHECK_INT(atomic_load(&probe.length_seen), 1,
              "notify runs after the item is visible, outside the lock");
    workqueue_push(q, item(2));
    workqueue_push(q, item(3)); /* full: no notify */
    CHECK_INT(atomic_load(&probe.calls), 2, "notify once per successful push only");
    workqueue_close(q);
    workqueue_push(q, item(4));
    CHECK_INT(atomic_load(&probe.calls), 2, "no notify after close");
    void *drain[2];
    workqueue_pop_many(q, drain, 2);
    workqueue_free(q);
}

static workqueue *shared;
static atomic_int seen[TOTAL + 1];
static atomic_int push_failures;

static void *producer(void *arg)
{
    uintptr_t base = (uintptr_t)arg * PER_PRODUCER;
    for (uintptr_t i = 1; i <= PER_PRODUCER; i++) {
        while (!workqueue_push(shared, item(base + i))) {
            atomic_fetch_add(&push_failures, 1);
            sched_yield();
        }
    }
    return NULL;
}

static void *consumer_blocking(void *arg)
{
    (void)arg;
    void *it;
    while ((it = workqueue_pop_wait(shared, -1)) != NULL) atomic_fetch_add(&seen[(uintptr_t)it], 1);
    return NULL;
}

static atomic_bool producers_done;

static void *consumer_batching(void *arg)
{
    (void)arg;
    void *batch[16];
    for (;;) {
        size_t n = workqueue_pop_many(shared, batch, 16);
        for (size_t i = 0; i < n; i++) atomic_fetch_add(&seen[(uintptr_t)batch[i]], 1);
        if (n > 0) continue;
        void *it = workqueue_pop_wait(shared, 5);
        if (it) {
            atomic_fetch_add(&seen[(uintptr_t)it], 1);
        } else if (atomic_load(&producers_done) && workqueue_length(shared) == 0) {
            return NULL;
        }
    }
}

static void test_mpmc(void)
{
    shared = workqueue_new(64, NULL, NULL); /* small, so producers meet a full queue */
    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&cons[i], NULL, i == 0 ? consumer_batching : consumer_blocking, NULL);
    for (uintptr_t i = 0; i < PRODUCERS; i++) pthread_create(&prod[i], NULL, producer, (void *)i);
    for (int i = 0; i < PRODUCERS; i++) pthread_join(prod[i], NULL);
    atomic_store(&producers_done, true);
    workqueue_close(shared);
    for (int i = 0; i < CONSUMERS; i++) pthread_join(cons[i], NULL);

    int missing = 0, duplicated = 0;
    for (int i = 1; i <= TOTAL; i++) {
        int n = atomic_load(&seen[i]);
        missing += n == 0;
        duplicated += n > 1;
    }
    CHECK_INT(missing, 0, "every one of %d items arrived (%d producers, %d consumers)", TOTAL,
              PRODUCERS, CONSUMERS);
    CHECK_INT(duplicated, 0, "no item arrived twice");
    CHECK_INT(workqueue_length(shared), 0, "queue drained");
    NOTE("producers met a full queue %d times", atomic_load(&push_failures));
    workqueue_free(shared);
}

int main(void)
{
    test_fifo_and_bounds();
    test_close_wakes_waiters();
    test_notify();
    test_mpmc();
    return TEST_DONE();
}
