/*
 * it_producer_faults — the producer while SQS is frozen (SIGSTOP) and while it is down (process
 * stopped), on a private stack: every pending frame is answered within the deadline, the breaker
 * opens and /health/ready says 503; when SQS is back the breaker closes, traffic flows again, and
 * every acked message is in its queue exactly once.
 */
/* test-passes: asan valgrind */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_http.h"
#include "tl_proc.h"
#include "tl_producer.h"
#include "tl_sqs.h"
#include "tl_stack.h"
#include "uuid.h"

#define DEADLINE_MS 3000

static char LOGDIR[512];
static tl_stack STACK;
static tl_sqs Q;

static long ready_status(const tl_producer *p, char *body_out, size_t len)
{
    long st;
    char *b = tl_http_get(p->admin_port, "/health/ready", &st);
    snprintf(body_out, len, "%s", b ? b : "");
    free(b);
    return st;
}

static bool wait_ready_status(const tl_producer *p, long want, const char *must_contain,
                              int timeout_ms)
{
    char body[1024];
    for (int t = 0; t <= timeout_ms; t += 100) {
        if (ready_status(p, body, sizeof body) == want &&
            (!must_contain || strstr(body, must_contain)))
            return true;
        time_sleep_ms(100);
    }
    NOTE("last /health/ready: %s", body);
    return false;
}

typedef struct {
    int answered, acked, queue_errors, unavailable, other;
    double max_latency_ms;
    char ids[64][UUID_STR_BUF]; /* messageIds of acks */
} burst_result;

/* Sends n frames at once on c and waits for their answers (up to wait_ms). */
static burst_result burst(wsc_conn *c, int n, const char *tag, int user, int wait_ms)
{
    burst_result r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < n; i++) {
        char cmid[48];
        snprintf(cmid, sizeof cmid, "%s-%d", tag, i);
        char *f = tl_frame(user, tag, cmid);
        tl_ws_send_str(c, f);
        free(f);
    }
    wsc_flush(c, 2000);
    uint64_t sent = time_mono_ns();
    while (r.answered < n) {
        uint64_t now = time_mono_ns();
        long left = wait_ms - (long)((now - sent) / 1000000);
        if (left <= 0) break;
        size_t len;
        char *a = wsc_recv(c, (int)left, &len);
        if (!a) break;
        double ms = (double)(time_mono_ns() - sent) / 1e6;
        if (ms > r.max_latency_ms) r.max_latency_ms = ms;
        char st[32], code[32];
        tl_json_field(a, "status", st, sizeof st);
        tl_json_field(a, "errorCode", code, sizeof code);
        if (strcmp(st, "SUCCESS") == 0) {
            if (r.acked < 64) tl_json_field(a, "messageId", r.ids[r.acked], UUID_STR_BUF);
            r.acked++;
        } else if (strcmp(code, "QUEUE_ERROR") == 0) {
            r.queue_errors++;
        } else if (strcmp(code, "QUEUE_UNAVAILABLE") == 0) {
            r.unavailable++;
        } else {
            r.other++;
        }
        r.answered++;
        free(a);
    }
    return r;
}

/* Every acked id is in its room's queue exactly once (decimal room r is shard r, room.h). */
static void check_acked_in_queue(int room, char (*ids)[UUID_STR_BUF], int n_ids, const char *what)
{
    size_t n = 0;
    tl_sqs_msg *m = tl_sqs_drain_shard(&Q, room, &n);
    int missing = 0, twice = 0;
    for (int i = 0; i < n_ids; i++) {
        int seen = 0;
        for (size_t k = 0; k < n; k++) {
            char mid[64];
            if (strcmp(tl_json_field(m[k].body, "messageId", mid, sizeof mid), ids[i]) == 0) seen++;
        }
        if (seen == 0) missing++;
        if (seen > 1) twice++;
    }
    CHECK_INT(missing, 0, "%s: every one of the %d acked messages is in the queue", what, n_ids);
    CHECK_INT(twice, 0, "%s: none of them twice", what);
    NOTE("%s: queue held %zu messages for %d acks (unacked sends may also have landed)", what, n,
         n_ids);
    tl_sqs_msgs_free(m, n);
}

int main(void)
{
    tl_init();
    tl_log_dir("it_producer_faults", LOGDIR, sizeof LOGDIR);
    tl_stack_init(&STACK, "it_producer_faults", LOGDIR);
    bool up = tl_stack_cmd(&STACK, "up --sqs-only") && tl_stack_load_env(&STACK);
    pid_t fauxqs = up ? STACK.fauxqs_pid : 0;
    CHECK(up && fauxqs > 0, "private SQS stack started (fauxqs pid %d)", (int)fauxqs);
    if (!up || fauxqs <= 0) return TEST_DONE();
    if (!tl_sqs_open(&Q, "chatflow-room-", 5000) || !tl_sqs_lookup_shards(&Q, 2)) {
        CHECK(0, "room queues of the private stack found");
        return TEST_DONE();
    }

    char log_path[700];
    snprintf(log_path, sizeof log_path, "%s/producer.log", LOGDIR);
    const char *env[] = {"CHATFLOW_PUBLISH_DEADLINE_MS=3000",
                         "CHATFLOW_PUBLISH_REQUEST_TIMEOUT_MS=500",
                         "CHATFLOW_BREAKER_FAILURE_THRESHOLD=3",
                         "CHATFLOW_BREAKER_OPEN_MS=500",
                         "CHATFLOW_SQS_CONNECT_TIMEOUT_MS=300",
                         "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                         "CHATFLOW_LOG_LEVEL=info",
                         NULL};
    tl_producer p;
    bool started = tl_producer_start(&p, log_path, env) && wait_ready_status(&p, 200, NULL, 10000);
    CHECK(started, "producer started and ready (log %s)", log_path);
    if (!started) return TEST_DONE();

    wsc_ctx *ctx = wsc_ctx_new();
    wsc_conn *c1 = tl_producer_open_room(ctx, &p, "1", NULL);
    CHECK(c1 != NULL, "connected to /chat/1");
    if (!c1) return TEST_DONE();
    char acked1[64][UUID_STR_BUF];
    int n_acked1 = 0;

    burst_result b = burst(c1, 5, "before", 11, 5000);
    CHECK_INT(b.acked, 5, "SQS up: 5 frames acked");
    for (int i = 0; i < b.acked && n_acked1 < 64; i++)
        memcpy(acked1[n_acked1++], b.ids[i], UUID_STR_BUF);

    /* ---- frozen: SIGSTOP ---- */
    tl_stack_freeze_sqs(&STACK, true);
    b = burst(c1, 20, "frozen", 12, DEADLINE_MS + 2000);
    CHECK_INT(b.answered, 20, "SQS frozen: all 20 pending frames answered");
    CHECK(b.max_latency_ms <= DEADLINE_MS + 1000,
          "SQS frozen: answered within the %d ms deadline (slowest %.0f ms)", DEADLINE_MS,
          b.max_latency_ms);
    CHECK_INT(b.queue_errors + b.unavailable, 20,
              "SQS frozen: answered QUEUE_ERROR or QUEUE_UNAVAILABLE (%d / %d)", b.queue_errors,
              b.unavailable);
    CHECK(wait_ready_status(&p, 503, "open", 3000),
          "SQS frozen: /health/ready 503 naming the breaker state");
    CHECK(tl_producer_metric(&p, "chatflow_circuit_breaker_state", NULL) >= 1,
          "SQS frozen: breaker gauge not closed");
    b = burst(c1, 3, "while-open", 13, DEADLINE_MS + 2000);
    CHECK_INT(b.queue_errors + b.unavailable, 3,
              "breaker open: new frames answered with an error (%d unavailable)", b.unavailable);
    tl_stack_freeze_sqs(&STACK, false);
    CHECK(wait_ready_status(&p, 200, NULL, 10000), "SQS thawed: ready again (breaker closed)");
    CHECK(tl_producer_metric(&p, "chatflow_circuit_breaker_state", NULL) == 0,
          "SQS thawed: breaker gauge 0");
    b = burst(c1, 10, "thawed", 14, 5000);
    CHECK_INT(b.acked, 10, "SQS thawed: traffic flows (10 of 10 acked)");
    for (int i = 0; i < b.acked && n_acked1 < 64; i++)
        memcpy(acked1[n_acked1++], b.ids[i], UUID_STR_BUF);
    check_acked_in_queue(1, acked1, n_acked1, "after the freeze");

    /* ---- down: the process stopped, then restarted ---- */
    wsc_conn *c2 = tl_producer_open_room(ctx, &p, "2", NULL);
    CHECK(c2 != NULL, "connected to /chat/2");
    if (!c2) return TEST_DONE();
    CHECK(tl_stack_cmd(&STACK, "stop-sqs"), "fauxqs stopped");
    b = burst(c2, 10, "down", 21, DEADLINE_MS + 2000);
    CHECK_INT(b.answered, 10, "SQS down: all 10 frames answered");
    CHECK(b.max_latency_ms <= DEADLINE_MS + 1000, "SQS down: within the deadline (slowest %.0f ms)",
          b.max_latency_ms);
    CHECK_INT(b.queue_errors + b.unavailable, 10,
              "SQS down: QUEUE_ERROR or QUEUE_UNAVAILABLE (%d / %d)", b.queue_errors,
              b.unavailable);
    CHECK(wait_ready_status(&p, 503, "open", 3000),
          "SQS down: /health/ready 503 naming the breaker state");
    CHECK(tl_stack_cmd(&STACK, "restart-sqs") && tl_stack_load_env(&STACK),
          "fauxqs restarted (queues recreated)");
    tl_sqs_lookup_shards(&Q, 2);
    CHECK(wait_ready_status(&p, 200, NULL, 15000), "SQS back: ready again");
    b = burst(c2, 10, "back", 22, 5000);
    CHECK_INT(b.acked, 10, "SQS back: traffic flows (10 of 10 acked)");
    check_acked_in_queue(2, b.ids, b.acked, "after the restart");

    wsc_free(c1);
    wsc_free(c2);
    wsc_ctx_free(ctx);
    bool in_time = false;
    int st = tl_producer_stop(&p, SIGTERM, 30000, &in_time);
    CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: exit 0");
    tl_sqs_close(&Q);
    return TEST_DONE();
}
