/*
 * dev_tokens — the development-only token endpoint, GET /dev/token?name=<username>[&userId=<id>]
 * on the producer's WebSocket port (CHATFLOW_DEV_TOKENS; docs/protocol.md §8.1). It lets the chat
 * page log in by name on a laptop, where there is no identity provider; anyone who can reach it
 * can be anyone, so it is off by default and start-up logs a warning while it is on.
 *
 * Contract:
 *  - dev_tokens_new() copies what it needs from the settings (the HS256 secret, issuer, audience,
 *    token lifetime); NULL when settings->dev_tokens is off (the endpoint answers 404 then) or
 *    when out of memory (*failed set). dev_tokens_free() accepts NULL.
 *  - dev_tokens_issue(): name must be a ChatFlow username (3-20 ASCII letters or digits);
 *    user_id, when given (non-NULL, non-empty), a userId 1..100000 in canonical decimal, else it
 *    is derived from the name (dev_tokens_user_id_for: stable, so a name is the same user on
 *    every login and every restart; two names can share an id, which is acceptable for a
 *    development endpoint and documented). Returns 200 with *body the malloc'd JSON
 *    {"token","userId","username","expiresAt","ttlSeconds"}; 400 with reason for a bad name or
 *    userId; 500 when minting failed. The token's claims: sub, name, iat, exp = now + ttl, and
 *    iss / aud when the settings name them, so the services' own verifier accepts it.
 *  - Stateless after creation; used by the WebSocket service thread.
 */
#ifndef CHATFLOW_PRODUCER_DEV_TOKENS_H
#define CHATFLOW_PRODUCER_DEV_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "settings.h"

typedef struct dev_tokens dev_tokens;

dev_tokens *dev_tokens_new(const producer_settings *s, bool *failed);
void dev_tokens_free(dev_tokens *d);
int dev_tokens_issue(const dev_tokens *d, const char *name, const char *user_id, int64_t now_s,
                     char **body, char *reason, size_t reason_len);
uint32_t dev_tokens_user_id_for(const char *name);

#endif
