/*
 * workqueue — see workqueue.h for the contract.
 *
 * A ring buffer under one mutex with one condition variable for waiting consumers. That is
 * enough here: each push/pop holds the lock for a few instructions, the queues carry at most a
 * few thousand items per second per service (batches of messages, not single bytes), and on a
 * 2-core box a lock-free MPMC ring would buy nothing measurable while being far harder to get
 * right. The notify callback runs after the lock is released so that it can be slow (it calls
 * lws_cancel_service(), a write to a pipe) without holding up other producers.
 */
#include "workqueue.h"

#include "timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct workqueue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    void **ring;
    size_t capacity;
    size_t head;   /* next slot to pop */
    size_t length; /* items queued */
    bool closed;
    workqueue_notify_fn notify;
    void *notify_ctx;
};

workqueue *workqueue_new(size_t capacity, workqueue_notify_fn notify, void *notify_ctx)
{
    if (capacity == 0) return NULL;
    workqueue *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->ring = calloc(capacity, sizeof *q->ring);
    bool ok = q->ring && time_cond_init_monotonic(&q->not_empty);
    if (!ok || pthread_mutex_init(&q->lock, NULL) != 0) {
        if (ok) pthread_cond_destroy(&q->not_empty);
        free(q->ring);
        free(q);
        return NULL;
    }
    q->capacity = capacity;
    q->notify = notify;
    q->notify_ctx = notify_ctx;
    return q;
}

bool workqueue_push(workqueue *q, void *item)
{
    pthread_mutex_lock(&q->lock);
    bool accepted = !q->closed && q->length < q->capacity;
    if (accepted) {
        q->ring[(q->head + q->length) % q->capacity] = item;
        q->length++;
        pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->lock);
    if (accepted && q->notify) q->notify(q->notify_ctx);
    return accepted;
}

/* Caller holds the lock and has checked length > 0. */
static void *take_one(workqueue *q)
{
    void *item = q->ring[q->head];
    q->ring[q->head] = NULL;
    q->head = (q->head + 1) % q->capacity;
    q->length--;
    return item;
}

void *workqueue_pop_wait(workqueue *q, long timeout_ms)
{
    struct timespec deadline = time_mono_after_ms(timeout_ms);
    void *item = NULL;
    pthread_mutex_lock(&q->lock);
    while (q->length == 0 && !q->closed) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&q->not_empty, &q->lock);
        } else if (timeout_ms == 0 ||
                   pthread_cond_timedwait(&q->not_empty, &q->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    if (q->length > 0) item = take_one(q);
    pthread_mutex_unlock(&q->lock);
    return item;
}

size_t workqueue_pop_many(workqueue *q, void **items, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&q->lock);
    while (n < max && q->length > 0) items[n++] = take_one(q);
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t workqueue_length(workqueue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->length;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void workqueue_close(workqueue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

void workqueue_free(workqueue *q)
{
    if (!q) return;
    pthread_cond_destroy(&q->not_empty);
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
}
