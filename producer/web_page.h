/*
 * web_page — the browser chat page, served over plain HTTP on the producer's WebSocket port
 * (docs/protocol.md §1.3, docs/web.md).
 *
 * Contract:
 *  - Only these paths are served, from settings web_root: "/" and "/index.html" (index.html),
 *    "/app.js", "/style.css", with their content types; "/config.json" is generated once at start
 *    from the settings (where the page finds the consumer, the limits it must respect).
 *    Anything else, or any path when web_root is empty, is 404 with a one-line hint. No path from
 *    the request is ever joined to the folder, so nothing outside these files can be read.
 *  - web_page_on_http() answers LWS_CALLBACK_HTTP; when it returns with *body_pending set, the
 *    headers are written and the caller must call web_page_on_writeable() on the next
 *    LWS_CALLBACK_HTTP_WRITEABLE of that connection (one lws_write per WRITEABLE). Both return
 *    what the lws callback should return (0 keep going, -1 close).
 *  - Used by the WebSocket service thread only; web_page_free() at shutdown.
 */
#ifndef CHATFLOW_PRODUCER_WEB_PAGE_H
#define CHATFLOW_PRODUCER_WEB_PAGE_H

#include <stdbool.h>

#include "settings.h"

struct lws;
typedef struct web_page web_page;

/* NULL only when out of memory. */
web_page *web_page_new(const producer_settings *s);
int web_page_on_http(web_page *w, struct lws *wsi, const char *uri, bool *body_pending);
int web_page_on_writeable(web_page *w, struct lws *wsi, bool *body_pending);
void web_page_free(web_page *w);

#endif
