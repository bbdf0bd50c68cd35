/*
 * recent — the newest messages of each room, in memory, for the history API
 * (GET /api/rooms/{id}/messages): most page loads are answered without PostgreSQL.
 *
 * Contract:
 *  - A room is a room id (room.h), a NUL-terminated string that is copied; calls with an invalid
 *    id keep nothing and find nothing.
 *  - recent_add() is called by the poller that owns the room, in SQS order, as each valid message
 *    is received (the same moment it is broadcast; before it is committed). It keeps a copy of the
 *    event JSON. A sequence number not above the room's newest is a redelivery and is ignored;
 *    messages without a valid sequence number are not kept. The oldest entry leaves when the room
 *    holds per_room entries (per_room 0: nothing is kept).
 *  - At most rooms_max rooms are cached. A room's entry is made by its first recent_add(); when
 *    rooms_max rooms are cached already, the room least recently added to is forgotten entirely
 *    (its pages then come from PostgreSQL until it is added to again, and it starts afresh).
 *    recent_room_count() says how many rooms are cached.
 *  - Because every message this process receives for a cached room passes through recent_add() in
 *    order since the room's entry was made, the cache holds EVERY message of the room from its
 *    oldest entry upward: recent_page() answers from it and says where PostgreSQL must take over
 *    (*db_before): the cache's oldest sequence number when that is below `before` (or there is no
 *    `before`), else `before` itself; "" (no bound) only when the cache has nothing and no
 *    `before` was given.
 *  - recent_page() copies up to `limit` entries with seq < before (before NULL or "": no bound),
 *    newest first; the caller frees them with recent_entries_free().
 *  - Thread-safe: one mutex for the whole cache (pollers write, HTTP threads read), held for
 *    O(1) work per add and O(limit) copies per page.
 */
#ifndef CHATFLOW_CONSUMER_RECENT_H
#define CHATFLOW_CONSUMER_RECENT_H

#include <stdbool.h>
#include <stddef.h>

#include "message.h"

#include "seqnum.h"

typedef struct recent_cache recent_cache;

typedef struct {
    char seq[SEQNUM_BUF];
    char *json; /* the BroadcastEvent, malloc'd */
} recent_entry;

/* NULL on OOM or when rooms_max is 0. */
recent_cache *recent_new(size_t rooms_max, size_t per_room);
void recent_free(recent_cache *c);
/* false only on OOM (the event is then not kept, and the cache forgets the room's older entries
 * so it never answers with a gap). */
bool recent_add(recent_cache *c, const char *room, const char *seq, const char *event_json);
/* recent_add() of m's history event (protocol.md §3: no clientMessageId), rendered here. false
 * when out of memory. */
bool recent_add_message(recent_cache *c, const chat_message *m, const char *seq,
                        const char *server_ts);
size_t recent_page(recent_cache *c, const char *room, const char *before, size_t limit,
                   recent_entry *out, char db_before[SEQNUM_BUF]);
void recent_entries_free(recent_entry *e, size_t n);
/* How many rooms have an entry now. */
size_t recent_room_count(recent_cache *c);

#endif
