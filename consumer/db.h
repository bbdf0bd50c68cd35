/*
 * db — the consumer's PostgreSQL connections (libpq) and its migration runner.
 *
 * Contract:
 *  - A db_conn belongs to one thread at a time (libpq connections are not shared). It is created
 *    unconnected; db_conn_ensure() (re)connects when there is no healthy connection, sets
 *    statement_timeout, prepares the statements given at creation and runs the on_connect hook
 *    (e.g. creating a temp table). Every caller does db_conn_ensure() before work, so a lost
 *    connection is replaced on the next use, by itself.
 *  - Queries with values always bind them as parameters (db_exec_prepared / db_exec_params);
 *    db_exec() is only for fixed SQL text.
 *  - On failure, err gets the server's message and db_last_error_kind() tells the caller how to
 *    react: CONNECTION (the connection is dropped; reconnect later), TRANSIENT (retry: timeout,
 *    deadlock, shutting down), DATA (these rows will never go in as they are).
 *  - db_migrate() applies db/migrations/NNNN_name.sql files not yet in schema_migrations, in
 *    version order, each in its own transaction, under an advisory lock (two consumers starting
 *    together do not race). Running it again applies nothing.
 */
#ifndef CHATFLOW_CONSUMER_DB_H
#define CHATFLOW_CONSUMER_DB_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

typedef struct {
    const char *name;
    const char *sql;
    int n_params;
} db_statement;

typedef enum { DB_ERR_NONE = 0, DB_ERR_CONNECTION, DB_ERR_TRANSIENT, DB_ERR_DATA } db_error_kind;

typedef struct db_conn db_conn;
typedef bool (*db_on_connect_fn)(db_conn *c, void *ctx, char *err, size_t err_len);

/* url and statements are copied by reference: they must outlive the connection (static data). */
db_conn *db_conn_new(const char *url, long statement_timeout_ms, const char *application_name,
                     const db_statement *statements, size_t n_statements,
                     db_on_connect_fn on_connect, void *on_connect_ctx);
void db_conn_free(db_conn *c);

bool db_conn_ensure(db_conn *c, char *err, size_t err_len);
bool db_conn_is_up(const db_conn *c);
/* Drops the connection; the next db_conn_ensure() reconnects. */
void db_conn_drop(db_conn *c);
PGconn *db_conn_pg(db_conn *c);
db_error_kind db_last_error_kind(const db_conn *c);

/* Fixed SQL (no values from outside). */
bool db_exec(db_conn *c, const char *sql, char *err, size_t err_len);
/* Returns a result with PGRES_COMMAND_OK or PGRES_TUPLES_OK (caller PQclear()s), or NULL. */
PGresult *db_exec_prepared(db_conn *c, const char *name, int n, const char *const *values,
                           char *err, size_t err_len);
PGresult *db_exec_params(db_conn *c, const char *sql, int n, const char *const *values,
                         char *err, size_t err_len);
/* Records the outcome of a libpq call made directly on db_conn_pg() (e.g. COPY). */
void db_note_failure(db_conn *c, const PGresult *res, const char *what, char *err, size_t err_len);

/* db_conn_ensure() then db_exec_prepared(), tried once more on a fresh connection when the first
 * attempt found the connection dead (e.g. after a database restart). */
PGresult *db_run_prepared(db_conn *c, const char *name, int n, const char *const *values,
                          char *err, size_t err_len);

/*
 * db_pool — a few connections with the same prepared statements, for handlers that run on many
 * threads (the HTTP API, the replay worker). db_pool_acquire() hands out a free connection,
 * waiting for one when all are busy; the caller owns it until db_pool_release().
 */
typedef struct db_pool db_pool;

/* url and application_name are copied; statements must be static data. NULL on OOM. */
db_pool *db_pool_new(const char *url, long statement_timeout_ms, const char *application_name,
                     const db_statement *statements, size_t n_statements, size_t size);
void db_pool_free(db_pool *p);
db_conn *db_pool_acquire(db_pool *p);
void db_pool_release(db_pool *p, db_conn *c);

/* *applied: migrations applied by this call. */
bool db_migrate(const char *url, const char *dir, long statement_timeout_ms, int *applied,
                char *err, size_t err_len);

#endif
