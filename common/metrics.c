/*
 * metrics — see metrics.h for the contract.
 *
 * Hand-written rather than a client library because no Prometheus C client is packaged in
 * Debian, and what we need is small: a registry under one mutex (touched only when a series is
 * registered or rendered) and C11 atomics on every update, so hot paths never share a lock.
 *
 * Histogram buckets are stored per bucket (not cumulative) and summed when rendered; _count is
 * rendered as the sum of the buckets so that it always equals the +Inf bucket, even while other
 * threads observe concurrently.
 */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0.2 is a bound so the 200 ms end-to-end objective (alerts.yml) is measured exactly, not
 * interpolated between 0.1 and 0.25. */
const double METRICS_LATENCY_BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.2,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t METRICS_LATENCY_BUCKETS_N = sizeof METRICS_LATENCY_BUCKETS / sizeof(double);
const double METRICS_SIZE_BUCKETS[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
const size_t METRICS_SIZE_BUCKETS_N = sizeof METRICS_SIZE_BUCKETS / sizeof(double);

typedef enum { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_type;

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric_counter {
    _Atomic uint64_t value;
};

struct metric_gauge {
    _Atomic uint64_t bits; /* the double's bit pattern, so set/add are plain atomics and CAS */
};

struct metric_histogram {
    double *bounds;
    size_t n_bounds;
    _Atomic uint64_t *buckets; /* n_bounds + 1: the last one is (last bound, +Inf) */
    _Atomic int64_t sum_micro; /* sum of observations * 1e6, rounded */
};

typedef struct series {
    struct series *next;
    char *labels;             /* "" when none */
    metrics_sample_fn sample; /* set: the value is read at each render (metrics_sampled()) */
    void *sample_ctx;
    union {
        struct metric_counter counter;
        struct metric_gauge gauge;
        struct metric_histogram histogram;
    } u;
} series;

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    metric_type type;
    series *first, *last;
} family;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static family *families_first, *families_last;

static _Noreturn void misuse(const char *what, const char *name)
{
    fprintf(stderr, "metrics: %s: %s\n", what, name);
    abort();
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) misuse("out of memory registering", "series");
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) misuse("out of memory registering", s);
    return p;
}

static bool valid_metric_name(const char *name)
{
    if (!name || !*name) return false;
    for (const char *p = name; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        bool digit = *p >= '0' && *p <= '9';
        if (!alpha && !(digit && p != name)) return false;
    }
    return true;
}

/* Caller holds registry_lock. */
static family *find_or_add_family(const char *name, const char *help, metric_type type)
{
    if (!valid_metric_name(name)) misuse("invalid metric name", name ? name : "(null)");
    if (!help) help = "";
    for (family *f = families_first; f; f = f->next) {
        if (strcmp(f->name, name) != 0) continue;
        if (f->type != type) misuse("registered again with another type", name);
        if (strcmp(f->help, help) != 0) misuse("registered again with another help", name);
        return f;
    }
    family *f = xcalloc(1, sizeof *f);
    f->name = xstrdup(name);
    f->help = xstrdup(help);
    f->type = type;
    if (families_last)
        families_last->next = f;
    else
        families_first = f;
    families_last = f;
    return f;
}

/* Caller holds registry_lock. Returns the series with exactly these labels, or NULL. */
static series *find_series(family *f, const char *labels)
{
    for (series *s = f->first; s; s = s->next)
        if (strcmp(s->labels, labels) == 0) return s;
    return NULL;
}

static void append_series(family *f, series *s)
{
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
}

static series *register_series(const char *name, const char *help, const char *labels,
                               metric_type type)
{
    family *f = find_or_add_family(name, help, type);
    series *s = find_series(f, labels ? labels : "");
    if (s) return s;
    s = xcalloc(1, sizeof *s);
    s->labels = xstrdup(labels ? labels : "");
    append_series(f, s);
    return s;
}

metric_counter *metrics_counter(const char *name, const char *help, const char *labels)
{
    pthread_mutex_lock(&registry_lock);
    series *s = register_series(name, help, labels, METRIC_COUNTER);
    pthread_mutex_unlock(&registry_lock);
    return &s->u.counter;
}

metric_gauge *metrics_gauge(const char *name, const char *help, const char *labels)
{
    pthread_mutex_lock(&registry_lock);
    series *s = register_series(name, help, labels, METRIC_GAUGE);
    pthread_mutex_unlock(&registry_lock);
    return &s->u.gauge;
}

void metrics_sampled(const char *name, const char *help, const char *labels, bool counter,
                     metrics_sample_fn sample, void *ctx)
{
    if (!sample) misuse("sampled series without a function", name ? name : "(null)");
    pthread_mutex_lock(&registry_lock);
    series *s = register_series(name, help, labels, counter ? METRIC_COUNTER : METRIC_GAUGE);
    s->sample = sample;
    s->sample_ctx = ctx;
    pthread_mutex_unlock(&registry_lock);
}

static bool same_bounds(const struct metric_histogram *h, const double *bounds, size_t n)
{
    return h->n_bounds == n && memcmp(h->bounds, bounds, n * sizeof(double)) == 0;
}

metric_histogram *metrics_histogram(const char *name, const char *help, const char *labels,
                                    const double *bounds, size_t n_bounds)
{
    if (!bounds || n_bounds == 0) misuse("histogram without bounds", name ? name : "(null)");
    for (size_t i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            misuse("histogram bounds must be finite and strictly increasing",
                   name ? name : "(null)");

    pthread_mutex_lock(&registry_lock);
    family *f = find_or_add_family(name, help, METRIC_HISTOGRAM);
    series *s = find_series(f, labels ? labels : "");
    if (s) {
        if (!same_bounds(&s->u.histogram, bounds, n_bounds))
            misuse("histogram registered again with other bounds", name);
    } else {
        s = xcalloc(1, sizeof *s);
        s->labels = xstrdup(labels ? labels : "");
        s->u.histogram.bounds = xcalloc(n_bounds, sizeof(double));
        memcpy(s->u.histogram.bounds, bounds, n_bounds * sizeof(double));
        s->u.histogram.n_bounds = n_bounds;
        s->u.histogram.buckets = xcalloc(n_bounds + 1, sizeof(_Atomic uint64_t));
        append_series(f, s);
    }
    pthread_mutex_unlock(&registry_lock);
    return &s->u.histogram;
}

/* ---- hot path: atomics only ---- */

void metric_counter_add(metric_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

uint64_t metric_counter_value(const metric_counter *c)
{
    return atomic_load_explicit(&((metric_counter *)c)->value, memory_order_relaxed);
}

static uint64_t double_bits(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

static double bits_double(uint64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

void metric_gauge_set(metric_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, double_bits(v), memory_order_relaxed);
}

void metric_gauge_add(metric_gauge *g, double delta)
{
    uint64_t old = atomic_load_explicit(&g->bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&g->bits, &old,
                                                  double_bits(bits_double(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

double metric_gauge_value(const metric_gauge *g)
{
    return bits_double(atomic_load_explicit(&((metric_gauge *)g)->bits, memory_order_relaxed));
}

/* Observations far beyond anything we measure are clamped so the conversion stays defined. */
static int64_t to_micro(double v)
{
    const double limit = 9.0e12; /* 9e18 micro-units: still inside int64 */
    if (v > limit) v = limit;
    if (v < -limit) v = -limit;
    return (int64_t)llround(v * 1e6);
}

void metric_histogram_observe(metric_histogram *h, double v)
{
    if (isnan(v)) return; /* belongs to no bucket and would poison _sum */
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_micro, to_micro(v), memory_order_relaxed);
}

uint64_t metric_histogram_count(const metric_histogram *h)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= h->n_bounds; i++)
        total += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    return total;
}

/* ---- rendering ---- */

/* Shortest form that reads back to the same double; Prometheus parses it with Go's ParseFloat. */
static void format_double(char *buf, size_t len, double v)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(buf, len, "%.15g", v);
        if (strtod(buf, NULL) != v) snprintf(buf, len, "%.17g", v);
    }
}

/* Micro-units printed as an exact decimal: -1500000 -> "-1.500000". */
static void format_micro(char *buf, size_t len, int64_t micro)
{
    uint64_t magnitude = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
    snprintf(buf, len, "%s%" PRIu64 ".%06" PRIu64, micro < 0 ? "-" : "", magnitude / 1000000,
             magnitude % 1000000);
}

/* HELP text escapes backslash and newline (exposition format 0.0.4). */
static void write_help(FILE *out, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", out);
        else if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
}

static void write_labels(FILE *out, const char *labels, const char *le)
{
    bool have = labels[0] != '\0';
    if (!have && !le) return;
    fputc('{', out);
    fputs(labels, out);
    if (le) fprintf(out, "%sle=\"%s\"", have ? "," : "", le);
    fputc('}', out);
}

static void render_histogram(FILE *out, const char *name, const series *s)
{
    const struct metric_histogram *h = &s->u.histogram;
    char num[64];
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cumulative +=
            atomic_load_explicit(&((struct metric_histogram *)h)->buckets[i], memory_order_relaxed);
        if (i < h->n_bounds)
            format_double(num, sizeof num, h->bounds[i]);
        else
            snprintf(num, sizeof num, "+Inf");
        fprintf(out, "%s_bucket", name);
        write_labels(out, s->labels, num);
        fprintf(out, " %" PRIu64 "\n", cumulative);
    }
    format_micro(
        num, sizeof num,
        atomic_load_explicit(&((struct metric_histogram *)h)->sum_micro, memory_order_relaxed));
    fprintf(out, "%s_sum", name);
    write_labels(out, s->labels, NULL);
    fprintf(out, " %s\n", num);
    fprintf(out, "%s_count", name);
    write_labels(out, s->labels, NULL);
    fprintf(out, " %" PRIu64 "\n", cumulative);
}

static void render_series(FILE *out, const family *f, const series *s)
{
    char num[64];
    if (s->sample) {
        format_double(num, sizeof num, s->sample(s->sample_ctx));
        fputs(f->name, out);
        write_labels(out, s->labels, NULL);
        fprintf(out, " %s\n", num);
        return;
    }
    switch (f->type) {
    case METRIC_COUNTER:
        fputs(f->name, out);
        write_labels(out, s->labels, NULL);
        fprintf(out, " %" PRIu64 "\n", metric_counter_value(&s->u.counter));
        break;
    case METRIC_GAUGE:
        format_double(num, sizeof num, metric_gauge_value(&s->u.gauge));
        fputs(f->name, out);
        write_labels(out, s->labels, NULL);
        fprintf(out, " %s\n", num);
        break;
    case METRIC_HISTOGRAM: render_histogram(out, f->name, s); break;
    }
}

char *metrics_render(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out) return NULL;
    pthread_mutex_lock(&registry_lock);
    for (const family *f = families_first; f; f = f->next) {
        fprintf(out, "# HELP %s ", f->name);
        write_help(out, f->help);
        fprintf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (const series *s = f->first; s; s = s->next) render_series(out, f, s);
    }
    pthread_mutex_unlock(&registry_lock);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

void metrics_label_escape(const char *value, char *buf, size_t len)
{
    if (len == 0) return;
    size_t o = 0;
    for (const char *p = value ? value : ""; *p; p++) {
        const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        size_t need = esc ? 2 : 1;
        if (o + need > len - 1) break; /* never split an escape sequence */
        if (esc) {
            buf[o++] = esc[0];
            buf[o++] = esc[1];
        } else {
            buf[o++] = *p;
        }
    }
    buf[o] = '\0';
}

void metrics_reset(void)
{
    pthread_mutex_lock(&registry_lock);
    family *f = families_first;
    families_first = families_last = NULL;
    while (f) {
        family *next_family = f->next;
        series *s = f->first;
        while (s) {
            series *next_series = s->next;
            if (f->type == METRIC_HISTOGRAM) {
                free(s->u.histogram.bounds);
                free((void *)s->u.histogram.buckets);
            }
            free(s->labels);
            free(s);
            s = next_series;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = next_family;
    }
    pthread_mutex_unlock(&registry_lock);
}
