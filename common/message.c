/*
 * message — the ChatFlow message model (contract in message.h; rules in protocol.md §1, §2, §4).
 *
 * Decisions the contract leaves open:
 *  - userId as a string must be canonical decimal: digits only, no sign, no spaces, no leading
 *    zeros ("007" is refused, not rewritten). One user has exactly one spelling, so the v5 id
 *    name "userId:roomId:clientMessageId" cannot differ between two frames of the same user,
 *    and nothing downstream has to normalise. A JSON integer is accepted too (protocol.md §1) and
 *    written out in the same canonical form; a JSON real (1.0, 1e3) is refused as not an integer.
 *  - Duplicate keys are refused (JSON_REJECT_DUPLICATES -> INVALID_JSON): with two "username"
 *    members the frame has no single meaning, and parsers disagree about which one wins.
 *  - Unknown extra members are ignored, so an older service accepts frames and queue bodies from
 *    a newer client or producer during a rolling upgrade (forward compatible).
 *  - clientMessageId null or absent means none; present it must be 1-64 [A-Za-z0-9_-] ("" is an
 *    error, as it is not 1-64 characters).
 *  - The queue body (protocol.md §4) is "all strings", so queue_message_parse() takes userId only
 * as a string. Its messageId is stored in lower case, the form uuid.c writes.
 *  - jansson refuses "\u0000" unless told otherwise (JSON_ALLOW_NUL is not passed), so every
 *    string member is free of NUL bytes and can be handled as a C string.
 *
 * utf8_validate() is written here because jansson keeps its checker private, and the frame's
 * error must say where the first bad byte is, which a yes/no answer from a library would not.
 */
#include "message.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

const char *chat_status_code(chat_status s)
{
    switch (s) {
    case CHAT_OK: return "OK";
    case CHAT_INVALID_JSON: return "INVALID_JSON";
    case CHAT_VALIDATION_ERROR: return "VALIDATION_ERROR";
    case CHAT_MESSAGE_TOO_LARGE: return "MESSAGE_TOO_LARGE";
    case CHAT_RATE_LIMITED: return "RATE_LIMITED";
    case CHAT_QUEUE_UNAVAILABLE: return "QUEUE_UNAVAILABLE";
    case CHAT_QUEUE_ERROR: return "QUEUE_ERROR";
    case CHAT_FORBIDDEN_USER: return "FORBIDDEN_USER";
    }
    return "QUEUE_ERROR"; /* not a chat_status: a bug, answered with a code clients know */
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Offset of the first byte that does not start a well-formed sequence (Unicode Table 3-7:
 * no overlongs, no surrogates, nothing above U+10FFFF, no truncation), or len if all is well. */
static size_t utf8_first_invalid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong below U+0800 */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates U+D800..DFFF */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong below U+10000 */
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return i; /* continuation byte, C0/C1 overlong lead, or F5..FF */
        }
        if (len - i <= need) return i; /* truncated */
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80) return i;
        i += need + 1;
    }
    return len;
}

bool utf8_validate(const char *s, size_t len)
{
    return utf8_first_invalid((const unsigned char *)s, len) == len;
}

size_t utf8_codepoints(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

/* Cuts s at its first ill-formed byte, so a message that was truncated mid-character (by
 * snprintf, or by jansson's fixed-size error text) can still go into a JSON string. */
static void utf8_trim(char *s)
{
    s[utf8_first_invalid((const unsigned char *)s, strlen(s))] = '\0';
}

/* ---- field rules ---------------------------------------------------------------------------- */

static bool is_ascii_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool chat_valid_username(const char *s)
{
    if (!s) return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= CHAT_USERNAME_MAX || !is_ascii_alnum(s[n])) return false;
    return n >= CHAT_USERNAME_MIN;
}

bool chat_valid_message_type(const char *s)
{
    return s && (strcmp(s, "TEXT") == 0 || strcmp(s, "JOIN") == 0 || strcmp(s, "LEAVE") == 0);
}

bool chat_valid_client_message_id(const char *s)
{
    if (!s) return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= CHAT_CMID_MAX || !(is_ascii_alnum(s[n]) || s[n] == '_' || s[n] == '-'))
            return false;
    return n >= 1;
}

/* Canonical decimal (no sign, spaces or leading zeros) in 1..max. */
static bool canonical_decimal(const char *s, long long max)
{
    if (s[0] < '1' || s[0] > '9') return false;
    long long v = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
        if (v > max) return false;
    }
    return true;
}

/* ---- parsing -------------------------------------------------------------------------------- */

static bool fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
        utf8_trim(err);
    }
    return false;
}

/* A required string member: NULL (with err set) when absent or not a string. */
static const char *required_string(json_t *obj, const char *field, size_t *len, char *err,
                                   size_t err_len)
{
    json_t *v = json_object_get(obj, field);
    if (!v) {
        fail(err, err_len, "%s: is required", field);
        return NULL;
    }
    if (!json_is_string(v)) {
        fail(err, err_len, "%s: must be a string", field);
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

static bool parse_user_id(json_t *obj, bool number_ok, char out[8], char *err, size_t err_len)
{
    static const char rule[] = "userId: must be a decimal integer 1-100000";
    json_t *v = json_object_get(obj, "userId");
    if (!v) return fail(err, err_len, "userId: is required");
    if (json_is_integer(v) && number_ok) {
        json_int_t id = json_integer_value(v);
        if (id < 1 || id > CHAT_USER_ID_MAX) return fail(err, err_len, "%s", rule);
        snprintf(out, 8, "%lld", (long long)id);
        return true;
    }
    if (json_is_real(v) && number_ok)
        return fail(err, err_len, "%s; a fractional number is not an integer", rule);
    if (!json_is_string(v))
        return fail(err, err_len, number_ok ? "%s, as a string or a number" : "%s, as a string",
                    rule);
    const char *s = json_string_value(v);
    if (!canonical_decimal(s, CHAT_USER_ID_MAX)) {
        size_t digits = strspn(s, "0123456789");
        bool in_canonical_form = digits > 0 && s[digits] == '\0' && (s[0] != '0' || digits == 1);
        return fail(err, err_len,
                    in_canonical_form ? "%s" : "%s, without sign, spaces or leading zeros", rule);
    }
    memcpy(out, s, strlen(s) + 1); /* at most 6 digits: canonical_decimal bounds it */
    return true;
}

static bool parse_username(json_t *obj, chat_message *out, char *err, size_t err_len)
{
    size_t len;
    const char *s = required_string(obj, "username", &len, err, err_len);
    if (!s) return false;
    if (!chat_valid_username(s))
        return fail(err, err_len, "username: must be %d-%d ASCII letters or digits",
                    CHAT_USERNAME_MIN, CHAT_USERNAME_MAX);
    memcpy(out->username, s, len + 1);
    return true;
}

static bool parse_text(json_t *obj, chat_message *out, char *err, size_t err_len)
{
    size_t len;
    const char *s = required_string(obj, "message", &len, err, err_len);
    if (!s) return false;
    /* jansson has checked the UTF-8 of every string it decoded; only the length is left. */
    size_t cp = utf8_codepoints(s, len);
    if (cp < 1 || cp > CHAT_TEXT_MAX_CP)
        return fail(err, err_len, "message: must be 1-%d characters (Unicode code points), got %zu",
                    CHAT_TEXT_MAX_CP, cp);
    memcpy(out->message, s, len + 1); /* <= 500 code points of <= 4 bytes fit CHAT_TEXT_BUF */
    return true;
}

static bool parse_instant(json_t *obj, const char *field, char *dst, size_t dst_size, char *err,
                          size_t err_len)
{
    size_t len;
    const char *s = required_string(obj, field, &len, err, err_len);
    if (!s) return false;
    if (len >= dst_size || !time_parse_iso8601(s, NULL))
        return fail(err, err_len,
                    "%s: must be an ISO-8601 instant with a zone, e.g. 2026-11-23T10:15:30.123Z",
                    field);
    memcpy(dst, s, len + 1);
    return true;
}

static bool parse_message_type(json_t *obj, chat_message *out, char *err, size_t err_len)
{
    size_t len;
    const char *s = required_string(obj, "messageType", &len, err, err_len);
    if (!s) return false;
    if (!chat_valid_message_type(s))
        return fail(err, err_len, "messageType: must be TEXT, JOIN or LEAVE");
    memcpy(out->message_type, s, len + 1);
    return true;
}

/* Copies a valid clientMessageId into out; returns false with err set for a bad one. */
static bool parse_client_message_id(json_t *obj, chat_message *out, char *err, size_t err_len)
{
    json_t *v = json_object_get(obj, "clientMessageId");
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return fail(err, err_len, "clientMessageId: must be a string or null");
    const char *s = json_string_value(v);
    if (!chat_valid_client_message_id(s))
        return fail(err, err_len, "clientMessageId: must be 1-%d characters of A-Z a-z 0-9 _ -",
                    CHAT_CMID_MAX);
    memcpy(out->client_message_id, s, json_string_length(v) + 1);
    return true;
}

/* The protocol.md §1 fields. clientMessageId goes first so that it is in out even when another
 * field fails (the error frame echoes it); its own error is reported after the others'. */
static bool parse_client_fields(json_t *obj, bool user_id_number_ok, chat_message *out, char *err,
                                size_t err_len)
{
    char cmid_err[128] = "";
    bool cmid_ok = parse_client_message_id(obj, out, cmid_err, sizeof cmid_err);
    if (!parse_user_id(obj, user_id_number_ok, out->user_id, err, err_len) ||
        !parse_username(obj, out, err, err_len) || !parse_text(obj, out, err, err_len) ||
        !parse_instant(obj, "timestamp", out->timestamp, sizeof out->timestamp, err, err_len) ||
        !parse_message_type(obj, out, err, err_len))
        return false;
    if (!cmid_ok) return fail(err, err_len, "%s", cmid_err);
    return true;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "not an object";
}

/* Decodes one JSON object; NULL with err set otherwise. */
static json_t *load_object(const char *what, const char *text, size_t len, char *err,
                           size_t err_len)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        fail(err, err_len, "%s is not valid JSON: %s (at byte %d)", what, jerr.text, jerr.position);
        return NULL;
    }
    if (!json_is_object(root)) {
        fail(err, err_len, "%s must be a JSON object, not %s", what, json_type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

/* "type": absent (or null) and "MESSAGE" are a chat message, "TYPING" a typing indicator. */
static bool parse_kind(json_t *obj, chat_kind *kind, char *err, size_t err_len)
{
    json_t *v = json_object_get(obj, "type");
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!v || json_is_null(v) || (s && strcmp(s, "MESSAGE") == 0)) {
        *kind = CHAT_KIND_MESSAGE;
        return true;
    }
    if (s && strcmp(s, "TYPING") == 0) {
        *kind = CHAT_KIND_TYPING;
        return true;
    }
    return fail(err, err_len, "type: must be MESSAGE or TYPING");
}

/* A typing indicator: who is typing, and (from a client, optionally) when. */
static bool parse_typing_fields(json_t *obj, bool from_client, chat_message *out, char *err,
                                size_t err_len)
{
    if (!parse_user_id(obj, from_client, out->user_id, err, err_len) ||
        !parse_username(obj, out, err, err_len))
        return false;
    if (from_client && !json_object_get(obj, "timestamp")) return true;
    return parse_instant(obj, "timestamp", out->timestamp, sizeof out->timestamp, err, err_len);
}

chat_status chat_frame_parse(const char *frame, size_t len, size_t max_frame, chat_message *out,
                             char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    if (err && err_len) err[0] = '\0';
    if (len > max_frame) {
        fail(err, err_len, "frame is %zu bytes; the limit is %zu", len, max_frame);
        return CHAT_MESSAGE_TOO_LARGE;
    }
    size_t bad = utf8_first_invalid((const unsigned char *)frame, len);
    if (bad != len) {
        fail(err, err_len, "frame is not valid UTF-8 (byte %zu)", bad);
        return CHAT_INVALID_JSON;
    }
    json_t *root = load_object("frame", frame, len, err, err_len);
    if (!root) return CHAT_INVALID_JSON;
    bool ok;
    if (!parse_kind(root, &out->kind, err, err_len)) {
        ok = false;
        parse_client_message_id(root, out, NULL, 0); /* echoed by the error frame when valid */
    } else if (out->kind == CHAT_KIND_TYPING) {
        ok = parse_typing_fields(root, true, out, err, err_len);
    } else {
        ok = parse_client_fields(root, true, out, err, err_len);
    }
    json_decref(root);
    return ok ? CHAT_OK : CHAT_VALIDATION_ERROR;
}

bool chat_message_assign_id(chat_message *m)
{
    if (m->client_message_id[0] == '\0') return uuid_v4(m->message_id);
    /* A derived id without its user or room would collide across them: refuse instead. */
    if (m->user_id[0] == '\0' || m->room_id[0] == '\0') {
        m->message_id[0] = '\0';
        return false;
    }
    char name[sizeof m->user_id + sizeof m->room_id + sizeof m->client_message_id + 2];
    int n = snprintf(name, sizeof name, "%s:%s:%s", m->user_id, m->room_id, m->client_message_id);
    uuid_v5(CHATFLOW_MESSAGE_NAMESPACE, name, (size_t)n, m->message_id);
    return m->message_id[0] != '\0';
}

/* A required string member of at most dst_size-1 bytes (at least min_len). */
static bool parse_bounded_string(json_t *obj, const char *field, size_t min_len, char *dst,
                                 size_t dst_size, char *err, size_t err_len)
{
    size_t len;
    const char *s = required_string(obj, field, &len, err, err_len);
    if (!s) return false;
    if (len < min_len || len >= dst_size)
        return fail(err, err_len, "%s: must be %zu-%zu bytes", field, min_len, dst_size - 1);
    memcpy(dst, s, len + 1);
    return true;
}

static bool parse_queue_ids(json_t *obj, chat_message *out, char *err, size_t err_len)
{
    size_t len;
    const char *id = required_string(obj, "messageId", &len, err, err_len);
    if (!id) return false;
    uint8_t bytes[16];
    if (!uuid_parse(id, bytes))
        return fail(err, err_len, "messageId: must be a UUID (8-4-4-4-12 hex digits)");
    for (size_t i = 0; i <= len; i++) /* lower case, as uuid.c writes ids */
        out->message_id[i] = (id[i] >= 'A' && id[i] <= 'F') ? (char)(id[i] + 32) : id[i];

    const char *room = required_string(obj, "roomId", &len, err, err_len);
    if (!room) return false;
    if (!room_id_check(room, len, err, err_len)) return false;
    memcpy(out->room_id, room, len + 1);
    return true;
}

bool queue_message_parse(const char *json, size_t len, chat_message *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    if (err && err_len) err[0] = '\0';
    json_t *root = load_object("queue message", json, len, err, err_len);
    if (!root) return false;
    bool ok =
        parse_kind(root, &out->kind, err, err_len) && parse_queue_ids(root, out, err, err_len) &&
        (out->kind == CHAT_KIND_TYPING ? parse_typing_fields(root, false, out, err, err_len)
                                       : parse_client_fields(root, false, out, err, err_len)) &&
        parse_bounded_string(root, "serverId", 1, out->server_id, sizeof out->server_id, err,
                             err_len) &&
        /* empty when the producer could not learn the peer address */
        parse_bounded_string(root, "clientIp", 0, out->client_ip, sizeof out->client_ip, err,
                             err_len) &&
        parse_instant(root, "receivedAt", out->received_at, sizeof out->received_at, err, err_len);
    json_decref(root);
    return ok;
}

/* ---- building ------------------------------------------------------------------------------- */

/* Collects members into one object; any allocation failure makes the result NULL. */
typedef struct {
    json_t *obj;
    bool failed;
} json_builder;

static json_builder builder_start(void)
{
    json_builder b = {json_object(), false};
    b.failed = b.obj == NULL;
    return b;
}

static void put(json_builder *b, const char *key, json_t *value)
{
    if (b->failed) {
        json_decref(value); /* NULL-safe */
        return;
    }
    /* jansson takes the reference even when it fails, so there is nothing to free here. */
    if (!value || json_object_set_new_nocheck(b->obj, key, value) != 0) b->failed = true;
}

/* NULL becomes JSON null. */
static void put_string(json_builder *b, const char *key, const char *value)
{
    if (b->failed) return;
    put(b, key, value ? json_string(value) : json_null());
}

/* NULL or "" -> JSON null. */
static void put_string_or_null(json_builder *b, const char *key, const char *value)
{
    put_string(b, key, value && value[0] ? value : NULL);
}

/* NULL or "" -> member left out. */
static void put_string_if_set(json_builder *b, const char *key, const char *value)
{
    if (value && value[0]) put_string(b, key, value);
}

static char *builder_finish(json_builder *b)
{
    char *text = b->failed ? NULL : json_dumps(b->obj, JSON_COMPACT);
    json_decref(b->obj);
    return text;
}

/* {"type":"TYPING", ...}: the typing indicator's queue body. */
static char *typing_queue_json(const chat_message *m)
{
    json_builder b = builder_start();
    put_string(&b, "type", "TYPING");
    put_string(&b, "messageId", m->message_id);
    put_string(&b, "roomId", m->room_id);
    put_string(&b, "userId", m->user_id);
    put_string(&b, "username", m->username);
    put_string(&b, "timestamp", m->timestamp);
    put_string(&b, "serverId", m->server_id);
    put_string(&b, "clientIp", m->client_ip);
    put_string(&b, "receivedAt", m->received_at);
    return builder_finish(&b);
}

char *queue_message_to_json(const chat_message *m)
{
    if (m->kind == CHAT_KIND_TYPING) return typing_queue_json(m);
    json_builder b = builder_start();
    put_string(&b, "messageId", m->message_id);
    put_string(&b, "roomId", m->room_id);
    put_string(&b, "userId", m->user_id);
    put_string(&b, "username", m->username);
    put_string(&b, "message", m->message);
    put_string(&b, "timestamp", m->timestamp);
    put_string(&b, "messageType", m->message_type);
    put_string(&b, "serverId", m->server_id);
    put_string(&b, "clientIp", m->client_ip);
    put_string_if_set(&b, "clientMessageId", m->client_message_id);
    put_string(&b, "receivedAt", m->received_at);
    return builder_finish(&b);
}

/* server_timestamp NULL -> null; sequence_number NULL or "" -> left out. */
char *broadcast_event_to_json(const chat_message *m, const char *server_timestamp,
                              const char *sequence_number)
{
    json_builder b = builder_start();
    if (m->kind == CHAT_KIND_TYPING) {
        put_string(&b, "type", "TYPING");
        put_string(&b, "roomId", m->room_id);
        put_string(&b, "userId", m->user_id);
        put_string(&b, "username", m->username);
        put_string(&b, "timestamp", m->timestamp);
        return builder_finish(&b);
    }
    put_string(&b, "type", "MESSAGE");
    put_string(&b, "messageId", m->message_id);
    put_string(&b, "roomId", m->room_id);
    put_string(&b, "userId", m->user_id);
    put_string(&b, "username", m->username);
    put_string(&b, "message", m->message);
    put_string(&b, "timestamp", m->timestamp);
    put_string(&b, "messageType", m->message_type);
    put_string(&b, "serverTimestamp", server_timestamp);
    put_string_if_set(&b, "sequenceNumber", sequence_number);
    put_string_if_set(&b, "clientMessageId", m->client_message_id);
    return builder_finish(&b);
}

char *ack_to_json(const chat_message *m, const char *server_timestamp, const char *sequence_number)
{
    json_builder b = builder_start();
    put_string(&b, "status", "SUCCESS");
    put_string(&b, "messageId", m->message_id);
    put_string_or_null(&b, "clientMessageId", m->client_message_id);
    put_string(&b, "roomId", m->room_id);
    put_string(&b, "serverTimestamp", server_timestamp);
    put_string_if_set(&b, "sequenceNumber", sequence_number);
    put_string(&b, "delivery", "sent"); /* first delivery receipt: durable in SQS */
    return builder_finish(&b);
}

char *error_to_json(chat_status code, const char *error_message, const char *client_message_id)
{
    /* The text may come from anywhere (a library's error, a cut snprintf): keep its well-formed
     * UTF-8 prefix rather than fail to answer the client at all. */
    const char *text = error_message ? error_message : chat_status_code(code);
    size_t text_len = utf8_first_invalid((const unsigned char *)text, strlen(text));

    json_builder b = builder_start();
    put_string(&b, "status", "ERROR");
    put_string(&b, "errorCode", chat_status_code(code));
    if (!b.failed) put(&b, "errorMessage", json_stringn(text, text_len));
    put_string_or_null(&b, "clientMessageId", client_message_id);
    return builder_finish(&b);
}
