/* queue_depth — periodic GetQueueAttributes into a per-shard gauge; see queue_depth.h. */
#include "queue_depth.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

struct queue_depth {
    sqs_client *sqs;
    const char *const *urls;
    int shards;
    int interval_s;
    metric_gauge **gauges;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

static void refresh(queue_depth *q)
{
    static const char *const names[] = {"ApproximateNumberOfMessages"};
    for (int shard = 1; shard <= q->shards; shard++) {
        if (!q->urls[shard - 1]) continue; /* not polled by this consumer */
        char *values[1] = {NULL};
        sqs_error e = {0};
        sqs_status s = sqs_get_queue_attributes(q->sqs, q->urls[shard - 1], names, 1, values, &e);
        if (s == SQS_OK && values[0])
            metric_gauge_set(q->gauges[shard - 1], strtod(values[0], NULL));
        else if (s != SQS_OK)
            log_debug("queue-depth", "shard %d: GetQueueAttributes: %s %s", shard,
                      sqs_status_name(s), e.message);
        free(values[0]);
    }
}

static void *queue_depth_main(void *arg)
{
    queue_depth *q = arg;
    pthread_setname_np(pthread_self(), "cf-qdepth");
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        pthread_mutex_unlock(&q->mu);
        refresh(q);
        pthread_mutex_lock(&q->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += q->interval_s;
        while (!q->stopping && pthread_cond_timedwait(&q->cv, &q->mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

queue_depth *queue_depth_start(const sqs_config *cfg, const char *const *queue_urls, int shards,
                               int interval_s, char *err, size_t err_len)
{
    queue_depth *q = calloc(1, sizeof(*q));
    if (!q || !(q->gauges = calloc((size_t)shards, sizeof(*q->gauges)))) {
        free(q);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    q->urls = queue_urls;
    q->shards = shards;
    q->interval_s = interval_s > 0 ? interval_s : 1;
    for (int shard = 1; shard <= shards; shard++) {
        if (!queue_urls[shard - 1]) continue;
        char labels[48];
        snprintf(labels, sizeof(labels), "shard=\"%d\"", shard);
        q->gauges[shard - 1] = metrics_gauge(
            "chatflow_sqs_queue_depth",
            "Messages waiting in the shard queue (ApproximateNumberOfMessages).", labels);
    }
    q->sqs = sqs_client_new(cfg, err, err_len);
    if (!q->sqs) {
        free(q->gauges);
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&q->thread, NULL, queue_depth_main, q);
    if (rc != 0) {
        snprintf(err, err_len, "pthread_create: %s", strerror(rc));
        sqs_client_free(q->sqs);
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        free(q->gauges);
        free(q);
        return NULL;
    }
    return q;
}

void queue_depth_stop(queue_depth *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    sqs_client_free(q->sqs);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->gauges);
    free(q);
}
