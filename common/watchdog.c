/* watchdog — loop deadlines for /health/live; see watchdog.h. */
#include "watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "timeutil.h"

/* A service has a few dozen loops (20 pollers at most per consumer); room to spare. */
#define MAX_LOOPS 256

struct watchdog_loop {
    char name[48];
    atomic_bool in_use;
    _Atomic uint64_t deadline_ns;
};

static watchdog_loop loops[MAX_LOOPS];
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;

watchdog_loop *watchdog_register(const char *name, long first_ms)
{
    pthread_mutex_lock(&registry_mu);
    watchdog_loop *h = NULL;
    for (size_t i = 0; i < MAX_LOOPS && !h; i++) {
        if (!atomic_load(&loops[i].in_use)) {
            h = &loops[i];
            snprintf(h->name, sizeof h->name, "%s", name);
            watchdog_expect(h, first_ms);
            atomic_store(&h->in_use, true);
        }
    }
    pthread_mutex_unlock(&registry_mu);
    if (!h) log_warn("watchdog", "registry full: loop %s is not watched", name);
    return h;
}

void watchdog_expect(watchdog_loop *h, long ms)
{
    if (!h) return;
    atomic_store(&h->deadline_ns, time_mono_ns() + (uint64_t)(ms < 0 ? 0 : ms) * 1000000ull);
}

void watchdog_unregister(watchdog_loop *h)
{
    if (!h) return;
    pthread_mutex_lock(&registry_mu);
    atomic_store(&h->in_use, false);
    pthread_mutex_unlock(&registry_mu);
}

bool watchdog_check(char *detail, size_t detail_len)
{
    uint64_t now = time_mono_ns();
    size_t stuck = 0, watched = 0, used = 0;
    if (detail_len > 0) detail[0] = '\0';
    pthread_mutex_lock(&registry_mu);
    for (size_t i = 0; i < MAX_LOOPS; i++) {
        if (!atomic_load(&loops[i].in_use)) continue;
        watched++;
        uint64_t deadline = atomic_load(&loops[i].deadline_ns);
        if (now <= deadline) continue;
        stuck++;
        if (used < detail_len) {
            int w = snprintf(detail + used, detail_len - used, "%s%s late by %llu ms",
                             stuck > 1 ? "; " : "", loops[i].name,
                             (unsigned long long)((now - deadline) / 1000000ull));
            used = w < 0 ? detail_len : used + (size_t)w;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    metric_gauge_set(
        metrics_gauge("chatflow_watchdog_stuck_loops",
                      "Loops past the deadline they announced (a stuck thread); 0 when live.",
                      NULL),
        (double)stuck);
    if (stuck == 0 && detail_len > 0) snprintf(detail, detail_len, "%zu loops turning", watched);
    return stuck == 0;
}

bool watchdog_health_check(void *ctx, char *detail, size_t detail_len)
{
    (void)ctx;
    return watchdog_check(detail, detail_len);
}

void watchdog_reset(void)
{
    pthread_mutex_lock(&registry_mu);
    for (size_t i = 0; i < MAX_LOOPS; i++) atomic_store(&loops[i].in_use, false);
    pthread_mutex_unlock(&registry_mu);
}
