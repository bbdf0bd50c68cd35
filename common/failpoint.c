/* failpoint — test-only faults named in CHATFLOW_TEST_FAILPOINT; see failpoint.h. */
#include "failpoint.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char active[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
    const char *v = getenv("CHATFLOW_TEST_FAILPOINT");
    /* Framed by commas so a lookup matches whole names only. */
    snprintf(active, sizeof active, ",%s,", v ? v : "");
    if (v && *v) log_warn("failpoint", "test failpoints active: %s", v);
}

bool failpoint_on(const char *name)
{
    pthread_once(&once, load);
    char framed[80];
    snprintf(framed, sizeof framed, ",%s,", name);
    return strstr(active, framed) != NULL;
}

void failpoint_stall_forever(void)
{
    for (;;) sleep(3600);
}
