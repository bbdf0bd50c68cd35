/*
 * chatflow-producer — WebSocket ingress that validates chat frames, publishes them to their
 * room's SQS FIFO queue shard in batches and acks each one once SQS has it.
 *
 * Threads: the libwebsockets service thread (this one, in ingress_run), the publisher threads,
 * libmicrohttpd's admin threads, the load balancer watcher (lb_watch.c: when the ALB drains this
 * task, its clients are moved before the ALB cuts them), and a signal thread that turns
 * SIGTERM/SIGINT into ingress_request_stop() (sigwait: no work in a signal handler).
 *
 * Stopping is bounded by CHATFLOW_STOP_TIMEOUT_S from the signal in every state (queue URLs
 * unresolved, SQS unreachable, frames in flight): the ingress drains and closes before the
 * deadline, then the publisher gets what is left of it. If a publisher thread has not ended by
 * then, the process exits 0 at once without freeing anything that thread may still use.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "breaker.h"
#include "credentials.h"
#include "failpoint.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "process_metrics.h"
#include "producer_metrics.h"
#include "publisher.h"
#include "redact.h"
#include "auth.h"
#include "settings.h"
#include "timeutil.h"
#include "watchdog.h"
#include "ingress.h"
#include "lb_watch.h"

#define EXIT_MARGIN_NS                                                        \
    ((uint64_t)250 * 1000000) /* of the stop budget, kept for the exit itself \
                               */

typedef struct {
    publisher *pub;
    circuit_breaker *breaker;
    ingress *in;
    sigset_t signals;
} app;

static bool check_sqs(void *ctx, char *detail, size_t len)
{
    app *a = ctx;
    size_t ready = publisher_shards_ready(a->pub), shards = publisher_shard_count(a->pub);
    circuit_state_t st = circuit_state(a->breaker);
    snprintf(detail, len, "breaker %s; queue URLs resolved for %zu of %zu queue shards",
             circuit_state_name(st), ready, shards);
    return st == CIRCUIT_CLOSED && ready == shards;
}

static bool check_accepting(void *ctx, char *detail, size_t len)
{
    app *a = ctx;
    bool stopping = ingress_stopping(a->in);
    snprintf(detail, len, "%s", stopping ? "shutting down" : "accepting connections");
    return !stopping;
}

/* /health/serving: what a load balancer routes on — 503 from the moment the drain starts. */
static bool check_serving(void *ctx, char *detail, size_t len)
{
    app *a = ctx;
    bool stopping = ingress_stopping(a->in);
    snprintf(detail, len, "%s", stopping ? "draining: shutting down" : "accepting connections");
    return !stopping;
}

static void *signal_thread(void *arg)
{
    app *a = arg;
    int sig = 0;
    if (sigwait(&a->signals, &sig) == 0) {
        log_info("producer", "%s received: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        ingress_request_stop(a->in);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static producer_settings s;
    char err[512];
    switch (producer_settings_load(&s, &argc, argv, err, sizeof err)) {
    case PRODUCER_SETTINGS_HELP: return 0;
    case PRODUCER_SETTINGS_ERROR:
        redact_text(err,
                    sizeof err); /* a value quoted back may be a secret put in the wrong place */
        fprintf(stderr, "chatflow-producer: %s\n", err);
        return 2;
    case PRODUCER_SETTINGS_OK: break;
    }

    /* Block the stop signals before any thread exists, so only the signal thread sees them. */
    app a;
    memset(&a, 0, sizeof a);
    sigemptyset(&a.signals);
    sigaddset(&a.signals, SIGTERM);
    sigaddset(&a.signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &a.signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    producer_metrics *m = producer_metrics_init();
    int rc = 1;
    credentials_provider *creds = NULL;
    auth *ids = NULL; /* identity tokens; NULL when CHATFLOW_AUTH is off */
    admin_http *admin = NULL;
    lb_watch *lb = NULL; /* the load balancer's drain; NULL when not watched */
    a.breaker =
        circuit_breaker_new((int)s.breaker_failure_threshold, s.breaker_open_ms, m->breaker_state);
    if (!a.breaker) {
        log_error("producer", "out of memory");
        return 1;
    }
    creds = credentials_provider_new(err, sizeof err);
    if (!creds) {
        redact_text(err, sizeof err);
        log_error("producer", "AWS credentials: %s", err);
        goto out;
    }
    /* Before any thread that uses libcurl starts: a JWKS URL is fetched here (jwks.h). */
    if (!auth_open(&s.common, &ids, err, sizeof err)) {
        redact_text(err, sizeof err);
        log_error("producer", "%s", err);
        goto out;
    }
    if (s.dev_tokens)
        log_warn("producer",
                 "CHATFLOW_DEV_TOKENS is on: GET /dev/token on port %lld gives ANYONE who can "
                 "reach it a token for ANY user. Development only; never on a shared network.",
                 s.ws_port);
    a.in = ingress_new(&s, a.breaker, err, sizeof err);
    if (!a.in) {
        redact_text(err, sizeof err);
        log_error("producer", "%s", err);
        goto out;
    }
    ingress_set_auth(a.in, ids);
    publisher_config pc = {
        .region = s.common.aws_region,
        .endpoint = s.common.sqs_endpoint,
        .credentials = creds,
        .queue_prefix = s.common.queue_prefix,
        .shards = (int)s.common.queue_shards,
        .threads = (int)s.publisher_threads,
        .linger_ms = (long)s.publish_linger_ms,
        .deadline_ms = (long)s.publish_deadline_ms,
        .request_timeout_ms = (long)s.publish_request_timeout_ms,
        .connect_timeout_ms = (long)s.common.sqs_connect_timeout_ms,
        .breaker = a.breaker,
        .results = ingress_results(a.in),
        .wake = ingress_wake,
        .wake_ctx = a.in,
        .queue_capacity = (size_t)s.max_inflight_total + 1024,
        .failpoint_stall = failpoint_on("stall-publisher"),
    };
    a.pub = publisher_start(&pc, err, sizeof err);
    if (!a.pub) {
        redact_text(err, sizeof err);
        log_error("producer", "%s", err);
        goto out;
    }
    ingress_attach_publisher(a.in, a.pub);

    process_metrics_register("producer");
    admin = admin_http_new();
    if (!admin) {
        log_error("producer", "out of memory");
        goto out;
    }
    admin_http_add_check(admin, "sqs", check_sqs, &a);
    admin_http_add_check(admin, "accepting", check_accepting, &a);
    /* Liveness is the watchdog only (the service loop and the publisher threads): never SQS,
     * whose outages are /health/ready's business and must not get every task restarted. */
    admin_http_set_liveness(admin, watchdog_health_check, NULL);
    admin_http_set_serving(admin, check_serving, &a);
    if (!admin_http_start(admin, s.common.admin_bind, (int)s.admin_port, (int)s.admin_threads, err,
                          sizeof err)) {
        redact_text(err, sizeof err);
        log_error("producer", "admin HTTP: %s", err);
        goto out;
    }

    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, signal_thread, &a) != 0) {
        log_error("producer", "cannot start the signal thread");
        goto out;
    }
    pthread_detach(sig_thread);
    if (!lb_watch_start_configured(&s.common, creds, ingress_port(a.in), ingress_shed, a.in, &lb,
                                   err, sizeof err)) {
        redact_text(err, sizeof err);
        log_error("producer", "load balancer watch: %s", err);
        goto out;
    }

    char endpoint[sizeof s.common.sqs_endpoint];
    snprintf(endpoint, sizeof endpoint, "%s",
             s.common.sqs_endpoint[0] ? s.common.sqs_endpoint : "(AWS)");
    redact_text(endpoint, sizeof endpoint); /* http://user:password@host must not reach the log */
    log_info("producer", "listening ws=%d admin=%d queue_shards=%lld server_id=%s sqs=%s",
             ingress_port(a.in), admin_http_port(admin), s.common.queue_shards, s.common.server_id,
             endpoint);
    ingress_run(a.in);
    rc = 0;
    log_info("producer", "stopped");

out:
    lb_watch_stop(lb); /* its callback wakes the ingress */
    /* The admin server goes first: its readiness check reads the publisher and the breaker, so
     * it must not answer once they are freed. Then the publisher: it answers what it holds, and
     * its results need the ingress's queue (freed with the ingress). */
    admin_http_free(admin);
    uint64_t deadline = a.in ? ingress_stop_deadline_ns(a.in) : time_mono_ns();
    if (!publisher_stop(a.pub, deadline > EXIT_MARGIN_NS ? deadline - EXIT_MARGIN_NS : deadline)) {
        /* A publisher thread is still inside a request: it may use the ingress's results queue
         * and lws context, the credentials and the breaker. Free none of it; just go. */
        log_warn("producer", "stopped without joining every publisher thread (stop timeout)");
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    ingress_free(a.in);
    auth_close(ids);
    credentials_provider_free(creds);
    circuit_breaker_free(a.breaker);
    return rc;
}
