/* api — /api/metrics/all, /api/metrics/db-stats, POST /api/metrics/refresh; see api.h. */
#include "api.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "room.h"
#include "timeutil.h"

#define COMPONENT "api"
#define API_CONNECTIONS 2
#define API_ACQUIRE_WAIT_MS 500L
#define API_RETRY_AFTER_S 2
#define SAMPLE_ROWS "10"
#define REFRESH_TIMEOUT_MS 600000L

#define ISO_UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define MSG_COLUMNS                                                                              \
    "message_id::text AS \"messageId\", room_id AS \"roomId\", user_id AS \"userId\", username," \
    " message_text AS message, message_type AS \"messageType\","                                 \
    " " ISO_UTC("client_timestamp") " AS timestamp, sequence_number::text AS \"sequenceNumber\""

/* A column named total_count carries count(*) OVER (): the result count before LIMIT. */
static const db_statement api_statements[] = {
    /* Core 1: a room's messages in the window ((room_id, client_timestamp) index). */
    {"room_messages",
     "SELECT " MSG_COLUMNS ", count(*) OVER () AS total_count FROM messages"
     " WHERE room_id = $1::text AND client_timestamp BETWEEN $2::timestamptz AND $3::timestamptz"
     " ORDER BY client_timestamp, message_id LIMIT " SAMPLE_ROWS,
     3},
    /* Core 2: a user's history in the window ((user_id, client_timestamp) index). */
    {"user_history",
     "SELECT " MSG_COLUMNS ", count(*) OVER () AS total_count FROM messages"
     " WHERE user_id = $1::int AND client_timestamp BETWEEN $2::timestamptz AND $3::timestamptz"
     " ORDER BY client_timestamp, message_id LIMIT " SAMPLE_ROWS,
     3},
    /* Core 3: users active in the window, most active first ((client_timestamp, user_id) index). */
    {"active_users",
     "SELECT user_id AS \"userId\", count(*) AS \"messageCount\", count(*) OVER () AS total_count"
     " FROM messages WHERE client_timestamp BETWEEN $1::timestamptz AND $2::timestamptz"
     " GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT " SAMPLE_ROWS,
     2},
    /* Core 4: the rooms of a user (user_activity primary key). */
    {"user_rooms",
     "SELECT room_id AS \"roomId\", message_count AS \"messageCount\","
     " " ISO_UTC("first_activity") " AS \"firstActivity\", " ISO_UTC(
         "last_activity") " AS \"lastActivity\", count(*) OVER () AS total_count FROM user_activity"
                          " WHERE user_id = $1::int ORDER BY last_activity DESC, room_id "
                          "LIMIT " SAMPLE_ROWS,
     1},
    {"busiest_room",
     "SELECT room_id FROM messages WHERE client_timestamp BETWEEN $1::timestamptz AND "
     "$2::timestamptz"
     " GROUP BY room_id ORDER BY count(*) DESC, room_id LIMIT 1",
     2},
    {"per_second",
     "SELECT coalesce(sum(message_count), 0) AS total, coalesce(max(message_count), 0) AS peak"
     " FROM mv_messages_per_second"
     " WHERE second BETWEEN date_trunc('second', $1::timestamptz) AND $2::timestamptz",
     2},
    {"hourly",
     "SELECT " ISO_UTC("hour") " AS hour, message_count AS \"messageCount\","
                               " unique_users AS \"uniqueUsers\" FROM mv_messages_per_hour"
                               " WHERE hour BETWEEN date_trunc('hour', $1::timestamptz) AND "
                               "$2::timestamptz ORDER BY hour LIMIT 168",
     2},
    {"top_users",
     "SELECT user_id AS \"userId\", username, message_count AS \"messageCount\", rooms"
     " FROM mv_top_users ORDER BY message_count DESC, user_id LIMIT " SAMPLE_ROWS,
     0},
    {"top_rooms",
     "SELECT room_id AS \"roomId\", message_count AS \"messageCount\", unique_users AS "
     "\"uniqueUsers\""
     " FROM mv_top_rooms ORDER BY message_count DESC, room_id LIMIT " SAMPLE_ROWS,
     0},
    {"participation",
     "SELECT rooms_joined AS \"roomsJoined\", user_count AS \"userCount\","
     " message_count AS \"messageCount\" FROM mv_user_participation ORDER BY rooms_joined",
     0},
    {"table_stats",
     "SELECT (SELECT count(*) FROM messages) AS \"messagesRows\","
     " (SELECT count(*) FROM user_activity) AS \"userActivityRows\","
     " pg_total_relation_size('messages') AS \"messagesTotalBytes\","
     " pg_relation_size('messages') AS \"messagesTableBytes\","
     " pg_indexes_size('messages') AS \"messagesIndexBytes\","
     " pg_total_relation_size('user_activity') AS \"userActivityTotalBytes\","
     " pg_database_size(current_database()) AS \"databaseBytes\"",
     0},
    {"index_stats",
     "SELECT relname AS \"table\", indexrelname AS index, pg_relation_size(indexrelid) AS bytes,"
     " idx_scan AS scans FROM pg_stat_user_indexes ORDER BY relname, indexrelname",
     0},
};

static const char *const materialized_views[] = {
    "mv_messages_per_second", "mv_messages_per_hour",  "mv_top_users",
    "mv_top_rooms",           "mv_user_participation",
};

struct api {
    long statement_timeout_ms;
    db_pool *pool;
    db_gate *gate; /* admin threads in database work (api_set_gate) */
    db_gate *own_gate;
    pthread_mutex_t refreshed_mu;
    char refreshed_at[ISO8601_BUF]; /* "" until the first refresh by this process */
};

api *api_new(const char *database_url, long statement_timeout_ms)
{
    api *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    /* the writer's timeout may be long; an admin thread must not wait that long */
    if (statement_timeout_ms <= 0 || statement_timeout_ms > API_STATEMENT_TIMEOUT_MAX_MS)
        statement_timeout_ms = API_STATEMENT_TIMEOUT_MAX_MS;
    a->statement_timeout_ms = statement_timeout_ms;
    pthread_mutex_init(&a->refreshed_mu, NULL);
    a->pool =
        db_pool_new(database_url, statement_timeout_ms, "chatflow-consumer-api", api_statements,
                    sizeof(api_statements) / sizeof(api_statements[0]), API_CONNECTIONS);
    a->gate = a->own_gate = db_gate_new(API_DB_THREADS_DEFAULT);
    if (!a->pool || !a->gate) {
        api_free(a);
        return NULL;
    }
    return a;
}

void api_free(api *a)
{
    if (!a) return;
    db_pool_free(a->pool);
    db_gate_free(a->own_gate);
    pthread_mutex_destroy(&a->refreshed_mu);
    free(a);
}

void api_set_gate(api *a, db_gate *g)
{
    if (g) a->gate = g;
}

/* ---- parameters ---- */

static bool all_digits(const char *s) { return *s && strspn(s, "0123456789") == strlen(s); }

bool api_parse_time(const char *s, int64_t *epoch_ms)
{
    if (!s || !*s) return false;
    if (all_digits(s)) {
        if (strlen(s) > 15) return false;
        *epoch_ms = strtoll(s, NULL, 10);
        return true;
    }
    if (time_parse_iso8601(s, epoch_ms)) return true;
    /* An unencoded '+' of a zone offset arrives as a space in a query string. */
    char fixed[64];
    if (strlen(s) >= sizeof(fixed) || !strchr(s, ' ')) return false;
    snprintf(fixed, sizeof(fixed), "%s", s);
    for (char *p = fixed; *p; p++)
        if (*p == ' ') *p = '+';
    return time_parse_iso8601(fixed, epoch_ms);
}

static bool parse_int_param(const char *s, long lo, long hi, long *out)
{
    if (!s || !all_digits(s) || strlen(s) > 9) return false;
    long v = strtol(s, NULL, 10);
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
}

typedef struct {
    int64_t start_ms, end_ms;
    char start[ISO8601_BUF], end[ISO8601_BUF];
    long user_id;              /* 0: not given */
    char room_id[ROOM_ID_BUF]; /* "": not given */
} window_params;

/* false with resp set to a 400 naming the parameter. */
static bool parse_window(const http_request *req, window_params *w, http_response *resp)
{
    const char *start = http_request_arg(req, "testStartTime");
    const char *end = http_request_arg(req, "testEndTime");
    const char *user = http_request_arg(req, "userId");
    const char *room = http_request_arg(req, "roomId");
    memset(w, 0, sizeof(*w));
    if (!start || !end) {
        http_respond_error(resp, 400,
                           !start ? "testStartTime is required (ISO-8601 instant or epoch ms)"
                                  : "testEndTime is required (ISO-8601 instant or epoch ms)");
        return false;
    }
    if (!api_parse_time(start, &w->start_ms)) {
        http_respond_error(
            resp, 400, "testStartTime: not an ISO-8601 instant with a zone or epoch milliseconds");
        return false;
    }
    if (!api_parse_time(end, &w->end_ms)) {
        http_respond_error(
            resp, 400, "testEndTime: not an ISO-8601 instant with a zone or epoch milliseconds");
        return false;
    }
    if (w->start_ms > w->end_ms) {
        http_respond_error(resp, 400, "testStartTime is after testEndTime");
        return false;
    }
    if (user && !parse_int_param(user, 1, 100000, &w->user_id)) {
        http_respond_error(resp, 400, "userId: must be an integer 1-100000");
        return false;
    }
    char why[128];
    if (room && !room_id_check(room, strlen(room), why, sizeof(why))) {
        http_respond_error(resp, 400, why);
        return false;
    }
    if (room) snprintf(w->room_id, sizeof(w->room_id), "%s", room);
    time_format_iso8601(w->start_ms, w->start);
    time_format_iso8601(w->end_ms, w->end);
    return true;
}

/* ---- results as JSON ---- */

/* Type OIDs from pg_type.dat (stable across versions): ints -> JSON integers, numeric/float ->
 * JSON reals, bool -> JSON booleans, everything else as text. */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700
};

static json_t *cell_json(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) return json_null();
    const char *v = PQgetvalue(r, row, col);
    switch (PQftype(r, col)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8: return json_integer(strtoll(v, NULL, 10));
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC: return json_real(strtod(v, NULL));
    case OID_BOOL: return json_boolean(v[0] == 't');
    default: {
        json_t *s = json_string(v);
        return s ? s : json_string("(not valid UTF-8)");
    }
    }
}

static json_t *row_json(const PGresult *r, int row)
{
    json_t *o = json_object();
    for (int c = 0; o && c < PQnfields(r); c++)
        if (strcmp(PQfname(r, c), "total_count") != 0)
            json_object_set_new(o, PQfname(r, c), cell_json(r, row, c));
    return o;
}

static json_t *rows_json(const PGresult *r)
{
    json_t *a = json_array();
    for (int i = 0; a && i < PQntuples(r); i++) json_array_append_new(a, row_json(r, i));
    return a;
}

/* Runs a prepared statement; NULL on failure with err set. *ms gets its execution time. */
static PGresult *run(db_conn *s, const char *name, int n, const char *const *params, double *ms,
                     char *err, size_t err_len)
{
    uint64_t t0 = time_mono_ns();
    PGresult *r = db_run_prepared(s, name, n, params, err, err_len);
    if (ms) *ms = (double)(time_mono_ns() - t0) / 1e6;
    return r;
}

/* {"executionTimeMs", "resultCount", "sampleData"} for a query with a total_count column. */
static json_t *core_query(db_conn *s, const char *name, int n, const char *const *params,
                          json_t *extra, char *err, size_t err_len)
{
    double ms = 0;
    PGresult *r = run(s, name, n, params, &ms, err, err_len);
    if (!r) {
        json_decref(extra);
        return NULL;
    }
    long long total = 0;
    int tc = PQfnumber(r, "total_count");
    if (PQntuples(r) > 0 && tc >= 0) total = strtoll(PQgetvalue(r, 0, tc), NULL, 10);
    json_t *o = json_pack("{s:f, s:I, s:o}", "executionTimeMs", ms, "resultCount",
                          (json_int_t)total, "sampleData", rows_json(r));
    PQclear(r);
    if (o && extra) json_object_update(o, extra);
    json_decref(extra);
    return o;
}

static json_t *db_stats(db_conn *s, char *err, size_t err_len)
{
    PGresult *t = run(s, "table_stats", 0, NULL, NULL, err, err_len);
    if (!t) return NULL;
    PGresult *ix = run(s, "index_stats", 0, NULL, NULL, err, err_len);
    if (!ix) {
        PQclear(t);
        return NULL;
    }
    json_t *o = PQntuples(t) == 1 ? row_json(t, 0) : json_object();
    if (o) json_object_set_new(o, "indexes", rows_json(ix));
    PQclear(t);
    PQclear(ix);
    return o;
}

static void respond_json(http_response *resp, json_t *o)
{
    resp->body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!resp->body) {
        http_respond_error(resp, 500, "cannot build the answer");
        return;
    }
    resp->status = 200;
}

/* Only a DATA fault (class 22/23: a bug in a query of ours) is a 500; everything else is the
 * database's — down, busy, locked, timed out, read-only, schema missing — and a 503 with
 * Retry-After. */
static void respond_db_error(http_response *resp, db_conn *s, const char *err)
{
    char msg[600];
    bool ours = db_last_error_kind(s) == DB_ERR_DATA;
    snprintf(msg, sizeof(msg), "%s: %s", ours ? "query failed" : "database unavailable", err);
    log_warn(COMPONENT, "%s (%s)", msg, db_last_error_class(s));
    http_respond_error(resp, ours ? 500 : 503, msg);
    if (!ours) resp->retry_after_s = API_RETRY_AFTER_S;
}

static void respond_busy(http_response *resp, const char *why)
{
    log_warn(COMPONENT, "database busy: %s", why);
    char msg[200];
    snprintf(msg, sizeof(msg), "database busy: %s; try again later", why);
    http_respond_error(resp, 503, msg);
    resp->retry_after_s = API_RETRY_AFTER_S;
}

/* A place among the admin threads allowed in database work, then a connection, both without
 * waiting long; NULL with resp set to a 503 otherwise. */
static db_conn *begin_db(api *a, http_response *resp)
{
    if (!db_gate_try_enter(a->gate)) {
        respond_busy(resp, "too many requests in the database already");
        return NULL;
    }
    db_conn *s = db_pool_acquire_timeout(a->pool, API_ACQUIRE_WAIT_MS);
    if (!s) {
        db_gate_leave(a->gate);
        respond_busy(resp, "no connection free within 500 ms");
    }
    return s;
}

static void end_db(api *a, db_conn *s)
{
    db_pool_release(a->pool, s);
    db_gate_leave(a->gate);
}

/* ---- handlers ---- */

static json_t *analytics(api *a, db_conn *s, const window_params *w, char *err, size_t err_len)
{
    const char *win[] = {w->start, w->end};
    PGresult *ps = run(s, "per_second", 2, win, NULL, err, err_len);
    if (!ps) return NULL;
    double seconds = (double)(w->end_ms - w->start_ms) / 1000.0;
    if (seconds < 1) seconds = 1;
    long long total = strtoll(PQgetvalue(ps, 0, 0), NULL, 10);
    long long peak = strtoll(PQgetvalue(ps, 0, 1), NULL, 10);
    PQclear(ps);

    PGresult *hourly = run(s, "hourly", 2, win, NULL, err, err_len);
    PGresult *users = hourly ? run(s, "top_users", 0, NULL, NULL, err, err_len) : NULL;
    PGresult *rooms = users ? run(s, "top_rooms", 0, NULL, NULL, err, err_len) : NULL;
    PGresult *part = rooms ? run(s, "participation", 0, NULL, NULL, err, err_len) : NULL;
    json_t *o = NULL;
    if (part) {
        char refreshed[ISO8601_BUF];
        pthread_mutex_lock(&a->refreshed_mu);
        snprintf(refreshed, sizeof(refreshed), "%s", a->refreshed_at);
        pthread_mutex_unlock(&a->refreshed_mu);
        o = json_pack("{s:{s:I, s:f, s:I}, s:o, s:o, s:o, s:o, s:o}", "messagesPerSecond",
                      "messages", (json_int_t)total, "avg", (double)total / seconds, "peak",
                      (json_int_t)peak, "hourly", rows_json(hourly), "topUsers", rows_json(users),
                      "topRooms", rows_json(rooms), "userParticipation", rows_json(part),
                      "viewsRefreshedAt", refreshed[0] ? json_string(refreshed) : json_null());
    }
    PQclear(hourly);
    PQclear(users);
    PQclear(rooms);
    PQclear(part);
    return o;
}

/* The busiest room / most active user of the window when not given; "" / 0 when the window is
 * empty. */
static bool pick_defaults(db_conn *s, window_params *w, char *err, size_t err_len)
{
    const char *win[] = {w->start, w->end};
    if (!w->room_id[0]) {
        PGresult *r = run(s, "busiest_room", 2, win, NULL, err, err_len);
        if (!r) return false;
        if (PQntuples(r) > 0) snprintf(w->room_id, sizeof(w->room_id), "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (w->user_id == 0) {
        PGresult *r = run(s, "active_users", 2, win, NULL, err, err_len);
        if (!r) return false;
        if (PQntuples(r) > 0) w->user_id = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    return true;
}

static void serve_all(void *ctx, const http_request *req, http_response *resp)
{
    api *a = ctx;
    window_params w;
    if (!parse_window(req, &w, resp)) return;
    bool room_given = w.room_id[0] != '\0', user_given = w.user_id != 0;
    char err[512] = "";
    db_conn *s = begin_db(a, resp);
    if (!s) return;
    json_t *root = NULL, *core = NULL;
    if (!pick_defaults(s, &w, err, sizeof(err))) goto fail;
    char user_s[24];
    snprintf(user_s, sizeof(user_s), "%ld", w.user_id);
    const char *room_p[] = {w.room_id, w.start, w.end}; /* "": no room matches */
    const char *user_p[] = {user_s, w.start, w.end};
    const char *win[] = {w.start, w.end};
    const char *user_only[] = {user_s};
    json_t *q1 = core_query(s, "room_messages", 3, room_p,
                            json_pack("{s:o, s:b}", "roomId",
                                      w.room_id[0] ? json_string(w.room_id) : json_null(),
                                      "roomIdGiven", room_given),
                            err, sizeof(err));
    json_t *q2 = q1 ? core_query(s, "user_history", 3, user_p,
                                 json_pack("{s:i, s:b}", "userId", (int)w.user_id, "userIdGiven",
                                           user_given),
                                 err, sizeof(err))
                    : NULL;
    json_t *q3 = q2 ? core_query(s, "active_users", 2, win, NULL, err, sizeof(err)) : NULL;
    json_t *q4 = q3 ? core_query(s, "user_rooms", 1, user_only,
                                 json_pack("{s:i}", "userId", (int)w.user_id), err, sizeof(err))
                    : NULL;
    if (!q4) {
        json_decref(q1);
        json_decref(q2);
        json_decref(q3);
        goto fail;
    }
    core = json_pack("{s:o, s:o, s:o, s:o}", "roomMessages", q1, "userHistory", q2, "activeUsers",
                     q3, "userRooms", q4);
    json_t *an = analytics(a, s, &w, err, sizeof(err));
    if (!an) goto fail;
    json_t *stats = db_stats(s, err, sizeof(err));
    if (!stats) {
        json_decref(an);
        goto fail;
    }
    root = json_pack("{s:{s:s, s:s}, s:o, s:o, s:o}", "window", "testStartTime", w.start,
                     "testEndTime", w.end, "coreQueries", core, "analytics", an, "dbStats", stats);
    end_db(a, s);
    respond_json(resp, root);
    return;
fail:
    json_decref(core);
    respond_db_error(resp, s, err);
    end_db(a, s);
}

static void serve_db_stats(void *ctx, const http_request *req, http_response *resp)
{
    (void)req;
    api *a = ctx;
    char err[512] = "";
    db_conn *s = begin_db(a, resp);
    if (!s) return;
    json_t *stats = db_stats(s, err, sizeof(err));
    if (!stats)
        respond_db_error(resp, s, err);
    else
        respond_json(resp, stats);
    end_db(a, s);
}

static void serve_refresh(void *ctx, const http_request *req, http_response *resp)
{
    (void)req;
    api *a = ctx;
    char err[512] = "", sql[160];
    db_conn *s = begin_db(a, resp);
    if (!s) return;
    uint64_t t0 = time_mono_ns();
    bool ok = db_conn_ensure(s, err, sizeof(err));
    /* Refreshing large views can outlast the per-statement timeout of ingest queries. */
    snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", REFRESH_TIMEOUT_MS);
    ok = ok && db_exec(s, sql, err, sizeof(err));
    json_t *done = json_array();
    for (size_t i = 0; ok && i < sizeof(materialized_views) / sizeof(materialized_views[0]); i++) {
        snprintf(sql, sizeof(sql), "REFRESH MATERIALIZED VIEW CONCURRENTLY %s",
                 materialized_views[i]);
        ok = db_exec(s, sql, err, sizeof(err));
        if (ok) json_array_append_new(done, json_string(materialized_views[i]));
    }
    if (db_conn_is_up(s)) {
        char ignored[128];
        snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", a->statement_timeout_ms);
        db_exec(s, sql, ignored, sizeof(ignored));
    }
    if (!ok) {
        json_decref(done);
        respond_db_error(resp, s, err);
        end_db(a, s);
        return;
    }
    end_db(a, s);
    char now[ISO8601_BUF];
    time_format_iso8601(time_wall_ms(), now);
    pthread_mutex_lock(&a->refreshed_mu);
    snprintf(a->refreshed_at, sizeof(a->refreshed_at), "%s", now);
    pthread_mutex_unlock(&a->refreshed_mu);
    respond_json(resp, json_pack("{s:o, s:f, s:s}", "refreshed", done, "durationMs",
                                 (double)(time_mono_ns() - t0) / 1e6, "refreshedAt", now));
}

const char *api_query_sql(const char *name)
{
    for (size_t i = 0; i < sizeof(api_statements) / sizeof(api_statements[0]); i++)
        if (strcmp(api_statements[i].name, name) == 0) return api_statements[i].sql;
    return NULL;
}

void api_add_routes(api *a, admin_http *h)
{
    admin_http_add_route(h, "GET", "/api/metrics/all", serve_all, a);
    admin_http_add_route(h, "GET", "/api/metrics/db-stats", serve_db_stats, a);
    admin_http_add_route(h, "POST", "/api/metrics/refresh", serve_refresh, a);
}
