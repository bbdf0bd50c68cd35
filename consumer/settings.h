/*
 * settings — every consumer setting: CHATFLOW_* environment variables with --flag overrides
 * (common/config.h), documented in docs/consumer.md.
 *
 * Contract:
 *  - consumer_settings_load() fills the struct from defaults, environment and argv, checks the
 *    cross-field rules and applies the log settings. It returns CONFIG_ERROR with err naming the
 *    bad setting, CONFIG_HELP after printing help.
 *  - "--migrate" (apply the migrations and exit) is not a setting: main() takes it out of argv.
 *  - The struct is filled once at start-up and read-only afterwards (shared by every thread).
 */
#ifndef CHATFLOW_CONSUMER_SETTINGS_H
#define CHATFLOW_CONSUMER_SETTINGS_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

typedef struct {
    struct chatflow_common_settings common;
    char database_url[512];
    char migrations_dir[256];
    char ws_bind[64];
    long long ws_port;
    long long admin_port;
    long long admin_threads;
    long long poller_threads;
    long long receive_wait_s;
    long long visibility_timeout_s;
    long long db_batch_size;
    long long db_max_wait_ms;
    long long db_spill_after_ms;
    char spill_queue_name[96];
    long long db_statement_timeout_ms;
    long long db_retry_max_backoff_ms;
    char db_write_method[8];
    bool migrate_on_start;
    long long send_queue_max;
    long long replay_cache_per_room;
    long long max_subscribers;
    long long ping_interval_s;
    long long pong_timeout_s;
    long long handshake_timeout_s;
    long long queue_depth_interval_s;
    long long stop_timeout_s;
    long long room_member_cap;
    long long rooms_max;
    long long shard_first, shard_last; /* after loading: 1 <= first <= last <= queue_shards */
    long long history_cache_per_room;
    long long shard_lease_retry_ms;
    char redis_url[256]; /* cluster bus (bus.h); empty: no bus, shard leases instead */
    char redis_prefix[64];
    long long bus_outbox;
    long long bus_history;
    long long bus_ttl_s;
    long long bus_timeout_ms;
    long long presence_heartbeat_s; /* cluster presence (presence_cluster.h) */
    long long presence_node_ttl_s;
    char api_allow_origin[256];
    bool auth_anonymous_read; /* with auth on: token-less readers allowed, anonymously */
} consumer_settings;

config_result consumer_settings_load(consumer_settings *s, int *argc, char **argv, char *err,
                                     size_t err_len);
void consumer_settings_print_markdown(FILE *out);

#endif
