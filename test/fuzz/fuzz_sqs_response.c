/*
 * fuzz_sqs_response — the SQS client's parsing of what the server answers (sqs_parse_* in sqs.h,
 * the very functions every request runs on its answer).
 *
 * Input: byte 0 picks the answer kind, byte 1 a parameter, then:
 *   kind 0  error answer: HTTP status 400 + byte1 (400..655), the x-amzn-query-error header
 *           value up to the first '\n', then the body;
 *   kind 1  200 ReceiveMessage answer: the body;
 *   kind 2  200 batch answer (Send/Delete/ChangeVisibility): byte1 % 11 entries with ids
 *           "0".."9", then the body.
 * Properties: an error answer is never SQS_OK and its type/message are terminated; a 200 body
 * that is not a JSON object is SQS_SERVER_ERROR; every copied string is terminated and freeable;
 * a batch answer gives a result per entry, ok ones with an empty code.
 */
#include "fuzz_util.h"
#include "sqs.h"

static void check_error(const uint8_t *data, size_t size)
{
    if (size < 2) return;
    long status = 400 + data[1];
    char *buf = malloc(size + 1);
    if (!buf) return;
    memcpy(buf, data + 2, size - 2);
    buf[size - 2] = '\0';
    char *nl = memchr(buf, '\n', size - 2);
    const char *header = nl ? buf : NULL;
    const char *body = nl ? nl + 1 : buf;
    if (nl) *nl = '\0';
    size_t body_len = (size_t)(buf + size - 2 - body);
    /* an exact-size copy of the body, not terminated, as libcurl leaves it */
    char *exact = malloc(body_len ? body_len : 1);
    if (exact) {
        memcpy(exact, body, body_len);
        sqs_error err;
        sqs_status s = sqs_parse_error_answer(status, exact, body_len, header, &err);
        FUZZ_ASSERT(s != SQS_OK);
        FUZZ_ASSERT(err.http_status == status);
        FUZZ_ASSERT(fuzz_terminated(err.type, sizeof err.type));
        FUZZ_ASSERT(fuzz_terminated(err.message, sizeof err.message));
        FUZZ_ASSERT(sqs_status_name(s) != NULL);
        if (status == 429 && s != SQS_THROTTLED) {
            /* only a more specific AWS type may override a 429 */
            FUZZ_ASSERT(s == SQS_QUEUE_MISSING || s == SQS_AUTH_ERROR);
        }
        free(exact);
    }
    free(buf);
}

static void check_receive(const char *body, size_t len)
{
    sqs_message *msgs = NULL;
    size_t n = 0;
    sqs_error err;
    sqs_status s = sqs_parse_receive_answer(body, len, &msgs, &n, &err);
    if (s != SQS_OK) {
        FUZZ_ASSERT(s == SQS_SERVER_ERROR && msgs == NULL && n == 0);
        FUZZ_ASSERT(fuzz_terminated(err.message, sizeof err.message));
        return;
    }
    FUZZ_ASSERT((n == 0) == (msgs == NULL));
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(msgs[i].message_id && msgs[i].receipt_handle && msgs[i].body);
        FUZZ_ASSERT(msgs[i].sequence_number && msgs[i].group_id);
        (void)strlen(msgs[i].body);
    }
    sqs_messages_free(msgs, n);
}

static void check_batch(size_t n, const char *body, size_t len)
{
    static const char *const ids[SQS_MAX_BATCH] = {"0", "1", "2", "3", "4",
                                                   "5", "6", "7", "8", "9"};
    sqs_entry_result results[SQS_MAX_BATCH];
    sqs_error err;
    sqs_status s = sqs_parse_batch_answer(body, len, ids, n, results, &err);
    if (s != SQS_OK) {
        FUZZ_ASSERT(s == SQS_SERVER_ERROR);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(fuzz_terminated(results[i].message_id, sizeof results[i].message_id));
        FUZZ_ASSERT(fuzz_terminated(results[i].sequence_number, sizeof results[i].sequence_number));
        FUZZ_ASSERT(fuzz_terminated(results[i].code, sizeof results[i].code));
        FUZZ_ASSERT(fuzz_terminated(results[i].message, sizeof results[i].message));
        if (results[i].ok) FUZZ_ASSERT(results[i].code[0] == '\0' && !results[i].sender_fault);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int kind = data[0] % 3;
    if (kind == 0) {
        check_error(data, size);
        return 0;
    }
    size_t len = size - 2;
    char *body = malloc(len ? len : 1);
    if (!body) return 0;
    memcpy(body, data + 2, len);
    if (kind == 1)
        check_receive(body, len);
    else
        check_batch(data[1] % (SQS_MAX_BATCH + 1), body, len);
    free(body);
    return 0;
}
