/*
 * ingress — the producer's WebSocket ingress on libwebsockets: one service thread owns every
 * connection, validates each frame and answers it exactly once.
 *
 * Contract:
 *  - ingress_new() creates the lws context and listens on settings ws_bind:ws_port (0 = any free
 *    port; ingress_port() tells which), through ws_listen.h (keepalive, handshake deadline, lws
 *    log routing). Upgrades are accepted only on /chat/{roomId} with a valid room id (room.h;
 *    any room: its messages go to the queue shard room_shard(roomId, queue_shards)); anything
 *    else gets an HTTP 4xx at the handshake (404 bad path, 400 bad room id, naming the rule), a
 *    full server 503.
 *  - Identity (ingress_set_auth() with a non-NULL auth, CHATFLOW_AUTH on): the handshake also
 *    needs a token (auth.h): none or an invalid one -> 401, one that does not allow the room (or
 *    whose subject is not a userId) -> 403, the jwt reason as the body. The connection keeps the
 *    token's subject and name: a frame with another userId is answered FORBIDDEN_USER, the
 *    token's name replaces the frame's username, the rate limiter counts against the subject.
 *    When the token's exp (plus leeway) passes, the connection is closed with 4401 "token
 *    expired" once its answers are written (reads stop at that moment).
 *  - Frames are reassembled (ws_frame.h) up to max_frame_bytes; each complete text frame is parsed
 *    (message.h), rate limited, and handed to the publisher; every frame gets one answer frame
 *    (ack or error). Connections are referred to across threads by (slot, generation) only.
 *  - Results come back on ingress_results(); the publisher calls ingress_wake() (which calls
 *    lws_cancel_service, the only call other threads make into lws) after pushing some, and they
 *    are drained on LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 *  - Reads of a connection pause (lws_rx_flow_control) while it has max_inflight_per_connection
 *    unanswered frames or the process has max_inflight_total, and resume as answers are written.
 *  - A frame that arrives while its connection has max_inflight_per_connection unanswered frames
 *    (RATE_LIMITED) or the process has max_inflight_total (QUEUE_UNAVAILABLE) is refused with that
 *    error answer and never counted, so the caps hold exactly — and the publisher never holds
 *    more than max_inflight_total requests, which is what sizes the results queue.
 *  - ingress_request_stop() may be called from any thread (e.g. the signal thread). The service
 *    thread then refuses new handshakes (503), answers new frames QUEUE_UNAVAILABLE, tells the
 *    publisher to answer what it holds by the end of the drain (publisher_drain_by), waits until
 *    the publisher holds nothing for it, writes the remaining answers, closes every connection
 *    with 1001 "going away" and returns from ingress_run() — all before
 *    ingress_stop_deadline_ns() minus a reserve (a third of the budget, at most 3 s) that is left
 *    for the publisher's end and the exit.
 *  - ingress_shed() may be called from any thread (lb_watch.h: the load balancer drains this
 *    task). The service thread then stops reading the connections open at that moment and
 *    closes each with 1001 "going away" once every frame it read is answered; it goes on
 *    serving, and accepting, until a stop.
 *  - ingress_run() runs the service loop on the calling thread until then; the loop is watched
 *    (watchdog "lws-service", a timer wakes it every second).
 */
#ifndef CHATFLOW_PRODUCER_INGRESS_H
#define CHATFLOW_PRODUCER_INGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "breaker.h"
#include "publisher.h"
#include "settings.h"
#include "workqueue.h"

typedef struct ingress ingress;

ingress *ingress_new(const producer_settings *s, circuit_breaker *breaker, char *err,
                     size_t err_len);
/* The queue the publisher answers on (owned by the ingress). */
workqueue *ingress_results(ingress *in);
void ingress_attach_publisher(ingress *in, publisher *p);
/* Before ingress_run(); a NULL auth (the default) checks no tokens. Borrowed. */
void ingress_set_auth(ingress *in, const auth *a);
/* Thread-safe: wakes the service thread to drain the results (ctx is the ingress). */
void ingress_wake(void *ctx);
int ingress_port(const ingress *in);
void ingress_run(ingress *in);
void ingress_request_stop(ingress *in);
/* Thread-safe; ctx is the ingress (an lb_watch on_draining callback). */
void ingress_shed(void *ctx);
bool ingress_stopping(const ingress *in);
/* Monotonic time (time_mono_ns) by which the process must have exited: the first
 * ingress_request_stop() plus stop_timeout_s (from now if no stop was requested). */
uint64_t ingress_stop_deadline_ns(const ingress *in);
void ingress_free(ingress *in);

#endif
