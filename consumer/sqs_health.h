/*
 * sqs_health — whether SQS answered the consumer's last call, for /health/ready.
 *
 * Contract:
 *  - sqs_health_record() is called after each SQS call (any thread: pollers, start-up) with its
 *    outcome; the detail names the action and, on failure, the error. A transition from up to
 *    down is logged once (warning), not every failure.
 *  - sqs_health_check() is a health_check_fn (ctx is the sqs_health): up, and the detail, as of
 *    the last recorded call; "no SQS call yet" (down) before the first.
 *  - init before any thread records; destroy after the last.
 */
#ifndef CHATFLOW_CONSUMER_SQS_HEALTH_H
#define CHATFLOW_CONSUMER_SQS_HEALTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "sqs.h"

typedef struct {
    pthread_mutex_t mu;
    bool up;
    char detail[768];
} sqs_health;

void sqs_health_init(sqs_health *h);
void sqs_health_record(sqs_health *h, sqs_status s, const char *action, const sqs_error *e);
bool sqs_health_check(void *ctx, char *detail, size_t detail_len); /* health_check_fn */
void sqs_health_destroy(sqs_health *h);

#endif
