/*
 * bench_sqs_ceiling — what the SQS endpoint itself can do, measured with the bare project client:
 * the baseline that the producer's and the consumer's figures are divided by.
 *
 *   bench_sqs_ceiling [--messages N] [--rooms R] [--body-bytes B] [--probes P]
 *
 * Uses the endpoint of the environment (AWS_ENDPOINT_URL_SQS, AWS_REGION, credentials) and queues
 * of its own (chatflow-bench-ceiling-{1..R}.fifo, created and purged here), one thread per room:
 *   send:  SendMessageBatch of 10, one request in flight per room (as the producer publishes);
 *   drain: ReceiveMessage (10, short wait) + DeleteMessageBatch per room until all N are back.
 *   probes (--probes P): P times in a row on an empty queue, one message SendMessageBatch ->
 *          ReceiveMessage -> DeleteMessageBatch, each timed: the emulator's own latency floor
 *          for one message through the whole queue path.
 * Prints one JSON line: messages; send and drain rates in msg/s; the pipeline ceiling (the
 * smaller of the two); the serial ceiling messages / (send time + drain time), i.e. what the
 * endpoint does when it must send, receive and delete every message itself (fauxqs is one
 * process: both halves share it); the send requests' p50/p99 latency and the bare client's CPU
 * per message sent and per message received and deleted (getrusage, user + system); with probes,
 * their p50/p99 in ms.
 */
#include <math.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sqs.h"
#include "timeutil.h"

typedef struct {
    int room;
    long messages;
    const char *body;
    char *url;
    sqs_config cfg;
    long done;
    double *req_ms; /* send phase: duration of each request */
    size_t n_req;
    char error[768];
} room_job;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (nearest rank) of v[0..n), sorted here. */
static double percentile(double *v, size_t n, double p)
{
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double seconds_since(uint64_t start_ns) { return (double)(time_mono_ns() - start_ns) / 1e9; }

static void *send_room(void *arg)
{
    room_job *j = arg;
    sqs_client *c = sqs_client_new(&j->cfg, j->error, sizeof j->error);
    if (!c) return NULL;
    char ids[SQS_MAX_BATCH][16], dedup[SQS_MAX_BATCH][48], group[16];
    snprintf(group, sizeof group, "%d", j->room);
    j->n_req = 0;
    j->req_ms = malloc(((size_t)j->messages / SQS_MAX_BATCH + 1) * sizeof *j->req_ms);
    if (!j->req_ms) {
        snprintf(j->error, sizeof j->error, "out of memory");
        sqs_client_free(c);
        return NULL;
    }
    for (long sent = 0; sent < j->messages;) {
        sqs_send_entry e[SQS_MAX_BATCH];
        sqs_entry_result r[SQS_MAX_BATCH];
        size_t n = 0;
        for (; n < SQS_MAX_BATCH && sent + (long)n < j->messages; n++) {
            snprintf(ids[n], sizeof ids[n], "e%zu", n);
            snprintf(dedup[n], sizeof dedup[n], "%lld-%d-%ld", (long long)time_wall_ms(), j->room,
                     sent + (long)n);
            e[n] = (sqs_send_entry){ids[n], j->body, group, dedup[n]};
        }
        sqs_error err;
        uint64_t t0 = time_mono_ns();
        if (sqs_send_message_batch(c, j->url, e, n, r, &err) != SQS_OK) {
            snprintf(j->error, sizeof j->error, "send: %s %s", err.type, err.message);
            break;
        }
        j->req_ms[j->n_req++] = (double)(time_mono_ns() - t0) / 1e6;
        for (size_t i = 0; i < n; i++) j->done += r[i].ok;
        sent += (long)n;
    }
    sqs_client_free(c);
    return NULL;
}

static void *drain_room(void *arg)
{
    room_job *j = arg;
    sqs_client *c = sqs_client_new(&j->cfg, j->error, sizeof j->error);
    if (!c) return NULL;
    int empty_polls = 0;
    while (j->done < j->messages && empty_polls < 5) {
        sqs_receive_options opt = {.max_messages = 10, .wait_seconds = 1, .visibility_timeout = 30};
        sqs_message *m = NULL;
        size_t n = 0;
        sqs_error err;
        if (sqs_receive_message(c, j->url, &opt, &m, &n, &err) != SQS_OK) {
            snprintf(j->error, sizeof j->error, "receive: %s %s", err.type, err.message);
            break;
        }
        empty_polls = n ? 0 : empty_polls + 1;
        if (n) {
            sqs_handle_entry h[SQS_MAX_BATCH];
            sqs_entry_result r[SQS_MAX_BATCH];
            char ids[SQS_MAX_BATCH]
                    [24]; /* room for "d" + any size_t: -O2 sanitizer builds check it */
            for (size_t i = 0; i < n; i++) {
                snprintf(ids[i], sizeof ids[i], "d%zu", i);
                h[i] = (sqs_handle_entry){ids[i], m[i].receipt_handle, 0};
            }
            if (sqs_delete_message_batch(c, j->url, h, n, r, &err) != SQS_OK) {
                snprintf(j->error, sizeof j->error, "delete: %s %s", err.type, err.message);
                sqs_messages_free(m, n);
                break;
            }
            j->done += (long)n;
        }
        sqs_messages_free(m, n);
    }
    sqs_client_free(c);
    return NULL;
}

/* One message at a time through send -> receive -> delete on queue url; ms of each in out[]. */
static bool run_probes(const sqs_config *cfg, const char *url, const char *body, int probes,
                       double *out)
{
    char err_s[256];
    sqs_client *c = sqs_client_new(cfg, err_s, sizeof err_s);
    if (!c) {
        fprintf(stderr, "bench_sqs_ceiling: probe client: %s\n", err_s);
        return false;
    }
    bool ok = true;
    for (int p = 0; p < probes && ok; p++) {
        char dedup[48];
        snprintf(dedup, sizeof dedup, "probe-%lld-%d", (long long)time_wall_ms(), p);
        sqs_send_entry e = {"p0", body, "probe", dedup};
        sqs_entry_result r;
        sqs_error err;
        uint64_t t0 = time_mono_ns();
        if (sqs_send_message_batch(c, url, &e, 1, &r, &err) != SQS_OK || !r.ok) {
            fprintf(stderr, "bench_sqs_ceiling: probe send: %s %s\n", err.type, err.message);
            ok = false;
            break;
        }
        for (;;) {
            sqs_receive_options opt = {
                .max_messages = 1, .wait_seconds = 1, .visibility_timeout = 30};
            sqs_message *m = NULL;
            size_t n = 0;
            if (sqs_receive_message(c, url, &opt, &m, &n, &err) != SQS_OK) {
                fprintf(stderr, "bench_sqs_ceiling: probe receive: %s %s\n", err.type, err.message);
                ok = false;
                break;
            }
            if (!n) continue;
            sqs_handle_entry h = {"d0", m[0].receipt_handle, 0};
            sqs_entry_result dr;
            if (sqs_delete_message_batch(c, url, &h, 1, &dr, &err) != SQS_OK) {
                fprintf(stderr, "bench_sqs_ceiling: probe delete: %s %s\n", err.type, err.message);
                ok = false;
            }
            sqs_messages_free(m, n);
            break;
        }
        out[p] = (double)(time_mono_ns() - t0) / 1e6;
    }
    sqs_client_free(c);
    return ok;
}

static bool run_phase(room_job *jobs, int rooms, void *(*fn)(void *), double *secs)
{
    pthread_t th[256];
    uint64_t start = time_mono_ns();
    for (int i = 0; i < rooms; i++) {
        jobs[i].done = 0;
        pthread_create(&th[i], NULL, fn, &jobs[i]);
    }
    for (int i = 0; i < rooms; i++) pthread_join(th[i], NULL);
    *secs = seconds_since(start);
    for (int i = 0; i < rooms; i++) {
        if (jobs[i].error[0]) {
            fprintf(stderr, "bench_sqs_ceiling: room %d: %s\n", jobs[i].room, jobs[i].error);
            return false;
        }
    }
    return true;
}

int main(int argc, char **argv)
{
    long messages = 20000, body_bytes = 300;
    int rooms = 20, probes = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--messages") == 0)
            messages = atol(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--rooms") == 0)
            rooms = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--body-bytes") == 0)
            body_bytes = atol(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--probes") == 0)
            probes = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_sqs_ceiling [--messages N] [--rooms 1-256] [--body-bytes "
                            "B] [--probes P]\n");
            return 2;
        }
    }
    if (messages < rooms || rooms < 1 || rooms > 256 || body_bytes < 1 || body_bytes > 200000 ||
        probes < 0 || probes > 100000) {
        fprintf(stderr, "bench_sqs_ceiling: need 1 <= rooms <= 256, messages >= rooms, 1 <= "
                        "body-bytes <= 200000,"
                        " 0 <= probes <= 100000\n");
        return 2;
    }
    log_init("warn", "text");
    const char *endpoint = getenv("AWS_ENDPOINT_URL_SQS");
    const char *region = getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1";
    char err[256];
    credentials_provider *creds = credentials_provider_new(err, sizeof err);
    if (!creds) {
        fprintf(stderr, "bench_sqs_ceiling: %s\n", err);
        return 1;
    }
    sqs_config cfg = {.region = region,
                      .endpoint = endpoint && *endpoint ? endpoint : NULL,
                      .credentials = creds};
    sqs_client *admin = sqs_client_new(&cfg, err, sizeof err);
    if (!admin) {
        fprintf(stderr, "bench_sqs_ceiling: %s\n", err);
        return 1;
    }
    char *body = malloc((size_t)body_bytes + 1);
    memset(body, 'x', (size_t)body_bytes);
    body[body_bytes] = '\0';

    room_job *jobs = calloc((size_t)rooms, sizeof *jobs);
    static const sqs_attribute fifo[] = {{"FifoQueue", "true"},
                                         {"ContentBasedDeduplication", "false"}};
    for (int i = 0; i < rooms; i++) {
        char name[64];
        snprintf(name, sizeof name, "chatflow-bench-ceiling-%d.fifo", i + 1);
        sqs_error e;
        if (sqs_create_queue(admin, name, fifo, 2, &jobs[i].url, &e) != SQS_OK) {
            fprintf(stderr, "bench_sqs_ceiling: create %s: %s %s\n", name, e.type, e.message);
            return 1;
        }
        sqs_purge_queue(admin, jobs[i].url, &e);
        jobs[i].room = i + 1;
        jobs[i].messages = messages / rooms + (i < messages % rooms);
        jobs[i].body = body;
        jobs[i].cfg = cfg;
    }

    double send_s = 0, drain_s = 0;
    double cpu0 = cpu_seconds();
    bool ok = run_phase(jobs, rooms, send_room, &send_s);
    double send_cpu_s = cpu_seconds() - cpu0;
    double cpu1 = cpu_seconds();
    ok = ok && run_phase(jobs, rooms, drain_room, &drain_s);
    double drain_cpu_s = cpu_seconds() - cpu1;
    long drained = 0;
    for (int i = 0; i < rooms; i++) drained += jobs[i].done;
    if (ok && drained != messages) {
        fprintf(stderr, "bench_sqs_ceiling: sent %ld, drained %ld\n", messages, drained);
        ok = false;
    }
    size_t n_req = 0;
    for (int i = 0; i < rooms; i++) n_req += jobs[i].n_req;
    double *req = malloc((n_req ? n_req : 1) * sizeof *req);
    size_t k = 0;
    for (int i = 0; req && i < rooms; i++)
        for (size_t q = 0; q < jobs[i].n_req; q++) req[k++] = jobs[i].req_ms[q];
    double *probe_ms = probes ? calloc((size_t)probes, sizeof *probe_ms) : NULL;
    if (ok && probes) ok = probe_ms && run_probes(&cfg, jobs[0].url, body, probes, probe_ms);
    if (ok && req) {
        double send_rate = messages / send_s, drain_rate = messages / drain_s;
        double req_p50 = percentile(req, k, 50), req_p99 = percentile(req, k, 99);
        printf("{\"messages\":%ld,\"rooms\":%d,\"send_msgs_per_s\":%.1f,\"drain_msgs_per_s\":%.1f,"
               "\"pipeline_ceiling_msgs_per_s\":%.1f,\"serial_ceiling_msgs_per_s\":%.1f,"
               "\"send_request_p50_ms\":%.3f,\"send_request_p99_ms\":%.3f,\"send_cpu_us_per_msg\":%"
               ".2f,\"drain_cpu_us_per_msg\":%.2f",
               messages, rooms, send_rate, drain_rate,
               send_rate < drain_rate ? send_rate : drain_rate, messages / (send_s + drain_s),
               req_p50, req_p99, send_cpu_s * 1e6 / (double)messages,
               drain_cpu_s * 1e6 / (double)messages);
        if (probes)
            printf(",\"probes\":%d,\"probe_p50_ms\":%.3f,\"probe_p99_ms\":%.3f", probes,
                   percentile(probe_ms, (size_t)probes, 50),
                   percentile(probe_ms, (size_t)probes, 99));
        printf("}\n");
    }
    free(req);
    free(probe_ms);
    for (int i = 0; i < rooms; i++) {
        free(jobs[i].url);
        free(jobs[i].req_ms);
    }
    free(jobs);
    free(body);
    sqs_client_free(admin);
    credentials_provider_free(creds);
    return ok ? 0 : 1;
}
