/*
 * bench_consumer_fill — loads the room queues with protocol.md §4 messages for the consumer
 * benchmark, and writes the same rows as a COPY text file, so the benchmark can time a plain COPY
 * of exactly what the consumer stored.
 *
 *   bench_consumer_fill --messages N --rooms R --copy-file PATH [--prefix chatflow-room-]
 *
 * Rooms are "1".."R", each on its own queue: with R <= CHATFLOW_QUEUE_SHARDS (20 by default) room
 * "r" is shard r (room.h), so queue <prefix>r.fifo is the one the consumer polls for it.
 * One thread per room (its own SQS client), SendMessageBatch of 10, group = room, dedup =
 * messageId. userId uniform 1..100000, username user<id>, 90% TEXT / 5% JOIN / 5% LEAVE. Endpoint
 * and credentials from the environment. Prints one JSON line: {"messages", "rooms", "seconds"}.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "credentials.h"
#include "log.h"
#include "message.h"
#include "sqs.h"
#include "timeutil.h"
#include "uuid.h"
#include "../../consumer/batch_writer.h"

typedef struct {
    int room;
    long messages;
    const char *prefix;
    sqs_config cfg;
    chat_message *sent; /* this room's messages, for the COPY file */
    char error[512];
} room_job;

static const char *const texts[] = {
    "Hello everyone!", "How is it going?",     "Anyone here?", "Good morning",
    "See you later",   "That is a great idea", "I agree",      "Let me check",
    "Thanks!",         "Nice to meet you all",
};

static void make_message(chat_message *m, int room, unsigned *seed)
{
    memset(m, 0, sizeof *m);
    int user = 1 + (int)(rand_r(seed) % 100000);
    int t = (int)(rand_r(seed) % 100);
    snprintf(m->user_id, sizeof m->user_id, "%d", user);
    snprintf(m->username, sizeof m->username, "user%d", user);
    snprintf(m->message, sizeof m->message, "%s", texts[rand_r(seed) % 10]);
    snprintf(m->message_type, sizeof m->message_type, "%s",
             t < 90   ? "TEXT"
             : t < 95 ? "JOIN"
                      : "LEAVE");
    int64_t now = time_wall_ms();
    time_format_iso8601(now, m->timestamp);
    uuid_v4(m->message_id);
    snprintf(m->room_id, sizeof m->room_id, "%d", room);
    snprintf(m->server_id, sizeof m->server_id, "bench");
    snprintf(m->client_ip, sizeof m->client_ip, "127.0.0.1");
    time_format_iso8601(now, m->received_at);
}

static void *fill_room(void *arg)
{
    room_job *j = arg;
    sqs_client *c = sqs_client_new(&j->cfg, j->error, sizeof j->error);
    if (!c) return NULL;
    char name[128], *url = NULL, group[16];
    snprintf(name, sizeof name, "%s%d.fifo", j->prefix, j->room);
    snprintf(group, sizeof group, "%d", j->room);
    sqs_error e;
    if (sqs_get_queue_url(c, name, &url, &e) != SQS_OK) {
        snprintf(j->error, sizeof j->error, "GetQueueUrl %.100s: %.200s", name, e.message);
        sqs_client_free(c);
        return NULL;
    }
    unsigned seed = (unsigned)j->room * 7919u;
    for (long i = 0; i < j->messages; i += SQS_MAX_BATCH) {
        size_t n = (size_t)(j->messages - i < SQS_MAX_BATCH ? j->messages - i : SQS_MAX_BATCH);
        sqs_send_entry entries[SQS_MAX_BATCH];
        sqs_entry_result res[SQS_MAX_BATCH];
        char *bodies[SQS_MAX_BATCH];
        char ids[SQS_MAX_BATCH][24];
        for (size_t k = 0; k < n; k++) {
            chat_message *m = &j->sent[i + (long)k];
            make_message(m, j->room, &seed);
            bodies[k] = queue_message_to_json(m);
            snprintf(ids[k], sizeof ids[k], "e%zu", k);
            entries[k] = (sqs_send_entry){ids[k], bodies[k], group, m->message_id};
        }
        sqs_status s = sqs_send_message_batch(c, url, entries, n, res, &e);
        bool ok = s == SQS_OK;
        for (size_t k = 0; k < n; k++) {
            ok = ok && res[k].ok;
            free(bodies[k]);
        }
        if (!ok) {
            snprintf(j->error, sizeof j->error, "SendMessageBatch room %d failed: %.100s %.200s",
                     j->room, e.type, e.message);
            break;
        }
    }
    free(url);
    sqs_client_free(c);
    return NULL;
}

/* COPY text format: the bench rows contain no tab, newline or backslash (fixed texts). */
static bool write_copy_file(const char *path, room_job *jobs, int rooms)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    char err[128];
    for (int r = 0; r < rooms; r++)
        for (long i = 0; i < jobs[r].messages; i++) {
            write_row w;
            if (!write_row_init(&w, &jobs[r].sent[i], "", err, sizeof err)) continue;
            fprintf(f, "%s\t%s\t%ld\t%s\t%s\t%s\t%s\t%s\t%ld\t%s\t%s\n", w.message_id, w.room_id,
                    w.user_id, w.username, w.message_text, w.message_type, w.server_id, w.client_ip,
                    i + 1, w.client_timestamp, w.received_at);
        }
    return fclose(f) == 0;
}

int main(int argc, char **argv)
{
    long messages = 20000;
    int rooms = 20;
    const char *copy_file = NULL, *prefix = "chatflow-room-";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--messages") == 0)
            messages = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rooms") == 0)
            rooms = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--copy-file") == 0)
            copy_file = argv[i + 1];
        else if (strcmp(argv[i], "--prefix") == 0)
            prefix = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_consumer_fill --messages N --rooms R --copy-file PATH "
                            "[--prefix P]\n");
            return 2;
        }
    }
    if (messages < rooms || rooms < 1 || rooms > 256 || !copy_file) {
        fprintf(stderr,
                "bench_consumer_fill: need --copy-file, 1 <= rooms <= 256, messages >= rooms\n");
        return 2;
    }
    log_init("warn", "text");
    char err[256];
    credentials_provider *cp = credentials_provider_new(err, sizeof err);
    if (!cp) {
        fprintf(stderr, "bench_consumer_fill: %s\n", err);
        return 1;
    }
    const char *endpoint = getenv("AWS_ENDPOINT_URL_SQS");
    sqs_config cfg = {.region = getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1",
                      .endpoint = endpoint && *endpoint ? endpoint : NULL,
                      .credentials = cp,
                      .request_timeout_ms = 10000};
    room_job *jobs = calloc((size_t)rooms, sizeof *jobs);
    pthread_t *threads = calloc((size_t)rooms, sizeof *threads);
    uint64_t t0 = time_mono_ns();
    for (int r = 0; r < rooms; r++) {
        jobs[r] = (room_job){.room = r + 1,
                             .messages = messages / rooms + (r < messages % rooms),
                             .prefix = prefix,
                             .cfg = cfg};
        jobs[r].sent = calloc((size_t)jobs[r].messages, sizeof(chat_message));
        pthread_create(&threads[r], NULL, fill_room, &jobs[r]);
    }
    bool ok = true;
    for (int r = 0; r < rooms; r++) {
        pthread_join(threads[r], NULL);
        if (jobs[r].error[0]) {
            fprintf(stderr, "bench_consumer_fill: %s\n", jobs[r].error);
            ok = false;
        }
    }
    double seconds = (double)(time_mono_ns() - t0) / 1e9;
    if (ok && !write_copy_file(copy_file, jobs, rooms)) {
        fprintf(stderr, "bench_consumer_fill: cannot write %s\n", copy_file);
        ok = false;
    }
    if (ok) printf("{\"messages\":%ld,\"rooms\":%d,\"seconds\":%.3f}\n", messages, rooms, seconds);
    for (int r = 0; r < rooms; r++) free(jobs[r].sent);
    free(jobs);
    free(threads);
    credentials_provider_free(cp);
    return ok ? 0 : 1;
}
