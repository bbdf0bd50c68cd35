/* redis_conn — Redis URL, connections and scripts for the consumer (contract in redis_conn.h). */
#include "redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARGS_MAX 64

bool redis_endpoint_parse(redis_endpoint *ep, const char *url, long timeout_ms, char *err,
                          size_t err_len)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, err_len,
                 "CHATFLOW_REDIS_URL must be redis://host:port[/db] (TLS: rediss:// is "
                 "not supported by Debian's hiredis 0.14)");
        return false;
    }
    p += 8;
    if (strchr(p, '@')) {
        snprintf(err, err_len, "CHATFLOW_REDIS_URL: credentials in the URL are not supported");
        return false;
    }
    size_t host_len = strcspn(p, ":/");
    if (host_len == 0 || host_len >= sizeof ep->host) {
        snprintf(err, err_len, "CHATFLOW_REDIS_URL: no host");
        return false;
    }
    memcpy(ep->host, p, host_len);
    ep->host[host_len] = '\0';
    p += host_len;
    ep->port = 6379;
    ep->db = 0;
    ep->timeout_ms = timeout_ms;
    char *end;
    if (*p == ':') {
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) {
            snprintf(err, err_len, "CHATFLOW_REDIS_URL: bad port");
            return false;
        }
        ep->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000) {
            snprintf(err, err_len, "CHATFLOW_REDIS_URL: bad database number");
            return false;
        }
        ep->db = (int)db;
    } else if (*p && strcmp(p, "/") != 0) {
        snprintf(err, err_len, "CHATFLOW_REDIS_URL: unexpected \"%s\"", p);
        return false;
    }
    return true;
}

static struct timeval ms_tv(long ms) { return (struct timeval){ms / 1000, (ms % 1000) * 1000}; }

redisContext *redis_endpoint_connect(const redis_endpoint *ep, char *err, size_t err_len)
{
    redisContext *c = redisConnectWithTimeout(ep->host, ep->port, ms_tv(ep->timeout_ms));
    if (!c || c->err) {
        snprintf(err, err_len, "connect %.100s:%d: %.120s", ep->host, ep->port,
                 c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, ms_tv(ep->timeout_ms)) != REDIS_OK ||
        redisEnableKeepAlive(c) != REDIS_OK) {
        snprintf(err, err_len, "%.100s:%d: cannot set timeouts: %.100s", ep->host, ep->port,
                 c->errstr);
        redisFree(c);
        return NULL;
    }
    if (ep->db) {
        redisReply *r = redisCommand(c, "SELECT %d", ep->db);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (!ok) snprintf(err, err_len, "SELECT %d: %.120s", ep->db, r ? r->str : c->errstr);
        freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static bool load_script(redisContext *c, const char *script, char sha[41])
{
    redisReply *l = redisCommand(c, "SCRIPT LOAD %s", script);
    bool loaded = l && l->type == REDIS_REPLY_STRING && l->len == 40;
    if (loaded) memcpy(sha, l->str, 41);
    freeReplyObject(l);
    return loaded;
}

redisReply *redis_script_run(redisContext *c, const char *script, char sha[41], int nkeys, int argc,
                             const char **argv)
{
    if (argc < 0 || argc > ARGS_MAX - 3) return NULL;
    char nkeys_s[16];
    snprintf(nkeys_s, sizeof nkeys_s, "%d", nkeys);
    const char *args[ARGS_MAX];
    args[0] = "EVALSHA";
    args[2] = nkeys_s;
    for (int i = 0; i < argc; i++) args[3 + i] = argv[i];
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!sha[0] && !load_script(c, script, sha)) return NULL;
        args[1] = sha;
        redisReply *r = redisCommandArgv(c, argc + 3, args, NULL);
        if (!r) return NULL;
        bool noscript = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
        if (!noscript) return r;
        freeReplyObject(r);
        sha[0] = '\0';
    }
    return NULL;
}
