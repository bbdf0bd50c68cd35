/*
 * sanitizer_probe — a program with one chosen defect, for sanitizer_reports.sh, which proves that
 * test/run's sanitizer and Valgrind passes see a report wherever it happens.
 *
 *   sanitizer_probe MODE [child]
 *
 * MODE: clean, overflow (heap buffer overflow), leak (64 bytes definitely lost), ub (signed
 * overflow), race (two threads write one int without a lock). With "child" the defect happens in
 * a forked child and the parent exits 0 whatever the child did — as a service started by a test
 * whose stop status nobody checks.
 * Not built by the Makefile (not an it_*.c): the script compiles it with each sanitizer.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int shared;
static void *volatile sink;

static void *bump(void *arg)
{
    (void)arg;
    shared++;
    return NULL;
}

static void defect(const char *mode)
{
    if (strcmp(mode, "overflow") == 0) {
        volatile char *p = malloc(8);
        p[8] = 1;
        free((void *)p);
    } else if (strcmp(mode, "leak") == 0) {
        sink = malloc(64);
        memset(sink, 1, 64);
        sink = NULL;
    } else if (strcmp(mode, "ub") == 0) {
        volatile int x = INT_MAX;
        x = x + 1;
        printf("%d\n", x);
    } else if (strcmp(mode, "race") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, bump, NULL);
        shared++;
        pthread_join(t, NULL);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "clean";
    if (argc > 2 && strcmp(argv[2], "child") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            defect(mode);
            exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        return 0;
    }
    defect(mode);
    return 0;
}
