/* db — libpq connection management, prepared statements and migrations; see db.h. */
#include "db.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct db_conn {
    const char *url;
    long statement_timeout_ms;
    const char *application_name;
    const db_statement *statements;
    size_t n_statements;
    db_on_connect_fn on_connect;
    void *on_connect_ctx;
    PGconn *pg;
    db_error_kind last_error;
};

db_conn *db_conn_new(const char *url, long statement_timeout_ms, const char *application_name,
                     const db_statement *statements, size_t n_statements,
                     db_on_connect_fn on_connect, void *on_connect_ctx)
{
    db_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->url = url;
    c->statement_timeout_ms = statement_timeout_ms;
    c->application_name = application_name;
    c->statements = statements;
    c->n_statements = n_statements;
    c->on_connect = on_connect;
    c->on_connect_ctx = on_connect_ctx;
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
    if (!c)
        return;
    db_conn_drop(c);
    free(c);
}

bool db_conn_is_up(const db_conn *c) { return c->pg && PQstatus(c->pg) == CONNECTION_OK; }
PGconn *db_conn_pg(db_conn *c) { return c->pg; }
db_error_kind db_last_error_kind(const db_conn *c) { return c->last_error; }

/* Server messages span lines (ERROR, DETAIL, HINT): one line each for logs and DLQ reasons. */
static void trim_newline(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

/* Server notices ("already exists, skipping") are expected chatter, not output. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    log_debug("db", "%.*s", (int)strcspn(message, "\n"), message);
}

/* SQLSTATE classes: 08 connection, 57P0x shutdown, 53 resources, 40 rollback (deadlock,
 * serialization), 57014 statement timeout -> worth retrying; everything else is the data's fault. */
static db_error_kind classify(PGconn *pg, const PGresult *res)
{
    if (!pg || PQstatus(pg) != CONNECTION_OK)
        return DB_ERR_CONNECTION;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return DB_ERR_CONNECTION;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return DB_ERR_CONNECTION;
    if (strncmp(state, "53", 2) == 0 || strncmp(state, "40", 2) == 0 ||
        strcmp(state, "57014") == 0 || strncmp(state, "58", 2) == 0)
        return DB_ERR_TRANSIENT;
    if (strncmp(state, "XX", 2) == 0 || strncmp(state, "55", 2) == 0)
        return DB_ERR_TRANSIENT;
    return DB_ERR_DATA;
}

void db_note_failure(db_conn *c, const PGresult *res, const char *what, char *err, size_t err_len)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = c->pg ? PQerrorMessage(c->pg) : "not connected";
    snprintf(err, err_len, "%s: %s", what, msg);
    trim_newline(err);
    c->last_error = classify(c->pg, res);
    if (c->last_error == DB_ERR_CONNECTION)
        db_conn_drop(c);
}

static bool prepare_all(db_conn *c, char *err, size_t err_len)
{
    for (size_t i = 0; i < c->n_statements; i++) {
        const db_statement *s = &c->statements[i];
        PGresult *r = PQprepare(c->pg, s->name, s->sql, s->n_params, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            db_note_failure(c, r, s->name, err, err_len);
        PQclear(r);
        if (!ok)
            return false;
    }
    return true;
}

bool db_conn_ensure(db_conn *c, char *err, size_t err_len)
{
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return true;
    db_conn_drop(c);
    const char *keys[] = {"dbname", "application_name", "connect_timeout", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
    const char *vals[] = {c->url, c->application_name, "5", "1", "10", "5", "3", NULL};
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        snprintf(err, err_len, "connect: %s", c->pg ? PQerrorMessage(c->pg) : "out of memory");
        trim_newline(err);
        c->last_error = DB_ERR_CONNECTION;
        db_conn_drop(c);
        return false;
    }
    PQsetNoticeProcessor(c->pg, notice_to_log, NULL);
    /* Fixed text: the number is ours, not input. */
    char sql[96];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", c->statement_timeout_ms);
    /* The hook first: statements may refer to what it creates (a temp table). */
    if (!db_exec(c, sql, err, err_len) ||
        (c->on_connect && !c->on_connect(c, c->on_connect_ctx, err, err_len)) ||
        !prepare_all(c, err, err_len)) {
        db_conn_drop(c);
        if (c->last_error == DB_ERR_NONE)
            c->last_error = DB_ERR_CONNECTION;
        return false;
    }
    c->last_error = DB_ERR_NONE;
    return true;
}

static PGresult *checked(db_conn *c, PGresult *r, const char *what, char *err, size_t err_len)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        c->last_error = DB_ERR_NONE;
        return r;
    }
    db_note_failure(c, r, what, err, err_len);
    PQclear(r);
    return NULL;
}

bool db_exec(db_conn *c, const char *sql, char *err, size_t err_len)
{
    if (!c->pg) {
        snprintf(err, err_len, "not connected");
        c->last_error = DB_ERR_CONNECTION;
        return false;
    }
    PGresult *r = checked(c, PQexec(c->pg, sql), "query", err, err_len);
    PQclear(r);
    return r != NULL;
}

PGresult *db_exec_prepared(db_conn *c, const char *name, int n, const char *const *values,
                           char *err, size_t err_len)
{
    if (!c->pg) {
        snprintf(err, err_len, "not connected");
        c->last_error = DB_ERR_CONNECTION;
        return NULL;
    }
    return checked(c, PQexecPrepared(c->pg, name, n, values, NULL, NULL, 0), name, err, err_len);
}

PGresult *db_exec_params(db_conn *c, const char *sql, int n, const char *const *values,
                         char *err, size_t err_len)
{
    if (!c->pg) {
        snprintf(err, err_len, "not connected");
        c->last_error = DB_ERR_CONNECTION;
        return NULL;
    }
    return checked(c, PQexecParams(c->pg, sql, n, NULL, values, NULL, NULL, 0), "query", err, err_len);
}

PGresult *db_run_prepared(db_conn *c, const char *name, int n, const char *const *values,
                          char *err, size_t err_len)
{
    PGresult *r = NULL;
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        if (db_conn_ensure(c, err, err_len))
            r = db_exec_prepared(c, name, n, values, err, err_len);
        if (!r && db_last_error_kind(c) != DB_ERR_CONNECTION)
            break;
    }
    return r;
}

/* ---- pool ---- */

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t freed;
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
    if (!p)
        return NULL;
    snprintf(p->url, sizeof(p->url), "%s", url);
    snprintf(p->application_name, sizeof(p->application_name), "%s", application_name);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->freed, NULL);
    p->size = size;
    p->conns = calloc(size, sizeof(*p->conns));
    p->busy = calloc(size, sizeof(*p->busy));
    bool ok = p->conns && p->busy;
    for (size_t i = 0; ok && i < size; i++)
        ok = (p->conns[i] = db_conn_new(p->url, statement_timeout_ms, p->application_name, statements,
                                        n_statements, NULL, NULL)) != NULL;
    if (!ok) {
        db_pool_free(p);
        return NULL;
    }
    return p;
}

void db_pool_free(db_pool *p)
{
    if (!p)
        return;
    for (size_t i = 0; p->conns && i < p->size; i++)
        db_conn_free(p->conns[i]);
    free(p->conns);
    free(p->busy);
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

db_conn *db_pool_acquire(db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (size_t i = 0; i < p->size; i++) {
            if (!p->busy[i]) {
                p->busy[i] = true;
                pthread_mutex_unlock(&p->mu);
                return p->conns[i];
            }
        }
        pthread_cond_wait(&p->freed, &p->mu);
    }
}

void db_pool_release(db_pool *p, db_conn *c)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->size; i++)
        if (p->conns[i] == c)
            p->busy[i] = false;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

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
        if (got == 0)
            break;
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

static bool migration_applied(db_conn *c, const char *version, bool *applied, char *err, size_t err_len)
{
    const char *v[] = {version};
    PGresult *r = db_exec_params(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, v,
                                 err, err_len);
    if (!r)
        return false;
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
    if (!migration_applied(c, version, &applied, err, err_len))
        return false;
    if (applied)
        return true;
    char *sql = read_file(path, err, err_len);
    if (!sql)
        return false;
    char qerr[512];
    const char *v[] = {version, file};
    PGresult *r = NULL;
    bool ok = db_exec(c, "BEGIN", qerr, sizeof(qerr)) && db_exec(c, sql, qerr, sizeof(qerr)) &&
              (r = db_exec_params(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                  2, v, qerr, sizeof(qerr))) != NULL &&
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
    db_conn *c = db_conn_new(url, statement_timeout_ms, "chatflow-consumer-migrate", NULL, 0, NULL, NULL);
    bool ok = c && db_conn_ensure(c, err, err_len) &&
              db_exec(c, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", err, err_len) &&
              db_exec(c,
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version text PRIMARY KEY, name text NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      err, err_len);
    if (!c)
        snprintf(err, err_len, "out of memory");
    for (int i = 0; ok && i < n; i++) {
        bool newly = false;
        ok = apply_one(c, dir, files[i]->d_name, &newly, err, err_len);
        if (ok && newly)
            (*applied)++;
    }
    if (c && c->pg) {
        char ignored[64];
        db_exec(c, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")", ignored, sizeof(ignored));
    }
    for (int i = 0; i < n; i++)
        free(files[i]);
    free(files);
    db_conn_free(c);
    return ok;
}
