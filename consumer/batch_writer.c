/* batch_writer — group commit of received messages into PostgreSQL; see batch_writer.h. */
#include "batch_writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"
#include "watchdog.h"

#define COMPONENT "writer"
#define FIRST_BACKOFF_MS 100
#define PROBE_MAX_INTERVAL_MS 1000

#define MESSAGE_COLUMNS                                                                          \
    "message_id, room_id, user_id, username, message_text, message_type, server_id, client_ip, " \
    "sequence_number, client_timestamp, received_at"

/* Only rows really inserted (RETURNING skips conflicts) feed user_activity, aggregated per key
 * and applied in key order so concurrent writers lock rows in the same order. */
#define FLUSH_TAIL                                                                              \
    "), ua AS (INSERT INTO user_activity (user_id, room_id, first_activity, last_activity,"     \
    " message_count)"                                                                           \
    " SELECT user_id, room_id, min(client_timestamp), max(client_timestamp), count(*) FROM ins" \
    " GROUP BY user_id, room_id ORDER BY user_id, room_id"                                      \
    " ON CONFLICT (user_id, room_id) DO UPDATE SET"                                             \
    " first_activity = LEAST(user_activity.first_activity, EXCLUDED.first_activity),"           \
    " last_activity = GREATEST(user_activity.last_activity, EXCLUDED.last_activity),"           \
    " message_count = user_activity.message_count + EXCLUDED.message_count)"                    \
    " SELECT count(*) FROM ins"

static const db_statement writer_statements[] = {
    {"flush_from_stage",
     "WITH ins AS (INSERT INTO messages (" MESSAGE_COLUMNS ") SELECT " MESSAGE_COLUMNS
     " FROM chatflow_stage ON CONFLICT (message_id) DO NOTHING"
     " RETURNING user_id, room_id, client_timestamp" FLUSH_TAIL,
     0},
    {"flush_unnest",
     "WITH ins AS (INSERT INTO messages (" MESSAGE_COLUMNS ") SELECT * FROM unnest("
     "$1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],"
     " $8::text[], $9::numeric[], $10::timestamptz[], $11::timestamptz[])"
     " ON CONFLICT (message_id) DO NOTHING RETURNING user_id, room_id, client_timestamp" FLUSH_TAIL,
     11},
};

struct batch_writer {
    batch_writer_config cfg;
    char url[1024];
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t work;      /* writer waits: submissions, holders, stop */
    pthread_cond_t done;      /* pollers wait: a batch reached its final state */
    write_batch *head, *tail; /* pending, in submission order */
    size_t pending_rows;
    int holders;
    bool stopping; /* no group-commit waits; give up on rows at stop_deadline_ns */
    bool exiting;  /* the thread ends once nothing is pending */
    uint64_t stop_deadline_ns;

    bool flushing;            /* a flush attempt is running (rows taken off the list) */
    uint64_t flush_oldest_ns; /* submission time of the oldest batch in that attempt */
    uint64_t last_commit_ns;

    db_conn *db;
    watchdog_loop *watchdog;
    pthread_mutex_t
        health_mu; /* db_up, failing_since_ns, last_error (taken inside mu, never around it) */
    bool db_up;
    uint64_t failing_since_ns;
    char last_error[256];

    metric_histogram *m_batch_size, *m_flush_seconds;
    metric_counter *m_rows_written, *m_flush_failures;
    metric_gauge *m_db_up;
};

/* ---- rows ---- */

static bool normalise_instant(const char *in, char out[ISO8601_BUF], const char *field, char *err,
                              size_t err_len)
{
    int64_t ms;
    if (!time_parse_iso8601(in, &ms)) {
        snprintf(err, err_len, "%s: not an ISO-8601 instant", field);
        return false;
    }
    time_format_iso8601(ms, out);
    return true;
}

bool write_row_init(write_row *row, const chat_message *m, const char *sequence_number, char *err,
                    size_t err_len)
{
    memset(row, 0, sizeof(*row));
    char *end;
    if (!room_id_check(m->room_id, strlen(m->room_id), err, err_len)) return false;
    memcpy(row->room_id, m->room_id, strlen(m->room_id) + 1);
    row->user_id = strtol(m->user_id, &end, 10);
    if (*m->user_id == '\0' || *end != '\0') {
        snprintf(err, err_len, "userId: not an integer");
        return false;
    }
    if (strlen(sequence_number ? sequence_number : "") >= sizeof(row->sequence_number) ||
        strspn(sequence_number ? sequence_number : "", "0123456789") !=
            strlen(sequence_number ? sequence_number : "")) {
        snprintf(err, err_len, "SequenceNumber: not a decimal number");
        return false;
    }
    if (!normalise_instant(m->timestamp, row->client_timestamp, "timestamp", err, err_len) ||
        !normalise_instant(m->received_at, row->received_at, "receivedAt", err, err_len))
        return false;
    snprintf(row->message_id, sizeof(row->message_id), "%s", m->message_id);
    snprintf(row->username, sizeof(row->username), "%s", m->username);
    snprintf(row->message_text, sizeof(row->message_text), "%s", m->message);
    snprintf(row->message_type, sizeof(row->message_type), "%s", m->message_type);
    snprintf(row->server_id, sizeof(row->server_id), "%s", m->server_id);
    snprintf(row->client_ip, sizeof(row->client_ip), "%s", m->client_ip);
    snprintf(row->sequence_number, sizeof(row->sequence_number), "%s",
             sequence_number ? sequence_number : "");
    row->status = WRITE_PENDING;
    return true;
}

/* ---- a growable text buffer for COPY data and array literals ---- */

typedef struct {
    char *data;
    size_t len, cap;
    bool oom;
} textbuf;

static void tb_reserve(textbuf *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return;
    }
    b->data = d;
    b->cap = cap;
}

static void tb_putc(textbuf *b, char c)
{
    tb_reserve(b, 1);
    if (!b->oom) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
    }
}

static void tb_puts(textbuf *b, const char *s)
{
    size_t n = strlen(s);
    tb_reserve(b, n);
    if (!b->oom) {
        memcpy(b->data + b->len, s, n + 1);
        b->len += n;
    }
}

/* COPY text format escaping. libpq sends COPY data as opaque bytes and has no encoder for it,
 * so the four characters that the text format gives meaning to are escaped here. */
static void tb_put_copy_field(textbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\': tb_puts(b, "\\\\"); break;
        case '\t': tb_puts(b, "\\t"); break;
        case '\n': tb_puts(b, "\\n"); break;
        case '\r': tb_puts(b, "\\r"); break;
        default: tb_putc(b, *s);
        }
    }
}

/* One element of a PostgreSQL array literal: always double-quoted, with \ and " escaped
 * (libpq has no array encoder; the literal is still bound as a parameter, never spliced). */
static void tb_put_array_elem(textbuf *b, const char *s)
{
    tb_putc(b, b->len > 1 ? ',' : '{');
    if (!s) {
        tb_puts(b, "NULL");
        return;
    }
    tb_putc(b, '"');
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') tb_putc(b, '\\');
        tb_putc(b, *s);
    }
    tb_putc(b, '"');
}

/* ---- flushing ---- */

static bool create_stage(db_conn *c, void *ctx, char *err, size_t err_len)
{
    (void)ctx;
    return db_exec(
        c,
        "CREATE TEMP TABLE IF NOT EXISTS chatflow_stage ("
        " message_id uuid, room_id text, user_id int, username text, message_text text,"
        " message_type text, server_id text, client_ip text, sequence_number numeric(60,0),"
        " client_timestamp timestamptz, received_at timestamptz) ON COMMIT DELETE ROWS",
        err, err_len);
}

static void rollback_quietly(db_conn *db)
{
    if (db_conn_is_up(db) && PQtransactionStatus(db_conn_pg(db)) != PQTRANS_IDLE) {
        PGresult *r = PQexec(db_conn_pg(db), "ROLLBACK");
        PQclear(r);
    }
}

static bool copy_into_stage(db_conn *db, write_row *const *rows, size_t n, char *err,
                            size_t err_len)
{
    PGconn *pg = db_conn_pg(db);
    PGresult *r = PQexec(pg, "COPY chatflow_stage (" MESSAGE_COLUMNS ") FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        db_note_failure(db, r, "COPY", err, err_len);
        PQclear(r);
        return false;
    }
    PQclear(r);

    textbuf b = {0};
    char num[ROOM_ID_BUF + 32];
    for (size_t i = 0; i < n; i++) {
        const write_row *w = rows[i];
        tb_puts(&b, w->message_id);
        /* A room id is [A-Za-z0-9_-] (room.h): nothing in it needs COPY escaping. */
        snprintf(num, sizeof(num), "\t%s\t%ld\t", w->room_id, w->user_id);
        tb_puts(&b, num);
        tb_put_copy_field(&b, w->username);
        tb_putc(&b, '\t');
        tb_put_copy_field(&b, w->message_text);
        tb_putc(&b, '\t');
        tb_put_copy_field(&b, w->message_type);
        tb_putc(&b, '\t');
        tb_put_copy_field(&b, w->server_id);
        tb_putc(&b, '\t');
        tb_put_copy_field(&b, w->client_ip);
        tb_putc(&b, '\t');
        tb_puts(&b, w->sequence_number[0] ? w->sequence_number : "\\N");
        tb_putc(&b, '\t');
        tb_puts(&b, w->client_timestamp);
        tb_putc(&b, '\t');
        tb_puts(&b, w->received_at);
        tb_putc(&b, '\n');
    }
    bool sent = !b.oom && (b.len == 0 || PQputCopyData(pg, b.data, (int)b.len) == 1);
    free(b.data);
    if (PQputCopyEnd(pg, sent ? NULL : "client could not build the COPY data") != 1) {
        db_note_failure(db, NULL, "COPY end", err, err_len);
        return false;
    }
    bool ok = true;
    while ((r = PQgetResult(pg)) != NULL) {
        if (ok && PQresultStatus(r) != PGRES_COMMAND_OK) {
            db_note_failure(db, r, "COPY", err, err_len);
            ok = false;
        }
        PQclear(r);
        if (!db_conn_pg(db)) break; /* connection dropped by db_note_failure */
    }
    return ok && sent;
}

/* Inserts rows in one transaction; *inserted = rows new to the table. */
static bool write_with_copy(db_conn *db, write_row *const *rows, size_t n, long *inserted,
                            char *err, size_t err_len)
{
    if (!db_exec(db, "BEGIN", err, err_len)) return false;
    PGresult *r = NULL;
    bool ok = copy_into_stage(db, rows, n, err, err_len) &&
              (r = db_exec_prepared(db, "flush_from_stage", 0, NULL, err, err_len)) != NULL;
    if (ok) *inserted = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    ok = ok && db_exec(db, "COMMIT", err, err_len);
    if (!ok) rollback_quietly(db);
    return ok;
}

/* One statement, so one round trip and its own transaction. */
static bool write_with_unnest(db_conn *db, write_row *const *rows, size_t n, long *inserted,
                              char *err, size_t err_len)
{
    enum { NCOL = 11 };
    textbuf cols[NCOL] = {{0}};
    char num[24];
    for (size_t i = 0; i < n; i++) {
        const write_row *w = rows[i];
        tb_put_array_elem(&cols[0], w->message_id);
        tb_put_array_elem(&cols[1], w->room_id);
        snprintf(num, sizeof(num), "%ld", w->user_id);
        tb_put_array_elem(&cols[2], num);
        tb_put_array_elem(&cols[3], w->username);
        tb_put_array_elem(&cols[4], w->message_text);
        tb_put_array_elem(&cols[5], w->message_type);
        tb_put_array_elem(&cols[6], w->server_id);
        tb_put_array_elem(&cols[7], w->client_ip);
        tb_put_array_elem(&cols[8], w->sequence_number[0] ? w->sequence_number : NULL);
        tb_put_array_elem(&cols[9], w->client_timestamp);
        tb_put_array_elem(&cols[10], w->received_at);
    }
    const char *values[NCOL];
    bool oom = false;
    for (int c = 0; c < NCOL; c++) {
        if (cols[c].len == 0)
            tb_putc(&cols[c], '{'); /* no rows (the writer's probe): empty arrays */
        tb_putc(&cols[c], '}');
        oom |= cols[c].oom;
        values[c] = cols[c].data;
    }
    bool ok = false;
    if (oom) {
        snprintf(err, err_len, "out of memory building the batch");
    } else {
        PGresult *r = db_exec_prepared(db, "flush_unnest", NCOL, values, err, err_len);
        if (r) {
            *inserted = atol(PQgetvalue(r, 0, 0));
            ok = true;
        }
        PQclear(r);
    }
    for (int c = 0; c < NCOL; c++) free(cols[c].data);
    return ok;
}

static void set_health(batch_writer *w, bool up, const char *error)
{
    pthread_mutex_lock(&w->health_mu);
    if (up != w->db_up) {
        if (up)
            log_info(COMPONENT, "PostgreSQL writes succeed again");
        else
            log_warn(COMPONENT, "PostgreSQL writes failing (retried until they succeed): %s",
                     error);
        if (!up) w->failing_since_ns = time_mono_ns();
    }
    w->db_up = up;
    snprintf(w->last_error, sizeof(w->last_error), "%s", up ? "" : error);
    pthread_mutex_unlock(&w->health_mu);
    metric_gauge_set(w->m_db_up, up ? 1 : 0);
}

/* chatflow_db_failures_total{class}: which kind of database fault, for dashboards and alerts. */
static metric_counter *failure_counter(const char *class_name)
{
    char labels[64];
    snprintf(labels, sizeof labels, "class=\"%s\"", class_name);
    return metrics_counter(
        "chatflow_db_failures_total",
        "Failed database writes and probes of the batch writer, by kind of fault.", labels);
}

static void count_failure_class(batch_writer *w)
{
    metric_counter_inc(failure_counter(db_last_error_class(w->db)));
}

/* Every class at 0 from the start, so rate() and increase() see the first failure of each too
 * (db.h's fixed set, "none" aside). */
static void register_failure_classes(void)
{
    static const char *const classes[] = {"connection", "read_only", "schema",
                                          "permission", "resources", "timeout",
                                          "conflict",   "data",      "other"};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) failure_counter(classes[i]);
}

/* Writes rows in one transaction. Returns the error kind (DB_ERR_NONE on success). With n = 0
 * it is the writer's probe: the same statements with no rows. */
static db_error_kind write_rows(batch_writer *w, write_row *const *rows, size_t n, char *err,
                                size_t err_len)
{
    uint64_t t0 = time_mono_ns();
    long inserted = 0;
    bool ok = db_conn_ensure(w->db, err, err_len) &&
              (w->cfg.use_unnest ? write_with_unnest(w->db, rows, n, &inserted, err, err_len)
                                 : write_with_copy(w->db, rows, n, &inserted, err, err_len));
    if (!ok) {
        metric_counter_inc(w->m_flush_failures);
        count_failure_class(w);
        db_error_kind kind = db_last_error_kind(w->db);
        /* A database fault may be a property of the session (default_transaction_read_only after
         * a failover onto a reader, a role's settings): the next attempt starts a fresh one. */
        if (kind != DB_ERR_DATA) db_conn_drop(w->db);
        return kind == DB_ERR_NONE ? DB_ERR_TRANSIENT : kind;
    }
    if (n == 0) return DB_ERR_NONE; /* the probe */
    metric_histogram_observe(w->m_flush_seconds, (double)(time_mono_ns() - t0) / 1e9);
    metric_histogram_observe(w->m_batch_size, (double)n);
    metric_counter_add(w->m_rows_written, (uint64_t)inserted);
    for (size_t i = 0; i < n; i++) rows[i]->status = WRITE_COMMITTED;
    pthread_mutex_lock(&w->mu);
    w->last_commit_ns = time_mono_ns();
    pthread_mutex_unlock(&w->mu);
    if ((size_t)inserted < n)
        log_debug(COMPONENT, "flush of %zu rows: %zu already stored (redelivery)", n,
                  n - (size_t)inserted);
    return DB_ERR_NONE;
}

/* Flushes rows; a batch the database rejects is retried row by row so that one bad row fails
 * alone. Returns false when the database itself failed (rows left PENDING get an attempt). */
static bool flush_rows(batch_writer *w, write_row *const *rows, size_t n, char *err, size_t err_len)
{
    db_error_kind kind = write_rows(w, rows, n, err, err_len);
    if (kind == DB_ERR_NONE) {
        set_health(w, true, NULL);
        return true;
    }
    if (kind != DB_ERR_DATA) {
        set_health(w, false, err);
        return false;
    }
    set_health(w, true, NULL);
    if (n == 1) {
        rows[0]->status = WRITE_FAILED;
        snprintf(rows[0]->failure, sizeof(rows[0]->failure), "database rejected the row: %s", err);
        log_warn(COMPONENT, "message %s rejected: %s", rows[0]->message_id, err);
        return true;
    }
    log_warn(COMPONENT, "batch of %zu rows rejected (%s); retrying row by row", n, err);
    for (size_t i = 0; i < n; i++)
        if (!flush_rows(w, &rows[i], 1, err, err_len)) return false;
    return true;
}

/* ---- the writer thread ---- */

static void finish_batch_locked(batch_writer *w, write_batch *b)
{
    (void)w;
    b->open = 0;
    b->next = NULL;
}

static size_t count_open(const write_batch *b)
{
    size_t open = 0;
    for (size_t i = 0; i < b->n_rows; i++) open += b->rows[i].status == WRITE_PENDING;
    return open;
}

static void abandon_all_locked(batch_writer *w)
{
    for (write_batch *b = w->head, *next; b; b = next) {
        next = b->next;
        for (size_t i = 0; i < b->n_rows; i++)
            if (b->rows[i].status == WRITE_PENDING) b->rows[i].status = WRITE_ABANDONED;
        finish_batch_locked(w, b);
    }
    w->head = w->tail = NULL;
    w->pending_rows = 0;
    pthread_cond_broadcast(&w->done);
}

static void wait_until_locked(batch_writer *w, uint64_t deadline_ns)
{
    if (deadline_ns <= time_mono_ns()) return;
    struct timespec ts = time_mono_timespec(deadline_ns);
    pthread_cond_timedwait(&w->work, &w->mu, &ts);
}

/* Group commit: flush at batch size, when no poller holds unsubmitted messages, or at max wait.
 * The wait drops the lock, and a poller may withdraw every pending batch meanwhile (the spill
 * path), so the head is checked on every turn and may be NULL on return. */
static void wait_for_flush_locked(batch_writer *w)
{
    while (w->head && !w->stopping && w->pending_rows < w->cfg.batch_size && w->holders > 0) {
        uint64_t deadline = w->head->submitted_ns + (uint64_t)w->cfg.max_wait_ms * 1000000ull;
        if (time_mono_ns() >= deadline) return;
        wait_until_locked(w, deadline);
    }
}

/* Takes whole batches from the head, at least one, up to batch_size rows. */
static write_batch *take_locked(batch_writer *w, write_row ***rows_out, size_t *n_out)
{
    write_batch *first = w->head, *last = NULL;
    size_t n = 0;
    for (write_batch *b = w->head; b; b = b->next) {
        if (n > 0 && n + b->open > w->cfg.batch_size) break;
        n += b->open;
        last = b;
    }
    w->head = last->next;
    if (!w->head) w->tail = NULL;
    last->next = NULL;
    w->pending_rows -= n;
    w->flushing = true;
    w->flush_oldest_ns = UINT64_MAX;
    for (write_batch *b = first; b; b = b->next) {
        b->in_flight = true;
        if (b->submitted_ns < w->flush_oldest_ns) w->flush_oldest_ns = b->submitted_ns;
    }

    write_row **rows = malloc((n ? n : 1) * sizeof(*rows));
    size_t k = 0;
    if (rows)
        for (write_batch *b = first; b; b = b->next)
            for (size_t i = 0; i < b->n_rows; i++)
                if (b->rows[i].status == WRITE_PENDING) rows[k++] = &b->rows[i];
    *rows_out = rows;
    *n_out = rows ? k : 0;
    return first;
}

/* Counts an attempt for rows still pending; gives up on rows out of attempts; puts batches with
 * open rows back at the head in their order and wakes the pollers of finished ones. */
static void settle_locked(batch_writer *w, write_batch *taken, const char *err)
{
    w->flushing = false;
    write_batch *requeue_head = NULL, *requeue_tail = NULL;
    size_t requeued_rows = 0;
    for (write_batch *b = taken, *next; b; b = next) {
        next = b->next;
        for (size_t i = 0; i < b->n_rows; i++) {
            write_row *r = &b->rows[i];
            if (r->status != WRITE_PENDING) continue;
            r->attempts += err != NULL;
            if (b->withdraw) r->status = WRITE_WITHDRAWN;
        }
        b->in_flight = false;
        b->open = count_open(b);
        if (b->open == 0) {
            finish_batch_locked(w, b);
            continue;
        }
        b->next = NULL;
        if (requeue_tail)
            requeue_tail->next = b;
        else
            requeue_head = b;
        requeue_tail = b;
        requeued_rows += b->open;
    }
    if (requeue_head) {
        requeue_tail->next = w->head;
        w->head = requeue_head;
        if (!w->tail) w->tail = requeue_tail;
        w->pending_rows += requeued_rows;
    }
    pthread_cond_broadcast(&w->done);
}

/* The longest a turn of the writer may legitimately take: a flush (or probe) bounded by the
 * connect timeout, the statement timeout and TCP keepalive on a dead peer (db.c), plus a backoff.
 */
static long turn_budget_ms(const batch_writer *w)
{
    return w->cfg.statement_timeout_ms + w->cfg.max_backoff_ms + 60000;
}

static bool writer_db_up(batch_writer *w)
{
    pthread_mutex_lock(&w->health_mu);
    bool up = w->db_up;
    pthread_mutex_unlock(&w->health_mu);
    return up;
}

/* While the database is failing and nothing is pending, the writer probes it by itself, so the
 * state (and the pollers' choice between committing and spilling) follows the database. */
static void probe_locked(batch_writer *w, long backoff_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)backoff_ms * 1000000ull;
    while (!w->head && !w->exiting && time_mono_ns() < until) wait_until_locked(w, until);
    if (w->head || w->exiting) return;
    pthread_mutex_unlock(&w->mu);
    char err[512] = "";
    db_error_kind kind = write_rows(w, NULL, 0, err, sizeof(err));
    set_health(w, kind == DB_ERR_NONE, err);
    pthread_mutex_lock(&w->mu);
}

static long next_backoff(const batch_writer *w, long backoff_ms)
{
    return backoff_ms * 2 > w->cfg.max_backoff_ms ? w->cfg.max_backoff_ms : backoff_ms * 2;
}

/* After a failed flush: wait out the backoff (cut short by the stop deadline). */
static void backoff_locked(batch_writer *w, long backoff_ms)
{
    uint64_t until = time_mono_ns() + (uint64_t)backoff_ms * 1000000ull;
    if (w->stopping && until > w->stop_deadline_ns) until = w->stop_deadline_ns;
    while (time_mono_ns() < until && !(w->stopping && time_mono_ns() >= w->stop_deadline_ns))
        wait_until_locked(w, until);
}

static void *writer_main(void *arg)
{
    batch_writer *w = arg;
    long backoff_ms = FIRST_BACKOFF_MS;
    pthread_setname_np(pthread_self(), "cf-writer");
    char err[512];
    pthread_mutex_lock(&w->mu);
    for (;;) {
        watchdog_expect(w->watchdog, turn_budget_ms(w));
        if (!w->head && !w->exiting) {
            if (!writer_db_up(w)) {
                /* Probes stay frequent (at most PROBE_MAX_INTERVAL_MS apart) whatever the flush
                 * backoff: each costs one connection attempt, and the spill queue drains only
                 * once the writer knows the database is back. */
                probe_locked(w, backoff_ms < PROBE_MAX_INTERVAL_MS ? backoff_ms
                                                                   : PROBE_MAX_INTERVAL_MS);
                backoff_ms = writer_db_up(w) ? FIRST_BACKOFF_MS : next_backoff(w, backoff_ms);
            } else {
                wait_until_locked(w, time_mono_ns() + 1000000000ull); /* turn for the watchdog */
            }
            continue;
        }
        if (!w->head) break;
        if (w->stopping && time_mono_ns() >= w->stop_deadline_ns) {
            log_warn(COMPONENT,
                     "stop deadline reached with %zu rows unwritten; they are released to SQS",
                     w->pending_rows);
            abandon_all_locked(w);
            continue;
        }
        wait_for_flush_locked(w);
        if (!w->head) continue; /* withdrawn while waiting */

        write_row **rows;
        size_t n;
        write_batch *taken = take_locked(w, &rows, &n);
        pthread_mutex_unlock(&w->mu);

        err[0] = '\0';
        bool ok;
        if (!rows) {
            snprintf(err, sizeof(err), "out of memory");
            ok = false;
        } else {
            ok = n == 0 || flush_rows(w, rows, n, err, sizeof(err));
        }
        free(rows);

        pthread_mutex_lock(&w->mu);
        settle_locked(w, taken, ok ? NULL : err);
        if (ok) {
            backoff_ms = FIRST_BACKOFF_MS;
            continue;
        }
        log_debug(COMPONENT, "flush of %zu rows failed (%s); retrying in %ld ms", n, err,
                  backoff_ms);
        backoff_locked(w, backoff_ms);
        backoff_ms = next_backoff(w, backoff_ms);
    }
    pthread_mutex_unlock(&w->mu);
    watchdog_unregister(w->watchdog);
    return NULL;
}

/* ---- public ---- */

batch_writer *batch_writer_start(const batch_writer_config *cfg, char *err, size_t err_len)
{
    batch_writer *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    w->cfg = *cfg;
    if (w->cfg.batch_size == 0) w->cfg.batch_size = 1;
    if (w->cfg.max_backoff_ms < FIRST_BACKOFF_MS) w->cfg.max_backoff_ms = FIRST_BACKOFF_MS;
    snprintf(w->url, sizeof(w->url), "%s", cfg->database_url);
    w->cfg.database_url = w->url;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->health_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->work, &ca);
    pthread_cond_init(&w->done, &ca);
    pthread_condattr_destroy(&ca);

    w->m_batch_size = metrics_histogram("chatflow_db_batch_size", "Rows per database flush.", NULL,
                                        METRICS_SIZE_BUCKETS, METRICS_SIZE_BUCKETS_N);
    w->m_flush_seconds =
        metrics_histogram("chatflow_db_flush_duration_seconds",
                          "Duration of a successful database flush (one transaction).", NULL,
                          METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    w->m_rows_written =
        metrics_counter("chatflow_db_rows_written_total",
                        "Message rows inserted (redelivered duplicates not counted).", NULL);
    w->m_flush_failures =
        metrics_counter("chatflow_db_flush_failures_total", "Database flushes that failed.", NULL);
    w->m_db_up =
        metrics_gauge("chatflow_db_up", "1 while the last database write succeeded.", NULL);
    register_failure_classes();

    w->db = db_conn_new(w->url, cfg->statement_timeout_ms, "chatflow-consumer-writer",
                        writer_statements, sizeof(writer_statements) / sizeof(writer_statements[0]),
                        create_stage, NULL);
    if (!w->db) {
        snprintf(err, err_len, "out of memory");
        batch_writer_stop(w, 0);
        return NULL;
    }
    /* Connect now to report the state early; a database down at start-up is retried later. */
    char cerr[256];
    bool up = db_conn_ensure(w->db, cerr, sizeof(cerr));
    w->db_up = !up; /* force the first log line */
    set_health(w, up, cerr);

    w->watchdog = watchdog_register("db-writer", turn_budget_ms(w));
    int rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0) {
        snprintf(err, err_len, "pthread_create: %s", strerror(rc));
        batch_writer_stop(w, 0);
        return NULL;
    }
    w->thread_started = true;
    return w;
}

void batch_writer_hold(batch_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->holders++;
    pthread_mutex_unlock(&w->mu);
}

void batch_writer_unhold(batch_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->holders--;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

void batch_writer_submit(batch_writer *w, write_batch *b)
{
    b->next = NULL;
    b->submitted_ns = time_mono_ns();
    b->open = count_open(b);
    pthread_mutex_lock(&w->mu);
    w->holders--;
    if (b->open > 0) {
        if (w->tail)
            w->tail->next = b;
        else
            w->head = b;
        w->tail = b;
        w->pending_rows += b->open;
    }
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

bool batch_writer_wait(batch_writer *w, write_batch *b, long timeout_ms)
{
    uint64_t deadline = time_mono_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    pthread_mutex_lock(&w->mu);
    struct timespec ts = time_mono_timespec(deadline);
    while (b->open > 0 && time_mono_ns() < deadline) pthread_cond_timedwait(&w->done, &w->mu, &ts);
    bool done = b->open == 0;
    pthread_mutex_unlock(&w->mu);
    return done;
}

bool batch_writer_db_up(batch_writer *w, char *detail, size_t detail_len)
{
    pthread_mutex_lock(&w->health_mu);
    bool up = w->db_up;
    snprintf(detail, detail_len, "%s", up ? "last write succeeded" : w->last_error);
    pthread_mutex_unlock(&w->health_mu);
    return up;
}

long batch_writer_stalled_ms(batch_writer *w)
{
    uint64_t now = time_mono_ns(), since = 0;
    pthread_mutex_lock(&w->mu);
    pthread_mutex_lock(&w->health_mu);
    if (!w->db_up) {
        since = w->failing_since_ns;
    } else {
        uint64_t oldest = w->flushing ? w->flush_oldest_ns : UINT64_MAX;
        if (w->head && w->head->submitted_ns < oldest) oldest = w->head->submitted_ns;
        if (oldest != UINT64_MAX) since = oldest > w->last_commit_ns ? oldest : w->last_commit_ns;
    }
    pthread_mutex_unlock(&w->health_mu);
    pthread_mutex_unlock(&w->mu);
    return since && now > since ? (long)((now - since) / 1000000ull) : 0;
}

/* Unlinks b from the pending list (it is there: not in flight, not final). */
static void unlink_locked(batch_writer *w, write_batch *b)
{
    write_batch *prev = NULL;
    for (write_batch *x = w->head; x && x != b; x = x->next) prev = x;
    if (prev)
        prev->next = b->next;
    else if (w->head == b)
        w->head = b->next;
    if (w->tail == b) w->tail = prev;
    w->pending_rows -= b->open;
    b->next = NULL;
}

void batch_writer_withdraw(batch_writer *w, write_batch *b)
{
    pthread_mutex_lock(&w->mu);
    if (b->open > 0 && !b->in_flight) {
        unlink_locked(w, b);
        for (size_t i = 0; i < b->n_rows; i++)
            if (b->rows[i].status == WRITE_PENDING) b->rows[i].status = WRITE_WITHDRAWN;
        b->open = 0;
    }
    /* In a flush attempt: settle_locked() withdraws what that attempt did not commit. */
    b->withdraw = true;
    while (b->open > 0) pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

bool batch_writer_wait_or_withdraw(batch_writer *w, write_batch *b, long timeout_ms,
                                   long stall_limit_ms)
{
    uint64_t deadline = time_mono_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    for (;;) {
        long slice = 100;
        if (batch_writer_wait(w, b, slice)) return true;
        if (stall_limit_ms >= 0 && batch_writer_stalled_ms(w) >= stall_limit_ms) {
            batch_writer_withdraw(w, b);
            return true;
        }
        if (time_mono_ns() >= deadline) return false;
    }
}

void batch_writer_begin_stop(batch_writer *w, uint64_t stop_deadline_ns)
{
    pthread_mutex_lock(&w->mu);
    if (!w->stopping || stop_deadline_ns < w->stop_deadline_ns)
        w->stop_deadline_ns = stop_deadline_ns;
    w->stopping = true;
    pthread_cond_broadcast(&w->work);
    pthread_mutex_unlock(&w->mu);
}

void batch_writer_stop(batch_writer *w, uint64_t stop_deadline_ns)
{
    if (!w) return;
    if (w->thread_started) {
        batch_writer_begin_stop(w, stop_deadline_ns);
        pthread_mutex_lock(&w->mu);
        w->exiting = true;
        pthread_cond_broadcast(&w->work);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    db_conn_free(w->db);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->health_mu);
    free(w);
}
