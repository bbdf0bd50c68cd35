/* shard_lease — shard leases on PostgreSQL advisory locks; see shard_lease.h. */
#include "shard_lease.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "metrics.h"
#include "room.h"
#include "timeutil.h"
#include "watchdog.h"

#define COMPONENT "shard-lease"
#define CLASSID_BASE 0x43466c77u /* "CFlw": ChatFlow's advisory lock class, before the prefix */
#define CONNECT_TIMEOUT_S 2
#define STATEMENT_TIMEOUT_MS 2000L
#define BACKOFF_FIRST_MS 250L
#define BACKOFF_CAP_MS 5000L
#define WAIT_SLICE_MS 50L
/* A round: a connect (2 s per address), the session SETs and one query (2 s statement timeout;
 * a peer that vanished is noticed within tcp_user_timeout / the keepalives). */
#define ROUND_BUDGET_MS 30000L

/* Server side: the backend notices a dead client (and frees its locks) within about 10 s even
 * when no FIN arrives (host crash, partition); ignored on a Unix socket. */
static const char session_sql[] = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
                                  "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";
/* One round trip for every shard we lack; true in the second column where our session got it. */
static const char try_sql[] =
    "SELECT s, pg_try_advisory_lock($1::int4, s) FROM unnest($2::int4[]) AS s";

struct shard_lease {
    int first, n; /* shards first..first+n-1 */
    long retry_ms;
    int32_t classid;
    char application_name[64];
    db_conn *db;         /* the lease thread's only */
    atomic_int *state;   /* [n] shard_lease_state, read by pollers and health checks */
    bool *session_holds; /* [n] the current session holds the lock (lease thread only) */
    bool fresh_session;  /* set by the on_connect hook: the session holds no lock yet */
    bool db_down;        /* the last round failed (lease thread only): log transitions once */
    long backoff_ms;
    atomic_bool stopping, finished;
    pthread_t thread;
    bool started;
    watchdog_loop *watchdog;
    metric_gauge *m_held, *m_standby;
    metric_counter *m_takeovers, *m_errors;
};

/* ---- pure ---- */

int32_t shard_lease_classid(const char *queue_prefix)
{
    return (int32_t)(CLASSID_BASE ^ room_fnv1a32(queue_prefix ? queue_prefix : ""));
}

shard_lease_change shard_lease_transition(shard_lease_state *state, bool got)
{
    shard_lease_state was = *state;
    *state = got ? SHARD_LEASE_HELD : SHARD_LEASE_STANDBY;
    if (was == *state) return SHARD_LEASE_UNCHANGED;
    if (got) return was == SHARD_LEASE_STANDBY ? SHARD_LEASE_TAKEN_OVER : SHARD_LEASE_ACQUIRED;
    return was == SHARD_LEASE_HELD ? SHARD_LEASE_LOST : SHARD_LEASE_STOOD_BY;
}

void shard_lease_format(const shard_lease_state *states, int first, int n, shard_lease_state want,
                        char *out, size_t out_len)
{
    size_t used = 0;
    if (out_len == 0) return;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (states[i] != want) continue;
        int j = i;
        while (j + 1 < n && states[j + 1] == want) j++;
        int w = j > i ? snprintf(out + used, out_len - used, "%s%d-%d", used ? "," : "", first + i,
                                 first + j)
                      : snprintf(out + used, out_len - used, "%s%d", used ? "," : "", first + i);
        if (w < 0 || (size_t)w >= out_len - used) return; /* truncated: still NUL-terminated */
        used += (size_t)w;
        i = j;
    }
}

/* ---- state ---- */

static shard_lease_state state_of(const shard_lease *l, int i)
{
    return (shard_lease_state)atomic_load(&l->state[i]);
}

static void snapshot(const shard_lease *l, shard_lease_state *out)
{
    for (int i = 0; i < l->n; i++) out[i] = state_of(l, i);
}

bool shard_lease_held(const shard_lease *l, int shard)
{
    if (!l) return true;
    int i = shard - l->first;
    return i >= 0 && i < l->n && state_of(l, i) == SHARD_LEASE_HELD;
}

int shard_lease_held_count(const shard_lease *l)
{
    int held = 0;
    for (int i = 0; i < l->n; i++) held += state_of(l, i) == SHARD_LEASE_HELD;
    return held;
}

static void publish_gauges(shard_lease *l)
{
    int held = 0, standby = 0;
    for (int i = 0; i < l->n; i++) {
        held += state_of(l, i) == SHARD_LEASE_HELD;
        standby += state_of(l, i) == SHARD_LEASE_STANDBY;
    }
    metric_gauge_set(l->m_held, held);
    metric_gauge_set(l->m_standby, standby);
}

/* Applies one shard's outcome; returns the change. */
static shard_lease_change apply(shard_lease *l, int i, bool got)
{
    shard_lease_state s = state_of(l, i);
    shard_lease_change c = shard_lease_transition(&s, got);
    atomic_store(&l->state[i], (int)s);
    if (c == SHARD_LEASE_TAKEN_OVER) metric_counter_inc(l->m_takeovers);
    return c;
}

/* "shard 3 is" / "shards 1-4,7 are" of the shards whose change is one of a, b; how many. */
static int shards_with(const shard_lease *l, const shard_lease_change *changes,
                       shard_lease_change a, shard_lease_change b, char *out, size_t out_len)
{
    shard_lease_state mark[ROOM_SHARDS_MAX];
    int k = 0, last = 0;
    for (int i = 0; i < l->n; i++) {
        bool hit = changes[i] == a || changes[i] == b;
        mark[i] = hit ? SHARD_LEASE_HELD : SHARD_LEASE_UNKNOWN;
        k += hit;
        if (hit) last = l->first + i;
    }
    if (k == 1) snprintf(out, out_len, "shard %d is", last);
    if (k > 1) {
        char list[256];
        shard_lease_format(mark, l->first, l->n, SHARD_LEASE_HELD, list, sizeof list);
        snprintf(out, out_len, "shards %s are", list);
    }
    return k;
}

/* One line per kind of change and round: loud (error) when another node polls our shards. */
static void log_changes(const shard_lease *l, const shard_lease_change *changes)
{
    char which[300];
    if (shards_with(l, changes, SHARD_LEASE_ACQUIRED, SHARD_LEASE_ACQUIRED, which, sizeof which))
        log_info(COMPONENT, "%s leased to this node now; polling", which);
    if (shards_with(l, changes, SHARD_LEASE_TAKEN_OVER, SHARD_LEASE_TAKEN_OVER, which,
                    sizeof which))
        log_info(COMPONENT, "%s taken over from a consumer that is gone; polling", which);
    if (shards_with(l, changes, SHARD_LEASE_LOST, SHARD_LEASE_LOST, which, sizeof which))
        log_error(COMPONENT,
                  "%s taken by another consumer while our database session was lost: polling "
                  "stopped (messages already received are finished)",
                  which);
    int k = shards_with(l, changes, SHARD_LEASE_STOOD_BY, SHARD_LEASE_LOST, which, sizeof which);
    if (k > 0)
        log_error(COMPONENT,
                  "%s polled by another consumer; this node stands by for %s — without a cluster "
                  "bus two consumers polling one shard would each broadcast only part of its rooms",
                  which, k > 1 ? "them" : "it");
}

/* ---- the lease thread ---- */

static bool on_connect(db_conn *c, void *ctx, char *err, size_t err_len)
{
    shard_lease *l = ctx;
    l->fresh_session = true;
    return db_exec(c, session_sql, err, err_len);
}

/* "{3,4,9}": the shards our session lacks; false when it holds them all. */
static bool wanted_array(const shard_lease *l, char *out, size_t out_len)
{
    size_t used = 0;
    int k = 0;
    out[0] = '\0';
    for (int i = 0; i < l->n && used + 16 < out_len; i++) {
        if (l->session_holds[i]) continue;
        used += (size_t)snprintf(out + used, out_len - used, "%s%d", k++ ? "," : "{", l->first + i);
    }
    if (k == 0) return false;
    snprintf(out + used, out_len - used, "}");
    return true;
}

static void round_failed(shard_lease *l, const char *err)
{
    metric_counter_inc(l->m_errors);
    /* A failed statement may or may not have taken locks: a new session knows it holds none. */
    db_conn_drop(l->db);
    if (!l->db_down)
        log_warn(COMPONENT,
                 "database unreachable (%s); shard leases held stay held (polling goes on), "
                 "shards not held are not polled; retrying",
                 err);
    l->db_down = true;
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_FIRST_MS;
    long cap = l->retry_ms > BACKOFF_CAP_MS ? l->retry_ms : BACKOFF_CAP_MS;
    if (l->backoff_ms > cap) l->backoff_ms = cap;
}

/* One round: (re)connect, try every shard the session lacks (or check the session is alive when
 * it lacks none), apply the outcomes. */
static void lease_round(shard_lease *l)
{
    char err[512], classid[16], wanted[8 * ROOM_SHARDS_MAX + 8];
    if (!db_conn_ensure(l->db, err, sizeof err)) {
        round_failed(l, err);
        return;
    }
    if (l->fresh_session) {
        memset(l->session_holds, 0, (size_t)l->n * sizeof(bool));
        l->fresh_session = false;
    }
    snprintf(classid, sizeof classid, "%d", (int)l->classid);
    bool lacking = wanted_array(l, wanted, sizeof wanted);
    const char *params[] = {classid, wanted};
    PGresult *r = lacking ? db_exec_params(l->db, try_sql, 2, params, err, sizeof err)
                          : db_exec_params(l->db, "SELECT 1", 0, NULL, err, sizeof err);
    if (!r) {
        round_failed(l, err);
        return;
    }
    shard_lease_change changes[ROOM_SHARDS_MAX] = {0};
    for (int row = 0; lacking && row < PQntuples(r); row++) {
        int i = atoi(PQgetvalue(r, row, 0)) - l->first;
        if (i < 0 || i >= l->n) continue;
        l->session_holds[i] = PQgetvalue(r, row, 1)[0] == 't';
        changes[i] = apply(l, i, l->session_holds[i]);
    }
    PQclear(r);
    log_changes(l, changes);
    if (l->db_down) log_info(COMPONENT, "database reachable again; shard leases checked");
    l->db_down = false;
    l->backoff_ms = 0;
    publish_gauges(l);
}

static void *lease_main(void *arg)
{
    shard_lease *l = arg;
    pthread_setname_np(pthread_self(), "cf-lease");
    while (!atomic_load(&l->stopping)) {
        long wait = l->backoff_ms ? l->backoff_ms : l->retry_ms;
        watchdog_expect(l->watchdog, wait + ROUND_BUDGET_MS);
        for (long left = wait; left > 0 && !atomic_load(&l->stopping); left -= WAIT_SLICE_MS)
            time_sleep_ms(left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
        if (!atomic_load(&l->stopping)) lease_round(l);
    }
    watchdog_unregister(l->watchdog);
    atomic_store(&l->finished, true);
    return NULL;
}

/* ---- life cycle ---- */

static void init_metrics(shard_lease *l)
{
    l->m_held = metrics_gauge("chatflow_shard_leases_held",
                              "Queue shards of this node's range whose lease it holds (it polls "
                              "exactly these).",
                              NULL);
    l->m_standby = metrics_gauge("chatflow_shard_leases_standby",
                                 "Queue shards of this node's range whose lease another consumer "
                                 "holds (this node stands by for them).",
                                 NULL);
    l->m_takeovers =
        metrics_counter("chatflow_shard_lease_takeovers_total",
                        "Shards this node took over from a consumer that was gone.", NULL);
    l->m_errors =
        metrics_counter("chatflow_shard_lease_errors_total",
                        "Lease rounds that failed (database unreachable or refusing).", NULL);
}

shard_lease *shard_lease_start(const shard_lease_config *cfg, char *err, size_t err_len)
{
    shard_lease *l = calloc(1, sizeof(*l));
    if (!l) goto oom;
    l->first = cfg->shard_first;
    l->n = cfg->shard_last - cfg->shard_first + 1;
    l->retry_ms = cfg->retry_ms;
    l->classid = shard_lease_classid(cfg->queue_prefix);
    snprintf(l->application_name, sizeof l->application_name, "chatflow-leases:%s",
             cfg->server_id ? cfg->server_id : "");
    atomic_init(&l->stopping, false);
    atomic_init(&l->finished, false);
    init_metrics(l);
    l->state = calloc((size_t)l->n, sizeof(*l->state));
    l->session_holds = calloc((size_t)l->n, sizeof(bool));
    l->db = db_conn_new(cfg->database_url, STATEMENT_TIMEOUT_MS, l->application_name, NULL, 0,
                        on_connect, l);
    if (!l->state || !l->session_holds || !l->db) goto oom;
    for (int i = 0; i < l->n; i++) atomic_init(&l->state[i], SHARD_LEASE_UNKNOWN);
    db_conn_set_connect_timeout(l->db, CONNECT_TIMEOUT_S);
    db_conn_set_keepalives(l->db, 5, 2, 3, 10000);
    log_info(COMPONENT,
             "shards %d-%d: polled only under their lease (PostgreSQL advisory lock (%d, shard))",
             l->first, l->first + l->n - 1, (int)l->classid);
    lease_round(l); /* before the pollers start: a fresh node polls nothing it does not hold */
    publish_gauges(l);
    l->watchdog = watchdog_register("shard-leases", l->retry_ms + ROUND_BUDGET_MS);
    int rc = pthread_create(&l->thread, NULL, lease_main, l);
    if (rc != 0) {
        snprintf(err, err_len, "pthread_create: %s", strerror(rc));
        watchdog_unregister(l->watchdog);
        shard_lease_free(l);
        return NULL;
    }
    l->started = true;
    return l;
oom:
    snprintf(err, err_len, "out of memory");
    shard_lease_free(l);
    return NULL;
}

bool shard_lease_check(void *ctx, char *detail, size_t detail_len)
{
    const shard_lease *l = ctx;
    shard_lease_state s[ROOM_SHARDS_MAX];
    char standby[256], unknown[256];
    snapshot(l, s);
    shard_lease_format(s, l->first, l->n, SHARD_LEASE_STANDBY, standby, sizeof standby);
    shard_lease_format(s, l->first, l->n, SHARD_LEASE_UNKNOWN, unknown, sizeof unknown);
    if (!standby[0] && !unknown[0]) {
        snprintf(detail, detail_len, "holds the leases of shards %d-%d", l->first,
                 l->first + l->n - 1);
        return true;
    }
    int w = 0;
    if (standby[0])
        w = snprintf(detail, detail_len,
                     "standby for shards %s: polled by another consumer, not by this node",
                     standby);
    if (unknown[0] && w >= 0 && (size_t)w < detail_len)
        snprintf(detail + w, detail_len - (size_t)w,
                 "%sshards %s not leased yet (database unreachable since start): not polled",
                 w ? "; " : "", unknown);
    return false;
}

bool shard_lease_stop(shard_lease *l, uint64_t deadline_ns)
{
    if (!l || !l->started) return true;
    atomic_store(&l->stopping, true);
    while (!atomic_load(&l->finished) && time_mono_ns() < deadline_ns) time_sleep_ms(10);
    if (!atomic_load(&l->finished)) return false;
    pthread_join(l->thread, NULL);
    l->started = false;
    db_conn_drop(l->db); /* the session ends: PostgreSQL releases every lock it held */
    return true;
}

void shard_lease_free(shard_lease *l)
{
    if (!l) return;
    db_conn_free(l->db);
    free(l->state);
    free(l->session_holds);
    free(l);
}
