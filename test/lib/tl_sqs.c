/* tl_sqs — see tl_sqs.h. */
#include "tl_sqs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"
#include "tl_proc.h"

bool tl_sqs_open(tl_sqs *s, const char *prefix, int request_timeout_ms)
{
    memset(s, 0, sizeof *s);
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
    char err[256];
    s->creds = credentials_provider_new(err, sizeof err);
    if (!s->creds) {
        tl_note("credentials: %s", err);
        return false;
    }
    sqs_config cfg = {.region = tl_env("AWS_REGION", "us-east-1"),
                      .endpoint = tl_env("AWS_ENDPOINT_URL_SQS", NULL),
                      .credentials = s->creds,
                      .request_timeout_ms = request_timeout_ms};
    s->sqs = sqs_client_new(&cfg, err, sizeof err);
    if (!s->sqs) tl_note("sqs client: %s", err);
    return s->sqs != NULL;
}

void tl_sqs_close(tl_sqs *s)
{
    for (int i = 0; i <= TL_SQS_MAX_SHARD; i++) free(s->urls[i]);
    memset(s->urls, 0, sizeof s->urls);
    sqs_client_free(s->sqs);
    credentials_provider_free(s->creds);
    s->sqs = NULL;
    s->creds = NULL;
}

bool tl_sqs_url(tl_sqs *s, const char *name, char **url)
{
    sqs_error e;
    *url = NULL;
    if (sqs_get_queue_url(s->sqs, name, url, &e) == SQS_OK) return true;
    tl_note("GetQueueUrl %s: %s %s", name, e.type, e.message);
    return false;
}

/* Creates (create = true) or looks up the queue of each shard 1..shards. */
static bool shard_queues(tl_sqs *s, int shards, bool create)
{
    static const sqs_attribute attrs[] = {{"FifoQueue", "true"},
                                          {"ContentBasedDeduplication", "false"}};
    if (shards < 1 || shards > TL_SQS_MAX_SHARD) {
        tl_note("%d queue shards: the test library holds 1..%d", shards, TL_SQS_MAX_SHARD);
        return false;
    }
    for (int q = 1; q <= shards; q++) {
        char name[128];
        snprintf(name, sizeof name, "%s%d.fifo", s->prefix, q);
        free(s->urls[q]);
        s->urls[q] = NULL;
        sqs_error e;
        if (!create) {
            if (!tl_sqs_url(s, name, &s->urls[q])) return false;
        } else if (sqs_create_queue(s->sqs, name, attrs, 2, &s->urls[q], &e) != SQS_OK) {
            tl_note("CreateQueue %s: %s %s", name, e.type, e.message);
            return false;
        }
    }
    return true;
}

bool tl_sqs_create_shards(tl_sqs *s, int shards) { return shard_queues(s, shards, true); }

bool tl_sqs_lookup_shards(tl_sqs *s, int shards) { return shard_queues(s, shards, false); }

static void keep(tl_sqs_msg **out, size_t *cap, size_t *n, const sqs_message *m)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *out = realloc(*out, *cap * sizeof **out);
    }
    (*out)[*n].body = strdup(m->body);
    snprintf((*out)[*n].group_id, sizeof(*out)[*n].group_id, "%s", m->group_id ? m->group_id : "");
    (*n)++;
}

static void delete_all(tl_sqs *s, const char *url, const sqs_message *ms, size_t k)
{
    sqs_handle_entry he[SQS_MAX_BATCH];
    sqs_entry_result res[SQS_MAX_BATCH];
    char ids[SQS_MAX_BATCH][24];
    for (size_t i = 0; i < k; i++) {
        snprintf(ids[i], sizeof ids[i], "%zu", i);
        he[i] = (sqs_handle_entry){.id = ids[i], .receipt_handle = ms[i].receipt_handle};
    }
    sqs_error e;
    sqs_delete_message_batch(s->sqs, url, he, k, res, &e);
}

tl_sqs_msg *tl_sqs_drain_shard(tl_sqs *s, int shard, size_t *n)
{
    tl_sqs_msg *out = NULL;
    size_t cap = 0;
    *n = 0;
    if (shard < 1 || shard > TL_SQS_MAX_SHARD || !s->urls[shard]) {
        tl_note("drain: shard %d has no queue URL (created or looked up?)", shard);
        return NULL;
    }
    sqs_receive_options o = {
        .max_messages = SQS_MAX_BATCH, .wait_seconds = 0, .visibility_timeout = 60};
    for (int empty = 0; empty < 3;) {
        sqs_message *ms = NULL;
        size_t k = 0;
        sqs_error e;
        if (sqs_receive_message(s->sqs, s->urls[shard], &o, &ms, &k, &e) != SQS_OK) {
            tl_note("ReceiveMessage shard %d: %s", shard, e.message);
            break;
        }
        if (k == 0) {
            empty++;
            time_sleep_ms(20);
            continue;
        }
        empty = 0;
        for (size_t i = 0; i < k; i++) keep(&out, &cap, n, &ms[i]);
        delete_all(s, s->urls[shard], ms, k);
        sqs_messages_free(ms, k);
    }
    return out;
}

void tl_sqs_msgs_free(tl_sqs_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) free(m[i].body);
    free(m);
}

long tl_sqs_depth(tl_sqs *s, const char *url)
{
    const char *names[] = {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"};
    char *vals[2] = {NULL, NULL};
    sqs_error e;
    long depth = -1;
    if (sqs_get_queue_attributes(s->sqs, url, names, 2, vals, &e) == SQS_OK)
        depth = (vals[0] ? atol(vals[0]) : 0) + (vals[1] ? atol(vals[1]) : 0);
    free(vals[0]);
    free(vals[1]);
    return depth;
}

long tl_sqs_shard_depth(tl_sqs *s, int shard)
{
    if (shard < 1 || shard > TL_SQS_MAX_SHARD || !s->urls[shard]) return -1;
    return tl_sqs_depth(s, s->urls[shard]);
}
