/*
 * it_exec_lib — how an integration test's child process becomes a service, shared by
 * it_consumer_lib.h and it_producer_lib.h.
 *
 * Contract:
 *  - it_exec_service(bin, args) execs bin with args (NULL-terminated; NULL for none) under
 *    $CHATFLOW_SERVICE_WRAPPER when it is set and not empty: its words, split at spaces, come
 *    first and the wrapper is looked up in PATH (test/run --sanitizers sets it to Valgrind
 *    memcheck). Call it in the child after fork(); it returns only when the exec failed.
 */
#ifndef CHATFLOW_IT_EXEC_LIB_H
#define CHATFLOW_IT_EXEC_LIB_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline void it_exec_service(const char *bin, const char *const *args)
{
    enum { MAX_WRAPPER_WORDS = 40, MAX_ARGV = 64 };
    char *argv[MAX_ARGV];
    int n = 0;
    static char wrapper[2048];
    const char *w_env = getenv("CHATFLOW_SERVICE_WRAPPER");
    snprintf(wrapper, sizeof wrapper, "%s", w_env ? w_env : "");
    for (char *save = NULL, *w = strtok_r(wrapper, " ", &save); w && n < MAX_WRAPPER_WORDS;
         w = strtok_r(NULL, " ", &save))
        argv[n++] = w;
    bool wrapped = n > 0;
    argv[n++] = (char *)bin;
    for (size_t i = 0; args && args[i] && n < MAX_ARGV - 1; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    if (wrapped)
        execvp(argv[0], argv);
    else
        execv(bin, argv);
}

#endif
