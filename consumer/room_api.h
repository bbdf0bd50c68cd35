/*
 * room_api — the consumer's per-room HTTP API for chat clients (docs/protocol.md §3), on the admin
 * HTTP server:
 *    GET /api/rooms/{roomId}/presence[?recent=N]
 *    GET /api/rooms/{roomId}/messages[?before=<seq>][&limit=N][&userId=<id>]
 *    GET /api/rooms/{roomId}/search?q=<text>[&limit=N][&offset=K]
 *
 * Contract:
 *  - presence: who is online now plus up to `recent` (default 20, 0-100) users who are not
 *    online, newest activity first (user_activity). Online is this node's members (presence.h,
 *    "scope": "node"), or with cluster presence every node's (presence_cluster.h, "scope":
 *    "cluster"); when Redis does not answer, this node's with "clusterError". When PostgreSQL
 *    does not answer, the online list is still served, with "recentlySeen": null and the error.
 *  - messages: the newest `limit` (default 20, 1-100) messages below `before` (all when absent),
 *    oldest first, from the in-memory recent cache (recent.h) and, below what it covers, from
 *    PostgreSQL (history.h, index range scan). "hasMore" tells whether older ones exist,
 *    "nextBefore" is the sequence number to page on with, "source" where the page came from.
 *    "readPositions" lists the room's stored read positions (up to 100), "readPosition" that of
 *    userId when given (else null). A page the cache holds is served even while PostgreSQL is
 *    down (then "readPositions" and "readPosition" are null and "readPositionsError" says why);
 *    a page that needs PostgreSQL when it does not answer in time is a 503.
 *  - search: GET /api/rooms/{roomId}/search?q=<text>[&limit=N][&offset=K] — the room's stored
 *    messages whose text contains q (case-insensitive; q 3-200 characters), best match first
 *    (pg_trgm word_similarity, "score" 0-1 on each result), then newest; `limit` (default 20,
 *    1-100) after skipping `offset` (0-ROOM_API_SEARCH_OFFSET_MAX); "hasMore" and "nextOffset"
 *    page on. Always from PostgreSQL (history.h, the trigram index of migration 0006); a bad q,
 *    limit or offset -> 400 naming it.
 *  - {roomId} is any room id (room.h: 1-64 characters of [A-Za-z0-9_-]); every valid id is served
 *    (a room nobody is in and nothing was said in answers empty lists). An invalid one -> 400
 *    {"error":"roomId: must be 1-64 characters of A-Z a-z 0-9 _ -"}; another bad parameter ->
 *    400 naming it; an unknown sub-path -> 404.
 *  - Every answer carries Access-Control-Allow-Origin: allow_origin (when not empty), so the chat
 *    page served by the producer can read it.
 *  - Database failures (down, busy, locked, timed out) answer 503 {"error": "..."} with
 *    Retry-After: ROOM_API_RETRY_AFTER_S, never 500, and never after an unbounded wait: before
 *    any database work a handler enters cfg.gate (db.h; NULL: a gate of its own with
 *    ROOM_API_DB_THREADS_DEFAULT places) and is answered 503 at once when it is full; inside,
 *    history.h bounds the wait for a connection and the statement.
 *  - Identity (cfg.auth set, CHATFLOW_AUTH on): every request needs a token (auth.h), from
 *    "Authorization: Bearer" or ?access_token=, checked before anything else but the path:
 *    none or an invalid one -> 401, one that does not allow the room -> 403, with
 *    {"error": the reason} (the jwt reason, e.g. "token expired"). With cfg.anonymous_read
 *    a request that carries no token at all is answered (a bad or expired one is still 401).
 *    OPTIONS on the same paths answers a CORS preflight (204) for a listed origin, so a page
 *    may send its token in an Authorization header.
 *  - Handlers run on the HTTP server's threads; everything they touch is thread-safe.
 */
#ifndef CHATFLOW_CONSUMER_ROOM_API_H
#define CHATFLOW_CONSUMER_ROOM_API_H

#include "auth.h"
#include "db.h"
#include "history.h"
#include "http.h"
#include "presence.h"
#include "presence_cluster.h"
#include "recent.h"

#define ROOM_API_LIMIT_DEFAULT 20
#define ROOM_API_LIMIT_MAX 100
#define ROOM_API_RECENT_DEFAULT 20
#define ROOM_API_READ_POSITIONS_MAX 100
#define ROOM_API_RETRY_AFTER_S 2
#define ROOM_API_SEARCH_OFFSET_MAX 1000 /* deeper pages: narrow the query instead */
/* With api.c's API_DB_THREADS_DEFAULT (1): 3 admin threads at most in database work, below the
 * default CHATFLOW_ADMIN_THREADS (4). */
#define ROOM_API_DB_THREADS_DEFAULT 2

typedef struct {
    presence *presence;
    presence_cluster *pcluster; /* with the bus: the online list is the cluster's (else NULL) */
    recent_cache *recent;
    history *history;
    /* CHATFLOW_API_ALLOW_ORIGIN, read at creation: "*", or a comma-separated list of origins
     * (at most 8) whose pages may read the answers (the request's Origin is echoed when listed,
     * with Vary: Origin); "" = none. */
    const char *allow_origin;
    db_gate *gate;       /* shared with api.h (api_set_gate); NULL: a gate of its own */
    const auth *auth;    /* NULL: no identity tokens (CHATFLOW_AUTH off); borrowed */
    bool anonymous_read; /* with auth: a request without any token is answered too */
} room_api_config;

typedef struct room_api room_api;

room_api *room_api_new(const room_api_config *cfg);
void room_api_add_routes(room_api *a, admin_http *h);
void room_api_free(room_api *a);

#endif
