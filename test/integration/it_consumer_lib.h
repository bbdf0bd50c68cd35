/*
 * it_consumer_lib — helpers shared by the consumer's integration tests (it_consumer*.c).
 *
 *  - Isolation: each test gets its own PostgreSQL database (created on the stack's server from
 *    DATABASE_URL) and its own queues (a unique prefix and DLQ name, created with
 *    $CHATFLOW_BIN/chatflow-sqs setup), so tests never see each other's rows or messages.
 *  - The consumer runs as a child process in its own process group, on ports picked by the
 *    kernel (0) and read back from its start-up log line; it is stopped by PID when the test
 *    ends, pass or fail (atexit + signal handlers).
 *  - Messages are sent as SPEC §2 bodies straight to SQS (group = room, dedup = messageId), so
 *    the test knows every field it expects to find in the table.
 *  - Sanitizer and Valgrind hooks (test/run --sanitizers): the child inherits ASAN_OPTIONS /
 *    TSAN_OPTIONS (log_path: its reports go to files test/run scans, however it ends), and
 *    CHATFLOW_SERVICE_WRAPPER, when set, is a command line the consumer is started under
 *    ("valgrind --tool=memcheck ..."); CHATFLOW_TEST_LOGS, when set, replaces
 *    $ROOT/$BUILD/test-logs as the root of the log folders.
 * Header-only (static inline): shared by several test programs and nothing else.
 */
#ifndef CHATFLOW_IT_CONSUMER_LIB_H
#define CHATFLOW_IT_CONSUMER_LIB_H

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "credentials.h"
#include "log.h"
#include "message.h"
#include "sqs.h"
#include "it_exec_lib.h"
#include "testlib.h"
#include "timeutil.h"
#include "uuid.h"

#define ITC_MAX_CHILDREN 8
static pid_t itc_children[ITC_MAX_CHILDREN];

static inline void itc_kill_children(void)
{
    for (int i = 0; i < ITC_MAX_CHILDREN; i++)
        if (itc_children[i] > 0) {
            kill(-itc_children[i], SIGKILL);
            waitpid(itc_children[i], NULL, 0);
            itc_children[i] = 0;
        }
}

static inline void itc_on_signal(int sig)
{
    for (int i = 0; i < ITC_MAX_CHILDREN; i++)
        if (itc_children[i] > 0) kill(-itc_children[i], SIGKILL);
    _exit(128 + sig);
}

static inline const char *itc_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

typedef struct {
    char name[64];             /* test name: logs, database, queue prefix */
    char log_dir[512];
    char admin_url[1024];      /* DATABASE_URL of the stack (maintenance connection) */
    char db_url[1024];         /* the test's own database */
    char db_name[64];
    char prefix[64];           /* queue prefix */
    char dlq_name[96];
    char spill_name[96];       /* the spill queue (standard) */
    int room_min, room_max;
    credentials_provider *creds;
    sqs_client *sqs;
    char *urls[64];            /* by room */
    char *dlq_url;
    char *spill_url;
    PGconn *pg;                /* on the test's database */
} itc_env_t;

typedef struct {
    pid_t pid;
    int ws_port, admin_port;
    char log_path[600];
} consumer_proc;

static inline bool itc_sh(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---------------------------------------------------------------- PostgreSQL */

static inline void itc_quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static inline PGconn *itc_pg_connect(const char *url)
{
    const char *k[] = {"dbname", "connect_timeout", NULL};
    const char *v[] = {url, "5", NULL};
    PGconn *c = PQconnectdbParams(k, v, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        NOTE("connect %s: %s", url, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, itc_quiet_notice, NULL);
    return c;
}

/* Runs SQL; returns the first column of the first row as a long long (or -1). */
static inline long long itc_pg_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        NOTE("query failed: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return v;
}

static inline bool itc_pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) NOTE("exec failed: %.200s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* A connection string for database `db` on the same server as url (keyword form, which the
 * consumer's DATABASE_URL accepts too). */
static inline bool itc_db_url_for(const char *url, const char *db, char *out, size_t len)
{
    PGconn *c = itc_pg_connect(url);
    if (!c) return false;
    snprintf(out, len, "host=%s port=%s user=%s dbname=%s", PQhost(c), PQport(c), PQuser(c), db);
    PQfinish(c);
    return true;
}

/* Creates a fresh database for this test (dropping a leftover of the same name). */
static inline bool itc_create_db(itc_env_t *e, const char *suffix)
{
    snprintf(e->db_name, sizeof e->db_name, "itc_%s_%d", suffix, (int)getpid());
    PGconn *c = itc_pg_connect(e->admin_url);
    if (!c) return false;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", e->db_name);
    bool ok = itc_pg_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", e->db_name);
    ok = ok && itc_pg_exec(c, sql);
    PQfinish(c);
    return ok && itc_db_url_for(e->admin_url, e->db_name, e->db_url, sizeof e->db_url);
}

static inline void itc_drop_db(itc_env_t *e)
{
    if (e->pg) PQfinish(e->pg);
    e->pg = NULL;
    if (!e->db_name[0]) return;
    PGconn *c = itc_pg_connect(e->admin_url);
    if (!c) return;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", e->db_name);
    itc_pg_exec(c, sql);
    PQfinish(c);
}

/* ---------------------------------------------------------------- SQS */

static inline bool itc_queues_setup(itc_env_t *e)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "CHATFLOW_QUEUE_PREFIX='%s' CHATFLOW_DLQ_NAME='%s' CHATFLOW_SPILL_QUEUE_NAME='%s' "
             "CHATFLOW_ROOM_MIN=%d CHATFLOW_ROOM_MAX=%d '%s/chatflow-sqs' setup >>'%s/sqs-setup.log' 2>&1",
             e->prefix, e->dlq_name, e->spill_name, e->room_min, e->room_max, itc_env("CHATFLOW_BIN", "build"),
             e->log_dir);
    if (!itc_sh(cmd)) {
        NOTE("chatflow-sqs setup failed (log %s/sqs-setup.log)", e->log_dir);
        return false;
    }
    for (int r = e->room_min; r <= e->room_max; r++) {
        char name[128];
        snprintf(name, sizeof name, "%s%d.fifo", e->prefix, r);
        sqs_error err;
        free(e->urls[r]);
        e->urls[r] = NULL;
        if (sqs_get_queue_url(e->sqs, name, &e->urls[r], &err) != SQS_OK) return false;
    }
    sqs_error err;
    free(e->dlq_url);
    free(e->spill_url);
    e->dlq_url = e->spill_url = NULL;
    return sqs_get_queue_url(e->sqs, e->dlq_name, &e->dlq_url, &err) == SQS_OK &&
           sqs_get_queue_url(e->sqs, e->spill_name, &e->spill_url, &err) == SQS_OK;
}

/* ApproximateNumberOfMessages + ...NotVisible of a queue; -1 on error. */
static inline long itc_queue_depth(itc_env_t *e, const char *url)
{
    const char *names[] = {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"};
    char *vals[2] = {NULL, NULL};
    sqs_error err;
    long depth = -1;
    if (sqs_get_queue_attributes(e->sqs, url, names, 2, vals, &err) == SQS_OK)
        depth = (vals[0] ? atol(vals[0]) : 0) + (vals[1] ? atol(vals[1]) : 0);
    free(vals[0]);
    free(vals[1]);
    return depth;
}

static inline long itc_rooms_depth(itc_env_t *e)
{
    long total = 0;
    for (int r = e->room_min; r <= e->room_max; r++) {
        long d = itc_queue_depth(e, e->urls[r]);
        if (d < 0) return -1;
        total += d;
    }
    return total;
}

/* A valid message of room/user with text; received_at and timestamp = now. */
static inline void itc_message(chat_message *m, int room, int user, const char *text, const char *type)
{
    memset(m, 0, sizeof *m);
    snprintf(m->user_id, sizeof m->user_id, "%d", user);
    snprintf(m->username, sizeof m->username, "user%d", user);
    snprintf(m->message, sizeof m->message, "%s", text);
    time_format_iso8601(time_wall_ms(), m->timestamp);
    snprintf(m->message_type, sizeof m->message_type, "%s", type);
    uuid_v4(m->message_id);
    snprintf(m->room_id, sizeof m->room_id, "%d", room);
    snprintf(m->server_id, sizeof m->server_id, "it-producer");
    snprintf(m->client_ip, sizeof m->client_ip, "127.0.0.%d", room);
    time_format_iso8601(time_wall_ms(), m->received_at);
}

/* Sends up to 10 messages of one room in one SendMessageBatch; true when every entry went in. */
static inline bool itc_send_batch(itc_env_t *e, int room, const chat_message *ms, size_t n)
{
    sqs_send_entry entries[SQS_MAX_BATCH];
    sqs_entry_result res[SQS_MAX_BATCH];
    char *bodies[SQS_MAX_BATCH] = {0};
    char ids[SQS_MAX_BATCH][24], group[16];
    snprintf(group, sizeof group, "%d", room);
    for (size_t i = 0; i < n; i++) {
        bodies[i] = queue_message_to_json(&ms[i]);
        snprintf(ids[i], sizeof ids[i], "e%zu", i);
        entries[i] = (sqs_send_entry){ids[i], bodies[i], group, ms[i].message_id};
    }
    sqs_error err;
    bool ok = sqs_send_message_batch(e->sqs, e->urls[room], entries, n, res, &err) == SQS_OK;
    for (size_t i = 0; i < n; i++) {
        if (!res[i].ok) NOTE("entry %zu (%.60s): %s %s", i, ms[i].message, res[i].code, res[i].message);
        ok = ok && res[i].ok;
        free(bodies[i]);
    }
    if (!ok) NOTE("SendMessageBatch room %d failed: %s %s", room, err.type, err.message);
    return ok;
}

/* A raw body (e.g. poison) to a room queue. */
static inline bool itc_send_raw(itc_env_t *e, int room, const char *body, const char *dedup)
{
    char group[16];
    snprintf(group, sizeof group, "%d", room);
    sqs_send_result r;
    sqs_error err;
    return sqs_send_message(e->sqs, e->urls[room], body, group, dedup, &r, &err) == SQS_OK;
}

/* ---------------------------------------------------------------- set-up */

static inline bool itc_init(itc_env_t *e, const char *name, int room_min, int room_max)
{
    memset(e, 0, sizeof *e);
    log_init("warn", "text");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    atexit(itc_kill_children);
    signal(SIGINT, itc_on_signal);
    signal(SIGTERM, itc_on_signal);
    signal(SIGPIPE, SIG_IGN);
    snprintf(e->name, sizeof e->name, "%s", name);
    if (getenv("CHATFLOW_TEST_LOGS") && getenv("CHATFLOW_TEST_LOGS")[0])
        snprintf(e->log_dir, sizeof e->log_dir, "%s/%s", getenv("CHATFLOW_TEST_LOGS"), name);
    else
        snprintf(e->log_dir, sizeof e->log_dir, "%s/%s/test-logs/%s", itc_env("ROOT", "."),
                 itc_env("BUILD", "build"), name);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", e->log_dir);
    if (!itc_sh(cmd)) snprintf(e->log_dir, sizeof e->log_dir, "/tmp");
    snprintf(e->admin_url, sizeof e->admin_url, "%s", itc_env("DATABASE_URL", ""));
    e->room_min = room_min;
    e->room_max = room_max;
    unsigned tag = (unsigned)getpid() ^ (unsigned)(time_wall_ms() & 0xffff);
    snprintf(e->prefix, sizeof e->prefix, "it-%s-%x-room-", name, tag);
    snprintf(e->dlq_name, sizeof e->dlq_name, "it-%s-%x-db-dlq.fifo", name, tag);
    snprintf(e->spill_name, sizeof e->spill_name, "it-%s-%x-db-spill", name, tag);
    if (!e->admin_url[0] || !getenv("AWS_ENDPOINT_URL_SQS")) {
        NOTE("DATABASE_URL and AWS_ENDPOINT_URL_SQS are needed (run through test/run)");
        return false;
    }
    char err[256];
    e->creds = credentials_provider_new(err, sizeof err);
    if (!e->creds) {
        NOTE("credentials: %s", err);
        return false;
    }
    sqs_config cfg = {.region = itc_env("AWS_REGION", "us-east-1"),
                      .endpoint = itc_env("AWS_ENDPOINT_URL_SQS", NULL),
                      .credentials = e->creds,
                      .request_timeout_ms = 10000};
    e->sqs = sqs_client_new(&cfg, err, sizeof err);
    if (!e->sqs) {
        NOTE("sqs client: %s", err);
        return false;
    }
    if (!itc_create_db(e, name) || !itc_queues_setup(e)) return false;
    return true;
}

static inline void itc_done(itc_env_t *e)
{
    itc_kill_children();
    itc_drop_db(e);
    for (int i = 0; i < 64; i++) free(e->urls[i]);
    free(e->dlq_url);
    free(e->spill_url);
    sqs_client_free(e->sqs);
    credentials_provider_free(e->creds);
    curl_global_cleanup();
}

/* ---------------------------------------------------------------- the consumer process */

/* Starts chatflow-consumer on e's database and queues and returns at once (p->pid > 0 when it
 * runs). env: extra NULL-terminated NAME=value strings (override the defaults set here). */
static inline bool consumer_spawn(itc_env_t *e, consumer_proc *p, const char *log_name,
                                  const char *const *env)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s/%s.log", e->log_dir, log_name);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/chatflow-consumer", itc_env("CHATFLOW_BIN", "build"));
    int fd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return false;
    char migrations[600];
    snprintf(migrations, sizeof migrations, "%s/db/migrations", itc_env("ROOT", "."));
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
        char rmin[16], rmax[16];
        snprintf(rmin, sizeof rmin, "%d", e->room_min);
        snprintf(rmax, sizeof rmax, "%d", e->room_max);
        setenv("DATABASE_URL", e->db_url, 1);
        setenv("CHATFLOW_QUEUE_PREFIX", e->prefix, 1);
        setenv("CHATFLOW_DLQ_NAME", e->dlq_name, 1);
        setenv("CHATFLOW_SPILL_QUEUE_NAME", e->spill_name, 1);
        setenv("CHATFLOW_ROOM_MIN", rmin, 1);
        setenv("CHATFLOW_ROOM_MAX", rmax, 1);
        setenv("CHATFLOW_MIGRATIONS_DIR", migrations, 1);
        setenv("CHATFLOW_MIGRATE_ON_START", "true", 1);
        setenv("CHATFLOW_WS_PORT", "0", 1);
        setenv("CHATFLOW_ADMIN_PORT", "0", 1);
        setenv("CHATFLOW_WS_BIND", "127.0.0.1", 1);
        setenv("CHATFLOW_ADMIN_BIND", "127.0.0.1", 1);
        setenv("CHATFLOW_RECEIVE_WAIT_S", "1", 1);
        setenv("CHATFLOW_QUEUE_DEPTH_INTERVAL_S", "2", 1);
        for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
        it_exec_service(bin, NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fd);
    setpgid(pid, pid);
    p->pid = pid;
    for (int i = 0; i < ITC_MAX_CHILDREN; i++)
        if (itc_children[i] == 0) {
            itc_children[i] = pid;
            break;
        }
    return true;
}

/* consumer_spawn(), then waits for its start-up line and reads its ports from it. */
static inline bool consumer_start(itc_env_t *e, consumer_proc *p, const char *log_name,
                                  const char *const *env)
{
    if (!consumer_spawn(e, p, log_name, env)) return false;
    pid_t pid = p->pid;
    /* up to 30 s (migrations included); 120 s under a wrapper (memcheck) */
    int polls = itc_env("CHATFLOW_SERVICE_WRAPPER", NULL) ? 2400 : 600;
    for (int i = 0; i < polls; i++) {
        FILE *f = fopen(p->log_path, "r");
        char line[2048];
        while (f && fgets(line, sizeof line, f)) {
            const char *ws = strstr(line, "subscribers on ws://");
            const char *adm = strstr(line, "; admin on ");
            if (ws && adm) {
                const char *wp = strchr(ws + strlen("subscribers on ws://"), ':');
                const char *ap = strrchr(adm, ':');
                if (wp && ap) {
                    p->ws_port = atoi(wp + 1);
                    p->admin_port = atoi(ap + 1);
                    fclose(f);
                    return p->ws_port > 0 && p->admin_port > 0;
                }
            }
        }
        if (f) fclose(f);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            NOTE("consumer exited during start-up (log %s)", p->log_path);
            p->pid = 0;
            return false;
        }
        time_sleep_ms(50);
    }
    NOTE("consumer did not start within %d s (log %s)", polls / 20, p->log_path);
    return false;
}

/* Sends sig, waits up to timeout_ms (then SIGKILL). Returns the wait status; *in_time set. */
static inline int consumer_stop(consumer_proc *p, int sig, int timeout_ms, bool *in_time)
{
    if (p->pid <= 0) return -1;
    kill(p->pid, sig);
    int st = -1;
    bool ok = false;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            ok = true;
            break;
        }
        time_sleep_ms(20);
    }
    if (!ok) {
        kill(-p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    for (int i = 0; i < ITC_MAX_CHILDREN; i++)
        if (itc_children[i] == p->pid) itc_children[i] = 0;
    p->pid = 0;
    if (in_time) *in_time = ok;
    return st;
}

/* ---------------------------------------------------------------- HTTP */

typedef struct {
    char *data;
    size_t len;
} itc_buf;

static inline size_t itc_curl_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    itc_buf *b = ud;
    size_t n = size * nmemb;
    char *d = realloc(b->data, b->len + n + 1);
    if (!d) return 0;
    memcpy(d + b->len, ptr, n);
    b->len += n;
    d[b->len] = '\0';
    b->data = d;
    return n;
}

/* method "GET" or "POST"; returns the malloc'd body (or NULL), status in *status. */
static inline char *itc_http(const char *method, int port, const char *path, long *status)
{
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    itc_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, itc_curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    if (strcmp(method, "POST") == 0) curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    *status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return b.data;
}

/* Sum of the samples of metric `name` whose line contains `filter` (NULL: all). -1 on error. */
static inline double itc_metric(int port, const char *name, const char *filter)
{
    long st;
    char *body = itc_http("GET", port, "/metrics", &st);
    if (!body || st != 200) {
        free(body);
        return -1;
    }
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
    free(body);
    return sum;
}

/* Polls SQL until its scalar reaches want or timeout_ms passes; returns the last value. */
static inline long long itc_wait_scalar(PGconn *c, const char *sql, long long want, int timeout_ms)
{
    long long v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        v = itc_pg_scalar(c, sql);
        if (v == want) break;
        time_sleep_ms(100);
    }
    return v;
}

#endif
