/*
 * tl_proc — the processes of an integration test: start-up of the test program itself, the
 * services it starts, and what it reads about them from /proc. Part of libtestsupport (test/lib,
 * prefix tl_), shared by test/integration/it_*.c and test/bench/bench_*.c.
 *
 * Contract:
 *  - tl_init() goes first in main(): quiet logging, libcurl set up, and every child started with
 *    tl_proc_spawn() killed (its whole process group, SIGKILL) when the program exits or gets
 *    SIGINT/SIGTERM, pass or fail. SIGPIPE is ignored (tests write to sockets peers close).
 *    Calling it again does nothing.
 *  - tl_proc_spawn() forks a service into a process group of its own, stdout and stderr to
 *    log_path, env ("NAME=value", NULL-terminated, applied in order so a later one wins) added to
 *    what it inherits. Under $CHATFLOW_SERVICE_WRAPPER (test/run sets it to Valgrind memcheck)
 *    the wrapper's words, split at spaces, come first and are looked up in PATH. The child
 *    inherits ASAN_OPTIONS / TSAN_OPTIONS, so its sanitizer reports go where test/run looks.
 *  - tl_proc_wait_line() polls the log for the start-up line a parser accepts; it gives up when
 *    the process exits (then *pid becomes 0) or the timeout passes, with a "#" note saying which.
 *  - tl_proc_stop() signals the process (not its group), waits, then SIGKILLs the group; it
 *    returns the wait status. tl_proc_forget() is for a test that reaped a child itself.
 *  - Paths: tl_env() reads a variable with a default for unset or empty; tl_log_dir() gives
 *    $CHATFLOW_TEST_LOGS/<name> when set (the sanitizer passes), else
 * $ROOT/$BUILD/test-logs/<name>, created, or /tmp when it cannot be.
 */
#ifndef CHATFLOW_TL_PROC_H
#define CHATFLOW_TL_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

void tl_init(void);

/* A "# ..." line: shown by test/run, not counted as a check. */
void tl_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

const char *tl_env(const char *name, const char *fallback);
void tl_log_dir(const char *test_name, char *out, size_t len);
/* Runs a shell command; true when it exited 0. */
bool tl_sh(const char *cmd);

/* True when services are started under $CHATFLOW_SERVICE_WRAPPER (slower: give them more time). */
bool tl_proc_wrapped(void);
/* Returns the child's PID (> 0), or -1 when the log could not be opened or fork failed. */
pid_t tl_proc_spawn(const char *bin, const char *const *args, const char *const *env,
                    const char *log_path);
/* parse(line, ctx) returns true on the start-up line (and may read ports from it). */
bool tl_proc_wait_line(pid_t *pid, const char *log_path, int timeout_ms,
                       bool (*parse)(const char *line, void *ctx), void *ctx);
int tl_proc_stop(pid_t *pid, int sig, int timeout_ms, bool *in_time);
void tl_proc_forget(pid_t pid);
/* SIGKILLs every child still running (their groups) and reaps them, as at exit. */
void tl_proc_kill_all(void);

/* Raises the soft open-files limit towards want (children inherit it); returns the new limit. */
long tl_proc_raise_nofile(long want);
/* VmRSS of a process in KiB; -1 when unknown. */
long tl_proc_rss_kb(pid_t pid);
/* Open descriptors of a process; -1 when unknown. */
int tl_proc_open_fds(pid_t pid);
/* CPU seconds used so far by this process's thread whose name starts with `name`; -1 if none. */
double tl_proc_thread_cpu_seconds(const char *name);

#endif
