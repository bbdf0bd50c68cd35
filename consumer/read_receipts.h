/*
 * read_receipts — stores members' read positions (READ frames, docs/protocol.md §2.2) in
 * PostgreSQL's read_positions table, off the WebSocket thread.
 *
 * Contract:
 *  - read_receipts_record() is called by the WebSocket service thread when a member's position
 *    moved forward; it copies the room id (room.h) and the position into a bounded queue and
 *    never blocks. false when the queue is full or room is not a room id (the position is then
 *    not stored; counted as dropped).
 *  - One writer thread with its own connection takes what is queued, keeps the highest position
 *    per (room, user), and upserts them in one statement in (room, user) order (room ids compared
 *    as bytes, then user ids); the stored
 *    position never moves backwards (GREATEST). A failed write is retried with backoff (100 ms
 *    doubling to 5 s) while newer positions keep coalescing into the same pending set (at most
 *    READ_RECEIPTS_PENDING_MAX entries; beyond that new ones are dropped and counted).
 *  - read_receipts_stop() writes what is pending (one attempt, bounded by the statement timeout),
 *    joins the thread and frees everything.
 *  - Metrics: chatflow_read_receipts_total{result="stored"|"dropped"}, and
 *    chatflow_read_receipt_write_failures_total.
 */
#ifndef CHATFLOW_CONSUMER_READ_RECEIPTS_H
#define CHATFLOW_CONSUMER_READ_RECEIPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define READ_RECEIPTS_PENDING_MAX 65536

typedef struct read_receipts read_receipts;

read_receipts *read_receipts_start(const char *database_url, long statement_timeout_ms, char *err,
                                   size_t err_len);
bool read_receipts_record(read_receipts *r, const char *room, uint32_t user_id, const char *seq);
void read_receipts_stop(read_receipts *r);

#endif
