/* sqs_health — the last SQS call's outcome for /health/ready (contract in sqs_health.h). */
#include "sqs_health.h"

#include <stdio.h>

#include "log.h"

/* Logged as the poller's, as before the move: the pollers make nearly every SQS call. */
#define COMPONENT "poller"

void sqs_health_init(sqs_health *h)
{
    pthread_mutex_init(&h->mu, NULL);
    h->up = false;
    snprintf(h->detail, sizeof(h->detail), "no SQS call yet");
}

void sqs_health_record(sqs_health *h, sqs_status s, const char *action, const sqs_error *e)
{
    pthread_mutex_lock(&h->mu);
    bool was = h->up;
    h->up = s == SQS_OK;
    if (h->up)
        snprintf(h->detail, sizeof(h->detail), "last %s succeeded", action);
    else
        snprintf(h->detail, sizeof(h->detail), "last %s failed: %s %s %s", action,
                 sqs_status_name(s), e ? e->type : "", e ? e->message : "");
    pthread_mutex_unlock(&h->mu);
    if (was && s != SQS_OK)
        log_warn(COMPONENT, "SQS %s failed: %s (%s %s)", action, sqs_status_name(s),
                 e ? e->type : "", e ? e->message : "");
}

bool sqs_health_check(void *ctx, char *detail, size_t detail_len)
{
    sqs_health *h = ctx;
    pthread_mutex_lock(&h->mu);
    bool up = h->up;
    snprintf(detail, detail_len, "%s", h->detail);
    pthread_mutex_unlock(&h->mu);
    return up;
}

void sqs_health_destroy(sqs_health *h) { pthread_mutex_destroy(&h->mu); }
