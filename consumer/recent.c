/* recent — per-room rings of the newest event frames; see recent.h.
 *
 * Rooms are found by id in a uthash table and also kept on a list in the order they were last
 * added to (oldest first), so that making room number rooms_max + 1 forgets the head in O(1).
 *
 * One mutex guards everything. Every add moves its room to the tail of that shared list, so a
 * per-room lock would still need the cache-wide one on every add and buy nothing; and forgetting
 * a room while a reader copies from it needs no handshake when both hold the same lock. What it
 * is held for is short: a lookup and a pointer swap per add (the copy of the event is made
 * before), and at most `limit` (<= 101) string copies per page. */
#include "recent.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "room.h"

typedef struct room_ring room_ring;

/* Out of memory inside HASH_ADD is reported on the entry instead of exiting the process. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(entry) ((entry)->add_failed = true)
#include <uthash.h>
#include <utlist.h>

struct room_ring {
    char id[ROOM_ID_BUF]; /* the key */
    recent_entry *ring;   /* per_room slots; head is the oldest */
    size_t head, len;
    bool add_failed;
    room_ring *prev, *next; /* the add order list (utlist DL_*) */
    UT_hash_handle hh;
};

struct recent_cache {
    pthread_mutex_t mu;
    size_t rooms_max, per_room;
    room_ring *rooms; /* uthash head */
    room_ring *order; /* least recently added to first */
};

recent_cache *recent_new(size_t rooms_max, size_t per_room)
{
    if (rooms_max < 1) return NULL;
    recent_cache *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->rooms_max = rooms_max;
    c->per_room = per_room;
    return c;
}

static recent_entry *at(recent_cache *c, room_ring *r, size_t i)
{
    return &r->ring[(r->head + i) % c->per_room];
}

static void clear_ring(recent_cache *c, room_ring *r)
{
    for (size_t i = 0; i < r->len; i++) free(at(c, r, i)->json);
    r->head = r->len = 0;
}

/* Out of the table and the list, and freed. */
static void ring_forget(recent_cache *c, room_ring *r)
{
    HASH_DEL(c->rooms, r);
    DL_DELETE(c->order, r);
    clear_ring(c, r);
    free(r->ring);
    free(r);
}

void recent_free(recent_cache *c)
{
    if (!c) return;
    while (c->order) ring_forget(c, c->order);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

size_t recent_room_count(recent_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = HASH_COUNT(c->rooms);
    pthread_mutex_unlock(&c->mu);
    return n;
}

static room_ring *ring_of(recent_cache *c, const char *room)
{
    room_ring *r = NULL;
    size_t len = room ? strlen(room) : 0;
    if (room_id_valid(room, len)) HASH_FIND(hh, c->rooms, room, len, r);
    return r;
}

/* A new empty ring for a valid room, at the tail of the add order, after forgetting the least
 * recently added-to room when rooms_max are cached; NULL on OOM (then nothing was forgotten). */
static room_ring *ring_open(recent_cache *c, const char *room)
{
    room_ring *r = calloc(1, sizeof(*r));
    if (!r || !(r->ring = calloc(c->per_room, sizeof(recent_entry)))) {
        free(r);
        return NULL;
    }
    size_t len = strlen(room);
    memcpy(r->id, room, len + 1);
    HASH_ADD(hh, c->rooms, id, len, r);
    if (r->add_failed) {
        free(r->ring);
        free(r);
        return NULL;
    }
    if (HASH_COUNT(c->rooms) > c->rooms_max) ring_forget(c, c->order); /* r is not on it yet */
    DL_APPEND(c->order, r);
    return r;
}

/* Takes ownership of copy (NULL: out of memory). */
static bool ring_add(recent_cache *c, room_ring *r, const char *seq, char *copy)
{
    if (r->len && seqnum_cmp(seq, at(c, r, r->len - 1)->seq) <= 0) {
        free(copy); /* a redelivery: already here, or older than everything here */
        return true;
    }
    if (!copy) {
        clear_ring(c, r); /* a hole would be served as history: forget rather than lie */
        return false;
    }
    if (r->len == c->per_room) {
        free(at(c, r, 0)->json);
        r->head = (r->head + 1) % c->per_room;
        r->len--;
    }
    recent_entry *e = at(c, r, r->len++);
    snprintf(e->seq, sizeof(e->seq), "%s", seq);
    e->json = copy;
    return true;
}

bool recent_add(recent_cache *c, const char *room, const char *seq, const char *event_json)
{
    if (!c->per_room || !seqnum_valid(seq) || !room || !room_id_valid(room, strlen(room)))
        return true;
    char *copy = strdup(event_json); /* before the lock: the lock is for pointer work only */
    bool ok = false;
    pthread_mutex_lock(&c->mu);
    room_ring *r = ring_of(c, room);
    if (r) {
        DL_DELETE(c->order, r); /* now the most recently added to */
        DL_APPEND(c->order, r);
    } else if (copy) {
        r = ring_open(c, room);
    }
    if (r)
        ok = ring_add(c, r, seq, copy);
    else
        free(copy); /* no ring: the room's pages come from PostgreSQL */
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* Copies of the entries below before, newest first; 0 (out freed) when out of memory. */
static size_t copy_page(recent_cache *c, room_ring *r, const char *before, size_t limit,
                        recent_entry *out, bool *oom)
{
    bool bounded = before && before[0];
    size_t n = 0;
    for (size_t i = r->len; i-- > 0 && n < limit;) {
        recent_entry *e = at(c, r, i);
        if (bounded && seqnum_cmp(e->seq, before) >= 0) continue;
        if (!(out[n].json = strdup(e->json))) {
            recent_entries_free(out, n);
            *oom = true;
            return 0;
        }
        snprintf(out[n++].seq, sizeof(out[0].seq), "%s", e->seq);
    }
    return n;
}

size_t recent_page(recent_cache *c, const char *room, const char *before, size_t limit,
                   recent_entry *out, char db_before[SEQNUM_BUF])
{
    bool bounded = before && before[0];
    snprintf(db_before, SEQNUM_BUF, "%s", bounded ? before : "");
    if (!c->per_room) return 0;
    size_t n = 0;
    bool oom = false;
    pthread_mutex_lock(&c->mu);
    room_ring *r = ring_of(c, room);
    if (r && r->len) {
        const char *oldest = at(c, r, 0)->seq;
        if (!bounded || seqnum_cmp(oldest, before) < 0)
            snprintf(db_before, SEQNUM_BUF, "%s", oldest);
        n = copy_page(c, r, before, limit, out, &oom);
    }
    pthread_mutex_unlock(&c->mu);
    /* out of memory: answer from PostgreSQL alone rather than with a hole */
    if (oom) snprintf(db_before, SEQNUM_BUF, "%s", bounded ? before : "");
    return n;
}

void recent_entries_free(recent_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) free(e[i].json);
}

bool recent_add_message(recent_cache *c, const chat_message *m, const char *seq,
                        const char *server_ts)
{
    chat_message copy = *m; /* the history API does not show who sent which clientMessageId */
    copy.client_message_id[0] = '\0';
    char *json = broadcast_event_to_json(&copy, server_ts, seq);
    bool ok = json && recent_add(c, m->room_id, seq, json);
    free(json);
    return ok;
}
