/*
 * broadcast_path — what a subscriber asks for: /chat/{roomId}[?since=<sequenceNumber>].
 *
 * Contract:
 *  - bc_target_parse() takes the request path (without the query) and the query arguments as
 *    "name=value" strings (libwebsockets splits and URL-decodes them). It returns 0 and fills
 *    out, or the HTTP status to refuse the handshake with (404 for a path that is not
 *    /chat/{roomId} or a room that is not a room id, 400 for a bad query) and a one-line reason
 *    that names what is wrong, e.g. "room 'a?b' is not a room id (…)". What the client sent
 *    is quoted with characters outside [A-Za-z0-9/-_.=~] shown as '?' (the reason goes back in
 *    an HTML body), at most 48 of them.
 *  - roomId is a room id (room.h: 1-64 of [A-Za-z0-9_-]; every consumer serves every room); since,
 * when present, is a valid sequence number (seqnum.h); userId (1-100000, canonical decimal) and
 * username (3-20 ASCII letters or digits) identify a member (docs/protocol.md §2) and come together
 * or not at all (access_token, the identity token, is not seen here: broadcast.c reads it
 * with auth.h and leaves it out of args); any other query argument, or one given twice, is refused
 * (a typo must not silently turn a replay into a live-only subscription).
 */
#ifndef CHATFLOW_BROADCAST_PATH_H
#define CHATFLOW_BROADCAST_PATH_H

#include <stddef.h>

#include <stdint.h>

#include "message.h"
#include "seqnum.h"

typedef struct {
    char room[ROOM_ID_BUF];
    char since[SEQNUM_BUF]; /* "" when absent */
    uint32_t user_id;       /* 0: an anonymous subscriber */
    char username[CHAT_USERNAME_MAX + 1];
    int64_t
        token_expires_s; /* identity tokens on: when the token runs out (exp + leeway); else 0 */
} bc_target;

int bc_target_parse(const char *path, const char *const *args, size_t nargs, bc_target *out,
                    char *reason, size_t reason_len);

#endif
