/* web_page — the chat page's files and /config.json (contract in web_page.h). */
#include "web_page.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"

struct web_page {
    char root[256];
    unsigned char *config; /* LWS_PRE headroom, then the JSON */
    size_t config_len;
};

static const struct {
    const char *path, *file, *type;
} FILES[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/index.html", "index.html", "text/html; charset=utf-8"},
    {"/app.js", "app.js", "text/javascript; charset=utf-8"},
    {"/style.css", "style.css", "text/css; charset=utf-8"},
};

static char *config_json(const producer_settings *s)
{
    json_t *o = json_pack("{s:s, s:s, s:{s:I, s:i, s:I, s:I, s:I}}", "eventsUrl", s->web_events_url,
                          "apiUrl", s->web_api_url, "limits", "maxFrameBytes",
                          (json_int_t)s->max_frame_bytes, "maxMessageChars", CHAT_TEXT_MAX_CP,
                          "messagesPerMinute", (json_int_t)s->rate_limit_per_minute,
                          "typingIntervalMs", (json_int_t)s->typing_interval_ms,
                          "publishDeadlineMs", (json_int_t)s->publish_deadline_ms);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

web_page *web_page_new(const producer_settings *s)
{
    web_page *w = calloc(1, sizeof *w);
    char *json = config_json(s);
    if (w && json) {
        w->config_len = strlen(json);
        w->config = malloc(LWS_PRE + w->config_len);
    }
    if (!w || !json || !w->config) {
        free(json);
        web_page_free(w);
        return NULL;
    }
    memcpy(w->config + LWS_PRE, json, w->config_len);
    free(json);
    snprintf(w->root, sizeof w->root, "%s", s->web_root);
    return w;
}

void web_page_free(web_page *w)
{
    if (!w) return;
    free(w->config);
    free(w);
}

static int not_found(struct lws *wsi, const char *why)
{
    if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, why)) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int serve_config_headers(web_page *w, struct lws *wsi, bool *body_pending)
{
    unsigned char buf[LWS_PRE + 512];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "application/json", w->config_len, &p,
                                    end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-cache", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    *body_pending = true;
    lws_callback_on_writable(wsi);
    return 0;
}

int web_page_on_http(web_page *w, struct lws *wsi, const char *uri, bool *body_pending)
{
    *body_pending = false;
    if (!w->root[0])
        return not_found(wsi, "WebSocket endpoint: /chat/{roomId} (the chat page is off)");
    if (strcmp(uri, "/config.json") == 0) return serve_config_headers(w, wsi, body_pending);
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        if (strcmp(uri, FILES[i].path) != 0) continue;
        char path[sizeof w->root + 32];
        snprintf(path, sizeof path, "%s/%s", w->root, FILES[i].file);
        int n = lws_serve_http_file(wsi, path, FILES[i].type, NULL, 0);
        if (n < 0) {
            /* lws has answered (404 when the file is missing) and closes */
            log_warn("web", "cannot serve %s (CHATFLOW_WEB_ROOT=%s)", path, w->root);
            return -1;
        }
        return n > 0 && lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    return not_found(wsi, "not found: the chat page is at /, WebSockets at /chat/{roomId}");
}

int web_page_on_writeable(web_page *w, struct lws *wsi, bool *body_pending)
{
    if (!*body_pending) return 0;
    *body_pending = false;
    if (lws_write(wsi, w->config + LWS_PRE, w->config_len, LWS_WRITE_HTTP_FINAL) <
        (int)w->config_len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}
