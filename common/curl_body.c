/* curl_body — bounded in-memory response bodies for libcurl (contract in curl_body.h). */
#include "curl_body.h"

#include <stdlib.h>
#include <string.h>

size_t curl_body_collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    curl_body *b = userdata;
    size_t n = size * nmemb;
    if (n > b->max || b->len > b->max - n) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    char *grown = realloc(b->data, b->len + n + 1);
    if (!grown) return 0;
    memcpy(grown + b->len, ptr, n);
    b->data = grown;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}
