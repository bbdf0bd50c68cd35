/*
 * recent — the newest messages of each room, in memory, for the history API
 * (GET /api/rooms/{id}/messages): most page loads are answered without PostgreSQL.
 *
 * Contract:
 *  - recent_add() is called by the poller that owns the room, in SQS order, as each valid message
 *    is received (the same moment it is broadcast; before it is committed). It keeps a copy of the
 *    event JSON. A sequence number not above the room's newest is a redelivery and is ignored;
 *    messages without a valid sequence number are not kept. The oldest entry leaves when the room
 *    holds per_room entries (per_room 0: nothing is kept).
 *  - Because every message this process receives passes through recent_add() in order, the cache
 *    holds EVERY message of the room from its oldest entry upward: recent_page() answers from it
 *    and says where PostgreSQL must take over (*db_before): the cache's oldest sequence number when
 *    that is below `before` (or there is no `before`), else `before` itself; "" (no bound) only
 *    when the cache has nothing and no `before` was given.
 *  - recent_page() copies up to `limit` entries with seq < before (before NULL or "": no bound),
 *    newest first; the caller frees them with recent_entries_free().
 *  - Thread-safe: a mutex per room (pollers write, HTTP threads read).
 */
#ifndef CHATFLOW_CONSUMER_RECENT_H
#define CHATFLOW_CONSUMER_RECENT_H

#include <stdbool.h>
#include <stddef.h>

#include "seqnum.h"

typedef struct recent_cache recent_cache;

typedef struct {
    char seq[SEQNUM_BUF];
    char *json; /* the BroadcastEvent, malloc'd */
} recent_entry;

/* NULL on OOM or a bad range. */
recent_cache *recent_new(long room_min, long room_max, size_t per_room);
void recent_free(recent_cache *c);
/* false only on OOM (the event is then not kept, and the cache forgets its older entries so it
 * never answers with a gap). */
bool recent_add(recent_cache *c, long room, const char *seq, const char *event_json);
size_t recent_page(recent_cache *c, long room, const char *before, size_t limit, recent_entry *out,
                   char db_before[SEQNUM_BUF]);
void recent_entries_free(recent_entry *e, size_t n);

#endif
