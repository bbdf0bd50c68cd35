/*
 * it_producer_lib — helpers shared by the producer's integration tests (it_producer*.c).
 *
 *  - Queues: each test creates its own FIFO room queues under a unique prefix on the stack's SQS
 *    (AWS_ENDPOINT_URL_SQS), so what it finds there was sent by the producer it started.
 *  - The producer runs as a child process (own process group) on ports picked free by the kernel
 *    (port 0; the ports are read back from its "listening ws=<p> admin=<p>" log line); it is
 *    stopped by PID when the test ends, pass or fail (atexit + signal handlers).
 *  - /metrics and /health are read with libcurl; frames and answers are JSON via jansson.
 *  - Sanitizer and Valgrind hooks (test/run --sanitizers): the child inherits ASAN_OPTIONS /
 *    TSAN_OPTIONS (log_path: its reports go to files test/run scans, however it ends), and
 *    CHATFLOW_SERVICE_WRAPPER, when set, is a command line the producer is started under
 *    ("valgrind --tool=memcheck ..."); CHATFLOW_TEST_LOGS, when set, replaces
 *    $ROOT/$BUILD/test-logs as the root of the log folders.
 * Header-only (static inline) because it is shared by several test programs and nothing else.
 */
#ifndef CHATFLOW_IT_PRODUCER_LIB_H
#define CHATFLOW_IT_PRODUCER_LIB_H

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "credentials.h"
#include "log.h"
#include "sqs.h"
#include "it_exec_lib.h"
#include "testlib.h"
#include "timeutil.h"
#include "uuid.h"
#include "wsclient.h"

typedef struct {
    pid_t pid;
    int ws_port;
    int admin_port;
    char log_path[1024];
} producer_proc;

#define ITP_MAX_CHILDREN 16
static pid_t itp_children[ITP_MAX_CHILDREN];

static inline void itp_kill_children(void)
{
    for (int i = 0; i < ITP_MAX_CHILDREN; i++)
        if (itp_children[i] > 0) {
            kill(-itp_children[i], SIGKILL);
            waitpid(itp_children[i], NULL, 0);
            itp_children[i] = 0;
        }
}

static inline void itp_on_signal(int sig)
{
    for (int i = 0; i < ITP_MAX_CHILDREN; i++)
        if (itp_children[i] > 0) kill(-itp_children[i], SIGKILL);
    _exit(128 + sig);
}

static inline const char *itp_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

/* Log directory for this test: $ROOT/$BUILD/test-logs/<name> ($CHATFLOW_TEST_LOGS/<name> if set). */
static inline void itp_log_dir(const char *test_name, char *out, size_t len)
{
    const char *root = getenv("CHATFLOW_TEST_LOGS");
    if (root && root[0])
        snprintf(out, len, "%s/%s", root, test_name);
    else
        snprintf(out, len, "%s/%s/test-logs/%s", itp_env("ROOT", "."), itp_env("BUILD", "build"), test_name);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", out);
    if (system(cmd) != 0) snprintf(out, len, "/tmp");
}

static inline void itp_init(void)
{
    log_init("warn", "text");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    atexit(itp_kill_children);
    signal(SIGINT, itp_on_signal);
    signal(SIGTERM, itp_on_signal);
    signal(SIGPIPE, SIG_IGN);
}

/* Raises the soft open-files limit towards want (children inherit it). Returns the new soft limit. */
static inline long itp_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if ((rlim_t)want > rl.rlim_max) want = (long)rl.rlim_max;
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = (rlim_t)want;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

/* ---------------------------------------------------------------- the producer process */

/* env: NULL-terminated "NAME=value" strings added to the child's environment. */
static inline bool producer_start(producer_proc *p, const char *log_path, const char *const *env)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/chatflow-producer", itp_env("CHATFLOW_BIN", "build"));
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return false;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
        static const char *const args[] = { "--ws-port", "0", "--admin-port", "0", "--ws-bind", "127.0.0.1",
                                            "--admin-bind", "127.0.0.1", NULL };
        it_exec_service(bin, args);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fd);
    setpgid(pid, pid);
    p->pid = pid;
    for (int i = 0; i < ITP_MAX_CHILDREN; i++)
        if (itp_children[i] == 0) {
            itp_children[i] = pid;
            break;
        }
    int polls = itp_env("CHATFLOW_SERVICE_WRAPPER", NULL) ? 1200 : 200; /* 10 s; 60 s under memcheck */
    for (int i = 0; i < polls; i++) {
        FILE *f = fopen(log_path, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            const char *w = strstr(line, "listening ws=");
            if (w && sscanf(w, "listening ws=%d admin=%d", &p->ws_port, &p->admin_port) == 2) {
                fclose(f);
                return true;
            }
        }
        if (f) fclose(f);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            p->pid = 0;
            return false;
        }
        time_sleep_ms(50);
    }
    return false;
}

/* Sends sig and waits up to timeout_ms; SIGKILL after that. Returns the wait status, -1 if none. */
static inline int producer_stop(producer_proc *p, int sig, int timeout_ms, bool *exited_in_time)
{
    if (p->pid <= 0) return -1;
    kill(p->pid, sig);
    int st = -1;
    bool in_time = false;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            in_time = true;
            break;
        }
        time_sleep_ms(20);
    }
    if (!in_time) {
        kill(-p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    for (int i = 0; i < ITP_MAX_CHILDREN; i++)
        if (itp_children[i] == p->pid) itp_children[i] = 0;
    p->pid = 0;
    if (exited_in_time) *exited_in_time = in_time;
    return st;
}

/* ---------------------------------------------------------------- admin HTTP */

typedef struct {
    char *data;
    size_t len;
} itp_buf;

static inline size_t itp_curl_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    itp_buf *b = ud;
    size_t n = size * nmemb;
    char *d = realloc(b->data, b->len + n + 1);
    if (!d) return 0;
    memcpy(d + b->len, ptr, n);
    b->len += n;
    d[b->len] = '\0';
    b->data = d;
    return n;
}

/* GET http://127.0.0.1:port/path; returns the malloc'd body (or NULL), status in *status. */
static inline char *http_get(int port, const char *path, long *status)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    itp_buf b = { 0 };
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, itp_curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    *status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return b.data;
}

/* Sum of the samples of metric `name` whose label set contains every comma-free fragment of
 * `filter` (e.g. "action=\"SendMessageBatch\""); filter NULL = all series of that name. */
static inline double metric_sum(const char *body, const char *name, const char *filter)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *line = body; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > nl && strncmp(line, name, nl) == 0 && (line[nl] == '{' || line[nl] == ' ')) {
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%.*s", (int)(len < 1023 ? len : 1023), line);
            if (!filter || strstr(tmp, filter)) {
                const char *sp = strrchr(tmp, ' ');
                if (sp) sum += strtod(sp + 1, NULL);
            }
        }
        line = end ? end + 1 : NULL;
    }
    return sum;
}

static inline double producer_metric(const producer_proc *p, const char *name, const char *filter)
{
    long st;
    char *body = http_get(p->admin_port, "/metrics", &st);
    double v = body && st == 200 ? metric_sum(body, name, filter) : -1;
    free(body);
    return v;
}

/* ---------------------------------------------------------------- SQS */

typedef struct {
    credentials_provider *creds;
    sqs_client *sqs;
    char prefix[64];
    char *urls[64];                /* by room 1..63 */
} itp_sqs;

static inline bool itp_sqs_open(itp_sqs *s, const char *prefix)
{
    memset(s, 0, sizeof *s);
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
    char err[256];
    s->creds = credentials_provider_new(err, sizeof err);
    if (!s->creds) {
        NOTE("credentials: %s", err);
        return false;
    }
    sqs_config cfg = { .region = itp_env("AWS_REGION", "us-east-1"),
                       .endpoint = itp_env("AWS_ENDPOINT_URL_SQS", NULL),
                       .credentials = s->creds,
                       .request_timeout_ms = 5000 };
    s->sqs = sqs_client_new(&cfg, err, sizeof err);
    if (!s->sqs) NOTE("sqs client: %s", err);
    return s->sqs != NULL;
}

static inline bool itp_create_rooms(itp_sqs *s, int room_min, int room_max)
{
    static const sqs_attribute attrs[] = { { "FifoQueue", "true" }, { "ContentBasedDeduplication", "false" } };
    for (int r = room_min; r <= room_max; r++) {
        char name[128];
        snprintf(name, sizeof name, "%s%d.fifo", s->prefix, r);
        sqs_error e;
        free(s->urls[r]);
        s->urls[r] = NULL;
        if (sqs_create_queue(s->sqs, name, attrs, 2, &s->urls[r], &e) != SQS_OK) {
            NOTE("CreateQueue %s: %s %s", name, e.type, e.message);
            return false;
        }
    }
    return true;
}

/* URLs of existing room queues (a stack's own, e.g. after restart-sqs). */
static inline bool itp_lookup_rooms(itp_sqs *s, int room_min, int room_max)
{
    for (int r = room_min; r <= room_max; r++) {
        char name[128];
        snprintf(name, sizeof name, "%s%d.fifo", s->prefix, r);
        sqs_error e;
        free(s->urls[r]);
        s->urls[r] = NULL;
        if (sqs_get_queue_url(s->sqs, name, &s->urls[r], &e) != SQS_OK) {
            NOTE("GetQueueUrl %s: %s %s", name, e.type, e.message);
            return false;
        }
    }
    return true;
}

static inline void itp_sqs_close(itp_sqs *s)
{
    for (int i = 0; i < 64; i++) free(s->urls[i]);
    sqs_client_free(s->sqs);
    credentials_provider_free(s->creds);
}

typedef struct {
    char *body;
    char group_id[32];
} itp_msg;

/* Receives and deletes everything in the room's queue (fauxqs hands out one message per FIFO
 * group per receive). Returns the bodies in receive order; *n set. */
static inline itp_msg *itp_drain_room(itp_sqs *s, int room, size_t *n)
{
    itp_msg *out = NULL;
    size_t cap = 0;
    *n = 0;
    int empty = 0;
    sqs_receive_options o = { .max_messages = 10, .wait_seconds = 0, .visibility_timeout = 60 };
    while (empty < 3) {
        sqs_message *ms = NULL;
        size_t k = 0;
        sqs_error e;
        if (sqs_receive_message(s->sqs, s->urls[room], &o, &ms, &k, &e) != SQS_OK) {
            NOTE("ReceiveMessage room %d: %s", room, e.message);
            break;
        }
        if (k == 0) {
            empty++;
            time_sleep_ms(20);
            continue;
        }
        empty = 0;
        sqs_handle_entry he[10];
        sqs_entry_result res[10];
        char ids[10][24];
        for (size_t i = 0; i < k; i++) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 256;
                out = realloc(out, cap * sizeof *out);
            }
            out[*n].body = strdup(ms[i].body);
            snprintf(out[*n].group_id, sizeof out[*n].group_id, "%s", ms[i].group_id ? ms[i].group_id : "");
            (*n)++;
            snprintf(ids[i], sizeof ids[i], "%zu", i);
            he[i] = (sqs_handle_entry){ .id = ids[i], .receipt_handle = ms[i].receipt_handle };
        }
        sqs_delete_message_batch(s->sqs, s->urls[room], he, k, res, &e);
        sqs_messages_free(ms, k);
    }
    return out;
}

static inline void itp_msgs_free(itp_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) free(m[i].body);
    free(m);
}

static inline long itp_queue_depth(itp_sqs *s, int room)
{
    const char *names[] = { "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible" };
    char *vals[2] = { NULL, NULL };
    sqs_error e;
    long depth = -1;
    if (sqs_get_queue_attributes(s->sqs, s->urls[room], names, 2, vals, &e) == SQS_OK)
        depth = (vals[0] ? atol(vals[0]) : 0) + (vals[1] ? atol(vals[1]) : 0);
    free(vals[0]);
    free(vals[1]);
    return depth;
}

/* ---------------------------------------------------------------- frames and answers */

/* A valid frame; cmid may be NULL. Returns a malloc'd string. */
static inline char *itp_frame(int user, const char *text, const char *cmid)
{
    json_t *o = json_object();
    char uid[16], name[32], ts[ISO8601_BUF];
    snprintf(uid, sizeof uid, "%d", user);
    snprintf(name, sizeof name, "user%d", user);
    time_format_iso8601(time_wall_ms(), ts);
    json_object_set_new(o, "userId", json_string(uid));
    json_object_set_new(o, "username", json_string(name));
    json_object_set_new(o, "message", json_string(text));
    json_object_set_new(o, "timestamp", json_string(ts));
    json_object_set_new(o, "messageType", json_string("TEXT"));
    if (cmid) json_object_set_new(o, "clientMessageId", json_string(cmid));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Field of a JSON object text, copied into out ("" when absent or not a string). */
static inline const char *itp_field(const char *json, const char *key, char *out, size_t len)
{
    out[0] = '\0';
    json_t *o = json ? json_loads(json, 0, NULL) : NULL;
    json_t *v = o ? json_object_get(o, key) : NULL;
    if (json_is_string(v)) snprintf(out, len, "%s", json_string_value(v));
    json_decref(o);
    return out;
}

static inline bool itp_send_text(wsc_conn *c, const char *s) { return wsc_send_text(c, s, strlen(s)); }

#endif
