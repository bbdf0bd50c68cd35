/*
 * db — the consumer's PostgreSQL connections (libpq), its migration runner, the admin server's
 * bounds on database work, and the readiness probe of the database.
 *
 * Contract:
 *  - A db_conn belongs to one thread at a time (libpq connections are not shared). It is created
 *    unconnected; db_conn_ensure() (re)connects when there is no healthy connection, sets
 *    statement_timeout, runs the on_connect hook (e.g. creating a temp table) and prepares the
 *    statements given at creation. Every caller does db_conn_ensure() before work, so a lost
 *    connection is replaced on the next use, by itself.
 *  - Queries with values always bind them as parameters (db_exec_prepared / db_exec_params);
 *    db_exec() is only for fixed SQL text.
 *  - On failure, err gets the server's message (never the password of the URL: see db_redact)
 *    and db_last_error_kind() tells the caller whose fault it is:
 *      DATA         the row's own fault: SQLSTATE class 22 (data exception) or 23 (integrity
 *                   constraint violation). The same row fails again every time: dead-letter it.
 *      CONNECTION   no connection, or it was lost (class 08, 57P0x): it is dropped; reconnect.
 *      UNAVAILABLE  the database answers but refuses this work until someone (an operator, a
 *                   failover, a migration) changes it: read-only (25006), schema not there
 *                   (42P01 and the other undefined-object states, 3F000), missing privilege
 *                   (42501, class 28), out of resources (class 53: disk full, memory, too
 *                   many connections) or a system fault (class 58).
 *      TRANSIENT    every other SQLSTATE: timeouts (57014), deadlocks and serialization failures
 *                   (class 40), lock waits (55P03), internal errors, and our own bugs (42601).
 *    Only DATA is the row's: everything else is the database's and must never dead-letter a
 *    message. A failure while setting a connection up (statement_timeout, the on_connect hook,
 *    preparing statements) is never DATA, whatever its SQLSTATE.
 *    db_last_error_class() names the fault for metric labels, from a fixed low-cardinality set:
 *    none, connection, read_only, schema, permission, resources, timeout, conflict, data, other.
 *  - db_check_writable() asks the database, in one round trip, whether writes would go in now
 *    (not read-only, not a standby, public.messages there and insertable by this role).
 *    db_health wraps it as the /health/ready "postgres" check: a connection of its own, at most
 *    one probe at a time (others get the cached answer), at most one probe per second, each
 *    bounded by a 2 s connect timeout and a 1 s statement timeout.
 *  - db_redact() and db_scrub() keep passwords out of messages: every log line or error string
 *    that could contain the URL, a conninfo string or a libpq connection message goes through
 *    them.
 *  - db_pool hands connections to handlers that run on many threads (the HTTP API, the replay
 *    worker); db_pool_acquire_timeout() waits a bounded time. db_gate bounds how many admin HTTP
 *    threads may be in database work at once (docs/consumer.md "HTTP API isolation").
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

/* Values are stable: DB_ERR_UNAVAILABLE was added last. */
typedef enum {
    DB_ERR_NONE = 0,
    DB_ERR_CONNECTION,
    DB_ERR_TRANSIENT,
    DB_ERR_DATA,
    DB_ERR_UNAVAILABLE,
} db_error_kind;

/* "none", "connection", "transient", "data", "unavailable". */
const char *db_error_kind_name(db_error_kind kind);
/* Classification of a server SQLSTATE (5 characters; NULL or "" means no SQLSTATE: a lost
 * connection). *class_name (when not NULL) gets the metric label. Pure: for unit tests too. */
db_error_kind db_classify_sqlstate(const char *sqlstate, const char **class_name);

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
/* Label of the last failure for a metric "by class" (see the contract); "none" after a success. */
const char *db_last_error_class(const db_conn *c);
/* SQLSTATE of the last failure, "" when there was none (or no server answer). */
const char *db_last_sqlstate(const db_conn *c);
/* libpq connect_timeout in seconds (default 5; libpq treats values below 2 as 2). */
void db_conn_set_connect_timeout(db_conn *c, int seconds);
/* TCP keepalives (libpq keepalives_idle/interval/count, default 10 s / 5 s / 3) and
 * tcp_user_timeout in ms (0, the default: the kernel's). Applied at the next connect. */
void db_conn_set_keepalives(db_conn *c, int idle_s, int interval_s, int count,
                            int tcp_user_timeout_ms);
/* After a failed connection attempt, db_conn_ensure() fails at once for backoff_ms with the
 * same error (marked "not retried for ... ms") instead of trying again: callers that serve
 * requests fail fast while the database is down. 0 (the default) tries every time. */
void db_conn_set_connect_backoff(db_conn *c, long backoff_ms);

/* Fixed SQL (no values from outside). */
bool db_exec(db_conn *c, const char *sql, char *err, size_t err_len);
/* Returns a result with PGRES_COMMAND_OK or PGRES_TUPLES_OK (caller PQclear()s), or NULL. */
PGresult *db_exec_prepared(db_conn *c, const char *name, int n, const char *const *values,
                           char *err, size_t err_len);
PGresult *db_exec_params(db_conn *c, const char *sql, int n, const char *const *values, char *err,
                         size_t err_len);
/* Records the outcome of a libpq call made directly on db_conn_pg() (e.g. COPY). */
void db_note_failure(db_conn *c, const PGresult *res, const char *what, char *err, size_t err_len);

/* db_conn_ensure() then db_exec_prepared(), tried once more on a fresh connection when the first
 * attempt found the connection dead (e.g. after a database restart). */
PGresult *db_run_prepared(db_conn *c, const char *name, int n, const char *const *values, char *err,
                          size_t err_len);

/* Connects if needed, then in one round trip checks that writes would go in: the session is not
 * read-only, the server is not in recovery, public.messages exists and this role may INSERT into
 * it. false with detail naming the first condition that failed (and last error kind/class set:
 * UNAVAILABLE with read_only / schema / permission, or the query's own failure); true with detail
 * "writable". */
bool db_check_writable(db_conn *c, char *detail, size_t detail_len);

/* db_health — the readiness check of the database (a health_check_fn, common/http.h). */
typedef struct db_health db_health;

/* url is copied. NULL on OOM. */
db_health *db_health_new(const char *url);
/* ctx: a db_health. Thread-safe and bounded: see the contract. */
bool db_health_check(void *ctx, char *detail, size_t detail_len);
void db_health_free(db_health *h);

/*
 * Redaction. A password can sit in a URI's user info (postgresql://user:secret@host/db), in its
 * query (?password=secret) or in a keyword conninfo (password=secret, password='se cret').
 * db_redact() writes conninfo with every password value replaced by "***" (always
 * NUL-terminated, truncated to out_len). db_scrub() rewrites msg in place (msg_size is its buffer
 * size): every occurrence of the password(s) of conninfo — as written and percent-decoded — and
 * of conninfo itself becomes "***" / its redacted form. Use it on libpq connection messages,
 * which may quote parts of the conninfo.
 */
void db_redact(const char *conninfo, char *out, size_t out_len);
void db_scrub(const char *conninfo, char *msg, size_t msg_size);

/*
 * db_pool — a few connections with the same prepared statements, for handlers that run on many
 * threads (the HTTP API, the replay worker). db_pool_acquire_timeout() hands out a free
 * connection, waiting at most timeout_ms for one when all are busy (NULL then); the caller owns
 * it until db_pool_release(). Pool connections connect with a 2 s timeout and, after a failed
 * attempt, fail fast for 1 s (db_conn_set_connect_backoff) so that requests do not queue up
 * behind a database that is down.
 */
typedef struct db_pool db_pool;

/* url and application_name are copied; statements must be static data. NULL on OOM. */
db_pool *db_pool_new(const char *url, long statement_timeout_ms, const char *application_name,
                     const db_statement *statements, size_t n_statements, size_t size);
void db_pool_free(db_pool *p);
/* Waits without bound: only for callers that are not request handlers (none today). */
db_conn *db_pool_acquire(db_pool *p);
db_conn *db_pool_acquire_timeout(db_pool *p, long timeout_ms);
void db_pool_release(db_pool *p, db_conn *c);
size_t db_pool_size(const db_pool *p);

/*
 * db_gate — at most `limit` threads inside at once; db_gate_try_enter() never waits (false when
 * full). The admin HTTP server's handlers enter one before any database work, so that at most
 * `limit` of its threads can be blocked on PostgreSQL (holding a pool connection or waiting for
 * one) and the rest stay free for /health/... and /metrics: limit must be below the server's
 * thread count. Thread-safe.
 */
typedef struct db_gate db_gate;

db_gate *db_gate_new(unsigned limit);
void db_gate_free(db_gate *g);
bool db_gate_try_enter(db_gate *g);
void db_gate_leave(db_gate *g);
unsigned db_gate_limit(const db_gate *g);

/* *applied: migrations applied by this call. */
bool db_migrate(const char *url, const char *dir, long statement_timeout_ms, int *applied,
                char *err, size_t err_len);

#endif
