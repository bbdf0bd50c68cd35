/* seqnum — see seqnum.h. */
#include "seqnum.h"

#include <string.h>

bool seqnum_valid(const char *s)
{
    if (!s) return false;
    size_t n = 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9') return false;
        if (n >= SEQNUM_MAX_DIGITS) return false;
    }
    return n > 0;
}

static const char *skip_leading_zeros(const char *s)
{
    while (s[0] == '0' && s[1] != '\0') s++;
    return s;
}

int seqnum_cmp(const char *a, const char *b)
{
    a = skip_leading_zeros(a);
    b = skip_leading_zeros(b);
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return la < lb ? -1 : 1;
    int c = memcmp(a, b, la);
    return (c > 0) - (c < 0);
}
