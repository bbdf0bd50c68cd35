/* tl_pg — see tl_pg.h. */
#include "tl_pg.h"

#include <stdio.h>
#include <stdlib.h>

#include "timeutil.h"
#include "tl_proc.h"

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *tl_pg_connect(const char *url)
{
    const char *k[] = {"dbname", "connect_timeout", NULL};
    const char *v[] = {url, "5", NULL};
    PGconn *c = PQconnectdbParams(k, v, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        tl_note("connect %s: %s", url, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    return c;
}

long long tl_pg_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        tl_note("query failed: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return v;
}

bool tl_pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) tl_note("exec failed: %.200s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

bool tl_pg_url_for(const char *url, const char *db, char *out, size_t len)
{
    PGconn *c = tl_pg_connect(url);
    if (!c) return false;
    snprintf(out, len, "host=%s port=%s user=%s dbname=%s", PQhost(c), PQport(c), PQuser(c), db);
    PQfinish(c);
    return true;
}

long long tl_pg_wait_scalar(PGconn *c, const char *sql, long long want, int timeout_ms)
{
    long long v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        v = tl_pg_scalar(c, sql);
        if (v == want) break;
        time_sleep_ms(100);
    }
    return v;
}
