/*
 * it_producer_stop — SIGTERM under load: the producer stops taking connections, answers every
 * frame it has read, closes each connection with 1001 "going away" and exits 0 before its stop
 * timeout; every message it acked is in SQS exactly once.
 */
/* test-passes: asan tsan */
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
#include "uuid.h"

#define CONNS 20
#define PER_CONN 100 /* = the per-connection cap, so every frame is read at once */

static char LOGDIR[512];
static tl_sqs Q;

typedef struct {
    int answers, acks, errors;
    char ids[PER_CONN][UUID_STR_BUF];
} conn_state;

static void on_message(wsc_conn *c, const char *data, size_t len, bool binary, void *user)
{
    (void)c;
    (void)binary;
    conn_state *s = user;
    char *t = strndup(data, len);
    char st[32];
    tl_json_field(t, "status", st, sizeof st);
    if (strcmp(st, "SUCCESS") == 0 && s->acks < PER_CONN)
        tl_json_field(t, "messageId", s->ids[s->acks++], UUID_STR_BUF);
    else
        s->errors++;
    s->answers++;
    free(t);
}

int main(void)
{
    tl_init();
    tl_log_dir("it_producer_stop", LOGDIR, sizeof LOGDIR);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "itps%d-room-", (int)getpid());
    if (!tl_sqs_open(&Q, prefix, 5000) || !tl_sqs_create_shards(&Q, CONNS)) {
        CHECK(0, "test queues created");
        return TEST_DONE();
    }
    char env_prefix[128], env_shards[64], log_path[700];
    snprintf(env_prefix, sizeof env_prefix, "CHATFLOW_QUEUE_PREFIX=%s", prefix);
    /* one shard per connection: room i+1 is shard i+1 (room.h) */
    snprintf(env_shards, sizeof env_shards, "CHATFLOW_QUEUE_SHARDS=%d", CONNS);
    snprintf(log_path, sizeof log_path, "%s/producer.log", LOGDIR);
    const char *env[] = {env_prefix,
                         env_shards,
                         "CHATFLOW_RATE_LIMIT_PER_MINUTE=0",
                         "CHATFLOW_STOP_TIMEOUT_S=10",
                         "CHATFLOW_LOG_LEVEL=info",
                         NULL};
    tl_producer p;
    bool started = tl_producer_start(&p, log_path, env);
    CHECK(started, "producer started (log %s)", log_path);
    if (!started) return TEST_DONE();
    for (int t = 0; t < 100; t++) {
        long st;
        free(tl_http_get(p.admin_port, "/health/ready", &st));
        if (st == 200) break;
        time_sleep_ms(100);
    }

    wsc_ctx *ctx = wsc_ctx_new();
    wsc_conn *conns[CONNS];
    conn_state *state = calloc(CONNS, sizeof *state);
    int opened = 0;
    for (int i = 0; i < CONNS; i++) {
        char path[32], err[256];
        int status;
        snprintf(path, sizeof path, "/chat/%d", i + 1);
        conns[i] = wsc_connect(ctx, "127.0.0.1", p.ws_port, path, 5000, &status, err, sizeof err);
        if (conns[i]) {
            opened++;
            wsc_set_callbacks(conns[i], on_message, NULL, &state[i]);
        }
    }
    CHECK_INT(opened, CONNS, "%d connections open", CONNS);
    for (int k = 0; k < PER_CONN; k++)
        for (int i = 0; i < CONNS; i++) {
            if (!conns[i]) continue;
            char *f = tl_frame(100 + i, "sent just before SIGTERM", NULL);
            tl_ws_send_str(conns[i], f);
            free(f);
        }
    for (int i = 0; i < CONNS; i++)
        if (conns[i]) wsc_flush(conns[i], 5000);
    /* The drain answers what the producer has read; frames still in its socket buffers at SIGTERM
     * are never read (and the close then resets the connection). So SIGTERM goes out once every
     * frame is read: answers received + frames the producer holds unanswered = all sent. That is
     * at once on a plain build; a sanitizer build reads several times slower. */
    int answered_before = 0;
    for (int waited = 0; waited < 10000; waited += 10) {
        answered_before = 0;
        for (int i = 0; i < CONNS; i++) answered_before += state[i].answers;
        double held = tl_producer_metric(&p, "chatflow_inflight_messages", NULL);
        if (answered_before + held >= CONNS * PER_CONN) break;
        wsc_service(ctx, 10);
    }
    answered_before = 0;
    for (int i = 0; i < CONNS; i++) answered_before += state[i].answers;
    kill(p.pid, SIGTERM);
    uint64_t t0 = time_mono_ns();
    NOTE("SIGTERM with %d of %d frames answered", answered_before, CONNS * PER_CONN);

    /* A newcomer during the drain is refused (503, or no listener any more). The producer takes
     * the signal on its own threads: the attempt waits until its service thread has logged that
     * it refuses new connections (the phase it checks at each upgrade is set by then). */
    {
        bool refusing = false;
        for (int waited = 0; !refusing && waited < 5000; waited += 10) {
            FILE *f = fopen(log_path, "r");
            char line[1024];
            while (f && !refusing && fgets(line, sizeof line, f))
                refusing = strstr(line, "stopping: refusing new connections") != NULL;
            if (f) fclose(f);
            if (!refusing) wsc_service(ctx, 10);
        }
        CHECK(refusing, "the producer logs that it refuses new connections after SIGTERM");
        wsc_ctx *c2 = wsc_ctx_new();
        int status = 0;
        char err[256];
        wsc_conn *late =
            wsc_connect(c2, "127.0.0.1", p.ws_port, "/chat/1", 2000, &status, err, sizeof err);
        CHECK(late == NULL, "a connection attempted after SIGTERM is not accepted (HTTP %d)",
              status);
        if (late) wsc_free(late);
        wsc_ctx_free(c2);
    }

    uint64_t deadline = t0 + 15ull * 1000000000ull;
    int closed = 0;
    while (time_mono_ns() < deadline) {
        closed = 0;
        for (int i = 0; i < CONNS; i++)
            if (!conns[i] || wsc_is_closed(conns[i])) closed++;
        if (closed == CONNS) break;
        wsc_service(ctx, 50);
    }
    CHECK_INT(closed, CONNS, "every connection closed by the server");
    int going_away = 0, answers = 0, acks = 0;
    for (int i = 0; i < CONNS; i++) {
        if (!conns[i]) continue;
        int code = 0;
        const char *reason = NULL;
        wsc_close_info(conns[i], &code, &reason);
        if (code == 1001) going_away++;
        answers += state[i].answers;
        acks += state[i].acks;
    }
    CHECK_INT(going_away, CONNS, "each closed with 1001 going away");
    CHECK_INT(answers, CONNS * PER_CONN, "every frame answered before the close (%d acks)", acks);
    bool in_time = false;
    int st = tl_producer_stop(&p, 0, 12000, &in_time); /* signal 0: just wait for the exit */
    CHECK(in_time && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "producer exited 0 within its 10 s stop timeout");

    int missing = 0, twice = 0, total_queued = 0;
    for (int i = 0; i < CONNS; i++) {
        size_t n = 0;
        tl_sqs_msg *m = tl_sqs_drain_shard(&Q, i + 1, &n);
        total_queued += (int)n;
        for (int a = 0; a < state[i].acks; a++) {
            int seen = 0;
            for (size_t k = 0; k < n; k++) {
                char mid[64];
                if (strcmp(tl_json_field(m[k].body, "messageId", mid, sizeof mid),
                           state[i].ids[a]) == 0)
                    seen++;
            }
            if (!seen) missing++;
            if (seen > 1) twice++;
        }
        tl_sqs_msgs_free(m, n);
    }
    CHECK_INT(missing, 0, "every acked message is in SQS");
    CHECK_INT(twice, 0, "none twice");
    CHECK(total_queued == acks, "nothing but the acked messages was queued (%d queued, %d acked)",
          total_queued, acks);
    for (int i = 0; i < CONNS; i++)
        if (conns[i]) wsc_free(conns[i]);
    free(state);
    wsc_ctx_free(ctx);
    tl_sqs_close(&Q);
    return TEST_DONE();
}
