/* history — a room's stored past for replay and the room API; see history.h. */
#include "history.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "message.h"
#include "room.h"
#include "timeutil.h"

#define POOL_SIZE 2 /* the replay worker and one API request at a time, without waiting */

/* numeric drops leading zeros. A position (queue_epoch.h) has none, but a row stored before
 * epochs holds SQS's bare number, which fauxqs zero-pads to 20 digits: restore that width so a
 * replayed event of such a row carries the text the live one did. */
#define SEQ_TEXT(col)                                                        \
    "CASE WHEN length(" col "::text) < 20 THEN lpad(" col "::text, 20, '0')" \
    " ELSE " col "::text END"

#define ISO_UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define ROW_LIST                                                              \
    "message_id, room_id, user_id, username, message_text, " ISO_UTC(         \
        "client_timestamp") ","                                               \
                            " message_type, server_id, client_ip, " SEQ_TEXT( \
                                "sequence_number") ", " ISO_UTC("received_at")
#define ROW_COLUMNS "SELECT " ROW_LIST " FROM messages"
#define SEARCH_SCORE_COLUMN 11 /* after the 11 columns of ROW_LIST */

/* ORDER BY names are qualified: a bare name would sort by the text output column of that name. */
static const db_statement history_statements[] = {
    {"history_after",
     ROW_COLUMNS " WHERE room_id = $1::text AND sequence_number > $2::numeric"
                 " ORDER BY messages.sequence_number LIMIT $3::bigint",
     3},
    {"history_before",
     ROW_COLUMNS " WHERE room_id = $1::text AND sequence_number < $2::numeric"
                 " ORDER BY messages.sequence_number DESC LIMIT $3::bigint",
     3},
    {"history_latest",
     ROW_COLUMNS " WHERE room_id = $1::text AND sequence_number IS NOT NULL"
                 " ORDER BY messages.sequence_number DESC LIMIT $2::bigint",
     2},
    /* contains q (ILIKE, served by messages_text_trgm_idx), best match first, then newest;
     * the score follows the ROW_LIST columns (SEARCH_SCORE_COLUMN) */
    {"search",
     "SELECT " ROW_LIST ", word_similarity($2::text, message_text)::float8 AS score FROM messages"
     " WHERE room_id = $1::text AND message_text ILIKE $3::text"
     " ORDER BY score DESC, messages.sequence_number DESC LIMIT $4::bigint OFFSET $5::bigint",
     5},
    {"read_positions",
     "SELECT user_id::text, " SEQ_TEXT("sequence_number") ", " ISO_UTC(
         "updated_at") ", 0"
                       " FROM read_positions WHERE room_id = $1::text AND ($2::int IS NULL OR "
                       "user_id = $2::int)"
                       " ORDER BY read_positions.updated_at DESC, user_id LIMIT $3::bigint",
     3},
    {"recently_seen",
     "SELECT user_id::text, '', " ISO_UTC(
         "last_activity") ", message_count FROM user_activity"
                          " WHERE room_id = $1::text ORDER BY user_activity.last_activity DESC, "
                          "user_id LIMIT $2::bigint",
     2},
};

struct history {
    db_pool *pool;
    /* fail fast: after a database failure, reads fail at once until fail_fast_until_ns */
    pthread_mutex_t mu;
    uint64_t fail_fast_until_ns;
    char last_failure[400];
};

/* Interactive reads of at most a page: anything longer is a database in trouble, and a thread
 * (an admin HTTP thread, the replay worker) waiting on it. */
static long bounded_timeout(long statement_timeout_ms)
{
    return statement_timeout_ms <= 0 || statement_timeout_ms > HISTORY_STATEMENT_TIMEOUT_MAX_MS
               ? HISTORY_STATEMENT_TIMEOUT_MAX_MS
               : statement_timeout_ms;
}

history *history_new(const char *database_url, long statement_timeout_ms)
{
    history *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    pthread_mutex_init(&h->mu, NULL);
    h->pool = db_pool_new(database_url, bounded_timeout(statement_timeout_ms),
                          "chatflow-consumer-history", history_statements,
                          sizeof(history_statements) / sizeof(history_statements[0]), POOL_SIZE);
    if (!h->pool) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void history_free(history *h)
{
    if (!h) return;
    db_pool_free(h->pool);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Within the fail-fast window: false with err = the failure that opened it. Each read that goes
 * to a database in trouble holds a thread for up to the statement timeout; one such read per
 * window is enough to know it is still in trouble. */
static bool may_try(history *h, char *err, size_t err_len)
{
    pthread_mutex_lock(&h->mu);
    uint64_t now = time_mono_ns();
    bool wait = now < h->fail_fast_until_ns;
    if (wait)
        snprintf(err, err_len, "%s (failing fast for %ld ms)", h->last_failure,
                 (long)((h->fail_fast_until_ns - now) / 1000000ull) + 1);
    pthread_mutex_unlock(&h->mu);
    return !wait;
}

static void note_failure(history *h, const char *err)
{
    pthread_mutex_lock(&h->mu);
    h->fail_fast_until_ns = time_mono_ns() + (uint64_t)HISTORY_FAIL_FAST_MS * 1000000ull;
    snprintf(h->last_failure, sizeof(h->last_failure), "%s", err);
    pthread_mutex_unlock(&h->mu);
}

static bool valid_seq(const char *s, char *err, size_t err_len, const char *what)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > SEQNUM_MAX_DIGITS || strspn(s, "0123456789") != len) {
        snprintf(err, err_len, "%s: not a sequence number", what);
        return false;
    }
    return true;
}

static bool valid_room(const char *room, char *err, size_t err_len)
{
    return room_id_check(room, room ? strlen(room) : 0, err, err_len);
}

/* A free connection within wait_ms, then the statement; NULL with err saying which failed. */
static PGresult *query(history *h, long wait_ms, const char *name, int n, const char *const *params,
                       char *err, size_t err_len)
{
    if (!may_try(h, err, err_len)) return NULL;
    db_conn *c = db_pool_acquire_timeout(h->pool, wait_ms);
    if (!c) {
        snprintf(err, err_len, "database busy: no connection free within %ld ms", wait_ms);
        return NULL;
    }
    char why[300] = "";
    PGresult *r = db_run_prepared(c, name, n, params, why, sizeof(why));
    if (!r) {
        char failure[400];
        snprintf(failure, sizeof(failure), "database unavailable (%s): %s", db_last_error_class(c),
                 why);
        note_failure(h, failure);
        snprintf(err, err_len, "%s", failure);
    }
    db_pool_release(h->pool, c);
    return r;
}

static void copy_field(char *dst, size_t size, const PGresult *r, int row, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(r, row, col));
}

/* Row i of a ROW_LIST query. */
static void fill_row(broadcast_history_row *row, const PGresult *r, int i)
{
    memset(row, 0, sizeof(*row));
    chat_message *m = &row->msg;
    copy_field(m->message_id, sizeof(m->message_id), r, i, 0);
    copy_field(m->room_id, sizeof(m->room_id), r, i, 1);
    copy_field(m->user_id, sizeof(m->user_id), r, i, 2);
    copy_field(m->username, sizeof(m->username), r, i, 3);
    copy_field(m->message, sizeof(m->message), r, i, 4);
    copy_field(m->timestamp, sizeof(m->timestamp), r, i, 5);
    copy_field(m->message_type, sizeof(m->message_type), r, i, 6);
    copy_field(m->server_id, sizeof(m->server_id), r, i, 7);
    copy_field(m->client_ip, sizeof(m->client_ip), r, i, 8);
    copy_field(row->sequence_number, sizeof(row->sequence_number), r, i, 9);
    copy_field(m->received_at, sizeof(m->received_at), r, i, 10);
    copy_field(row->server_timestamp, sizeof(row->server_timestamp), r, i, 10);
}

/* One emit per row of a ROW_LIST query, with the score in column score_col (0 when it is -1);
 * frees r. */
static bool emit_scored_rows(PGresult *r, int score_col, history_search_fn emit, void *emit_ctx,
                             char *err, size_t err_len)
{
    broadcast_history_row *row = malloc(sizeof(*row));
    if (!row) {
        PQclear(r);
        snprintf(err, err_len, "out of memory");
        return false;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        fill_row(row, r, i);
        emit(emit_ctx, row, score_col < 0 ? 0.0 : strtod(PQgetvalue(r, i, score_col), NULL));
    }
    free(row);
    PQclear(r);
    return true;
}

typedef struct {
    history_emit_fn emit;
    void *ctx;
} unscored_emit;

static void drop_score(void *ctx, const broadcast_history_row *row, double score)
{
    (void)score;
    const unscored_emit *u = ctx;
    u->emit(u->ctx, row);
}

/* One emit per row of a history_* message query; frees r. */
static bool emit_rows(PGresult *r, history_emit_fn emit, void *emit_ctx, char *err, size_t err_len)
{
    unscored_emit u = {emit, emit_ctx};
    return emit_scored_rows(r, -1, drop_score, &u, err, err_len);
}

bool history_read(void *ctx, const char *room, const char *since_seq, size_t limit,
                  history_emit_fn emit, void *emit_ctx, char *err, size_t err_len)
{
    if (!valid_room(room, err, err_len) || !valid_seq(since_seq, err, err_len, "since"))
        return false;
    char limit_s[24];
    snprintf(limit_s, sizeof(limit_s), "%zu", limit);
    const char *params[] = {room, since_seq, limit_s};
    PGresult *r = query(ctx, HISTORY_REPLAY_WAIT_MS, "history_after", 3, params, err, err_len);
    return r && emit_rows(r, emit, emit_ctx, err, err_len);
}

bool history_read_before(history *h, const char *room, const char *before_seq, size_t limit,
                         history_emit_fn emit, void *emit_ctx, char *err, size_t err_len)
{
    bool bounded = before_seq && before_seq[0];
    if (!valid_room(room, err, err_len)) return false;
    if (bounded && !valid_seq(before_seq, err, err_len, "before")) return false;
    char limit_s[24];
    snprintf(limit_s, sizeof(limit_s), "%zu", limit);
    const char *with_bound[] = {room, before_seq, limit_s};
    const char *newest[] = {room, limit_s};
    PGresult *r = bounded
                      ? query(h, HISTORY_API_WAIT_MS, "history_before", 3, with_bound, err, err_len)
                      : query(h, HISTORY_API_WAIT_MS, "history_latest", 2, newest, err, err_len);
    return r && emit_rows(r, emit, emit_ctx, err, err_len);
}

/* q as an ILIKE pattern matching any text that contains it: its \\, % and _ taken literally
 * (backslash is ILIKE's default escape). False when it does not fit. */
static bool contains_pattern(const char *q, char *out, size_t out_len)
{
    size_t k = 0;
    if (out_len < 3) return false;
    out[k++] = '%';
    for (const char *c = q; *c; c++) {
        bool special = *c == '\\' || *c == '%' || *c == '_';
        if (k + (special ? 2 : 1) + 2 > out_len) return false;
        if (special) out[k++] = '\\';
        out[k++] = *c;
    }
    out[k++] = '%';
    out[k] = '\0';
    return true;
}

bool history_search_query_check(const char *q, char *err, size_t err_len)
{
    size_t q_len = q ? strlen(q) : 0;
    size_t chars = q && utf8_validate(q, q_len) ? utf8_codepoints(q, q_len) : 0;
    if (chars >= HISTORY_SEARCH_MIN_CHARS && chars <= HISTORY_SEARCH_MAX_CHARS) return true;
    snprintf(err, err_len, "q: must be %d-%d characters of UTF-8", HISTORY_SEARCH_MIN_CHARS,
             HISTORY_SEARCH_MAX_CHARS);
    return false;
}

bool history_search(history *h, const char *room, const char *q, size_t limit, size_t offset,
                    history_search_fn emit, void *emit_ctx, char *err, size_t err_len)
{
    if (!valid_room(room, err, err_len) || !history_search_query_check(q, err, err_len))
        return false;
    char pattern[2 * 4 * HISTORY_SEARCH_MAX_CHARS + 3], limit_s[24], offset_s[24];
    if (!contains_pattern(q, pattern, sizeof pattern)) {
        snprintf(err, err_len, "q: too long");
        return false;
    }
    snprintf(limit_s, sizeof(limit_s), "%zu", limit);
    snprintf(offset_s, sizeof(offset_s), "%zu", offset);
    const char *params[] = {room, q, pattern, limit_s, offset_s};
    PGresult *r = query(h, HISTORY_API_WAIT_MS, "search", 5, params, err, err_len);
    return r && emit_scored_rows(r, SEARCH_SCORE_COLUMN, emit, emit_ctx, err, err_len);
}

static bool emit_users(PGresult *r, history_user_fn emit, void *emit_ctx)
{
    history_user_row row;
    for (int i = 0; i < PQntuples(r); i++) {
        memset(&row, 0, sizeof(row));
        copy_field(row.user_id, sizeof(row.user_id), r, i, 0);
        copy_field(row.sequence_number, sizeof(row.sequence_number), r, i, 1);
        copy_field(row.when, sizeof(row.when), r, i, 2);
        row.message_count = strtoll(PQgetvalue(r, i, 3), NULL, 10);
        emit(emit_ctx, &row);
    }
    PQclear(r);
    return true;
}

bool history_read_positions(history *h, const char *room, const char *user_id, size_t limit,
                            history_user_fn emit, void *emit_ctx, char *err, size_t err_len)
{
    if (!valid_room(room, err, err_len)) return false;
    char limit_s[24];
    snprintf(limit_s, sizeof(limit_s), "%zu", limit);
    const char *params[] = {room, user_id, limit_s}; /* NULL user_id binds SQL NULL */
    PGresult *r = query(h, HISTORY_API_WAIT_MS, "read_positions", 3, params, err, err_len);
    return r && emit_users(r, emit, emit_ctx);
}

bool history_recently_seen(history *h, const char *room, size_t limit, history_user_fn emit,
                           void *emit_ctx, char *err, size_t err_len)
{
    if (!valid_room(room, err, err_len)) return false;
    char limit_s[24];
    snprintf(limit_s, sizeof(limit_s), "%zu", limit);
    const char *params[] = {room, limit_s};
    PGresult *r = query(h, HISTORY_API_WAIT_MS, "recently_seen", 2, params, err, err_len);
    return r && emit_users(r, emit, emit_ctx);
}

const char *history_query_sql(const char *name)
{
    for (size_t i = 0; i < sizeof(history_statements) / sizeof(history_statements[0]); i++)
        if (strcmp(history_statements[i].name, name) == 0) return history_statements[i].sql;
    return NULL;
}
