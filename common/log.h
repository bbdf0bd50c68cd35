/*
 * log — levelled, one line per event, on stderr.
 *
 * Contract:
 *  - log_init() is called once at start-up, before any thread is started; after that
 *    log_write() may be called from any thread. Each event is formatted into one buffer and
 *    written with a single write(2), so lines from different threads never interleave.
 *  - Format "text":  2026-11-23T10:15:30.123Z INFO  producer: message
 *    Format "json":  {"ts":"...","level":"info","component":"producer","msg":"..."}  (CloudWatch)
 *  - Events below the configured level cost one integer comparison.
 */
#ifndef CHATFLOW_LOG_H
#define CHATFLOW_LOG_H

#include <stdbool.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

/* Returns false (and leaves settings unchanged) for an unknown level or format name. */
bool log_init(const char *level_name, const char *format_name);
bool log_enabled(log_level level);
void log_write(log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...)                                                 \
    do {                                                                     \
        if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, comp, __VA_ARGS__); \
    } while (0)
#define log_info(comp, ...) log_write(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_write(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_write(LOG_ERROR, comp, __VA_ARGS__)

#endif
