/*
 * chatflow-sqs — creates, inspects and purges ChatFlow's SQS queues.
 *
 *   chatflow-sqs setup   create (idempotently), for each shard s in 1..CHATFLOW_QUEUE_SHARDS,
 *                        the FIFO queue <prefix><s>.fifo with a redrive policy to its
 *                        dead-letter queue <prefix><s>-dlq.fifo; then the db DLQ and the spill
 *                        queue (a standard queue that holds messages during a database outage
 *                        until they are stored)
 *   chatflow-sqs stats   print every queue's depth (visible / in flight) as a table
 *   chatflow-sqs purge   delete every message of every queue
 *
 * Rooms are spread over the shards by room_shard() (room.h); this tool only needs the count.
 * Settings come from config.h (environment, or --flags; --help lists them). Exit status: 0 on
 * success, 1 when SQS refused or could not be reached, 2 for bad usage or settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "credentials.h"
#include "log.h"
#include "sqs.h"

/* Dead letters wait for a human: SQS's longest retention, whatever the shard queues use. */
#define DLQ_RETENTION_SECONDS "1209600"

typedef struct {
    struct chatflow_common_settings common;
    long long retention_seconds;
    long long max_receive_count;
    char spill_queue_name[96];
} tool_settings;

static const config_option options[] = {
    CONFIG_COMMON_OPTIONS(tool_settings),
    CONFIG_OPT_INT("CHATFLOW_SQS_RETENTION_SECONDS", "sqs-retention-seconds", tool_settings,
                   retention_seconds, "345600", 60, 1209600,
                   "MessageRetentionPeriod of the shard queues (setup)."),
    CONFIG_OPT_INT("CHATFLOW_SQS_MAX_RECEIVE_COUNT", "sqs-max-receive-count", tool_settings,
                   max_receive_count, "5", 1, 1000,
                   "Receives before a message moves to its shard's dead-letter queue (setup)."),
    CONFIG_OPT_STR(
        "CHATFLOW_SPILL_QUEUE_NAME", "spill-queue-name", tool_settings, spill_queue_name,
        "chatflow-db-spill", NULL,
        "Standard queue for messages spilled during a database outage (the consumer's setting)."),
};

static const char summary[] =
    "Manages ChatFlow's SQS queues. Commands:\n"
    "  setup   create the queue of each shard 1..CHATFLOW_QUEUE_SHARDS, their dead-letter queues,\n"
    "          the db DLQ and the spill queue (idempotent)\n"
    "  stats   print each queue's depth\n"
    "  purge   delete every message of every queue";

typedef struct {
    const tool_settings *settings;
    sqs_client *client;
} tool;

/* Every failure goes through here. Returns 1 (the exit status). */
static int report(const char *what, const char *queue, sqs_status s, const sqs_error *err)
{
    if (s == SQS_NETWORK_ERROR) {
        /* err->message already names the action and the endpoint */
        fprintf(stderr, "chatflow-sqs: cannot reach SQS (while checking %s): %s\n", queue,
                err->message);
    } else {
        fprintf(stderr, "chatflow-sqs: %s %s failed: %s (HTTP %ld%s%s): %s\n", what, queue,
                sqs_status_name(s), err->http_status, err->type[0] ? ", " : "", err->type,
                err->message);
    }
    return 1;
}

static void shard_queue_name(const tool *t, long long shard, char *out, size_t len)
{
    snprintf(out, len, "%s%lld.fifo", t->settings->common.queue_prefix, shard);
}

static void shard_dlq_name(const tool *t, long long shard, char *out, size_t len)
{
    snprintf(out, len, "%s%lld-dlq.fifo", t->settings->common.queue_prefix, shard);
}

/* ---- setup ---- */

static bool already_exists(sqs_status s, const sqs_error *err)
{
    return s == SQS_INVALID_REQUEST && (strcmp(err->type, "QueueAlreadyExists") == 0 ||
                                        strcmp(err->type, "QueueNameExists") == 0 ||
                                        strstr(err->type, "QueueAlreadyExists") != NULL);
}

/* CreateQueue is idempotent for equal attributes; when the queue exists with other attributes
 * (settings changed since the last setup), the mutable ones are updated in place. attrs[0] must
 * be FifoQueue, which cannot be changed. */
static int ensure_queue(const tool *t, const char *name, const sqs_attribute *attrs, size_t n,
                        char **url, const char **action)
{
    sqs_error err;
    sqs_status s = sqs_create_queue(t->client, name, attrs, n, url, &err);
    *action = "ready";
    if (s == SQS_OK) return 0;
    if (!already_exists(s, &err)) return report("CreateQueue", name, s, &err);
    s = sqs_get_queue_url(t->client, name, url, &err);
    if (s != SQS_OK) return report("GetQueueUrl", name, s, &err);
    s = sqs_set_queue_attributes(t->client, *url, attrs + 1, n - 1, &err);
    if (s != SQS_OK) return report("SetQueueAttributes", name, s, &err);
    *action = "updated";
    return 0;
}

static int queue_arn(const tool *t, const char *name, const char *url, char **arn)
{
    static const char *const names[] = {"QueueArn"};
    sqs_error err;
    sqs_status s = sqs_get_queue_attributes(t->client, url, names, 1, arn, &err);
    if (s != SQS_OK) return report("GetQueueAttributes", name, s, &err);
    if (!*arn) {
        fprintf(stderr, "chatflow-sqs: GetQueueAttributes %s: the answer has no QueueArn\n", name);
        return 1;
    }
    return 0;
}

static int setup_dead_letter_queue(const tool *t, const char *name, char **url)
{
    const sqs_attribute attrs[] = {
        {"FifoQueue", "true"},
        {"ContentBasedDeduplication", "false"},
        {"MessageRetentionPeriod", DLQ_RETENTION_SECONDS},
    };
    const char *action;
    int rc = ensure_queue(t, name, attrs, sizeof attrs / sizeof attrs[0], url, &action);
    if (rc == 0) printf("%-7s %-40s %s\n", action, name, *url);
    return rc;
}

static int setup_shard(const tool *t, long long shard)
{
    char name[160], dlq[160], retention[32], redrive[1024];
    shard_queue_name(t, shard, name, sizeof name);
    shard_dlq_name(t, shard, dlq, sizeof dlq);
    char *dlq_url = NULL, *arn = NULL, *url = NULL;
    int rc = setup_dead_letter_queue(t, dlq, &dlq_url);
    if (rc == 0) rc = queue_arn(t, dlq, dlq_url, &arn);
    if (rc == 0) {
        snprintf(retention, sizeof retention, "%lld", t->settings->retention_seconds);
        snprintf(redrive, sizeof redrive,
                 "{\"deadLetterTargetArn\":\"%s\",\"maxReceiveCount\":\"%lld\"}", arn,
                 t->settings->max_receive_count);
        const sqs_attribute attrs[] = {
            {"FifoQueue", "true"},
            {"ContentBasedDeduplication", "false"},
            {"VisibilityTimeout", "30"},
            {"ReceiveMessageWaitTimeSeconds", "20"},
            {"MessageRetentionPeriod", retention},
            {"RedrivePolicy", redrive},
        };
        const char *action;
        rc = ensure_queue(t, name, attrs, sizeof attrs / sizeof attrs[0], &url, &action);
        if (rc == 0)
            printf("%-7s %-40s %s (shard %lld of %lld; dead letters -> %s after %lld receives)\n",
                   action, name, url, shard, t->settings->common.queue_shards, dlq,
                   t->settings->max_receive_count);
    }
    free(dlq_url);
    free(arn);
    free(url);
    return rc;
}

/* A standard queue (spilled rows carry their own sequence numbers, so order does not matter) with
 * the longest retention, and no redrive policy: a spilled message waits for the database however
 * often it is received while the database is down. */
static int setup_spill_queue(const tool *t)
{
    const char *name = t->settings->spill_queue_name;
    size_t len = strlen(name);
    if (len >= 5 && strcmp(name + len - 5, ".fifo") == 0) {
        fprintf(stderr,
                "chatflow-sqs: CHATFLOW_SPILL_QUEUE_NAME \"%s\" must not end in .fifo (it is a "
                "standard queue)\n",
                name);
        return 2;
    }
    const sqs_attribute attrs[] = {
        {"VisibilityTimeout", "30"},
        {"MessageRetentionPeriod", DLQ_RETENTION_SECONDS},
    };
    char *url = NULL;
    const char *action;
    int rc = ensure_queue(t, name, attrs, sizeof attrs / sizeof attrs[0], &url, &action);
    if (rc == 0) printf("%-7s %-40s %s\n", action, name, url);
    free(url);
    return rc;
}

static int cmd_setup(const tool *t)
{
    const char *db_dlq = t->settings->common.dlq_name;
    size_t len = strlen(db_dlq);
    if (len < 5 || strcmp(db_dlq + len - 5, ".fifo") != 0) {
        fprintf(stderr,
                "chatflow-sqs: CHATFLOW_DLQ_NAME (--dlq-name) \"%s\" must end in .fifo (it is a "
                "FIFO queue)\n",
                db_dlq);
        return 2;
    }
    for (long long shard = 1; shard <= t->settings->common.queue_shards; shard++) {
        int rc = setup_shard(t, shard);
        if (rc != 0) return rc;
    }
    char *url = NULL;
    int rc = setup_dead_letter_queue(t, db_dlq, &url);
    free(url);
    return rc == 0 ? setup_spill_queue(t) : rc;
}

/* ---- stats and purge: the same walk over every queue ---- */

typedef int (*queue_fn)(const tool *t, const char *name, const char *url, int *missing);

/* Returns non-zero to stop the walk (SQS unreachable or a hard error). */
static int visit(const tool *t, const char *name, queue_fn fn, int *missing)
{
    char *url = NULL;
    sqs_error err;
    sqs_status s = sqs_get_queue_url(t->client, name, &url, &err);
    if (s == SQS_QUEUE_MISSING) {
        (*missing)++;
        return fn(t, name, NULL, missing);
    }
    if (s != SQS_OK) return report("GetQueueUrl", name, s, &err);
    int rc = fn(t, name, url, missing);
    free(url);
    return rc;
}

static int for_each_queue(const tool *t, queue_fn fn, int *missing)
{
    char name[160];
    for (long long shard = 1; shard <= t->settings->common.queue_shards; shard++) {
        shard_queue_name(t, shard, name, sizeof name);
        int rc = visit(t, name, fn, missing);
        if (rc == 0) {
            shard_dlq_name(t, shard, name, sizeof name);
            rc = visit(t, name, fn, missing);
        }
        if (rc != 0) return rc;
    }
    int rc = visit(t, t->settings->common.dlq_name, fn, missing);
    return rc == 0 ? visit(t, t->settings->spill_queue_name, fn, missing) : rc;
}

static int print_depth(const tool *t, const char *name, const char *url, int *missing)
{
    (void)missing;
    if (!url) {
        printf("%-40s %12s %12s\n", name, "missing", "missing");
        return 0;
    }
    static const char *const names[] = {"ApproximateNumberOfMessages",
                                        "ApproximateNumberOfMessagesNotVisible"};
    char *values[2] = {NULL, NULL};
    sqs_error err;
    sqs_status s = sqs_get_queue_attributes(t->client, url, names, 2, values, &err);
    if (s != SQS_OK) return report("GetQueueAttributes", name, s, &err);
    printf("%-40s %12s %12s\n", name, values[0] ? values[0] : "?", values[1] ? values[1] : "?");
    free(values[0]);
    free(values[1]);
    return 0;
}

static int purge_one(const tool *t, const char *name, const char *url, int *missing)
{
    (void)missing;
    if (!url) {
        printf("missing %s\n", name);
        return 0;
    }
    sqs_error err;
    sqs_status s = sqs_purge_queue(t->client, url, &err);
    if (s == SQS_INVALID_REQUEST && strstr(err.type, "PurgeQueueInProgress")) {
        printf("purging %s (a purge started in the last 60 s is still running)\n", name);
        return 0;
    }
    if (s != SQS_OK) return report("PurgeQueue", name, s, &err);
    printf("purged  %s\n", name);
    return 0;
}

static int walk_and_report(const tool *t, queue_fn fn)
{
    int missing = 0;
    int rc = for_each_queue(t, fn, &missing);
    if (rc == 0 && missing > 0) {
        fprintf(stderr,
                "chatflow-sqs: %d queue(s) missing (for %lld shards); run \"chatflow-sqs setup\" "
                "with the same CHATFLOW_QUEUE_SHARDS\n",
                missing, t->settings->common.queue_shards);
        rc = 1;
    }
    return rc;
}

static int cmd_stats(const tool *t)
{
    printf("%-40s %12s %12s\n", "QUEUE", "VISIBLE", "IN_FLIGHT");
    return walk_and_report(t, print_depth);
}

static int cmd_purge(const tool *t) { return walk_and_report(t, purge_one); }

/* ---- main ---- */

int main(int argc, char **argv)
{
    tool_settings settings;
    char err[512];
    config_result cr =
        config_load(options, sizeof options / sizeof options[0], &settings,
                    "chatflow-sqs setup|stats|purge", summary, &argc, argv, err, sizeof err);
    if (cr == CONFIG_HELP) return 0;
    if (cr == CONFIG_ERROR || !config_common_finish(&settings.common, err, sizeof err)) {
        fprintf(stderr, "chatflow-sqs: %s\n", err);
        return 2;
    }
    int (*command)(const tool *) = NULL;
    if (argc == 2 && strcmp(argv[1], "setup") == 0)
        command = cmd_setup;
    else if (argc == 2 && strcmp(argv[1], "stats") == 0)
        command = cmd_stats;
    else if (argc == 2 && strcmp(argv[1], "purge") == 0)
        command = cmd_purge;
    if (!command) {
        fprintf(stderr,
                "chatflow-sqs: expected one command, setup, stats or purge%s%s (see --help)\n",
                argc >= 2 ? ", got " : "", argc >= 2 ? argv[1] : "");
        return 2;
    }

    credentials_provider *credentials = credentials_provider_new(err, sizeof err);
    if (!credentials) {
        fprintf(stderr, "chatflow-sqs: %s\n", err);
        return 1;
    }
    char endpoint[300];
    if (settings.common.sqs_endpoint[0])
        snprintf(endpoint, sizeof endpoint, "%s", settings.common.sqs_endpoint);
    else
        snprintf(endpoint, sizeof endpoint, "https://sqs.%s.amazonaws.com",
                 settings.common.aws_region);
    const sqs_config cfg = {
        .region = settings.common.aws_region,
        .endpoint = endpoint,
        .credentials = credentials,
        .connect_timeout_ms = (long)settings.common.sqs_connect_timeout_ms,
        .request_timeout_ms = (long)settings.common.sqs_request_timeout_ms,
        .max_attempts = 3,
    };
    sqs_client *client = sqs_client_new(&cfg, err, sizeof err);
    if (!client) {
        fprintf(stderr, "chatflow-sqs: %s\n", err);
        credentials_provider_free(credentials);
        return 2;
    }
    const tool t = {.settings = &settings, .client = client};
    int rc = command(&t);
    sqs_client_free(client);
    credentials_provider_free(credentials);
    return rc;
}
