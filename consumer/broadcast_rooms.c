/* broadcast_rooms — the broadcaster's rooms, keyed by room id; see broadcast_internal.h.
 *
 * Any number of rooms can exist, so a node keeps state only for the rooms it has met, at most
 * rooms_max of them. A room is met by its first subscriber or its first event. When the table is
 * full, the least recently used room without subscribers is forgotten: its replay cache goes
 * (a later since= replay for it comes from the store, exactly as after a restart: the cache of a
 * room met afresh holds every event from its oldest entry upward) and so does the newest sequence
 * number used to check READ positions. A room with subscribers is never forgotten; when all
 * rooms_max rooms have some, a new room is refused. Service thread only, so no locks.
 */
#include <stdlib.h>
#include <string.h>

#include "broadcast_internal.h"
#include "log.h"

#define COMPONENT "broadcast"

room_state *broadcast_room_of(broadcaster *b, const char *room)
{
    room_state *rs = NULL;
    HASH_FIND_STR(b->rooms, room, rs);
    if (rs) rs->last_used = ++b->room_clock;
    return rs;
}

static void room_free(room_state *rs)
{
    bc_room_cache_free(&rs->cache);
    free(rs);
}

static void forget(broadcaster *b, room_state *rs)
{
    HASH_DEL(b->rooms, rs);
    b->n_rooms--;
    room_free(rs);
    metric_counter_inc(b->m_rooms_forgotten);
    metric_gauge_set(b->m_rooms, (double)b->n_rooms);
}

/* A linear scan, only when the table is full and a new room arrives: simpler than keeping an LRU
 * list in step with subscribers coming and going, and rooms_max is thousands, not millions. */
static bool forget_least_recent_idle(broadcaster *b)
{
    room_state *victim = NULL, *rs, *tmp;
    HASH_ITER(hh, b->rooms, rs, tmp)
    {
        if (rs->subs.count == 0 && (!victim || rs->last_used < victim->last_used)) victim = rs;
    }
    if (!victim) return false;
    forget(b, victim);
    return true;
}

room_state *broadcast_room_get(broadcaster *b, const char *room)
{
    room_state *rs = broadcast_room_of(b, room);
    if (rs) return rs;
    if (b->n_rooms >= b->cfg.rooms_max && !forget_least_recent_idle(b)) {
        metric_counter_inc(b->m_rooms_refused);
        return NULL;
    }
    rs = calloc(1, sizeof *rs);
    if (!rs || !bc_room_cache_init(&rs->cache, b->cfg.cache_per_room)) {
        free(rs);
        log_error(COMPONENT, "room %s: out of memory for its state", room);
        return NULL;
    }
    snprintf(rs->id, sizeof rs->id, "%s", room);
    HASH_ADD_STR(b->rooms, id, rs);
    room_state *added = NULL;
    HASH_FIND_STR(b->rooms, room, added);
    if (added != rs) { /* the table could not grow (HASH_NONFATAL_OOM) */
        room_free(rs);
        log_error(COMPONENT, "room %s: out of memory for the room table", room);
        return NULL;
    }
    b->n_rooms++;
    rs->last_used = ++b->room_clock;
    metric_gauge_set(b->m_rooms, (double)b->n_rooms);
    return rs;
}

void broadcast_rooms_forget_caches(broadcaster *b)
{
    room_state *rs, *tmp;
    HASH_ITER(hh, b->rooms, rs, tmp)
    {
        bc_room_cache_free(&rs->cache);
        if (!bc_room_cache_init(&rs->cache, b->cfg.cache_per_room))
            log_error(COMPONENT, "room %s: out of memory for its replay cache", rs->id);
    }
}

void broadcast_rooms_free(broadcaster *b)
{
    room_state *rs, *tmp;
    HASH_ITER(hh, b->rooms, rs, tmp)
    {
        HASH_DEL(b->rooms, rs);
        room_free(rs);
    }
    b->n_rooms = 0;
}
