/* dlq — dead-letter queue sends; see dlq.h. */
#include "dlq.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics.h"
#include "timeutil.h"

static metric_counter *dlq_counter(dlq_reason reason)
{
    return metrics_counter("chatflow_dlq_messages_total",
                           "Messages sent to the dead-letter queue, by reason (poison, db).",
                           reason == DLQ_POISON ? "reason=\"poison\"" : "reason=\"db\"");
}

void dlq_metrics_init(void)
{
    dlq_counter(DLQ_POISON);
    dlq_counter(DLQ_DB);
}

char *dlq_body(const char *original, const char *failure_reason, int attempt_count,
               long long now_ms)
{
    char ts[ISO8601_BUF];
    time_format_iso8601(now_ms, ts);
    /* originalMessage may be any bytes: jansson refuses invalid UTF-8, so fall back to a
     * lossless-enough marker rather than losing the whole record. */
    json_t *orig = json_string(original);
    if (!orig) orig = json_string("(original body is not valid UTF-8)");
    json_t *o = json_pack("{s:o, s:s, s:s, s:i}", "originalMessage", orig, "failureReason",
                          failure_reason, "failureTimestamp", ts, "attemptCount", attempt_count);
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

bool dlq_send(sqs_client *c, const char *dlq_url, dlq_reason reason, const char *original,
              const char *failure_reason, int attempt_count, const char *group_id,
              const char *dedup_id, char *err, size_t err_len)
{
    char *body = dlq_body(original, failure_reason, attempt_count, time_wall_ms());
    if (!body) {
        snprintf(err, err_len, "out of memory building the DLQ body");
        return false;
    }
    sqs_error e = {0};
    sqs_send_result res;
    sqs_status s = sqs_send_message(c, dlq_url, body, group_id, dedup_id, &res, &e);
    free(body);
    if (s != SQS_OK) {
        snprintf(err, err_len, "DLQ send: %s (%s %s)", sqs_status_name(s), e.type, e.message);
        return false;
    }
    metric_counter_inc(dlq_counter(reason));
    return true;
}
