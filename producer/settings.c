/* settings — the producer's option table and its cross-field checks (contract in settings.h). */
#include "settings.h"

#include <stdio.h>
#include <string.h>

#define S producer_settings
static const config_option OPTIONS[] = {
    CONFIG_COMMON_OPTIONS(S),
    CONFIG_OPT_STR("CHATFLOW_WS_BIND", "ws-bind", S, ws_bind, "0.0.0.0", NULL,
                   "Address the WebSocket listener binds to."),
    CONFIG_OPT_INT("CHATFLOW_WS_PORT", "ws-port", S, ws_port, "8080", 0, 65535,
                   "WebSocket port (/chat/{roomId}); 0 picks a free port (logged)."),
    CONFIG_OPT_INT("CHATFLOW_ADMIN_PORT", "admin-port", S, admin_port, "9090", 0, 65535,
                   "Admin HTTP port (/metrics, /health/*); 0 picks a free port (logged)."),
    CONFIG_OPT_INT("CHATFLOW_ADMIN_THREADS", "admin-threads", S, admin_threads, "2", 1, 64,
                   "Admin HTTP server threads."),
    CONFIG_OPT_INT("CHATFLOW_MAX_FRAME_BYTES", "max-frame-bytes", S, max_frame_bytes, "4096", 256,
                   1048576, "Largest client frame accepted; larger ones get MESSAGE_TOO_LARGE."),
    CONFIG_OPT_INT("CHATFLOW_MAX_CONNECTIONS", "max-connections", S, max_connections, "10000", 1,
                   1000000, "Open WebSocket connections at most; more are refused with HTTP 503."),
    CONFIG_OPT_INT("CHATFLOW_MAX_INFLIGHT_PER_CONNECTION", "max-inflight-per-connection", S,
                   max_inflight_per_connection, "100", 1, 100000,
                   "Unanswered frames per connection before its reads pause."),
    CONFIG_OPT_INT("CHATFLOW_MAX_INFLIGHT_TOTAL", "max-inflight-total", S, max_inflight_total,
                   "20000", 1, 10000000, "Unanswered frames in the process before reads pause."),
    CONFIG_OPT_INT("CHATFLOW_PUBLISH_LINGER_MS", "publish-linger-ms", S, publish_linger_ms, "5", 0,
                   1000, "How long a shard's batch waits to fill up to 10 messages."),
    CONFIG_OPT_INT("CHATFLOW_PUBLISH_DEADLINE_MS", "publish-deadline-ms", S, publish_deadline_ms,
                   "5000", 100, 600000,
                   "A frame not accepted by SQS by then is answered QUEUE_ERROR."),
    CONFIG_OPT_INT("CHATFLOW_PUBLISH_REQUEST_TIMEOUT_MS", "publish-request-timeout-ms", S,
                   publish_request_timeout_ms, "1000", 50, 600000,
                   "Timeout of one SendMessageBatch request (must be below the deadline)."),
    CONFIG_OPT_INT("CHATFLOW_PUBLISHER_THREADS", "publisher-threads", S, publisher_threads, "0", 0,
                   256,
                   "Publisher threads, each with one SQS connection and one request in flight; "
                   "0 = one per queue shard (at most 64), so every shard publishes in parallel."),
    CONFIG_OPT_INT("CHATFLOW_RATE_LIMIT_PER_MINUTE", "rate-limit-per-minute", S,
                   rate_limit_per_minute, "60", 0, 1000000,
                   "Messages per user per minute (token bucket, burst = one minute); 0 = off."),
    CONFIG_OPT_INT("CHATFLOW_RATE_LIMIT_MAX_USERS", "rate-limit-max-users", S, rate_limit_max_users,
                   "131072", 16, 16777216,
                   "Users tracked by the rate limiter (idle ones are evicted)."),
    CONFIG_OPT_INT("CHATFLOW_BREAKER_FAILURE_THRESHOLD", "breaker-failure-threshold", S,
                   breaker_failure_threshold, "5", 1, 1000,
                   "Consecutive failed SQS requests that open the circuit breaker."),
    CONFIG_OPT_INT("CHATFLOW_BREAKER_OPEN_MS", "breaker-open-ms", S, breaker_open_ms, "2000", 10,
                   600000, "How long the breaker stays open before a half-open probe."),
    CONFIG_OPT_INT("CHATFLOW_PING_INTERVAL_S", "ping-interval-s", S, ping_interval_s, "30", 1, 3600,
                   "Idle seconds before the server pings a client."),
    CONFIG_OPT_INT("CHATFLOW_PONG_TIMEOUT_S", "pong-timeout-s", S, pong_timeout_s, "10", 1, 3600,
                   "Seconds after a ping without any answer before the connection is dropped."),
    CONFIG_OPT_INT("CHATFLOW_HANDSHAKE_TIMEOUT_S", "handshake-timeout-s", S, handshake_timeout_s,
                   "10", 1, 600, "Seconds a client has to complete the WebSocket handshake."),
    CONFIG_OPT_INT(
        "CHATFLOW_STOP_TIMEOUT_S", "stop-timeout-s", S, stop_timeout_s, "25", 1, 3600,
        "On SIGTERM: time to answer every in-flight frame and close (ECS stop timeout)."),
    CONFIG_OPT_BOOL("CHATFLOW_TRUST_FORWARDED_FOR", "trust-forwarded-for", S, trust_forwarded_for,
                    "true",
                    "Take clientIp from X-Forwarded-For (last hop) when present (behind an ALB)."),
    CONFIG_OPT_INT("CHATFLOW_TYPING_INTERVAL_MS", "typing-interval-ms", S, typing_interval_ms,
                   "2000", 0, 60000,
                   "A connection's TYPING frames are published at most once per "
                   "this interval; more frequent ones are dropped (0 = every one)."),
    CONFIG_OPT_STR(
        "CHATFLOW_WEB_ROOT", "web-root", S, web_root, "producer/web", NULL,
        "Folder of the browser chat page served at / on the WebSocket port; empty = no page."),
    CONFIG_OPT_STR(
        "CHATFLOW_WEB_EVENTS_URL", "web-events-url", S, web_events_url, "", NULL,
        "Consumer WebSocket base URL the page subscribes to (ws://host:port); empty = the "
        "page's host, port 8081."),
    CONFIG_OPT_STR("CHATFLOW_WEB_API_URL", "web-api-url", S, web_api_url, "", NULL,
                   "Consumer admin base URL the page reads history and presence from; empty = the "
                   "page's host, port 9091."),
    CONFIG_OPT_BOOL("CHATFLOW_DEV_TOKENS", "dev-tokens", S, dev_tokens, "false",
                    "DEVELOPMENT ONLY: GET /dev/token?name= on the WebSocket port hands anyone an "
                    "identity token for any user. Needs CHATFLOW_AUTH=on and an HS256 secret."),
    CONFIG_OPT_INT("CHATFLOW_DEV_TOKEN_TTL_S", "dev-token-ttl-s", S, dev_token_ttl_s, "3600", 2,
                   86400, "Lifetime of a token from /dev/token, in seconds."),
};
#undef S

const config_option *producer_settings_options(size_t *n)
{
    *n = sizeof OPTIONS / sizeof OPTIONS[0];
    return OPTIONS;
}

producer_settings_result producer_settings_load(producer_settings *s, int *argc, char **argv,
                                                char *err, size_t err_len)
{
    memset(s, 0, sizeof *s);
    config_result r =
        config_load(OPTIONS, sizeof OPTIONS / sizeof OPTIONS[0], s, "chatflow-producer",
                    "WebSocket ingress: validates chat frames, publishes them to SQS FIFO "
                    "queues in batches, acks each one.",
                    argc, argv, err, err_len);
    if (r == CONFIG_HELP) return PRODUCER_SETTINGS_HELP;
    if (r != CONFIG_OK) return PRODUCER_SETTINGS_ERROR;
    if (*argc > 1) {
        snprintf(err, err_len, "unexpected argument \"%s\"", argv[1]);
        return PRODUCER_SETTINGS_ERROR;
    }
    if (s->max_inflight_per_connection > s->max_inflight_total) {
        snprintf(err, err_len,
                 "CHATFLOW_MAX_INFLIGHT_PER_CONNECTION (%lld) must not exceed "
                 "CHATFLOW_MAX_INFLIGHT_TOTAL (%lld)",
                 s->max_inflight_per_connection, s->max_inflight_total);
        return PRODUCER_SETTINGS_ERROR;
    }
    if (s->publish_request_timeout_ms >= s->publish_deadline_ms) {
        snprintf(err, err_len,
                 "CHATFLOW_PUBLISH_REQUEST_TIMEOUT_MS (%lld) must be below "
                 "CHATFLOW_PUBLISH_DEADLINE_MS (%lld)",
                 s->publish_request_timeout_ms, s->publish_deadline_ms);
        return PRODUCER_SETTINGS_ERROR;
    }
    if (!config_common_finish(&s->common, err, err_len)) return PRODUCER_SETTINGS_ERROR;
    if (s->dev_tokens && (strcmp(s->common.auth, "on") != 0 || !s->common.auth_hs256_secret[0])) {
        snprintf(err, err_len,
                 "CHATFLOW_DEV_TOKENS=true needs CHATFLOW_AUTH=on and CHATFLOW_AUTH_HS256_SECRET "
                 "(the development tokens are HS256)");
        return PRODUCER_SETTINGS_ERROR;
    }
    return PRODUCER_SETTINGS_OK;
}
