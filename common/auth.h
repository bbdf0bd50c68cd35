/*
 * auth — who is on the other end of a handshake or an API call: the identity token (jwt.h) both
 * services check when CHATFLOW_AUTH is on (docs/protocol.md "Identity").
 *
 * Contract:
 *  - auth_open() builds, once at start-up, the verifier from the common settings (config.h):
 *    HS256 when CHATFLOW_AUTH_HS256_SECRET is set, RS256 and ES256 when CHATFLOW_AUTH_JWKS_URL
 *    is (the key set is fetched now, so a bad URL stops start-up; jwks.h refreshes it on an
 *    unknown kid), issuer, audience and leeway as configured. With CHATFLOW_AUTH off it succeeds
 *    with *out NULL: a NULL auth means "no checks", and every function here accepts it. Error
 *    text never holds the secret. auth_close() frees it after every user is done.
 *  - auth_pick_token(): the token of a request, from "Authorization: Bearer <t>" (scheme
 *    case-insensitive, surrounding blanks ignored) or else the access_token query value (for
 *    browsers, which cannot set headers on a WebSocket). AUTH_TOKEN_NONE when neither is there;
 *    AUTH_TOKEN_BAD for an Authorization header of another scheme or an empty Bearer value.
 *  - auth_check(): the HTTP status for a request to `room` carrying that token: 0 (allowed, id
 *    filled), 401 (no token, or jwt_verify refused it: reason is the jwt reason, e.g. "token
 *    expired", safe to show and to log) or 403 (a valid token that does not allow the room, or
 *    whose subject is not a ChatFlow userId 1..CHAT_USER_ID_MAX in canonical decimal, or whose
 *    name is not a valid username — the token is the identity, so it must be one the protocol
 *    can carry). room NULL skips the room check.
 *  - auth_token_from_lws(): reads the header and the access_token argument of an lws request
 *    into buf (JWT_MAX_TOKEN + 1 bytes); the token, or NULL with *kind saying why.
 *  - auth_parse_user_id(): is s a userId in the protocol's canonical form (decimal 1..
 *    CHAT_USER_ID_MAX, no sign, no leading zero)? The rule a token's sub must meet.
 *  - Thread-safe after auth_open() (jwt.h: the verifier is immutable).
 */
#ifndef CHATFLOW_AUTH_H
#define CHATFLOW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jwt.h"
#include "message.h"

struct lws;

typedef struct auth auth;

typedef struct {
    uint32_t user_id;
    char user_id_str[8];                  /* the token's sub: "1".."100000" */
    char username[CHAT_USERNAME_MAX + 1]; /* the token's name; "" when it has none */
    int64_t exp;                          /* the token's exp (seconds since the epoch) */
    int leeway_s;                         /* exp is past at exp + leeway_s */
} auth_identity;

typedef enum { AUTH_TOKEN_FOUND, AUTH_TOKEN_NONE, AUTH_TOKEN_BAD } auth_token_kind;

#define AUTH_TOKEN_BUF (JWT_MAX_TOKEN + 1)
/* WebSocket close code when a connection's token expires (docs/protocol.md). */
#define AUTH_CLOSE_TOKEN_EXPIRED 4401

bool auth_open(const struct chatflow_common_settings *c, auth **out, char *err, size_t err_len);
void auth_close(auth *a);

/* authorization: the header value or NULL; access_token: the query value or NULL. */
auth_token_kind auth_pick_token(const char *authorization, const char *access_token,
                                const char **token, size_t *len);

int auth_check(const auth *a, auth_token_kind kind, const char *token, size_t len, const char *room,
               auth_identity *id, char *reason, size_t reason_len);

bool auth_parse_user_id(const char *s, uint32_t *out);

const char *auth_token_from_lws(struct lws *wsi, char buf[AUTH_TOKEN_BUF], size_t *len,
                                auth_token_kind *kind);

#endif
