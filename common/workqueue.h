/*
 * workqueue — a bounded, thread-safe FIFO of pointers for handing work between threads.
 *
 * Contract:
 *  - Producers push, consumers pop; ownership of the pointed-to item moves with it.
 *  - workqueue_push() never blocks: it returns false when the queue is full or closed (the caller
 *    keeps ownership and decides: pause input, answer an error, ...).
 *  - workqueue_pop_wait() blocks up to timeout_ms (-1: forever) and returns NULL on timeout or
 *    when the queue is closed and empty. workqueue_pop_many() drains up to max items without
 *    blocking (the lws service thread uses it after LWS_CALLBACK_EVENT_WAIT_CANCELLED).
 *  - workqueue_close() wakes every waiter; pushes fail afterwards; what is queued can still be
 *    popped. workqueue_free() frees the queue, not the items (drain first).
 *  - An optional notify callback runs after each successful push, outside the lock (the
 *    producer and consumer pass one that calls lws_cancel_service()).
 */
#ifndef CHATFLOW_WORKQUEUE_H
#define CHATFLOW_WORKQUEUE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct workqueue workqueue;
typedef void (*workqueue_notify_fn)(void *ctx);

workqueue *workqueue_new(size_t capacity, workqueue_notify_fn notify, void *notify_ctx);
bool workqueue_push(workqueue *q, void *item);
void *workqueue_pop_wait(workqueue *q, long timeout_ms);
size_t workqueue_pop_many(workqueue *q, void **items, size_t max);
size_t workqueue_length(workqueue *q);
void workqueue_close(workqueue *q);
void workqueue_free(workqueue *q);

#endif
