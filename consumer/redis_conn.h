/*
 * redis_conn — how the consumer's Redis users (the bus, cluster presence) reach Redis: the URL,
 * connections with bounded waits, and Lua scripts run by their SHA.
 *
 * Contract:
 *  - redis_endpoint_parse() accepts redis://host[:port][/db] (port 6379 and db 0 by default) and
 *    refuses anything else with a message naming CHATFLOW_REDIS_URL: TLS (rediss://) and
 *    credentials in the URL are not supported by Debian's hiredis 0.14.
 *  - redis_endpoint_connect() returns a connection whose connect and every command wait at most
 *    the endpoint's timeout_ms, with TCP keepalives on and the db selected; NULL with err set.
 *  - redis_script_run() runs a script by EVALSHA; when Redis does not know it (NOSCRIPT: Redis
 *    restarted, or the SHA is still empty) it loads it (SCRIPT LOAD, which fills sha) and runs it
 *    once more. It returns Redis's reply (an error reply included: the caller reads it) or NULL
 *    when the connection failed or timed out (the caller drops the connection).
 */
#ifndef CHATFLOW_CONSUMER_REDIS_CONN_H
#define CHATFLOW_CONSUMER_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char host[256];
    int port;
    int db;
    long timeout_ms;
} redis_endpoint;

bool redis_endpoint_parse(redis_endpoint *ep, const char *url, long timeout_ms, char *err,
                          size_t err_len);
redisContext *redis_endpoint_connect(const redis_endpoint *ep, char *err, size_t err_len);

/* sha: 41 bytes, "" until the script is loaded; kept by the caller per connection or longer
 * (a SHA stays valid across connections; Redis forgets scripts only on a restart). */
redisReply *redis_script_run(redisContext *c, const char *script, char sha[41], int nkeys, int argc,
                             const char **argv);

#endif
