/*
 * settings — the producer's configuration: one table, environment CHATFLOW_* plus --flags.
 *
 * Contract:
 *  - producer_settings_load() applies defaults, the environment, then argv (config.h rules), checks
 *    the cross-field rules below and finishes the common settings (log level, server id).
 *    PRODUCER_SETTINGS_HELP means --help was printed; PRODUCER_SETTINGS_ERROR leaves err naming the
 *    setting, the value and the accepted range.
 *  - Cross-field rules: max_inflight_per_connection <= max_inflight_total;
 *    publish_request_timeout_ms < publish_deadline_ms (a send is only started while a whole
 *    request still fits before the deadline, so every frame is answered by its deadline);
 *    pong_timeout_s >= 1; dev_tokens needs CHATFLOW_AUTH=on with an HS256 secret (the tokens it
 *    mints are HS256, and minting them with auth off would be pointless).
 *  - producer_settings_options() exposes the table (for --help-markdown and docs checks).
 */
#ifndef CHATFLOW_PRODUCER_SETTINGS_H
#define CHATFLOW_PRODUCER_SETTINGS_H

#include <stddef.h>

#include "config.h"

typedef struct {
    struct chatflow_common_settings common;
    char ws_bind[64];
    long long ws_port;
    long long admin_port;
    long long admin_threads;
    long long max_frame_bytes;
    long long max_connections;
    long long max_inflight_per_connection;
    long long max_inflight_total;
    long long publish_linger_ms;
    long long publish_deadline_ms;
    long long publish_request_timeout_ms;
    long long publisher_threads;
    long long rate_limit_per_minute;
    long long rate_limit_max_users;
    long long breaker_failure_threshold;
    long long breaker_open_ms;
    long long ping_interval_s;
    long long pong_timeout_s;
    long long handshake_timeout_s;
    long long stop_timeout_s;
    bool trust_forwarded_for;
    long long typing_interval_ms;
    char web_root[256];
    char web_events_url[256];
    char web_api_url[256];
    bool dev_tokens; /* GET /dev/token mints identity tokens (development only, dev_tokens.h) */
    long long dev_token_ttl_s;
} producer_settings;

typedef enum {
    PRODUCER_SETTINGS_OK,
    PRODUCER_SETTINGS_HELP,
    PRODUCER_SETTINGS_ERROR
} producer_settings_result;

producer_settings_result producer_settings_load(producer_settings *s, int *argc, char **argv,
                                                char *err, size_t err_len);
const config_option *producer_settings_options(size_t *n);

#endif
