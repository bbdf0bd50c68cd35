/*
 * message — the ChatFlow message model (protocol.md §1, §2, §4), built on jansson.
 *
 * Contract:
 *  - chat_frame_parse(): one client text frame (protocol.md §1) -> chat_message with the client
 * fields filled. Returns CHAT_OK, or an error code with a one-line human message in err that names
 * the field and the rule broken (e.g. "username: must be 3-20 ASCII letters or digits"). Order of
 * checks: size (MESSAGE_TOO_LARGE), UTF-8 of the whole frame (INVALID_JSON), JSON syntax and
 * object-ness (INVALID_JSON), then each field (VALIDATION_ERROR). The frame need not be
 * NUL-terminated. The frame's clientMessageId, when present and valid, is copied even when another
 * field fails, so the error frame can echo it.
 *  - Frame kinds (docs/protocol.md): a frame without "type", or with "type":"MESSAGE", is a chat
 *    message (kind CHAT_KIND_MESSAGE, every protocol.md §1 rule). "type":"TYPING" is a typing
 * indicator (kind CHAT_KIND_TYPING): userId and username by the same rules, timestamp optional (""
 * when absent), no message fields. Any other "type" is a VALIDATION_ERROR.
 *  - chat_message_assign_id(): fills messageId: v5 of "userId:roomId:clientMessageId" in
 *    CHATFLOW_MESSAGE_NAMESPACE when clientMessageId is set, else v4.
 *  - queue_message_to_json() / queue_message_parse(): the SQS body (protocol.md §4), all strings.
 *    queue_message_parse() is the consumer's validation: every §1 rule again, plus messageId is a
 *    UUID and roomId a room id (room.h); err says what is wrong (for the DLQ reason). A typing
 *    event travels as {"type":"TYPING", messageId (the event's id), roomId, userId, username,
 *    timestamp, serverId, clientIp, receivedAt}; queue_message_parse() sets kind from "type".
 *  - broadcast_event_to_json(): the BroadcastEvent frame (protocol.md §2), plus clientMessageId
 * when the message has one; for a typing event {"type":"TYPING", roomId, userId, username,
 * timestamp}.
 *  - ack_to_json() / error_to_json(): the producer's answers (protocol.md §1); the ack also carries
 *    "delivery":"sent" (docs/protocol.md: the message is durable in SQS).
 *  - Every *_to_json() returns a malloc'd NUL-terminated string the caller frees, or NULL on
 *    allocation failure. Nothing here keeps state; all functions are thread-safe.
 *  - utf8_validate() checks well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and
 *    utf8_codepoints() counts code points of valid UTF-8.
 */
#ifndef CHATFLOW_MESSAGE_H
#define CHATFLOW_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "room.h"
#include "uuid.h"
#include "timeutil.h"

#define CHAT_USERNAME_MIN 3
#define CHAT_USERNAME_MAX 20
#define CHAT_TEXT_MAX_CP 500
#define CHAT_TEXT_BUF (CHAT_TEXT_MAX_CP * 4 + 1) /* 500 code points of up to 4 bytes */
#define CHAT_USER_ID_MAX 100000
#define CHAT_CMID_MAX 64
#define CHAT_DEFAULT_MAX_FRAME 4096

typedef enum {
    CHAT_OK = 0,
    CHAT_INVALID_JSON,
    CHAT_VALIDATION_ERROR,
    CHAT_MESSAGE_TOO_LARGE,
    CHAT_RATE_LIMITED,
    CHAT_QUEUE_UNAVAILABLE,
    CHAT_QUEUE_ERROR,
    CHAT_FORBIDDEN_USER, /* identity tokens on: the frame's userId is not the token's subject */
} chat_status;
#define CHAT_STATUS_LAST CHAT_FORBIDDEN_USER

/* "INVALID_JSON", "VALIDATION_ERROR", ... as in protocol.md §1; "OK" for CHAT_OK. */
const char *chat_status_code(chat_status s);

typedef enum {
    CHAT_KIND_MESSAGE = 0, /* a chat message: stored, acked, broadcast */
    CHAT_KIND_TYPING,      /* a typing indicator: broadcast only, never stored or acked */
} chat_kind;

typedef struct {
    chat_kind kind;
    /* client fields (protocol.md §1) */
    char user_id[8]; /* normalised decimal, "1".."100000" */
    char username[CHAT_USERNAME_MAX + 1];
    char message[CHAT_TEXT_BUF];
    char timestamp[64];                        /* as the client sent it (validated ISO-8601) */
    char message_type[8];                      /* TEXT | JOIN | LEAVE */
    char client_message_id[CHAT_CMID_MAX + 1]; /* "" when absent */
    /* server fields (protocol.md §4) */
    char message_id[UUID_STR_BUF];
    char room_id[ROOM_ID_BUF];
    char server_id[64];
    char client_ip[64];
    char received_at[ISO8601_BUF];
} chat_message;

chat_status chat_frame_parse(const char *frame, size_t len, size_t max_frame, chat_message *out,
                             char *err, size_t err_len);
bool chat_message_assign_id(chat_message *m);

char *queue_message_to_json(const chat_message *m);
/* 'json' need not be NUL-terminated. Returns false with err set when the body is not a valid
 * protocol.md §4 message. */
bool queue_message_parse(const char *json, size_t len, chat_message *out, char *err,
                         size_t err_len);

char *broadcast_event_to_json(const chat_message *m, const char *server_timestamp,
                              const char *sequence_number);
/* sequence_number may be NULL or "" (then omitted); client_message_id "" -> JSON null. */
char *ack_to_json(const chat_message *m, const char *server_timestamp, const char *sequence_number);
/* client_message_id may be NULL or "" -> JSON null. */
char *error_to_json(chat_status code, const char *error_message, const char *client_message_id);

bool utf8_validate(const char *s, size_t len);
size_t utf8_codepoints(const char *s, size_t len);

/* Field validators, exposed for tests and for the consumer's re-validation. */
bool chat_valid_username(const char *s);
bool chat_valid_message_type(const char *s);
bool chat_valid_client_message_id(const char *s);

#endif
