/* presence — per-room member tables; see presence.h.
 *
 * Rooms are found by id in a uthash table; an entry exists only while the room has members, so
 * the table holds at most rooms_max entries and memory follows the rooms people are in. Each room
 * keeps its members in an array sorted by user id: lookups are a binary search and the tables are
 * small (member_cap, 100 by default), so an insert's memmove costs less than a hash table's
 * bookkeeping would. */
#include "presence.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "room.h"
#include "timeutil.h"

typedef struct room_members room_members;

/* Out of memory inside HASH_ADD is reported on the entry instead of exiting the process. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(entry) ((entry)->add_failed = true)
#include <uthash.h>

struct room_members {
    char id[ROOM_ID_BUF]; /* the key */
    presence_member *members;
    size_t n, cap;
    bool add_failed;
    UT_hash_handle hh;
};

struct presence {
    pthread_mutex_t mu;
    size_t rooms_max, member_cap;
    room_members *rooms; /* uthash head; only rooms with members */
};

presence *presence_new(size_t rooms_max, size_t member_cap)
{
    if (rooms_max < 1 || member_cap < 1) return NULL;
    presence *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->rooms_max = rooms_max;
    p->member_cap = member_cap;
    return p;
}

static void room_free(room_members *rm)
{
    free(rm->members);
    free(rm);
}

void presence_free(presence *p)
{
    if (!p) return;
    room_members *rm, *next;
    HASH_ITER(hh, p->rooms, rm, next)
    {
        HASH_DEL(p->rooms, rm);
        room_free(rm);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

size_t presence_member_cap(const presence *p) { return p->member_cap; }

size_t presence_room_count(presence *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = HASH_COUNT(p->rooms);
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* The room's entry, NULL when it has no members (or room is not an id). */
static room_members *room_of(presence *p, const char *room)
{
    room_members *rm = NULL;
    size_t len = room ? strlen(room) : 0;
    if (room_id_valid(room, len)) HASH_FIND(hh, p->rooms, room, len, rm);
    return rm;
}

/* Whether a room without members may get an entry now. */
static bool may_open(const presence *p, const char *room)
{
    return room && room_id_valid(room, strlen(room)) && HASH_COUNT(p->rooms) < p->rooms_max;
}

/* A new empty entry for a valid room, in the table; NULL on OOM. */
static room_members *room_open(presence *p, const char *room)
{
    room_members *rm = calloc(1, sizeof(*rm));
    if (!rm) return NULL;
    size_t len = strlen(room);
    memcpy(rm->id, room, len + 1);
    HASH_ADD(hh, p->rooms, id, len, rm);
    if (rm->add_failed) {
        free(rm);
        return NULL;
    }
    return rm;
}

/* After a member left: a room nobody is in keeps no memory. */
static void room_close_if_empty(presence *p, room_members *rm)
{
    if (rm->n) return;
    HASH_DEL(p->rooms, rm);
    room_free(rm);
}

/* Index of user_id in the room, or where it would be inserted (*found false). */
static size_t find(const room_members *rm, uint32_t user_id, bool *found)
{
    size_t lo = 0, hi = rm->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rm->members[mid].user_id < user_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < rm->n && rm->members[lo].user_id == user_id;
    return lo;
}

static presence_member *member_locked(presence *p, const char *room, uint32_t user_id)
{
    room_members *rm = room_of(p, room);
    bool found = false;
    size_t i = rm ? find(rm, user_id, &found) : 0;
    return found ? &rm->members[i] : NULL;
}

bool presence_admits(presence *p, const char *room, uint32_t user_id)
{
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    bool ok = rm ? rm->n < p->member_cap || member_locked(p, room, user_id) : may_open(p, room);
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* A new member at index i of a room that has room for it; false on OOM (nothing changed). */
static bool insert_member(presence *p, room_members *rm, size_t i, uint32_t user_id,
                          const char *username, int64_t now_ms)
{
    if (rm->n == rm->cap) {
        size_t cap = rm->cap ? rm->cap * 2 : 8;
        if (cap > p->member_cap) cap = p->member_cap;
        presence_member *grown = realloc(rm->members, cap * sizeof(*grown));
        if (!grown) return false;
        rm->members = grown;
        rm->cap = cap;
    }
    memmove(&rm->members[i + 1], &rm->members[i], (rm->n - i) * sizeof(*rm->members));
    presence_member *m = &rm->members[i];
    memset(m, 0, sizeof(*m));
    m->user_id = user_id;
    snprintf(m->username, sizeof(m->username), "%s", username);
    m->connections = 1;
    m->since_ms = m->last_seen_ms = now_ms;
    rm->n++;
    return true;
}

static presence_join_result join_locked(presence *p, const char *room, uint32_t user_id,
                                        const char *username, int64_t now_ms, room_members **out)
{
    room_members *rm = *out = room_of(p, room);
    if (!rm) {
        if (!may_open(p, room)) return PRESENCE_FULL; /* rooms_max rooms have members already */
        if (!(rm = *out = room_open(p, room))) return PRESENCE_NO_MEMORY;
    }
    bool found = false;
    size_t i = find(rm, user_id, &found);
    if (found) {
        rm->members[i].connections++;
        rm->members[i].last_seen_ms = now_ms;
        return PRESENCE_AGAIN;
    }
    if (rm->n >= p->member_cap) return PRESENCE_FULL;
    if (insert_member(p, rm, i, user_id, username, now_ms)) return PRESENCE_FIRST;
    room_close_if_empty(p, rm); /* a room opened for this join keeps nothing */
    *out = room_of(p, room);
    return PRESENCE_NO_MEMORY;
}

presence_join_result presence_join(presence *p, const char *room, uint32_t user_id,
                                   const char *username, int64_t now_ms, size_t *online)
{
    pthread_mutex_lock(&p->mu);
    room_members *rm = NULL;
    presence_join_result res = join_locked(p, room, user_id, username, now_ms, &rm);
    if (online) *online = rm ? rm->n : 0;
    pthread_mutex_unlock(&p->mu);
    return res;
}

bool presence_leave(presence *p, const char *room, uint32_t user_id, int64_t now_ms, size_t *online)
{
    bool gone = false;
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    bool found = false;
    size_t i = rm ? find(rm, user_id, &found) : 0;
    if (found) {
        presence_member *m = &rm->members[i];
        m->last_seen_ms = now_ms;
        if (--m->connections == 0) {
            memmove(m, m + 1, (rm->n - i - 1) * sizeof(*m));
            rm->n--;
            gone = true;
        }
    }
    if (online) *online = rm ? rm->n : 0;
    if (gone) room_close_if_empty(p, rm);
    pthread_mutex_unlock(&p->mu);
    return gone;
}

void presence_seen(presence *p, const char *room, uint32_t user_id, int64_t now_ms)
{
    pthread_mutex_lock(&p->mu);
    presence_member *m = member_locked(p, room, user_id);
    if (m) m->last_seen_ms = now_ms;
    pthread_mutex_unlock(&p->mu);
}

bool presence_advance_read(presence *p, const char *room, uint32_t user_id, const char *seq)
{
    bool advanced = false;
    pthread_mutex_lock(&p->mu);
    presence_member *m = member_locked(p, room, user_id);
    if (m && seqnum_valid(seq) && (!m->read_seq[0] || seqnum_cmp(seq, m->read_seq) > 0)) {
        snprintf(m->read_seq, sizeof(m->read_seq), "%s", seq);
        advanced = true;
    }
    pthread_mutex_unlock(&p->mu);
    return advanced;
}

bool presence_read_position(presence *p, const char *room, uint32_t user_id, char out[SEQNUM_BUF])
{
    pthread_mutex_lock(&p->mu);
    presence_member *m = member_locked(p, room, user_id);
    snprintf(out, SEQNUM_BUF, "%s", m ? m->read_seq : "");
    pthread_mutex_unlock(&p->mu);
    return m != NULL;
}

size_t presence_members(presence *p, const char *room, presence_member *out, size_t max)
{
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    size_t n = rm ? rm->n : 0;
    if (n) memcpy(out, rm->members, (n < max ? n : max) * sizeof(*out));
    pthread_mutex_unlock(&p->mu);
    return n;
}

presence_member *presence_members_copy(presence *p, const char *room, size_t *n)
{
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    *n = rm ? rm->n : 0;
    presence_member *copy =
        malloc((*n ? *n : 1) * sizeof(*copy)); /* never malloc(0): NULL means OOM */
    if (copy && *n) memcpy(copy, rm->members, *n * sizeof(*copy));
    if (!copy) *n = 0;
    pthread_mutex_unlock(&p->mu);
    return copy;
}

static json_t *member_json(const presence_member *m)
{
    char user[12], since[ISO8601_BUF], seen[ISO8601_BUF];
    snprintf(user, sizeof(user), "%u", m->user_id);
    time_format_iso8601(m->since_ms, since);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "userId", user, "username", m->username,
                          "connections", (json_int_t)m->connections, "since", since);
    if (o && m->last_seen_ms) { /* 0: the member is connected to another node */
        time_format_iso8601(m->last_seen_ms, seen);
        json_object_set_new(o, "lastSeen", json_string(seen));
    }
    return o;
}

static json_t *room_json(const presence *p, const char *room, const presence_member *members,
                         size_t n, const char *scope)
{
    json_t *online = json_array();
    for (size_t i = 0; online && i < n; i++)
        if (json_array_append_new(online, member_json(&members[i])) != 0) {
            json_decref(online);
            online = NULL;
        }
    if (!online) return NULL;
    return json_pack("{s:s, s:s, s:I, s:I, s:o}", "roomId", room, "scope", scope, "memberCap",
                     (json_int_t)p->member_cap, "onlineCount", (json_int_t)n, "online", online);
}

json_t *presence_room_json(presence *p, const char *room)
{
    if (!room || !room_id_valid(room, strlen(room))) return NULL;
    size_t n = 0;
    presence_member *members = presence_members_copy(p, room, &n);
    json_t *o = members ? room_json(p, room, members, n, "node") : NULL;
    free(members);
    return o;
}

static int by_user_id(const void *a, const void *b)
{
    uint32_t x = ((const presence_member *)a)->user_id, y = ((const presence_member *)b)->user_id;
    return (x > y) - (x < y);
}

json_t *presence_cluster_room_json(presence *p, const char *room, presence_member *members,
                                   size_t n)
{
    if (!room || !room_id_valid(room, strlen(room))) return NULL;
    qsort(members, n, sizeof *members, by_user_id);
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        presence_member *here = member_locked(p, room, members[i].user_id);
        members[i].last_seen_ms = here ? here->last_seen_ms : 0;
    }
    pthread_mutex_unlock(&p->mu);
    return room_json(p, room, members, n, "cluster");
}
