/*
 * aws_http — what every signed AWS call here shares: an endpoint URL split into the Host header
 * and path that are signed, and the signed header list of a POST.
 *
 * Contract:
 *  - aws_endpoint_parse() accepts http:// and https:// URLs only. host is "host[:port]" exactly
 *    as it will be sent (the Host header is set explicitly, so the value signed is the value
 *    sent); path is the URL's path, "/" when it has none. what names the setting in errors
 *    ("SQS endpoint \"...\" is not a valid URL").
 *  - aws_signed_post_headers() signs a POST of body to ep (SigV4, header form, path normalised,
 *    body not signed into a header) with the caller's headers, which must not include Host (it
 *    is added first from ep). It returns a libcurl header list holding those headers, the
 *    headers the signature adds (X-Amz-Date, X-Amz-Security-Token when the credentials have a
 *    token), Authorization and an empty "Expect:" (no 100-continue round trip: AWS answers at
 *    once). The caller owns the list (curl_slist_free_all). NULL with err set when signing or
 *    an allocation fails.
 *  - aws_curl_abort_on_flag() lets another thread cut a call short (a bounded stop).
 *  - Thread-safe: no state of its own.
 */
#ifndef CHATFLOW_AWS_HTTP_H
#define CHATFLOW_AWS_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "credentials.h"
#include "sigv4.h"

typedef struct {
    char host[300]; /* Host header value: host[:port] */
    char path[256]; /* "/" normally */
} aws_endpoint;

bool aws_endpoint_parse(const char *url, const char *what, aws_endpoint *out, char *err,
                        size_t err_len);

struct curl_slist *aws_signed_post_headers(const aws_endpoint *ep, const sigv4_header *headers,
                                           size_t n_headers, const char *body, size_t body_len,
                                           const aws_credentials *creds, const char *region,
                                           const char *service, char *err, size_t err_len);

/* A libcurl CURLOPT_XFERINFOFUNCTION that ends the transfer (CURLE_ABORTED_BY_CALLBACK) once the
 * atomic_bool given as CURLOPT_XFERINFODATA is true; a NULL flag never ends it. libcurl calls it
 * about once a second and at every transfer event (with CURLOPT_NOPROGRESS 0). */
int aws_curl_abort_on_flag(void *flag, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow);

#endif
