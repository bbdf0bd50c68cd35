/* test_message — the protocol.md §1 validator on both sides of every boundary, UTF-8, the queue
 * body round trip, and the shapes of the ack, error and broadcast frames. */
/* test-passes: asan */
#include "message.h"
#include "testlib.h"

#include <jansson.h>

/* ---- building frames ------------------------------------------------------------------------ */

enum { F_USER_ID, F_USERNAME, F_MESSAGE, F_TIMESTAMP, F_TYPE, F_CMID, F_COUNT };
static const char *const FIELD_NAMES[F_COUNT] = {"userId",    "username",    "message",
                                                 "timestamp", "messageType", "clientMessageId"};
static const char *const DEFAULT_VALUES[F_COUNT] = {
    "\"42\"", "\"alice\"", "\"hello\"", "\"2026-11-23T10:15:30.123Z\"", "\"TEXT\"", "\"cm-1\""};
#define OMIT ((const char *)1)

/* A valid frame with one member's raw JSON value replaced (or left out with OMIT). */
static const char *frame_with(int field, const char *raw_value)
{
    static char buf[16384];
    size_t n = 0;
    buf[n++] = '{';
    for (int i = 0; i < F_COUNT; i++) {
        const char *v = i == field ? raw_value : DEFAULT_VALUES[i];
        if (v == OMIT) continue;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"%s\":%s", n > 1 ? "," : "",
                              FIELD_NAMES[i], v);
    }
    snprintf(buf + n, sizeof buf - n, "}");
    return buf;
}

/* A JSON string literal of unit repeated count times. */
static const char *repeat(const char *unit, int count)
{
    static char bufs[2][8192];
    static int which;
    char *buf = bufs[which ^= 1];
    size_t n = 0, ul = strlen(unit);
    buf[n++] = '"';
    for (int i = 0; i < count; i++) {
        memcpy(buf + n, unit, ul);
        n += ul;
    }
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

static chat_message msg;
static char err[256];

static chat_status parse(const char *frame)
{
    return chat_frame_parse(frame, strlen(frame), CHAT_DEFAULT_MAX_FRAME, &msg, err, sizeof err);
}

static void accepts(int field, const char *value, const char *what)
{
    chat_status st = parse(frame_with(field, value));
    CHECK(st == CHAT_OK, "%s: accepts %s", FIELD_NAMES[field], what);
    if (st != CHAT_OK) NOTE("status %s, err: %s", chat_status_code(st), err);
}

/* Rejected as VALIDATION_ERROR with an error that names the field. */
static void rejects(int field, const char *value, const char *what)
{
    chat_status st = parse(frame_with(field, value));
    size_t name_len = strlen(FIELD_NAMES[field]);
    CHECK(st == CHAT_VALIDATION_ERROR && strncmp(err, FIELD_NAMES[field], name_len) == 0,
          "%s: rejects %s (%s)", FIELD_NAMES[field], what, err);
    if (st != CHAT_VALIDATION_ERROR) NOTE("status %s", chat_status_code(st));
}

/* ---- the validator -------------------------------------------------------------------------- */

static void test_valid_frame(void)
{
    chat_status st = parse(frame_with(-1, NULL));
    CHECK_INT(st, CHAT_OK, "a complete frame parses");
    CHECK_STR(msg.user_id, "42", "userId copied");
    CHECK_STR(msg.username, "alice", "username copied");
    CHECK_STR(msg.message, "hello", "message copied");
    CHECK_STR(msg.timestamp, "2026-11-23T10:15:30.123Z", "timestamp copied as sent");
    CHECK_STR(msg.message_type, "TEXT", "messageType copied");
    CHECK_STR(msg.client_message_id, "cm-1", "clientMessageId copied");
    CHECK_STR(msg.message_id, "", "messageId not set by the parser");
    CHECK_STR(err, "", "err empty on success");

    /* the frame need not be NUL-terminated: bytes past len are not read */
    char buf[512];
    const char *f = frame_with(-1, NULL);
    size_t len = strlen(f);
    memcpy(buf, f, len);
    memcpy(buf + len, "garbage\xff", 9);
    st = chat_frame_parse(buf, len, CHAT_DEFAULT_MAX_FRAME, &msg, err, sizeof err);
    CHECK_INT(st, CHAT_OK, "a frame followed by other bytes parses with its own length");

    st = parse("{\"userId\":\"42\",\"username\":\"alice\",\"message\":\"hi\","
               "\"timestamp\":\"2026-11-23T10:15:30Z\",\"messageType\":\"JOIN\","
               "\"futureField\":{\"x\":[1,2]},\"roomId\":\"999\"}");
    CHECK_INT(st, CHAT_OK, "unknown extra members are ignored");
    CHECK_STR(msg.room_id, "", "a roomId in the frame is ignored (the path decides)");

    st = chat_frame_parse(frame_with(F_USERNAME, "\"x\""), strlen(frame_with(F_USERNAME, "\"x\"")),
                          CHAT_DEFAULT_MAX_FRAME, &msg, NULL, 0);
    CHECK_INT(st, CHAT_VALIDATION_ERROR, "no err buffer: status still returned");
}

static void test_user_id(void)
{
    rejects(F_USER_ID, "\"0\"", "\"0\"");
    accepts(F_USER_ID, "\"1\"", "\"1\"");
    CHECK_STR(msg.user_id, "1", "userId \"1\" stored");
    accepts(F_USER_ID, "\"100000\"", "\"100000\"");
    CHECK_STR(msg.user_id, "100000", "userId \"100000\" stored");
    rejects(F_USER_ID, "\"100001\"", "\"100001\"");
    rejects(F_USER_ID, "0", "number 0");
    accepts(F_USER_ID, "1", "number 1");
    CHECK_STR(msg.user_id, "1", "number 1 stored as \"1\"");
    accepts(F_USER_ID, "100000", "number 100000");
    CHECK_STR(msg.user_id, "100000", "number 100000 stored as \"100000\"");
    rejects(F_USER_ID, "100001", "number 100001");
    rejects(F_USER_ID, "-1", "number -1");
    rejects(F_USER_ID, "1.0", "number 1.0 (not an integer)");
    rejects(F_USER_ID, "1.5", "number 1.5");
    rejects(F_USER_ID, "1e3", "number 1e3");
    rejects(F_USER_ID, "\"007\"", "leading zeros");
    rejects(F_USER_ID, "\"+7\"", "a sign");
    rejects(F_USER_ID, "\"-7\"", "a negative string");
    rejects(F_USER_ID, "\" 7\"", "a leading space");
    rejects(F_USER_ID, "\"7 \"", "a trailing space");
    rejects(F_USER_ID, "\"\"", "the empty string");
    rejects(F_USER_ID, "\"abc\"", "letters");
    rejects(F_USER_ID, "\"1e3\"", "exponent in a string");
    rejects(F_USER_ID, "\"99999999999999999999\"", "a huge string");
    rejects(F_USER_ID, "true", "a boolean");
    rejects(F_USER_ID, "null", "null");
    rejects(F_USER_ID, "[1]", "an array");
    rejects(F_USER_ID, OMIT, "absence");
    CHECK(strstr(err, "required") != NULL, "missing userId says required (%s)", err);
    CHECK_INT(parse(frame_with(F_USER_ID, "99999999999999999999999")), CHAT_INVALID_JSON,
              "userId: an integer too big for JSON decoding is INVALID_JSON (%s)", err);
}

static void test_username(void)
{
    rejects(F_USERNAME, "\"ab\"", "2 characters");
    accepts(F_USERNAME, "\"abc\"", "3 characters");
    accepts(F_USERNAME, repeat("a", 20), "20 characters");
    CHECK_INT(strlen(msg.username), 20, "20-character username stored whole");
    rejects(F_USERNAME, repeat("a", 21), "21 characters");
    accepts(F_USERNAME, "\"User123\"", "mixed case and digits");
    accepts(F_USERNAME, "\"123\"", "digits only");
    rejects(F_USERNAME, "\"jos\xc3\xa9\"", "a non-ASCII letter (é)");
    rejects(F_USERNAME, "\"\xc3\xa4\xc3\xa4\xc3\xa4\"", "three non-ASCII letters (äää)");
    rejects(F_USERNAME, "\"al ice\"", "a space");
    rejects(F_USERNAME, "\"ali_ce\"", "an underscore");
    rejects(F_USERNAME, "\"alice!\"", "punctuation");
    rejects(F_USERNAME, "\"\"", "the empty string");
    rejects(F_USERNAME, "12345", "a number");
    rejects(F_USERNAME, "null", "null");
    rejects(F_USERNAME, OMIT, "absence");
    CHECK(chat_valid_username("abc") && !chat_valid_username("ab") && !chat_valid_username(NULL),
          "chat_valid_username direct");
}

static void test_message_text(void)
{
    rejects(F_MESSAGE, "\"\"", "0 characters");
    accepts(F_MESSAGE, "\"x\"", "1 character");
    accepts(F_MESSAGE, repeat("a", 500), "500 ASCII characters");
    rejects(F_MESSAGE, repeat("a", 501), "501 ASCII characters");
    CHECK(strstr(err, "501") != NULL, "the error gives the count (%s)", err);
    const char *emoji = "\xf0\x9f\x98\x80"; /* U+1F600, four bytes, one code point */
    accepts(F_MESSAGE, repeat(emoji, 500), "500 four-byte emoji");
    CHECK_INT(strlen(msg.message), 2000, "500 emoji stored as 2000 bytes");
    rejects(F_MESSAGE, repeat(emoji, 501), "501 four-byte emoji");
    accepts(F_MESSAGE, repeat("\xe2\x82\xac", 500), "500 three-byte characters (euro sign)");
    rejects(F_MESSAGE, repeat("\xc3\xa9", 501), "501 two-byte characters");
    /* an escaped surrogate pair is 12 bytes of JSON but one code point */
    char mixed[1024];
    snprintf(mixed, sizeof mixed, "\"%.*s\\ud83d\\ude00\"", 499, repeat("a", 499) + 1);
    accepts(F_MESSAGE, mixed, "499 letters and one emoji written as an escaped surrogate pair");
    snprintf(mixed, sizeof mixed, "\"%.*s\\ud83d\\ude00\"", 500, repeat("a", 500) + 1);
    rejects(F_MESSAGE, mixed, "500 letters and one emoji written as an escaped surrogate pair");
    accepts(F_MESSAGE, repeat("\\ud83d\\ude00", 300),
            "300 emoji written as escaped surrogate pairs");
    CHECK_INT(utf8_codepoints(msg.message, strlen(msg.message)), 300, "stored as 300 code points");
    accepts(F_MESSAGE, "\"line\\nbreak \\\"quoted\\\" back\\\\slash\"", "escapes");
    CHECK_STR(msg.message, "line\nbreak \"quoted\" back\\slash", "escapes decoded");
    rejects(F_MESSAGE, "42", "a number");
    rejects(F_MESSAGE, "[\"hi\"]", "an array");
    rejects(F_MESSAGE, OMIT, "absence");
    CHECK_INT(parse(frame_with(F_MESSAGE, "\"a\\u0000b\"")), CHAT_INVALID_JSON,
              "message: an escaped NUL is refused as INVALID_JSON (%s)", err);
    CHECK_INT(parse(frame_with(F_MESSAGE, "\"\\ud800\"")), CHAT_INVALID_JSON,
              "message: an escaped lone surrogate is INVALID_JSON (%s)", err);
}

static void test_timestamp(void)
{
    accepts(F_TIMESTAMP, "\"2026-11-23T10:15:30.123Z\"", "UTC with millis");
    accepts(F_TIMESTAMP, "\"2026-11-23T12:15:30+02:00\"", "an offset");
    CHECK_STR(msg.timestamp, "2026-11-23T12:15:30+02:00", "timestamp kept as the client sent it");
    accepts(F_TIMESTAMP, "\"2024-02-29T00:00:00Z\"", "Feb 29 of a leap year");
    rejects(F_TIMESTAMP, "\"2026-11-23T10:15:30.123\"", "no zone");
    rejects(F_TIMESTAMP, "\"2023-02-29T00:00:00Z\"", "Feb 29 of a non-leap year");
    rejects(F_TIMESTAMP, "\"2026-11-23\"", "a date alone");
    rejects(F_TIMESTAMP, "\"yesterday\"", "words");
    rejects(F_TIMESTAMP, "\"\"", "the empty string");
    rejects(F_TIMESTAMP, "1795428930123", "epoch milliseconds as a number");
    char longfrac[128];
    snprintf(longfrac, sizeof longfrac, "\"2026-11-23T10:15:30.%s%sZ\"", "12345678901234567890123",
             "45678901234567890123456");
    rejects(F_TIMESTAMP, longfrac, "longer than the 63-byte field");
    rejects(F_TIMESTAMP, OMIT, "absence");
}

static void test_message_type(void)
{
    accepts(F_TYPE, "\"TEXT\"", "TEXT");
    accepts(F_TYPE, "\"JOIN\"", "JOIN");
    CHECK_STR(msg.message_type, "JOIN", "JOIN stored");
    accepts(F_TYPE, "\"LEAVE\"", "LEAVE");
    CHECK_STR(msg.message_type, "LEAVE", "LEAVE stored");
    rejects(F_TYPE, "\"text\"", "lower case");
    rejects(F_TYPE, "\"CHAT\"", "an unknown type");
    rejects(F_TYPE, "\"TEXT \"", "a trailing space");
    rejects(F_TYPE, "\"\"", "the empty string");
    rejects(F_TYPE, "1", "a number");
    rejects(F_TYPE, OMIT, "absence");
}

static void test_client_message_id(void)
{
    accepts(F_CMID, OMIT, "absence");
    CHECK_STR(msg.client_message_id, "", "absent -> none");
    accepts(F_CMID, "null", "null");
    CHECK_STR(msg.client_message_id, "", "null -> none");
    rejects(F_CMID, "\"\"", "0 characters");
    accepts(F_CMID, "\"a\"", "1 character");
    accepts(F_CMID, repeat("Z", 64), "64 characters");
    CHECK_INT(strlen(msg.client_message_id), 64, "64-character clientMessageId stored whole");
    rejects(F_CMID, repeat("Z", 65), "65 characters");
    accepts(F_CMID, "\"Az09_-\"", "every allowed class");
    rejects(F_CMID, "\"a b\"", "a space");
    rejects(F_CMID, "\"a.b\"", "a dot");
    rejects(F_CMID, "\"a/b\"", "a slash");
    rejects(F_CMID, "\"caf\xc3\xa9\"", "a non-ASCII letter");
    rejects(F_CMID, "5", "a number");
    rejects(F_CMID, "{}", "an object");

    /* echoed even when another field fails, so the error frame can carry it */
    const char *f = "{\"userId\":\"42\",\"username\":\"x\",\"message\":\"hi\","
                    "\"timestamp\":\"2026-11-23T10:15:30Z\",\"messageType\":\"TEXT\","
                    "\"clientMessageId\":\"retry-7\"}";
    CHECK_INT(parse(f), CHAT_VALIDATION_ERROR, "bad username with a clientMessageId fails");
    CHECK_STR(msg.client_message_id, "retry-7", "clientMessageId copied despite the failure");
    f = "{\"userId\":\"42\",\"username\":\"x\",\"message\":\"hi\","
        "\"timestamp\":\"2026-11-23T10:15:30Z\",\"messageType\":\"TEXT\","
        "\"clientMessageId\":\"bad id\"}";
    CHECK_INT(parse(f), CHAT_VALIDATION_ERROR, "bad username and bad clientMessageId fail");
    CHECK(strncmp(err, "username", 8) == 0, "the other field's error comes first (%s)", err);
    CHECK_STR(msg.client_message_id, "", "an invalid clientMessageId is not copied");
}

/* ---- frame-level errors --------------------------------------------------------------------- */

static void invalid_utf8_in_message(const char *bytes, const char *what)
{
    char frame[256];
    char value[64];
    snprintf(value, sizeof value, "\"ab%scd\"", bytes);
    snprintf(frame, sizeof frame, "%s", frame_with(F_MESSAGE, value));
    chat_status st = parse(frame);
    CHECK(st == CHAT_INVALID_JSON && strncmp(err, "frame is not valid UTF-8", 24) == 0,
          "invalid UTF-8 (%s) -> INVALID_JSON (%s)", what, err);
}

static void test_frame_errors(void)
{
    invalid_utf8_in_message("\x80", "lone continuation byte");
    invalid_utf8_in_message("\xc3", "truncated two-byte sequence");
    invalid_utf8_in_message("\xe2\x82", "truncated three-byte sequence");
    invalid_utf8_in_message("\xf0\x9f\x98", "truncated four-byte sequence");
    invalid_utf8_in_message("\xc0\xaf", "overlong '/' in two bytes");
    invalid_utf8_in_message("\xc1\xbf", "overlong C1 lead");
    invalid_utf8_in_message("\xe0\x80\xaf", "overlong '/' in three bytes");
    invalid_utf8_in_message("\xe0\x9f\xbf", "overlong U+07FF in three bytes");
    invalid_utf8_in_message("\xf0\x80\x80\xaf", "overlong '/' in four bytes");
    invalid_utf8_in_message("\xf0\x8f\xbf\xbf", "overlong U+FFFF in four bytes");
    invalid_utf8_in_message("\xed\xa0\x80", "surrogate U+D800");
    invalid_utf8_in_message("\xed\xbf\xbf", "surrogate U+DFFF");
    invalid_utf8_in_message("\xf4\x90\x80\x80", "U+110000, above the Unicode range");
    invalid_utf8_in_message("\xf5\x80\x80\x80", "F5 lead byte");
    invalid_utf8_in_message("\xff", "FF byte");
    invalid_utf8_in_message("\xfe", "FE byte");
    invalid_utf8_in_message("\xe2\x28\xa1", "bad second byte");

    chat_status st = parse("{\"userId\":\"42\"}\xc3");
    CHECK(st == CHAT_INVALID_JSON && strstr(err, "byte 15"), "UTF-8 error names the byte (%s)",
          err);

    const char *non_objects[][2] = {
        {"[]", "an array"},  {"[1,2]", "an array"}, {"\"str\"", "a string"}, {"42", "a number"},
        {"3.5", "a number"}, {"null", "null"},      {"true", "a boolean"},
    };
    for (size_t i = 0; i < sizeof non_objects / sizeof non_objects[0]; i++) {
        st = parse(non_objects[i][0]);
        CHECK(st == CHAT_INVALID_JSON && strstr(err, "must be a JSON object") &&
                  strstr(err, non_objects[i][1]),
              "non-object %s -> INVALID_JSON (%s)", non_objects[i][0], err);
    }
    const char *bad_json[] = {
        "",      "{",       "{\"userId\":}", "{\"a\":1,}", "{}x",
        "{} {}", "{'a':1}", "not json",      "{\"a\"}",    "{\"a\":1 \"b\":2}"};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        st = parse(bad_json[i]);
        CHECK(st == CHAT_INVALID_JSON && strncmp(err, "frame is not valid JSON", 23) == 0,
              "syntax error '%s' -> INVALID_JSON (%s)", bad_json[i], err);
    }
    st = chat_frame_parse("{\"a\":\0}", 7, CHAT_DEFAULT_MAX_FRAME, &msg, err, sizeof err);
    CHECK_INT(st, CHAT_INVALID_JSON, "a raw NUL byte -> INVALID_JSON (%s)", err);

    st = parse("{\"userId\":\"42\",\"username\":\"alice\",\"username\":\"bob\",\"message\":\"hi\","
               "\"timestamp\":\"2026-11-23T10:15:30Z\",\"messageType\":\"TEXT\"}");
    CHECK(st == CHAT_INVALID_JSON && strstr(err, "duplicate"),
          "duplicate keys -> INVALID_JSON (%s)", err);

    st = parse("{}");
    CHECK(st == CHAT_VALIDATION_ERROR && strncmp(err, "userId", 6) == 0,
          "an empty object -> VALIDATION_ERROR naming the first field (%s)", err);
    st = parse("  {\"userId\":\"42\",\"username\":\"alice\",\"message\":\"hi\","
               "\"timestamp\":\"2026-11-23T10:15:30Z\",\"messageType\":\"TEXT\"}\n ");
    CHECK_INT(st, CHAT_OK, "surrounding whitespace is fine");
}

static void test_size_limit(void)
{
    char frame[CHAT_DEFAULT_MAX_FRAME + 2];
    const char *base = frame_with(-1, NULL);
    size_t blen = strlen(base);
    memcpy(frame, base, blen);
    memset(frame + blen, ' ', sizeof frame - blen); /* trailing JSON whitespace */

    chat_status st = chat_frame_parse(frame, CHAT_DEFAULT_MAX_FRAME, CHAT_DEFAULT_MAX_FRAME, &msg,
                                      err, sizeof err);
    CHECK_INT(st, CHAT_OK, "a frame of exactly the limit (4096 bytes) is accepted");
    st = chat_frame_parse(frame, CHAT_DEFAULT_MAX_FRAME + 1, CHAT_DEFAULT_MAX_FRAME, &msg, err,
                          sizeof err);
    CHECK_INT(st, CHAT_MESSAGE_TOO_LARGE, "a frame of 4097 bytes is MESSAGE_TOO_LARGE");
    CHECK_STR(err, "frame is 4097 bytes; the limit is 4096", "the size error says both numbers");

    frame[blen] = '\xff'; /* too large AND invalid UTF-8: size is checked first */
    st = chat_frame_parse(frame, CHAT_DEFAULT_MAX_FRAME + 1, CHAT_DEFAULT_MAX_FRAME, &msg, err,
                          sizeof err);
    CHECK_INT(st, CHAT_MESSAGE_TOO_LARGE, "size is checked before UTF-8");
    st = chat_frame_parse(base, blen, 10, &msg, err, sizeof err);
    CHECK_INT(st, CHAT_MESSAGE_TOO_LARGE, "the limit is the caller's (10 bytes)");
}

static void test_utf8(void)
{
    struct {
        const char *s;
        size_t len;
        bool ok;
        const char *what;
    } cases[] = {
        {"", 0, true, "empty"},
        {"a\0b", 3, true, "an embedded NUL (U+0000) is well-formed"},
        {"\x7f", 1, true, "U+007F"},
        {"\xc2\x80", 2, true, "U+0080"},
        {"\xdf\xbf", 2, true, "U+07FF"},
        {"\xe0\xa0\x80", 3, true, "U+0800"},
        {"\xed\x9f\xbf", 3, true, "U+D7FF"},
        {"\xee\x80\x80", 3, true, "U+E000"},
        {"\xef\xbf\xbf", 3, true, "U+FFFF"},
        {"\xf0\x90\x80\x80", 4, true, "U+10000"},
        {"\xf4\x8f\xbf\xbf", 4, true, "U+10FFFF"},
        {"\xc2", 1, false, "truncated at the end"},
        {"\xc2\x41", 2, false, "ASCII after a lead byte"},
        {"\xc0\x80", 2, false, "overlong NUL"},
        {"\xe0\x80\x80", 3, false, "overlong three-byte NUL"},
        {"\xed\xa0\x80", 3, false, "U+D800"},
        {"\xed\xb0\x80", 3, false, "U+DC00"},
        {"\xf4\x90\x80\x80", 4, false, "U+110000"},
        {"\xf8\x88\x80\x80\x80", 5, false, "five-byte form"},
        {"\xe0\xa0\x80", 2, false, "len cuts a valid sequence"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(utf8_validate(cases[i].s, cases[i].len) == cases[i].ok, "utf8_validate %s: %s",
              cases[i].ok ? "accepts" : "rejects", cases[i].what);
    CHECK_INT(utf8_codepoints("a\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9", 10), 4,
              "utf8_codepoints counts 1-, 3-, 4- and 2-byte characters once each");
    CHECK_INT(utf8_codepoints("", 0), 0, "utf8_codepoints of empty");
}

/* ---- message ids ---------------------------------------------------------------------------- */

static void test_assign_id(void)
{
    CHECK_INT(parse(frame_with(-1, NULL)), CHAT_OK, "frame for id tests");
    snprintf(msg.room_id, sizeof msg.room_id, "7");
    CHECK(chat_message_assign_id(&msg), "assign a derived id");
    char want[UUID_STR_BUF];
    uuid_v5(CHATFLOW_MESSAGE_NAMESPACE, "42:7:cm-1", 9, want);
    CHECK_STR(msg.message_id, want, "derived id is v5 of \"userId:roomId:clientMessageId\"");
    CHECK(msg.message_id[14] == '5', "derived id has version 5");
    char first[UUID_STR_BUF];
    memcpy(first, msg.message_id, sizeof first);
    CHECK(chat_message_assign_id(&msg) && strcmp(first, msg.message_id) == 0,
          "a retry maps to the same id");
    snprintf(msg.room_id, sizeof msg.room_id, "8");
    chat_message_assign_id(&msg);
    CHECK(strcmp(first, msg.message_id) != 0, "another room gives another id");

    msg.client_message_id[0] = '\0';
    CHECK(chat_message_assign_id(&msg) && msg.message_id[14] == '4',
          "without a clientMessageId the id is v4 (%s)", msg.message_id);
    memcpy(first, msg.message_id, sizeof first);
    chat_message_assign_id(&msg);
    CHECK(strcmp(first, msg.message_id) != 0, "v4 ids differ between sends");

    snprintf(msg.client_message_id, sizeof msg.client_message_id, "cm-1");
    msg.room_id[0] = '\0';
    CHECK(!chat_message_assign_id(&msg) && msg.message_id[0] == '\0',
          "a derived id without a roomId is refused");
}

/* ---- JSON shapes ---------------------------------------------------------------------------- */

static void check_member(json_t *o, const char *key, const char *want, const char *what)
{
    json_t *v = json_object_get(o, key);
    if (!want) {
        CHECK(v && json_is_null(v), "%s: %s is null", what, key);
        return;
    }
    CHECK(v && json_is_string(v), "%s: %s is a string", what, key);
    CHECK_STR(v && json_is_string(v) ? json_string_value(v) : NULL, want, "%s: %s = %s", what, key,
              want);
}

static void check_absent(json_t *o, const char *key, const char *what)
{
    CHECK(json_object_get(o, key) == NULL, "%s: %s is left out", what, key);
}

static json_t *load(const char *text, const char *what)
{
    json_error_t e;
    json_t *o = text ? json_loads(text, JSON_REJECT_DUPLICATES, &e) : NULL;
    CHECK(o && json_is_object(o), "%s is a JSON object", what);
    CHECK(text && !strstr(text, "\": ") && !strstr(text, ", \""), "%s is compact", what);
    return o;
}

static chat_message sample_message(const char *text, const char *cmid)
{
    chat_message m;
    char frame[4096];
    snprintf(frame, sizeof frame,
             "{\"userId\":7,\"username\":\"bob99\",\"message\":%s,"
             "\"timestamp\":\"2026-11-23T12:15:30.5+02:00\",\"messageType\":\"LEAVE\"%s%s%s}",
             text, cmid ? ",\"clientMessageId\":\"" : "", cmid ? cmid : "", cmid ? "\"" : "");
    chat_status st = chat_frame_parse(frame, strlen(frame), 4096, &m, err, sizeof err);
    CHECK_INT(st, CHAT_OK, "sample frame parses (%s)", err);
    snprintf(m.room_id, sizeof m.room_id, "13");
    snprintf(m.server_id, sizeof m.server_id, "producer-a");
    snprintf(m.client_ip, sizeof m.client_ip, "127.0.0.1");
    time_format_iso8601(time_wall_ms(), m.received_at);
    chat_message_assign_id(&m);
    return m;
}

static void check_same_message(const chat_message *a, const chat_message *b, const char *what)
{
    CHECK_STR(b->message_id, a->message_id, "%s: messageId", what);
    CHECK_STR(b->room_id, a->room_id, "%s: roomId", what);
    CHECK_STR(b->user_id, a->user_id, "%s: userId", what);
    CHECK_STR(b->username, a->username, "%s: username", what);
    CHECK_STR(b->message, a->message, "%s: message", what);
    CHECK_STR(b->timestamp, a->timestamp, "%s: timestamp", what);
    CHECK_STR(b->message_type, a->message_type, "%s: messageType", what);
    CHECK_STR(b->server_id, a->server_id, "%s: serverId", what);
    CHECK_STR(b->client_ip, a->client_ip, "%s: clientIp", what);
    CHECK_STR(b->client_message_id, a->client_message_id, "%s: clientMessageId", what);
    CHECK_STR(b->received_at, a->received_at, "%s: receivedAt", what);
}

static void test_queue_round_trip(void)
{
    const char *texts[][2] = {
        {"\"plain text\"", NULL},
        {"\"\\\"quotes\\\", back\\\\slash, tab\\t, newline\\n, caf\xc3\xa9 \xf0\x9f\x98\x80\"",
         "k_1-x"},
        {"\"</script>\\u2028\"", "A"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        chat_message m = sample_message(texts[i][0], texts[i][1]);
        char *json = queue_message_to_json(&m);
        CHECK(json != NULL, "queue_message_to_json #%zu", i);
        if (!json) continue;
        json_t *o = load(json, "queue message");
        const char *keys[] = {"messageId", "roomId",      "userId",   "username", "message",
                              "timestamp", "messageType", "serverId", "clientIp", "receivedAt"};
        bool all_strings = true;
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            all_strings &= json_is_string(json_object_get(o, keys[k]));
        CHECK(all_strings, "queue message #%zu: every protocol.md §4 member is a string", i);
        check_member(o, "userId", "7", "queue message");
        check_member(o, "roomId", "13", "queue message");
        if (texts[i][1]) {
            check_member(o, "clientMessageId", texts[i][1], "queue message");
            CHECK_INT(json_object_size(o), 11, "queue message #%zu has 11 members", i);
        } else {
            check_absent(o, "clientMessageId", "queue message without clientMessageId");
            CHECK_INT(json_object_size(o), 10, "queue message #%zu has 10 members", i);
        }
        json_decref(o);

        chat_message back;
        bool ok = queue_message_parse(json, strlen(json), &back, err, sizeof err);
        CHECK(ok, "queue_message_parse reads #%zu back (%s)", i, err);
        if (ok) check_same_message(&m, &back, "round trip");
        free(json);
    }
}

static const char *QUEUE_OK =
    "{\"messageId\":\"0f8fad5b-d9cb-469f-a165-70867728950e\",\"roomId\":\"7\",\"userId\":\"42\","
    "\"username\":\"alice\",\"message\":\"hi\",\"timestamp\":\"2026-11-23T10:15:30.123Z\","
    "\"messageType\":\"TEXT\",\"serverId\":\"p1\",\"clientIp\":\"10.0.0.1\","
    "\"receivedAt\":\"2026-11-23T10:15:30.200Z\"}";

/* QUEUE_OK with one member's raw value replaced or (value NULL) removed, via jansson. */
static char *queue_with(const char *key, const char *raw_value)
{
    json_t *o = json_loads(QUEUE_OK, 0, NULL);
    if (raw_value)
        json_object_set_new(o, key, json_loads(raw_value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(o, key);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void queue_rejects(const char *key, const char *raw_value, const char *what)
{
    char *body = queue_with(key, raw_value);
    chat_message m;
    bool ok = queue_message_parse(body, strlen(body), &m, err, sizeof err);
    CHECK(!ok && strncmp(err, key, strlen(key)) == 0, "queue body: %s %s is refused (%s)", key,
          what, err);
    free(body);
}

/* Any room id (1-64 of A-Z a-z 0-9 _ -) is a room, kept byte for byte ("07" is not "7"). */
static void queue_accepts_room(const char *room)
{
    char raw[ROOM_ID_BUF + 2];
    snprintf(raw, sizeof raw, "\"%s\"", room);
    char *body = queue_with("roomId", raw);
    chat_message m;
    bool ok = queue_message_parse(body, strlen(body), &m, err, sizeof err);
    CHECK(ok && strcmp(m.room_id, room) == 0, "queue body: roomId \"%s\" is accepted as is (%s)",
          room, ok ? m.room_id : err);
    free(body);
}

static void test_queue_parse(void)
{
    chat_message m;
    CHECK(queue_message_parse(QUEUE_OK, strlen(QUEUE_OK), &m, err, sizeof err),
          "a hand-written protocol.md §4 body parses (%s)", err);
    CHECK_STR(m.client_message_id, "", "no clientMessageId -> none");
    CHECK_STR(m.server_id, "p1", "serverId read");
    CHECK_STR(m.received_at, "2026-11-23T10:15:30.200Z", "receivedAt read");

    char *body = queue_with("messageId", "\"0F8FAD5B-D9CB-469F-A165-70867728950E\"");
    CHECK(queue_message_parse(body, strlen(body), &m, err, sizeof err) &&
              strcmp(m.message_id, "0f8fad5b-d9cb-469f-a165-70867728950e") == 0,
          "an upper-case messageId is accepted and stored in lower case");
    free(body);
    body = queue_with("extra", "{\"v\":2}");
    CHECK(queue_message_parse(body, strlen(body), &m, err, sizeof err),
          "unknown members are ignored");
    free(body);
    body = queue_with("clientIp", "\"\"");
    CHECK(queue_message_parse(body, strlen(body), &m, err, sizeof err),
          "an empty clientIp is allowed");
    free(body);

    queue_rejects("messageId", "\"not-a-uuid\"", "not a UUID");
    queue_rejects("messageId", "\"0f8fad5bd9cb469fa16570867728950e\"", "without dashes");
    queue_rejects("messageId", NULL, "missing");
    queue_rejects("messageId", "5", "a number");
    queue_rejects("roomId", "\"\"", "empty");
    queue_rejects("roomId", "\"a.b\"", "with a dot");
    queue_rejects("roomId", "\"x y\"", "with a space");
    queue_rejects("roomId", "\"caf\\u00e9\"", "with a non-ASCII letter");
    queue_rejects("roomId", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
                  "of 65 characters");
    queue_accepts_room("0");
    queue_accepts_room("07");
    queue_accepts_room("team-alpha");
    queue_accepts_room("3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b");
    queue_accepts_room("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    queue_rejects("roomId", "7", "a JSON number (the body is all strings)");
    queue_rejects("roomId", NULL, "missing");
    queue_rejects("userId", "42", "a JSON number (the body is all strings)");
    queue_rejects("userId", "\"100001\"", "out of range");
    queue_rejects("username", "\"ab\"", "too short");
    queue_rejects("message", "\"\"", "empty");
    queue_rejects("timestamp", "\"2026-11-23T10:15:30\"", "without a zone");
    queue_rejects("messageType", "\"PING\"", "unknown");
    queue_rejects("clientMessageId", "\"no spaces\"", "with a space");
    queue_rejects("serverId", NULL, "missing");
    queue_rejects("serverId", "\"\"", "empty");
    queue_rejects("serverId", repeat("s", 64), "64 bytes");
    queue_rejects("clientIp", "1", "a number");
    queue_rejects("receivedAt", "\"now\"", "not ISO-8601");
    queue_rejects("receivedAt", NULL, "missing");

    const char *broken[] = {"[]", "{", "\"x\"", "", "{\"messageId\":1,\"messageId\":2}"};
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++)
        CHECK(!queue_message_parse(broken[i], strlen(broken[i]), &m, err, sizeof err) &&
                  strncmp(err, "queue message", 13) == 0,
              "queue body '%s' is refused (%s)", broken[i], err);
    const char bad_utf8[] = "{\"message\":\"\xc3\x28\"}";
    CHECK(!queue_message_parse(bad_utf8, strlen(bad_utf8), &m, err, sizeof err),
          "queue body with invalid UTF-8 is refused (%s)", err);
}

static void test_broadcast_shape(void)
{
    chat_message m = sample_message("\"hello room\"", "c1");
    char *json = broadcast_event_to_json(&m, "2026-11-23T10:15:31.000Z", "18889");
    json_t *o = load(json, "broadcast");
    check_member(o, "type", "MESSAGE", "broadcast");
    check_member(o, "messageId", m.message_id, "broadcast");
    check_member(o, "roomId", "13", "broadcast");
    check_member(o, "userId", "7", "broadcast");
    check_member(o, "username", "bob99", "broadcast");
    check_member(o, "message", "hello room", "broadcast");
    check_member(o, "timestamp", "2026-11-23T12:15:30.5+02:00", "broadcast");
    check_member(o, "messageType", "LEAVE", "broadcast");
    check_member(o, "serverTimestamp", "2026-11-23T10:15:31.000Z", "broadcast");
    check_member(o, "sequenceNumber", "18889", "broadcast");
    check_member(o, "clientMessageId", "c1", "broadcast (extension: the sender's id, live)");
    CHECK_INT(json_object_size(o), 11,
              "broadcast has the 10 protocol.md §2 members and clientMessageId");
    json_decref(o);
    free(json);

    m.client_message_id[0] = '\0';
    json = broadcast_event_to_json(&m, "2026-11-23T10:15:31.000Z", "18889");
    o = load(json, "broadcast without clientMessageId");
    check_absent(o, "clientMessageId", "broadcast of a message without clientMessageId");
    CHECK_INT(json_object_size(o), 10, "broadcast has exactly the 10 protocol.md §2 members");
    json_decref(o);
    free(json);

    json = broadcast_event_to_json(&m, "2026-11-23T10:15:31.000Z", NULL);
    o = load(json, "broadcast without sequence number");
    check_absent(o, "sequenceNumber", "broadcast without sequence number");
    json_decref(o);
    free(json);
}

static void test_ack_shape(void)
{
    chat_message m = sample_message("\"x\"", "retry-1");
    char *json = ack_to_json(&m, "2026-11-23T10:15:31.000Z", "42");
    json_t *o = load(json, "ack");
    CHECK(json && strncmp(json, "{\"status\":\"SUCCESS\"", 19) == 0, "ack starts with status (%s)",
          json ? json : "(null)");
    check_member(o, "status", "SUCCESS", "ack");
    check_member(o, "messageId", m.message_id, "ack");
    check_member(o, "clientMessageId", "retry-1", "ack");
    check_member(o, "roomId", "13", "ack");
    check_member(o, "serverTimestamp", "2026-11-23T10:15:31.000Z", "ack");
    check_member(o, "sequenceNumber", "42", "ack");
    check_member(o, "delivery", "sent", "ack (first delivery receipt)");
    CHECK_INT(json_object_size(o), 7, "ack has 7 members");
    json_decref(o);
    free(json);

    m.client_message_id[0] = '\0';
    json = ack_to_json(&m, "2026-11-23T10:15:31.000Z", "");
    o = load(json, "ack without ids");
    check_member(o, "clientMessageId", NULL, "ack without clientMessageId");
    check_absent(o, "sequenceNumber", "ack with \"\" sequence number");
    json_decref(o);
    free(json);
    json = ack_to_json(&m, "2026-11-23T10:15:31.000Z", NULL);
    o = load(json, "ack with NULL sequence number");
    check_absent(o, "sequenceNumber", "ack with NULL sequence number");
    json_decref(o);
    free(json);
}

static void test_error_shape(void)
{
    const chat_status codes[] = {CHAT_INVALID_JSON,  CHAT_VALIDATION_ERROR,  CHAT_MESSAGE_TOO_LARGE,
                                 CHAT_RATE_LIMITED,  CHAT_QUEUE_UNAVAILABLE, CHAT_QUEUE_ERROR,
                                 CHAT_FORBIDDEN_USER};
    const char *names[] = {"INVALID_JSON",  "VALIDATION_ERROR",  "MESSAGE_TOO_LARGE",
                           "RATE_LIMITED",  "QUEUE_UNAVAILABLE", "QUEUE_ERROR",
                           "FORBIDDEN_USER"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        CHECK_STR(chat_status_code(codes[i]), names[i], "chat_status_code(%zu)", i);
        char *json =
            error_to_json(codes[i], "username: must be 3-20 ASCII letters or digits", "c-9");
        json_t *o = load(json, "error");
        check_member(o, "status", "ERROR", "error");
        check_member(o, "errorCode", names[i], "error");
        check_member(o, "errorMessage", "username: must be 3-20 ASCII letters or digits", "error");
        check_member(o, "clientMessageId", "c-9", "error");
        CHECK_INT(json_object_size(o), 4, "error has 4 members");
        json_decref(o);
        free(json);
    }
    CHECK_STR(chat_status_code(CHAT_OK), "OK", "chat_status_code(CHAT_OK)");

    char *json = error_to_json(CHAT_INVALID_JSON, "quote \" and \\ and \n", NULL);
    json_t *o = load(json, "error with escapes");
    check_member(o, "errorMessage", "quote \" and \\ and \n", "error with escapes");
    check_member(o, "clientMessageId", NULL, "error without clientMessageId");
    json_decref(o);
    free(json);

    json = error_to_json(CHAT_INVALID_JSON, "cut mid-character: caf\xc3", "");
    o = load(json, "error with a cut message");
    check_member(o, "errorMessage", "cut mid-character: caf", "error keeps the valid UTF-8 prefix");
    check_member(o, "clientMessageId", NULL, "error with \"\" clientMessageId");
    json_decref(o);
    free(json);

    json = error_to_json(CHAT_RATE_LIMITED, NULL, NULL);
    o = load(json, "error without a message");
    check_member(o, "errorMessage", "RATE_LIMITED", "a NULL message falls back to the code");
    json_decref(o);
    free(json);

    /* end to end: a parse error's text goes into an error frame */
    chat_status st = parse(frame_with(F_USERNAME, "\"jos\xc3\xa9\""));
    json = error_to_json(st, err, msg.client_message_id);
    o = load(json, "error from a parse failure");
    check_member(o, "errorCode", "VALIDATION_ERROR", "error from a parse failure");
    check_member(o, "errorMessage", "username: must be 3-20 ASCII letters or digits",
                 "error from a parse failure");
    check_member(o, "clientMessageId", "cm-1", "error from a parse failure");
    json_decref(o);
    free(json);

    /* jansson's error text quotes the input, and can stop inside a character (a stray lead byte
     * of é is an "invalid token"); err must stay valid UTF-8 however it is cut. */
    const char *f = "{\"userId\":\"42\",\"x\":\xc3\xa9\xc3\xa9\xc3\xa9}";
    st = parse(f);
    CHECK(st == CHAT_INVALID_JSON && utf8_validate(err, strlen(err)),
          "an error text quoting part of a character is still valid UTF-8 (%s)", err);
    bool all_valid = true;
    for (size_t size = 1; size < 120; size++) {
        char small[120];
        chat_frame_parse(f, strlen(f), 4096, &msg, small, size);
        all_valid &= utf8_validate(small, strlen(small)) && strlen(small) < size;
    }
    CHECK(all_valid, "an err buffer of any size 1-119 holds valid, terminated UTF-8 (cuts into é)");
}

/* ---- typing indicators (docs/protocol.md 1.2) ----------------------------------------------- */

static void test_frame_kinds(void)
{
    const char *typing = "{\"type\":\"TYPING\",\"userId\":9,\"username\":\"carol\"}";
    CHECK_INT(parse(typing), CHAT_OK, "TYPING frame without timestamp parses (%s)", err);
    CHECK_INT(msg.kind, CHAT_KIND_TYPING, "TYPING frame has the typing kind");
    CHECK_STR(msg.user_id, "9", "TYPING: userId");
    CHECK_STR(msg.username, "carol", "TYPING: username");
    CHECK_STR(msg.timestamp, "", "TYPING without timestamp: left empty for the producer's clock");
    CHECK_STR(msg.message, "", "TYPING: no message text");

    CHECK_INT(parse("{\"type\":\"TYPING\",\"userId\":\"9\",\"username\":\"carol\","
                    "\"timestamp\":\"2026-12-02T10:00:00Z\"}"),
              CHAT_OK, "TYPING frame with timestamp parses (%s)", err);
    CHECK_STR(msg.timestamp, "2026-12-02T10:00:00Z", "TYPING: timestamp kept");

    struct {
        const char *frame, *field;
    } bad[] = {
        {"{\"type\":\"TYPING\",\"username\":\"carol\"}", "userId"},
        {"{\"type\":\"TYPING\",\"userId\":0,\"username\":\"carol\"}", "userId"},
        {"{\"type\":\"TYPING\",\"userId\":9,\"username\":\"c\"}", "username"},
        {"{\"type\":\"TYPING\",\"userId\":9}", "username"},
        {"{\"type\":\"TYPING\",\"userId\":9,\"username\":\"carol\",\"timestamp\":\"soon\"}",
         "timestamp"},
        {"{\"type\":\"READ\",\"userId\":9,\"username\":\"carol\"}", "type"},
        {"{\"type\":7,\"userId\":9,\"username\":\"carol\"}", "type"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        chat_status st = parse(bad[i].frame);
        CHECK(st == CHAT_VALIDATION_ERROR && strncmp(err, bad[i].field, strlen(bad[i].field)) == 0,
              "refused with an error naming %s: %s (%s)", bad[i].field, bad[i].frame, err);
    }
    CHECK_INT(parse("{\"type\":\"FOO\",\"clientMessageId\":\"k1\"}"), CHAT_VALIDATION_ERROR,
              "unknown type is a validation error");
    CHECK_STR(msg.client_message_id, "k1", "an unknown type still echoes the clientMessageId");

    /* "type":"MESSAGE" (or null) is the protocol.md §1 message, with every rule */
    CHECK_INT(
        parse("{\"type\":\"MESSAGE\",\"userId\":\"42\",\"username\":\"alice\",\"message\":\"hi\","
              "\"timestamp\":\"2026-11-23T10:15:30.123Z\",\"messageType\":\"TEXT\"}"),
        CHAT_OK, "type MESSAGE is a chat message (%s)", err);
    CHECK_INT(msg.kind, CHAT_KIND_MESSAGE, "type MESSAGE -> message kind");
    CHECK_INT(parse("{\"type\":\"MESSAGE\",\"userId\":\"42\",\"username\":\"alice\"}"),
              CHAT_VALIDATION_ERROR, "type MESSAGE without the message fields is refused");
    CHECK_INT(parse(frame_with(F_CMID, OMIT)), CHAT_OK, "no type -> chat message");
    CHECK_INT(msg.kind, CHAT_KIND_MESSAGE, "no type -> message kind");
}

static void test_typing_queue_and_event(void)
{
    const char *typing = "{\"type\":\"TYPING\",\"userId\":9,\"username\":\"carol\"}";
    chat_message m;
    CHECK_INT(chat_frame_parse(typing, strlen(typing), 4096, &m, err, sizeof err), CHAT_OK,
              "typing parses");
    snprintf(m.room_id, sizeof m.room_id, "4");
    snprintf(m.server_id, sizeof m.server_id, "producer-a");
    snprintf(m.client_ip, sizeof m.client_ip, "10.1.2.3");
    snprintf(m.received_at, sizeof m.received_at, "2026-12-02T10:00:00.000Z");
    snprintf(m.timestamp, sizeof m.timestamp, "2026-12-02T10:00:00.000Z");
    CHECK(chat_message_assign_id(&m), "typing event gets an id");

    char *json = queue_message_to_json(&m);
    json_t *o = load(json, "typing queue body");
    check_member(o, "type", "TYPING", "typing queue body");
    check_member(o, "roomId", "4", "typing queue body");
    check_member(o, "userId", "9", "typing queue body");
    check_member(o, "username", "carol", "typing queue body");
    check_absent(o, "message", "typing queue body");
    check_absent(o, "messageType", "typing queue body");
    CHECK_INT(json_object_size(o), 9, "typing queue body has 9 members");
    json_decref(o);

    chat_message back;
    CHECK(queue_message_parse(json, strlen(json), &back, err, sizeof err),
          "typing body parses back (%s)", err);
    CHECK_INT(back.kind, CHAT_KIND_TYPING, "typing body -> typing kind");
    CHECK_STR(back.message_id, m.message_id, "typing body: id");
    CHECK_STR(back.user_id, "9", "typing body: userId");
    CHECK_STR(back.received_at, m.received_at, "typing body: receivedAt");
    free(json);

    const char *no_user =
        "{\"type\":\"TYPING\",\"messageId\":\"0f8fad5b-d9cb-469f-a165-70867728950e\","
        "\"roomId\":\"4\",\"username\":\"carol\",\"timestamp\":\"2026-12-02T10:00:00Z\","
        "\"serverId\":\"p\",\"clientIp\":\"\",\"receivedAt\":\"2026-12-02T10:00:00Z\"}";
    CHECK(!queue_message_parse(no_user, strlen(no_user), &back, err, sizeof err) &&
              strncmp(err, "userId", 6) == 0,
          "typing body without userId is poison (%s)", err);
    const char *no_ts =
        "{\"type\":\"TYPING\",\"messageId\":\"0f8fad5b-d9cb-469f-a165-70867728950e\","
        "\"roomId\":\"4\",\"userId\":\"9\",\"username\":\"carol\","
        "\"serverId\":\"p\",\"clientIp\":\"\",\"receivedAt\":\"2026-12-02T10:00:00Z\"}";
    CHECK(!queue_message_parse(no_ts, strlen(no_ts), &back, err, sizeof err) &&
              strncmp(err, "timestamp", 9) == 0,
          "typing body needs its timestamp (%s)", err);

    json = broadcast_event_to_json(&m, "2026-12-02T10:00:00.100Z", "77");
    o = load(json, "typing event");
    check_member(o, "type", "TYPING", "typing event");
    check_member(o, "roomId", "4", "typing event");
    check_member(o, "userId", "9", "typing event");
    check_member(o, "username", "carol", "typing event");
    check_member(o, "timestamp", "2026-12-02T10:00:00.000Z", "typing event");
    CHECK_INT(json_object_size(o), 5, "typing event has 5 members (nothing stored-message-like)");
    json_decref(o);
    free(json);
}

int main(void)
{
    test_valid_frame();
    test_user_id();
    test_username();
    test_message_text();
    test_timestamp();
    test_message_type();
    test_client_message_id();
    test_frame_errors();
    test_size_limit();
    test_utf8();
    test_assign_id();
    test_queue_round_trip();
    test_queue_parse();
    test_broadcast_shape();
    test_ack_shape();
    test_error_shape();
    test_frame_kinds();
    test_typing_queue_and_event();
    return TEST_DONE();
}
