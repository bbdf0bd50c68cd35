/*
 * fuzz_queue_message — the consumer's queue body parser, queue_message_parse() (protocol.md §4, and
 * the TYPING bodies of docs/protocol.md).
 *
 * Input: an SQS message body (not NUL-terminated).
 * Properties: an accepted body has a lower-case UUID messageId, a valid room id (room.h) and
 * every §1 field valid; writing it out again (queue_message_to_json) and parsing that gives the
 * same message (the DLQ and the replay path re-serialise bodies); the broadcast event built from
 * it is a JSON object with the same messageId. A refused body has a non-empty, NUL-terminated,
 * valid UTF-8 reason (it goes into the DLQ record and the log).
 */
#include <jansson.h>

#include "fuzz_util.h"
#include "message.h"
#include "room.h"

#define SAME(field) FUZZ_ASSERT(strcmp(a->field, b->field) == 0)

static void check_same(const chat_message *a, const chat_message *b)
{
    SAME(message_id);
    SAME(room_id);
    SAME(user_id);
    SAME(username);
    SAME(message);
    SAME(timestamp);
    SAME(message_type);
    SAME(client_message_id);
    SAME(server_id);
    SAME(client_ip);
    SAME(received_at);
}

static void check_accepted(const chat_message *m)
{
    uint8_t bytes[16];
    FUZZ_ASSERT(uuid_parse(m->message_id, bytes));
    for (const char *p = m->message_id; *p; p++) FUZZ_ASSERT(!(*p >= 'A' && *p <= 'F'));
    FUZZ_ASSERT(room_id_valid(m->room_id, strlen(m->room_id)));
    FUZZ_ASSERT(chat_valid_username(m->username));
    if (m->kind == CHAT_KIND_TYPING) /* a typing indicator carries no message fields */
        FUZZ_ASSERT(m->message[0] == '\0' && m->message_type[0] == '\0' &&
                    m->client_message_id[0] == '\0');
    else
        FUZZ_ASSERT(m->kind == CHAT_KIND_MESSAGE && chat_valid_message_type(m->message_type));
    size_t len = strlen(m->message);
    FUZZ_ASSERT(utf8_validate(m->message, len) &&
                utf8_codepoints(m->message, len) <= CHAT_TEXT_MAX_CP);
    FUZZ_ASSERT(m->server_id[0] != '\0');

    char *body = queue_message_to_json(m);
    FUZZ_ASSERT(body);
    chat_message again;
    char err[256];
    bool ok = queue_message_parse(body, strlen(body), &again, err, sizeof err);
    if (!ok) fprintf(stderr, "re-serialised body refused: %s\n%s\n", err, body);
    FUZZ_ASSERT(ok);
    FUZZ_ASSERT(again.kind == m->kind);
    check_same(m, &again);
    free(body);

    char *event = broadcast_event_to_json(m, m->received_at, "18889227478372818944");
    FUZZ_ASSERT(event);
    json_t *root = json_loads(event, 0, NULL);
    FUZZ_ASSERT(json_is_object(root));
    if (m->kind == CHAT_KIND_TYPING) /* ephemeral: nobody may take it for a stored message */
        FUZZ_ASSERT(strcmp(json_string_value(json_object_get(root, "type")), "TYPING") == 0 &&
                    !json_object_get(root, "messageId"));
    else
        FUZZ_ASSERT(strcmp(json_string_value(json_object_get(root, "messageId")), m->message_id) ==
                    0);
    json_decref(root);
    free(event);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    if (!body) return 0;
    memcpy(body, data, size);
    chat_message m;
    char err[300];
    size_t err_len = size ? (size_t)data[size - 1] % 40 + 1 : 1;
    if (queue_message_parse(body, size, &m, err, sizeof err)) {
        check_accepted(&m);
    } else {
        FUZZ_ASSERT(fuzz_terminated(err, sizeof err) && err[0] != '\0');
        FUZZ_ASSERT(utf8_validate(err, strlen(err)));
    }
    /* the same body with a short reason buffer: still terminated, still valid UTF-8 */
    if (!queue_message_parse(body, size, &m, err, err_len)) {
        FUZZ_ASSERT(fuzz_terminated(err, err_len));
        FUZZ_ASSERT(utf8_validate(err, strlen(err)));
    }
    free(body);
    return 0;
}
