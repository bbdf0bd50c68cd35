/* events — PRESENCE / READ / ERROR events and members' READ frames; see events.h. */
#include "events.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

static char *dump(json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return text;
}

char *presence_event_json(const char *room, uint32_t user_id, const char *username,
                          const char *status, const char *reason, int64_t when_ms, size_t online)
{
    char user_s[12], when[ISO8601_BUF];
    snprintf(user_s, sizeof(user_s), "%u", user_id);
    time_format_iso8601(when_ms, when);
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "type", "PRESENCE", "roomId",
                          room, "userId", user_s, "username", username, "status", status, "reason",
                          reason, "timestamp", when, "online", (json_int_t)online));
}

char *read_event_json(const char *room, uint32_t user_id, const char *username, const char *seq,
                      int64_t when_ms)
{
    char user_s[12], when[ISO8601_BUF];
    snprintf(user_s, sizeof(user_s), "%u", user_id);
    time_format_iso8601(when_ms, when);
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "READ", "roomId", room,
                          "userId", user_s, "username", username, "sequenceNumber", seq,
                          "timestamp", when));
}

char *subscriber_error_json(chat_status code, const char *message)
{
    /* jansson refuses invalid UTF-8; every message here is built from ASCII and checked input */
    return dump(json_pack("{s:s, s:s, s:s}", "type", "ERROR", "errorCode", chat_status_code(code),
                          "errorMessage", message));
}

static chat_status refuse(chat_status st, char *err, size_t err_len, const char *msg)
{
    snprintf(err, err_len, "%s", msg);
    return st;
}

chat_status subscriber_frame_parse(const char *frame, size_t len, const char *room,
                                   char seq[SEQNUM_BUF], char *err, size_t err_len)
{
    if (len > SUBSCRIBER_FRAME_MAX) {
        snprintf(err, err_len, "frame is %zu bytes; the limit is %d", len, SUBSCRIBER_FRAME_MAX);
        return CHAT_MESSAGE_TOO_LARGE;
    }
    json_error_t jerr;
    json_t *root = json_loadb(frame, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return refuse(
            CHAT_INVALID_JSON, err, err_len,
            "frame must be a JSON object: {\"type\":\"READ\",\"roomId\",\"sequenceNumber\"}");
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    const char *room_s = json_string_value(json_object_get(root, "roomId"));
    const char *s = json_string_value(json_object_get(root, "sequenceNumber"));
    chat_status st = CHAT_VALIDATION_ERROR;
    if (!type || strcmp(type, "READ") != 0)
        refuse(st, err, err_len, "type: subscribers may send READ only");
    else if (!room_s || strcmp(room_s, room) != 0)
        snprintf(err, err_len, "roomId: must be \"%s\", the room of this subscription", room);
    else if (!s || !seqnum_valid(s))
        snprintf(err, err_len,
                 "sequenceNumber: must be a sequence number (1-%d decimal digits, as a string)",
                 SEQNUM_MAX_DIGITS);
    else {
        snprintf(seq, SEQNUM_BUF, "%s", s);
        st = CHAT_OK;
    }
    json_decref(root);
    return st;
}
