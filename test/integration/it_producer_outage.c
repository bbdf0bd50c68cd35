/*
 * it_producer_outage — the producer under partial outages, on a private stack (it freezes and
 * stops SQS) plus a scripted fake SQS for per-entry failures:
 *  - 2,000 connections on one room each send one frame while SQS is frozen (SIGSTOP): every frame
 *    answered within the deadline + 1 s; again with --max-inflight-total 1 --publisher-threads 1
 *    (frames past the cap refused at once, nothing wedged); SQS back: a new frame is acked without
 *    a restart.
 *  - SQS frozen for more than 30 s: /health/live stays 200 while /health/ready is 503.
 *  - SIGTERM exits 0 within CHATFLOW_STOP_TIMEOUT_S with queues missing, with SQS frozen and a
 *    GetQueueUrl outlasting the stop budget, and with frames in flight (each answered;
 *    /health/serving 503 during the drain).
 *  - CHATFLOW_TEST_FAILPOINT=stall-publisher: /health/live turns 503 within a few seconds while
 *    /health/serving and the WebSocket port stay up.
 *  - A batch whose middle entry fails while later ones are accepted: acked sequence numbers still
 *    increase in send order (the failed entry is answered, not re-queued behind later ones).
 */
/* test-passes: asan */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "seqnum.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_http.h"
#include "tl_proc.h"
#include "tl_producer.h"
#include "tl_sqs.h"
#include "tl_stack.h"
#include "uuid.h"

#define DEADLINE_MS 3000
#define CONNS 2000

static char LOGDIR[512];
static tl_stack STACK;

/* ---------------------------------------------------------------- the private stack */

static void freeze_sqs(bool frozen) { tl_stack_freeze_sqs(&STACK, frozen); }

/* ---------------------------------------------------------------- producer helpers */

static bool start(tl_producer *p, const char *name, const char *const *env)
{
    char log_path[700];
    snprintf(log_path, sizeof log_path, "%s/%s.log", LOGDIR, name);
    bool ok = tl_producer_start(p, log_path, env);
    if (!ok) NOTE("%s: producer did not start (log %s)", name, log_path);
    return ok;
}

/* SIGTERM; true when it exited 0 within limit_ms (elapsed in *ms). */
static bool term_in_time(tl_producer *p, int limit_ms, double *ms)
{
    uint64_t t0 = time_mono_ns();
    bool in_time = false;
    int st = tl_producer_stop(p, SIGTERM, limit_ms + 5000, &in_time);
    *ms = (double)(time_mono_ns() - t0) / 1e6;
    return in_time && *ms <= limit_ms && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---------------------------------------------------------------- many clients */

typedef struct {
    wsc_conn *c;
    uint64_t sent_ns, answered_ns;
    int answers;
    char status[16], code[32];
} client;

static void on_answer(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    client *cl = user;
    if (cl->answers++ > 0) return;
    cl->answered_ns = time_mono_ns();
    char *copy = strndup(data, len);
    tl_json_field(copy, "status", cl->status, sizeof cl->status);
    tl_json_field(copy, "errorCode", cl->code, sizeof cl->code);
    free(copy);
}

/* Opens n connections to /chat/room on one loop; returns how many opened. */
static int open_many(wsc_ctx *ctx, const tl_producer *p, client *cl, int n, int room)
{
    char path[32];
    snprintf(path, sizeof path, "/chat/%d", room);
    int open = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        cl[i].c = wsc_connect_start(ctx, "127.0.0.1", p->ws_port, path);
        if (cl[i].c) wsc_set_callbacks(cl[i].c, on_answer, NULL, &cl[i]);
        if (i % 100 == 99) wsc_service(ctx, 1);
    }
    uint64_t until = time_mono_ns() + 30000ull * 1000000ull;
    while (time_mono_ns() < until) {
        wsc_service(ctx, 20);
        open = failed = 0;
        for (int i = 0; i < n; i++) {
            const char *why;
            if (cl[i].c && wsc_is_open(cl[i].c))
                open++;
            else if (!cl[i].c || wsc_has_failed(cl[i].c, &why))
                failed++;
        }
        if (open + failed == n) break;
    }
    return open;
}

typedef struct {
    int answered, acked, refused_now, errors, late;
    double max_ms;
    double answer_ms_p50;
} outcome;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Each open client sends one frame; services until all are answered or wait_ms passes. */
static outcome send_one_each(wsc_ctx *ctx, client *cl, int n, const char *tag, int wait_ms,
                             int limit_ms)
{
    outcome o;
    memset(&o, 0, sizeof o);
    for (int i = 0; i < n; i++) {
        if (!cl[i].c || !wsc_is_open(cl[i].c)) continue;
        char cmid[48];
        snprintf(cmid, sizeof cmid, "%s-%d", tag, i);
        char *f = tl_frame(1000 + i, tag, cmid);
        cl[i].answers = 0;
        cl[i].status[0] = cl[i].code[0] = '\0';
        tl_ws_send_str(cl[i].c, f);
        cl[i].sent_ns = time_mono_ns();
        free(f);
        if (i % 200 == 199) wsc_service(ctx, 0);
    }
    uint64_t until = time_mono_ns() + (uint64_t)wait_ms * 1000000u;
    int sent = 0;
    for (int i = 0; i < n; i++) sent += cl[i].c && wsc_is_open(cl[i].c) ? 1 : 0;
    while (time_mono_ns() < until) {
        wsc_service(ctx, 20);
        int answered = 0;
        for (int i = 0; i < n; i++) answered += cl[i].answers > 0;
        if (answered >= sent) break;
    }
    double *lat = calloc((size_t)n, sizeof *lat);
    for (int i = 0; i < n; i++) {
        if (!cl[i].answers) continue;
        double ms = (double)(cl[i].answered_ns - cl[i].sent_ns) / 1e6;
        lat[o.answered++] = ms;
        if (ms > o.max_ms) o.max_ms = ms;
        if (ms > limit_ms) o.late++;
        if (strcmp(cl[i].status, "SUCCESS") == 0)
            o.acked++;
        else if (ms < 200)
            o.refused_now++;
        else
            o.errors++;
    }
    qsort(lat, (size_t)o.answered, sizeof *lat, cmp_double);
    o.answer_ms_p50 = o.answered ? lat[o.answered / 2] : 0;
    free(lat);
    return o;
}

static void free_many(client *cl, int n)
{
    for (int i = 0; i < n; i++)
        if (cl[i].c) wsc_free(cl[i].c);
    memset(cl, 0, sizeof *cl * (size_t)n);
}

/* One frame on a fresh connection: the answer's status ("SUCCESS", or the errorCode). */
static void one_frame(const tl_producer *p, int room, char *out, size_t len)
{
    snprintf(out, len, "(no answer)");
    wsc_ctx *ctx = wsc_ctx_new();
    char path[32], err[96];
    int status = 0;
    snprintf(path, sizeof path, "/chat/%d", room);
    wsc_conn *c = wsc_connect(ctx, "127.0.0.1", p->ws_port, path, 5000, &status, err, sizeof err);
    if (c) {
        char *f = tl_frame(77, "after the outage", "after-1");
        tl_ws_send_str(c, f);
        free(f);
        char *a = wsc_recv(c, 8000, NULL);
        char st[32], code[32];
        if (a)
            snprintf(out, len, "%s",
                     strcmp(tl_json_field(a, "status", st, sizeof st), "SUCCESS") == 0
                         ? "SUCCESS"
                         : tl_json_field(a, "errorCode", code, sizeof code));
        free(a);
        wsc_free(c);
    } else {
        snprintf(out, len, "(no connection: HTTP %d %.40s)", status, err);
    }
    wsc_ctx_free(ctx);
}

/* After SQS returns: ready again and a new frame acked, without a restart. */
static void check_recovery(const tl_producer *p, const char *what)
{
    CHECK(tl_http_wait_status(p->admin_port, "/health/ready", 200, 15000),
          "%s: SQS back, /health/ready 200 again", what);
    char st[128];
    for (int i = 0; i < 5; i++) {
        one_frame(p, 1, st, sizeof st);
        if (strcmp(st, "SUCCESS") == 0) break;
        time_sleep_ms(500);
    }
    CHECK_STR(st, "SUCCESS", "%s: a new frame is acked without a restart", what);
}

/* ---------------------------------------------------------------- 1. 2,000 connections, SQS frozen
 */

static const char *const BASE_ENV[] = {"CHATFLOW_PUBLISH_DEADLINE_MS=3000",
                                       "CHATFLOW_PUBLISH_REQUEST_TIMEOUT_MS=500",
                                       "CHATFLOW_BREAKER_FAILURE_THRESHOLD=3",
                                       "CHATFLOW_BREAKER_OPEN_MS=500",
                                       "CHATFLOW_SQS_CONNECT_TIMEOUT_MS=300",
                                       "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                                       "CHATFLOW_LOG_LEVEL=info"};
#define BASE_N (sizeof BASE_ENV / sizeof BASE_ENV[0])

static void outage_many(const char *name, const char *const *extra, bool long_outage)
{
    const char *env[BASE_N + 8];
    size_t k = 0;
    for (size_t i = 0; i < BASE_N; i++) env[k++] = BASE_ENV[i];
    for (size_t i = 0; extra && extra[i]; i++) env[k++] = extra[i];
    env[k] = NULL;
    tl_producer p;
    if (!start(&p, name, env) || !tl_http_wait_status(p.admin_port, "/health/ready", 200, 10000)) {
        CHECK(0, "%s: producer started and ready", name);
        return;
    }
    static client cl[CONNS];
    wsc_ctx *ctx = wsc_ctx_new();
    int open = open_many(ctx, &p, cl, CONNS, 1);
    CHECK_INT(open, CONNS, "%s: %d connections open on /chat/1", name, CONNS);

    freeze_sqs(true);
    uint64_t frozen_at = time_mono_ns();
    outcome o = send_one_each(ctx, cl, CONNS, name, DEADLINE_MS + 4000, DEADLINE_MS + 1000);
    NOTE("%s: %d answered (%d acked, %d refused within 200 ms, %d errors later); p50 %.0f ms, "
         "slowest %.0f ms",
         name, o.answered, o.acked, o.refused_now, o.errors, o.answer_ms_p50, o.max_ms);
    CHECK_INT(o.answered, open, "%s, SQS frozen: every one of the %d frames answered", name, open);
    CHECK_INT(o.late, 0, "%s, SQS frozen: each within the deadline + 1 s (%d ms; slowest %.0f ms)",
              name, DEADLINE_MS + 1000, o.max_ms);
    double held = tl_producer_metric(&p, "chatflow_inflight_messages", NULL);
    CHECK(held == 0,
          "%s: nothing left in flight after the answers (chatflow_inflight_messages %.0f)", name,
          held);

    if (long_outage) {
        /* Liveness must not follow SQS: over 30 s of outage it stays 200 while ready is 503. */
        int live_bad = 0, ready_ok = 0, polls = 0;
        while (time_mono_ns() - frozen_at < 31000ull * 1000000ull) {
            wsc_service(ctx, 0);
            if (tl_http_status(p.admin_port, "/health/live") != 200) live_bad++;
            if (tl_http_status(p.admin_port, "/health/ready") == 200) ready_ok++;
            polls++;
            time_sleep_ms(500);
        }
        CHECK(polls > 50 && live_bad == 0,
              "SQS frozen for 31 s: /health/live 200 at every one of %d polls (%d not)", polls,
              live_bad);
        CHECK_INT(ready_ok, 0, "SQS frozen for 31 s: /health/ready 503 throughout");
    }
    freeze_sqs(false);
    free_many(cl, CONNS);
    wsc_ctx_free(ctx);
    check_recovery(&p, name);
    double ms;
    CHECK(term_in_time(&p, 25000, &ms), "%s: SIGTERM: exit 0 (%.0f ms)", name, ms);
}

/* ---------------------------------------------------------------- 2. bounded shutdown */

static void stop_queues_missing(void)
{
    const char *env[] = {"CHATFLOW_QUEUE_PREFIX=no-such-queue-", "CHATFLOW_STOP_TIMEOUT_S=3",
                         "CHATFLOW_LOG_LEVEL=info", NULL};
    tl_producer p;
    if (!start(&p, "stop-missing-queues", env)) {
        CHECK(0, "queues missing: producer started");
        return;
    }
    time_sleep_ms(1500);
    CHECK(tl_http_status(p.admin_port, "/health/ready") == 503,
          "queues missing: /health/ready 503 (URLs unresolved)");
    double ms;
    CHECK(term_in_time(&p, 3000, &ms),
          "queues missing: SIGTERM exits 0 within the 3 s stop timeout (%.0f ms)", ms);
}

static void stop_sqs_frozen_at_start(void)
{
    /* Every GetQueueUrl outlasts the stop budget: the publisher threads cannot be joined in
     * time, and the process must still exit 0 by the deadline (without freeing what they use). */
    const char *env[] = {"CHATFLOW_PUBLISH_REQUEST_TIMEOUT_MS=8000",
                         "CHATFLOW_PUBLISH_DEADLINE_MS=10000",
                         "CHATFLOW_SQS_CONNECT_TIMEOUT_MS=8000",
                         "CHATFLOW_STOP_TIMEOUT_S=3",
                         "CHATFLOW_LOG_LEVEL=info",
                         NULL};
    freeze_sqs(true);
    tl_producer p;
    bool ok = start(&p, "stop-sqs-frozen", env);
    CHECK(ok, "SQS frozen at start: producer started");
    if (ok) {
        time_sleep_ms(1000);
        double ms;
        CHECK(term_in_time(&p, 3000, &ms),
              "SQS frozen at start (GetQueueUrl in flight): SIGTERM exits 0 within 3 s (%.0f ms)",
              ms);
    }
    freeze_sqs(false);

    const char *env2[] = {"AWS_ENDPOINT_URL_SQS=http://127.0.0.1:9", "CHATFLOW_STOP_TIMEOUT_S=3",
                          "CHATFLOW_LOG_LEVEL=info", NULL};
    ok = start(&p, "stop-sqs-unreachable", env2);
    CHECK(ok, "SQS unreachable: producer started");
    if (ok) {
        time_sleep_ms(1000);
        double ms;
        CHECK(term_in_time(&p, 3000, &ms),
              "SQS unreachable (connection refused): SIGTERM exits 0 within 3 s (%.0f ms)", ms);
    }
}

static void stop_frames_in_flight(void)
{
    /* A long deadline and a breaker that does not open: frames stay at the publisher, and the
     * stop budget (4 s) is shorter than their deadline (10 s). */
    const char *env[] = {"CHATFLOW_PUBLISH_DEADLINE_MS=10000",
                         "CHATFLOW_PUBLISH_REQUEST_TIMEOUT_MS=1500",
                         "CHATFLOW_BREAKER_FAILURE_THRESHOLD=1000",
                         "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                         "CHATFLOW_STOP_TIMEOUT_S=4",
                         "CHATFLOW_LOG_LEVEL=info",
                         NULL};
    tl_producer p;
    if (!start(&p, "stop-in-flight", env) ||
        !tl_http_wait_status(p.admin_port, "/health/ready", 200, 10000)) {
        CHECK(0, "frames in flight: producer started and ready");
        return;
    }
    CHECK(tl_http_status(p.admin_port, "/health/serving") == 200,
          "before SIGTERM: /health/serving 200");
    enum { N = 10, PER = 10 };
    static client cl[N];
    wsc_ctx *ctx = wsc_ctx_new();
    int open = 0;
    for (int i = 0; i < N; i++) open += open_many(ctx, &p, &cl[i], 1, 1 + i);
    freeze_sqs(true);
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < PER; k++) {
            char cmid[32];
            snprintf(cmid, sizeof cmid, "f-%d-%d", i, k);
            char *f = tl_frame(500 + i, "in flight at SIGTERM", cmid);
            tl_ws_send_str(cl[i].c, f);
            free(f);
        }
    }
    for (int i = 0; i < 20; i++) wsc_service(ctx, 10);
    kill(p.pid, SIGTERM);
    uint64_t t0 = time_mono_ns();
    bool serving_503 = false;
    for (int i = 0; i < 20 && !serving_503; i++) {
        serving_503 = tl_http_status(p.admin_port, "/health/serving") == 503;
        if (!serving_503) time_sleep_ms(50);
    }
    CHECK(serving_503, "during the drain: /health/serving 503");
    int answered = 0, closed = 0;
    while (time_mono_ns() - t0 < 6000ull * 1000000ull) {
        wsc_service(ctx, 20);
        answered = closed = 0;
        for (int i = 0; i < N; i++) {
            answered += cl[i].answers;
            closed += wsc_is_closed(cl[i].c);
        }
        if (closed == open) break;
    }
    CHECK_INT(answered, open * PER,
              "SIGTERM with %d frames in flight and SQS frozen: every frame answered", open * PER);
    int st = -1;
    bool exited = false;
    for (int t = 0; t < 3000 && !exited; t += 20) {
        exited = waitpid(p.pid, &st, WNOHANG) == p.pid;
        if (!exited) time_sleep_ms(20);
    }
    double ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(exited && ms <= 4000 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "frames in flight: exit 0 within the 4 s stop timeout (%.0f ms)", ms);
    if (exited) {
        tl_proc_forget(p.pid);
    } else {
        tl_producer_stop(&p, SIGKILL, 1000, NULL);
    }
    freeze_sqs(false);
    free_many(cl, N);
    wsc_ctx_free(ctx);
}

/* ---------------------------------------------------------------- 3. a wedged publisher thread */

static void stalled_publisher(void)
{
    const char *env[] = {"CHATFLOW_TEST_FAILPOINT=stall-publisher", "CHATFLOW_STOP_TIMEOUT_S=3",
                         "CHATFLOW_RATE_LIMIT_PER_MINUTE=0", "CHATFLOW_LOG_LEVEL=info", NULL};
    tl_producer p;
    if (!start(&p, "stall-publisher", env)) {
        CHECK(0, "failpoint: producer started");
        return;
    }
    uint64_t t0 = time_mono_ns();
    bool down = tl_http_wait_status(p.admin_port, "/health/live", 503, 8000);
    double ms = (double)(time_mono_ns() - t0) / 1e6;
    CHECK(down && ms < 8000, "stall-publisher: /health/live turns 503 (after %.0f ms)", ms);
    char *body = NULL;
    long st = 0;
    body = tl_http_get(p.admin_port, "/health/live", &st);
    CHECK(body && strstr(body, "publisher-0"),
          "stall-publisher: the detail names the stuck loop (%s)", body ? body : "");
    free(body);
    CHECK(tl_http_status(p.admin_port, "/health/serving") == 200,
          "stall-publisher: /health/serving still 200");
    char a[128];
    one_frame(&p, 2, a, sizeof a); /* room 2 belongs to publisher thread 1 */
    CHECK_STR(a, "SUCCESS",
              "stall-publisher: the WebSocket port still answers (a frame on room 2 acked)");
    double stop_ms;
    CHECK(term_in_time(&p, 3000, &stop_ms),
          "stall-publisher: SIGTERM exits 0 within 3 s without joining it (%.0f ms)", stop_ms);
}

/* ---------------------------------------------------------------- 4. order after a partial failure
 */

/* A scripted SQS: GetQueueUrl and GetQueueAttributes (CreatedTimestamp, the epoch of the acks'
 * positions) answer, SendMessageBatch accepts every entry (sequence numbers
 * in arrival order) except, in the first batch of 3 or more, entry 1 (InternalError, retriable),
 * and in the second such batch the last entry. */
typedef struct {
    int listen_fd, port;
    pthread_t thread;
    atomic_int batches_big;
    long long seq;
    atomic_bool stop;
} fake_sqs;

static bool read_request(int fd, char *buf, size_t cap, size_t *body_at, size_t *body_len)
{
    size_t n = 0;
    char *end = NULL;
    while (!(end = strstr(buf, "\r\n\r\n"))) {
        if (n + 1 >= cap) return false;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0) return false;
        n += (size_t)r;
        buf[n] = '\0';
    }
    size_t head = (size_t)(end + 4 - buf), clen = 0;
    for (char *l = buf; l && l < end; l = strstr(l, "\r\n") ? strstr(l, "\r\n") + 2 : NULL)
        if (strncasecmp(l, "Content-Length:", 15) == 0) clen = (size_t)strtoul(l + 15, NULL, 10);
    while (n < head + clen) {
        if (n + 1 >= cap) return false;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0) return false;
        n += (size_t)r;
        buf[n] = '\0';
    }
    *body_at = head;
    *body_len = clen;
    return true;
}

static char *fake_batch_answer(fake_sqs *f, json_t *req)
{
    json_t *entries = json_object_get(req, "Entries");
    size_t n = json_array_size(entries);
    int fail = -1;
    if (n >= 3) {
        int k = atomic_fetch_add(&f->batches_big, 1);
        if (k == 0) fail = 1;
        if (k == 1) fail = (int)n - 1;
    }
    json_t *ok = json_array(), *failed = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(entries, i), "Id"));
        if ((int)i == fail) {
            json_array_append_new(failed,
                                  json_pack("{s:s,s:b,s:s,s:s}", "Id", id, "SenderFault", 0, "Code",
                                            "InternalError", "Message", "scripted failure"));
        } else {
            char seq[32], mid[48];
            snprintf(seq, sizeof seq, "%020lld", ++f->seq);
            snprintf(mid, sizeof mid, "00000000-0000-4000-8000-%012lld", f->seq);
            json_array_append_new(
                ok, json_pack("{s:s,s:s,s:s,s:s}", "Id", id, "MessageId", mid, "MD5OfMessageBody",
                              "00000000000000000000000000000000", "SequenceNumber", seq));
        }
    }
    json_t *ans = json_pack("{s:o,s:o}", "Successful", ok, "Failed", failed);
    char *s = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    return s;
}

static void *fake_sqs_main(void *arg)
{
    fake_sqs *f = arg;
    static char buf[1 << 20];
    while (!atomic_load(&f->stop)) {
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        size_t at, len;
        memset(buf, 0, 4);
        while (read_request(fd, buf, sizeof buf, &at, &len)) {
            char *body = NULL;
            json_t *req = json_loadb(buf + at, len, 0, NULL);
            if (strcasestr(buf, "AmazonSQS.SendMessageBatch")) {
                body = fake_batch_answer(f, req);
            } else if (strcasestr(buf, "AmazonSQS.GetQueueAttributes")) {
                body = strdup("{\"Attributes\":{\"CreatedTimestamp\":\"1765112400\"}}");
            } else {
                char url[128];
                snprintf(url, sizeof url, "http://127.0.0.1:%d/000000000000/fake.fifo", f->port);
                body = strdup(strcasestr(buf, "AmazonSQS.GetQueueUrl") ? "" : "{}");
                if (strcasestr(buf, "AmazonSQS.GetQueueUrl")) {
                    free(body);
                    json_t *o = json_pack("{s:s}", "QueueUrl", url);
                    body = json_dumps(o, JSON_COMPACT);
                    json_decref(o);
                }
            }
            json_decref(req);
            char head[256];
            int hl = snprintf(head, sizeof head,
                              "HTTP/1.1 200 OK\r\nContent-Type: "
                              "application/x-amz-json-1.0\r\nContent-Length: %zu\r\n\r\n",
                              strlen(body));
            if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) < 0 ||
                send(fd, body, strlen(body), MSG_NOSIGNAL) < 0) {
                free(body);
                break;
            }
            free(body);
            memset(buf, 0, 4);
        }
        close(fd);
    }
    return NULL;
}

static bool fake_sqs_start(fake_sqs *f)
{
    memset(f, 0, sizeof *f);
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(f->listen_fd, 8) != 0 || getsockname(f->listen_fd, (struct sockaddr *)&a, &al) != 0)
        return false;
    f->port = ntohs(a.sin_port);
    return pthread_create(&f->thread, NULL, fake_sqs_main, f) == 0;
}

/* Sends n frames back to back and reads n answers; acked positions go to seq ("" when the answer
 * was an error, code in codes). */
static int round_trip(wsc_conn *c, const char *tag, int n, char (*seq)[SEQNUM_BUF],
                      char (*codes)[32])
{
    for (int i = 0; i < n; i++) {
        char cmid[32];
        snprintf(cmid, sizeof cmid, "%s-%d", tag, i);
        char *fr = tl_frame(42, tag, cmid);
        tl_ws_send_str(c, fr);
        free(fr);
    }
    int got = 0;
    for (int k = 0; k < n; k++) {
        char *a = wsc_recv(c, 8000, NULL);
        if (!a) break;
        char cmid[32], st[32];
        tl_json_field(a, "clientMessageId", cmid, sizeof cmid);
        const char *dash = strrchr(cmid, '-');
        int i = dash ? atoi(dash + 1) : -1;
        if (i >= 0 && i < n) {
            bool ok = strcmp(tl_json_field(a, "status", st, sizeof st), "SUCCESS") == 0;
            if (ok)
                tl_json_field(a, "sequenceNumber", seq[i], SEQNUM_BUF);
            else
                seq[i][0] = '\0';
            tl_json_field(a, "errorCode", codes[i], 32);
            got++;
        }
        free(a);
    }
    return got;
}

/* Acked positions increase with the send index (compared as numbers). */
static bool acks_in_send_order(char (*seq)[SEQNUM_BUF], int n, char *desc, size_t len)
{
    const char *last = NULL;
    bool ok = true;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        /* the SQS number's significant digits: the epoch is the scripted SQS's, the same for all */
        const char *tail = strlen(seq[i]) > 6 ? seq[i] + strlen(seq[i]) - 6 : seq[i];
        off += (size_t)snprintf(desc + off, off < len ? len - off : 0, "%s%s", i ? "," : "",
                                seq[i][0] ? tail : "0");
        if (!seq[i][0]) continue;
        if (last && seqnum_cmp(seq[i], last) <= 0) ok = false;
        last = seq[i];
    }
    return ok;
}

static void partial_failure_order(void)
{
    fake_sqs f;
    if (!fake_sqs_start(&f)) {
        CHECK(0, "scripted SQS started");
        return;
    }
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "AWS_ENDPOINT_URL_SQS=http://127.0.0.1:%d", f.port);
    const char *env[] = {endpoint,
                         "AWS_ACCESS_KEY_ID=test",
                         "AWS_SECRET_ACCESS_KEY=test",
                         "AWS_REGION=us-east-1",
                         "CHATFLOW_QUEUE_SHARDS=1",
                         "CHATFLOW_PUBLISHER_THREADS=1",
                         "CHATFLOW_PUBLISH_LINGER_MS=300",
                         "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                         "CHATFLOW_LOG_LEVEL=info",
                         NULL};
    tl_producer p;
    if (!start(&p, "partial-failure", env) ||
        !tl_http_wait_status(p.admin_port, "/health/ready", 200, 10000)) {
        CHECK(0, "partial failure: producer started against the scripted SQS");
        return;
    }
    wsc_ctx *ctx = wsc_ctx_new();
    char err[128];
    int status;
    wsc_conn *c =
        wsc_connect(ctx, "127.0.0.1", p.ws_port, "/chat/1", 5000, &status, err, sizeof err);
    CHECK(c != NULL, "partial failure: connected");
    if (c) {
        enum { N = 5 };
        char seq[N][SEQNUM_BUF] = {{0}};
        char codes[N][32];
        char desc[256];
        int got = round_trip(c, "first", N, seq, codes);
        CHECK_INT(got, N,
                  "batch [0..4], entry 1 fails after later ones are accepted: all %d answered", N);
        CHECK(acks_in_send_order(seq, N, desc, sizeof desc),
              "acked sequence numbers increase in send order (%s)", desc);
        CHECK(!seq[1][0] && strcmp(codes[1], "QUEUE_ERROR") == 0,
              "the failed entry is answered QUEUE_ERROR, not re-queued behind later messages (got "
              "%s)",
              codes[1]);
        int acked = 0;
        for (int i = 0; i < N; i++) acked += seqnum_valid(seq[i]);
        CHECK_INT(acked, N - 1, "the other %d are acked", N - 1);

        memset(seq, 0, sizeof seq);
        got = round_trip(c, "second", N, seq, codes);
        acked = 0;
        for (int i = 0; i < N; i++) acked += seqnum_valid(seq[i]);
        CHECK(got == N && acked == N, "batch whose LAST entry fails: retried, all %d acked (%d)", N,
              acked);
        CHECK(acks_in_send_order(seq, N, desc, sizeof desc), "and in send order (%s)", desc);
        wsc_free(c);
    }
    wsc_ctx_free(ctx);
    double ms;
    CHECK(term_in_time(&p, 25000, &ms), "partial failure: SIGTERM exit 0");
    atomic_store(&f.stop, true);
    shutdown(f.listen_fd, SHUT_RDWR);
    close(f.listen_fd);
    pthread_join(f.thread, NULL);
}

int main(void)
{
    tl_init();
    tl_log_dir("it_producer_outage", LOGDIR, sizeof LOGDIR);
    long nofile = tl_proc_raise_nofile(3 * CONNS + 1024);
    CHECK(nofile >= 2 * CONNS + 256,
          "open-files limit %ld is enough for %d connections (both ends)", nofile, CONNS);
    tl_stack_init(&STACK, "it_producer_outage", LOGDIR);

    partial_failure_order(); /* no stack needed */

    bool up = tl_stack_cmd(&STACK, "up --sqs-only") && tl_stack_load_env(&STACK);
    CHECK(up && STACK.fauxqs_pid > 0, "private SQS stack started (fauxqs pid %d)",
          (int)STACK.fauxqs_pid);
    if (!up || STACK.fauxqs_pid <= 0) return TEST_DONE();

    outage_many("2000-conns", NULL, true);
    const char *tight[] = {"CHATFLOW_MAX_INFLIGHT_TOTAL=1",
                           "CHATFLOW_MAX_INFLIGHT_PER_CONNECTION=1", "CHATFLOW_PUBLISHER_THREADS=1",
                           NULL};
    outage_many("inflight-1", tight, false);
    stalled_publisher();
    stop_queues_missing();
    stop_sqs_frozen_at_start();
    stop_frames_in_flight();
    return TEST_DONE();
}
