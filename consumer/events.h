/*
 * events — the consumer's chat-feature frames (docs/protocol.md §2): the PRESENCE, READ and ERROR
 * events it sends to members, and the READ frames members send.
 *
 * Contract:
 *  - *_json() return a malloc'd NUL-terminated JSON text (the caller frees), NULL on OOM.
 *    Ids are written as strings, like every id of protocol.md §1, §2, §4: user ids in decimal,
 *    the room id (room.h) as given.
 *  - subscriber_frame_parse() reads one frame from a subscriber: it must be at most
 *    SUBSCRIBER_FRAME_MAX bytes (MESSAGE_TOO_LARGE), a JSON object (INVALID_JSON) of type "READ"
 *    whose roomId is the subscription's room (the same string, byte for byte) and whose
 *    sequenceNumber is a sequence number
 *    (VALIDATION_ERROR naming the field). On CHAT_OK seq gets the sequence number.
 *  - Stateless and thread-safe.
 */
#ifndef CHATFLOW_CONSUMER_EVENTS_H
#define CHATFLOW_CONSUMER_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "seqnum.h"

#define SUBSCRIBER_FRAME_MAX 1024

/* status "ONLINE" / "OFFLINE"; reason "present", "joined", "left" or "timeout". */
char *presence_event_json(const char *room, uint32_t user_id, const char *username,
                          const char *status, const char *reason, int64_t when_ms, size_t online);
char *read_event_json(const char *room, uint32_t user_id, const char *username, const char *seq,
                      int64_t when_ms);
char *subscriber_error_json(chat_status code, const char *message);

chat_status subscriber_frame_parse(const char *frame, size_t len, const char *room,
                                   char seq[SEQNUM_BUF], char *err, size_t err_len);

#endif
