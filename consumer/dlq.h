/*
 * dlq — sends a message that will never be stored to the dead-letter queue (docs/operations.md).
 *
 * Contract:
 *  - The DLQ body is {"originalMessage": <the SQS body, as a string>, "failureReason": "...",
 *    "failureTimestamp": "<ISO-8601>", "attemptCount": N}. The original goes in as a string
 *    because a poison body need not be JSON at all.
 *  - MessageGroupId is given by the caller (the poller uses the room); MessageDeduplicationId
 *    is the SQS MessageId of the original, so a retried send is not stored twice.
 *  - Counts chatflow_dlq_messages_total{reason} (reason: "poison" or "db") on success.
 *  - Returns false (err set) when SQS did not take it: the caller must then NOT delete the
 *    original, which comes back after its visibility timeout.
 */
#ifndef CHATFLOW_CONSUMER_DLQ_H
#define CHATFLOW_CONSUMER_DLQ_H

#include <stdbool.h>
#include <stddef.h>

#include "sqs.h"

typedef enum { DLQ_POISON, DLQ_DB } dlq_reason;

/* Registers the metric series; call once before threads start. */
void dlq_metrics_init(void);
/* Builds the body (malloc'd, caller frees); NULL on allocation failure. */
char *dlq_body(const char *original, const char *failure_reason, int attempt_count,
               long long now_ms);
bool dlq_send(sqs_client *c, const char *dlq_url, dlq_reason reason, const char *original,
              const char *failure_reason, int attempt_count, const char *group_id,
              const char *dedup_id, char *err, size_t err_len);

#endif
