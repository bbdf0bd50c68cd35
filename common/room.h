/*
 * room — what a room id is and which queue shard carries it (docs/protocol.md §4).
 *
 * Contract:
 *  - A room id is 1-64 characters of [A-Za-z0-9_-]: "7", "team-alpha", a UUID. Ids are
 *    compared as byte strings ("07" and "7" are two rooms).
 *  - room_id_check() says whether s is one, and if not fills err with a one-line reason that
 *    names the rule ("roomId: must be 1-64 characters of A-Z a-z 0-9 _ -").
 *  - room_shard() maps a room onto one of `shards` FIFO queues, numbered 1..shards. A canonical
 *    decimal id d with 1 <= d <= shards goes to shard d (the layout of one queue per room
 *    1..20 is kept); every other id goes to 1 + FNV-1a-32(id bytes) mod shards. The mapping
 *    depends on nothing but the id and the shard count, so every producer and consumer agrees
 *    on it without talking; changing the shard count moves rooms (docs/operations.md).
 *  - room_fnv1a32() is that hash (32-bit FNV-1a over the bytes of a NUL-terminated string),
 *    exported for other stable keys (the shard leases' advisory-lock class, shard_lease.h).
 *  - Pure functions, thread-safe.
 */
#ifndef CHATFLOW_ROOM_H
#define CHATFLOW_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROOM_ID_MAX 64
#define ROOM_ID_BUF (ROOM_ID_MAX + 1)
#define ROOM_SHARDS_MAX 1000

uint32_t room_fnv1a32(const char *s);
bool room_id_check(const char *s, size_t len, char *err, size_t err_len);
static inline bool room_id_valid(const char *s, size_t len)
{
    return room_id_check(s, len, NULL, 0);
}

/* shards >= 1; returns 1..shards. id must be valid. */
int room_shard(const char *id, int shards);

#endif
