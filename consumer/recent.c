/* recent — per-room rings of the newest event frames; see recent.h. */
#include "recent.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pthread_mutex_t mu;
    recent_entry *ring; /* per_room slots; head is the oldest */
    size_t head, len;
} room_ring;

struct recent_cache {
    long room_min, room_max;
    size_t per_room;
    room_ring *rooms;
};

recent_cache *recent_new(long room_min, long room_max, size_t per_room)
{
    if (room_min < 1 || room_max < room_min) return NULL;
    recent_cache *c = calloc(1, sizeof(*c));
    size_t n = (size_t)(room_max - room_min + 1);
    if (!c || !(c->rooms = calloc(n, sizeof(*c->rooms)))) {
        free(c);
        return NULL;
    }
    c->room_min = room_min;
    c->room_max = room_max;
    c->per_room = per_room;
    for (size_t r = 0; r < n; r++) {
        pthread_mutex_init(&c->rooms[r].mu, NULL);
        if (per_room && !(c->rooms[r].ring = calloc(per_room, sizeof(recent_entry)))) {
            c->room_max = room_min + (long)r; /* free what exists */
            recent_free(c);
            return NULL;
        }
    }
    return c;
}

static room_ring *ring_of(recent_cache *c, long room)
{
    return room >= c->room_min && room <= c->room_max ? &c->rooms[room - c->room_min] : NULL;
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

void recent_free(recent_cache *c)
{
    if (!c) return;
    for (long room = c->room_min; room <= c->room_max; room++) {
        room_ring *r = ring_of(c, room);
        if (r->ring) clear_ring(c, r);
        free(r->ring);
        pthread_mutex_destroy(&r->mu);
    }
    free(c->rooms);
    free(c);
}

bool recent_add(recent_cache *c, long room, const char *seq, const char *event_json)
{
    room_ring *r = ring_of(c, room);
    if (!r || !c->per_room || !seqnum_valid(seq)) return true;
    char *copy = strdup(event_json);
    bool ok = true;
    pthread_mutex_lock(&r->mu);
    if (r->len && seqnum_cmp(seq, at(c, r, r->len - 1)->seq) <= 0) {
        free(copy); /* a redelivery: already here, or older than everything here */
    } else if (!copy) {
        clear_ring(c, r); /* a hole would be served as history: forget rather than lie */
        ok = false;
    } else {
        if (r->len == c->per_room) {
            free(at(c, r, 0)->json);
            r->head = (r->head + 1) % c->per_room;
            r->len--;
        }
        recent_entry *e = at(c, r, r->len++);
        snprintf(e->seq, sizeof(e->seq), "%s", seq);
        e->json = copy;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

size_t recent_page(recent_cache *c, long room, const char *before, size_t limit, recent_entry *out,
                   char db_before[SEQNUM_BUF])
{
    bool bounded = before && before[0];
    snprintf(db_before, SEQNUM_BUF, "%s", bounded ? before : "");
    room_ring *r = ring_of(c, room);
    if (!r || !c->per_room) return 0;
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    if (r->len) {
        const char *oldest = at(c, r, 0)->seq;
        if (!bounded || seqnum_cmp(oldest, before) < 0)
            snprintf(db_before, SEQNUM_BUF, "%s", oldest);
    }
    for (size_t i = r->len; i-- > 0 && n < limit;) {
        recent_entry *e = at(c, r, i);
        if (bounded && seqnum_cmp(e->seq, before) >= 0) continue;
        if (!(out[n].json = strdup(e->json))) {
            /* out of memory: answer from PostgreSQL alone rather than with a hole */
            recent_entries_free(out, n);
            n = 0;
            snprintf(db_before, SEQNUM_BUF, "%s", bounded ? before : "");
            break;
        }
        snprintf(out[n++].seq, sizeof(out[0].seq), "%s", e->seq);
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

void recent_entries_free(recent_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) free(e[i].json);
}
