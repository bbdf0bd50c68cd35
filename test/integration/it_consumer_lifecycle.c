/*
 * it_consumer_lifecycle — the consumer's health endpoints and its stop, in the states that used to
 * hang or mislead:
 *  - /health/serving is 200 once the consumer accepts subscribers; /health/live is 200 while its
 *    loops turn — and 503 naming the loop when one is wedged (the test-only failpoint
 *    CHATFLOW_TEST_FAILPOINT=stall-poller), while /health/serving and the subscriber port still
 *    answer;
 *  - SIGTERM exits 0 within CHATFLOW_STOP_TIMEOUT_S: with every poller inside a 20 s long poll;
 *    with the room queues missing (queue URLs never resolved); with SQS unreachable (a port that
 *    accepts connections and never answers, so every call hangs until its timeout); with a wedged
 *    poller (which is never joined: the process exits without freeing what it may still use).
 */
/* test-passes: asan */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_pg.h"
#include "tl_proc.h"
#include "uuid.h"
#include "wsclient.h"

static tl_consumer_env env;

static long http_status(int port, const char *path, char **body_out)
{
    long st = 0;
    char *body = tl_http("GET", port, path, &st);
    if (body_out)
        *body_out = body;
    else
        free(body);
    return st;
}

/* SIGTERM, then the exit status and how long it took. */
static void stop_within(tl_consumer *c, int stop_timeout_s, const char *state)
{
    uint64_t t0 = time_mono_ns();
    bool in_time = false;
    int st = tl_consumer_stop(c, SIGTERM, (stop_timeout_s + 5) * 1000, &in_time);
    double took = (double)(time_mono_ns() - t0) / 1e9;
    CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0 && took <= stop_timeout_s + 0.5,
          "SIGTERM %s: exit 0 within the %d s stop timeout (%.1f s)", state, stop_timeout_s, took);
}

static void test_long_poll_stop(void)
{
    const char *cenv[] = {"CHATFLOW_RECEIVE_WAIT_S=20", "CHATFLOW_STOP_TIMEOUT_S=5", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer-long-poll", cenv)) {
        CHECK(false, "consumer with 20 s long polls started");
        return;
    }
    CHECK_INT(http_status(c.admin_port, "/health/serving", NULL), 200,
              "/health/serving is 200 once started");
    CHECK_INT(http_status(c.admin_port, "/health/live", NULL), 200, "/health/live is 200");
    time_sleep_ms(1500); /* every poller is inside its long poll now */
    stop_within(&c, 5, "with every poller in a 20 s long poll");
}

static void test_unresolved_queues_stop(void)
{
    const char *cenv[] = {"CHATFLOW_QUEUE_PREFIX=it-lifecycle-no-such-room-",
                          "CHATFLOW_STOP_TIMEOUT_S=5", NULL};
    tl_consumer c;
    tl_consumer_spawn(&env, &c, "consumer-no-queues", cenv);
    CHECK(c.pid > 0, "consumer started against missing room queues");
    time_sleep_ms(2000);
    stop_within(&c, 5, "with the queue URLs unresolved");
}

static void test_unreachable_sqs_stop(void)
{
    /* Accepts connections (the kernel completes the handshake) and never answers. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
              listen(fd, 64) == 0 && getsockname(fd, (struct sockaddr *)&addr, &len) == 0;
    CHECK(ok, "a port that never answers");
    char endpoint[96];
    snprintf(endpoint, sizeof endpoint, "AWS_ENDPOINT_URL_SQS=http://127.0.0.1:%d",
             ntohs(addr.sin_port));
    const char *cenv[] = {endpoint, "CHATFLOW_SQS_REQUEST_TIMEOUT_MS=30000",
                          "CHATFLOW_STOP_TIMEOUT_S=5", NULL};
    tl_consumer c;
    tl_consumer_spawn(&env, &c, "consumer-sqs-hangs", cenv);
    CHECK(c.pid > 0, "consumer started against an SQS endpoint that hangs for 30 s a call");
    time_sleep_ms(2000);
    stop_within(&c, 5, "while a GetQueueUrl call hangs");
    if (fd >= 0) close(fd);
}

static void test_wedged_poller(void)
{
    /* Short waits so the poller's announced turn (long poll + 6 request timeouts + 10 s) is ~14 s.
     */
    const char *cenv[] = {"CHATFLOW_TEST_FAILPOINT=stall-poller", "CHATFLOW_RECEIVE_WAIT_S=1",
                          "CHATFLOW_SQS_REQUEST_TIMEOUT_MS=500", "CHATFLOW_STOP_TIMEOUT_S=5", NULL};
    tl_consumer c;
    if (!tl_consumer_start(&env, &c, "consumer-wedged", cenv)) {
        CHECK(false, "consumer with a wedged poller started");
        return;
    }
    CHECK_INT(http_status(c.admin_port, "/health/live", NULL), 200,
              "live at first: the wedge is not overdue yet");
    long st = 0;
    char *body = NULL;
    uint64_t t0 = time_mono_ns();
    for (int i = 0; i < 300 && st != 503; i++) {
        free(body);
        st = http_status(c.admin_port, "/health/live", &body);
        if (st != 503) time_sleep_ms(100);
    }
    CHECK(st == 503 && body && strstr(body, "poller-0"),
          "/health/live turns 503 naming the stuck loop after %.1f s (%s)",
          (double)(time_mono_ns() - t0) / 1e9, body ? body : "no answer");
    free(body);
    CHECK(tl_metric(c.admin_port, "chatflow_watchdog_stuck_loops", NULL) >= 1,
          "chatflow_watchdog_stuck_loops counts it");
    CHECK_INT(http_status(c.admin_port, "/health/serving", NULL), 200,
              "/health/serving still 200 (it still accepts)");
    wsc_ctx *ctx = wsc_ctx_new();
    int hs = 0;
    char err[256];
    wsc_conn *ws =
        ctx ? wsc_connect(ctx, "127.0.0.1", c.ws_port, "/chat/2", 5000, &hs, err, sizeof err)
            : NULL;
    CHECK(ws != NULL, "and a subscriber can still connect");
    if (ws) wsc_free(ws);
    if (ctx) wsc_ctx_free(ctx);
    stop_within(&c, 5, "with a wedged poller (never joined)");
}

int main(void)
{
    if (!tl_consumer_env_init(&env, "consumer_lifecycle", 3)) {
        CHECK(false, "test environment set up");
        tl_consumer_env_done(&env);
        return TEST_DONE();
    }
    test_long_poll_stop();
    test_unresolved_queues_stop();
    test_unreachable_sqs_stop();
    test_wedged_poller();
    tl_consumer_env_done(&env);
    return TEST_DONE();
}
