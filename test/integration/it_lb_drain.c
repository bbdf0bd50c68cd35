/*
 * it_lb_drain — the drain behind a load balancer, in the order ECS runs it: the target is
 * deregistered (the ALB drains it), the deregistration delay passes (the ALB would cut what is
 * still open then), SIGTERM. Both services watch their own target (lb_watch.h) through a
 * stand-in for ELBv2 and the ECS task metadata (test/lib/elb_standin.py) that checks every
 * request's SigV4 signature; the test changes the target's state there.
 *
 * Checked: each service asks, signed, for its own address (from the task metadata) and port;
 * a failing or nonsensical answer changes nothing; once its target drains, the producer answers
 * every frame it read and closes each client 1001, the consumer closes each subscriber 1001, both
 * well inside the delay and while the other service's clients stay; the drained services go on
 * working (a new subscriber gets a new message end to end); a second deregistration drains
 * again; SIGTERM after the delay ends both with exit 0.
 */
/* test-passes: asan tsan */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_proc.h"
#include "tl_producer.h"

#define POLL_S 1
/* The test's deregistration delay: what the clients must be closed within. ECS uses 20 s with
 * a 5 s poll (docs/deployment.md); this keeps the same proportion, with room for slow builds. */
#define DELAY_MS 12000
#define CLIENTS 4
#define FRAMES 40
#define KEY "LBTESTKEY"
#define SECRET "lb-test-secret-not-a-real-one"
#define REGION "us-east-1"
#define ACCOUNT_ARN "arn:aws:elasticloadbalancing:" REGION ":123456789012:targetgroup/"
#define PRODUCER_GROUP "chatflow-producer"
#define CONSUMER_GROUP "chatflow-consumer"

static char LOGDIR[512];
static char STANDIN_DIR[600];

typedef struct {
    int answers, acks, events;
    char marker[64]; /* a subscriber counts events containing this ("" = all) */
} client_state;

static void on_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    client_state *s = user;
    char *t = strndup(data, len);
    if (strstr(t, "\"status\"")) {
        s->answers++;
        if (strstr(t, "\"SUCCESS\"")) s->acks++;
    } else if (!s->marker[0] || strstr(t, s->marker)) {
        s->events++;
    }
    free(t);
}

/* ---- the stand-in ---- */

static void set_state(const char *group, const char *state)
{
    char path[700], tmp[710];
    snprintf(path, sizeof path, "%s/state-%s", STANDIN_DIR, group);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "%s\n", state);
    fclose(f);
    rename(tmp, path); /* the stand-in never reads half a state */
}

static int start_standin(void)
{
    snprintf(STANDIN_DIR, sizeof STANDIN_DIR, "%s/elb", LOGDIR);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", STANDIN_DIR, STANDIN_DIR);
    if (!tl_sh(cmd)) return 0;
    char script[600], log_path[700];
    snprintf(script, sizeof script, "%s/test/lib/elb_standin.py", tl_env("ROOT", "."));
    snprintf(log_path, sizeof log_path, "%s/standin.log", STANDIN_DIR);
    const char *args[] = {script,     "--dir", STANDIN_DIR, "--key", KEY,
                          "--secret", SECRET,  "--region",  REGION,  NULL};
    pid_t pid = tl_proc_spawn("/usr/bin/python3", args, NULL, log_path);
    if (pid <= 0) return 0;
    char port_path[700];
    snprintf(port_path, sizeof port_path, "%s/port", STANDIN_DIR);
    for (int waited = 0; waited < 10000; waited += 50) {
        FILE *f = fopen(port_path, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1) port = 0;
            fclose(f);
        }
        if (port > 0) return port;
        time_sleep_ms(50);
    }
    return 0;
}

typedef struct {
    int total, signed_ok, bad;
    int last_port;
    char last_id[64], last_why[200];
} request_tally;

/* The stand-in's log of one group's requests. */
static request_tally tally(const char *group)
{
    request_tally t = {0};
    char path[700], line[2048], want[128];
    snprintf(path, sizeof path, "%s/requests.log", STANDIN_DIR);
    snprintf(want, sizeof want, "\"group\": \"%s\"", group);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (!strstr(line, want)) continue;
        t.total++;
        if (strstr(line, "\"ok\": true")) {
            t.signed_ok++;
        } else {
            t.bad++;
            tl_json_field(line, "why", t.last_why, sizeof t.last_why);
        }
        tl_json_field(line, "id", t.last_id, sizeof t.last_id);
        char port[16];
        t.last_port = atoi(tl_json_field(line, "port", port, sizeof port));
    }
    if (f) fclose(f);
    return t;
}

/* The monotonic instant ms from now. Waits below are measured on the clock: wsc_service()
 * returns as soon as a client has something to do, so counting its timeouts would end a wait
 * early whenever traffic flows (a slow build then fails a check that only needed more time). */
static uint64_t after_ms(long ms) { return time_mono_ns() + (uint64_t)ms * 1000000ull; }

/* Waits (bounded) until the group has had `more` requests beyond `after`. */
static bool wait_requests(const char *group, int after, int more, wsc_ctx *ctx)
{
    uint64_t until = after_ms(10000 + 3000L * more);
    while (time_mono_ns() < until) {
        if (tally(group).total >= after + more) return true;
        wsc_service(ctx, 50);
    }
    return false;
}

/* ---- clients ---- */

static int count_closed(wsc_conn **c, int n, int *going_away)
{
    int closed = 0;
    *going_away = 0;
    for (int i = 0; i < n; i++) {
        if (!c[i] || !wsc_is_closed(c[i])) continue;
        closed++;
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(c[i], &code, &reason);
        if (code == 1001) (*going_away)++;
    }
    return closed;
}

/* Services the clients until all n are closed or ms pass; returns how many closed. */
static int wait_closed(wsc_ctx *ctx, wsc_conn **c, int n, int ms, int *going_away)
{
    uint64_t until = after_ms(ms);
    int closed = 0;
    while ((closed = count_closed(c, n, going_away)) < n && time_mono_ns() < until)
        wsc_service(ctx, 20);
    return closed;
}

static void pump(wsc_ctx *ctx, int ms)
{
    uint64_t until = after_ms(ms);
    while (time_mono_ns() < until) wsc_service(ctx, 20);
}

static wsc_conn *open_client(wsc_ctx *ctx, int port, const char *path, client_state *s)
{
    char err[256];
    int status = 0;
    wsc_conn *c = wsc_connect(ctx, "127.0.0.1", port, path, 5000, &status, err, sizeof err);
    if (c) wsc_set_callbacks(c, on_message, NULL, s);
    return c;
}

/* ---- the scenario ---- */

typedef struct {
    tl_consumer_env env;
    tl_producer producer;
    tl_consumer consumer;
    wsc_ctx *ctx;
    wsc_conn *writers[CLIENTS], *readers[CLIENTS], *late_writer, *late_reader;
    client_state wstate[CLIENTS], rstate[CLIENTS], late_wstate, late_rstate;
} world;

static bool start_services(world *w, int standin_port)
{
    static char endpoint[128], metadata[128], producer_arn[160], consumer_arn[160], prefix[128];
    snprintf(endpoint, sizeof endpoint,
             "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=http://127.0.0.1:%d/", standin_port);
    snprintf(metadata, sizeof metadata,
             "ECS_CONTAINER_METADATA_URI_V4=http://127.0.0.1:%d/v4/task-container", standin_port);
    snprintf(producer_arn, sizeof producer_arn,
             "CHATFLOW_LB_TARGET_GROUP_ARN=" ACCOUNT_ARN PRODUCER_GROUP "/73e2d6bc24d8a067");
    snprintf(consumer_arn, sizeof consumer_arn,
             "CHATFLOW_LB_TARGET_GROUP_ARN=" ACCOUNT_ARN CONSUMER_GROUP "/0a1b2c3d4e5f6a7b");
    snprintf(prefix, sizeof prefix, "CHATFLOW_QUEUE_PREFIX=%s", w->env.q.prefix);
    static char shards[64];
    snprintf(shards, sizeof shards, "CHATFLOW_QUEUE_SHARDS=%d", w->env.shards);
    const char *producer_env[] = {prefix,
                                  shards,
                                  endpoint,
                                  metadata,
                                  producer_arn,
                                  "CHATFLOW_LB_POLL_S=1",
                                  "AWS_ACCESS_KEY_ID=" KEY,
                                  "AWS_SECRET_ACCESS_KEY=" SECRET,
                                  "AWS_REGION=" REGION,
                                  "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                                  "CHATFLOW_PUBLISH_LINGER_MS=1000",
                                  "CHATFLOW_STOP_TIMEOUT_S=10",
                                  NULL};
    const char *consumer_env[] = {endpoint,
                                  metadata,
                                  consumer_arn,
                                  "CHATFLOW_LB_POLL_S=1",
                                  "AWS_ACCESS_KEY_ID=" KEY,
                                  "AWS_SECRET_ACCESS_KEY=" SECRET,
                                  "AWS_REGION=" REGION,
                                  "CHATFLOW_STOP_TIMEOUT_S=10",
                                  NULL};
    char log_path[700];
    snprintf(log_path, sizeof log_path, "%s/producer.log", LOGDIR);
    bool producer_up = tl_producer_start(&w->producer, log_path, producer_env);
    CHECK(producer_up, "producer started, watching %s (log %s)", PRODUCER_GROUP, log_path);
    bool consumer_up =
        producer_up && tl_consumer_start(&w->env, &w->consumer, "consumer", consumer_env);
    CHECK(consumer_up, "consumer started, watching %s", CONSUMER_GROUP);
    return producer_up && consumer_up;
}

static void check_requests(const world *w)
{
    request_tally p = tally(PRODUCER_GROUP), c = tally(CONSUMER_GROUP);
    CHECK(p.total > 0 && p.bad == 0 && c.total > 0 && c.bad == 0,
          "every DescribeTargetHealth call is SigV4-signed for elasticloadbalancing with the "
          "task's key (producer %d, consumer %d; refused: %s)",
          p.total, c.total, p.bad ? p.last_why : c.last_why);
    CHECK(strcmp(p.last_id, "127.0.0.1") == 0 && p.last_port == w->producer.ws_port,
          "the producer asks for its own target: the task metadata's address and its WebSocket "
          "port (%s:%d, port %d)",
          p.last_id, p.last_port, w->producer.ws_port);
    CHECK(strcmp(c.last_id, "127.0.0.1") == 0 && c.last_port == w->consumer.ws_port,
          "the consumer asks for its subscriber port (%s:%d, port %d)", c.last_id, c.last_port,
          w->consumer.ws_port);
}

static void open_clients(world *w)
{
    int writers = 0, readers = 0;
    for (int i = 0; i < CLIENTS; i++) {
        char path[32];
        snprintf(path, sizeof path, "/chat/%d", i % w->env.shards + 1);
        w->writers[i] = open_client(w->ctx, w->producer.ws_port, path, &w->wstate[i]);
        w->readers[i] = open_client(w->ctx, w->consumer.ws_port, path, &w->rstate[i]);
        writers += w->writers[i] != NULL;
        readers += w->readers[i] != NULL;
    }
    CHECK(writers == CLIENTS && readers == CLIENTS,
          "%d producer clients and %d consumer subscribers connected", writers, readers);
}

/* Failing answers: counted, nothing closed, the service still live. */
static void check_bad_answers(world *w)
{
    double errors0 =
        tl_metric(w->producer.admin_port, "chatflow_lb_target_checks_total", "result=\"error\"");
    const char *bad[] = {"http-500", "garbage"};
    for (size_t k = 0; k < 2; k++) {
        set_state(PRODUCER_GROUP, bad[k]);
        wait_requests(PRODUCER_GROUP, tally(PRODUCER_GROUP).total, 2, w->ctx);
    }
    set_state(PRODUCER_GROUP, "healthy");
    wait_requests(PRODUCER_GROUP, tally(PRODUCER_GROUP).total, 2, w->ctx);
    double errors =
        tl_metric(w->producer.admin_port, "chatflow_lb_target_checks_total", "result=\"error\"");
    CHECK(errors - errors0 >= 2,
          "an AWS error and an answer that is not XML are counted as failed checks (%.0f)",
          errors - errors0);
    int going_away;
    CHECK_INT(count_closed(w->writers, CLIENTS, &going_away), 0,
              "no client is closed for a failed check");
    CHECK_INT((int)tl_http_status(w->producer.admin_port, "/health/live"), 200,
              "the producer stays live");
}

/* "N connections ... their M frames" from the producer's drain line, for the record. */
static const char *drain_log_words(const char *log_path)
{
    static char words[160];
    snprintf(words, sizeof words, "(no drain line)");
    FILE *f = fopen(log_path, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "load balancer drain: closing ");
        if (!p) continue;
        snprintf(words, sizeof words, "%s", p + strlen("load balancer drain: "));
        words[strcspn(words, "\n")] = '\0';
        break;
    }
    if (f) fclose(f);
    return words;
}

/* The group's target takes `state`; within the test's deregistration delay every one of the n
 * clients must be closed by the service with 1001. */
static void drain(world *w, const char *group, const char *state, wsc_conn **c, int n,
                  const char *who)
{
    set_state(group, state);
    int going_away = 0;
    int closed = wait_closed(w->ctx, c, n, DELAY_MS, &going_away);
    CHECK(closed == n && going_away == n,
          "%s %s: within the deregistration delay every %s is closed 1001 going away (%d of %d "
          "closed, %d with 1001)",
          group, state, who, closed, n, going_away);
}

static void check_producer_drain(world *w)
{
    int sent = 0;
    for (int k = 0; k < FRAMES; k++)
        for (int i = 0; i < CLIENTS; i++) {
            char *f = tl_frame(100 + i, "sent as the target starts draining", NULL);
            if (w->writers[i] && tl_ws_send_str(w->writers[i], f)) sent++;
            free(f);
        }
    for (int i = 0; i < CLIENTS; i++)
        if (w->writers[i]) wsc_flush(w->writers[i], 5000);
    /* Frames still in the socket when reads stop are never read (the close resets them); the
     * drain begins once every frame is answered or held by the producer. */
    for (uint64_t until = after_ms(10000); time_mono_ns() < until;) {
        int answered = 0;
        for (int i = 0; i < CLIENTS; i++) answered += w->wstate[i].answers;
        double held = tl_metric(w->producer.admin_port, "chatflow_inflight_messages", NULL);
        if (answered + held >= sent) break;
        wsc_service(w->ctx, 10);
    }
    /* One more frame each: a batch short of 10 waits out the linger (1 s) at the publisher, so
     * the drain most likely finds frames there, and must wait for their acks before closing. */
    for (int i = 0; i < CLIENTS; i++) {
        char *f = tl_frame(100 + i, "held by the publisher's linger", NULL);
        if (w->writers[i] && tl_ws_send_str(w->writers[i], f)) sent++;
        free(f);
    }
    for (uint64_t until = after_ms(5000); time_mono_ns() < until;) {
        if (tl_metric(w->producer.admin_port, "chatflow_inflight_messages", NULL) > 0) break;
        wsc_service(w->ctx, 5);
    }
    drain(w, PRODUCER_GROUP, "draining", w->writers, CLIENTS, "producer client");
    int answers = 0, acks = 0;
    for (int i = 0; i < CLIENTS; i++) {
        answers += w->wstate[i].answers;
        acks += w->wstate[i].acks;
    }
    CHECK(answers == sent + CLIENTS,
          "every frame got its answer before its connection closed (%d answers, %d acks, %d "
          "frames + %d earlier)",
          answers, acks, sent, CLIENTS);
    NOTE("the drain began with %s", drain_log_words(w->producer.log_path));
    int going_away;
    CHECK_INT(count_closed(w->readers, CLIENTS, &going_away), 0,
              "the consumer's subscribers stay: its target is not draining");
    CHECK(tl_metric(w->producer.admin_port, "chatflow_lb_target_draining", NULL) == 1 &&
              tl_metric(w->producer.admin_port, "chatflow_lb_target_drains_total", NULL) == 1,
          "chatflow_lb_target_draining 1, chatflow_lb_target_drains_total 1");
    CHECK_INT((int)tl_http_status(w->producer.admin_port, "/health/live"), 200,
              "the producer keeps running until its SIGTERM");
}

/* After its drain the producer still takes a connection (a target registered again), and the
 * drain is not repeated while the target stays draining. */
static void check_after_producer_drain(world *w)
{
    w->late_writer = open_client(w->ctx, w->producer.ws_port, "/chat/1", &w->late_wstate);
    CHECK(w->late_writer != NULL, "a client connecting after the drain is accepted");
    int before = tally(PRODUCER_GROUP).total;
    wait_requests(PRODUCER_GROUP, before, 2, w->ctx);
    CHECK(w->late_writer && !wsc_is_closed(w->late_writer),
          "it is not closed while the target stays draining (one drain per deregistration)");
}

static void check_consumer_drain(world *w)
{
    drain(w, CONSUMER_GROUP, "draining", w->readers, CLIENTS, "subscriber");
    CHECK(tl_metric(w->consumer.admin_port, "chatflow_lb_target_drains_total", NULL) == 1,
          "the consumer counts its drain");

    /* The drained consumer still polls and delivers: a new subscriber (through a target
     * registered again) gets a new message end to end. */
    snprintf(w->late_rstate.marker, sizeof w->late_rstate.marker, "after-drain-%d", (int)getpid());
    w->late_reader = open_client(w->ctx, w->consumer.ws_port, "/chat/1", &w->late_rstate);
    CHECK(w->late_reader != NULL, "a subscriber connecting after the drain is accepted");
    pump(w->ctx, 300);
    char *f = tl_frame(7, w->late_rstate.marker, NULL);
    if (w->late_writer) tl_ws_send_str(w->late_writer, f);
    free(f);
    for (uint64_t until = after_ms(15000);
         time_mono_ns() < until && (w->late_rstate.events == 0 || w->late_wstate.acks == 0);)
        wsc_service(w->ctx, 20);
    CHECK(w->late_rstate.events >= 1 && w->late_wstate.acks >= 1,
          "a message sent after both drains is acked and delivered to the new subscriber");
}

static void check_second_deregistration(world *w)
{
    set_state(PRODUCER_GROUP, "healthy");
    wait_requests(PRODUCER_GROUP, tally(PRODUCER_GROUP).total, 2, w->ctx);
    NOTE("registered again, then deregistered again (unhealthy.draining)");
    drain(w, PRODUCER_GROUP, "unhealthy.draining", &w->late_writer, 1, "late producer client");
    CHECK(tl_metric(w->producer.admin_port, "chatflow_lb_target_drains_total", NULL) == 2,
          "chatflow_lb_target_drains_total 2");
}

static void check_sigterm(world *w)
{
    /* The delay is over: the target is gone from the group, and ECS sends SIGTERM. */
    set_state(PRODUCER_GROUP, "unused");
    set_state(CONSUMER_GROUP, "unused");
    bool p_in_time = false, c_in_time = false;
    int ps = tl_producer_stop(&w->producer, SIGTERM, 12000, &p_in_time);
    int cs = tl_consumer_stop(&w->consumer, SIGTERM, 12000, &c_in_time);
    CHECK(p_in_time && WIFEXITED(ps) && WEXITSTATUS(ps) == 0,
          "SIGTERM after the delay: the producer exits 0 within its stop timeout");
    CHECK(c_in_time && WIFEXITED(cs) && WEXITSTATUS(cs) == 0,
          "SIGTERM after the delay: the consumer exits 0 within its stop timeout");
}

int main(void)
{
    tl_init();
    tl_log_dir("it_lb_drain", LOGDIR, sizeof LOGDIR);
    int standin_port = start_standin();
    CHECK(standin_port > 0, "ELBv2 and task metadata stand-in listening");
    static world w;
    if (standin_port <= 0 || !tl_consumer_env_init(&w.env, "it_lb_drain", 2)) {
        CHECK(0, "test database and queues");
        return TEST_DONE();
    }
    if (start_services(&w, standin_port)) {
        w.ctx = wsc_ctx_new();
        wait_requests(PRODUCER_GROUP, 0, 2, w.ctx);
        wait_requests(CONSUMER_GROUP, 0, 2, w.ctx);
        check_requests(&w);
        open_clients(&w);
        for (int i = 0; i < CLIENTS; i++) { /* one frame each: the path works before the drain */
            char *f = tl_frame(100 + i, "before the drain", NULL);
            if (w.writers[i]) tl_ws_send_str(w.writers[i], f);
            free(f);
        }
        pump(w.ctx, 500);
        check_bad_answers(&w);
        check_producer_drain(&w);
        check_after_producer_drain(&w);
        check_consumer_drain(&w);
        check_second_deregistration(&w);
        check_sigterm(&w);
        wsc_conn *all[] = {w.late_writer, w.late_reader};
        for (int i = 0; i < CLIENTS; i++) {
            if (w.writers[i]) wsc_free(w.writers[i]);
            if (w.readers[i]) wsc_free(w.readers[i]);
        }
        for (size_t i = 0; i < 2; i++)
            if (all[i]) wsc_free(all[i]);
        wsc_ctx_free(w.ctx);
    }
    tl_consumer_env_done(&w.env);
    return TEST_DONE();
}
