/* room_api — GET /api/rooms/{id}/presence and /messages; see room_api.h. */
#include "room_api.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "room.h"

#define COMPONENT "room-api"

#define ALLOWED_ORIGINS_MAX 8

struct room_api {
    room_api_config cfg;
    /* CHATFLOW_API_ALLOW_ORIGIN: "*" (any page), or the origins allowed to read answers. */
    bool any_origin;
    size_t n_origins;
    char origins[ALLOWED_ORIGINS_MAX][128];
    db_gate *own_gate; /* when cfg.gate was NULL */
};

/* Splits the comma-separated list (blanks around entries ignored); entries past the maximum or
 * too long to hold are left out, with a log line. */
static void read_allowed_origins(room_api *a, const char *list)
{
    a->any_origin = list && strcmp(list, "*") == 0;
    for (const char *p = list; p && *p && !a->any_origin;) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, ",");
        size_t len = n;
        while (len > 0 && p[len - 1] == ' ') len--;
        if (len > 0 && (a->n_origins == ALLOWED_ORIGINS_MAX || len >= sizeof a->origins[0]))
            log_warn(COMPONENT,
                     "CHATFLOW_API_ALLOW_ORIGIN: '%.*s' left out (at most %d origins "
                     "of at most %zu characters)",
                     (int)len, p, ALLOWED_ORIGINS_MAX, sizeof a->origins[0] - 1);
        else if (len > 0)
            snprintf(a->origins[a->n_origins++], sizeof a->origins[0], "%.*s", (int)len, p);
        p += n;
    }
}

/* The Access-Control-Allow-Origin for this request: "*", the request's own Origin when it is on
 * the list (a browser compares it exactly), or NULL — then a page of another origin cannot read
 * the answer. */
static const char *allowed_origin(const room_api *a, const http_request *req)
{
    if (a->any_origin) return "*";
    const char *origin = http_request_header(req, "Origin");
    for (size_t i = 0; origin && i < a->n_origins; i++)
        if (strcmp(origin, a->origins[i]) == 0) return a->origins[i];
    return NULL;
}

room_api *room_api_new(const room_api_config *cfg)
{
    room_api *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    a->cfg = *cfg;
    read_allowed_origins(a, cfg->allow_origin);
    a->cfg.allow_origin = NULL; /* not kept: read into origins */
    if (!a->cfg.gate && !(a->cfg.gate = a->own_gate = db_gate_new(ROOM_API_DB_THREADS_DEFAULT))) {
        free(a);
        return NULL;
    }
    return a;
}

void room_api_free(room_api *a)
{
    if (!a) return;
    db_gate_free(a->own_gate);
    free(a);
}

/* ---- database admission ---- */

/* A handler's turn at the database: at most cfg.gate's limit of admin threads are in database
 * work at once, so a slow or locked database never takes the threads /health/... needs. */
typedef struct {
    room_api *a;
    bool entered, refused;
} db_turn;

static bool turn_enter(db_turn *t, char *err, size_t err_len)
{
    if (t->entered) return true;
    if (t->refused || !db_gate_try_enter(t->a->cfg.gate)) {
        t->refused = true;
        snprintf(err, err_len, "database busy: %u requests already wait on it",
                 db_gate_limit(t->a->cfg.gate));
        return false;
    }
    t->entered = true;
    return true;
}

static void turn_leave(db_turn *t)
{
    if (t->entered) db_gate_leave(t->a->cfg.gate);
    t->entered = false;
}

/* ---- parameters ---- */

static bool parse_count(const char *s, long lo, long hi, long *out)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 6 || strspn(s, "0123456789") != n) return false;
    long v = strtol(s, NULL, 10);
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
}

typedef enum { ROOM_PRESENCE, ROOM_MESSAGES, ROOM_SEARCH } room_resource;

/* "/api/rooms/{room}/presence|messages" -> room (a copy of the id) and what; false with resp set
 * to a 404 for another path, a 400 for an id that is not one. */
static bool parse_path(const char *path, char room[ROOM_ID_BUF], room_resource *what,
                       http_response *resp)
{
    static const char prefix[] = "/api/rooms/";
    const char *id = path + strlen(prefix);
    const char *rest = strchr(id, '/');
    if (!rest || (strcmp(rest, "/presence") != 0 && strcmp(rest, "/messages") != 0 &&
                  strcmp(rest, "/search") != 0)) {
        http_respond_error(resp, 404,
                           "no such path: use /api/rooms/{roomId}/presence, "
                           "/api/rooms/{roomId}/messages or /api/rooms/{roomId}/search");
        return false;
    }
    char err[128];
    size_t len = (size_t)(rest - id);
    if (!room_id_check(id, len, err, sizeof(err))) {
        http_respond_error(resp, 400, err);
        return false;
    }
    memcpy(room, id, len);
    room[len] = '\0';
    *what = strcmp(rest, "/presence") == 0   ? ROOM_PRESENCE
            : strcmp(rest, "/messages") == 0 ? ROOM_MESSAGES
                                             : ROOM_SEARCH;
    return true;
}

static void respond(http_response *resp, json_t *o)
{
    resp->body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!resp->body)
        http_respond_error(resp, 500, "cannot build the answer");
    else
        resp->status = 200;
}

/* What a chat client is told: the kind of failure ("database busy", "database unavailable
 * (timeout)"), not the server's message, which names hosts, ports and databases (logged). */
static const char *public_reason(const char *err, char *out, size_t out_len)
{
    snprintf(out, out_len, "%.*s; try again later", (int)strcspn(err, ":"), err);
    return out;
}

/* Every database failure of this API is the database's (values are checked first): 503 with
 * Retry-After and the reason, never a 500 and never a wait without bound. */
static void respond_unavailable(http_response *resp, const char *err)
{
    char shown[128];
    log_warn(COMPONENT, "%s", err);
    http_respond_error(resp, 503, public_reason(err, shown, sizeof(shown)));
    resp->retry_after_s = ROOM_API_RETRY_AFTER_S;
}

/* ---- presence ---- */

typedef struct {
    json_t *list;
    const presence_member *online; /* who is online now (skipped), by user id */
    size_t n_online;
    size_t left; /* how many more may be listed */
} seen_ctx;

static bool is_online(const seen_ctx *c, uint32_t user)
{
    for (size_t i = 0; i < c->n_online; i++)
        if (c->online[i].user_id == user) return true;
    return false;
}

static void add_seen(void *ctx, const history_user_row *row)
{
    seen_ctx *c = ctx;
    if (c->left == 0 || is_online(c, (uint32_t)strtoul(row->user_id, NULL, 10))) return;
    json_array_append_new(c->list,
                          json_pack("{s:s, s:s, s:I}", "userId", row->user_id, "lastSeen",
                                    row->when, "messageCount", (json_int_t)row->message_count));
    c->left--;
}

/* Up to `recent` users of the room who are not online, newest activity first. */
static json_t *recently_seen(room_api *a, db_turn *turn, const char *room,
                             const presence_member *online, size_t n_online, size_t recent,
                             char *err, size_t err_len)
{
    json_t *list = json_array();
    if (!list) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    seen_ctx sc = {list, online, n_online, recent};
    /* ask for more than `recent`: the users online now are skipped */
    bool ok = recent == 0 || (turn_enter(turn, err, err_len) &&
                              history_recently_seen(a->cfg.history, room, recent + sc.n_online,
                                                    add_seen, &sc, err, err_len));
    if (!ok) {
        json_decref(list);
        return NULL;
    }
    return list;
}

/* Who is online: the cluster's members, or this node's (without the bus, or when Redis does not
 * answer: then with "clusterError"). *online gets them for recently_seen (the caller frees). */
static json_t *online_json(room_api *a, const char *room, presence_member **online, size_t *n)
{
    char err[300] = "";
    if (a->cfg.pcluster && presence_cluster_room(a->cfg.pcluster, room, online, n, err, sizeof err))
        return presence_cluster_room_json(a->cfg.presence, room, *online, *n);
    free(*online);
    *online = presence_members_copy(a->cfg.presence, room, n);
    json_t *o = *online ? presence_room_json(a->cfg.presence, room) : NULL;
    if (o && a->cfg.pcluster) {
        log_warn(COMPONENT, "cluster presence: %s; answering with this node's members", err);
        json_object_set_new(o, "clusterError",
                            json_string("cluster presence unavailable (Redis "
                                        "did not answer); this node's members"));
    }
    return o;
}

static void serve_presence(room_api *a, const char *room, const http_request *req,
                           http_response *resp)
{
    long recent = ROOM_API_RECENT_DEFAULT;
    const char *recent_s = http_request_arg(req, "recent");
    if (recent_s && !parse_count(recent_s, 0, 100, &recent)) {
        http_respond_error(resp, 400, "recent: must be an integer 0-100");
        return;
    }
    presence_member *online = NULL;
    size_t n_online = 0;
    json_t *o = online_json(a, room, &online, &n_online);
    if (!o) {
        free(online);
        http_respond_error(resp, 500, "out of memory");
        return;
    }
    char err[512] = "";
    db_turn turn = {a, false, false};
    json_t *seen =
        recently_seen(a, &turn, room, online, n_online, (size_t)recent, err, sizeof(err));
    turn_leave(&turn);
    free(online);
    if (seen) {
        json_object_set_new(o, "recentlySeen", seen);
    } else {
        /* the online list comes from memory: still worth answering without the database */
        json_object_set_new(o, "recentlySeen", json_null());
        char shown[128];
        log_warn(COMPONENT, "recently seen: %s", err);
        json_object_set_new(o, "recentlySeenError",
                            json_string(public_reason(err, shown, sizeof(shown))));
    }
    respond(resp, o);
}

/* ---- messages ---- */

typedef struct {
    json_t *newest_first;
    size_t from_db;
    bool failed;
} page_ctx;

/* A stored row as the event history pages show; NULL when out of memory. */
static json_t *stored_event(const broadcast_history_row *row)
{
    char *text = broadcast_event_to_json(&row->msg, row->server_timestamp, row->sequence_number);
    json_t *ev = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return ev;
}

static void add_row(void *ctx, const broadcast_history_row *row)
{
    page_ctx *c = ctx;
    json_t *ev = stored_event(row);
    if (!ev || json_array_append_new(c->newest_first, ev) != 0)
        c->failed = true;
    else
        c->from_db++;
}

static void add_position(void *ctx, const history_user_row *row)
{
    json_t *list = ctx;
    json_array_append_new(list,
                          json_pack("{s:s, s:s, s:s}", "userId", row->user_id, "sequenceNumber",
                                    row->sequence_number, "updatedAt", row->when));
}

/* The page, newest first: the cache's part, then PostgreSQL's below what the cache covers. */
static bool gather(room_api *a, db_turn *turn, const char *room, const char *before, size_t want,
                   page_ctx *page, size_t *from_cache, char *err, size_t err_len)
{
    recent_entry *entries = calloc(want, sizeof(*entries));
    if (!entries) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    char db_before[SEQNUM_BUF];
    size_t n = recent_page(a->cfg.recent, room, before, want, entries, db_before);
    for (size_t i = 0; i < n; i++) {
        json_t *ev = json_loads(entries[i].json, 0, NULL);
        if (ev) json_array_append_new(page->newest_first, ev);
    }
    *from_cache = json_array_size(page->newest_first);
    recent_entries_free(entries, n);
    free(entries);
    if (*from_cache >= want) return true;
    bool ok = turn_enter(turn, err, err_len) &&
              history_read_before(a->cfg.history, room, db_before, want - *from_cache, add_row,
                                  page, err, err_len);
    if (ok && page->failed) {
        snprintf(err, err_len, "out of memory");
        ok = false;
    }
    return ok;
}

static void serve_messages(room_api *a, const char *room, const http_request *req,
                           http_response *resp)
{
    long limit = ROOM_API_LIMIT_DEFAULT, user = 0;
    const char *before = http_request_arg(req, "before");
    const char *limit_s = http_request_arg(req, "limit");
    const char *user_s = http_request_arg(req, "userId");
    if (before && !seqnum_valid(before)) {
        http_respond_error(resp, 400, "before: must be a sequence number (1-60 decimal digits)");
        return;
    }
    if (limit_s && !parse_count(limit_s, 1, ROOM_API_LIMIT_MAX, &limit)) {
        http_respond_error(resp, 400, "limit: must be an integer 1-100");
        return;
    }
    if (user_s && (!parse_count(user_s, 1, CHAT_USER_ID_MAX, &user) || user_s[0] == '0')) {
        http_respond_error(resp, 400, "userId: must be a decimal integer 1-100000");
        return;
    }
    char err[512] = "";
    page_ctx page = {json_array(), 0, false};
    size_t from_cache = 0;
    db_turn turn = {a, false, false};
    /* one more than asked: whether older messages exist */
    if (!page.newest_first ||
        !gather(a, &turn, room, before, (size_t)limit + 1, &page, &from_cache, err, sizeof(err))) {
        turn_leave(&turn);
        json_decref(page.newest_first);
        respond_unavailable(resp, err);
        return;
    }
    size_t total = json_array_size(page.newest_first);
    bool has_more = total > (size_t)limit;
    size_t shown = has_more ? (size_t)limit : total;
    json_t *messages = json_array();
    for (size_t i = shown; i-- > 0;)
        json_array_append(messages, json_array_get(page.newest_first, i));
    const char *oldest =
        shown ? json_string_value(json_object_get(json_array_get(messages, 0), "sequenceNumber"))
              : NULL;
    json_t *next = oldest ? json_string(oldest) : json_null();
    const char *source = shown == 0 || shown <= from_cache ? "cache"
                         : from_cache == 0                 ? "database"
                                                           : "mixed";
    json_decref(page.newest_first);

    json_t *positions = json_array();
    json_t *mine = json_array();
    char user_id[12];
    snprintf(user_id, sizeof(user_id), "%ld", user);
    bool ok = turn_enter(&turn, err, sizeof(err)) &&
              history_read_positions(a->cfg.history, room, NULL, ROOM_API_READ_POSITIONS_MAX,
                                     add_position, positions, err, sizeof(err)) &&
              (!user || history_read_positions(a->cfg.history, room, user_id, 1, add_position, mine,
                                               err, sizeof(err)));
    turn_leave(&turn);
    json_t *my_position =
        ok && json_array_size(mine) ? json_incref(json_array_get(mine, 0)) : json_null();
    json_decref(mine);
    if (!ok) {
        /* the page is served (from memory); only the positions need the database */
        log_warn(COMPONENT, "read positions: %s", err);
        json_decref(positions);
        positions = json_null();
    }
    json_t *o = json_pack("{s:s, s:o, s:b, s:o, s:s, s:o, s:o}", "roomId", room, "messages",
                          messages, "hasMore", has_more, "nextBefore", next, "source", source,
                          "readPositions", positions, "readPosition", my_position);
    char reason[128];
    if (o && !ok)
        json_object_set_new(o, "readPositionsError",
                            json_string(public_reason(err, reason, sizeof(reason))));
    respond(resp, o);
}

/* ---- search ---- */

typedef struct {
    json_t *results; /* best match first */
    bool failed;
} hits_ctx;

/* One search hit: the event as history pages show it, and how well it matched. */
static void add_hit(void *ctx, const broadcast_history_row *row, double score)
{
    hits_ctx *c = ctx;
    json_t *ev = stored_event(row);
    if (!ev || json_object_set_new(ev, "score", json_real(round(score * 1000) / 1000)) != 0 ||
        json_array_append_new(c->results, ev) != 0)
        c->failed = true;
}

static void serve_search(room_api *a, const char *room, const http_request *req,
                         http_response *resp)
{
    long limit = ROOM_API_LIMIT_DEFAULT, offset = 0;
    const char *q = http_request_arg(req, "q");
    const char *limit_s = http_request_arg(req, "limit");
    const char *offset_s = http_request_arg(req, "offset");
    char err[512] = "";
    if (!history_search_query_check(q, err, sizeof err)) {
        http_respond_error(resp, 400, err);
        return;
    }
    if (limit_s && !parse_count(limit_s, 1, ROOM_API_LIMIT_MAX, &limit)) {
        http_respond_error(resp, 400, "limit: must be an integer 1-100");
        return;
    }
    if (offset_s && !parse_count(offset_s, 0, ROOM_API_SEARCH_OFFSET_MAX, &offset)) {
        http_respond_error(resp, 400, "offset: must be an integer 0-1000");
        return;
    }
    hits_ctx hits = {json_array(), false};
    db_turn turn = {a, false, false};
    /* one more than asked: whether more matches exist */
    bool ok = hits.results && turn_enter(&turn, err, sizeof err) &&
              history_search(a->cfg.history, room, q, (size_t)limit + 1, (size_t)offset, add_hit,
                             &hits, err, sizeof err);
    turn_leave(&turn);
    if (ok && hits.failed) snprintf(err, sizeof err, "out of memory");
    if (!ok || hits.failed) {
        json_decref(hits.results);
        respond_unavailable(resp, err);
        return;
    }
    bool has_more = json_array_size(hits.results) > (size_t)limit;
    if (has_more) json_array_remove(hits.results, (size_t)limit);
    json_t *next = has_more ? json_integer(offset + limit) : json_null();
    respond(resp, json_pack("{s:s, s:s, s:o, s:i, s:i, s:b, s:o}", "roomId", room, "query", q,
                            "results", hits.results, "limit", (int)limit, "offset", (int)offset,
                            "hasMore", has_more, "nextOffset", next));
}

/* The identity token's verdict (room_api.h); false with resp set to the 401 / 403. */
static bool token_allows(const room_api *a, const http_request *req, const char *room,
                         http_response *resp)
{
    if (!a->cfg.auth) return true;
    const char *token = NULL;
    size_t len = 0;
    auth_token_kind kind = auth_pick_token(http_request_header(req, "Authorization"),
                                           http_request_arg(req, "access_token"), &token, &len);
    if (kind == AUTH_TOKEN_NONE && a->cfg.anonymous_read) return true;
    auth_identity id;
    char reason[JWT_REASON_BUF + 64];
    int status = auth_check(a->cfg.auth, kind, token, len, room, &id, reason, sizeof reason);
    if (status) http_respond_error(resp, status, reason);
    return status == 0;
}

static void serve_room(void *ctx, const http_request *req, http_response *resp)
{
    room_api *a = ctx;
    resp->allow_origin = allowed_origin(a, req); /* on errors too: the page shows their text */
    char room[ROOM_ID_BUF];
    room_resource what;
    if (!parse_path(http_request_path(req), room, &what, resp)) return;
    if (!token_allows(a, req, room, resp)) return;
    if (what == ROOM_PRESENCE)
        serve_presence(a, room, req, resp);
    else if (what == ROOM_MESSAGES)
        serve_messages(a, room, req, resp);
    else
        serve_search(a, room, req, resp);
}

/* The browser asks before a cross-origin GET with an Authorization header (the page's token). */
static void serve_preflight(void *ctx, const http_request *req, http_response *resp)
{
    room_api *a = ctx;
    resp->status = 204;
    resp->allow_origin = allowed_origin(a, req); /* none for an unlisted origin: the page's
                                                    browser then refuses to send the GET */
    resp->preflight_methods = "GET";
}

void room_api_add_routes(room_api *a, admin_http *h)
{
    admin_http_add_route(h, "GET", "/api/rooms/*", serve_room, a);
    admin_http_add_route(h, "OPTIONS", "/api/rooms/*", serve_preflight, a);
}
