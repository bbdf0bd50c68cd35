/*
 * curl_body — a libcurl write callback that collects a response body in memory, with a bound.
 *
 * Contract:
 *  - Start from a zeroed curl_body with max set (the largest body accepted, in bytes); pass
 *    curl_body_collect as CURLOPT_WRITEFUNCTION and the curl_body as CURLOPT_WRITEDATA.
 *  - data is malloc'd, always NUL-terminated once anything arrived (NULL for an empty body), and
 *    owned by the caller (free()).
 *  - A body that would grow past max stops the transfer (libcurl then reports
 *    CURLE_WRITE_ERROR) with too_big set; running out of memory stops it without too_big.
 *  - libcurl has no bounded in-memory sink of its own, hence this small one, shared by every
 *    small-document fetch (credentials, key sets).
 */
#ifndef CHATFLOW_CURL_BODY_H
#define CHATFLOW_CURL_BODY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *data;
    size_t len;
    size_t max;
    bool too_big;
} curl_body;

size_t curl_body_collect(char *ptr, size_t size, size_t nmemb, void *userdata);

#endif
