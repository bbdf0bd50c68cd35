/*
 * report — what a load run measured: the text report on stdout, the same as JSON (--json), the
 * per-message CSV, the throughput/latency series (buckets of a thirtieth of the run or less) and
 * its chart (gnuplot): ack and broadcast rates, end-to-end and ack latency over time.
 */
#include "loadgen.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_MIN_POINTS 30

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, size_t n, double p)
{
    if (!n) return 0;
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return sorted[i ? i - 1 : 0];
}

static lg_latency latency_of_values(double *v, size_t n)
{
    lg_latency l = {0};
    l.count = n;
    if (!n) return l;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    l.mean = sum / (double)n;
    l.p50 = pct(v, n, 50);
    l.p95 = pct(v, n, 95);
    l.p99 = pct(v, n, 99);
    l.p999 = pct(v, n, 99.9);
    l.max = v[n - 1];
    return l;
}

/* Latencies in milliseconds: send -> ack, or send -> broadcast received. */
lg_latency lg_latency_of(const lg_record *rec, size_t n, bool end_to_end)
{
    double *v = malloc((n ? n : 1) * sizeof *v);
    size_t k = 0;
    if (!v) return (lg_latency){0};
    for (size_t i = 0; i < n; i++) {
        const lg_record *r = &rec[i];
        if (r->state != REC_ACKED) continue;
        int64_t end = end_to_end ? r->broadcast_us : r->ack_us;
        if (end_to_end && !r->broadcasts) continue;
        v[k++] = (double)(end - r->first_send_us) / 1000.0;
    }
    lg_latency l = latency_of_values(v, k);
    free(v);
    return l;
}

/* Distinct userIds among the records sent at least once: the users a phase spoke as (with
 * --tokens its sending slots, else the random userIds the plan drew). 0 when out of memory. */
static size_t users_of(const lg_record *rec, size_t n)
{
    unsigned char *seen = calloc(100001 / 8 + 1, 1); /* userIds are 1..100000 (protocol.md §1.1) */
    size_t users = 0;
    if (!seen) return 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = rec[i].user_id;
        if (!rec[i].attempts || u > 100000 || (seen[u / 8] & (1u << (u % 8)))) continue;
        seen[u / 8] |= (unsigned char)(1u << (u % 8));
        users++;
    }
    free(seen);
    return users;
}

static json_t *latency_json(lg_latency l)
{
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)l.count, "meanMs",
                     l.mean, "p50Ms", l.p50, "p95Ms", l.p95, "p99Ms", l.p99, "p999Ms", l.p999,
                     "maxMs", l.max);
}

static void print_latency(const char *what, lg_latency l)
{
    printf("  %-22s n=%zu mean=%.2f p50=%.2f p95=%.2f p99=%.2f p99.9=%.2f max=%.2f (ms)\n", what,
           l.count, l.mean, l.p50, l.p95, l.p99, l.p999, l.max);
}

static bool write_csv(const lg_phase *ph, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "timestamp,messageType,latencyMs,status,roomId\n");
    for (size_t i = ph->first; i < ph->first + ph->n; i++) {
        const lg_record *r = &ph->rec[i];
        double lat = r->state == REC_ACKED ? (double)(r->ack_us - r->first_send_us) / 1000.0 : -1;
        const char *status = r->state == REC_ACKED ? "SUCCESS"
                             : r->error[0]         ? r->error
                                                   : "NOT_SENT";
        /* a room id has no comma or quote (room.h): safe in a CSV field as it is */
        fprintf(f, "%lld,%s,%.3f,%s,%s\n", (long long)r->wall_send_ms, LG_TYPE_NAMES[r->type], lat,
                status, ph->opt->room_ids[r->room]);
    }
    return fclose(f) == 0;
}

/* The series' bucket: the largest of these at most a thirtieth of the run, so a short run still
 * draws a line and a long one is not a cloud. write_series pads a run shorter than 30 ms with
 * empty buckets, so the series always has at least SERIES_MIN_POINTS points. */
static int64_t bucket_ms_for(int64_t span_ms)
{
    static const int64_t nice[] = {60000, 30000, 15000, 10000, 5000, 2000, 1000, 500,
                                   250,   200,   100,   50,    20,   10,   5,    2};
    for (size_t i = 0; i < sizeof nice / sizeof nice[0]; i++)
        if (nice[i] * SERIES_MIN_POINTS <= span_ms) return nice[i];
    return 1;
}

/* Latencies of one bucket, grown as needed. */
typedef struct {
    double *v;
    size_t n, cap;
} lat_list;

static bool lat_add(lat_list *l, double ms)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        double *grown = realloc(l->v, cap * sizeof *grown);
        if (!grown) return false;
        l->v = grown;
        l->cap = cap;
    }
    l->v[l->n++] = ms;
    return true;
}

static size_t bucket_of(const lg_phase *ph, int64_t at_us, int64_t bucket_ms, size_t buckets)
{
    int64_t b = at_us > ph->start_us ? (at_us - ph->start_us) / 1000 / bucket_ms : 0;
    return (size_t)b < buckets ? (size_t)b : buckets - 1;
}

/* Buckets over the run (bucket_ms_for): acks by ack time (rate, p50/p99 ack latency) and first
 * broadcasts by broadcast time (rate, p50/p99 end-to-end latency), so the chart shows the
 * backlog draining, not only the sends. */
static json_t *write_series(const lg_phase *ph, const char *path, int64_t *bucket_ms_out)
{
    int64_t end_us = ph->last_broadcast_us > ph->end_us ? ph->last_broadcast_us : ph->end_us;
    int64_t span_ms = (end_us - ph->start_us) / 1000;
    int64_t bucket_ms = bucket_ms_for(span_ms);
    *bucket_ms_out = bucket_ms;
    size_t buckets = (size_t)(span_ms / bucket_ms) + 1;
    if (buckets < SERIES_MIN_POINTS) buckets = SERIES_MIN_POINTS;
    lat_list *ack = calloc(buckets, sizeof *ack), *e2e = calloc(buckets, sizeof *e2e);
    json_t *series = json_array();
    FILE *f = path ? fopen(path, "w") : NULL;
    if (!ack || !e2e || !series) goto out;
    for (size_t i = ph->first; i < ph->first + ph->n; i++) {
        const lg_record *r = &ph->rec[i];
        if (r->state != REC_ACKED) continue;
        if (!lat_add(&ack[bucket_of(ph, r->ack_us, bucket_ms, buckets)],
                     (double)(r->ack_us - r->first_send_us) / 1000.0))
            goto out;
        if (r->broadcasts && !lat_add(&e2e[bucket_of(ph, r->broadcast_us, bucket_ms, buckets)],
                                      (double)(r->broadcast_us - r->first_send_us) / 1000.0))
            goto out;
    }
    if (f)
        fprintf(f, "# second\tacked\tack_per_s\tack_p50_ms\tack_p99_ms\tbroadcast\tbroadcast_per_s"
                   "\te2e_p50_ms\te2e_p99_ms\n");
    for (size_t b = 0; b < buckets; b++) {
        lg_latency la = latency_of_values(ack[b].v, ack[b].n);
        lg_latency le = latency_of_values(e2e[b].v, e2e[b].n);
        int64_t from_ms = (int64_t)b * bucket_ms;
        /* the last bucket (and any padding past the run) covers only what is left of the run */
        int64_t left_ms = span_ms - from_ms;
        double secs =
            (double)(left_ms < bucket_ms ? (left_ms > 0 ? left_ms : 0) : bucket_ms) / 1000.0;
        double ack_rate = secs > 0 ? (double)ack[b].n / secs : 0;
        double bc_rate = secs > 0 ? (double)e2e[b].n / secs : 0;
        double second = (double)from_ms / 1000.0;
        if (f)
            fprintf(f, "%.3f\t%zu\t%.1f\t%.2f\t%.2f\t%zu\t%.1f\t%.2f\t%.2f\n", second, ack[b].n,
                    ack_rate, la.p50, la.p99, e2e[b].n, bc_rate, le.p50, le.p99);
        json_array_append_new(
            series, json_pack("{s:f,s:I,s:f,s:f,s:f,s:I,s:f,s:f,s:f}", "second", second, "acked",
                              (json_int_t)ack[b].n, "msgPerSec", ack_rate, "p50Ms", la.p50, "p99Ms",
                              la.p99, "broadcast", (json_int_t)e2e[b].n, "broadcastPerSec", bc_rate,
                              "e2eP50Ms", le.p50, "e2eP99Ms", le.p99));
    }
out:
    if (f) fclose(f);
    for (size_t b = 0; b < buckets; b++) {
        if (ack) free(ack[b].v);
        if (e2e) free(e2e[b].v);
    }
    free(ack);
    free(e2e);
    return series;
}

/* Draws the series with gnuplot when it is installed; returns false with why when not. */
static bool draw_chart(const char *series_path, const char *png_path, int64_t bucket_ms, char *why,
                       size_t why_len)
{
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        snprintf(why, why_len, "gnuplot is not installed (Debian: gnuplot-nox); chart skipped");
        return false;
    }
    /* Two panels over the same time axis: rates on top, latencies below. The script goes through
     * sh inside double quotes: gnuplot's column references are written \$n. */
    char script[4096];
    snprintf(script, sizeof script,
             "set terminal png size 1000,700; set output '%s';"
             "set multiplot layout 2,1 title 'ChatFlow load test, per %.1f s';"
             "set grid; set key left top; set ylabel 'messages/s';"
             "plot '%s' using 1:3 with linespoints title 'acked/s',"
             " '' using 1:7 with linespoints title 'broadcast/s';"
             "set xlabel 'seconds'; set ylabel 'latency (ms)'; set logscale y;"
             "plot '%s' using 1:(\\$8>0?\\$8:1/0) with lines title 'end-to-end p50',"
             " '' using 1:(\\$9>0?\\$9:1/0) with lines title 'end-to-end p99',"
             " '' using 1:(\\$5>0?\\$5:1/0) with lines dt 2 title 'ack p99';"
             "unset multiplot",
             png_path, (double)bucket_ms / 1000.0, series_path, series_path);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gnuplot -e \"%s\" 2>/dev/null", script);
    if (system(cmd) != 0) {
        snprintf(why, why_len, "gnuplot failed");
        return false;
    }
    return true;
}

bool lg_report(const lg_phase *ph, const lg_phase *warmup, char *metrics_json)
{
    const lg_options *opt = ph->opt;
    double wall_s = (double)(ph->end_us - ph->start_us) / 1e6;
    lg_latency ack = lg_latency_of(ph->rec + ph->first, ph->n, false);
    lg_latency e2e = lg_latency_of(ph->rec + ph->first, ph->n, true);
    /* End to end: from the first send to the last acked message's first broadcast. */
    double e2e_wall_s =
        ph->acked_broadcast ? (double)(ph->last_broadcast_us - ph->start_us) / 1e6 : 0;
    double e2e_rate = e2e_wall_s > 0 ? (double)ph->acked_broadcast / e2e_wall_s : 0;
    size_t users = users_of(ph->rec + ph->first, ph->n);
    long per_room[LG_MAX_ROOMS] = {0}, per_type[3] = {0}; /* by room index */
    for (size_t i = ph->first; i < ph->first + ph->n; i++) {
        if (ph->rec[i].state != REC_ACKED) continue;
        per_room[ph->rec[i].room]++;
        per_type[ph->rec[i].type]++;
    }

    char csv[1024], tsv[1024], png[1024], why[256] = "";
    snprintf(csv, sizeof csv, "%s/messages.csv", opt->out_dir);
    snprintf(tsv, sizeof tsv, "%s/throughput.tsv", opt->out_dir);
    snprintf(png, sizeof png, "%s/throughput.png", opt->out_dir);
    bool csv_ok = write_csv(ph, csv);
    int64_t bucket_ms = 0;
    json_t *series = write_series(ph, tsv, &bucket_ms);
    bool chart = draw_chart(tsv, png, bucket_ms, why, sizeof why);

    printf("\nChatFlow load test report (run %s)\n", opt->run_id);
    if (warmup)
        printf("  warm-up: %zu messages on %d connections, %ld acked, %ld failed, %.1f s\n",
               warmup->n, opt->warmup_connections, warmup->acked, warmup->failed,
               (double)(warmup->end_us - warmup->start_us) / 1e6);
    printf("  main phase: %zu messages on %d connections over %d rooms, window %d", ph->n,
           opt->connections, opt->rooms, opt->window);
    if (opt->rate > 0) printf(", paced at %ld msg/s", opt->rate);
    printf("\n");
    printf("  users:           %zu (%s)\n", users,
           opt->tokens ? "identity tokens: one verified user per sender connection"
                       : "random userIds, no tokens");
    printf("  sent:            %zu\n", ph->n);
    printf("  acked:           %ld\n", ph->acked);
    printf("  failed:          %ld\n", ph->failed);
    printf("  retries:         %ld\n", ph->retries);
    printf("  reconnections:   %ld\n", ph->reconnections);
    printf("  protocol errors: %ld\n", ph->errors_seen);
    printf("  wall time:       %.2f s\n", wall_s);
    printf("  throughput:      %.0f msg/s\n", wall_s > 0 ? (double)ph->acked / wall_s : 0);
    print_latency("ack latency", ack);
    if (opt->subscribe) {
        print_latency("end-to-end latency", e2e);
        printf("  end to end:      %ld acked messages broadcast in %.2f s = %.0f msg/s (first send "
               "to last broadcast)\n",
               ph->acked_broadcast, e2e_wall_s, e2e_rate);
        printf("  broadcasts: expected %ld, received %ld, lost %ld, duplicated %ld, out of order "
               "%ld, unknown %ld\n",
               ph->acked, ph->broadcasts_received, ph->broadcasts_lost, ph->broadcasts_duplicated,
               ph->broadcasts_out_of_order, ph->broadcasts_unknown);
    }
    printf("  message types:   TEXT %ld (%.1f%%), JOIN %ld (%.1f%%), LEAVE %ld (%.1f%%)\n",
           per_type[0], ph->acked ? 100.0 * per_type[0] / ph->acked : 0, per_type[1],
           ph->acked ? 100.0 * per_type[1] / ph->acked : 0, per_type[2],
           ph->acked ? 100.0 * per_type[2] / ph->acked : 0);
    printf("  throughput per room (msg/s):");
    for (int r = 0; r < opt->rooms; r++)
        printf("%s %s:%.0f", r % 10 == 0 ? "\n   " : "", opt->room_ids[r],
               wall_s > 0 ? per_room[r] / wall_s : 0);
    printf("\n  per-message CSV: %s%s\n", csv, csv_ok ? "" : " (could not be written)");
    printf("  series (%.1f s):  %s\n", (double)bucket_ms / 1000.0, tsv);
    printf("  chart:           %s\n", chart ? png : why);
    if (metrics_json)
        printf("  consumer /api/metrics/all for the test window:\n%s\n", metrics_json);

    bool ok = true;
    if (opt->json_path) {
        json_t *rooms = json_object(); /* keyed by room id */
        for (int r = 0; r < opt->rooms; r++)
            json_object_set_new(rooms, opt->room_ids[r],
                                json_real(wall_s > 0 ? per_room[r] / wall_s : 0));
        json_t *consumer = metrics_json ? json_loads(metrics_json, 0, NULL) : NULL;
        json_t *doc = json_pack(
            "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:f,s:f,s:o,s:o,s:{s:I,s:I,s:I},s:o,"
            "s:{s:I,s:I,s:I,s:I,s:I,s:I},s:s,s:s,s:s*,s:o}",
            "runId", opt->run_id, "sent", (json_int_t)ph->n, "acked", (json_int_t)ph->acked,
            "failed", (json_int_t)ph->failed, "retries", (json_int_t)ph->retries, "reconnections",
            (json_int_t)ph->reconnections, "protocolErrors", (json_int_t)ph->errors_seen,
            "connections", opt->connections, "wallTimeSeconds", wall_s, "throughputPerSecond",
            wall_s > 0 ? ph->acked / wall_s : 0, "ackLatency", latency_json(ack), "endToEndLatency",
            latency_json(e2e), "messageTypes", "TEXT", (json_int_t)per_type[0], "JOIN",
            (json_int_t)per_type[1], "LEAVE", (json_int_t)per_type[2], "throughputPerRoom", rooms,
            "broadcasts", "expected", (json_int_t)(opt->subscribe ? ph->acked : 0), "received",
            (json_int_t)ph->broadcasts_received, "lost", (json_int_t)ph->broadcasts_lost,
            "duplicated", (json_int_t)ph->broadcasts_duplicated, "outOfOrder",
            (json_int_t)ph->broadcasts_out_of_order, "unknown", (json_int_t)ph->broadcasts_unknown,
            "csv", csv, "series", tsv, "chart", chart ? png : NULL, "throughputSeries", series);
        series = NULL;
        if (doc && opt->subscribe)
            json_object_set_new(doc, "endToEnd",
                                json_pack("{s:I,s:f,s:f}", "broadcastMessages",
                                          (json_int_t)ph->acked_broadcast, "wallTimeSeconds",
                                          e2e_wall_s, "throughputPerSecond", e2e_rate));
        if (doc) {
            json_object_set_new(doc, "seriesBucketMs", json_integer(bucket_ms));
            json_object_set_new(doc, "window", json_integer(opt->window));
            json_object_set_new(doc, "rate", json_integer(opt->rate));
            json_object_set_new(doc, "users", json_integer((json_int_t)users));
            json_object_set_new(doc, "tokens", json_boolean(opt->tokens != NULL));
            json_t *ids = json_array();
            for (int r = 0; r < opt->rooms; r++)
                json_array_append_new(ids, json_string(opt->room_ids[r]));
            json_object_set_new(doc, "roomIds", ids);
        }
        if (doc && consumer)
            json_object_set_new(doc, "consumerMetrics", consumer);
        else
            json_decref(consumer);
        ok = doc && json_dump_file(doc, opt->json_path, JSON_INDENT(2)) == 0;
        if (!ok) fprintf(stderr, "loadgen: could not write %s\n", opt->json_path);
        json_decref(doc);
    }
    json_decref(series);
    return ok && csv_ok;
}
