/*
 * queue_depth — the chatflow_sqs_queue_depth{shard} gauge: ApproximateNumberOfMessages of each
 * queue shard (room.h), read with GetQueueAttributes every interval on a thread of its own (own SQS
 * client).
 *
 * Contract: queue_depth_start() returns NULL (err set) on failure; interval_s 0 is rejected by the
 * caller (the feature is off). queue_depth_stop() wakes the thread, joins it and frees everything.
 */
#ifndef CHATFLOW_CONSUMER_QUEUE_DEPTH_H
#define CHATFLOW_CONSUMER_QUEUE_DEPTH_H

#include <stddef.h>

#include "sqs.h"

typedef struct queue_depth queue_depth;

/* queue_urls[i] is the queue of shard i + 1, NULL for a shard not polled here (no gauge); must
 * outlive the refresher. */
queue_depth *queue_depth_start(const sqs_config *cfg, const char *const *queue_urls, int shards,
                               int interval_s, char *err, size_t err_len);
void queue_depth_stop(queue_depth *q);

#endif
