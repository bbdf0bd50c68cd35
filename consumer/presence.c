/* presence — per-room member tables; see presence.h.
 *
 * Each room keeps its members in an array sorted by user id: lookups are a binary search and the
 * tables are small (member_cap, 100 by default), so an insert's memmove costs less than a hash
 * table's bookkeeping would. */
#include "presence.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

typedef struct {
    presence_member *members;
    size_t n, cap;
} room_members;

struct presence {
    pthread_mutex_t mu;
    long room_min, room_max;
    size_t member_cap;
    room_members *rooms;
};

presence *presence_new(long room_min, long room_max, size_t member_cap)
{
    if (room_min < 1 || room_max < room_min || member_cap < 1) return NULL;
    presence *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->rooms = calloc((size_t)(room_max - room_min + 1), sizeof(*p->rooms));
    if (!p->rooms) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->room_min = room_min;
    p->room_max = room_max;
    p->member_cap = member_cap;
    return p;
}

void presence_free(presence *p)
{
    if (!p) return;
    for (long r = p->room_min; r <= p->room_max; r++) free(p->rooms[r - p->room_min].members);
    free(p->rooms);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

size_t presence_member_cap(const presence *p) { return p->member_cap; }

static room_members *room_of(presence *p, long room)
{
    return room >= p->room_min && room <= p->room_max ? &p->rooms[room - p->room_min] : NULL;
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

static presence_member *member_locked(presence *p, long room, uint32_t user_id)
{
    room_members *rm = room_of(p, room);
    bool found = false;
    size_t i = rm ? find(rm, user_id, &found) : 0;
    return found ? &rm->members[i] : NULL;
}

bool presence_admits(presence *p, long room, uint32_t user_id)
{
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    bool ok = rm && (rm->n < p->member_cap || member_locked(p, room, user_id));
    pthread_mutex_unlock(&p->mu);
    return ok;
}

presence_join_result presence_join(presence *p, long room, uint32_t user_id, const char *username,
                                   int64_t now_ms, size_t *online)
{
    presence_join_result res;
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    bool found = false;
    size_t i = rm ? find(rm, user_id, &found) : 0;
    if (!rm) {
        res = PRESENCE_FULL;
    } else if (found) {
        rm->members[i].connections++;
        rm->members[i].last_seen_ms = now_ms;
        res = PRESENCE_AGAIN;
    } else if (rm->n >= p->member_cap) {
        res = PRESENCE_FULL;
    } else {
        if (rm->n == rm->cap) {
            size_t cap = rm->cap ? rm->cap * 2 : 8;
            if (cap > p->member_cap) cap = p->member_cap;
            presence_member *grown = realloc(rm->members, cap * sizeof(*grown));
            if (!grown) {
                pthread_mutex_unlock(&p->mu);
                return PRESENCE_NO_MEMORY;
            }
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
        res = PRESENCE_FIRST;
    }
    if (online) *online = rm ? rm->n : 0;
    pthread_mutex_unlock(&p->mu);
    return res;
}

bool presence_leave(presence *p, long room, uint32_t user_id, int64_t now_ms, size_t *online)
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
    pthread_mutex_unlock(&p->mu);
    return gone;
}

void presence_seen(presence *p, long room, uint32_t user_id, int64_t now_ms)
{
    pthread_mutex_lock(&p->mu);
    presence_member *m = member_locked(p, room, user_id);
    if (m) m->last_seen_ms = now_ms;
    pthread_mutex_unlock(&p->mu);
}

bool presence_advance_read(presence *p, long room, uint32_t user_id, const char *seq)
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

bool presence_read_position(presence *p, long room, uint32_t user_id, char out[SEQNUM_BUF])
{
    pthread_mutex_lock(&p->mu);
    presence_member *m = member_locked(p, room, user_id);
    snprintf(out, SEQNUM_BUF, "%s", m ? m->read_seq : "");
    pthread_mutex_unlock(&p->mu);
    return m != NULL;
}

size_t presence_members(presence *p, long room, presence_member *out, size_t max)
{
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    size_t n = rm ? rm->n : 0;
    if (n) memcpy(out, rm->members, (n < max ? n : max) * sizeof(*out));
    pthread_mutex_unlock(&p->mu);
    return n;
}

presence_member *presence_members_copy(presence *p, long room, size_t *n)
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
    time_format_iso8601(m->last_seen_ms, seen);
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "userId", user, "username", m->username,
                     "connections", (json_int_t)m->connections, "since", since, "lastSeen", seen);
}

json_t *presence_room_json(presence *p, long room)
{
    char room_s[24];
    snprintf(room_s, sizeof(room_s), "%ld", room);
    json_t *online = json_array();
    pthread_mutex_lock(&p->mu);
    room_members *rm = room_of(p, room);
    size_t n = rm ? rm->n : 0;
    for (size_t i = 0; online && i < n; i++)
        if (json_array_append_new(online, member_json(&rm->members[i])) != 0) {
            json_decref(online);
            online = NULL;
        }
    pthread_mutex_unlock(&p->mu);
    if (!online) return NULL;
    return json_pack("{s:s, s:I, s:I, s:o}", "roomId", room_s, "memberCap",
                     (json_int_t)p->member_cap, "onlineCount", (json_int_t)n, "online", online);
}
