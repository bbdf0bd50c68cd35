/*
 * log — see log.h for the contract.
 *
 * Each event is rendered into one buffer and handed to the kernel with one write(2) on fd 2,
 * so concurrent lines never interleave (writes up to PIPE_BUF are atomic on pipes; regular
 * files opened O_APPEND and terminals keep a single write together as well). JSON lines are
 * built with jansson, which does the string escaping for us.
 */
#include "log.h"
#include "redact.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Set by log_init() before threads start; atomics keep later readers honest under TSan. */
static atomic_int min_level = LOG_INFO;
static atomic_int line_format = LOG_FORMAT_TEXT;

/* Longest message kept; longer ones are cut and marked, so one event stays one line. */
#define LOG_MSG_MAX 4096

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_labels[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

static int level_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

bool log_init(const char *level_name, const char *format_name)
{
    int level = level_from_name(level_name);
    int format;
    if (format_name && strcmp(format_name, "text") == 0)
        format = LOG_FORMAT_TEXT;
    else if (format_name && strcmp(format_name, "json") == 0)
        format = LOG_FORMAT_JSON;
    else
        return false;
    if (level < 0) return false;
    atomic_store_explicit(&min_level, level, memory_order_relaxed);
    atomic_store_explicit(&line_format, format, memory_order_relaxed);
    return true;
}

bool log_enabled(log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

/* ISO-8601 UTC with milliseconds: 2026-11-23T10:15:30.123Z */
static void format_timestamp(char *buf, size_t len)
{
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", now.tv_nsec / 1000000L);
}

static void write_all(const char *buf, size_t len)
{
    /* One write(2) normally does it; the loop only covers EINTR and short writes to a full
     * pipe, where there is nothing better to do than finish the line. */
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Text lines must stay one line: control characters become spaces. */
static void flatten_controls(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = ' ';
}

/* jansson refuses invalid UTF-8; replace every non-ASCII byte so the event is not lost. */
static void replace_non_ascii(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) *s = '?';
}

static void emit_text(const char *ts, log_level level, const char *component, char *msg)
{
    char line[LOG_MSG_MAX + 128];
    flatten_controls(msg);
    int n = snprintf(line, sizeof line, "%s %s %s: %s\n", ts, level_labels[level], component, msg);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    write_all(line, (size_t)n);
}

static void emit_json(const char *ts, log_level level, const char *component, char *msg)
{
    json_t *msg_value = json_string(msg);
    if (!msg_value) {
        replace_non_ascii(msg);
        msg_value = json_string(msg);
    }
    json_t *comp_value = json_string(component);
    if (!comp_value) comp_value = json_string("?");
    json_t *event = json_pack("{s:s, s:s, s:o, s:o}", "ts", ts, "level", level_names[level],
                              "component", comp_value, "msg", msg_value);
    if (!event) return;
    char *text = json_dumps(event, JSON_COMPACT);
    json_decref(event);
    if (!text) return;
    size_t len = strlen(text);
    char *line = malloc(len + 2);
    if (line) {
        memcpy(line, text, len);
        line[len] = '\n';
        write_all(line, len + 1);
        free(line);
    }
    free(text);
}

void log_write(log_level level, const char *component, const char *fmt, ...)
{
    if (level < LOG_DEBUG || level > LOG_ERROR || !log_enabled(level)) return;
    char msg[LOG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof msg) memcpy(msg + sizeof msg - 4, "...", 4);
    /* Last line of defence: whatever a caller quoted (an endpoint, a libpq or settings message),
     * no password, key or token reaches the log. */
    redact_text(msg, sizeof msg);

    char ts[40];
    format_timestamp(ts, sizeof ts);
    if (!component) component = "-";
    if (atomic_load_explicit(&line_format, memory_order_relaxed) == LOG_FORMAT_JSON)
        emit_json(ts, level, component, msg);
    else
        emit_text(ts, level, component, msg);
}
