/*
 * web_page — the browser chat page, served over plain HTTP on the producer's WebSocket port
 * (docs/protocol.md §1.3, docs/web.md), and the development token endpoint next to it.
 *
 * Contract:
 *  - Only these paths are served, from settings web_root: "/" and "/index.html" (index.html),
 *    "/app.js", "/style.css", with their content types; "/config.json" is generated once at start
 *    from the settings (where the page finds the consumer, the limits it must respect, whether
 *    identity tokens are required and where a development token comes from). "/dev/token" is
 *    answered by dev_tokens.h when CHATFLOW_DEV_TOKENS is on (404 otherwise), with or without a
 *    web_root. Anything else, or any page path when web_root is empty, is 404 with a one-line
 *    hint. No path from the request is ever joined to the folder, so nothing outside these
 *    files can be read.
 *  - web_page_on_http() answers LWS_CALLBACK_HTTP. A generated answer (config.json, a token)
 *    goes into the connection's web_reply: the headers are written at once and the body at the
 *    next LWS_CALLBACK_HTTP_WRITEABLE, where the caller calls web_page_on_writeable() (one
 *    lws_write per WRITEABLE). Both return what the lws callback should return (0 keep going,
 *    -1 close). The reply owns its body until it is written; web_reply_clear() frees it and is
 *    called when the HTTP connection closes (LWS_CALLBACK_CLOSED_HTTP) in case it never was.
 *  - Used by the WebSocket service thread only; web_page_free() at shutdown.
 */
#ifndef CHATFLOW_PRODUCER_WEB_PAGE_H
#define CHATFLOW_PRODUCER_WEB_PAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "settings.h"

struct lws;
typedef struct web_page web_page;

/* A generated answer's body, waiting for the connection to become writeable. */
typedef struct {
    unsigned char *buf; /* LWS_PRE bytes of headroom, then len bytes of body; NULL: none */
    size_t len;
} web_reply;

/* NULL when out of memory. */
web_page *web_page_new(const producer_settings *s);
int web_page_on_http(web_page *w, struct lws *wsi, const char *uri, web_reply *reply);
int web_page_on_writeable(web_page *w, struct lws *wsi, web_reply *reply);
void web_reply_clear(web_reply *reply);
void web_page_free(web_page *w);

#endif
