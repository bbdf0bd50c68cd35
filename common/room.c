#include "room.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool room_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

bool room_id_check(const char *s, size_t len, char *err, size_t err_len)
{
    bool ok = s && len >= 1 && len <= ROOM_ID_MAX;
    for (size_t i = 0; ok && i < len; i++) ok = room_char(s[i]);
    if (!ok && err && err_len)
        snprintf(err, err_len, "roomId: must be 1-%d characters of A-Z a-z 0-9 _ -", ROOM_ID_MAX);
    return ok;
}

/* The decimal value of a canonical decimal id (no sign, no leading zero) up to limit, else 0. */
static long small_decimal(const char *id, long limit)
{
    if (id[0] < '1' || id[0] > '9') return 0;
    long v = 0;
    for (const char *p = id; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        v = v * 10 + (*p - '0');
        if (v > limit) return 0;
    }
    return v;
}

/* FNV-1a (32 bits): documented in docs/protocol.md §4 so other clients can compute a room's
 * shard; a dozen lines, not worth a dependency. */
uint32_t room_fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

int room_shard(const char *id, int shards)
{
    if (shards < 1) return 1;
    long d = small_decimal(id, shards);
    if (d >= 1) return (int)d;
    return 1 + (int)(room_fnv1a32(id) % (uint32_t)shards);
}
