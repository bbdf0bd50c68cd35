/* db — libpq connection management, prepared statements, fault classification, the writability
 * probe, redaction, pools, gates and migrations; see db.h. */
#include "db.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "timeutil.h"

#define DEFAULT_CONNECT_TIMEOUT_S 5
#define POOL_CONNECT_TIMEOUT_S 2
#define POOL_CONNECT_BACKOFF_MS 1000L
#define HEALTH_CONNECT_TIMEOUT_S 2
#define HEALTH_STATEMENT_TIMEOUT_MS 1000L
#define HEALTH_MIN_INTERVAL_NS 1000000000ull

struct db_conn {
    const char *url;
    long statement_timeout_ms;
    const char *application_name;
    const db_statement *statements;
    size_t n_statements;
    db_on_connect_fn on_connect;
    void *on_connect_ctx;
    PGconn *pg;
    int connect_timeout_s;
    int keepalive_idle_s, keepalive_interval_s, keepalive_count, tcp_user_timeout_ms;
    db_error_kind last_error;
    const char *last_class;
    char last_state[6];
    /* the last failed set-up, replayed by db_conn_ensure() until retry_at_ns (connect backoff) */
    long connect_backoff_ms;
    uint64_t retry_at_ns;
    db_error_kind setup_kind;
    const char *setup_class;
    char setup_state[6];
    char setup_error[512];
};

db_conn *db_conn_new(const char *url, long statement_timeout_ms, const char *application_name,
                     const db_statement *statements, size_t n_statements,
                     db_on_connect_fn on_connect, void *on_connect_ctx)
{
    db_conn *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->url = url;
    c->statement_timeout_ms = statement_timeout_ms;
    c->application_name = application_name;
    c->statements = statements;
    c->n_statements = n_statements;
    c->on_connect = on_connect;
    c->on_connect_ctx = on_connect_ctx;
    c->connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
    c->keepalive_idle_s = 10;
    c->keepalive_interval_s = 5;
    c->keepalive_count = 3;
    c->last_class = "none";
    return c;
}

void db_conn_drop(db_conn *c)
{
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
}

void db_conn_free(db_conn *c)
{
    if (!c) return;
    db_conn_drop(c);
    free(c);
}

bool db_conn_is_up(const db_conn *c) { return c->pg && PQstatus(c->pg) == CONNECTION_OK; }
PGconn *db_conn_pg(db_conn *c) { return c->pg; }
db_error_kind db_last_error_kind(const db_conn *c) { return c->last_error; }
const char *db_last_error_class(const db_conn *c) { return c->last_class; }
const char *db_last_sqlstate(const db_conn *c) { return c->last_state; }
void db_conn_set_connect_timeout(db_conn *c, int seconds) { c->connect_timeout_s = seconds; }
void db_conn_set_keepalives(db_conn *c, int idle_s, int interval_s, int count,
                            int tcp_user_timeout_ms)
{
    c->keepalive_idle_s = idle_s;
    c->keepalive_interval_s = interval_s;
    c->keepalive_count = count;
    c->tcp_user_timeout_ms = tcp_user_timeout_ms;
}
void db_conn_set_connect_backoff(db_conn *c, long backoff_ms)
{
    c->connect_backoff_ms = backoff_ms;
}

const char *db_error_kind_name(db_error_kind kind)
{
    switch (kind) {
    case DB_ERR_NONE: return "none";
    case DB_ERR_CONNECTION: return "connection";
    case DB_ERR_TRANSIENT: return "transient";
    case DB_ERR_DATA: return "data";
    case DB_ERR_UNAVAILABLE: return "unavailable";
    }
    return "unknown";
}

/* ---- fault classification ---- */

typedef struct {
    const char *prefix; /* a whole SQLSTATE, or its class (2 characters) */
    db_error_kind kind;
    const char *class_name;
} sqlstate_rule;

/* First match wins: exact states before the classes that contain them. Only classes 22 and 23
 * are the row's: a value the column cannot hold, a constraint the row breaks. A unique violation
 * (23505) counts too: inserts of messages skip their own duplicates (ON CONFLICT DO NOTHING), so a
 * 23505 that still arises comes from another unique constraint the row breaks, and would break
 * again on every retry. Everything else is about the database, the session or our own SQL. */
static const sqlstate_rule sqlstate_rules[] = {
    {"08", DB_ERR_CONNECTION, "connection"},
    {"57P", DB_ERR_CONNECTION, "connection"}, /* shutdown, crash, cannot connect now, dropped */
    {"22", DB_ERR_DATA, "data"},
    {"23", DB_ERR_DATA, "data"},
    {"25006", DB_ERR_UNAVAILABLE, "read_only"},  /* default_transaction_read_only, a standby */
    {"42P01", DB_ERR_UNAVAILABLE, "schema"},     /* undefined table: started before --migrate */
    {"42703", DB_ERR_UNAVAILABLE, "schema"},     /* undefined column: a migration missing */
    {"42704", DB_ERR_UNAVAILABLE, "schema"},     /* undefined object */
    {"42883", DB_ERR_UNAVAILABLE, "schema"},     /* undefined function */
    {"3F000", DB_ERR_UNAVAILABLE, "schema"},     /* invalid schema name */
    {"3D000", DB_ERR_UNAVAILABLE, "schema"},     /* invalid catalog name (database) */
    {"42501", DB_ERR_UNAVAILABLE, "permission"}, /* insufficient privilege: a revoked grant */
    {"28", DB_ERR_UNAVAILABLE, "permission"},    /* invalid authorization */
    {"53", DB_ERR_UNAVAILABLE, "resources"}, /* disk full, out of memory, too many connections */
    {"58", DB_ERR_UNAVAILABLE, "resources"}, /* system error: I/O */
    {"57014", DB_ERR_TRANSIENT, "timeout"},  /* statement timeout, cancel */
    {"25P03", DB_ERR_TRANSIENT, "timeout"},  /* idle-in-transaction timeout */
    {"40", DB_ERR_TRANSIENT, "conflict"},    /* serialization failure, deadlock */
    {"55P03", DB_ERR_TRANSIENT, "conflict"}, /* lock not available */
    {"55006", DB_ERR_TRANSIENT, "conflict"}, /* object in use */
};

db_error_kind db_classify_sqlstate(const char *sqlstate, const char **class_name)
{
    const char *name = "other";
    db_error_kind kind = DB_ERR_TRANSIENT;
    if (!sqlstate || !*sqlstate) {
        name = "connection";
        kind = DB_ERR_CONNECTION;
    } else {
        for (size_t i = 0; i < sizeof(sqlstate_rules) / sizeof(sqlstate_rules[0]); i++) {
            const sqlstate_rule *r = &sqlstate_rules[i];
            if (strncmp(sqlstate, r->prefix, strlen(r->prefix)) == 0) {
                name = r->class_name;
                kind = r->kind;
                break;
            }
        }
    }
    if (class_name) *class_name = name;
    return kind;
}

/* A connection that is gone is CONNECTION whatever the server said last (e.g. 57P01 FATAL). */
static void classify(db_conn *c, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->last_state, sizeof(c->last_state), "%s", state ? state : "");
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) state = NULL;
    c->last_error = db_classify_sqlstate(state, &c->last_class);
}

static void note_success(db_conn *c)
{
    c->last_error = DB_ERR_NONE;
    c->last_class = "none";
    c->last_state[0] = '\0';
}

static void note_kind(db_conn *c, db_error_kind kind, const char *class_name, const char *state)
{
    c->last_error = kind;
    c->last_class = class_name;
    snprintf(c->last_state, sizeof(c->last_state), "%s", state);
}

/* ---- redaction ---- */

typedef struct {
    size_t start, len; /* the value as written (quotes included) */
    bool quoted;
} secret_span;

#define MAX_SECRETS 8

static bool is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* The password of a URI's user info: between the first ':' after "://" and the last '@'. The
 * last '@', not the first: an unencoded '@' in a password must not leave its tail visible. */
static size_t uri_userinfo_secret(const char *s, secret_span *out)
{
    const char *rest = strstr(s, "://") + 3;
    const char *at = strrchr(rest, '@');
    if (!at) return 0;
    const char *colon = memchr(rest, ':', (size_t)(at - rest));
    if (!colon) return 0;
    out->start = (size_t)(colon + 1 - s);
    out->len = (size_t)(at - colon - 1);
    out->quoted = false;
    return 1;
}

/* "password" then optional blanks, '=', optional blanks, and a value: a quoted one (keyword
 * form, backslash escapes) or one that runs to a blank, or to '&' in a URI query. */
static size_t keyword_secrets(const char *s, bool uri, secret_span *out, size_t max)
{
    size_t n = 0;
    for (const char *p = strstr(s, "password"); p && n < max; p = strstr(p + 1, "password")) {
        if (p > s && !isspace((unsigned char)p[-1]) && p[-1] != '?' && p[-1] != '&') continue;
        const char *q = p + 8;
        while (isspace((unsigned char)*q)) q++;
        if (*q != '=') continue;
        q++;
        while (!uri && isspace((unsigned char)*q)) q++;
        const char *v = q;
        bool quoted = !uri && *q == '\'';
        if (quoted) {
            for (q++; *q && *q != '\''; q++)
                if (*q == '\\' && q[1]) q++;
            if (*q == '\'') q++;
        } else {
            while (*q && !isspace((unsigned char)*q) && !(uri && *q == '&')) q++;
        }
        out[n++] = (secret_span){(size_t)(v - s), (size_t)(q - v), quoted};
    }
    return n;
}

static int by_start(const void *a, const void *b)
{
    const secret_span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Every password value of conninfo, in order, without overlaps. */
static size_t find_secrets(const char *conninfo, secret_span *out)
{
    size_t n = 0;
    bool uri = is_uri(conninfo);
    if (uri) n += uri_userinfo_secret(conninfo, out);
    n += keyword_secrets(conninfo, uri, out + n, MAX_SECRETS - n);
    qsort(out, n, sizeof(*out), by_start);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (kept == 0 || out[i].start >= out[kept - 1].start + out[kept - 1].len)
            out[kept++] = out[i];
    return kept;
}

void db_redact(const char *conninfo, char *out, size_t out_len)
{
    if (out_len == 0) return;
    out[0] = '\0';
    if (!conninfo) return;
    secret_span spans[MAX_SECRETS];
    size_t n = find_secrets(conninfo, spans), from = 0, used = 0;
    for (size_t i = 0; i <= n && used < out_len - 1; i++) {
        size_t upto = i < n ? spans[i].start : strlen(conninfo);
        int w = snprintf(out + used, out_len - used, "%.*s%s", (int)(upto - from), conninfo + from,
                         i < n ? "***" : "");
        if (w < 0) break;
        used += (size_t)w;
        if (i < n) from = spans[i].start + spans[i].len;
    }
    if (used >= out_len) out[out_len - 1] = '\0';
}

/* Replaces every occurrence of needle in msg (buffer of msg_size) with repl, truncating. */
static void replace_all(char *msg, size_t msg_size, const char *needle, size_t needle_len,
                        const char *repl)
{
    if (needle_len == 0 || !strstr(msg, needle) || msg_size == 0) return;
    char *out = malloc(msg_size);
    if (!out) {
        msg[0] = '\0'; /* cannot scrub: say nothing rather than the secret */
        return;
    }
    size_t used = 0, repl_len = strlen(repl);
    const char *p = msg;
    for (const char *hit; (hit = strstr(p, needle)) != NULL && used < msg_size - 1;
         p = hit + needle_len) {
        size_t keep = (size_t)(hit - p);
        size_t room = msg_size - 1 - used;
        memcpy(out + used, p, keep < room ? keep : room);
        used += keep < room ? keep : room;
        room = msg_size - 1 - used;
        memcpy(out + used, repl, repl_len < room ? repl_len : room);
        used += repl_len < room ? repl_len : room;
    }
    if (used < msg_size - 1) {
        size_t rest = strlen(p), room = msg_size - 1 - used;
        memcpy(out + used, p, rest < room ? rest : room);
        used += rest < room ? rest : room;
    }
    out[used] = '\0';
    memcpy(msg, out, used + 1);
    free(out);
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The value as libpq reads it: quotes and backslash escapes removed, %XX decoded. */
static void decode_secret(const char *v, size_t len, bool quoted, char *out, size_t out_size)
{
    size_t o = 0;
    size_t i = quoted ? 1 : 0, end = quoted && len >= 2 && v[len - 1] == '\'' ? len - 1 : len;
    for (; i < end && o < out_size - 1; i++) {
        if (quoted && v[i] == '\\' && i + 1 < end) {
            out[o++] = v[++i];
        } else if (!quoted && v[i] == '%' && i + 2 < end && hex_value(v[i + 1]) >= 0 &&
                   hex_value(v[i + 2]) >= 0) {
            out[o++] = (char)(hex_value(v[i + 1]) * 16 + hex_value(v[i + 2]));
            i += 2;
        } else {
            out[o++] = v[i];
        }
    }
    out[o] = '\0';
}

void db_scrub(const char *conninfo, char *msg, size_t msg_size)
{
    if (!conninfo || !*conninfo || !msg || msg_size == 0) return;
    secret_span spans[MAX_SECRETS];
    size_t n = find_secrets(conninfo, spans);
    if (n == 0) return;
    char redacted[1200];
    db_redact(conninfo, redacted, sizeof(redacted));
    replace_all(msg, msg_size, conninfo, strlen(conninfo), redacted);
    for (size_t i = 0; i < n; i++) {
        char raw[512], decoded[512];
        size_t len = spans[i].len < sizeof(raw) - 1 ? spans[i].len : sizeof(raw) - 1;
        memcpy(raw, conninfo + spans[i].start, len);
        raw[len] = '\0';
        decode_secret(raw, len, spans[i].quoted, decoded, sizeof(decoded));
        replace_all(msg, msg_size, raw, strlen(raw), "***");
        replace_all(msg, msg_size, decoded, strlen(decoded), "***");
    }
}

/* ---- connections ---- */

/* Server messages span lines (ERROR, DETAIL, HINT): one line each for logs and DLQ reasons. */
static void trim_newline(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) s[--n] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n') *p = ' ';
}

/* Every error string leaves this file through here: one line, no password. */
static void finish_error(const db_conn *c, char *err, size_t err_len)
{
    trim_newline(err);
    db_scrub(c->url, err, err_len);
}

/* Server notices ("already exists, skipping") are expected chatter, not output. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    log_debug("db", "%.*s", (int)strcspn(message, "\n"), message);
}

void db_note_failure(db_conn *c, const PGresult *res, const char *what, char *err, size_t err_len)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg) msg = c->pg ? PQerrorMessage(c->pg) : "not connected";
    snprintf(err, err_len, "%s: %s", what, msg);
    finish_error(c, err, err_len);
    classify(c, res);
    if (c->last_error == DB_ERR_CONNECTION) db_conn_drop(c);
}

static bool prepare_all(db_conn *c, char *err, size_t err_len)
{
    for (size_t i = 0; i < c->n_statements; i++) {
        const db_statement *s = &c->statements[i];
        PGresult *r = PQprepare(c->pg, s->name, s->sql, s->n_params, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) db_note_failure(c, r, s->name, err, err_len);
        PQclear(r);
        if (!ok) return false;
    }
    return true;
}

/* A set-up failure is never the data's: a statement that cannot be prepared (42P01 before the
 * migrations) or a hook that trips over a catalog race (23505 on pg_type) is the database's
 * state; a hook that failed without a server error is TRANSIENT too. */
static void setup_failed(db_conn *c, const char *err)
{
    if (c->last_error == DB_ERR_DATA || c->last_error == DB_ERR_NONE) {
        c->last_error = DB_ERR_TRANSIENT;
        c->last_class = "other";
    }
    db_conn_drop(c);
    /* a timeout or a deadlock while preparing is worth retrying at once; a database that cannot
     * be reached or refuses (read-only, no schema, no grant) is not */
    bool lasting = c->last_error == DB_ERR_CONNECTION || c->last_error == DB_ERR_UNAVAILABLE;
    if (c->connect_backoff_ms > 0 && lasting) {
        c->retry_at_ns = time_mono_ns() + (uint64_t)c->connect_backoff_ms * 1000000ull;
        c->setup_kind = c->last_error;
        c->setup_class = c->last_class;
        snprintf(c->setup_state, sizeof(c->setup_state), "%s", c->last_state);
        snprintf(c->setup_error, sizeof(c->setup_error), "%s", err);
    }
}

/* Within the connect backoff: the last set-up failure again, without a new attempt. */
static bool in_backoff(db_conn *c, char *err, size_t err_len)
{
    uint64_t now = time_mono_ns();
    if (c->connect_backoff_ms <= 0 || now >= c->retry_at_ns) return false;
    snprintf(err, err_len, "%s (not retried for %ld ms)", c->setup_error,
             (long)((c->retry_at_ns - now) / 1000000ull) + 1);
    note_kind(c, c->setup_kind, c->setup_class, c->setup_state);
    return true;
}

static bool connect_pg(db_conn *c, char *err, size_t err_len)
{
    char timeout[16], idle[16], interval[16], count[16], user_timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", c->connect_timeout_s);
    snprintf(idle, sizeof(idle), "%d", c->keepalive_idle_s);
    snprintf(interval, sizeof(interval), "%d", c->keepalive_interval_s);
    snprintf(count, sizeof(count), "%d", c->keepalive_count);
    snprintf(user_timeout, sizeof(user_timeout), "%d", c->tcp_user_timeout_ms);
    /* tcp_user_timeout last, and only when set: libpq then stops reading the list there. */
    const char *keys[] = {"dbname",           "application_name", "connect_timeout",
                          "keepalives",       "keepalives_idle",  "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", NULL};
    const char *vals[] = {c->url, c->application_name, timeout, "1", idle, interval,
                          count,  user_timeout,        NULL};
    if (c->tcp_user_timeout_ms <= 0) keys[7] = NULL;
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK) {
        PQsetNoticeProcessor(c->pg, notice_to_log, NULL);
        return true;
    }
    /* libpq may quote the conninfo it could not parse: finish_error() scrubs it */
    snprintf(err, err_len, "connect: %s", c->pg ? PQerrorMessage(c->pg) : "out of memory");
    finish_error(c, err, err_len);
    note_kind(c, DB_ERR_CONNECTION, "connection", "");
    return false;
}

bool db_conn_ensure(db_conn *c, char *err, size_t err_len)
{
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return true;
    db_conn_drop(c);
    if (in_backoff(c, err, err_len)) return false;
    note_success(c);
    /* Fixed text: the number is ours, not input. */
    char sql[96];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", c->statement_timeout_ms);
    /* The hook first: statements may refer to what it creates (a temp table). */
    if (!connect_pg(c, err, err_len) || !db_exec(c, sql, err, err_len) ||
        (c->on_connect && !c->on_connect(c, c->on_connect_ctx, err, err_len)) ||
        !prepare_all(c, err, err_len)) {
        setup_failed(c, err);
        return false;
    }
    c->retry_at_ns = 0;
    note_success(c);
    return true;
}

static PGresult *checked(db_conn *c, PGresult *r, const char *what, char *err, size_t err_len)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        note_success(c);
        return r;
    }
    db_note_failure(c, r, what, err, err_len);
    PQclear(r);
    return NULL;
}

static bool not_connected(db_conn *c, char *err, size_t err_len)
{
    if (c->pg) return false;
    snprintf(err, err_len, "not connected");
    note_kind(c, DB_ERR_CONNECTION, "connection", "");
    return true;
}

bool db_exec(db_conn *c, const char *sql, char *err, size_t err_len)
{
    if (not_connected(c, err, err_len)) return false;
    PGresult *r = checked(c, PQexec(c->pg, sql), "query", err, err_len);
    PQclear(r);
    return r != NULL;
}

PGresult *db_exec_prepared(db_conn *c, const char *name, int n, const char *const *values,
                           char *err, size_t err_len)
{
    if (not_connected(c, err, err_len)) return NULL;
    return checked(c, PQexecPrepared(c->pg, name, n, values, NULL, NULL, 0), name, err, err_len);
}

PGresult *db_exec_params(db_conn *c, const char *sql, int n, const char *const *values, char *err,
                         size_t err_len)
{
    if (not_connected(c, err, err_len)) return NULL;
    return checked(c, PQexecParams(c->pg, sql, n, NULL, values, NULL, NULL, 0), "query", err,
                   err_len);
}

PGresult *db_run_prepared(db_conn *c, const char *name, int n, const char *const *values, char *err,
                          size_t err_len)
{
    PGresult *r = NULL;
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        if (db_conn_ensure(c, err, err_len)) r = db_exec_prepared(c, name, n, values, err, err_len);
        if (!r && db_last_error_kind(c) != DB_ERR_CONNECTION) break;
    }
    return r;
}

/* ---- writability ---- */

/* One round trip. to_regclass() is NULL for a missing table (no error), and the privilege is
 * only asked about a table that exists. */
static const char writable_sql[] =
    "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery(),"
    " to_regclass('public.messages') IS NOT NULL,"
    " CASE WHEN to_regclass('public.messages') IS NULL THEN false"
    " ELSE has_table_privilege(to_regclass('public.messages'), 'INSERT') END,"
    " current_user";

/* A refused write is a property of the session (or of the server it reached): the next probe
 * starts a fresh one, which sees the database's settings as they are then. */
static bool refuse(db_conn *c, const char *class_name, const char *state, char *detail,
                   size_t detail_len, const char *what)
{
    snprintf(detail, detail_len, "%s", what);
    note_kind(c, DB_ERR_UNAVAILABLE, class_name, state);
    db_conn_drop(c);
    return false;
}

bool db_check_writable(db_conn *c, char *detail, size_t detail_len)
{
    char err[512] = "";
    PGresult *r = NULL;
    if (!db_conn_ensure(c, err, sizeof(err)) ||
        !(r = db_exec_params(c, writable_sql, 0, NULL, err, sizeof(err)))) {
        snprintf(detail, detail_len, "%s", err);
        if (db_last_error_kind(c) != DB_ERR_NONE && db_last_error_kind(c) != DB_ERR_CONNECTION)
            db_conn_drop(c);
        return false;
    }
    bool read_only = PQgetvalue(r, 0, 0)[0] == 't', recovery = PQgetvalue(r, 0, 1)[0] == 't';
    bool has_table = PQgetvalue(r, 0, 2)[0] == 't', may_insert = PQgetvalue(r, 0, 3)[0] == 't';
    char what[256];
    snprintf(what, sizeof(what), "role %s may not INSERT into public.messages (grant it)",
             PQgetvalue(r, 0, 4));
    PQclear(r);
    if (recovery)
        return refuse(c, "read_only", "25006", detail, detail_len,
                      "read-only: the server is in recovery (a standby)");
    if (read_only)
        return refuse(c, "read_only", "25006", detail, detail_len,
                      "read-only: transaction_read_only is on (default_transaction_read_only)");
    if (!has_table)
        return refuse(c, "schema", "42P01", detail, detail_len,
                      "schema not ready: table public.messages does not exist (run "
                      "chatflow-consumer --migrate)");
    if (!may_insert) return refuse(c, "permission", "42501", detail, detail_len, what);
    snprintf(detail, detail_len, "writable");
    return true;
}

/* ---- health ---- */

struct db_health {
    char url[1024];
    pthread_mutex_t probe_mu; /* held by the one probe in progress (trylock: no pile-up) */
    db_conn *conn;            /* used under probe_mu only */
    pthread_mutex_t cache_mu; /* the last outcome */
    bool have, ok;
    uint64_t at_ns;
    char detail[512];
};

db_health *db_health_new(const char *url)
{
    db_health *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    snprintf(h->url, sizeof(h->url), "%s", url);
    h->conn = db_conn_new(h->url, HEALTH_STATEMENT_TIMEOUT_MS, "chatflow-consumer-health", NULL, 0,
                          NULL, NULL);
    if (!h->conn) {
        free(h);
        return NULL;
    }
    db_conn_set_connect_timeout(h->conn, HEALTH_CONNECT_TIMEOUT_S);
    pthread_mutex_init(&h->probe_mu, NULL);
    pthread_mutex_init(&h->cache_mu, NULL);
    return h;
}

void db_health_free(db_health *h)
{
    if (!h) return;
    db_conn_free(h->conn);
    pthread_mutex_destroy(&h->probe_mu);
    pthread_mutex_destroy(&h->cache_mu);
    free(h);
}

/* The cached outcome when it is recent enough (or when fresh is false: any outcome). */
static bool cached(db_health *h, bool fresh, bool *ok, char *detail, size_t detail_len)
{
    pthread_mutex_lock(&h->cache_mu);
    bool usable = h->have && (!fresh || time_mono_ns() - h->at_ns < HEALTH_MIN_INTERVAL_NS);
    if (usable) {
        *ok = h->ok;
        snprintf(detail, detail_len, "%s", h->detail);
    }
    pthread_mutex_unlock(&h->cache_mu);
    return usable;
}

bool db_health_check(void *ctx, char *detail, size_t detail_len)
{
    db_health *h = ctx;
    bool ok = false;
    if (cached(h, true, &ok, detail, detail_len)) return ok;
    if (pthread_mutex_trylock(&h->probe_mu) != 0) {
        /* another probe is asking the database right now: do not queue behind it */
        if (!cached(h, false, &ok, detail, detail_len))
            snprintf(detail, detail_len, "first probe of the database in progress");
        return ok;
    }
    if (!cached(h, true, &ok, detail, detail_len)) {
        char d[512];
        ok = db_check_writable(h->conn, d, sizeof(d));
        pthread_mutex_lock(&h->cache_mu);
        h->have = true;
        h->ok = ok;
        h->at_ns = time_mono_ns();
        snprintf(h->detail, sizeof(h->detail), "%s", d);
        pthread_mutex_unlock(&h->cache_mu);
        snprintf(detail, detail_len, "%s", d);
    }
    pthread_mutex_unlock(&h->probe_mu);
    return ok;
}

/* ---- pool ---- */

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t freed; /* CLOCK_MONOTONIC: timed waits ignore wall-clock steps */
    char url[1024];
    char application_name[64];
    size_t size;
    db_conn **conns;
    bool *busy;
};

db_pool *db_pool_new(const char *url, long statement_timeout_ms, const char *application_name,
                     const db_statement *statements, size_t n_statements, size_t size)
{
    db_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    snprintf(p->url, sizeof(p->url), "%s", url);
    snprintf(p->application_name, sizeof(p->application_name), "%s", application_name);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->freed, &attr);
    pthread_condattr_destroy(&attr);
    p->size = size;
    p->conns = calloc(size, sizeof(*p->conns));
    p->busy = calloc(size, sizeof(*p->busy));
    bool ok = p->conns && p->busy;
    for (size_t i = 0; ok && i < size; i++) {
        ok = (p->conns[i] = db_conn_new(p->url, statement_timeout_ms, p->application_name,
                                        statements, n_statements, NULL, NULL)) != NULL;
        if (ok) {
            db_conn_set_connect_timeout(p->conns[i], POOL_CONNECT_TIMEOUT_S);
            db_conn_set_connect_backoff(p->conns[i], POOL_CONNECT_BACKOFF_MS);
        }
    }
    if (!ok) {
        db_pool_free(p);
        return NULL;
    }
    return p;
}

void db_pool_free(db_pool *p)
{
    if (!p) return;
    for (size_t i = 0; p->conns && i < p->size; i++) db_conn_free(p->conns[i]);
    free(p->conns);
    free(p->busy);
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

size_t db_pool_size(const db_pool *p) { return p->size; }

static db_conn *take_free_locked(db_pool *p)
{
    for (size_t i = 0; i < p->size; i++) {
        if (!p->busy[i]) {
            p->busy[i] = true;
            return p->conns[i];
        }
    }
    return NULL;
}

db_conn *db_pool_acquire_timeout(db_pool *p, long timeout_ms)
{
    struct timespec deadline = time_mono_after_ms(timeout_ms);
    pthread_mutex_lock(&p->mu);
    db_conn *c;
    while (!(c = take_free_locked(p)) &&
           pthread_cond_timedwait(&p->freed, &p->mu, &deadline) != ETIMEDOUT)
        ;
    if (!c) c = take_free_locked(p); /* freed just as the wait timed out */
    pthread_mutex_unlock(&p->mu);
    return c;
}

db_conn *db_pool_acquire(db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    db_conn *c;
    while (!(c = take_free_locked(p))) pthread_cond_wait(&p->freed, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return c;
}

void db_pool_release(db_pool *p, db_conn *c)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->size; i++)
        if (p->conns[i] == c) p->busy[i] = false;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

/* ---- gate ---- */

struct db_gate {
    pthread_mutex_t mu;
    unsigned limit, inside;
};

db_gate *db_gate_new(unsigned limit)
{
    db_gate *g = calloc(1, sizeof(*g));
    if (!g) return NULL;
    pthread_mutex_init(&g->mu, NULL);
    g->limit = limit;
    return g;
}

void db_gate_free(db_gate *g)
{
    if (!g) return;
    pthread_mutex_destroy(&g->mu);
    free(g);
}

bool db_gate_try_enter(db_gate *g)
{
    pthread_mutex_lock(&g->mu);
    bool in = g->inside < g->limit;
    if (in) g->inside++;
    pthread_mutex_unlock(&g->mu);
    return in;
}

void db_gate_leave(db_gate *g)
{
    pthread_mutex_lock(&g->mu);
    if (g->inside > 0) g->inside--;
    pthread_mutex_unlock(&g->mu);
}

unsigned db_gate_limit(const db_gate *g) { return g->limit; }

/* ---- migrations ---- */

/* Any constant works; it only has to be the same for every consumer of this database. */
#define MIGRATION_LOCK_KEY "7283120411"

static int is_migration_file(const struct dirent *e)
{
    const char *n = e->d_name;
    size_t len = strlen(n), digits = strspn(n, "0123456789");
    return digits > 0 && n[digits] == '_' && len > 4 && strcmp(n + len - 4, ".sql") == 0;
}

static char *read_file(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(err, err_len, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, err_len, "%s: read error", path);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static bool migration_applied(db_conn *c, const char *version, bool *applied, char *err,
                              size_t err_len)
{
    const char *v[] = {version};
    PGresult *r =
        db_exec_params(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, v, err, err_len);
    if (!r) return false;
    *applied = PQntuples(r) > 0;
    PQclear(r);
    return true;
}

static bool apply_one(db_conn *c, const char *dir, const char *file, bool *newly, char *err,
                      size_t err_len)
{
    char path[1024], version[32];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    size_t digits = strspn(file, "0123456789");
    if (digits >= sizeof(version)) {
        snprintf(err, err_len, "%s: version number too long", file);
        return false;
    }
    memcpy(version, file, digits);
    version[digits] = '\0';

    bool applied = false;
    if (!migration_applied(c, version, &applied, err, err_len)) return false;
    if (applied) return true;
    char *sql = read_file(path, err, err_len);
    if (!sql) return false;
    char qerr[512];
    const char *v[] = {version, file};
    PGresult *r = NULL;
    bool ok =
        db_exec(c, "BEGIN", qerr, sizeof(qerr)) && db_exec(c, sql, qerr, sizeof(qerr)) &&
        (r = db_exec_params(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                            v, qerr, sizeof(qerr))) != NULL &&
        db_exec(c, "COMMIT", qerr, sizeof(qerr));
    PQclear(r);
    free(sql);
    if (!ok) {
        snprintf(err, err_len, "migration %s failed: %s", file, qerr);
        if (c->pg) {
            char ignored[64];
            db_exec(c, "ROLLBACK", ignored, sizeof(ignored));
        }
        return false;
    }
    log_info("db", "applied migration %s", file);
    *newly = true;
    return true;
}

bool db_migrate(const char *url, const char *dir, long statement_timeout_ms, int *applied,
                char *err, size_t err_len)
{
    *applied = 0;
    struct dirent **files = NULL;
    int n = scandir(dir, &files, is_migration_file, alphasort);
    if (n < 0) {
        snprintf(err, err_len, "migrations folder %s: %s", dir, strerror(errno));
        return false;
    }
    db_conn *c =
        db_conn_new(url, statement_timeout_ms, "chatflow-consumer-migrate", NULL, 0, NULL, NULL);
    bool ok = c && db_conn_ensure(c, err, err_len) &&
              db_exec(c, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", err, err_len) &&
              db_exec(c,
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version text PRIMARY KEY, name text NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      err, err_len);
    if (!c) snprintf(err, err_len, "out of memory");
    for (int i = 0; ok && i < n; i++) {
        bool newly = false;
        ok = apply_one(c, dir, files[i]->d_name, &newly, err, err_len);
        if (ok && newly) (*applied)++;
    }
    if (c && c->pg) {
        char ignored[64];
        db_exec(c, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")", ignored, sizeof(ignored));
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    db_conn_free(c);
    return ok;
}
