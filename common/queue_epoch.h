/*
 * queue_epoch — a message's position: its queue's incarnation, then SQS's sequence number.
 *
 * Why: SQS FIFO sequence numbers only grow within one life of a queue. A queue deleted and made
 * again (AWS), or an emulator restarted (fauxqs, at every start), numbers from the beginning
 * while PostgreSQL keeps its rows, so raw sequence numbers would sort a room's new conversation
 * among (or above) its old one and a since= from the earlier life would skip everything new.
 *
 * Contract:
 *  - A queue's epoch is its CreatedTimestamp (seconds since 1970, GetQueueAttributes): every
 *    process that asks gets the same value, and a queue made again later gets a larger one.
 *  - queue_position() writes epoch followed by the SQS number zero-padded to SQS_SEQNUM_DIGITS —
 *    the number epoch * 10^39 + seq, so positions order by epoch, then by SQS's order, and stay
 *    one decimal string that seqnum_cmp(), PostgreSQL numeric and the clients' BigInt all order.
 *    A position older than epochs (SQS's bare number, a row stored before) is of epoch 0.
 *  - queue_epoch tracks one queue for one thread (no locking); a zeroed one (calloc) is the
 *    initial state: epoch not read yet. queue_epoch_position() composes a
 *    received or sent message's position, reading the epoch first (one GetQueueAttributes,
 *    bounded by the client's request timeout) when it is not known yet, when a call on the queue
 *    failed since it was read (queue_epoch_mark_stale(): a queue cannot be made again without
 *    the calls on it failing meanwhile, unless nothing called it), when it was read over
 *    QUEUE_EPOCH_MAX_AGE_S ago, or when the number looks like a new life of the queue, which
 *    numbers from the start (fauxqs: 1):
 *      QUEUE_SEQ_SENT — SQS just assigned it to a send, and this thread is the queue's only
 *        sender here, so within one life each is above the last: at or below the highest seen
 *        (a dead queue's, or a deduplicated resend's original, which only costs the read);
 *      QUEUE_SEQ_FIRST_RECEIVE — handed out for the first time (ApproximateReceiveCount 1):
 *        messages of other groups may come later with lower numbers, so only one at or below the
 *        lowest seen counts (it lowers the mark when the epoch is unchanged); a receiver relies
 *        on its failed receives above all, and a long poll is always in flight;
 *      QUEUE_SEQ_REDELIVERY — received before: its number is old by nature; no read.
 *  - When the epoch cannot be read it returns false with the reason: the caller keeps the
 *    message back (a consumer leaves it to come back) rather than guess. After a failed read the
 *    next one waits QUEUE_EPOCH_RETRY_MS (calls meanwhile fail at once), so a refused or failing
 *    GetQueueAttributes does not double the calls on SQS.
 *  - Each change of a queue's epoch is logged and counted in
 *    chatflow_queue_epoch_changes_total (a queue made again under a running service).
 */
#ifndef CHATFLOW_QUEUE_EPOCH_H
#define CHATFLOW_QUEUE_EPOCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "seqnum.h"
#include "sqs.h"

#define QUEUE_EPOCH_MAX_AGE_S 300
#define QUEUE_EPOCH_RETRY_MS 1000

typedef enum { QUEUE_SEQ_SENT, QUEUE_SEQ_FIRST_RECEIVE, QUEUE_SEQ_REDELIVERY } queue_seq_kind;

typedef struct {
    uint64_t epoch;           /* 0: not read yet */
    bool stale;               /* a call on the queue failed since it was read */
    uint64_t read_ns;         /* monotonic time of the last read */
    uint64_t retry_ns;        /* after a failed read: none before this */
    char failure[256];        /* why the last read failed */
    char lowest[SEQNUM_BUF];  /* lowest first-received SQS number in this epoch ("" none) */
    char highest[SEQNUM_BUF]; /* highest sent SQS number in this epoch ("" none) */
} queue_epoch;

void queue_epoch_mark_stale(queue_epoch *qe);

/* seq: SQS's SequenceNumber (1..SQS_SEQNUM_DIGITS digits). out: the position. False when seq is
 * not a sequence number or the epoch could not be read (err says which). */
bool queue_epoch_position(queue_epoch *qe, sqs_client *c, const char *queue_url, const char *seq,
                          queue_seq_kind kind, char out[SEQNUM_BUF], char *err, size_t err_len);

/* The position of seq in epoch (> 0). False when seq is not an SQS sequence number or the
 * result would not fit SEQNUM_MAX_DIGITS. */
bool queue_position(uint64_t epoch, const char *seq, char out[SEQNUM_BUF]);

/* One GetQueueAttributes CreatedTimestamp; 0 on failure (err says why). */
uint64_t queue_epoch_read(sqs_client *c, const char *queue_url, char *err, size_t err_len);

#endif
