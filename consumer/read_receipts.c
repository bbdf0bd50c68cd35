/* read_receipts — the read-position writer thread; see read_receipts.h. */
#include "read_receipts.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "metrics.h"
#include "room.h"
#include "seqnum.h"
#include "timeutil.h"
#include "workqueue.h"

#define COMPONENT "read-receipts"
#define QUEUE_CAPACITY 8192
#define TAKE_BATCH 256
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct {
    char room[ROOM_ID_BUF];
    uint32_t user_id;
    char seq[SEQNUM_BUF];
} position;

/* Arrays are bound as whole parameters; duplicates of a key never reach one statement (an
 * upsert may not touch a row twice), the pending set holds one entry per key. Rows are locked in
 * byte order of the room id (COLLATE "C", as the pending set is sorted) so that concurrent
 * writers take row locks in one order whatever the database's collation. */
static const db_statement statements[] = {
    {"upsert_read_positions",
     "INSERT INTO read_positions (room_id, user_id, sequence_number, updated_at)"
     " SELECT r, u, s, now() FROM unnest($1::text[], $2::int[], $3::numeric[]) AS t(r, u, s)"
     " ORDER BY r COLLATE \"C\", u"
     " ON CONFLICT (room_id, user_id) DO UPDATE"
     " SET sequence_number = EXCLUDED.sequence_number, updated_at = EXCLUDED.updated_at"
     " WHERE EXCLUDED.sequence_number > read_positions.sequence_number",
     3},
};

struct read_receipts {
    char url[1024];
    db_conn *db;
    workqueue *queue;
    pthread_t thread;
    bool started;
    atomic_bool stopping;

    /* writer thread only: one entry per (room, user), kept sorted */
    position *pending;
    size_t n_pending;

    metric_counter *m_stored, *m_dropped, *m_failures;
};

static int key_cmp(const position *a, const char *room, uint32_t user)
{
    int c = strcmp(a->room, room);
    if (c != 0) return c < 0 ? -1 : 1;
    if (a->user_id != user) return a->user_id < user ? -1 : 1;
    return 0;
}

/* Into the sorted pending set, keeping the higher position per key. */
static void merge(read_receipts *r, const position *p)
{
    size_t lo = 0, hi = r->n_pending;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&r->pending[mid], p->room, p->user_id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < r->n_pending && key_cmp(&r->pending[lo], p->room, p->user_id) == 0) {
        if (seqnum_cmp(p->seq, r->pending[lo].seq) > 0)
            memcpy(r->pending[lo].seq, p->seq, sizeof(p->seq));
        return;
    }
    if (r->n_pending == READ_RECEIPTS_PENDING_MAX) {
        metric_counter_inc(r->m_dropped);
        return;
    }
    memmove(&r->pending[lo + 1], &r->pending[lo], (r->n_pending - lo) * sizeof(*p));
    r->pending[lo] = *p;
    r->n_pending++;
}

/* "{a,b,c}" of one column of the pending set; malloc'd. Room ids are quoted: an unquoted NULL
 * (a valid id, in any case) would be an SQL NULL element; nothing else in an id needs escaping. */
static char *array_literal(const read_receipts *r, int column)
{
    size_t per = ROOM_ID_BUF + 3 > SEQNUM_BUF + 1 ? ROOM_ID_BUF + 3 : SEQNUM_BUF + 1;
    size_t cap = r->n_pending * per + 3, n = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[n++] = '{';
    for (size_t i = 0; i < r->n_pending; i++) {
        const position *p = &r->pending[i];
        if (i) s[n++] = ',';
        if (column == 0)
            n += (size_t)snprintf(s + n, cap - n, "\"%s\"", p->room);
        else if (column == 1)
            n += (size_t)snprintf(s + n, cap - n, "%u", p->user_id);
        else
            n += (size_t)snprintf(s + n, cap - n, "%s", p->seq);
    }
    snprintf(s + n, cap - n, "}");
    return s;
}

static bool write_pending(read_receipts *r, char *err, size_t err_len)
{
    char *cols[3] = {array_literal(r, 0), array_literal(r, 1), array_literal(r, 2)};
    bool ok = false;
    if (cols[0] && cols[1] && cols[2]) {
        const char *params[3] = {cols[0], cols[1], cols[2]};
        PGresult *res = db_run_prepared(r->db, "upsert_read_positions", 3, params, err, err_len);
        ok = res != NULL;
        PQclear(res);
    } else {
        snprintf(err, err_len, "out of memory");
    }
    for (int i = 0; i < 3; i++) free(cols[i]);
    if (ok) {
        metric_counter_add(r->m_stored, r->n_pending);
        r->n_pending = 0;
    } else {
        metric_counter_inc(r->m_failures);
    }
    return ok;
}

static void take_queued(read_receipts *r, long wait_ms)
{
    void *items[TAKE_BATCH];
    void *first = workqueue_pop_wait(r->queue, wait_ms);
    if (!first) return;
    merge(r, first);
    free(first);
    size_t n;
    while ((n = workqueue_pop_many(r->queue, items, TAKE_BATCH)) > 0)
        for (size_t i = 0; i < n; i++) {
            merge(r, items[i]);
            free(items[i]);
        }
}

static void *writer_main(void *arg)
{
    read_receipts *r = arg;
    pthread_setname_np(pthread_self(), "cf-receipts");
    long backoff = BACKOFF_MIN_MS;
    while (!atomic_load(&r->stopping)) {
        take_queued(r, r->n_pending ? backoff : 500);
        if (!r->n_pending) continue;
        char err[512];
        if (write_pending(r, err, sizeof(err))) {
            backoff = BACKOFF_MIN_MS;
        } else {
            log_warn(COMPONENT, "%zu read positions not stored yet (%s); retrying in %ld ms",
                     r->n_pending, err, backoff);
            time_sleep_ms(backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
    }
    take_queued(r, 0);
    char err[512];
    if (r->n_pending && !write_pending(r, err, sizeof(err)))
        log_warn(COMPONENT, "stopping: %zu read positions not stored (%s)", r->n_pending, err);
    return NULL;
}

read_receipts *read_receipts_start(const char *database_url, long statement_timeout_ms, char *err,
                                   size_t err_len)
{
    read_receipts *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(r->url, sizeof(r->url), "%s", database_url);
    r->db = db_conn_new(r->url, statement_timeout_ms, "chatflow-consumer-receipts", statements,
                        sizeof(statements) / sizeof(statements[0]), NULL, NULL);
    r->queue = workqueue_new(QUEUE_CAPACITY, NULL, NULL);
    r->pending = malloc(READ_RECEIPTS_PENDING_MAX * sizeof(*r->pending));
    r->m_stored = metrics_counter("chatflow_read_receipts_total",
                                  "Read positions by what became of them.", "result=\"stored\"");
    r->m_dropped = metrics_counter("chatflow_read_receipts_total",
                                   "Read positions by what became of them.", "result=\"dropped\"");
    r->m_failures = metrics_counter("chatflow_read_receipt_write_failures_total",
                                    "Failed writes of read positions (retried).", NULL);
    if (!r->db || !r->queue || !r->pending) {
        snprintf(err, err_len, "out of memory");
        read_receipts_stop(r);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, writer_main, r) != 0) {
        snprintf(err, err_len, "cannot start the read-receipt writer");
        read_receipts_stop(r);
        return NULL;
    }
    r->started = true;
    return r;
}

bool read_receipts_record(read_receipts *r, const char *room, uint32_t user_id, const char *seq)
{
    bool valid = room && room_id_valid(room, strlen(room));
    position *p = valid ? malloc(sizeof(*p)) : NULL;
    if (p) {
        snprintf(p->room, sizeof(p->room), "%s", room);
        p->user_id = user_id;
        snprintf(p->seq, sizeof(p->seq), "%s", seq);
    }
    if (!p || !workqueue_push(r->queue, p)) {
        free(p);
        metric_counter_inc(r->m_dropped);
        return false;
    }
    return true;
}

void read_receipts_stop(read_receipts *r)
{
    if (!r) return;
    if (r->started) {
        atomic_store(&r->stopping, true);
        workqueue_close(r->queue);
        pthread_join(r->thread, NULL);
    }
    if (r->queue) {
        void *item;
        while (workqueue_pop_many(r->queue, &item, 1) == 1) free(item);
        workqueue_free(r->queue);
    }
    db_conn_free(r->db);
    free(r->pending);
    free(r);
}
