/* presence_cluster — cluster-wide presence in Redis (contract in presence_cluster.h). */
#include "presence_cluster.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "timeutil.h"
#include "watchdog.h"
#include "workqueue.h"

#define COMPONENT "presence-cluster"
#define TURN_MS 200
#define BACKOFF_MAX_MS 2000

/* ---- scripts ----
 * Every script gets ARGV[1] = the key prefix and ARGV[2] = a node id, and builds its keys from
 * them (see the header for the layout). LIB holds what they share: announce() publishes a
 * PRESENCE event on the room's member channel; take_back() removes count connections of a user
 * and announces OFFLINE when they were the user's last; members() lists a room as flat triples
 * (userId, connections, info JSON). */
#define LIB                                                                                     \
    "local P = ARGV[1]\n"                                                                       \
    "local function announce(room, uid, name, status, reason, ts, origin)\n"                    \
    "  local online = redis.call('HLEN', P .. ':pres:' .. room)\n"                              \
    "  local ev = cjson.encode({type = 'PRESENCE', roomId = room, userId = uid, username = "    \
    "name,\n"                                                                                   \
    "    status = status, reason = reason, timestamp = ts, online = online})\n"                 \
    "  redis.call('PUBLISH', P .. ':members:' .. room, cjson.encode({o = '', by = origin, e = " \
    "ev}))\n"                                                                                   \
    "  return online\n"                                                                         \
    "end\n"                                                                                     \
    "local function add(room, uid, n, info, ts, origin)\n"                                      \
    "  local c = redis.call('HINCRBY', P .. ':pres:' .. room, uid, n)\n"                        \
    "  if c == n then\n"                                                                        \
    "    redis.call('HSET', P .. ':presinfo:' .. room, uid, cjson.encode(info))\n"              \
    "    return c, announce(room, uid, info.n, 'ONLINE', 'joined', ts, origin)\n"               \
    "  end\n"                                                                                   \
    "  return c, redis.call('HLEN', P .. ':pres:' .. room)\n"                                   \
    "end\n"                                                                                     \
    "local function take_back(room, uid, n, reason, ts, origin, name)\n"                        \
    "  local key = P .. ':pres:' .. room\n"                                                     \
    "  local c = redis.call('HINCRBY', key, uid, -n)\n"                                         \
    "  if c > 0 then return c, redis.call('HLEN', key) end\n"                                   \
    "  redis.call('HDEL', key, uid)\n"                                                          \
    "  local raw = redis.call('HGET', P .. ':presinfo:' .. room, uid)\n"                        \
    "  redis.call('HDEL', P .. ':presinfo:' .. room, uid)\n"                                    \
    "  if raw then name = cjson.decode(raw).n or name end\n"                                    \
    "  return 0, announce(room, uid, name or '', 'OFFLINE', reason, ts, origin)\n"              \
    "end\n"                                                                                     \
    "local function members(room)\n"                                                            \
    "  local all = redis.call('HGETALL', P .. ':pres:' .. room)\n"                              \
    "  local out = {}\n"                                                                        \
    "  for i = 1, #all, 2 do\n"                                                                 \
    "    out[#out + 1] = all[i]\n"                                                              \
    "    out[#out + 1] = all[i + 1]\n"                                                          \
    "    out[#out + 1] = redis.call('HGET', P .. ':presinfo:' .. room, all[i]) or '{}'\n"       \
    "  end\n"                                                                                   \
    "  return out\n"                                                                            \
    "end\n"                                                                                     \
    "local function drop_node(node, reason, ts, origin)\n"                                      \
    "  local nk = P .. ':presnode:' .. node\n"                                                  \
    "  local all = redis.call('HGETALL', nk)\n"                                                 \
    "  for i = 1, #all, 2 do\n"                                                                 \
    "    local room, uid = string.match(all[i], '^(%S+) (%S+)$')\n"                             \
    "    local n = tonumber(all[i + 1])\n"                                                      \
    "    if room and n and n > 0 then take_back(room, uid, n, reason, ts, origin) end\n"        \
    "  end\n"                                                                                   \
    "  redis.call('DEL', nk)\n"                                                                 \
    "  redis.call('SREM', P .. ':presnodes', node)\n"                                           \
    "end\n"

/* ARGV: prefix, node, room, userId, username, since ms, timestamp. -> {connections, online,
 * members} */
static const char JOIN_SCRIPT[] =
    LIB "local room, uid = ARGV[3], ARGV[4]\n"
        "redis.call('HINCRBY', P .. ':presnode:' .. ARGV[2], room .. ' ' .. uid, 1)\n"
        "redis.call('SADD', P .. ':presnodes', ARGV[2])\n"
        "local c, online = add(room, uid, 1, {s = ARGV[6], n = ARGV[5]}, ARGV[7], ARGV[2])\n"
        "return {c, online, members(room)}\n";

/* ARGV: prefix, node, room, userId, username, reason, timestamp. -> {connections, online};
 * connections -1 when Redis held no connection of this node for the user (it lost them: the
 * node's entries are set right by a RESYNC). */
static const char LEAVE_SCRIPT[] =
    LIB "local room, uid = ARGV[3], ARGV[4]\n"
        "local nk, f = P .. ':presnode:' .. ARGV[2], room .. ' ' .. uid\n"
        "local mine = redis.call('HINCRBY', nk, f, -1)\n"
        "if mine <= 0 then redis.call('HDEL', nk, f) end\n"
        "if mine < 0 then return {-1, redis.call('HLEN', P .. ':pres:' .. room)} end\n"
        "local c, online = take_back(room, uid, 1, ARGV[6], ARGV[7], ARGV[2], ARGV[5])\n"
        "return {c, online}\n";

/* ARGV: prefix, node, room, userId, position. Keeps the newest (longer, or as long and greater:
 * seqnum.h) of an online member. -> 1 when it moved */
static const char READ_SCRIPT[] =
    LIB "local key = P .. ':presinfo:' .. ARGV[3]\n"
        "local raw = redis.call('HGET', key, ARGV[4])\n"
        "if not raw then return 0 end\n"
        "local info, s = cjson.decode(raw), ARGV[5]\n"
        "local cur = info.r or ''\n"
        "if #s < #cur or (#s == #cur and s <= cur) then return 0 end\n"
        "info.r = s\n"
        "redis.call('HSET', key, ARGV[4], cjson.encode(info))\n"
        "return 1\n";

/* ARGV: prefix, node, room. -> members */
static const char ROOM_SCRIPT[] = LIB "return members(ARGV[3])\n";

/* ARGV: prefix, node, heartbeat ttl ms, timestamp. Renews the node's heartbeat and takes back
 * the entries of nodes whose heartbeat expired. -> {1 when the heartbeat was still there (the
 * node's entries are intact), nodes taken back} */
static const char HEARTBEAT_SCRIPT[] =
    LIB "local alive = P .. ':alive:' .. ARGV[2]\n"
        "local had = redis.call('EXISTS', alive)\n"
        "redis.call('SET', alive, '1', 'PX', ARGV[3])\n"
        "local reaped = 0\n"
        "for _, node in ipairs(redis.call('SMEMBERS', P .. ':presnodes')) do\n"
        "  if node ~= ARGV[2] and redis.call('EXISTS', P .. ':alive:' .. node) == 0 then\n"
        "    drop_node(node, 'timeout', ARGV[4], node)\n"
        "    reaped = reaped + 1\n"
        "  end\n"
        "end\n"
        "return {had, reaped}\n";

/* ARGV: prefix, node, timestamp, heartbeat ttl ms, the node's entries as JSON [[room, userId,
 * connections, since ms, username, read position], ...]. Replaces what Redis holds of the node
 * with them, announcing each user whose arrival or departure this makes. */
static const char RESYNC_SCRIPT[] = LIB
    "local node, ts = ARGV[2], ARGV[3]\n"
    "local nk = P .. ':presnode:' .. node\n"
    "local want = {}\n"
    "for _, m in ipairs(cjson.decode(ARGV[5])) do want[m[1] .. ' ' .. m[2]] = m end\n"
    "local all = redis.call('HGETALL', nk)\n"
    "local had = {}\n"
    "for i = 1, #all, 2 do had[all[i]] = tonumber(all[i + 1]) or 0 end\n"
    "for f, n in pairs(had) do\n"
    "  local room, uid = string.match(f, '^(%S+) (%S+)$')\n"
    "  local m = want[f]\n"
    "  local d = (m and m[3] or 0) - n\n"
    "  if room and d < 0 then take_back(room, uid, -d, 'left', ts, node) end\n"
    "  if room and d > 0 then\n"
    "    add(room, uid, d, {s = m[4], n = m[5], r = m[6] ~= '' and m[6] or nil}, ts, node)\n"
    "  end\n"
    "end\n"
    "for f, m in pairs(want) do\n"
    "  if not had[f] then\n"
    "    add(m[1], m[2], m[3], {s = m[4], n = m[5], r = m[6] ~= '' and m[6] or nil}, ts, node)\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', nk)\n"
    "for f, m in pairs(want) do redis.call('HSET', nk, f, m[3]) end\n"
    "redis.call('SADD', P .. ':presnodes', node)\n"
    "redis.call('SET', P .. ':alive:' .. node, '1', 'PX', ARGV[4])\n"
    "return 1\n";

/* ARGV: prefix, node, timestamp. The node leaves: its entries are taken back. */
static const char DROP_SCRIPT[] = LIB "drop_node(ARGV[2], 'left', ARGV[3], ARGV[2])\n"
                                      "redis.call('DEL', P .. ':alive:' .. ARGV[2])\n"
                                      "return 1\n";

enum {
    SCRIPT_JOIN,
    SCRIPT_LEAVE,
    SCRIPT_READ,
    SCRIPT_ROOM,
    SCRIPT_HEARTBEAT,
    SCRIPT_RESYNC,
    SCRIPT_DROP,
    SCRIPTS
};
static const char *const SCRIPT_TEXT[SCRIPTS] = {JOIN_SCRIPT, LEAVE_SCRIPT,     READ_SCRIPT,
                                                 ROOM_SCRIPT, HEARTBEAT_SCRIPT, RESYNC_SCRIPT,
                                                 DROP_SCRIPT};

/* What this node holds of one member of one room: its part of Redis's counts. */
typedef struct {
    char key[ROOM_ID_BUF + 12]; /* "room userId" */
    char room[ROOM_ID_BUF];
    uint32_t user_id;
    char username[CHAT_USERNAME_MAX + 1];
    long connections;
    int64_t since_ms;
    char read_seq[SEQNUM_BUF];
    UT_hash_handle hh;
} held_member;

enum { OP_JOIN, OP_LEAVE, OP_READ, OP_RESYNC, OP_REAP, OPS };
static const char *const OP_NAMES[OPS] = {"join", "leave", "read", "resync", "reap"};

struct presence_cluster {
    presence_cluster_config cfg;
    redis_endpoint ep;
    char prefix[64];
    char node_id[128];
    workqueue *queue;

    pthread_mutex_t held_mu; /* held, generation, dirty: the submitter and the thread */
    held_member *held;
    uint64_t generation; /* requests of an earlier generation are in the last RESYNC */
    bool dirty;          /* Redis may not hold what this node holds: RESYNC */

    pthread_t thread;
    bool started;
    atomic_bool stopping;
    char sha[SCRIPTS][41]; /* the thread's */

    pthread_mutex_t room_mu; /* the presence API's connection */
    redisContext *room_conn;
    char room_sha[41];
    uint64_t room_retry_ns;

    metric_counter *m_ok[OPS], *m_local[OPS], *m_reaped;
    metric_gauge *m_connected;
};

/* ---- what this node holds ---- */

static void held_key(const char *room, uint32_t user_id, char *out, size_t len)
{
    snprintf(out, len, "%s %u", room, user_id);
}

/* Applies a request to what the node holds; held_mu held. */
static void hold(presence_cluster *pc, const presence_cluster_op *op)
{
    char key[ROOM_ID_BUF + 12];
    held_key(op->room, op->user_id, key, sizeof key);
    held_member *h = NULL;
    HASH_FIND_STR(pc->held, key, h);
    if (op->kind == PCL_JOIN) {
        if (!h && (h = calloc(1, sizeof *h))) {
            snprintf(h->key, sizeof h->key, "%s", key);
            snprintf(h->room, sizeof h->room, "%s", op->room);
            h->user_id = op->user_id;
            snprintf(h->username, sizeof h->username, "%s", op->username);
            h->since_ms = op->at_ms;
            HASH_ADD_STR(pc->held, key, h);
        }
        if (h) h->connections++;
        if (!h) pc->dirty = true; /* out of memory: Redis keeps it until the next RESYNC */
    } else if (op->kind == PCL_LEAVE && h) {
        if (--h->connections <= 0) {
            HASH_DEL(pc->held, h);
            free(h);
        }
    } else if (op->kind == PCL_READ && h &&
               (!h->read_seq[0] || seqnum_cmp(op->seq, h->read_seq) > 0)) {
        snprintf(h->read_seq, sizeof h->read_seq, "%s", op->seq);
    }
}

/* What the node holds as RESYNC's JSON; NULL when out of memory. held_mu held. */
static char *held_json(presence_cluster *pc)
{
    json_t *all = json_array();
    held_member *h, *tmp;
    HASH_ITER(hh, pc->held, h, tmp)
    {
        char uid[12], since[24];
        snprintf(uid, sizeof uid, "%u", h->user_id);
        snprintf(since, sizeof since, "%lld", (long long)h->since_ms);
        json_array_append_new(all,
                              json_pack("[s,s,I,s,s,s]", h->room, uid, (json_int_t)h->connections,
                                        since, h->username, h->read_seq));
    }
    char *text = all ? json_dumps(all, JSON_COMPACT) : NULL;
    json_decref(all);
    return text;
}

/* ---- answers ---- */

static void answer(presence_cluster *pc, presence_cluster_op *op, bool ok, int opi)
{
    metric_counter_inc(ok ? pc->m_ok[opi] : pc->m_local[opi]);
    op->cluster = ok;
    if (op->want_answer && pc->cfg.answered && !atomic_load(&pc->stopping))
        pc->cfg.answered(pc->cfg.ctx, op);
    else
        presence_cluster_op_free(op);
}

void presence_cluster_op_free(presence_cluster_op *op)
{
    if (!op) return;
    free(op->members);
    free(op);
}

static long long reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
    return 0;
}

/* Flat (userId, connections, info JSON) triples into members; false on a malformed reply. */
static bool parse_members(const redisReply *r, presence_member **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 3) return false;
    size_t count = r->elements / 3;
    presence_member *m = calloc(count ? count : 1, sizeof *m);
    if (!m) return false;
    for (size_t i = 0; i < count; i++) {
        const redisReply *uid = r->element[3 * i], *conns = r->element[3 * i + 1];
        const redisReply *info = r->element[3 * i + 2];
        if (uid->type != REDIS_REPLY_STRING || info->type != REDIS_REPLY_STRING) {
            free(m);
            return false;
        }
        m[i].user_id = (uint32_t)strtoul(uid->str, NULL, 10);
        m[i].connections = (unsigned)reply_int(conns);
        json_t *j = json_loads(info->str, 0, NULL);
        const char *name = json_string_value(json_object_get(j, "n"));
        const char *since = json_string_value(json_object_get(j, "s"));
        const char *read = json_string_value(json_object_get(j, "r"));
        snprintf(m[i].username, sizeof m[i].username, "%s", name ? name : "");
        m[i].since_ms = since ? strtoll(since, NULL, 10) : 0;
        m[i].last_seen_ms = 0; /* known only to the member's own node */
        snprintf(m[i].read_seq, sizeof m[i].read_seq, "%s", read && seqnum_valid(read) ? read : "");
        json_decref(j);
    }
    *out = m;
    *n = count;
    return true;
}

/* ---- the thread ---- */

static void iso_now(char out[ISO8601_BUF]) { time_format_iso8601(time_wall_ms(), out); }

/* Runs a script on the thread's connection; NULL when the connection failed (drop it). An error
 * reply is logged and freed, and also returns NULL. */
static redisReply *run(presence_cluster *pc, redisContext *c, int script, int argc,
                       const char **argv)
{
    redisReply *r = redis_script_run(c, SCRIPT_TEXT[script], pc->sha[script], 0, argc, argv);
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_warn(COMPONENT, "script refused: %s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static bool apply_join(presence_cluster *pc, redisContext *c, presence_cluster_op *op)
{
    char uid[12], since[24], ts[ISO8601_BUF];
    snprintf(uid, sizeof uid, "%u", op->user_id);
    snprintf(since, sizeof since, "%lld", (long long)op->at_ms);
    time_format_iso8601(op->at_ms, ts);
    const char *argv[] = {pc->prefix, pc->node_id, op->room, uid, op->username, since, ts};
    redisReply *r = run(pc, c, SCRIPT_JOIN, 7, argv);
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
              parse_members(r->element[2], &op->members, &op->n_members);
    if (ok) {
        op->connections = reply_int(r->element[0]);
        op->online = (size_t)reply_int(r->element[1]);
    }
    freeReplyObject(r);
    return ok;
}

static bool apply_leave(presence_cluster *pc, redisContext *c, presence_cluster_op *op)
{
    char uid[12], ts[ISO8601_BUF];
    snprintf(uid, sizeof uid, "%u", op->user_id);
    time_format_iso8601(op->at_ms, ts);
    const char *argv[] = {pc->prefix, pc->node_id, op->room, uid, op->username, op->reason, ts};
    redisReply *r = run(pc, c, SCRIPT_LEAVE, 7, argv);
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    if (ok) {
        op->connections = reply_int(r->element[0]);
        op->online = (size_t)reply_int(r->element[1]);
    }
    freeReplyObject(r);
    return ok;
}

static bool apply_read(presence_cluster *pc, redisContext *c, presence_cluster_op *op)
{
    char uid[12];
    snprintf(uid, sizeof uid, "%u", op->user_id);
    const char *argv[] = {pc->prefix, pc->node_id, op->room, uid, op->seq};
    redisReply *r = run(pc, c, SCRIPT_READ, 5, argv);
    bool ok = r != NULL;
    freeReplyObject(r);
    return ok;
}

/* One request; false when Redis failed (the connection is dropped by the caller). */
static bool apply(presence_cluster *pc, redisContext *c, presence_cluster_op *op)
{
    bool ok = op->kind == PCL_JOIN    ? apply_join(pc, c, op)
              : op->kind == PCL_LEAVE ? apply_leave(pc, c, op)
                                      : apply_read(pc, c, op);
    /* Redis held none of this node's connections of the user: it lost them */
    if (ok && op->kind == PCL_LEAVE && op->connections < 0) {
        pthread_mutex_lock(&pc->held_mu);
        pc->dirty = true;
        pthread_mutex_unlock(&pc->held_mu);
        ok = false;
    }
    return ok;
}

static int op_index(const presence_cluster_op *op)
{
    return op->kind == PCL_JOIN ? OP_JOIN : op->kind == PCL_LEAVE ? OP_LEAVE : OP_READ;
}

/* Replaces Redis's entries of this node with what it holds. */
static bool resync(presence_cluster *pc, redisContext *c)
{
    pthread_mutex_lock(&pc->held_mu);
    char *entries = held_json(pc);
    pc->generation++; /* what is queued now is in entries */
    pthread_mutex_unlock(&pc->held_mu);
    if (!entries) return false;
    char ts[ISO8601_BUF], ttl[24];
    iso_now(ts);
    snprintf(ttl, sizeof ttl, "%ld", pc->cfg.node_ttl_ms);
    const char *argv[] = {pc->prefix, pc->node_id, ts, ttl, entries};
    redisReply *r = run(pc, c, SCRIPT_RESYNC, 5, argv);
    bool ok = r != NULL;
    free(entries);
    freeReplyObject(r);
    metric_counter_inc(ok ? pc->m_ok[OP_RESYNC] : pc->m_local[OP_RESYNC]);
    if (ok) {
        pthread_mutex_lock(&pc->held_mu);
        pc->dirty = false;
        pthread_mutex_unlock(&pc->held_mu);
        log_info(COMPONENT, "this node's members are in Redis again");
    }
    return ok;
}

/* The heartbeat, and dead nodes taken back. false when Redis failed. */
static bool heartbeat(presence_cluster *pc, redisContext *c)
{
    char ts[ISO8601_BUF], ttl[24];
    iso_now(ts);
    snprintf(ttl, sizeof ttl, "%ld", pc->cfg.node_ttl_ms);
    const char *argv[] = {pc->prefix, pc->node_id, ttl, ts};
    redisReply *r = run(pc, c, SCRIPT_HEARTBEAT, 4, argv);
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    if (ok) {
        long long reaped = reply_int(r->element[1]);
        metric_counter_inc(pc->m_ok[OP_REAP]);
        if (reaped > 0) {
            metric_counter_add(pc->m_reaped, (uint64_t)reaped);
            log_info(COMPONENT, "took back the members of %lld node(s) whose heartbeat expired",
                     reaped);
        }
        if (reply_int(r->element[0]) == 0) { /* our entries may be gone with the heartbeat */
            pthread_mutex_lock(&pc->held_mu);
            pc->dirty = true;
            pthread_mutex_unlock(&pc->held_mu);
        }
    } else {
        metric_counter_inc(pc->m_local[OP_REAP]);
    }
    freeReplyObject(r);
    return ok;
}

static bool is_dirty(presence_cluster *pc)
{
    pthread_mutex_lock(&pc->held_mu);
    bool d = pc->dirty;
    pthread_mutex_unlock(&pc->held_mu);
    return d;
}

static uint64_t current_generation(presence_cluster *pc)
{
    pthread_mutex_lock(&pc->held_mu);
    uint64_t g = pc->generation;
    pthread_mutex_unlock(&pc->held_mu);
    return g;
}

static void drop_connection(presence_cluster *pc, redisContext **c, const char *what)
{
    if (*c) {
        log_warn(COMPONENT,
                 "Redis %s:%d failed during %s (%s); answering from this node's "
                 "table until it is back",
                 pc->ep.host, pc->ep.port, what, (*c)->err ? (*c)->errstr : "refused");
        redisFree(*c);
        *c = NULL;
    }
    metric_gauge_set(pc->m_connected, 0);
    pthread_mutex_lock(&pc->held_mu);
    pc->dirty = true;
    pthread_mutex_unlock(&pc->held_mu);
}

/* One request off the queue: applied, or answered locally when Redis is away or the request is
 * already in the last RESYNC. */
static void serve(presence_cluster *pc, redisContext **c, presence_cluster_op *op)
{
    int opi = op_index(op);
    if (!*c || op->generation < current_generation(pc)) {
        answer(pc, op, false, opi);
        return;
    }
    bool ok = apply(pc, *c, op);
    if (!ok && (*c)->err) {
        drop_connection(pc, c, OP_NAMES[opi]);
    } else if (!ok) { /* refused: Redis may now differ from what this node holds */
        pthread_mutex_lock(&pc->held_mu);
        pc->dirty = true;
        pthread_mutex_unlock(&pc->held_mu);
    }
    answer(pc, op, ok, opi);
}

/* Connects when it is time to; true when connected. */
static bool ensure_connected(presence_cluster *pc, redisContext **c, uint64_t *retry_ns,
                             long *backoff_ms)
{
    if (*c) return true;
    uint64_t now = time_mono_ns();
    if (now < *retry_ns) return false;
    char err[256];
    *c = redis_endpoint_connect(&pc->ep, err, sizeof err);
    if (!*c) {
        *backoff_ms = *backoff_ms
                          ? (*backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff_ms * 2)
                          : 100;
        *retry_ns = now + (uint64_t)*backoff_ms * 1000000ull;
        log_warn(COMPONENT, "%s; trying again in %ld ms", err, *backoff_ms);
        return false;
    }
    *backoff_ms = 0;
    metric_gauge_set(pc->m_connected, 1);
    for (int i = 0; i < SCRIPTS; i++) pc->sha[i][0] = '\0';
    return true;
}

/* Upkeep between requests: set Redis right when needed, and the heartbeat when due. */
static void upkeep(presence_cluster *pc, redisContext **c, uint64_t *next_beat_ns)
{
    if (is_dirty(pc) && !resync(pc, *c)) {
        drop_connection(pc, c, "resync");
        return;
    }
    uint64_t now = time_mono_ns();
    if (now < *next_beat_ns) return;
    *next_beat_ns = now + (uint64_t)pc->cfg.heartbeat_ms * 1000000ull;
    if (!heartbeat(pc, *c))
        drop_connection(pc, c, "heartbeat");
    else if (is_dirty(pc) && !resync(pc, *c))
        drop_connection(pc, c, "resync");
}

static void take_back_own(presence_cluster *pc, redisContext *c)
{
    char ts[ISO8601_BUF];
    iso_now(ts);
    const char *argv[] = {pc->prefix, pc->node_id, ts};
    redisReply *r = c ? run(pc, c, SCRIPT_DROP, 3, argv) : NULL;
    if (r)
        log_info(COMPONENT, "this node's members taken back from the cluster's presence");
    else
        log_warn(COMPONENT, "could not take this node's members back; the other nodes will when "
                            "its heartbeat expires");
    freeReplyObject(r);
}

static void *thread_main(void *arg)
{
    presence_cluster *pc = arg;
    pthread_setname_np(pthread_self(), "cf-presence");
    /* a turn: a connect, two RESYNCs, a heartbeat and a request, each script call up to three
     * commands (EVALSHA, SCRIPT LOAD, EVALSHA) of timeout_ms */
    long turn_ms = pc->cfg.timeout_ms * 13 + TURN_MS + 10000;
    watchdog_loop *dog = watchdog_register("presence-cluster", turn_ms);
    redisContext *c = NULL;
    uint64_t retry_ns = 0, next_beat_ns = 0;
    long backoff_ms = 0;
    while (!atomic_load(&pc->stopping)) {
        watchdog_expect(dog, turn_ms);
        if (ensure_connected(pc, &c, &retry_ns, &backoff_ms)) upkeep(pc, &c, &next_beat_ns);
        presence_cluster_op *op = workqueue_pop_wait(pc->queue, TURN_MS);
        if (op) serve(pc, &c, op);
    }
    for (void *op; (op = workqueue_pop_wait(pc->queue, 0));) presence_cluster_op_free(op);
    retry_ns = 0; /* one more try for the take-back, whatever the backoff */
    if (!c) ensure_connected(pc, &c, &retry_ns, &backoff_ms);
    take_back_own(pc, c);
    if (c) redisFree(c);
    watchdog_unregister(dog);
    return NULL;
}

/* ---- the API ---- */

void presence_cluster_submit(presence_cluster *pc, presence_cluster_op *op)
{
    pthread_mutex_lock(&pc->held_mu);
    hold(pc, op);
    op->generation = pc->generation;
    bool queued = !atomic_load(&pc->stopping) && workqueue_push(pc->queue, op);
    if (!queued) pc->dirty = true;
    pthread_mutex_unlock(&pc->held_mu);
    if (!queued) answer(pc, op, false, op_index(op));
}

bool presence_cluster_room(presence_cluster *pc, const char *room, presence_member **members,
                           size_t *n, char *err, size_t err_len)
{
    *members = NULL;
    *n = 0;
    pthread_mutex_lock(&pc->room_mu);
    bool ok = false;
    if (!pc->room_conn && time_mono_ns() >= pc->room_retry_ns) {
        pc->room_conn = redis_endpoint_connect(&pc->ep, err, err_len);
        pc->room_sha[0] = '\0';
        if (!pc->room_conn) pc->room_retry_ns = time_mono_ns() + 1000000000ull;
    } else if (!pc->room_conn) {
        snprintf(err, err_len, "Redis %s:%d is unreachable", pc->ep.host, pc->ep.port);
    }
    if (pc->room_conn) {
        const char *argv[] = {pc->prefix, pc->node_id, room};
        redisReply *r = redis_script_run(pc->room_conn, ROOM_SCRIPT, pc->room_sha, 0, 3, argv);
        ok = r && parse_members(r, members, n);
        if (!ok)
            snprintf(err, err_len, "Redis %s:%d: %s", pc->ep.host, pc->ep.port,
                     r && r->type == REDIS_REPLY_ERROR ? r->str
                     : r                               ? "an unexpected answer"
                                                       : pc->room_conn->errstr);
        if (!r) {
            redisFree(pc->room_conn);
            pc->room_conn = NULL;
            pc->room_retry_ns = time_mono_ns() + 1000000000ull;
        }
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&pc->room_mu);
    return ok;
}

static void init_metrics(presence_cluster *pc)
{
    const char *help = "Cluster presence requests by outcome (local: answered from this node's "
                       "table because Redis was not asked or failed)";
    for (int i = 0; i < OPS; i++) {
        char ok[64], local[64];
        snprintf(ok, sizeof ok, "op=\"%s\",result=\"ok\"", OP_NAMES[i]);
        snprintf(local, sizeof local, "op=\"%s\",result=\"local\"", OP_NAMES[i]);
        pc->m_ok[i] = metrics_counter("chatflow_presence_cluster_ops_total", help, ok);
        pc->m_local[i] = metrics_counter("chatflow_presence_cluster_ops_total", help, local);
    }
    pc->m_reaped = metrics_counter("chatflow_presence_cluster_nodes_reaped_total",
                                   "Nodes whose heartbeat expired and whose members this node "
                                   "took back",
                                   NULL);
    pc->m_connected = metrics_gauge("chatflow_presence_cluster_connected",
                                    "1 while cluster presence is connected to Redis", NULL);
}

presence_cluster *presence_cluster_start(const presence_cluster_config *cfg, char *err,
                                         size_t err_len)
{
    presence_cluster *pc = calloc(1, sizeof *pc);
    if (!pc) {
        snprintf(err, err_len, "cluster presence: out of memory");
        return NULL;
    }
    pc->cfg = *cfg;
    snprintf(pc->prefix, sizeof pc->prefix, "%s", cfg->prefix);
    snprintf(pc->node_id, sizeof pc->node_id, "%s", cfg->node_id);
    pthread_mutex_init(&pc->held_mu, NULL);
    pthread_mutex_init(&pc->room_mu, NULL);
    pc->dirty = true; /* entries of an earlier life of this node id are replaced first */
    init_metrics(pc);
    if (!redis_endpoint_parse(&pc->ep, cfg->url, cfg->timeout_ms, err, err_len)) goto fail;
    if (!(pc->queue = workqueue_new(cfg->queue_max, NULL, NULL))) {
        snprintf(err, err_len, "cluster presence: out of memory");
        goto fail;
    }
    if (pthread_create(&pc->thread, NULL, thread_main, pc) != 0) {
        snprintf(err, err_len, "cluster presence: cannot start its thread");
        goto fail;
    }
    pc->started = true;
    log_info(COMPONENT, "cluster presence on redis://%s:%d/%d (heartbeat %ld ms, node ttl %ld ms)",
             pc->ep.host, pc->ep.port, pc->ep.db, cfg->heartbeat_ms, cfg->node_ttl_ms);
    return pc;
fail:
    presence_cluster_free(pc);
    return NULL;
}

bool presence_cluster_stop(presence_cluster *pc, uint64_t deadline_ns)
{
    if (!pc || !pc->started) return true;
    atomic_store(&pc->stopping, true);
    workqueue_close(pc->queue);
    /* a turn lasts TURN_MS, and the final take-back a connect and a call */
    uint64_t join_by = deadline_ns + (uint64_t)(2 * pc->cfg.timeout_ms + TURN_MS) * 1000000ull;
    if (time_join_thread_by(pc->thread, join_by)) pc->started = false;
    return !pc->started;
}

void presence_cluster_free(presence_cluster *pc)
{
    if (!pc || pc->started) return; /* the thread may still use it: leak */
    if (pc->queue) {
        for (void *op; (op = workqueue_pop_wait(pc->queue, 0));) presence_cluster_op_free(op);
        workqueue_free(pc->queue);
    }
    held_member *h, *tmp;
    HASH_ITER(hh, pc->held, h, tmp)
    {
        HASH_DEL(pc->held, h);
        free(h);
    }
    if (pc->room_conn) redisFree(pc->room_conn);
    pthread_mutex_destroy(&pc->held_mu);
    pthread_mutex_destroy(&pc->room_mu);
    free(pc);
}
