/*
 * chatflow-consumer — polls the queue shards the rooms live on (room.h), broadcasts each message to
 * the room's subscribers and stores it in PostgreSQL (group-committed, idempotent), deleting it
 * from SQS only after COMMIT. `chatflow-consumer --migrate` applies the database migrations and
 * exits.
 *
 * Threads: N pollers (poller.c), one batch writer (batch_writer.c), the lws service thread and
 * its replay worker (broadcast.c), the read-receipt writer (read_receipts.c), libmicrohttpd's pool
 * (admin, the metrics API and the room API), the queue depth refresher, the spill drainer
 * (spill.c), the shard lease thread (shard_lease.c), the load balancer watcher (lb_watch.c: when
 * the ALB drains this task, its subscribers are moved before the ALB cuts them), a signal thread
 * that turns SIGTERM/SIGINT (blocked everywhere, taken with sigwait, so no code runs in a signal
 * handler) into the `stopping` flag, and main, which starts and stops the rest. The flag also cuts
 * short an SQS call main is inside (queue URL resolution at start-up), so a stop is bounded in
 * every state.
 */
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "auth.h"
#include "batch_writer.h"
#include "broadcast.h"
#include "credentials.h"
#include "db.h"
#include "history.h"
#include "http.h"
#include "lb_watch.h"
#include "log.h"
#include "process_metrics.h"
#include "poller.h"
#include "presence.h"
#include "presence_cluster.h"
#include "queue_depth.h"
#include "redact.h"
#include "read_receipts.h"
#include "recent.h"
#include "room_api.h"
#include "settings.h"
#include "bus.h"
#include "shard_lease.h"
#include "spill.h"
#include "sqs.h"
#include "sqs_health.h"
#include "timeutil.h"
#include "watchdog.h"

#define COMPONENT "consumer"

typedef struct {
    consumer_settings s;
    sigset_t stop_signals;
    credentials_provider *credentials;
    sqs_health sqs_health;
    admin_http *http;
    api *api;
    char **queue_urls; /* [shard - 1] */
    char *dlq_url;
    char *spill_url;
    atomic_bool serving;  /* listening for subscribers and not draining (/health/serving) */
    atomic_bool stopping; /* SIGTERM taken: cuts the spill drainer's long poll */
    spill_drainer *drainer;
    batch_writer *writer;
    pthread_mutex_t writer_mu; /* the readiness check (an admin thread) vs setting/freeing writer */
    history *history;
    db_gate *api_gate;    /* admin threads that may be in database work at once */
    db_health *db_health; /* the active "postgres" readiness check */
    presence *presence;
    presence_cluster *pcluster;                 /* with the bus: presence across nodes */
    _Atomic(broadcaster *) presence_answers_to; /* set once the broadcaster runs */
    recent_cache *recent;
    room_api *room_api;
    auth *auth; /* identity tokens; NULL when CHATFLOW_AUTH is off */
    read_receipts *receipts;
    broadcaster *broadcast;
    lb_watch *lb; /* the load balancer's drain, for the subscribers; NULL when not watched */
    poller_pool *pollers;
    queue_depth *depth;
    /* Set once by main before the pollers start; read by admin threads (readiness, serving).
     * Exactly one of them is used: the bus when CHATFLOW_REDIS_URL is set, else leases. */
    _Atomic(shard_lease *) leases;
    _Atomic(bus *) bus;
} consumer;

static void *signal_thread(void *arg)
{
    consumer *c = arg;
    int sig = 0;
    if (sigwait(&c->stop_signals, &sig) == 0) {
        log_info(COMPONENT, "received %s; stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        atomic_store(&c->serving, false);
        atomic_store(&c->stopping, true);
    }
    return NULL;
}

/* Waits up to ms for a stop request; true when there is one. */
static bool stop_signal_within(consumer *c, long ms)
{
    for (; ms > 0 && !atomic_load(&c->stopping); ms -= 50) time_sleep_ms(ms > 50 ? 50 : ms);
    return atomic_load(&c->stopping);
}

/* The writer's own state: is it committing? (The "postgres" check asks the database itself.) */
static bool writer_check(void *ctx, char *detail, size_t detail_len)
{
    consumer *c = ctx;
    pthread_mutex_lock(&c->writer_mu);
    bool up = false;
    if (c->writer)
        up = batch_writer_db_up(c->writer, detail, detail_len);
    else
        snprintf(detail, detail_len, "starting");
    pthread_mutex_unlock(&c->writer_mu);
    return up;
}

/* "shards": does this node hold the lease of every shard of its range? */
static bool shards_check(void *ctx, char *detail, size_t detail_len)
{
    consumer *c = ctx;
    shard_lease *l = atomic_load(&c->leases);
    if (l) return shard_lease_check(l, detail, detail_len);
    if (c->s.redis_url[0]) {
        snprintf(detail, detail_len,
                 "cluster bus: every consumer polls shards %lld-%lld (no leases)", c->s.shard_first,
                 c->s.shard_last);
        return true;
    }
    snprintf(detail, detail_len, "starting");
    return false;
}

/* "bus": both Redis connections up (bus.h); "starting" until the bus runs. */
static bool bus_ready_check(void *ctx, char *detail, size_t detail_len)
{
    consumer *c = ctx;
    bus *b = atomic_load(&c->bus);
    if (b) return bus_check(b, detail, detail_len);
    snprintf(detail, detail_len, "starting");
    return false;
}

/* Another node's event, from the bus: what a poller does with a message it received. */
static void bus_deliver(void *ctx, const chat_message *m, const char *seq, const char *received_at)
{
    consumer *c = ctx;
    broadcast_publish(c->broadcast, m, seq, received_at);
    if (m->kind != CHAT_KIND_TYPING && !recent_add_message(c->recent, m, seq, received_at))
        log_warn(COMPONENT, "room %s: out of memory caching message %s for history", m->room_id,
                 m->message_id);
}

static void bus_room_lost(void *ctx, const char *room, const char *seq)
{
    consumer *c = ctx;
    broadcast_room_lost(c->broadcast, room, seq);
}

/* Another node's member event, from the bus, for this node's members. */
static void bus_relay_in(void *ctx, const char *room, const char *event_json)
{
    consumer *c = ctx;
    broadcast_relay_in(c->broadcast, room, event_json);
}

/* This node's member event, for the others (set before the bus exists: a NULL bus drops it). */
static bool relay_out(void *ctx, const char *room, const char *event_json)
{
    consumer *c = ctx;
    bus *b = atomic_load(&c->bus);
    return b && bus_relay(b, room, event_json);
}

/* The cluster presence's answer to a request of the broadcaster (its thread). */
static void presence_answered(void *ctx, presence_cluster_op *op)
{
    consumer *c = ctx;
    broadcaster *b = atomic_load(&c->presence_answers_to);
    if (b)
        broadcast_presence_answered(b, op);
    else
        presence_cluster_op_free(op);
}

static bool start_presence_cluster(consumer *c, char *err, size_t err_len)
{
    presence_cluster_config cfg = {
        .url = c->s.redis_url,
        .prefix = c->s.redis_prefix,
        .node_id = c->s.common.server_id,
        .timeout_ms = (long)c->s.bus_timeout_ms,
        .heartbeat_ms = (long)c->s.presence_heartbeat_s * 1000,
        .node_ttl_ms = (long)c->s.presence_node_ttl_s * 1000,
        .queue_max = 8192,
        .answered = presence_answered,
        .ctx = c,
    };
    c->pcluster = presence_cluster_start(&cfg, err, err_len);
    return c->pcluster != NULL;
}

/* Without the bus, one consumer per shard (leases); with it, every consumer polls every shard and
 * shares the rooms' events through Redis. */
static bool start_shard_sharing(consumer *c, char *err, size_t err_len)
{
    if (c->s.redis_url[0]) {
        bus_config cfg = {
            .url = c->s.redis_url,
            .prefix = c->s.redis_prefix,
            .node_id = c->s.common.server_id,
            .outbox = (size_t)c->s.bus_outbox,
            .history = (long)c->s.bus_history,
            .ttl_s = (long)c->s.bus_ttl_s,
            .timeout_ms = (long)c->s.bus_timeout_ms,
            .deliver = bus_deliver,
            .room_lost = bus_room_lost,
            .relay = bus_relay_in,
            .ctx = c,
        };
        bus *b = bus_start(&cfg, err, err_len);
        atomic_store(&c->bus, b);
        return b != NULL;
    }
    shard_lease_config lc = {
        .database_url = c->s.database_url,
        .queue_prefix = c->s.common.queue_prefix,
        .server_id = c->s.common.server_id,
        .shard_first = (int)c->s.shard_first,
        .shard_last = (int)c->s.shard_last,
        .retry_ms = (long)c->s.shard_lease_retry_ms,
    };
    shard_lease *leases = shard_lease_start(&lc, err, err_len);
    atomic_store(&c->leases, leases);
    return leases != NULL;
}

/* Load balancers route subscribers on this: a node that holds none of its shards' leases would
 * give them no live events, so it does not take them (liveness is another matter: untouched). */
static bool serving_check(void *ctx, char *detail, size_t detail_len)
{
    consumer *c = ctx;
    bool serving = atomic_load(&c->serving);
    shard_lease *l = atomic_load(&c->leases);
    if (serving && l && shard_lease_held_count(l) == 0) {
        snprintf(detail, detail_len,
                 "standby: this node holds none of its shards' leases (see the shards check of "
                 "/health/ready); its subscribers would get no live events");
        return false;
    }
    snprintf(detail, detail_len, "%s",
             serving                     ? "accepting subscribers"
             : atomic_load(&c->stopping) ? "draining"
                                         : "starting");
    return serving;
}

/* Sets c->writer where the readiness check sees it; returns the previous one. */
static batch_writer *set_writer(consumer *c, batch_writer *w)
{
    pthread_mutex_lock(&c->writer_mu);
    batch_writer *old = c->writer;
    c->writer = w;
    pthread_mutex_unlock(&c->writer_mu);
    return old;
}

/* Migrations at start-up: retried while the database is unreachable, until a stop signal. */
static bool migrate_until_done(consumer *c)
{
    for (;;) {
        char err[512];
        int applied = 0;
        if (db_migrate(c->s.database_url, c->s.migrations_dir, (long)c->s.db_statement_timeout_ms,
                       &applied, err, sizeof(err))) {
            log_info(COMPONENT, "database schema up to date (%d migrations applied)", applied);
            return true;
        }
        log_warn(COMPONENT, "migrations: %s; retrying in 2 s", err);
        if (stop_signal_within(c, 2000)) return false;
    }
}

/* Queue URLs come from GetQueueUrl (never hand-built). Retried until a stop signal. */
static bool resolve_queue(consumer *c, sqs_client *sqs, const char *name, char **url)
{
    long backoff = 200;
    for (;;) {
        sqs_error e = {0};
        sqs_status s = sqs_get_queue_url(sqs, name, url, &e);
        sqs_health_record(&c->sqs_health, s, "GetQueueUrl", &e);
        if (s == SQS_OK) return true;
        if (atomic_load(&c->stopping)) return false;
        log_warn(COMPONENT, "GetQueueUrl %s: %s (%s %s); retrying in %ld ms", name,
                 sqs_status_name(s), e.type, e.message, backoff);
        if (stop_signal_within(c, backoff)) return false;
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

static bool resolve_queues(consumer *c)
{
    char err[256];
    sqs_config sc = consumer_sqs_config(&c->s, c->credentials);
    sqs_client *sqs = sqs_client_new(&sc, err, sizeof(err));
    if (!sqs) {
        log_error(COMPONENT, "SQS client: %s", err);
        return false;
    }
    sqs_client_set_abort(sqs, &c->stopping); /* SQS may hang: a stop must not wait for it */
    long n = (long)c->s.common.queue_shards;
    c->queue_urls = calloc((size_t)n, sizeof(char *)); /* [shard - 1]; NULL where not polled */
    bool ok = c->queue_urls != NULL;
    for (long i = c->s.shard_first - 1; ok && i < c->s.shard_last; i++) {
        char name[128];
        snprintf(name, sizeof(name), "%s%ld.fifo", c->s.common.queue_prefix, i + 1);
        ok = resolve_queue(c, sqs, name, &c->queue_urls[i]);
    }
    ok = ok && resolve_queue(c, sqs, c->s.common.dlq_name, &c->dlq_url) &&
         resolve_queue(c, sqs, c->s.spill_queue_name, &c->spill_url);
    sqs_client_free(sqs);
    return ok;
}

static bool start_services(consumer *c)
{
    char err[512];
    batch_writer_config wc = {
        .database_url = c->s.database_url,
        .statement_timeout_ms = (long)c->s.db_statement_timeout_ms,
        .batch_size = (size_t)c->s.db_batch_size,
        .max_wait_ms = (long)c->s.db_max_wait_ms,
        .max_backoff_ms = (long)c->s.db_retry_max_backoff_ms,
        .use_unnest = strcmp(c->s.db_write_method, "unnest") == 0,
    };
    batch_writer *writer = batch_writer_start(&wc, err, sizeof(err));
    if (!writer) {
        log_error(COMPONENT, "batch writer: %s", err);
        return false;
    }
    set_writer(c, writer);
    if (!(c->receipts = read_receipts_start(c->s.database_url, (long)c->s.db_statement_timeout_ms,
                                            err, sizeof(err)))) {
        log_error(COMPONENT, "read receipts: %s", err);
        return false;
    }
    broadcast_config bc = {
        .bind_addr = c->s.ws_bind,
        .port = (int)c->s.ws_port,
        .rooms_max = (size_t)c->s.rooms_max,
        .send_queue_max = (size_t)c->s.send_queue_max,
        .cache_per_room = (size_t)c->s.replay_cache_per_room,
        .max_subscribers = (size_t)c->s.max_subscribers,
        .ping_interval_s = (int)c->s.ping_interval_s,
        .pong_timeout_s = (int)c->s.pong_timeout_s,
        .handshake_timeout_s = (int)c->s.handshake_timeout_s,
        /* One history page waits for a pooled connection (bounded) and runs one statement. */
        .history_max_ms = (long)(2 * c->s.db_statement_timeout_ms + 60000),
        .history = history_read,
        .history_ctx = c->history,
        .presence = c->presence,
        .pcluster = c->pcluster,
        .relay_out = c->s.redis_url[0] ? relay_out : NULL,
        .relay_ctx = c,
        .receipts = c->receipts,
        .auth = c->auth,
        .anonymous_read = c->s.auth_anonymous_read,
    };
    if (!(c->broadcast = broadcast_start(&bc, err, sizeof(err)))) {
        log_error(COMPONENT, "broadcast: %s", err);
        return false;
    }
    atomic_store(&c->presence_answers_to, c->broadcast);
    if (!lb_watch_start_configured(&c->s.common, c->credentials, broadcast_port(c->broadcast),
                                   broadcast_shed, c->broadcast, &c->lb, err, sizeof(err))) {
        log_error(COMPONENT, "load balancer watch: %s", err);
        return false;
    }
    if (!start_shard_sharing(c, err, sizeof(err))) {
        log_error(COMPONENT, "%s: %s", c->s.redis_url[0] ? "cluster bus" : "shard leases", err);
        return false;
    }
    poller_pool_config pc = {
        .settings = &c->s,
        .credentials = c->credentials,
        .writer = c->writer,
        .broadcast = c->broadcast,
        .recent = c->recent,
        .queue_urls = (const char *const *)c->queue_urls,
        .dlq_url = c->dlq_url,
        .spill_url = c->spill_url,
        .health = &c->sqs_health,
        .leases = atomic_load(&c->leases),
        .bus = atomic_load(&c->bus),
    };
    if (!(c->pollers = poller_pool_start(&pc, err, sizeof(err)))) {
        log_error(COMPONENT, "pollers: %s", err);
        return false;
    }
    spill_drainer_config dc = {
        .settings = &c->s,
        .credentials = c->credentials,
        .writer = c->writer,
        .spill_url = c->spill_url,
        .dlq_url = c->dlq_url,
        .stopping = &c->stopping,
    };
    if (!(c->drainer = spill_drainer_start(&dc, err, sizeof(err)))) {
        log_error(COMPONENT, "spill drainer: %s", err);
        return false;
    }
    if (c->s.queue_depth_interval_s > 0) {
        sqs_config sc = consumer_sqs_config(&c->s, c->credentials);
        c->depth = queue_depth_start(&sc, (const char *const *)c->queue_urls,
                                     (int)c->s.common.queue_shards,
                                     (int)c->s.queue_depth_interval_s, err, sizeof(err));
        if (!c->depth) log_warn(COMPONENT, "queue depth gauge off: %s", err);
    }
    atomic_store(&c->serving, true);
    log_info(COMPONENT,
             "consuming queue shards %lld-%lld; subscribers on ws://%s:%d/chat/{room}; admin on "
             "%s:%d",
             c->s.shard_first, c->s.shard_last, c->s.ws_bind, broadcast_port(c->broadcast),
             c->s.common.admin_bind, admin_http_port(c->http));
    return true;
}

/* Stop order: no new receives; what the pollers hold is committed (or spilled) and deleted; the
 * writer flushes the rest; subscribers get 1001; then the admin server. Bounded by the stop
 * timeout. Returns false when a thread did not finish in time: then nothing it may still use is
 * freed (the caller exits instead). */
static bool stop_services(consumer *c)
{
    uint64_t deadline =
        time_mono_ns() + (uint64_t)c->s.stop_timeout_s * 1000000000ull - 1500000000ull;
    atomic_store(&c->serving, false);
    atomic_store(&c->stopping, true);
    lb_watch_stop(c->lb); /* before the broadcaster its callback wakes */
    c->lb = NULL;
    queue_depth_stop(c->depth);
    c->depth = NULL;
    bool pollers_joined = true;
    /* Rows the database cannot take before the deadline are abandoned a little earlier, so the
     * pollers waiting for them can release them to SQS and finish before their own deadline. */
    if (c->writer) batch_writer_begin_stop(c->writer, deadline - 500000000ull);
    if (c->pollers) {
        poller_pool_request_stop(c->pollers);
        pollers_joined = poller_pool_join(c->pollers, deadline);
        if (!pollers_joined)
            log_warn(COMPONENT, "some pollers are still in a receive at the stop deadline; their "
                                "messages return to the queue after the visibility timeout");
    }
    bool drainer_joined = spill_drainer_stop(c->drainer, deadline);
    if (drainer_joined)
        c->drainer = NULL;
    else
        log_warn(COMPONENT, "the spill drainer is still inside a call at the stop deadline");
    if (!pollers_joined || !drainer_joined)
        return false; /* they may still use the writer, the broadcaster and the SQS clients */
    /* After the pollers: the leases are held until polling ended. Closing the session releases
     * them, and a standby takes the shards over. */
    if (!shard_lease_stop(atomic_load(&c->leases), deadline)) {
        log_warn(COMPONENT, "the shard lease thread is still inside a call at the stop deadline");
        return false;
    }
    /* After the pollers (nothing is published any more; the outbox goes out until the deadline),
     * before the broadcaster its subscriber thread delivers to. */
    if (!bus_stop(atomic_load(&c->bus), deadline)) {
        log_warn(COMPONENT,
                 "a cluster bus thread is still inside a Redis call at the stop deadline");
        return false;
    }
    batch_writer_stop(set_writer(c, NULL), deadline);
    poller_pool_free(c->pollers);
    c->pollers = NULL;
    /* Before the broadcaster: this node's members are taken back from the cluster's presence
     * (OFFLINE for the other nodes) while nothing answers to the broadcaster any more. */
    if (!presence_cluster_stop(c->pcluster, deadline)) {
        log_warn(COMPONENT, "cluster presence is still inside a Redis call at the stop deadline");
        return false;
    }
    atomic_store(&c->presence_answers_to, NULL);
    if (c->broadcast) broadcast_stop(c->broadcast);
    c->broadcast = NULL;
    read_receipts_stop(c->receipts); /* after the broadcaster: nothing records any more */
    c->receipts = NULL;
    return true;
}

static void free_consumer(consumer *c)
{
    admin_http_free(c->http); /* first: nothing below is used by a request any more */
    lb_watch_stop(c->lb);     /* set only when the start failed after it */
    shard_lease_free(atomic_load(&c->leases));
    bus_free(atomic_load(&c->bus));
    db_health_free(c->db_health);
    api_free(c->api);
    room_api_free(c->room_api);
    auth_close(c->auth); /* after the broadcaster and the API, its users */
    history_free(c->history);
    db_gate_free(c->api_gate);
    if (presence_cluster_stop(c->pcluster, time_mono_ns() + 3000000000ull))
        presence_cluster_free(c->pcluster); /* after the room API, its other user */
    presence_free(c->presence);
    recent_free(c->recent);
    if (c->queue_urls)
        for (long i = 0; i < c->s.common.queue_shards; i++) free(c->queue_urls[i]);
    free(c->queue_urls);
    free(c->dlq_url);
    free(c->spill_url);
    credentials_provider_free(c->credentials);
    sqs_health_destroy(&c->sqs_health);
}

/* Takes "--migrate" out of argv (it is an action, not a setting). */
static bool take_migrate_flag(int *argc, char **argv)
{
    bool found = false;
    int kept = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--migrate") == 0)
            found = true;
        else
            argv[kept++] = argv[i];
    }
    argv[kept] = NULL;
    *argc = kept;
    return found;
}

int main(int argc, char **argv)
{
    static consumer c;
    char err[512];
    bool migrate_only = take_migrate_flag(&argc, argv);
    config_result r = consumer_settings_load(&c.s, &argc, argv, err, sizeof(err));
    if (r == CONFIG_HELP) return 0;
    if (r == CONFIG_ERROR) {
        fprintf(stderr, "chatflow-consumer: %s\n", err);
        return 2;
    }
    if (argc > 1) {
        fprintf(stderr, "chatflow-consumer: unexpected argument \"%s\" (see --help)\n", argv[1]);
        return 2;
    }
    if (migrate_only) {
        int applied = 0;
        if (!db_migrate(c.s.database_url, c.s.migrations_dir, (long)c.s.db_statement_timeout_ms,
                        &applied, err, sizeof(err))) {
            log_error(COMPONENT, "%s", err);
            return 1;
        }
        log_info(COMPONENT, "migrations applied: %d", applied);
        return 0;
    }

    /* Blocked before any thread exists, so every thread inherits the mask. */
    sigemptyset(&c.stop_signals);
    sigaddset(&c.stop_signals, SIGTERM);
    sigaddset(&c.stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &c.stop_signals, NULL);
    pthread_t signals;
    if (pthread_create(&signals, NULL, signal_thread, &c) != 0) {
        log_error(COMPONENT, "cannot start the signal thread");
        return 1;
    }
    pthread_detach(signals); /* it ends with the first signal, or with the process */
    signal(SIGPIPE, SIG_IGN);
    sqs_health_init(&c.sqs_health);
    pthread_mutex_init(&c.writer_mu, NULL);

    int status = 1;
    if (!(c.credentials = credentials_provider_new(err, sizeof(err)))) {
        log_error(COMPONENT, "AWS credentials: %s", err);
        goto out;
    }
    /* Before the threads that use libcurl: a JWKS URL is fetched here (jwks.h). */
    if (!auth_open(&c.s.common, &c.auth, err, sizeof(err))) {
        redact_text(err, sizeof(err));
        log_error(COMPONENT, "%s", err);
        goto out;
    }
    process_metrics_register("consumer");
    c.http = admin_http_new();
    c.api = api_new(c.s.database_url, (long)c.s.db_statement_timeout_ms);
    c.history = history_new(c.s.database_url, (long)c.s.db_statement_timeout_ms);
    c.presence = presence_new((size_t)c.s.rooms_max, (size_t)c.s.room_member_cap);
    c.recent = recent_new((size_t)c.s.rooms_max, (size_t)c.s.history_cache_per_room);
    if (c.s.redis_url[0] && !start_presence_cluster(&c, err, sizeof(err))) {
        log_error(COMPONENT, "cluster presence: %s", err);
        goto out;
    }
    room_api_config rc = {
        .presence = c.presence,
        .pcluster = c.pcluster,
        .recent = c.recent,
        .history = c.history,
        .allow_origin = c.s.api_allow_origin,
        .auth = c.auth,
        .anonymous_read = c.s.auth_anonymous_read,
    };
    /* One admin thread always stays out of database work, so /health and /metrics never wait
     * behind the API (settings.c keeps CHATFLOW_ADMIN_THREADS >= 2). */
    c.api_gate = db_gate_new((unsigned)c.s.admin_threads - 1);
    c.db_health = db_health_new(c.s.database_url);
    rc.gate = c.api_gate;
    if (c.api && c.api_gate) api_set_gate(c.api, c.api_gate);
    c.room_api = c.history && c.presence && c.recent && c.api_gate ? room_api_new(&rc) : NULL;
    if (!c.http || !c.api || !c.room_api || !c.db_health) {
        log_error(COMPONENT, "out of memory");
        goto out;
    }
    admin_http_set_liveness(c.http, watchdog_health_check, NULL);
    admin_http_set_serving(c.http, serving_check, &c);
    admin_http_add_check(c.http, "sqs", sqs_health_check, &c.sqs_health);
    admin_http_add_check(c.http, "postgres", db_health_check, c.db_health);
    admin_http_add_check(c.http, "db_writer", writer_check, &c);
    admin_http_add_check(c.http, "shards", shards_check, &c);
    if (c.s.redis_url[0]) admin_http_add_check(c.http, "bus", bus_ready_check, &c);
    api_add_routes(c.api, c.http);
    room_api_add_routes(c.room_api, c.http);
    if (!admin_http_start(c.http, c.s.common.admin_bind, (int)c.s.admin_port,
                          (int)c.s.admin_threads, err, sizeof(err))) {
        log_error(COMPONENT, "admin HTTP server: %s", err);
        goto out;
    }
    if (c.s.migrate_on_start && !migrate_until_done(&c)) {
        status = 0; /* stopped by a signal while waiting */
        goto out;
    }
    if (!resolve_queues(&c)) {
        status = c.queue_urls ? 0 : 1;
        goto out;
    }
    if (!start_services(&c)) {
        stop_services(&c);
        goto out;
    }
    while (!stop_signal_within(&c, 1000))
        ;
    status = 0;
    if (!stop_services(&c)) {
        /* Threads still inside a call use the writer, the broadcaster and their clients: exit
         * without freeing them. */
        log_info(COMPONENT, "stopped");
        admin_http_free(c.http);
        exit(0);
    }
    log_info(COMPONENT, "stopped");
out:
    if (c.writer) batch_writer_stop(set_writer(&c, NULL), time_mono_ns());
    free_consumer(&c);
    return status;
}
