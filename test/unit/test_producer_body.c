/* test_producer_body — the SQS body the publisher sends: plain JSON for ordinary text, every
 * non-ASCII character escaped when the text holds characters SQS (or fauxqs) refuses raw (astral
 * code points, U+FFFE, U+FFFF); either way the consumer reads back the same message. */
/* test-passes: asan */
#include "../../producer/publisher.h"
#include "message.h"
#include "testlib.h"

static void check(const char *text, bool want_escaped, const char *what)
{
    char frame[512], err[200];
    snprintf(frame, sizeof frame,
             "{\"userId\":\"5\",\"username\":\"eve\",\"message\":\"%s\",\"timestamp\":\"2026-12-"
             "02T10:00:00Z\","
             "\"messageType\":\"TEXT\"}",
             text);
    chat_message m, back;
    CHECK_INT(chat_frame_parse(frame, strlen(frame), 4096, &m, err, sizeof err), CHAT_OK,
              "%s: frame parses (%s)", what, err);
    snprintf(m.room_id, sizeof m.room_id, "3");
    snprintf(m.server_id, sizeof m.server_id, "p");
    snprintf(m.received_at, sizeof m.received_at, "2026-12-02T10:00:00.000Z");
    chat_message_assign_id(&m);
    char *body = publisher_body_json(&m);
    bool ascii = true;
    for (const unsigned char *c = (const unsigned char *)body; body && *c; c++) ascii &= *c < 0x80;
    CHECK(body && ascii == want_escaped, "%s: body %s", what,
          want_escaped ? "all ASCII (escaped)" : "kept raw");
    CHECK(body && queue_message_parse(body, strlen(body), &back, err, sizeof err) &&
              strcmp(back.message, m.message) == 0,
          "%s: the consumer reads the same text back", what);
    free(body);
}

int main(void)
{
    check("caf\xc3\xa9 \xe2\x82\xac", false, "BMP text (é, €)");
    check("party \xf0\x9f\x8e\x89", true, "an emoji");
    check("odd \xef\xbf\xbe", true, "U+FFFE");
    check("odd \xef\xbf\xbf", true, "U+FFFF");
    check("fine \xef\xbf\xbd", false, "U+FFFD (allowed by SQS)");
    return TEST_DONE();
}
