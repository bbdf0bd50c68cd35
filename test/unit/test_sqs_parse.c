/*
 * test_sqs_parse — the SQS client's answer parsing (sqs_parse_* in sqs.h) without a server:
 * error classification, ReceiveMessage and batch answers, malformed bodies. Includes the
 * regression found by fuzz_sqs_response: a malformed 200 body that is not NUL-terminated must be
 * quoted by length (the sanitizer build reads past it otherwise).
 */
/* test-passes: asan */
#include <stdlib.h>
#include <string.h>

#include "sqs.h"
#include "testlib.h"

/* An exact-size heap copy: reading one byte past it is an ASan report. */
static char *exact(const char *s, size_t *len)
{
    *len = strlen(s);
    char *p = malloc(*len ? *len : 1);
    memcpy(p, s, *len);
    return p;
}

static void test_errors(void)
{
    struct {
        long status;
        const char *header, *body;
        sqs_status want;
        const char *type;
    } cases[] = {
        {400, NULL, "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"message\":\"gone\"}",
         SQS_QUEUE_MISSING, "QueueDoesNotExist"},
        {400, "AWS.SimpleQueueService.NonExistentQueue", "{}", SQS_QUEUE_MISSING,
         "AWS.SimpleQueueService.NonExistentQueue"},
        {400, NULL, "{\"__type\":\"ThrottlingException\"}", SQS_THROTTLED, "ThrottlingException"},
        {429, NULL, "", SQS_THROTTLED, ""},
        {403, NULL, "{\"code\":\"InvalidSignatureException\",\"Message\":\"expired\"}",
         SQS_AUTH_ERROR, "InvalidSignatureException"},
        {400, NULL, "{\"__type\":\"InvalidParameterValue\"}", SQS_INVALID_REQUEST,
         "InvalidParameterValue"},
        {503, NULL, "<html>busy</html>", SQS_SERVER_ERROR, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *body = exact(cases[i].body, &len);
        sqs_error err;
        sqs_status s = sqs_parse_error_answer(cases[i].status, body, len, cases[i].header, &err);
        CHECK_INT(s, cases[i].want, "HTTP %ld %s: %s", cases[i].status, cases[i].body,
                  sqs_status_name(s));
        CHECK_STR(err.type, cases[i].type, "HTTP %ld: error type", cases[i].status);
        CHECK_INT(err.http_status, cases[i].status, "HTTP %ld: status kept", cases[i].status);
        free(body);
    }
    size_t len;
    char *html = exact("<html>busy</html>", &len);
    sqs_error err;
    sqs_parse_error_answer(503, html, len, NULL, &err);
    CHECK_STR(err.message, "<html>busy</html>", "a non-JSON error body is quoted as the message");
    free(html);
    CHECK_INT(sqs_parse_error_answer(500, NULL, 0, NULL, NULL), SQS_SERVER_ERROR,
              "no body, no err: still classified");
}

static void test_receive(void)
{
    size_t len;
    char *body =
        exact("{\"Messages\":[{\"MessageId\":\"m-1\",\"ReceiptHandle\":\"rh\",\"Body\":\"hello\","
              "\"Attributes\":{\"SequenceNumber\":\"18889227478372818944\","
              "\"ApproximateReceiveCount\":\"3\","
              "\"SentTimestamp\":\"1795000000000\",\"MessageGroupId\":\"7\"}},{\"Body\":\"b\"}]}",
              &len);
    sqs_message *ms = NULL;
    size_t n = 0;
    sqs_error err;
    CHECK_INT(sqs_parse_receive_answer(body, len, &ms, &n, &err), SQS_OK,
              "ReceiveMessage answer parsed");
    CHECK_INT(n, 2, "two messages");
    if (n == 2) {
        CHECK_STR(ms[0].message_id, "m-1", "MessageId");
        CHECK_STR(ms[0].receipt_handle, "rh", "ReceiptHandle");
        CHECK_STR(ms[0].body, "hello", "Body");
        CHECK_STR(ms[0].sequence_number, "18889227478372818944", "SequenceNumber");
        CHECK_STR(ms[0].group_id, "7", "MessageGroupId");
        CHECK_INT(ms[0].receive_count, 3, "ApproximateReceiveCount");
        CHECK_INT(ms[0].sent_timestamp_ms, 1795000000000LL, "SentTimestamp");
        CHECK_STR(ms[1].message_id, "", "missing fields become empty strings");
    }
    sqs_messages_free(ms, n);
    free(body);

    body = exact("{}", &len);
    CHECK_INT(sqs_parse_receive_answer(body, len, &ms, &n, &err), SQS_OK, "empty answer parsed");
    CHECK(n == 0 && ms == NULL, "no messages, NULL array");
    free(body);
    CHECK_INT(sqs_parse_receive_answer("", 0, &ms, &n, &err), SQS_OK,
              "empty body is an empty answer");

    /* the fuzz_sqs_response reproducer: three newlines, not JSON, not terminated */
    body = exact("\n\n\n", &len);
    CHECK_INT(sqs_parse_receive_answer(body, len, &ms, &n, &err), SQS_SERVER_ERROR,
              "a 200 body that is not JSON is a server error");
    CHECK_STR(err.type, "MalformedResponse", "... typed MalformedResponse");
    free(body);
    body = exact("[1,2]", &len);
    CHECK_INT(sqs_parse_receive_answer(body, len, &ms, &n, &err), SQS_SERVER_ERROR,
              "a JSON array is a server error");
    CHECK(strstr(err.message, "[1,2]") != NULL, "... quoting the body (%s)", err.message);
    free(body);
}

static void test_batch(void)
{
    const char *ids[] = {"a", "b", "c"};
    size_t len;
    char *body =
        exact("{\"Successful\":[{\"Id\":\"a\",\"MessageId\":\"m-a\",\"SequenceNumber\":\"5\"}],"
              "\"Failed\":[{\"Id\":\"b\",\"SenderFault\":true,\"Code\":\"InvalidMessageContents\","
              "\"Message\":\"bad chars\"}]}",
              &len);
    sqs_entry_result r[3];
    sqs_error err;
    CHECK_INT(sqs_parse_batch_answer(body, len, ids, 3, r, &err), SQS_OK, "batch answer parsed");
    CHECK(r[0].ok && strcmp(r[0].message_id, "m-a") == 0 && strcmp(r[0].sequence_number, "5") == 0,
          "entry a succeeded with its id and sequence number");
    CHECK(!r[1].ok && r[1].sender_fault && strcmp(r[1].code, "InvalidMessageContents") == 0,
          "entry b failed, sender's fault, with its code");
    CHECK(!r[2].ok && strcmp(r[2].code, "NoResult") == 0,
          "entry c, not mentioned, counts as failed");
    free(body);
    CHECK_INT(sqs_parse_batch_answer("{}", 2, ids, 11, r, &err), SQS_INVALID_REQUEST,
              "more than 10 entries refused");
}

int main(void)
{
    test_errors();
    test_receive();
    test_batch();
    return TEST_DONE();
}
