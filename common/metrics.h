/*
 * metrics — Prometheus counters, gauges and histograms, rendered as text exposition 0.0.4.
 *
 * Contract:
 *  - Series are registered once (usually at start-up, or the first time a label value is seen)
 *    under the registry's mutex and return a stable pointer that lives until metrics_reset()
 *    (tests only) or process exit. Registering the same name + labels again returns the same
 *    series. A name registered with a different type or help is a programming error: it aborts.
 *  - Updates on a series pointer are lock-free atomics: safe from any thread, no global lock.
 *  - labels is a pre-formatted, already-escaped label set without braces, e.g.
 *    "action=\"SendMessageBatch\",result=\"ok\"", or NULL/"" for none. metrics_label_escape()
 *    escapes a value (\\, \", \n) for it.
 *  - metrics_render() returns a malloc'd text body (caller frees): per family one # HELP and one
 *    # TYPE line, then every series; histograms as _bucket{le=...} (cumulative, with +Inf),
 *    _sum and _count. Families appear in registration order.
 *  - Histogram sums are kept in micro-units (value * 1e6, rounded) in an atomic integer, so they
 *    are exact for the seconds and sizes this product observes.
 */
#ifndef CHATFLOW_METRICS_H
#define CHATFLOW_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct metric_counter metric_counter;
typedef struct metric_gauge metric_gauge;
typedef struct metric_histogram metric_histogram;

metric_counter *metrics_counter(const char *name, const char *help, const char *labels);
metric_gauge *metrics_gauge(const char *name, const char *help, const char *labels);
/* bounds: strictly increasing upper bounds, without +Inf; copied. */
metric_histogram *metrics_histogram(const char *name, const char *help, const char *labels,
                                    const double *bounds, size_t n_bounds);

void metric_counter_add(metric_counter *c, uint64_t n);
static inline void metric_counter_inc(metric_counter *c) { metric_counter_add(c, 1); }
uint64_t metric_counter_value(const metric_counter *c);

void metric_gauge_set(metric_gauge *g, double v);
void metric_gauge_add(metric_gauge *g, double delta);
double metric_gauge_value(const metric_gauge *g);

/* A counter or gauge whose value sample(ctx) returns at each render — figures the process keeps
 * anyway (CPU time, memory, file descriptors). sample runs on the rendering thread under the
 * registry's lock: it must be quick and must not register series. */
typedef double (*metrics_sample_fn)(void *ctx);
void metrics_sampled(const char *name, const char *help, const char *labels, bool counter,
                     metrics_sample_fn sample, void *ctx);

void metric_histogram_observe(metric_histogram *h, double v);
uint64_t metric_histogram_count(const metric_histogram *h);

/* Standard bucket sets. */
extern const double METRICS_LATENCY_BUCKETS[]; /* 0.0005 s .. 10 s */
extern const size_t METRICS_LATENCY_BUCKETS_N;
extern const double METRICS_SIZE_BUCKETS[]; /* 1 .. 5000 */
extern const size_t METRICS_SIZE_BUCKETS_N;

char *metrics_render(void);
/* Writes into buf (at most len-1 chars + NUL) the escaped form of value. */
void metrics_label_escape(const char *value, char *buf, size_t len);
/* Drops every series. Only for tests: invalidates every pointer handed out. */
void metrics_reset(void);

#endif
