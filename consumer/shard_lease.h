/*
 * shard_lease — one consumer per queue shard: a consumer polls a shard only while it holds the
 * shard's lease, a PostgreSQL session-level advisory lock.
 *
 * Why: until the consumers share events over a bus, a room's live events reach only the
 * subscribers of the node that received its messages. Two consumers polling one shard would each
 * get part of a room's messages and each broadcast only that part, silently. With leases the
 * second node stands by for the shard (and says so loudly: log, metrics, readiness, serving).
 *
 * Contract:
 *  - The lease of shard s is pg_try_advisory_lock(classid, s) on one dedicated connection (the
 *    two-int4 form; db_migrate()'s one-bigint lock cannot collide with it). classid =
 *    shard_lease_classid(CHATFLOW_QUEUE_PREFIX): a fixed ChatFlow constant mixed with FNV-1a of
 *    the prefix, so deployments with other prefixes sharing a database do not collide. Locks are
 *    per database.
 *  - shard_lease_start() makes the first attempt before it returns (bounded by the 2 s connect
 *    timeout and the 2 s statement timeout), then starts the lease thread (watchdog loop
 *    "shard-leases"), which every retry_ms tries every shard of the range it does not hold. The
 *    connection uses TCP keepalives and tcp_user_timeout on both ends (client options, server
 *    SETs), so PostgreSQL notices a dead holder and frees its locks promptly.
 *  - Per shard a state (shard_lease_state): UNKNOWN (never held, no answer yet: e.g. the database
 *    has been unreachable since start), HELD, STANDBY (another session holds it). Pollers read it
 *    lock-free (shard_lease_held); only HELD shards are polled.
 *  - Database unreachable: HELD stays HELD (live chat goes on through a database outage) while
 *    the thread reconnects with backoff. A new session holds no lock: every HELD shard is tried
 *    again first; one that another node took meanwhile becomes STANDBY (given up, logged).
 *  - Transitions (shard_lease_transition, pure): to STANDBY -> log_error once ("shard N is polled
 *    by another consumer ..."); STANDBY -> HELD is a takeover (log_info, counter); UNKNOWN -> HELD
 *    an acquisition (log_info).
 *  - Metrics: chatflow_shard_leases_held, chatflow_shard_leases_standby (gauges),
 *    chatflow_shard_lease_takeovers_total, chatflow_shard_lease_errors_total (failed rounds).
 *  - shard_lease_check() is the "shards" readiness check (health_check_fn): UP when every shard
 *    of the range is HELD; the detail names the shards held elsewhere and not yet held.
 *  - shard_lease_stop(): ends the thread (its wait is bounded) and closes the connection, which
 *    releases every lock. Call it after the pollers stopped. False when the thread did not end
 *    by the deadline (then nothing is freed: the process exits). shard_lease_free() after that;
 *    the getters work until then (admin threads may still ask).
 */
#ifndef CHATFLOW_CONSUMER_SHARD_LEASE_H
#define CHATFLOW_CONSUMER_SHARD_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { SHARD_LEASE_UNKNOWN = 0, SHARD_LEASE_HELD, SHARD_LEASE_STANDBY } shard_lease_state;

/* What an attempt's outcome means for a shard. */
typedef enum {
    SHARD_LEASE_UNCHANGED,
    SHARD_LEASE_ACQUIRED,   /* UNKNOWN -> HELD */
    SHARD_LEASE_TAKEN_OVER, /* STANDBY -> HELD */
    SHARD_LEASE_STOOD_BY,   /* UNKNOWN -> STANDBY: another node had it when we started */
    SHARD_LEASE_LOST,       /* HELD -> STANDBY: another node took it while our session was gone */
} shard_lease_change;

typedef struct {
    const char *database_url; /* must outlive the lease (settings) */
    const char *queue_prefix;
    const char *server_id; /* in the connection's application_name, for operators */
    int shard_first, shard_last;
    long retry_ms;
} shard_lease_config;

typedef struct shard_lease shard_lease;

shard_lease *shard_lease_start(const shard_lease_config *cfg, char *err, size_t err_len);
/* true when this node holds shard's lease. NULL l: true (no leases: every shard polled). */
bool shard_lease_held(const shard_lease *l, int shard);
int shard_lease_held_count(const shard_lease *l);
bool shard_lease_check(void *ctx, char *detail, size_t detail_len); /* health_check_fn */
bool shard_lease_stop(shard_lease *l, uint64_t deadline_ns);
void shard_lease_free(shard_lease *l);

/* Pure, for unit tests. */
int32_t shard_lease_classid(const char *queue_prefix);
/* The change of one attempt's outcome (got: our session holds the lock now) from *state, which
 * it updates. */
shard_lease_change shard_lease_transition(shard_lease_state *state, bool got);
/* Writes the shards first..first+n-1 whose state is want as ranges ("1-3,7"); "" when none. */
void shard_lease_format(const shard_lease_state *states, int first, int n, shard_lease_state want,
                        char *out, size_t out_len);

#endif
