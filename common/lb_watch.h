/*
 * lb_watch — notices that the load balancer has started draining this task, so the service can
 * move its WebSocket clients before the load balancer cuts them.
 *
 * Why: ECS stops a task behind an ALB by deregistering its targets, waiting out the target
 * group's deregistration delay and only then sending SIGTERM, and the ALB closes every connection
 * still open when the delay ends. A drain that begins at SIGTERM therefore never reaches a client
 * behind the ALB: they are cut, not closed. Nothing tells a task it was deregistered, so it asks.
 *
 * Contract:
 *  - lb_watch_start() starts one thread that calls ELBv2 DescribeTargetHealth (Query protocol:
 *    a form-encoded POST, Version 2015-12-01, SigV4 service "elasticloadbalancing") for one
 *    target, target_ip:target_port in target_group_arn: at once, then every poll_s seconds.
 *    target_ip NULL or "" means the task's own IPv4 address, read from the ECS task metadata
 *    endpoint (the container document at $ECS_CONTAINER_METADATA_URI_V4, its first network),
 *    tried again at each poll until it is known.
 *  - When an answer says the target is draining ("draining", or "unhealthy.draining") and the
 *    previous answer did not, on_draining(ctx) is called on the watcher thread: once per
 *    deregistration (a target registered again and deregistered again calls it again). It must
 *    be quick and thread-safe; the services set a flag and wake their lws loop.
 *  - A failed call (network, timeout, an HTTP error, an answer that does not describe the target)
 *    changes nothing: it is counted, logged when the outcome changes (not at every poll), and
 *    tried again at the next poll. Each call is bounded (connect 2 s, whole call 5 s).
 *  - Metrics: chatflow_lb_target_checks_total{result="ok"|"error"},
 *    chatflow_lb_target_draining (1 while the last answer said draining) and
 *    chatflow_lb_target_drains_total (on_draining calls).
 *  - lb_watch_start_configured() is lb_watch_start() from the services' common settings.
 *  - lb_watch_stop() ends a call in progress within about a second, joins the thread and frees
 *    everything; NULL is accepted.
 *  - lb_describe_body() and lb_parse_target_state() are the request and answer formats, exported
 *    for the unit tests.
 */
#ifndef CHATFLOW_LB_WATCH_H
#define CHATFLOW_LB_WATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "credentials.h"

typedef struct {
    const char *region;   /* required */
    const char *endpoint; /* NULL/"" -> https://elasticloadbalancing.{region}.amazonaws.com */
    credentials_provider *credentials; /* required; shared, not owned */
    const char *target_group_arn;      /* required */
    const char *target_ip;             /* NULL/"" -> from the ECS task metadata endpoint */
    int target_port;                   /* the port the target is registered with */
    int poll_s;                        /* >= 1 */
    void (*on_draining)(void *ctx);
    void *ctx;
} lb_watch_config;

typedef struct lb_watch lb_watch;

/* Copies what it needs from cfg. NULL with err set on a bad endpoint or no thread. */
lb_watch *lb_watch_start(const lb_watch_config *cfg, char *err, size_t err_len);
void lb_watch_stop(lb_watch *w);

/* The services' start: a watcher from the common settings (CHATFLOW_LB_*, the ELB endpoint, the
 * region) for the target port's drain. true with *out NULL when CHATFLOW_LB_TARGET_GROUP_ARN is
 * empty (not watched); false with err set when it cannot start. */
bool lb_watch_start_configured(const struct chatflow_common_settings *s,
                               credentials_provider *credentials, int target_port,
                               void (*on_draining)(void *ctx), void *ctx, lb_watch **out, char *err,
                               size_t err_len);

/* The DescribeTargetHealth form body for one target, malloc'd; NULL when out of memory. */
char *lb_describe_body(const char *target_group_arn, const char *ip, int port);

/* Reads the TargetHealth State of ip:port from a DescribeTargetHealth answer into state
 * ("healthy", "draining", ...). false with err set when the answer is an error document or does
 * not describe that target. */
bool lb_parse_target_state(const char *xml, const char *ip, int port, char *state, size_t state_len,
                           char *err, size_t err_len);

/* True for the states in which the load balancer is draining the target. */
bool lb_state_is_draining(const char *state);

#endif
