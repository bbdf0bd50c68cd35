/* queue_epoch — positions that survive a queue made again; see queue_epoch.h. */
#include "queue_epoch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"

#define COMPONENT "queue-epoch"

void queue_epoch_mark_stale(queue_epoch *qe) { qe->stale = true; }

static bool sqs_seqnum_valid(const char *seq)
{
    return seqnum_valid(seq) && strlen(seq) <= SQS_SEQNUM_DIGITS;
}

bool queue_position(uint64_t epoch, const char *seq, char out[SEQNUM_BUF])
{
    if (epoch == 0 || !seq || !sqs_seqnum_valid(seq)) return false;
    size_t len = strlen(seq), pad = SQS_SEQNUM_DIGITS - len;
    int n = snprintf(out, SEQNUM_BUF, "%" PRIu64, epoch);
    if (n <= 0 || (size_t)n + SQS_SEQNUM_DIGITS > SEQNUM_MAX_DIGITS) return false;
    memset(out + n, '0', pad);
    memcpy(out + n + pad, seq, len + 1);
    return true;
}

uint64_t queue_epoch_read(sqs_client *c, const char *queue_url, char *err, size_t err_len)
{
    static const char *const names[] = {"CreatedTimestamp"};
    if (failpoint_on("epoch-unreadable")) { /* as without sqs:GetQueueAttributes in the policy */
        snprintf(err, err_len, "GetQueueAttributes CreatedTimestamp: refused (test failpoint)");
        return 0;
    }
    char *value = NULL;
    sqs_error e = {0};
    sqs_status s = sqs_get_queue_attributes(c, queue_url, names, 1, &value, &e);
    uint64_t epoch = 0;
    if (s != SQS_OK) {
        snprintf(err, err_len, "GetQueueAttributes CreatedTimestamp: %s (%s %s)",
                 sqs_status_name(s), e.type, e.message);
    } else if (!value || !value[0] || strspn(value, "0123456789") != strlen(value) ||
               strlen(value) > 19) {
        snprintf(err, err_len, "GetQueueAttributes: CreatedTimestamp \"%.40s\" is not a time",
                 value ? value : "(absent)");
    } else {
        errno = 0;
        epoch = strtoull(value, NULL, 10);
        if (errno || epoch == 0) {
            snprintf(err, err_len, "GetQueueAttributes: CreatedTimestamp %s is not a time", value);
            epoch = 0;
        }
    }
    free(value);
    return epoch;
}

static bool needs_read(const queue_epoch *qe, const char *seq, queue_seq_kind kind)
{
    if (qe->epoch == 0 || qe->stale) return true;
    if (time_mono_ns() - qe->read_ns >= (uint64_t)QUEUE_EPOCH_MAX_AGE_S * 1000000000ull)
        return true;
    switch (kind) {
    case QUEUE_SEQ_SENT: return qe->highest[0] && seqnum_cmp(seq, qe->highest) <= 0;
    case QUEUE_SEQ_FIRST_RECEIVE: return qe->lowest[0] && seqnum_cmp(seq, qe->lowest) <= 0;
    case QUEUE_SEQ_REDELIVERY: break;
    }
    return false;
}

static void note_seen(queue_epoch *qe, const char *seq, queue_seq_kind kind)
{
    if (kind == QUEUE_SEQ_SENT && (!qe->highest[0] || seqnum_cmp(seq, qe->highest) > 0))
        snprintf(qe->highest, sizeof(qe->highest), "%s", seq);
    if (kind == QUEUE_SEQ_FIRST_RECEIVE && (!qe->lowest[0] || seqnum_cmp(seq, qe->lowest) < 0))
        snprintf(qe->lowest, sizeof(qe->lowest), "%s", seq);
}

/* Registered at the first read (each service reads its queues' epochs at start), so the series
 * exists from then on at 0. Racing threads register the same counter: the registry returns it. */
static metric_counter *changes_counter(void)
{
    static _Atomic(metric_counter *) counter;
    metric_counter *c = atomic_load_explicit(&counter, memory_order_acquire);
    if (!c) {
        c = metrics_counter(
            "chatflow_queue_epoch_changes_total",
            "Times a queue was found made again (a new CreatedTimestamp) under this process.",
            NULL);
        atomic_store_explicit(&counter, c, memory_order_release);
    }
    return c;
}

static bool read_epoch(queue_epoch *qe, sqs_client *c, const char *queue_url, char *err,
                       size_t err_len)
{
    if (qe->retry_ns && time_mono_ns() < qe->retry_ns) {
        snprintf(err, err_len, "%s (read again shortly)", qe->failure);
        return false;
    }
    uint64_t epoch = queue_epoch_read(c, queue_url, err, err_len);
    if (epoch == 0) {
        snprintf(qe->failure, sizeof(qe->failure), "%s", err);
        qe->retry_ns = time_mono_ns() + QUEUE_EPOCH_RETRY_MS * 1000000ull;
        return false;
    }
    qe->retry_ns = 0;
    changes_counter();
    if (qe->epoch != 0 && epoch != qe->epoch) {
        metric_counter_inc(changes_counter());
        log_warn(COMPONENT,
                 "%s was made again (CreatedTimestamp %" PRIu64 " -> %" PRIu64
                 "): its messages are positioned in the new epoch",
                 queue_url, qe->epoch, epoch);
        if (epoch < qe->epoch)
            log_error(COMPONENT,
                      "%s: the new epoch is older than the last one (clock?): its "
                      "messages sort before the queue's earlier ones",
                      queue_url);
    }
    if (epoch != qe->epoch) qe->lowest[0] = qe->highest[0] = '\0';
    qe->epoch = epoch;
    qe->stale = false;
    qe->read_ns = time_mono_ns();
    return true;
}

bool queue_epoch_position(queue_epoch *qe, sqs_client *c, const char *queue_url, const char *seq,
                          queue_seq_kind kind, char out[SEQNUM_BUF], char *err, size_t err_len)
{
    if (!seq || !sqs_seqnum_valid(seq)) {
        snprintf(err, err_len, "SequenceNumber \"%.64s\" is not an SQS sequence number",
                 seq ? seq : "(absent)");
        return false;
    }
    if (needs_read(qe, seq, kind) && !read_epoch(qe, c, queue_url, err, err_len)) return false;
    note_seen(qe, seq, kind);
    if (!queue_position(qe->epoch, seq, out)) {
        snprintf(err, err_len, "epoch %" PRIu64 " and %s make no position", qe->epoch, seq);
        return false;
    }
    return true;
}
