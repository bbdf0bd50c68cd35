/* tl_producer — see tl_producer.h. */
#include "tl_producer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"
#include "tl_http.h"
#include "tl_proc.h"

static bool parse_ports(const char *line, void *ctx)
{
    tl_producer *p = ctx;
    const char *w = strstr(line, "listening ws=");
    return w && sscanf(w, "listening ws=%d admin=%d", &p->ws_port, &p->admin_port) == 2;
}

bool tl_producer_start(tl_producer *p, const char *log_path, const char *const *env)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/chatflow-producer", tl_env("CHATFLOW_BIN", "build"));
    static const char *const args[] = {"--ws-port", "0",         "--admin-port", "0",
                                       "--ws-bind", "127.0.0.1", "--admin-bind", "127.0.0.1",
                                       NULL};
    p->pid = tl_proc_spawn(bin, args, env, log_path);
    if (p->pid <= 0) {
        p->pid = 0;
        return false;
    }
    int timeout_ms = tl_proc_wrapped() ? 60000 : 10000; /* memcheck is several times slower */
    return tl_proc_wait_line(&p->pid, log_path, timeout_ms, parse_ports, p);
}

int tl_producer_stop(tl_producer *p, int sig, int timeout_ms, bool *in_time)
{
    return tl_proc_stop(&p->pid, sig, timeout_ms, in_time);
}

double tl_producer_metric(const tl_producer *p, const char *name, const char *filter)
{
    long st;
    char *body = tl_http_get(p->admin_port, "/metrics", &st);
    double v = body && st == 200 ? tl_metric_sum(body, name, filter) : -1;
    free(body);
    return v;
}

wsc_conn *tl_producer_open_room(wsc_ctx *ctx, const tl_producer *p, const char *room, int *status)
{
    char path[256], err[256];
    int st = 0;
    snprintf(path, sizeof path, "/chat/%s", room);
    wsc_conn *c = wsc_connect(ctx, "127.0.0.1", p->ws_port, path, 5000, &st, err, sizeof err);
    if (!c) tl_note("connect %s: %s (HTTP %d)", path, err, st);
    if (status) *status = st;
    return c;
}

char *tl_frame(int user, const char *text, const char *client_message_id)
{
    json_t *o = json_object();
    char uid[16], name[32], ts[ISO8601_BUF];
    snprintf(uid, sizeof uid, "%d", user);
    snprintf(name, sizeof name, "user%d", user);
    time_format_iso8601(time_wall_ms(), ts);
    json_object_set_new(o, "userId", json_string(uid));
    json_object_set_new(o, "username", json_string(name));
    json_object_set_new(o, "message", json_string(text));
    json_object_set_new(o, "timestamp", json_string(ts));
    json_object_set_new(o, "messageType", json_string("TEXT"));
    if (client_message_id)
        json_object_set_new(o, "clientMessageId", json_string(client_message_id));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

const char *tl_json_field(const char *json, const char *key, char *out, size_t len)
{
    out[0] = '\0';
    json_t *o = json ? json_loads(json, 0, NULL) : NULL;
    json_t *v = o ? json_object_get(o, key) : NULL;
    if (json_is_string(v)) snprintf(out, len, "%s", json_string_value(v));
    json_decref(o);
    return out;
}

bool tl_ws_send_str(wsc_conn *c, const char *text) { return wsc_send_text(c, text, strlen(text)); }
