/* process_metrics — process_* and chatflow_build_info; see process_metrics.h. */
#include "process_metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"

#ifndef CHATFLOW_VERSION
#define CHATFLOW_VERSION "unknown"
#endif
#ifndef CHATFLOW_REVISION
#define CHATFLOW_REVISION "unknown"
#endif

/* Fields of /proc/self/stat after the command (which may hold spaces: read past its ')').
 * index 0 is field 3 (state); utime 14, stime 15, starttime 22, vsize 23, rss 24. */
static bool read_stat(unsigned long long out[24])
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p) return false;
    p += 2; /* ") " */
    for (int i = 0; i < 24; i++) {
        while (*p == ' ') p++;
        if (!*p) return false;
        out[i] = i == 0 ? 0 : strtoull(p, NULL, 10); /* field 3 is a letter */
        while (*p && *p != ' ') p++;
    }
    return true;
}

static double cpu_seconds(void *ctx)
{
    (void)ctx;
    unsigned long long f[24];
    long hz = sysconf(_SC_CLK_TCK);
    if (!read_stat(f) || hz <= 0) return NAN;
    return (double)(f[11] + f[12]) / (double)hz; /* utime + stime */
}

static double virtual_bytes(void *ctx)
{
    (void)ctx;
    unsigned long long f[24];
    return read_stat(f) ? (double)f[20] : NAN;
}

static double resident_bytes(void *ctx)
{
    (void)ctx;
    unsigned long long f[24];
    long page = sysconf(_SC_PAGESIZE);
    return read_stat(f) && page > 0 ? (double)f[21] * (double)page : NAN;
}

/* Boot time (/proc/stat btime) + starttime ticks: when the process started, in Unix seconds. */
static double start_time(void *ctx)
{
    (void)ctx;
    unsigned long long f[24], btime = 0;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *s = fopen("/proc/stat", "r");
    char line[256];
    while (s && fgets(line, sizeof line, s))
        if (sscanf(line, "btime %llu", &btime) == 1) break;
    if (s) fclose(s);
    if (!btime || hz <= 0 || !read_stat(f)) return NAN;
    return (double)btime + (double)f[19] / (double)hz;
}

static double open_fds(void *ctx)
{
    (void)ctx;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return NAN;
    double n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static double max_fds(void *ctx)
{
    (void)ctx;
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return NAN;
    return r.rlim_cur == RLIM_INFINITY ? INFINITY : (double)r.rlim_cur;
}

static double one(void *ctx)
{
    (void)ctx;
    return 1;
}

void process_metrics_register(const char *service)
{
    metrics_sampled("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                    NULL, true, cpu_seconds, NULL);
    metrics_sampled("process_resident_memory_bytes", "Resident memory size in bytes.", NULL, false,
                    resident_bytes, NULL);
    metrics_sampled("process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL, false,
                    virtual_bytes, NULL);
    metrics_sampled("process_open_fds", "Number of open file descriptors.", NULL, false, open_fds,
                    NULL);
    metrics_sampled("process_max_fds", "Maximum number of open file descriptors.", NULL, false,
                    max_fds, NULL);
    metrics_sampled("process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.", NULL, false,
                    start_time, NULL);
    char labels[256], esc[96];
    metrics_label_escape(service ? service : "", esc, sizeof esc);
    snprintf(labels, sizeof labels, "service=\"%s\",version=\"%s\",revision=\"%s\"", esc,
             CHATFLOW_VERSION, CHATFLOW_REVISION);
    metrics_sampled("chatflow_build_info", "The build this process runs (always 1).", labels, false,
                    one, NULL);
}
