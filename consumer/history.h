/*
 * history — the broadcaster's replay source: a room's stored messages after a sequence number.
 *
 * Contract:
 *  - history_read() is a broadcast_history_fn (broadcast.h). It owns one PostgreSQL connection
 *    (its own, never the writer's), reconnects when it was lost, and serialises callers with a
 *    mutex (the broadcaster calls it from its replay worker).
 *  - since_seq must be a decimal number (else false, err set); rows come in ascending
 *    sequence_number order (numeric comparison), at most `limit` of them, from the
 *    (room_id, sequence_number) index.
 *  - Sequence numbers come back as SQS wrote them: at least 20 digits, zero-padded (numeric storage
 *    drops the zeros), so replayed and live events carry the same text.
 *  - Timestamps come back as ISO-8601 UTC with milliseconds: the client timestamp normalised as it
 *    was stored, and received_at as serverTimestamp (the same value live events carry).
 */
#ifndef CHATFLOW_CONSUMER_HISTORY_H
#define CHATFLOW_CONSUMER_HISTORY_H

#include <stdbool.h>
#include <stddef.h>

#include "broadcast.h"

typedef struct history history;

history *history_new(const char *database_url, long statement_timeout_ms);
void history_free(history *h);
bool history_read(void *ctx, long room, const char *since_seq, size_t limit,
                  void (*emit)(void *emit_ctx, const broadcast_history_row *row), void *emit_ctx,
                  char *err, size_t err_len);

#endif
