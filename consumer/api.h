/*
 * api — the consumer's /api/metrics endpoints (SPEC §6) on the admin HTTP server.
 *
 * Contract:
 *  - GET /api/metrics/all?testStartTime=&testEndTime=[&userId=][&roomId=]
 *      times: ISO-8601 instants with a zone, or epoch milliseconds; start <= end; userId 1..100000;
 *      roomId a positive integer. Anything missing, malformed or inverted -> 400 {"error": "..."}
 *      naming the parameter. Without roomId/userId, the busiest room / most active user of the
 *      window is used (and reported).
 *      Answer: {"window", "coreQueries": {roomMessages, userHistory, activeUsers, userRooms} each
 *      {executionTimeMs, resultCount, sampleData (<= 10 rows)}, "analytics": {messagesPerSecond
 *      {avg, peak}, topUsers, topRooms, userParticipation, viewsRefreshedAt}, "dbStats"}.
 *      Core queries read the tables; analytics read the materialized views (as of the last refresh).
 *  - GET /api/metrics/db-stats: row counts, table and index sizes.
 *  - POST /api/metrics/refresh: REFRESH MATERIALIZED VIEW CONCURRENTLY of every view.
 *  - Handlers run on the HTTP server's threads; they share a small pool of PostgreSQL connections
 *    of their own (never the writer's), reconnecting as needed; 503 when PostgreSQL is down.
 *    Every value from the request is bound as a parameter.
 */
#ifndef CHATFLOW_CONSUMER_API_H
#define CHATFLOW_CONSUMER_API_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"

typedef struct api api;

api *api_new(const char *database_url, long statement_timeout_ms);
void api_add_routes(api *a, admin_http *h);
void api_free(api *a);

/* SQL text of a core query ("room_messages", "user_history", "active_users", "user_rooms"), NULL
 * for another name. For tests that EXPLAIN exactly what the endpoint runs. */
const char *api_query_sql(const char *name);

/* Parses a time parameter (ISO-8601 with zone, or epoch ms). Exposed for unit tests. */
bool api_parse_time(const char *s, int64_t *epoch_ms);

#endif
