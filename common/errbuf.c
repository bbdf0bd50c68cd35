/* errbuf — formatted failure reasons into caller buffers (contract in errbuf.h). */
#include "errbuf.h"

#include <stdio.h>

void errbuf_vset(char *err, size_t err_len, const char *fmt, va_list ap)
{
    if (!err || err_len == 0) return;
    vsnprintf(err, err_len, fmt, ap);
}

void errbuf_set(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errbuf_vset(err, err_len, fmt, ap);
    va_end(ap);
}
