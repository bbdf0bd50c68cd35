/*
 * sqs — an Amazon SQS client speaking the AWS JSON 1.0 protocol over libcurl, signed with SigV4.
 *
 * Contract:
 *  - One sqs_client per thread: it owns one libcurl easy handle, so its connection is kept alive
 *    between calls. Clients are not thread-safe; the credentials provider they share is.
 *  - Endpoint: cfg.endpoint (from AWS_ENDPOINT_URL_SQS) or https://sqs.{region}.amazonaws.com.
 *    Requests: POST /, X-Amz-Target: AmazonSQS.<Action>, Content-Type: application/x-amz-json-1.0,
 *    SigV4 with service "sqs".
 *  - Every call returns an sqs_status. Errors are classified from the HTTP status and the JSON
 *    "__type" (the part after '#'): throttling -> SQS_THROTTLED; 5xx / network / timeout ->
 *    SQS_SERVER_ERROR / SQS_NETWORK_ERROR; QueueDoesNotExist / NonExistentQueue ->
 * SQS_QUEUE_MISSING; other 4xx -> SQS_INVALID_REQUEST (or SQS_AUTH_ERROR for signature/credential
 * types). sqs_error carries the HTTP status, the AWS type and message for the log.
 *  - Retriable kinds (throttled, server, network) are retried inside the call up to
 *    cfg.max_attempts in total, sleeping a random time in [0, min(max_backoff, base * 2^n)]
 *    ("full jitter"). Set max_attempts = 1 to do your own retrying.
 *  - Batch calls answer per entry: results[i] corresponds to entries[i]. The call returns SQS_OK
 *    when the request itself succeeded even if some entries failed; check results[i].ok.
 *  - Every request is counted in chatflow_sqs_requests_total{action,result} and timed in
 *    chatflow_sqs_request_duration_seconds{action} (metrics.h default registry).
 *  - Strings returned through pointers (queue URLs, messages) are malloc'd and owned by the caller;
 *    free messages with sqs_messages_free().
 */
#ifndef CHATFLOW_SQS_H
#define CHATFLOW_SQS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "credentials.h"

typedef enum {
    SQS_OK = 0,
    SQS_THROTTLED,
    SQS_SERVER_ERROR,
    SQS_NETWORK_ERROR,
    SQS_QUEUE_MISSING,
    SQS_INVALID_REQUEST,
    SQS_AUTH_ERROR,
} sqs_status;

const char *sqs_status_name(sqs_status s); /* "ok", "throttled", ... (metric label) */
bool sqs_status_retriable(sqs_status s);

typedef struct {
    long http_status; /* 0 when no HTTP answer */
    char type[128];   /* AWS error type, e.g. "QueueDoesNotExist" */
    char message[512];
} sqs_error;

typedef struct {
    const char *region;                /* required */
    const char *endpoint;              /* NULL -> https://sqs.{region}.amazonaws.com */
    credentials_provider *credentials; /* required; shared, not owned */
    long connect_timeout_ms;           /* 0 -> 2000 */
    long request_timeout_ms;           /* 0 -> 30000; long polls add their wait time on top */
    int max_attempts;                  /* 0 -> 4 */
    int base_backoff_ms;               /* 0 -> 50 */
    int max_backoff_ms;                /* 0 -> 2000 */
} sqs_config;

typedef struct sqs_client sqs_client;

/* Copies what it needs from cfg. NULL on failure (err set). */
sqs_client *sqs_client_new(const sqs_config *cfg, char *err, size_t err_len);
/* Ends calls early: once *flag is true (set by any thread), a call in progress — a long poll
 * included — returns SQS_NETWORK_ERROR within about a second (libcurl's progress callback), and no
 * retry starts. For bounded shutdown. flag must outlive the client; NULL turns it off. */
void sqs_client_set_abort(sqs_client *c, const atomic_bool *flag);
bool sqs_client_aborted(const sqs_client *c);
void sqs_client_free(sqs_client *c);

typedef struct {
    const char *name;
    const char *value;
} sqs_attribute;

sqs_status sqs_create_queue(sqs_client *c, const char *name, const sqs_attribute *attrs,
                            size_t n_attrs, char **queue_url, sqs_error *err);
sqs_status sqs_get_queue_url(sqs_client *c, const char *name, char **queue_url, sqs_error *err);
/* names: e.g. "ApproximateNumberOfMessages"; values[i] receives a malloc'd string or NULL. */
sqs_status sqs_get_queue_attributes(sqs_client *c, const char *queue_url, const char *const *names,
                                    size_t n_names, char **values, sqs_error *err);
sqs_status sqs_set_queue_attributes(sqs_client *c, const char *queue_url,
                                    const sqs_attribute *attrs, size_t n_attrs, sqs_error *err);
sqs_status sqs_purge_queue(sqs_client *c, const char *queue_url, sqs_error *err);

typedef struct {
    char message_id[128];
    char sequence_number[64];
} sqs_send_result;

sqs_status sqs_send_message(sqs_client *c, const char *queue_url, const char *body,
                            const char *group_id, const char *dedup_id, sqs_send_result *result,
                            sqs_error *err);

#define SQS_MAX_BATCH 10

typedef struct {
    const char *id; /* unique within the batch: [A-Za-z0-9_-]{1,80} */
    const char *body;
    const char *group_id; /* FIFO only, else NULL */
    const char *dedup_id; /* FIFO only, else NULL */
} sqs_send_entry;

typedef struct {
    bool ok;
    bool sender_fault; /* true: retrying the same entry will fail again */
    char message_id[128];
    char sequence_number[64];
    char code[64];
    char message[256];
} sqs_entry_result;

/* n <= SQS_MAX_BATCH. */
sqs_status sqs_send_message_batch(sqs_client *c, const char *queue_url,
                                  const sqs_send_entry *entries, size_t n,
                                  sqs_entry_result *results, sqs_error *err);

typedef struct {
    char *message_id;
    char *receipt_handle;
    char *body;
    char *sequence_number;       /* "" for standard queues */
    char *group_id;              /* "" for standard queues */
    int receive_count;           /* ApproximateReceiveCount */
    long long sent_timestamp_ms; /* SentTimestamp, 0 if absent */
} sqs_message;

typedef struct {
    int max_messages;       /* 1..10 */
    int wait_seconds;       /* 0..20 long poll */
    int visibility_timeout; /* < 0: queue default */
    const char *attempt_id; /* ReceiveRequestAttemptId, FIFO only; NULL for none */
} sqs_receive_options;

/* On SQS_OK *messages is a malloc'd array of *n_messages (may be 0, then *messages is NULL). */
sqs_status sqs_receive_message(sqs_client *c, const char *queue_url, const sqs_receive_options *opt,
                               sqs_message **messages, size_t *n_messages, sqs_error *err);
void sqs_messages_free(sqs_message *messages, size_t n);

typedef struct {
    const char *id;
    const char *receipt_handle;
    int visibility_timeout; /* ChangeMessageVisibilityBatch only */
} sqs_handle_entry;

sqs_status sqs_delete_message_batch(sqs_client *c, const char *queue_url,
                                    const sqs_handle_entry *entries, size_t n,
                                    sqs_entry_result *results, sqs_error *err);
sqs_status sqs_change_visibility_batch(sqs_client *c, const char *queue_url,
                                       const sqs_handle_entry *entries, size_t n,
                                       sqs_entry_result *results, sqs_error *err);

/* The client's own parsing of SQS answers, callable without a request (for tests and fuzzing;
 * added by the hardening work). The client runs exactly these on every answer it gets.
 *  - sqs_parse_error_answer(): a non-200 answer (body of len bytes, and the value of its
 *    x-amzn-query-error header or NULL) -> its sqs_status kind, with err filled.
 *  - sqs_parse_receive_answer(): a 200 ReceiveMessage body -> messages as sqs_receive_message().
 *  - sqs_parse_batch_answer(): a 200 Send/Delete/ChangeVisibility batch body -> results[i] for
 *    ids[i] (n <= SQS_MAX_BATCH), as the batch calls.
 * A 200 body that is not a JSON object gives SQS_SERVER_ERROR ("MalformedResponse"). */
sqs_status sqs_parse_error_answer(long http_status, const char *body, size_t len,
                                  const char *query_error, sqs_error *err);
sqs_status sqs_parse_receive_answer(const char *body, size_t len, sqs_message **messages,
                                    size_t *n_messages, sqs_error *err);
sqs_status sqs_parse_batch_answer(const char *body, size_t len, const char *const *ids, size_t n,
                                  sqs_entry_result *results, sqs_error *err);

/* Tests only: forgets the cached metric series pointers. Call it right after metrics_reset()
 * (which frees them) and before the next SQS call. (Added by the SQS implementer.) */
void sqs_metrics_forget(void);

#endif
