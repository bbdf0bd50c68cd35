/* test_metrics — registry semantics, exact exposition text, promtool validation, threaded totals.
 */
/* test-passes: asan tsan */
#include "metrics.h"
#include "process_metrics.h"
#include "testlib.h"
#include "timeutil.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4
#define PER_THREAD 50000

static bool contains_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return true;
    return false;
}

static int count_occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* Runs `promtool check metrics` on text; returns its exit status, or -1 when it cannot run. */
static int promtool_check(const char *text, char *output, size_t output_len)
{
    char in_path[] = "/tmp/test_metrics_in_XXXXXX";
    char out_path[] = "/tmp/test_metrics_out_XXXXXX";
    int in_fd = mkstemp(in_path), out_fd = mkstemp(out_path);
    if (in_fd < 0 || out_fd < 0) return -1;
    size_t len = strlen(text);
    bool written = write(in_fd, text, len) == (ssize_t)len;
    close(in_fd);
    close(out_fd);
    int status = -1;
    if (written) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s > %s 2>&1", in_path, out_path);
        int rc = system(cmd);
        status = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
        FILE *f = fopen(out_path, "r");
        size_t n = f ? fread(output, 1, output_len - 1, f) : 0;
        output[n] = '\0';
        if (f) fclose(f);
    }
    unlink(in_path);
    unlink(out_path);
    return status;
}

static void test_registry(void)
{
    metric_counter *a = metrics_counter("t_requests_total", "Requests.", "result=\"ok\"");
    metric_counter *b = metrics_counter("t_requests_total", "Requests.", "result=\"ok\"");
    metric_counter *c = metrics_counter("t_requests_total", "Requests.", "result=\"error\"");
    CHECK(a == b, "same name and labels give the same series");
    CHECK(a != c, "other labels give another series");
    metric_counter_inc(a);
    metric_counter_add(b, 41);
    CHECK_INT(metric_counter_value(a), 42, "counter adds through both pointers");
    CHECK_INT(metric_counter_value(c), 0, "other series untouched");

    metric_gauge *g = metrics_gauge("t_connections_active", "Open connections.", NULL);
    CHECK(g == metrics_gauge("t_connections_active", "Open connections.", ""),
          "NULL and \"\" labels are the same series");
    metric_gauge_set(g, 5);
    metric_gauge_add(g, -1.5);
    CHECK(metric_gauge_value(g) == 3.5, "gauge set then add");

    metric_histogram *h = metrics_histogram("t_latency_seconds", "Latency.", "action=\"send\"",
                                            METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    metric_histogram_observe(h, 0.0004); /* first bucket */
    metric_histogram_observe(h, 0.0005); /* exactly on a bound: le is inclusive */
    metric_histogram_observe(h, 0.2);
    metric_histogram_observe(h, 42);  /* only +Inf */
    metric_histogram_observe(h, NAN); /* ignored */
    CHECK_INT(metric_histogram_count(h), 4, "histogram count (NaN ignored)");
}

static void test_buckets(void)
{
    CHECK(METRICS_LATENCY_BUCKETS_N >= 10 && METRICS_LATENCY_BUCKETS[0] == 0.0005 &&
              METRICS_LATENCY_BUCKETS[METRICS_LATENCY_BUCKETS_N - 1] == 10,
          "latency buckets span 0.0005..10 s");
    CHECK(METRICS_SIZE_BUCKETS[0] == 1 && METRICS_SIZE_BUCKETS[METRICS_SIZE_BUCKETS_N - 1] == 5000,
          "size buckets span 1..5000");
    bool increasing = true;
    for (size_t i = 1; i < METRICS_LATENCY_BUCKETS_N; i++)
        increasing &= METRICS_LATENCY_BUCKETS[i] > METRICS_LATENCY_BUCKETS[i - 1];
    for (size_t i = 1; i < METRICS_SIZE_BUCKETS_N; i++)
        increasing &= METRICS_SIZE_BUCKETS[i] > METRICS_SIZE_BUCKETS[i - 1];
    CHECK(increasing, "standard buckets strictly increase");
}

static void test_label_escape(void)
{
    char buf[64];
    metrics_label_escape("a\\b\"c\nd", buf, sizeof buf);
    CHECK_STR(buf, "a\\\\b\\\"c\\nd", "label value escaping of \\, \" and newline");
    metrics_label_escape("ab\"", buf, 4);
    CHECK_STR(buf, "ab", "escape never splits a sequence when the buffer is short");
    metrics_label_escape(NULL, buf, sizeof buf);
    CHECK_STR(buf, "", "NULL value escapes to empty");
}

static void test_render(void)
{
    char esc[64], labels[96];
    metrics_label_escape("we\"ird\\name\n", esc, sizeof esc);
    snprintf(labels, sizeof labels, "room=\"%s\"", esc);
    metric_counter_add(metrics_counter("t_odd_total", "Help with \\ and\nnewline.", labels), 7);
    metric_histogram *sizes = metrics_histogram("t_batch_size", "Batch size.", NULL,
                                                METRICS_SIZE_BUCKETS, METRICS_SIZE_BUCKETS_N);
    metric_histogram_observe(sizes, 10);
    metric_histogram_observe(sizes, 3);
    metric_gauge_set(metrics_gauge("t_small", "Small value.", NULL), 1e-7);

    char *text = metrics_render();
    CHECK(text != NULL, "render returns a body");
    if (!text) return;
    CHECK_INT(count_occurrences(text, "# HELP t_requests_total "), 1, "HELP once per family");
    CHECK_INT(count_occurrences(text, "# TYPE t_requests_total counter\n"), 1,
              "TYPE once per family");
    CHECK(contains_line(text, "t_requests_total{result=\"ok\"} 42"), "counter line with labels");
    CHECK(contains_line(text, "t_requests_total{result=\"error\"} 0"), "zero counter rendered");
    CHECK(contains_line(text, "# TYPE t_connections_active gauge"), "gauge TYPE");
    CHECK(contains_line(text, "t_connections_active 3.5"), "gauge without labels");
    CHECK(contains_line(text, "t_small 1e-07"), "small gauge in exponent form");
    CHECK(contains_line(text, "# TYPE t_latency_seconds histogram"), "histogram TYPE");
    CHECK(contains_line(text, "t_latency_seconds_bucket{action=\"send\",le=\"0.0005\"} 2"),
          "first bucket, le inclusive");
    CHECK(contains_line(text, "t_latency_seconds_bucket{action=\"send\",le=\"0.1\"} 2"),
          "cumulative before 0.2");
    CHECK(contains_line(text, "t_latency_seconds_bucket{action=\"send\",le=\"0.2\"} 3"),
          "0.2 s is a bound (the 200 ms objective), le inclusive");
    CHECK(contains_line(text, "t_latency_seconds_bucket{action=\"send\",le=\"0.25\"} 3"),
          "cumulative after 0.2");
    CHECK(contains_line(text, "t_latency_seconds_bucket{action=\"send\",le=\"10\"} 3"),
          "last finite bucket");
    CHECK(contains_line(text, "t_latency_seconds_bucket{action=\"send\",le=\"+Inf\"} 4"),
          "+Inf bucket");
    CHECK(contains_line(text, "t_latency_seconds_sum{action=\"send\"} 42.200900"),
          "exact micro-unit sum");
    CHECK(contains_line(text, "t_latency_seconds_count{action=\"send\"} 4"), "histogram count");
    CHECK(contains_line(text, "t_batch_size_bucket{le=\"5\"} 1"),
          "histogram without labels has only le");
    CHECK(contains_line(text, "t_batch_size_sum 13.000000"), "size sum");
    CHECK(contains_line(text, "# HELP t_odd_total Help with \\\\ and\\nnewline."),
          "HELP escapes backslash and newline");
    CHECK(contains_line(text, "t_odd_total{room=\"we\\\"ird\\\\name\\n\"} 7"),
          "escaped label value rendered");
    const char *req = strstr(text, "# HELP t_requests_total");
    const char *gauge = strstr(text, "# HELP t_connections_active");
    const char *hist = strstr(text, "# HELP t_latency_seconds");
    const char *odd = strstr(text, "# HELP t_odd_total");
    CHECK(req && gauge && hist && odd && req < gauge && gauge < hist && hist < odd,
          "families in registration order");

    char output[4096];
    int rc = promtool_check(text, output, sizeof output);
    if (rc == -1 || rc == 127)
        CHECK(false, "promtool is installed (install with `make deps`: Debian package prometheus)");
    else
        CHECK_INT(rc, 0, "promtool check metrics accepts the rendered exposition");
    if (rc != 0) NOTE("promtool said: %s", output);
    free(text);

    /* promtool must be able to fail here, or the check above proves nothing. */
    rc = promtool_check("# TYPE bad counter\nbad{x=\"1} 1\n", output, sizeof output);
    CHECK(rc > 0 && rc != 127, "promtool rejects malformed exposition (rc %d)", rc);
}

static metric_counter *shared_counter;
static metric_gauge *shared_gauge;
static metric_histogram *shared_histogram;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        metric_counter_inc(shared_counter);
        metric_gauge_add(shared_gauge, 1.0);
        metric_histogram_observe(shared_histogram, (i % 2) ? 0.002 : 3.0);
        if (i % 10000 == 0) {
            /* registration and rendering race with updates too */
            metrics_counter("t_threads_total", "Increments.", NULL);
            free(metrics_render());
        }
    }
    return NULL;
}

static void test_threads(void)
{
    shared_counter = metrics_counter("t_threads_total", "Increments.", NULL);
    shared_gauge = metrics_gauge("t_threads_gauge", "Sum of adds.", NULL);
    shared_histogram = metrics_histogram("t_threads_seconds", "Observed.", NULL,
                                         METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    pthread_t tid[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&tid[i], NULL, hammer, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(tid[i], NULL);
    CHECK_INT(metric_counter_value(shared_counter), THREADS * PER_THREAD,
              "threaded counter total is exact");
    CHECK(metric_gauge_value(shared_gauge) == THREADS * PER_THREAD,
          "threaded gauge CAS adds are exact");
    CHECK_INT(metric_histogram_count(shared_histogram), THREADS * PER_THREAD,
              "threaded histogram count is exact");
    char *text = metrics_render();
    char line[128];
    snprintf(line, sizeof line, "t_threads_seconds_sum %d.000000",
             THREADS * PER_THREAD / 2 * 3 + THREADS * PER_THREAD / 2 * 2 / 1000);
    CHECK(text && contains_line(text, line), "threaded histogram sum is exact (%s)", line);
    snprintf(line, sizeof line, "t_threads_seconds_bucket{le=\"0.0025\"} %d",
             THREADS * PER_THREAD / 2);
    CHECK(text && contains_line(text, line), "threaded bucket count is exact");
    free(text);
}

/* A name reused with another type is a programming error: the process aborts. */
static void test_misuse_aborts(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        metrics_gauge("t_requests_total", "Requests.", NULL);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "type clash aborts");
}

static void test_reset(void)
{
    metrics_reset();
    char *text = metrics_render();
    CHECK_STR(text, "", "reset drops every family");
    free(text);
    metric_gauge *g = metrics_gauge("t_requests_total", "Now a gauge.", NULL);
    CHECK(metric_gauge_value(g) == 0, "after reset a name can be registered afresh");
    metrics_reset();
}

static double sample_value = 2.5;
static double read_sample(void *ctx) { return *(double *)ctx; }

/* The value after "<name> " on its line of text, NaN when the line is not there. */
static double value_of(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(text, key);
    return at ? strtod(at + strlen(key), NULL) : NAN;
}

static void test_sampled_and_process(void)
{
    metrics_reset();
    metrics_sampled("t_sampled_total", "A sampled counter.", NULL, true, read_sample,
                    &sample_value);
    char *text = metrics_render();
    CHECK(text && contains_line(text, "# TYPE t_sampled_total counter") &&
              contains_line(text, "t_sampled_total 2.5"),
          "a sampled counter renders its function's value");
    free(text);
    sample_value = 7;
    text = metrics_render();
    CHECK(text && contains_line(text, "t_sampled_total 7"), "read again at each render");
    free(text);

    process_metrics_register("test");
    text = metrics_render();
    double cpu = text ? value_of(text, "process_cpu_seconds_total") : NAN;
    double rss = text ? value_of(text, "process_resident_memory_bytes") : NAN;
    double fds = text ? value_of(text, "process_open_fds") : NAN;
    double max = text ? value_of(text, "process_max_fds") : NAN;
    double start = text ? value_of(text, "process_start_time_seconds") : NAN;
    double now = (double)time_wall_ms() / 1000.0;
    CHECK(cpu >= 0 && rss > 1e6 && fds >= 3 && max >= fds,
          "process figures from /proc: cpu %.2f s, rss %.0f B, fds %.0f of %.0f", cpu, rss, fds,
          max);
    CHECK(start > now - 3600 && start <= now + 1,
          "process_start_time_seconds is this process's start (%.0f s ago)", now - start);
    CHECK(text && strstr(text, "chatflow_build_info{service=\"test\",version=\"") &&
              strstr(text, ",revision=\""),
          "chatflow_build_info{service,version,revision} 1");
    free(text);
    metrics_reset();
}

int main(void)
{
    test_registry();
    test_buckets();
    test_label_escape();
    test_render();
    test_misuse_aborts();
    test_threads();
    test_reset();
    test_sampled_and_process();
    return TEST_DONE();
}
