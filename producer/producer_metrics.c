/* producer_metrics — registration of the producer's series (contract in producer_metrics.h). */
#include "producer_metrics.h"

#include <stdio.h>

static producer_metrics M;
static int initialised;

const char *producer_result_label(chat_status s)
{
    switch (s) {
    case CHAT_OK: return "ok";
    case CHAT_INVALID_JSON: return "invalid_json";
    case CHAT_VALIDATION_ERROR: return "validation_error";
    case CHAT_MESSAGE_TOO_LARGE: return "too_large";
    case CHAT_RATE_LIMITED: return "rate_limited";
    case CHAT_QUEUE_UNAVAILABLE: return "queue_unavailable";
    case CHAT_QUEUE_ERROR: return "queue_error";
    case CHAT_FORBIDDEN_USER: return "forbidden_user";
    }
    return "unknown";
}

producer_metrics *producer_metrics_init(void)
{
    /* Called once from main before any thread starts; the flag only avoids re-registering. */
    if (initialised) return &M;
    initialised = 1;
    M.connections_active =
        metrics_gauge("chatflow_ws_connections_active", "Open WebSocket connections.", NULL);
    M.connections_total =
        metrics_counter("chatflow_ws_connections_total", "WebSocket connections accepted.", NULL);
    M.handshakes_refused =
        metrics_counter("chatflow_ws_handshakes_refused_total",
                        "WebSocket handshakes refused (bad path, room, limit, stopping).", NULL);
    for (int s = CHAT_OK; s <= CHAT_STATUS_LAST; s++) {
        char labels[64];
        snprintf(labels, sizeof labels, "result=\"%s\"", producer_result_label((chat_status)s));
        M.received[s] = metrics_counter("chatflow_messages_received_total",
                                        "Client frames by the answer they got.", labels);
    }
    M.ack_latency = metrics_histogram("chatflow_ack_latency_seconds",
                                      "Frame received to ack queued (SQS accepted the message).",
                                      NULL, METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    M.inflight =
        metrics_gauge("chatflow_inflight_messages", "Frames received and not answered yet.", NULL);
    M.frames_paused =
        metrics_counter("chatflow_ws_frames_paused_total",
                        "Times a connection's reads were paused by the in-flight caps.", NULL);
    M.breaker_state = metrics_gauge("chatflow_circuit_breaker_state",
                                    "SQS circuit breaker: 0 closed, 1 half-open, 2 open.", NULL);
    M.late_answers_dropped =
        metrics_counter("chatflow_answers_dropped_total",
                        "Answers whose connection had closed before they were ready.", NULL);
    /* published: SQS took it; throttled: within the typing interval of the connection's last one;
     * dropped: could not be published now (stopping, breaker open, queue unknown, busy);
     * failed: SQS did not take it before the deadline. */
    static const char *const typing_labels[TYPING_RESULTS] = {
        "result=\"published\"",
        "result=\"throttled\"",
        "result=\"dropped\"",
        "result=\"failed\"",
    };
    for (int r = 0; r < TYPING_RESULTS; r++)
        M.typing[r] = metrics_counter(
            "chatflow_typing_frames_total",
            "Valid TYPING frames by what became of them (never answered).", typing_labels[r]);
    return &M;
}
