/*
 * tl_pg — PostgreSQL for the integration tests (libpq): connect, run, read one number, wait for
 * one. Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_pg_connect() takes a URL or keyword string, waits at most 5 s, silences notices, and
 *    returns NULL (with a "#" note) when it cannot connect.
 *  - tl_pg_scalar() returns the first column of the first row as a number, -1 on an error or
 *    NULL; tl_pg_exec() is true when the statement succeeded. Failures are noted, not counted.
 *  - tl_pg_url_for() writes a keyword connection string for database db on url's server.
 *  - tl_pg_wait_scalar() polls every 100 ms until the value is want or timeout_ms passes and
 *    returns the last value read.
 */
#ifndef CHATFLOW_TL_PG_H
#define CHATFLOW_TL_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

PGconn *tl_pg_connect(const char *url);
long long tl_pg_scalar(PGconn *c, const char *sql);
bool tl_pg_exec(PGconn *c, const char *sql);
bool tl_pg_url_for(const char *url, const char *db, char *out, size_t len);
long long tl_pg_wait_scalar(PGconn *c, const char *sql, long long want, int timeout_ms);

#endif
