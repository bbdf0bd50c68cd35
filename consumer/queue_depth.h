/*
 * queue_depth — the chatflow_sqs_queue_depth{room} gauge: ApproximateNumberOfMessages of each
 * room queue, read with GetQueueAttributes every interval on a thread of its own (own SQS client).
 *
 * Contract: queue_depth_start() returns NULL (err set) on failure; interval_s 0 is rejected by the
 * caller (the feature is off). queue_depth_stop() wakes the thread, joins it and frees everything.
 */
#ifndef CHATFLOW_CONSUMER_QUEUE_DEPTH_H
#define CHATFLOW_CONSUMER_QUEUE_DEPTH_H

#include <stddef.h>

#include "sqs.h"

typedef struct queue_depth queue_depth;

/* queue_urls[i] is the queue of room room_min + i; must outlive the poller. */
queue_depth *queue_depth_start(const sqs_config *cfg, const char *const *queue_urls, long room_min,
                               long room_max, int interval_s, char *err, size_t err_len);
void queue_depth_stop(queue_depth *q);

#endif
