/* settings — the consumer's option table; see settings.h. */
#include "settings.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define S consumer_settings

static const config_option consumer_options[] = {
    CONFIG_COMMON_OPTIONS(S),
    CONFIG_OPT_STR("DATABASE_URL", "database-url", S, database_url,
                   "postgresql://postgres@127.0.0.1:5432/chatflow", NULL,
                   "PostgreSQL connection URI (libpq syntax)."),
    CONFIG_OPT_STR("CHATFLOW_MIGRATIONS_DIR", "migrations-dir", S, migrations_dir, "db/migrations",
                   NULL, "Folder of the versioned NNNN_name.sql migrations."),
    CONFIG_OPT_BOOL("CHATFLOW_MIGRATE_ON_START", "migrate-on-start", S, migrate_on_start, "false",
                    "Apply pending migrations at start-up (else run chatflow-consumer --migrate)."),
    CONFIG_OPT_STR("CHATFLOW_WS_BIND", "ws-bind", S, ws_bind, "0.0.0.0", NULL,
                   "Address the subscriber WebSocket listener binds to."),
    CONFIG_OPT_INT("CHATFLOW_WS_PORT", "ws-port", S, ws_port, "8081", 0, 65535,
                   "Subscriber WebSocket port (0 picks a free one)."),
    CONFIG_OPT_INT("CHATFLOW_ADMIN_PORT", "admin-port", S, admin_port, "9091", 0, 65535,
                   "Admin HTTP port: /metrics, /health/*, /api/metrics/* (0 picks a free one)."),
    CONFIG_OPT_INT("CHATFLOW_ADMIN_THREADS", "admin-threads", S, admin_threads, "4", 2, 64,
                   "Admin HTTP server threads; at most all but one are in database work (the room "
                   "and metrics APIs) at once, so health probes and scrapes always find one free."),
    CONFIG_OPT_INT("CHATFLOW_POLLER_THREADS", "poller-threads", S, poller_threads, "20", 1, 1000,
                   "SQS poller threads; the polled shards are spread over them (never more threads "
                   "than shards)."),
    CONFIG_OPT_INT("CHATFLOW_RECEIVE_WAIT_S", "receive-wait-s", S, receive_wait_s, "20", 0, 20,
                   "ReceiveMessage long-poll wait."),
    CONFIG_OPT_INT("CHATFLOW_VISIBILITY_TIMEOUT_S", "visibility-timeout-s", S, visibility_timeout_s,
                   "30", 2, 43200,
                   "Visibility timeout asked for on receive; extended while the database is slow."),
    CONFIG_OPT_INT("CHATFLOW_DB_BATCH_SIZE", "db-batch-size", S, db_batch_size, "1000", 1, 10000,
                   "Rows that trigger a flush at once."),
    CONFIG_OPT_INT(
        "CHATFLOW_DB_MAX_WAIT_MS", "db-max-wait-ms", S, db_max_wait_ms, "1000", 0, 60000,
        "Longest a row waits for a flush (flushes happen sooner when every poller holding "
        "messages waits on the writer)."),
    CONFIG_OPT_INT(
        "CHATFLOW_DB_SPILL_AFTER_MS", "db-spill-after-ms", S, db_spill_after_ms, "2000", 0, 3600000,
        "When the database has not taken writes for this long, received messages (already "
        "broadcast) go to the spill queue instead of waiting, so live chat goes on."),
    CONFIG_OPT_STR("CHATFLOW_SPILL_QUEUE_NAME", "spill-queue-name", S, spill_queue_name,
                   "chatflow-db-spill", NULL,
                   "Standard SQS queue that holds messages spilled during a database outage until "
                   "they are stored."),
    CONFIG_OPT_INT("CHATFLOW_DB_RETRY_MAX_BACKOFF_MS", "db-retry-max-backoff-ms", S,
                   db_retry_max_backoff_ms, "5000", 10, 600000,
                   "Cap of the exponential backoff between failed flushes (starts at 100 ms)."),
    CONFIG_OPT_INT("CHATFLOW_DB_STATEMENT_TIMEOUT_MS", "db-statement-timeout-ms", S,
                   db_statement_timeout_ms, "10000", 0, 3600000,
                   "PostgreSQL statement_timeout of every consumer connection (0: none)."),
    CONFIG_OPT_STR("CHATFLOW_DB_WRITE_METHOD", "db-write-method", S, db_write_method, "copy",
                   "copy|unnest",
                   "Flush method: COPY into a staging table, or one prepared INSERT ... SELECT "
                   "FROM unnest(arrays); both ON CONFLICT (message_id) DO NOTHING."),
    CONFIG_OPT_INT("CHATFLOW_SEND_QUEUE_MAX", "send-queue-max", S, send_queue_max, "1000", 1,
                   1000000, "Frames queued per subscriber before it is dropped as slow."),
    CONFIG_OPT_INT("CHATFLOW_REPLAY_CACHE_PER_ROOM", "replay-cache-per-room", S,
                   replay_cache_per_room, "1000", 0, 1000000,
                   "Newest events kept in memory per room for since= replay."),
    CONFIG_OPT_INT("CHATFLOW_MAX_SUBSCRIBERS", "max-subscribers", S, max_subscribers, "10000", 1,
                   1000000, "Subscriber connection cap."),
    CONFIG_OPT_INT("CHATFLOW_PING_INTERVAL_S", "ping-interval-s", S, ping_interval_s, "25", 1, 3600,
                   "WebSocket ping interval for subscribers."),
    CONFIG_OPT_INT("CHATFLOW_PONG_TIMEOUT_S", "pong-timeout-s", S, pong_timeout_s, "8", 1, 3600,
                   "Subscriber closed when no pong arrives within this after a ping."),
    CONFIG_OPT_INT("CHATFLOW_HANDSHAKE_TIMEOUT_S", "handshake-timeout-s", S, handshake_timeout_s,
                   "10", 1, 600,
                   "Seconds from the accept for a subscriber to complete the WebSocket "
                   "handshake; a socket that has not upgraded by then is closed."),
    CONFIG_OPT_INT("CHATFLOW_QUEUE_DEPTH_INTERVAL_S", "queue-depth-interval-s", S,
                   queue_depth_interval_s, "15", 0, 3600,
                   "Period of the chatflow_sqs_queue_depth{shard} refresh (0: off)."),
    CONFIG_OPT_INT("CHATFLOW_STOP_TIMEOUT_S", "stop-timeout-s", S, stop_timeout_s, "25", 1, 3600,
                   "On SIGTERM, everything is flushed and the process exits within this."),
    CONFIG_OPT_INT(
        "CHATFLOW_ROOM_MEMBER_CAP", "room-member-cap", S, room_member_cap, "100", 1, 100000,
        "Identified users (members) online per room; a new one beyond it is refused (403)."),
    CONFIG_OPT_INT("CHATFLOW_SHARD_FIRST", "shard-first", S, shard_first, "1", 1, ROOM_SHARDS_MAX,
                   "First queue shard this consumer polls."),
    CONFIG_OPT_INT("CHATFLOW_SHARD_LAST", "shard-last", S, shard_last, "0", 0, ROOM_SHARDS_MAX,
                   "Last queue shard this consumer polls; 0 = CHATFLOW_QUEUE_SHARDS. Ranges are "
                   "for consumers without CHATFLOW_REDIS_URL, which split the shards between them "
                   "(docs/consumer.md); with the bus each consumer polls its range beside the "
                   "others, by default every shard."),
    CONFIG_OPT_INT("CHATFLOW_SHARD_LEASE_RETRY_MS", "shard-lease-retry-ms", S, shard_lease_retry_ms,
                   "2000", 100, 60000,
                   "Without the bus, a consumer polls a shard only while it holds the shard's "
                   "lease (a PostgreSQL advisory lock), so two consumers never split a room's "
                   "audience; every this "
                   "often it tries to take the leases of its shards it does not hold. A standby "
                   "takes a shard over within about this after its holder is gone."),
    CONFIG_OPT_INT("CHATFLOW_ROOMS_MAX", "rooms-max", S, rooms_max, "2000", 1, 1000000,
                   "Rooms whose state (subscribers, presence, caches) one node keeps in memory; "
                   "beyond it the least recently active room without subscribers is forgotten "
                   "and a subscriber of a new room is refused (503)."),
    CONFIG_OPT_INT("CHATFLOW_HISTORY_CACHE_PER_ROOM", "history-cache-per-room", S,
                   history_cache_per_room, "100", 0, 100000,
                   "Newest messages per room kept in memory for the history API."),
    CONFIG_OPT_STR(
        "CHATFLOW_API_ALLOW_ORIGIN", "api-allow-origin", S, api_allow_origin, "*", NULL,
        "Pages allowed to read /api/rooms/* answers: * (any; refused with CHATFLOW_AUTH on), "
        "or a comma-separated list of origins (at most 8); empty = none."),
    CONFIG_OPT_STR("CHATFLOW_REDIS_URL", "redis-url", S, redis_url, "", NULL,
                   "Cluster bus (redis://host:port[/db]): consumers share every room's events and "
                   "all poll every shard. Empty: one consumer per shard (leases), no bus."),
    CONFIG_OPT_STR("CHATFLOW_REDIS_PREFIX", "redis-prefix", S, redis_prefix, "chatflow", NULL,
                   "Prefix of the bus's Redis keys and channels (one per deployment)."),
    CONFIG_OPT_INT("CHATFLOW_BUS_OUTBOX", "bus-outbox", S, bus_outbox, "10000", 16, 10000000,
                   "Events waiting for Redis at most; beyond, they are dropped and their rooms "
                   "announced lost (subscribers resume from the store)."),
    CONFIG_OPT_INT("CHATFLOW_BUS_HISTORY", "bus-history", S, bus_history, "1000", 10, 1000000,
                   "Events kept per room in Redis to fill a node's gaps."),
    CONFIG_OPT_INT("CHATFLOW_BUS_TTL_S", "bus-ttl-s", S, bus_ttl_s, "86400", 60, 31536000,
                   "A room's bus keys expire this long after its last event."),
    CONFIG_OPT_INT("CHATFLOW_BUS_TIMEOUT_MS", "bus-timeout-ms", S, bus_timeout_ms, "1000", 50,
                   60000, "Connect and command timeout of every Redis call."),
    CONFIG_OPT_INT("CHATFLOW_PRESENCE_HEARTBEAT_S", "presence-heartbeat-s", S, presence_heartbeat_s,
                   "5", 1, 3600,
                   "With the bus: how often a node renews its presence heartbeat in Redis and "
                   "takes back the members of nodes whose heartbeat expired."),
    CONFIG_OPT_INT("CHATFLOW_PRESENCE_NODE_TTL_S", "presence-node-ttl-s", S, presence_node_ttl_s,
                   "15", 2, 86400,
                   "With the bus: a node that has not renewed its heartbeat this long is taken "
                   "for dead; its members are announced OFFLINE (\"timeout\"). At least twice "
                   "CHATFLOW_PRESENCE_HEARTBEAT_S."),
    CONFIG_OPT_BOOL("CHATFLOW_AUTH_ANONYMOUS_READ", "auth-anonymous-read", S, auth_anonymous_read,
                    "false",
                    "With CHATFLOW_AUTH on: a subscription or room API read that carries no "
                    "token is allowed, as an anonymous reader (MESSAGE events and history only)."),
};

#undef S

static const char summary[] =
    "ChatFlow consumer: polls the queue shards, broadcasts to subscribers, stores messages in "
    "PostgreSQL.\n  --migrate   apply the database migrations and exit";

config_result consumer_settings_load(consumer_settings *s, int *argc, char **argv, char *err,
                                     size_t err_len)
{
    memset(s, 0, sizeof(*s));
    config_result r =
        config_load(consumer_options, sizeof(consumer_options) / sizeof(consumer_options[0]), s,
                    "chatflow-consumer", summary, argc, argv, err, err_len);
    if (r != CONFIG_OK) return r;
    if (!config_common_finish(&s->common, err, err_len)) return CONFIG_ERROR;
    if (s->database_url[0] == '\0') {
        snprintf(err, err_len, "DATABASE_URL (--database-url): must not be empty");
        return CONFIG_ERROR;
    }
    if (s->pong_timeout_s >= s->ping_interval_s) {
        snprintf(err, err_len,
                 "CHATFLOW_PONG_TIMEOUT_S (%lld) must be below CHATFLOW_PING_INTERVAL_S (%lld)",
                 s->pong_timeout_s, s->ping_interval_s);
        return CONFIG_ERROR;
    }
    if (s->presence_node_ttl_s < 2 * s->presence_heartbeat_s) {
        snprintf(err, err_len,
                 "CHATFLOW_PRESENCE_NODE_TTL_S (%lld) must be at least twice "
                 "CHATFLOW_PRESENCE_HEARTBEAT_S (%lld): one late heartbeat must not make a "
                 "living node look dead",
                 s->presence_node_ttl_s, s->presence_heartbeat_s);
        return CONFIG_ERROR;
    }
    if (strcmp(s->common.auth, "on") == 0 && strcmp(s->api_allow_origin, "*") == 0) {
        snprintf(err, err_len,
                 "CHATFLOW_API_ALLOW_ORIGIN must list the pages' origins (not *) while "
                 "CHATFLOW_AUTH is on: any site could otherwise read answers with a user's token");
        return CONFIG_ERROR;
    }
    if (s->shard_last == 0) s->shard_last = s->common.queue_shards;
    if (s->shard_first > s->shard_last || s->shard_last > s->common.queue_shards) {
        snprintf(err, err_len,
                 "CHATFLOW_SHARD_FIRST..CHATFLOW_SHARD_LAST (%lld..%lld) must lie within the "
                 "queue shards 1..%lld (CHATFLOW_QUEUE_SHARDS)",
                 s->shard_first, s->shard_last, s->common.queue_shards);
        return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

void consumer_settings_print_markdown(FILE *out)
{
    config_print_markdown(out, consumer_options,
                          sizeof(consumer_options) / sizeof(consumer_options[0]));
}
