/*
 * fuzz_util — helpers shared by the libFuzzer targets in test/fuzz/.
 *
 *  - FUZZ_ASSERT(cond): a property the code under test must keep. A broken one prints where and
 *    aborts, which libFuzzer reports as a crash and saves the input as a reproducer.
 *  - fuzz_split(): cuts the input at '\n' into up to max NUL-terminated pieces (copies owned by
 *    the caller's buffer), so one byte string can drive several string arguments.
 *  - fuzz_terminated(): a string that checked code hands back must be NUL-terminated within
 *    its buffer.
 */
#ifndef CHATFLOW_FUZZ_UTIL_H
#define CHATFLOW_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(cond)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz property broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* Copies data into buf (size >= size + max) and returns in parts[] up to max NUL-terminated
 * pieces cut at '\n'; the last piece takes the rest. Returns the number of pieces. */
static inline size_t fuzz_split(const uint8_t *data, size_t size, char *buf, char **parts,
                                size_t max)
{
    memcpy(buf, data, size);
    buf[size] = '\0';
    size_t n = 0;
    char *p = buf;
    while (n < max) {
        parts[n++] = p;
        if (n == max) break;
        char *nl = memchr(p, '\n', (size_t)(buf + size - p));
        if (!nl) break;
        *nl = '\0';
        p = nl + 1;
    }
    return n;
}

static inline bool fuzz_terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

#endif
