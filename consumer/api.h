/*
 * api — the consumer's /api/metrics endpoints (protocol.md §5) on the admin HTTP server.
 *
 * Contract:
 *  - GET /api/metrics/all?testStartTime=&testEndTime=[&userId=][&roomId=]
 *      times: ISO-8601 instants with a zone, or epoch milliseconds; start <= end; userId 1..100000;
 *      roomId a room id (room.h: 1-64 characters of [A-Za-z0-9_-]). Anything missing, malformed
 *      or inverted -> 400 {"error": "..."} naming the parameter. Without roomId/userId, the
 *      busiest room / most active user of the window is used (and reported; roomId null when the
 *      window has no messages).
 *      Answer: {"window", "coreQueries": {roomMessages, userHistory, activeUsers, userRooms} each
 *      {executionTimeMs, resultCount, sampleData (<= 10 rows)}, "analytics": {messagesPerSecond
 *      {avg, peak}, topUsers, topRooms, userParticipation, viewsRefreshedAt}, "dbStats"}.
 *      Core queries read the tables; analytics read the materialized views (as of the last
 *      refresh). Room ids are JSON strings everywhere in the answer (room_id is text), user ids
 *      and counts JSON numbers.
 *  - GET /api/metrics/db-stats: row counts, table and index sizes.
 *  - POST /api/metrics/refresh: REFRESH MATERIALIZED VIEW CONCURRENTLY of every view.
 *  - Handlers run on the HTTP server's threads; they share a small pool of PostgreSQL connections
 *    of their own (never the writer's), reconnecting as needed. Every value from the request is
 *    bound as a parameter.
 *  - Bounded: before any database work a handler enters the gate (api_set_gate; by default one
 *    of its own with API_DB_THREADS_DEFAULT places) or is answered 503 at once; it waits at most
 *    500 ms for a connection; statements run under statement_timeout_ms capped at
 *    API_STATEMENT_TIMEOUT_MAX_MS (0 means the cap; refresh sets its own, longer one). Every
 *    database fault but a DATA one (db.h) answers 503 {"error"} with Retry-After: 2; a DATA
 *    fault (a bug in a query) is a 500.
 */
#ifndef CHATFLOW_CONSUMER_API_H
#define CHATFLOW_CONSUMER_API_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "http.h"

#define API_STATEMENT_TIMEOUT_MAX_MS 5000L
#define API_DB_THREADS_DEFAULT 1

typedef struct api api;

api *api_new(const char *database_url, long statement_timeout_ms);
/* Shares g (e.g. with room_api_config.gate) instead of the api's own gate; g outlives a. */
void api_set_gate(api *a, db_gate *g);
void api_add_routes(api *a, admin_http *h);
void api_free(api *a);

/* SQL text of a core query ("room_messages", "user_history", "active_users", "user_rooms"), NULL
 * for another name. For tests that EXPLAIN exactly what the endpoint runs. */
const char *api_query_sql(const char *name);

/* Parses a time parameter (ISO-8601 with zone, or epoch ms). Exposed for unit tests. */
bool api_parse_time(const char *s, int64_t *epoch_ms);

#endif
