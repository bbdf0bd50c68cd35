/* test_log — log lines as they reach stderr: format, level filter, JSON validity, escaping. */
/* test-passes: asan tsan */
#include "log.h"
#include "testlib.h"

#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <unistd.h>

static char captured[65536];

/* Runs fn with stderr pointed at a temporary file and returns what was written. */
static const char *capture(void (*fn)(void))
{
    char path[] = "/tmp/test_log_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, captured, sizeof captured - 1, 0);
    close(fd);
    captured[n > 0 ? n : 0] = '\0';
    return captured;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static bool matches(const char *text, const char *pattern)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0) return false;
    bool ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

static void write_text_lines(void)
{
    log_info("producer", "started on port %d", 8080);
    log_debug("producer", "hidden at info");
    log_warn("sqs", "retry %s", "SendMessageBatch");
    log_error("db", "line one\nline two");
}

static void write_debug_lines(void)
{
    log_debug("consumer", "now visible");
    log_info("consumer", "also visible");
}

static void write_error_only(void)
{
    log_info("x", "dropped");
    log_warn("x", "dropped");
    log_error("x", "kept");
}

static void write_json_lines(void)
{
    log_info("producer", "say \"hi\"\nand\\bye\ttab");
    log_debug("producer", "hidden");
    log_warn("comp\"q", "plain");
}

static void write_invalid_utf8(void) { log_error("db", "bad bytes \xff\xfe end"); }

static void write_long_line(void)
{
    static char big[20000];
    memset(big, 'a', sizeof big - 1);
    log_info("big", "%s", big);
}

int main(void)
{
    CHECK(!log_init("verbose", "text"), "unknown level is refused");
    CHECK(!log_init("info", "xml"), "unknown format is refused");
    CHECK(!log_init(NULL, "text"), "NULL level is refused");

    CHECK(log_init("info", "text"), "log_init info/text");
    CHECK(!log_enabled(LOG_DEBUG), "debug disabled at info");
    CHECK(log_enabled(LOG_INFO) && log_enabled(LOG_ERROR), "info and error enabled at info");
    const char *out = capture(write_text_lines);
    CHECK_INT(count_lines(out), 3, "three lines at info (debug filtered, newline flattened)");
    CHECK(matches(out, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z INFO  "
                       "producer: started on port 8080\n"),
          "text line: ISO-8601 UTC millis timestamp, padded level, component, message");
    CHECK(strstr(out, " WARN  sqs: retry SendMessageBatch\n") != NULL, "warn line");
    CHECK(strstr(out, " ERROR db: line one line two\n") != NULL,
          "embedded newline kept on one text line");
    CHECK(strstr(out, "hidden") == NULL, "debug line filtered out");

    CHECK(log_init("warn", "text"), "log_init warn");
    CHECK(!log_init("bogus", "json"), "bad level after init refused");
    CHECK(!log_enabled(LOG_INFO), "failed log_init left level at warn");

    CHECK(log_init("error", "text"), "log_init error");
    out = capture(write_error_only);
    CHECK_INT(count_lines(out), 1, "only error passes at error level");
    CHECK(strstr(out, "ERROR x: kept\n") != NULL, "error line present");

    CHECK(log_init("debug", "text"), "log_init debug");
    out = capture(write_debug_lines);
    CHECK_INT(count_lines(out), 2, "debug level shows debug and info");
    CHECK(strstr(out, "DEBUG consumer: now visible") != NULL, "debug line present");

    CHECK(log_init("info", "json"), "log_init info/json");
    out = capture(write_json_lines);
    CHECK_INT(count_lines(out), 2, "two JSON lines (debug filtered)");
    char *second = strchr(out, '\n');
    json_error_t jerr;
    json_t *first = second ? json_loadb(out, (size_t)(second - out), 0, &jerr) : NULL;
    CHECK(first != NULL, "first JSON line parses");
    if (first) {
        CHECK_STR(json_string_value(json_object_get(first, "msg")), "say \"hi\"\nand\\bye\ttab",
                  "quotes, newline, backslash and tab round-trip through JSON");
        CHECK_STR(json_string_value(json_object_get(first, "level")), "info", "level field");
        CHECK_STR(json_string_value(json_object_get(first, "component")), "producer",
                  "component field");
        const char *ts = json_string_value(json_object_get(first, "ts"));
        CHECK(ts && matches(ts,
                            "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"),
              "ts field is ISO-8601 UTC with millis");
        json_decref(first);
    }
    CHECK(out[0] == '{' && strstr(out, "\\n") != NULL, "raw JSON line escapes the newline");
    json_t *warn = second ? json_loads(second + 1, 0, &jerr) : NULL;
    CHECK(warn != NULL, "second JSON line parses");
    if (warn) {
        CHECK_STR(json_string_value(json_object_get(warn, "component")), "comp\"q",
                  "component escaped");
        CHECK_STR(json_string_value(json_object_get(warn, "level")), "warn", "warn level field");
        json_decref(warn);
    }

    out = capture(write_invalid_utf8);
    json_t *bad = json_loads(out, 0, &jerr);
    CHECK(bad != NULL, "invalid UTF-8 still produces a valid JSON line");
    if (bad) {
        CHECK_STR(json_string_value(json_object_get(bad, "msg")), "bad bytes ?? end",
                  "invalid bytes replaced");
        json_decref(bad);
    }

    CHECK(log_init("info", "text"), "back to text");
    out = capture(write_long_line);
    CHECK_INT(count_lines(out), 1, "an over-long message stays one line");
    CHECK(strstr(out, "...\n") != NULL, "an over-long message is marked as cut");
    return TEST_DONE();
}
