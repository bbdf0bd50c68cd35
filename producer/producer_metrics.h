/*
 * producer_metrics — the WebSocket side's Prometheus series (protocol.md §6 names), registered
 * once.
 *
 * Contract:
 *  - producer_metrics_init() registers every series up front, so /metrics shows them (at 0)
 *    before the first frame; later calls return the same struct.
 *  - The publisher registers its own batch series; the SQS client counts requests.
 *  - Pointers stay valid for the life of the process (metrics.h rules).
 */
#ifndef CHATFLOW_PRODUCER_METRICS_H
#define CHATFLOW_PRODUCER_METRICS_H

#include "message.h"
#include "metrics.h"

/* The {result} of chatflow_typing_frames_total: what became of a valid TYPING frame. */
typedef enum {
    TYPING_PUBLISHED,
    TYPING_THROTTLED,
    TYPING_DROPPED,
    TYPING_FAILED,
    TYPING_RESULTS
} typing_result;

typedef struct {
    metric_gauge *connections_active;
    metric_counter *connections_total;
    metric_counter *handshakes_refused;
    metric_counter *received[CHAT_STATUS_LAST + 1]; /* by chat_status */
    metric_histogram *ack_latency;
    metric_gauge *inflight;
    metric_counter *frames_paused;
    metric_gauge *breaker_state;
    metric_counter *late_answers_dropped;
    metric_counter *typing[TYPING_RESULTS];
} producer_metrics;

producer_metrics *producer_metrics_init(void);
/* The {result} label of chatflow_messages_received_total for a status: "ok", "invalid_json", ... */
const char *producer_result_label(chat_status s);

#endif
