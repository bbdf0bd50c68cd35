/*
 * uuid — RFC 9562 UUIDs as 36-char lower-case strings.
 *
 * Contract:
 *  - uuid_v4(): 122 random bits from OpenSSL's CSPRNG (RAND_bytes); returns false only if the
 *    CSPRNG fails, which callers must treat as fatal for that message.
 *  - uuid_v5(ns, name): SHA-1 name-based UUID (RFC 9562 §5.5); same inputs, same output.
 *  - uuid_parse(): accepts the canonical 8-4-4-4-12 hex form (any case) into 16 bytes.
 *  - CHATFLOW_MESSAGE_NAMESPACE is the namespace of message ids derived from
 *    (userId, roomId, clientMessageId); changing it would change every derived id.
 */
#ifndef CHATFLOW_UUID_H
#define CHATFLOW_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UUID_STR_BUF 37

extern const uint8_t CHATFLOW_MESSAGE_NAMESPACE[16];

bool uuid_v4(char out[UUID_STR_BUF]);
void uuid_v5(const uint8_t ns[16], const char *name, size_t name_len, char out[UUID_STR_BUF]);
bool uuid_parse(const char *s, uint8_t out[16]);

#endif
