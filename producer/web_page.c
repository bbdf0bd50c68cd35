/* web_page — the chat page's files and /config.json (contract in web_page.h). */
#include "web_page.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_tokens.h"
#include "log.h"
#include "message.h"
#include "timeutil.h"

struct web_page {
    char root[256];
    char *config;       /* /config.json */
    dev_tokens *tokens; /* NULL: /dev/token is off */
};

static const struct {
    const char *path, *file, *type;
} FILES[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/index.html", "index.html", "text/html; charset=utf-8"},
    {"/app.js", "app.js", "text/javascript; charset=utf-8"},
    {"/style.css", "style.css", "text/css; charset=utf-8"},
};

static json_t *auth_json(const producer_settings *s)
{
    json_t *o = json_pack("{s:b, s:b, s:s}", "required", strcmp(s->common.auth, "on") == 0,
                          "devTokens", s->dev_tokens, "userIdClaim",
                          s->common.auth_user_id_claim[0] ? s->common.auth_user_id_claim : "sub");
    if (o && s->dev_tokens && json_object_set_new(o, "tokenUrl", json_string("/dev/token"))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static char *config_json(const producer_settings *s)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:{s:I, s:i, s:I, s:I, s:I}, s:o*}", "eventsUrl", s->web_events_url, "apiUrl",
        s->web_api_url, "limits", "maxFrameBytes", (json_int_t)s->max_frame_bytes,
        "maxMessageChars", CHAT_TEXT_MAX_CP, "messagesPerMinute",
        (json_int_t)s->rate_limit_per_minute, "typingIntervalMs", (json_int_t)s->typing_interval_ms,
        "publishDeadlineMs", (json_int_t)s->publish_deadline_ms, "auth", auth_json(s));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

web_page *web_page_new(const producer_settings *s)
{
    web_page *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    bool tokens_failed = false;
    w->config = config_json(s);
    w->tokens = dev_tokens_new(s, &tokens_failed);
    if (!w->config || tokens_failed) {
        web_page_free(w);
        return NULL;
    }
    snprintf(w->root, sizeof w->root, "%s", s->web_root);
    return w;
}

void web_page_free(web_page *w)
{
    if (!w) return;
    free(w->config);
    dev_tokens_free(w->tokens);
    free(w);
}

void web_reply_clear(web_reply *reply)
{
    free(reply->buf);
    reply->buf = NULL;
    reply->len = 0;
}

static int not_found(struct lws *wsi, const char *why)
{
    if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, why)) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Headers now, body (copied into reply) at the next WRITEABLE. no-store: a token must not be
 * kept by any cache, and config.json is cheap to fetch again. */
static int answer(struct lws *wsi, unsigned status, const char *type, const char *body,
                  web_reply *reply)
{
    size_t len = strlen(body);
    web_reply_clear(reply);
    reply->buf = malloc(LWS_PRE + len);
    if (!reply->buf) return -1;
    memcpy(reply->buf + LWS_PRE, body, len);
    reply->len = len;

    unsigned char buf[LWS_PRE + 512];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_common_headers(wsi, status, type, len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int serve_dev_token(web_page *w, struct lws *wsi, web_reply *reply)
{
    if (!w->tokens)
        return not_found(wsi, "not found: development tokens are off (CHATFLOW_DEV_TOKENS)");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) { /* a POST, or any other method */
        if (lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "use GET /dev/token?name="))
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    char name[64] = "", user_id[32] = "";
    const char *n = lws_get_urlarg_by_name(wsi, "name=", name, sizeof name);
    const char *u = lws_get_urlarg_by_name(wsi, "userId=", user_id, sizeof user_id);
    char *body = NULL, reason[160] = "";
    int status = dev_tokens_issue(w->tokens, n ? n : "", u, time_wall_ms() / 1000, &body, reason,
                                  sizeof reason);
    if (status != 200) {
        if (status >= 500) log_error("web", "/dev/token: %s", reason);
        char line[sizeof reason + 2];
        snprintf(line, sizeof line, "%s\n", reason);
        return answer(wsi, (unsigned)status, "text/plain; charset=utf-8", line, reply);
    }
    /* Who logged in is worth a line while this endpoint is on; the token never is. */
    log_info("web", "/dev/token: issued a development token for \"%s\"", n);
    int rc = answer(wsi, HTTP_STATUS_OK, "application/json", body, reply);
    explicit_bzero(body, strlen(body));
    free(body);
    return rc;
}

int web_page_on_http(web_page *w, struct lws *wsi, const char *uri, web_reply *reply)
{
    if (strcmp(uri, "/dev/token") == 0) return serve_dev_token(w, wsi, reply);
    if (!w->root[0])
        return not_found(wsi, "WebSocket endpoint: /chat/{roomId} (the chat page is off)");
    if (strcmp(uri, "/config.json") == 0)
        return answer(wsi, HTTP_STATUS_OK, "application/json", w->config, reply);
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

int web_page_on_writeable(web_page *w, struct lws *wsi, web_reply *reply)
{
    (void)w;
    if (!reply->buf) return 0;
    int written = lws_write(wsi, reply->buf + LWS_PRE, reply->len, LWS_WRITE_HTTP_FINAL);
    bool complete = written >= (int)reply->len;
    explicit_bzero(reply->buf + LWS_PRE, reply->len); /* it may have been a token */
    web_reply_clear(reply);
    if (!complete) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}
