/*
 * history — what PostgreSQL knows about a room's past: its stored messages (for since= replay and
 * the history API), its members' read positions, and who was active in it.
 *
 * Contract:
 *  - history_read() is a broadcast_history_fn (broadcast.h): rows with sequence_number > since, in
 *    ascending order (numeric comparison), at most `limit`, from the (room_id, sequence_number)
 *    index. history_read_before() pages the other way: the newest `limit` rows below `before`
 *    (no bound when before is NULL or ""), newest first, from the same index.
 *  - room must be a room id (room.h), since/before decimal numbers (else false, err set, naming
 *    "roomId", "since" or "before"); the room is bound as text, compared as bytes.
 *  - Sequence numbers come back as SQS wrote them: at least 20 digits, zero-padded (numeric storage
 *    drops the zeros), so replayed and live events carry the same text. Timestamps come back as
 *    ISO-8601 UTC with milliseconds: the client timestamp as stored, and received_at as
 *    serverTimestamp (the same value live events carry).
 *  - history_search(): the room's messages whose text contains q (case-insensitive; q is
 *    HISTORY_SEARCH_MIN_CHARS-HISTORY_SEARCH_MAX_CHARS characters of UTF-8, its % _ \ literal),
 *    best match first (pg_trgm word_similarity of q to the text, passed as score 0-1), then
 *    newest; at most `limit` after skipping `offset`. Served by the trigram index
 *    messages_text_trgm_idx (migration 0006); a bad q -> false with err naming "q".
 *  - history_read_positions(): the room's stored read positions, most recently updated first, at
 *    most `limit`; with user_id (not NULL) only that user's. history_recently_seen(): users of the
 *    room by user_activity.last_activity, newest first, at most `limit`.
 *  - Thread-safe: a small pool of PostgreSQL connections of its own (never the writer's), each
 *    reconnected when it was lost. Every value is a bound parameter.
 *  - Bounded, so that neither an admin HTTP thread nor the replay worker hangs on a database in
 *    trouble: a free connection is waited for at most HISTORY_API_WAIT_MS (the API calls) or
 *    HISTORY_REPLAY_WAIT_MS (history_read, the replay worker); statements run under
 *    statement_timeout_ms, capped at HISTORY_STATEMENT_TIMEOUT_MAX_MS (0 means the cap); a
 *    connection attempt takes at most 2 s and, after one failed, the pool's connections fail at
 *    once for 1 s (db.h). After any database failure, every read fails at once with the same
 *    error for HISTORY_FAIL_FAST_MS ("(failing fast for N ms)"), so a database that is down or
 *    locked costs one statement timeout per window, not one per request. Every failure of these
 *    reads is the database's (the values are checked first): err starts with "database busy:"
 *    (no connection free in time) or "database unavailable (<class>):" followed by the server's
 *    or libpq's message, never a password.
 */
#ifndef CHATFLOW_CONSUMER_HISTORY_H
#define CHATFLOW_CONSUMER_HISTORY_H

#include <stdbool.h>
#include <stddef.h>

#include "broadcast.h"
#include "seqnum.h"

/* A history read holds an admin HTTP thread (and every connection libmicrohttpd queued on it)
 * for up to the statement timeout: pages are index range scans of at most 101 rows (ms). */
#define HISTORY_STATEMENT_TIMEOUT_MAX_MS 500L
#define HISTORY_API_WAIT_MS 200L
#define HISTORY_REPLAY_WAIT_MS 2000L
#define HISTORY_FAIL_FAST_MS 1000L

typedef struct history history;

typedef void (*history_emit_fn)(void *emit_ctx, const broadcast_history_row *row);

history *history_new(const char *database_url, long statement_timeout_ms);
void history_free(history *h);
bool history_read(void *ctx, const char *room, const char *since_seq, size_t limit,
                  history_emit_fn emit, void *emit_ctx, char *err, size_t err_len);
bool history_read_before(history *h, const char *room, const char *before_seq, size_t limit,
                         history_emit_fn emit, void *emit_ctx, char *err, size_t err_len);

#define HISTORY_SEARCH_MIN_CHARS 3 /* a trigram: anything shorter cannot use the index */
#define HISTORY_SEARCH_MAX_CHARS 200

typedef void (*history_search_fn)(void *emit_ctx, const broadcast_history_row *row, double score);

/* The q rule of history_search(): true, or false with err naming "q". */
bool history_search_query_check(const char *q, char *err, size_t err_len);
bool history_search(history *h, const char *room, const char *q, size_t limit, size_t offset,
                    history_search_fn emit, void *emit_ctx, char *err, size_t err_len);

typedef struct {
    char user_id[8];
    char sequence_number[SEQNUM_BUF]; /* read positions only */
    char when[ISO8601_BUF];           /* updated_at / last_activity */
    long long message_count;          /* recently seen only */
} history_user_row;

typedef void (*history_user_fn)(void *emit_ctx, const history_user_row *row);

bool history_read_positions(history *h, const char *room, const char *user_id, size_t limit,
                            history_user_fn emit, void *emit_ctx, char *err, size_t err_len);
bool history_recently_seen(history *h, const char *room, size_t limit, history_user_fn emit,
                           void *emit_ctx, char *err, size_t err_len);

/* SQL text of a statement ("history_after", "history_before", "history_latest", "search",
 * "read_positions", "recently_seen"), NULL for another name: for tests that EXPLAIN exactly what
 * runs. */
const char *history_query_sql(const char *name);

#endif
