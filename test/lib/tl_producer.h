/*
 * tl_producer — chatflow-producer as a child process of a test, and the well-behaved client's
 * side of its protocol. Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_producer_start() starts the producer on ports picked by the kernel (0, 127.0.0.1), output
 *    to log_path, env ("NAME=value", NULL-terminated) added, and waits for its
 *    "listening ws=<p> admin=<p>" line (10 s; 60 s under a wrapper); false, noted, when it
 *    exited or did not get there. tl_producer_stop() is tl_proc_stop() on it.
 *  - tl_producer_metric() is tl_metric() on its admin port with the 5 s limit of tl_http_get().
 *  - tl_producer_open_room() opens ws://127.0.0.1:<ws_port>/chat/<room> (5 s), room put in the
 *    path as given (a test may pass an invalid or percent-encoded id on purpose); NULL when
 *    refused, *status then the handshake's HTTP status (status may be NULL).
 *  - tl_frame() builds a valid client frame (clientMessageId optional) as a malloc'd string;
 *    tl_json_field() copies a string field of a JSON object text into out ("" when absent) and
 *    returns out; tl_ws_send_str() queues a NUL-terminated text frame.
 */
#ifndef CHATFLOW_TL_PRODUCER_H
#define CHATFLOW_TL_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "wsclient.h"

typedef struct {
    pid_t pid;
    int ws_port;
    int admin_port;
    char log_path[1024];
} tl_producer;

bool tl_producer_start(tl_producer *p, const char *log_path, const char *const *env);
int tl_producer_stop(tl_producer *p, int sig, int timeout_ms, bool *in_time);
double tl_producer_metric(const tl_producer *p, const char *name, const char *filter);
wsc_conn *tl_producer_open_room(wsc_ctx *ctx, const tl_producer *p, const char *room, int *status);

char *tl_frame(int user, const char *text, const char *client_message_id);
const char *tl_json_field(const char *json, const char *key, char *out, size_t len);
bool tl_ws_send_str(wsc_conn *c, const char *text);

#endif
