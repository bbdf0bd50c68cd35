/*
 * batch_writer — group-committed, idempotent writes of received messages to PostgreSQL.
 *
 * Contract:
 *  - One writer thread owns one PostgreSQL connection. Pollers hand it rows and wait for the
 *    outcome; the poller deletes from SQS only rows whose status is WRITE_COMMITTED.
 *  - Group commit (SPEC §5): a flush starts when the pending rows reach batch_size, or as soon as
 *    every poller that holds messages has submitted them (nothing more can arrive: a FIFO group
 *    stays locked until its messages are deleted), or when the oldest pending row has waited
 *    max_wait_ms. A poller announces that it holds messages with batch_writer_hold() right after
 *    a receive returns some, and stops holding when it submits (or calls batch_writer_unhold()).
 *  - A flush is one transaction: rows go into messages with ON CONFLICT (message_id) DO NOTHING,
 *    and only the rows really inserted are aggregated per (user_id, room_id) into user_activity,
 *    in sorted key order — so a redelivered message changes nothing.
 *  - Failures: a lost connection or a transient error backs off (100 ms doubling up to
 *    max_backoff_ms) and retries the same rows; /health/ready's "postgres" check turns DOWN.
 *    Each failed flush counts one attempt per row; at max_attempts the row is WRITE_FAILED with
 *    the reason (the poller sends it to the DLQ). A row the database rejects on its own (a data
 *    error, found by retrying the failed batch row by row) fails at once.
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

typedef enum { WRITE_PENDING = 0, WRITE_COMMITTED, WRITE_FAILED, WRITE_ABANDONED } write_status;

typedef struct {
    /* Input, filled by write_row_init(). */
    char message_id[UUID_STR_BUF];
    long room_id;
    long user_id;
    char username[CHAT_USERNAME_MAX + 1];
    char message_text[CHAT_TEXT_BUF];
    char message_type[8];
    char server_id[64];
    char client_ip[64];
    char sequence_number[64];              /* "" -> NULL */
    char client_timestamp[ISO8601_BUF];    /* normalised to UTC */
    char received_at[ISO8601_BUF];
    /* Outcome, written by the writer thread. */
    write_status status;
    int attempts;
    char failure[256];
} write_row;

/* A poller's submission: it owns the rows and must keep them until batch_writer_wait() says done. */
typedef struct write_batch {
    write_row *rows;
    size_t n_rows;
    /* Writer bookkeeping. */
    size_t open;
    uint64_t submitted_ns;
    struct write_batch *next;
} write_batch;

typedef struct {
    const char *database_url;
    long statement_timeout_ms;
    size_t batch_size;
    long max_wait_ms;
    int max_attempts;
    long max_backoff_ms;
    bool use_unnest;            /* false: COPY into a staging table */
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
/* Last database outcome (cached; for /health/ready). */
bool batch_writer_db_up(batch_writer *w, char *detail, size_t detail_len);
void batch_writer_begin_stop(batch_writer *w, uint64_t stop_deadline_ns);
void batch_writer_stop(batch_writer *w, uint64_t stop_deadline_ns);

#endif
