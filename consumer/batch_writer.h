/*
 * batch_writer — group-committed, idempotent writes of received messages to PostgreSQL.
 *
 * Contract:
 *  - One writer thread owns one PostgreSQL connection. Pollers hand it rows and wait for the
 *    outcome; the poller deletes from SQS only rows whose status is WRITE_COMMITTED.
 *  - Group commit (docs/consumer.md): a flush starts when the pending rows reach batch_size, or as
 * soon as every poller that holds messages has submitted them (nothing more can arrive: a FIFO
 * group stays locked until its messages are deleted), or when the oldest pending row has waited
 *    max_wait_ms. A poller announces that it holds messages with batch_writer_hold() right after
 *    a receive returns some, and stops holding when it submits (or calls batch_writer_unhold()).
 *  - A flush is one transaction: rows go into messages with ON CONFLICT (message_id) DO NOTHING,
 *    and only the rows really inserted are aggregated per (user_id, room_id) into user_activity,
 *    in sorted key order — so a redelivered message changes nothing.
 *  - Failures are the database's unless a row fails alone. A batch the database rejects with a
 *    data error (db.h: SQLSTATE class 22, or 23) is retried row by row; a row that fails alone
 *    with a data error is WRITE_FAILED with the reason (the poller dead-letters it). Every other
 *    failure — connection, read-only, missing table, permissions, disk full, timeouts, failures
 *    while connecting or preparing — is retried with backoff (100 ms doubling up to
 *    max_backoff_ms) for as long as it lasts: it never fails a row. It is counted in
 *    chatflow_db_failures_total{class}, logged once per change of state, and while it lasts the
 *    writer probes the database by itself (the real flush statement with no rows: it fails on a
 *    read-only database, a missing table or a revoked grant exactly like a real flush).
 *  - Stall and withdrawal (for the spill path, spill.h): batch_writer_stalled_ms() tells how long
 *    the writer has been unable to commit — since its first failure in a row, or, while it is
 *    healthy, since the oldest outstanding row was submitted if nothing committed after that.
 *    batch_writer_withdraw() takes a batch back: rows not committed become WRITE_WITHDRAWN (a
 *    batch inside a flush attempt is waited for; that attempt is bounded by the statement and
 *    connect timeouts). batch_writer_wait_or_withdraw() combines a wait with the withdrawal once
 *    the stall reaches a limit.
 *  - batch_writer_begin_stop() switches to shutdown: pending rows are flushed at once (no
 *    group-commit wait) and retried until stop_deadline_ns at the latest; rows still unwritten
 *    then are WRITE_ABANDONED (the poller releases them to SQS). Every submitted batch reaches a
 *    final state, so no poller waits past the deadline. batch_writer_stop() does the same, then
 *    ends the thread once nothing is pending and frees the writer: call it after the pollers have
 *    stopped submitting.
 */
#ifndef CHATFLOW_CONSUMER_BATCH_WRITER_H
#define CHATFLOW_CONSUMER_BATCH_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

typedef enum {
    WRITE_PENDING = 0,
    WRITE_COMMITTED,
    WRITE_FAILED,    /* the database refuses this row on its own: dead-letter it */
    WRITE_ABANDONED, /* not written by the stop deadline: release it to SQS */
    WRITE_WITHDRAWN, /* taken back by its submitter (batch_writer_withdraw) */
} write_status;

typedef struct {
    /* Input, filled by write_row_init(). */
    char message_id[UUID_STR_BUF];
    char room_id[ROOM_ID_BUF];
    long user_id;
    char username[CHAT_USERNAME_MAX + 1];
    char message_text[CHAT_TEXT_BUF];
    char message_type[8];
    char server_id[64];
    char client_ip[64];
    char sequence_number[64];           /* "" -> NULL */
    char client_timestamp[ISO8601_BUF]; /* normalised to UTC */
    char received_at[ISO8601_BUF];
    /* Outcome, written by the writer thread. */
    write_status status;
    int attempts;
    char failure[256];
} write_row;

/* A poller's submission: it owns the rows and must keep them until batch_writer_wait() says done.
 */
typedef struct write_batch {
    write_row *rows;
    size_t n_rows;
    /* Writer bookkeeping. */
    size_t open;
    uint64_t submitted_ns;
    bool in_flight; /* inside a flush attempt */
    bool withdraw;  /* withdrawn while in flight: settle, do not requeue */
    struct write_batch *next;
} write_batch;

typedef struct {
    const char *database_url;
    long statement_timeout_ms;
    size_t batch_size;
    long max_wait_ms;
    long max_backoff_ms;
    bool use_unnest; /* false: COPY into a staging table */
} batch_writer_config;

typedef struct batch_writer batch_writer;

/* Fills a row from a validated message; false (err set) when a timestamp does not parse. */
bool write_row_init(write_row *row, const chat_message *m, const char *sequence_number, char *err,
                    size_t err_len);

batch_writer *batch_writer_start(const batch_writer_config *cfg, char *err, size_t err_len);
void batch_writer_hold(batch_writer *w);
void batch_writer_unhold(batch_writer *w);
/* Hands b to the writer (and ends this poller's hold). n_rows may be 0 (done at once). */
void batch_writer_submit(batch_writer *w, write_batch *b);
/* Waits up to timeout_ms; true when every row of b has a final status. */
bool batch_writer_wait(batch_writer *w, write_batch *b, long timeout_ms);
/* Last database outcome (cached): true while the last flush or probe succeeded. */
bool batch_writer_db_up(batch_writer *w, char *detail, size_t detail_len);
/* How long the writer has been unable to commit (0: healthy, or nothing outstanding). */
long batch_writer_stalled_ms(batch_writer *w);
/* Takes b back; on return every row of b is final (COMMITTED, FAILED or WITHDRAWN). */
void batch_writer_withdraw(batch_writer *w, write_batch *b);
/* Waits up to timeout_ms for b to be final; withdraws it once the writer has been stalled for
 * stall_limit_ms (< 0: never). True when every row of b is final. */
bool batch_writer_wait_or_withdraw(batch_writer *w, write_batch *b, long timeout_ms,
                                   long stall_limit_ms);
void batch_writer_begin_stop(batch_writer *w, uint64_t stop_deadline_ns);
void batch_writer_stop(batch_writer *w, uint64_t stop_deadline_ns);

#endif
