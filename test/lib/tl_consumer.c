/* tl_consumer — see tl_consumer.h. */
#include "tl_consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "timeutil.h"
#include "tl_pg.h"
#include "tl_proc.h"
#include "uuid.h"

#define SQS_TIMEOUT_MS 10000

/* ---------------------------------------------------------------- database */

static bool admin_exec(tl_consumer_env *e, const char *sql)
{
    PGconn *c = tl_pg_connect(e->admin_url);
    bool ok = c && tl_pg_exec(c, sql);
    if (c) PQfinish(c);
    return ok;
}

/* A fresh database for this test (dropping a leftover of the same name). */
static bool create_db(tl_consumer_env *e)
{
    snprintf(e->db_name, sizeof e->db_name, "itc_%s_%d", e->name, (int)getpid());
    char drop[256], create[256];
    snprintf(drop, sizeof drop, "DROP DATABASE IF EXISTS %s", e->db_name);
    snprintf(create, sizeof create, "CREATE DATABASE %s", e->db_name);
    return admin_exec(e, drop) && admin_exec(e, create) &&
           tl_pg_url_for(e->admin_url, e->db_name, e->db_url, sizeof e->db_url);
}

static void drop_db(tl_consumer_env *e)
{
    if (e->pg) PQfinish(e->pg);
    e->pg = NULL;
    if (!e->db_name[0]) return;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", e->db_name);
    admin_exec(e, sql);
}

/* ---------------------------------------------------------------- queues */

static bool create_queues(tl_consumer_env *e)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "CHATFLOW_QUEUE_PREFIX='%s' CHATFLOW_DLQ_NAME='%s' CHATFLOW_SPILL_QUEUE_NAME='%s' "
             "CHATFLOW_QUEUE_SHARDS=%d '%s/chatflow-sqs' setup "
             ">>'%s/sqs-setup.log' 2>&1",
             e->q.prefix, e->dlq_name, e->spill_name, e->shards, tl_env("CHATFLOW_BIN", "build"),
             e->log_dir);
    if (!tl_sh(cmd)) {
        tl_note("chatflow-sqs setup failed (log %s/sqs-setup.log)", e->log_dir);
        return false;
    }
    return tl_sqs_lookup_shards(&e->q, e->shards) && tl_sqs_url(&e->q, e->dlq_name, &e->dlq_url) &&
           tl_sqs_url(&e->q, e->spill_name, &e->spill_url);
}

bool tl_consumer_env_recreate_queues(tl_consumer_env *e)
{
    free(e->dlq_url);
    free(e->spill_url);
    e->dlq_url = e->spill_url = NULL;
    return create_queues(e);
}

long tl_consumer_rooms_depth(tl_consumer_env *e)
{
    long total = 0;
    for (int r = 1; r <= e->shards; r++) {
        long d = tl_sqs_shard_depth(&e->q, r);
        if (d < 0) return -1;
        total += d;
    }
    return total;
}

/* ---------------------------------------------------------------- set-up */

bool tl_consumer_env_init(tl_consumer_env *e, const char *name, int shards)
{
    memset(e, 0, sizeof *e);
    tl_init();
    snprintf(e->name, sizeof e->name, "%s", name);
    tl_log_dir(name, e->log_dir, sizeof e->log_dir);
    snprintf(e->admin_url, sizeof e->admin_url, "%s", tl_env("DATABASE_URL", ""));
    e->shards = shards;
    if (!e->admin_url[0] || !tl_env("AWS_ENDPOINT_URL_SQS", NULL)) {
        tl_note("DATABASE_URL and AWS_ENDPOINT_URL_SQS are needed (run through test/run)");
        return false;
    }
    unsigned tag = (unsigned)getpid() ^ (unsigned)(time_wall_ms() & 0xffff);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "it-%s-%x-room-", name, tag);
    snprintf(e->dlq_name, sizeof e->dlq_name, "it-%s-%x-db-dlq.fifo", name, tag);
    snprintf(e->spill_name, sizeof e->spill_name, "it-%s-%x-db-spill", name, tag);
    return tl_sqs_open(&e->q, prefix, SQS_TIMEOUT_MS) && create_db(e) && create_queues(e);
}

void tl_consumer_env_done(tl_consumer_env *e)
{
    tl_proc_kill_all(); /* before the database is dropped under them */
    drop_db(e);
    free(e->dlq_url);
    free(e->spill_url);
    e->dlq_url = e->spill_url = NULL;
    tl_sqs_close(&e->q);
}

/* ---------------------------------------------------------------- messages */

void tl_chat_message(chat_message *m, int room, int user, const char *text, const char *type)
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

bool tl_consumer_send_batch(tl_consumer_env *e, int room, const chat_message *ms, size_t n)
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
    bool ok = sqs_send_message_batch(e->q.sqs, e->q.urls[room], entries, n, res, &err) == SQS_OK;
    for (size_t i = 0; i < n; i++) {
        if (!res[i].ok)
            tl_note("entry %zu (%.60s): %s %s", i, ms[i].message, res[i].code, res[i].message);
        ok = ok && res[i].ok;
        free(bodies[i]);
    }
    if (!ok) tl_note("SendMessageBatch room %d failed: %s %s", room, err.type, err.message);
    return ok;
}

/* The messages of one room within ms[from, to), sent in batches of up to SQS_MAX_BATCH. */
static bool send_room_window(tl_consumer_env *e, int room, const chat_message *ms, size_t from,
                             size_t to)
{
    chat_message batch[SQS_MAX_BATCH];
    size_t k = 0;
    for (size_t j = from; j < to; j++) {
        if (atoi(ms[j].room_id) != room) continue;
        batch[k++] = ms[j];
        if (k == SQS_MAX_BATCH) {
            if (!tl_consumer_send_batch(e, room, batch, k)) return false;
            k = 0;
        }
    }
    return k == 0 || tl_consumer_send_batch(e, room, batch, k);
}

bool tl_consumer_send_messages(tl_consumer_env *e, const chat_message *ms, size_t n)
{
    size_t window = (size_t)SQS_MAX_BATCH * (size_t)e->shards;
    for (size_t i = 0; i < n; i += window)
        for (int room = 1; room <= e->shards; room++)
            if (!send_room_window(e, room, ms, i, i + window < n ? i + window : n)) return false;
    return true;
}

bool tl_consumer_send_to_shard(tl_consumer_env *e, int shard, const chat_message *m)
{
    if (shard < 1 || shard > e->shards) return false;
    char *body = queue_message_to_json(m);
    sqs_send_result r;
    sqs_error err;
    bool ok = body && sqs_send_message(e->q.sqs, e->q.urls[shard], body, m->room_id, m->message_id,
                                       &r, &err) == SQS_OK;
    if (body && !ok) tl_note("send to shard %d (room %s): %s", shard, m->room_id, err.message);
    free(body);
    return ok;
}

bool tl_consumer_send_to_room(tl_consumer_env *e, const chat_message *m)
{
    return tl_consumer_send_to_shard(e, room_shard(m->room_id, e->shards), m);
}

bool tl_consumer_send_raw(tl_consumer_env *e, int room, const char *body, const char *dedup)
{
    char group[16];
    snprintf(group, sizeof group, "%d", room);
    sqs_send_result r;
    sqs_error err;
    return sqs_send_message(e->q.sqs, e->q.urls[room], body, group, dedup, &r, &err) == SQS_OK;
}

/* One room's stored message ids by sequence_number against that room's messages in ms. */
static bool room_order_kept(tl_consumer_env *e, const chat_message *ms, size_t n, int room)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT message_id FROM messages WHERE room_id = '%d' ORDER BY sequence_number", room);
    PGresult *r = PQexec(e->pg, sql);
    int k = 0;
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    for (size_t i = 0; ok && i < n; i++)
        if (atoi(ms[i].room_id) == room)
            ok = k < PQntuples(r) && strcmp(PQgetvalue(r, k++, 0), ms[i].message_id) == 0;
    ok = ok && k == PQntuples(r);
    if (!ok) tl_note("room %d: stored rows differ from the sent messages at position %d", room, k);
    PQclear(r);
    return ok;
}

bool tl_consumer_order_kept(tl_consumer_env *e, const chat_message *ms, size_t n)
{
    bool all = true;
    for (int room = 1; room <= e->shards; room++) all = room_order_kept(e, ms, n, room) && all;
    return all;
}

/* ---------------------------------------------------------------- the consumer process */

enum { ENV_DEFAULTS = 16, ENV_MAX = 64, ENV_LEN = 1100 };

bool tl_consumer_spawn(tl_consumer_env *e, tl_consumer *p, const char *log_name,
                       const char *const *env)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s/%s.log", e->log_dir, log_name);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/chatflow-consumer", tl_env("CHATFLOW_BIN", "build"));
    /* the defaults first: the test's own env, applied after them, wins */
    static char defaults[ENV_DEFAULTS][ENV_LEN];
    int d = 0;
    snprintf(defaults[d++], ENV_LEN, "DATABASE_URL=%s", e->db_url);
    snprintf(defaults[d++], ENV_LEN, "CHATFLOW_QUEUE_PREFIX=%s", e->q.prefix);
    snprintf(defaults[d++], ENV_LEN, "CHATFLOW_DLQ_NAME=%s", e->dlq_name);
    snprintf(defaults[d++], ENV_LEN, "CHATFLOW_SPILL_QUEUE_NAME=%s", e->spill_name);
    snprintf(defaults[d++], ENV_LEN, "CHATFLOW_QUEUE_SHARDS=%d", e->shards);
    snprintf(defaults[d++], ENV_LEN, "CHATFLOW_MIGRATIONS_DIR=%s/db/migrations",
             tl_env("ROOT", "."));
    static const char *const fixed[] = {"CHATFLOW_MIGRATE_ON_START=true",
                                        "CHATFLOW_WS_PORT=0",
                                        "CHATFLOW_ADMIN_PORT=0",
                                        "CHATFLOW_WS_BIND=127.0.0.1",
                                        "CHATFLOW_ADMIN_BIND=127.0.0.1",
                                        "CHATFLOW_RECEIVE_WAIT_S=1",
                                        "CHATFLOW_QUEUE_DEPTH_INTERVAL_S=2",
                                        NULL};
    const char *all[ENV_MAX];
    size_t n = 0;
    for (int i = 0; i < d; i++) all[n++] = defaults[i];
    for (size_t i = 0; fixed[i]; i++) all[n++] = fixed[i];
    for (size_t i = 0; env && env[i] && n < ENV_MAX - 1; i++) all[n++] = env[i];
    all[n] = NULL;
    p->pid = tl_proc_spawn(bin, NULL, all, p->log_path);
    if (p->pid < 0) p->pid = 0;
    return p->pid > 0;
}

/* "... subscribers on ws://127.0.0.1:<port>...; admin on http://127.0.0.1:<port>" */
static bool parse_ports(const char *line, void *ctx)
{
    tl_consumer *p = ctx;
    const char *ws = strstr(line, "subscribers on ws://");
    const char *adm = strstr(line, "; admin on ");
    if (!ws || !adm) return false;
    const char *wp = strchr(ws + strlen("subscribers on ws://"), ':');
    const char *ap = strrchr(adm, ':');
    if (!wp || !ap) return false;
    p->ws_port = atoi(wp + 1);
    p->admin_port = atoi(ap + 1);
    return true;
}

bool tl_consumer_start(tl_consumer_env *e, tl_consumer *p, const char *log_name,
                       const char *const *env)
{
    if (!tl_consumer_spawn(e, p, log_name, env)) return false;
    /* migrations included; memcheck is several times slower */
    int timeout_ms = tl_proc_wrapped() ? 120000 : 30000;
    return tl_proc_wait_line(&p->pid, p->log_path, timeout_ms, parse_ports, p) && p->ws_port > 0 &&
           p->admin_port > 0;
}

int tl_consumer_stop(tl_consumer *p, int sig, int timeout_ms, bool *in_time)
{
    return tl_proc_stop(&p->pid, sig, timeout_ms, in_time);
}

bool tl_consumer_subscribe_rooms(wsc_ctx *ctx, int port, wsc_conn **subs, int rooms)
{
    for (int r = 1; ctx && r <= rooms; r++) {
        char path[32], err[256];
        int status = 0;
        snprintf(path, sizeof path, "/chat/%d", r);
        subs[r] = wsc_connect(ctx, "127.0.0.1", port, path, 5000, &status, err, sizeof err);
        if (!subs[r]) return false;
    }
    return ctx != NULL;
}
