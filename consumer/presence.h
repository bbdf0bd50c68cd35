/*
 * presence — who is online in each room: the identified subscribers (members) of this consumer's
 * rooms, their connection counts, since when and when last seen, and how far each has read.
 *
 * Contract:
 *  - A member is a (room, userId); several connections of one user count once. At most
 *    member_cap members per room: presence_join() of a new user into a full room is refused
 *    (PRESENCE_FULL) and changes nothing; a user already online may always add a connection.
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
 *    presence_room_json() builds the presence API answer. Rooms outside [room_min, room_max]
 *    have no members.
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

/* NULL on OOM or a bad range. */
presence *presence_new(long room_min, long room_max, size_t member_cap);
void presence_free(presence *p);
size_t presence_member_cap(const presence *p);

/* Would presence_join() take this user now? (For refusing at the handshake.) */
bool presence_admits(presence *p, long room, uint32_t user_id);
presence_join_result presence_join(presence *p, long room, uint32_t user_id, const char *username,
                                   int64_t now_ms, size_t *online);
bool presence_leave(presence *p, long room, uint32_t user_id, int64_t now_ms, size_t *online);
void presence_seen(presence *p, long room, uint32_t user_id, int64_t now_ms);
bool presence_advance_read(presence *p, long room, uint32_t user_id, const char *seq);
/* The member's read position in this session into out ("" when none); false when not online. */
bool presence_read_position(presence *p, long room, uint32_t user_id, char out[SEQNUM_BUF]);

/* Copies up to max members of the room into out; returns how many there are in all. */
size_t presence_members(presence *p, long room, presence_member *out, size_t max);
/* All the room's members at one instant, in a malloc'd array of *n the caller frees; NULL (and
 * *n 0) only when out of memory. */
presence_member *presence_members_copy(presence *p, long room, size_t *n);
/* {"roomId","memberCap","onlineCount","online":[{userId,username,connections,since,lastSeen}]};
 * NULL on OOM. */
json_t *presence_room_json(presence *p, long room);

#endif
