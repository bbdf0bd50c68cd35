/*
 * errbuf — the one way functions here report why they failed: a caller-supplied buffer
 * (char *err, size_t err_len) that receives one formatted line.
 *
 * Contract:
 *  - errbuf_set() formats into err (truncating to err_len, always NUL-terminated); err NULL or
 *    err_len 0 means the caller does not want the text, and nothing is written.
 *  - errbuf_vset() is the same for a va_list (for a file's own fail() that also returns a code).
 */
#ifndef CHATFLOW_ERRBUF_H
#define CHATFLOW_ERRBUF_H

#include <stdarg.h>
#include <stddef.h>

void errbuf_set(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void errbuf_vset(char *err, size_t err_len, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
