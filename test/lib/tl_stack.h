/*
 * tl_stack — a private stack for a test that breaks a dependency on purpose (SQS frozen or
 * stopped, PostgreSQL stopped): deploy/local/stack in a folder of its own, so the shared test
 * stack is never touched. Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_stack_init() names the folder $ROOT/$BUILD/test-stacks/<name> (BUILD is the instrumented
 *    build's folder in a sanitizer pass, so passes stay apart), the command log
 *    <log_dir>/stack.log, and arranges tl_stack_down() at exit, pass or fail. One stack a process.
 *  - tl_stack_cmd() runs `deploy/local/stack ARGS` (up --sqs-only, stop-sqs, restart-sqs,
 *    stop-pg, ...) with BUILD and CHATFLOW_BIN passed on; true when it exited 0.
 *  - tl_stack_load_env() reads the folder's stack.env and exports AWS_* and DATABASE_URL (quotes
 *    removed) to this process and the services it starts later; it records the fauxqs PID
 *    (CHATFLOW_FAUXQS_PID, 0 when SQS is not part of the stack). Call it after every up/restart.
 *  - tl_stack_freeze_sqs() stops or continues fauxqs (SIGSTOP/SIGCONT); tl_stack_down() thaws it
 *    first (a stopped process cannot be stopped by the stack script) and purges the folder.
 */
#ifndef CHATFLOW_TL_STACK_H
#define CHATFLOW_TL_STACK_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    char dir[700];
    char log_dir[600];
    pid_t fauxqs_pid;
} tl_stack;

void tl_stack_init(tl_stack *s, const char *name, const char *log_dir);
bool tl_stack_cmd(tl_stack *s, const char *args);
bool tl_stack_load_env(tl_stack *s);
void tl_stack_freeze_sqs(tl_stack *s, bool frozen);
void tl_stack_down(tl_stack *s);

#endif
