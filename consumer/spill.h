/*
 * spill — live chat through a database outage, with nothing lost.
 *
 * Commit-before-delete keeps every message in its room queue until PostgreSQL has it. A room's
 * FIFO group stays locked while its messages are held, so with the database down each room would
 * broadcast one receive and then stall. The spill path unlocks it:
 *
 *  - Pollers (poller.c): when the batch writer has been unable to commit for
 *    CHATFLOW_DB_SPILL_AFTER_MS, a poller stops waiting for it. Each message it holds — already
 *    broadcast — is sent to the spill queue with spill_send(), and only the ones SQS took are then
 *    deleted from the room queue, so the group unlocks and the next messages flow live. A message
 *    the spill queue did not take stays in its room queue (it comes back after a short visibility).
 *  - The spill queue is a standard SQS queue (CHATFLOW_SPILL_QUEUE_NAME, default chatflow-db-spill,
 *    created by `chatflow-sqs setup`, no redrive). A spilled body is the envelope
 *        {"spillVersion":1,"sequenceNumber":"<the room queue's
 * SequenceNumber>","body":"<original>"} so the row keeps its original sequence number (and the
 * original keeps its receivedAt): it is stored exactly where it belongs in the room's order,
 * whenever it is stored.
 *  - The drainer (spill_drainer_start: one thread) receives from the spill queue only while the
 *    writer is healthy, hands the rows to the batch writer and deletes from the spill queue what
 *    was committed; a row the database refuses on its own goes to the DLQ (reason "db"). If the
 *    database fails again meanwhile, the drainer withdraws its batch like a poller and the messages
 *    return to the spill queue. Writes are idempotent (messages.message_id), so a message that was
 *    both spilled and committed, or spilled twice (a crash between the spill and the delete), is
 *    stored once.
 *  - Metrics: chatflow_spill_messages_total (spilled by pollers), chatflow_spill_drained_total
 *    (stored from the spill queue and deleted there), chatflow_spill_depth (messages in the spill
 *    queue, visible + in flight, refreshed by the drainer every few seconds).
 */
#ifndef CHATFLOW_CONSUMER_SPILL_H
#define CHATFLOW_CONSUMER_SPILL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "batch_writer.h"
#include "credentials.h"
#include "settings.h"
#include "sqs.h"

/* Registers the metric series; call once before threads start. */
void spill_metrics_init(void);

/* The envelope of one room-queue message (malloc'd; NULL on allocation failure). */
char *spill_envelope(const sqs_message *m);
/* Unwraps an envelope: *body and *sequence_number are malloc'd (caller frees). False (err set)
 * when it is not an envelope of a known version. */
bool spill_envelope_parse(const char *json, char **body, char **sequence_number, char *err,
                          size_t err_len);

/* Sends msgs[0..n) (n <= SQS_MAX_BATCH) to the spill queue; taken[i] tells which ones SQS took.
 * Returns how many were taken. */
size_t spill_send(sqs_client *sqs, const char *spill_url, const sqs_message *const *msgs, size_t n,
                  bool *taken);

typedef struct {
    const consumer_settings *settings;
    credentials_provider *credentials;
    batch_writer *writer;
    const char *spill_url;
    const char *dlq_url;
    const atomic_bool *stopping; /* the consumer's stop flag (also cuts the drainer's long poll) */
} spill_drainer_config;

typedef struct spill_drainer spill_drainer;

spill_drainer *spill_drainer_start(const spill_drainer_config *cfg, char *err, size_t err_len);
/* Joins the drainer until deadline_ns; true when it stopped (then it is freed). False: it is still
 * inside a call; the caller must not free what it uses (exit instead). */
bool spill_drainer_stop(spill_drainer *d, uint64_t deadline_ns);

#endif
