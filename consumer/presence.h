/*
 * presence — who is online in each room: the identified subscribers (members) of this consumer's
 * rooms, their connection counts, since when and when last seen, and how far each has read.
 *
 * Contract:
 *  - A room is a room id (room.h: 1-64 characters of [A-Za-z0-9_-], compared as bytes), passed as
 *    a NUL-terminated string that is copied, never kept. Any valid id is served.
 *  - A member is a (room, userId); several connections of one user count once. At most
 *    member_cap members per room: presence_join() of a new user into a full room is refused
 *    (PRESENCE_FULL) and changes nothing; a user already online may always add a connection.
 *  - Memory follows the rooms with members: a room's entry is made when its first member joins
 *    and freed when its last member leaves. At most rooms_max rooms have members at once: a join
 *    that would make room number rooms_max + 1 is refused like a full room (PRESENCE_FULL, and
 *    presence_admits() false), as is a join into an invalid room id. presence_room_count() says
 *    how many rooms have members.
 *  - presence_join() returns PRESENCE_FIRST when the user was not online in the room (the
 *    caller announces ONLINE), PRESENCE_AGAIN for another connection; presence_leave() returns
 *    true when that was the user's last connection (the caller announces OFFLINE). *online
 *    gets the room's member count after the change.
 *  - presence_seen() records activity (a pong or a frame) as last seen. presence_advance_read()
 *    moves a member's read position forward only: true when seq is beyond what the member had
 *    read in this session (the caller announces READ and stores it); presence_read_position()
 *    reads it back (an announcement that was put off announces the newest position).
 *  - presence_members() / presence_members_copy() copy the room's members (user id order) for
 *    announcing a snapshot;
 *    presence_room_json() builds the presence API answer. A room nobody is in has no members:
 *    an empty list, the same shape as any other room, not an error. Other calls about an invalid
 *    id find no member.
 *  - Thread-safe (one mutex): the WebSocket service thread writes, HTTP threads read. Nothing is
 *    kept for a member once its last connection has gone (last seen of offline users comes from
 *    the database).
 */
#ifndef CHATFLOW_CONSUMER_PRESENCE_H
#define CHATFLOW_CONSUMER_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "message.h"
#include "seqnum.h"

typedef struct presence presence;

typedef struct {
    uint32_t user_id;
    char username[CHAT_USERNAME_MAX + 1];
    unsigned connections;
    int64_t since_ms; /* first connection of this stay */
    int64_t last_seen_ms;
    char read_seq[SEQNUM_BUF]; /* "" until the member sends READ */
} presence_member;

typedef enum {
    PRESENCE_FIRST,
    PRESENCE_AGAIN,
    PRESENCE_FULL,
    PRESENCE_NO_MEMORY
} presence_join_result;

/* NULL on OOM, or when rooms_max or member_cap is 0. */
presence *presence_new(size_t rooms_max, size_t member_cap);
void presence_free(presence *p);
size_t presence_member_cap(const presence *p);
/* How many rooms have members now (each has an entry). */
size_t presence_room_count(presence *p);

/* Would presence_join() take this user now? (For refusing at the handshake.) */
bool presence_admits(presence *p, const char *room, uint32_t user_id);
presence_join_result presence_join(presence *p, const char *room, uint32_t user_id,
                                   const char *username, int64_t now_ms, size_t *online);
bool presence_leave(presence *p, const char *room, uint32_t user_id, int64_t now_ms,
                    size_t *online);
void presence_seen(presence *p, const char *room, uint32_t user_id, int64_t now_ms);
bool presence_advance_read(presence *p, const char *room, uint32_t user_id, const char *seq);
/* The member's read position in this session into out ("" when none); false when not online. */
bool presence_read_position(presence *p, const char *room, uint32_t user_id, char out[SEQNUM_BUF]);

/* Copies up to max members of the room into out; returns how many there are in all. */
size_t presence_members(presence *p, const char *room, presence_member *out, size_t max);
/* All the room's members at one instant, in a malloc'd array of *n the caller frees; NULL (and
 * *n 0) only when out of memory. */
presence_member *presence_members_copy(presence *p, const char *room, size_t *n);
/* {"roomId","scope":"node","memberCap","onlineCount","online":[{userId,username,connections,
 * since,lastSeen}]} of this node's members; NULL on OOM or an invalid room id. */
json_t *presence_room_json(presence *p, const char *room);
/* The same with "scope":"cluster" for the members of every node (presence_cluster_room()),
 * sorted here by user id; lastSeen only for members connected to this node. */
json_t *presence_cluster_room_json(presence *p, const char *room, presence_member *members,
                                   size_t n);

#endif
