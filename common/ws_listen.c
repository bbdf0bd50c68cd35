/* ws_listen — libwebsockets context, vhost, keepalive and log routing (contract in ws_listen.h). */
#include "ws_listen.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/* lws hands over its lines with their own newline: one log event each, without it. */
static void lws_line_to_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    log_write(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", "%.*s", (int)n, line);
}

static void route_lws_log(void) { lws_set_log_level(LLL_ERR | LLL_WARN, lws_line_to_log); }

static void set_keepalive(ws_listener *l, const ws_listen_config *cfg,
                          struct lws_context_creation_info *info)
{
    if (cfg->ping_interval_s <= 0) return;
    l->keepalive.secs_since_valid_ping = (uint16_t)cfg->ping_interval_s;
    l->keepalive.secs_since_valid_hangup = (uint16_t)(cfg->ping_interval_s + cfg->pong_timeout_s);
    info->retry_and_idle_policy = &l->keepalive;
}

bool ws_listen_open(ws_listener *l, const ws_listen_config *cfg, char *err, size_t err_len)
{
    static pthread_once_t log_once = PTHREAD_ONCE_INIT;
    pthread_once(&log_once, route_lws_log);
    memset(l, 0, sizeof *l);
    const char *bind = cfg->bind_addr && cfg->bind_addr[0] ? cfg->bind_addr : NULL;

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    if (cfg->ipv4_only) info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.user = cfg->user;
    if (cfg->handshake_timeout_s > 0) info.timeout_secs = (unsigned int)cfg->handshake_timeout_s;
    info.gid = -1;
    info.uid = -1;
    l->context = lws_create_context(&info);
    if (!l->context) {
        snprintf(err, err_len, "cannot create the libwebsockets context");
        return false;
    }
    info.port = cfg->port;
    info.iface = bind;
    info.protocols = cfg->protocols;
    info.vhost_name = cfg->vhost_name;
    set_keepalive(l, cfg, &info);
    l->vhost = lws_create_vhost(l->context, &info);
    if (!l->vhost) {
        snprintf(err, err_len, "cannot listen for WebSockets on %s:%d", bind ? bind : "*",
                 cfg->port);
        ws_listen_close(l);
        return false;
    }
    l->port = lws_get_vhost_listen_port(l->vhost);
    return true;
}

void ws_listen_close(ws_listener *l)
{
    if (l->context) lws_context_destroy(l->context);
    l->context = NULL;
    l->vhost = NULL;
}

void ws_listen_on_accept(struct lws *wsi, int handshake_timeout_s)
{
    if (handshake_timeout_s > 0)
        lws_set_timer_usecs(wsi, (lws_usec_t)handshake_timeout_s * LWS_US_PER_SEC);
}

void ws_listen_on_upgraded(struct lws *wsi)
{
    lws_set_timer_usecs(wsi, LWS_SET_TIMER_USEC_CANCEL); /* the handshake deadline is met */
}
