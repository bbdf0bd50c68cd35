/*
 * fuzz_frame — the producer's client frame parser and validator, chat_frame_parse() (protocol.md
 * §1, and the TYPING frames of docs/protocol.md).
 *
 * Input: the raw frame bytes (not NUL-terminated, as lws hands them over).
 * Properties checked beyond "no crash, no sanitizer report":
 *  - the order of checks holds: a frame over the limit is MESSAGE_TOO_LARGE; invalid UTF-8 under
 *    the limit is INVALID_JSON;
 *  - an accepted frame obeys every §1 rule, and survives the producer -> consumer path: its queue
 *    body (queue_message_to_json) parses back with queue_message_parse into the same fields;
 *  - a refused frame has a non-empty, NUL-terminated, valid UTF-8 reason at any buffer size, and
 *    its error frame is a JSON object carrying that reason;
 *  - the ack is a JSON object.
 */
#include <jansson.h>

#include "fuzz_util.h"
#include "message.h"
#include "timeutil.h"

static void check_accepted(const chat_message *m)
{
    FUZZ_ASSERT(fuzz_terminated(m->user_id, sizeof m->user_id));
    long uid = strtol(m->user_id, NULL, 10);
    FUZZ_ASSERT(uid >= 1 && uid <= CHAT_USER_ID_MAX && m->user_id[0] != '0');
    FUZZ_ASSERT(chat_valid_username(m->username));
    int64_t ms;
    if (m->kind == CHAT_KIND_TYPING) { /* who is typing; no message fields */
        FUZZ_ASSERT(m->message[0] == '\0' && m->message_type[0] == '\0' &&
                    m->client_message_id[0] == '\0');
        FUZZ_ASSERT(m->timestamp[0] == '\0' || time_parse_iso8601(m->timestamp, &ms));
        return;
    }
    FUZZ_ASSERT(m->kind == CHAT_KIND_MESSAGE);
    size_t len = strlen(m->message);
    FUZZ_ASSERT(utf8_validate(m->message, len));
    size_t cp = utf8_codepoints(m->message, len);
    FUZZ_ASSERT(cp >= 1 && cp <= CHAT_TEXT_MAX_CP);
    FUZZ_ASSERT(time_parse_iso8601(m->timestamp, &ms));
    FUZZ_ASSERT(chat_valid_message_type(m->message_type));
    FUZZ_ASSERT(m->client_message_id[0] == '\0' ||
                chat_valid_client_message_id(m->client_message_id));
}

static void check_queue_round_trip(chat_message m)
{
    snprintf(m.room_id, sizeof m.room_id, "7");
    snprintf(m.server_id, sizeof m.server_id, "producer-fuzz");
    snprintf(m.client_ip, sizeof m.client_ip, "127.0.0.1");
    time_format_iso8601(1795000000000, m.received_at);
    if (!m.timestamp[0])
        memcpy(m.timestamp, m.received_at, sizeof m.received_at); /* as the producer does */
    FUZZ_ASSERT(chat_message_assign_id(&m));
    char *body = queue_message_to_json(&m);
    FUZZ_ASSERT(body);
    chat_message back;
    char err[256];
    bool ok = queue_message_parse(body, strlen(body), &back, err, sizeof err);
    if (!ok) fprintf(stderr, "queue body refused: %s\n%s\n", err, body);
    FUZZ_ASSERT(ok);
    FUZZ_ASSERT(back.kind == m.kind);
    FUZZ_ASSERT(strcmp(back.message_id, m.message_id) == 0);
    FUZZ_ASSERT(strcmp(back.user_id, m.user_id) == 0);
    FUZZ_ASSERT(strcmp(back.username, m.username) == 0);
    FUZZ_ASSERT(strcmp(back.message, m.message) == 0);
    FUZZ_ASSERT(strcmp(back.timestamp, m.timestamp) == 0);
    FUZZ_ASSERT(strcmp(back.message_type, m.message_type) == 0);
    FUZZ_ASSERT(strcmp(back.client_message_id, m.client_message_id) == 0);
    FUZZ_ASSERT(strcmp(back.room_id, m.room_id) == 0);
    free(body);

    char *ack = ack_to_json(&m, m.received_at, "18889227478372818944");
    FUZZ_ASSERT(ack);
    json_t *root = json_loads(ack, 0, NULL);
    FUZZ_ASSERT(json_is_object(root));
    FUZZ_ASSERT(strcmp(json_string_value(json_object_get(root, "status")), "SUCCESS") == 0);
    json_decref(root);
    free(ack);
}

static void check_refused(chat_status st, const char *err, size_t err_len, const chat_message *m)
{
    FUZZ_ASSERT(fuzz_terminated(err, err_len));
    size_t n = strlen(err);
    FUZZ_ASSERT(utf8_validate(err, n));
    if (err_len > 1) FUZZ_ASSERT(n > 0);
    if (err_len < 64) return;
    char *frame = error_to_json(st, err, m->client_message_id);
    FUZZ_ASSERT(frame);
    json_t *root = json_loads(frame, 0, NULL);
    FUZZ_ASSERT(json_is_object(root));
    const char *said = json_string_value(json_object_get(root, "errorMessage"));
    FUZZ_ASSERT(said && strcmp(said, err) == 0);
    FUZZ_ASSERT(
        strcmp(json_string_value(json_object_get(root, "errorCode")), chat_status_code(st)) == 0);
    json_decref(root);
    free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so reading one byte past the frame is an ASan report. */
    char *frame = malloc(size ? size : 1);
    if (!frame) return 0;
    memcpy(frame, data, size);

    /* Two limits: the default, and one the input itself may cross. */
    const size_t limits[2] = {CHAT_DEFAULT_MAX_FRAME, 64};
    /* A buffer size derived from the input, so short err buffers are exercised too. */
    size_t small = size ? (size_t)data[0] % 48 + 1 : 1;
    for (int i = 0; i < 2; i++) {
        chat_message m;
        char err[512];
        size_t err_len = i == 0 ? sizeof err : small;
        chat_status st = chat_frame_parse(frame, size, limits[i], &m, err, err_len);
        if (size > limits[i])
            FUZZ_ASSERT(st == CHAT_MESSAGE_TOO_LARGE);
        else if (!utf8_validate(frame, size))
            FUZZ_ASSERT(st == CHAT_INVALID_JSON);
        if (st == CHAT_OK) {
            check_accepted(&m);
            if (i == 0) check_queue_round_trip(m);
        } else {
            FUZZ_ASSERT(st == CHAT_INVALID_JSON || st == CHAT_VALIDATION_ERROR ||
                        st == CHAT_MESSAGE_TOO_LARGE);
            check_refused(st, err, err_len, &m);
        }
    }
    free(frame);
    return 0;
}
