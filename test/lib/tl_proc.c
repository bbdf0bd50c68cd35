/* tl_proc — see tl_proc.h. */
#include "tl_proc.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "timeutil.h"

/* Enough for the busiest test (a producer restarted per scenario); a full table only means a
 * child is not killed at exit, which the test's own stop normally does anyway. */
#define MAX_CHILDREN 16
static pid_t children[MAX_CHILDREN];

void tl_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

void tl_proc_kill_all(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(-children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
}

/* Async-signal-safe: kill and _exit only. */
static void on_signal(int sig)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) kill(-children[i], SIGKILL);
    _exit(128 + sig);
}

void tl_init(void)
{
    static bool done;
    if (done) return;
    done = true;
    log_init("warn", "text");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    atexit(tl_proc_kill_all);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
}

const char *tl_env(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && v[0] ? v : fallback;
}

bool tl_sh(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

void tl_log_dir(const char *test_name, char *out, size_t len)
{
    const char *root = tl_env("CHATFLOW_TEST_LOGS", NULL);
    if (root)
        snprintf(out, len, "%s/%s", root, test_name);
    else
        snprintf(out, len, "%s/%s/test-logs/%s", tl_env("ROOT", "."), tl_env("BUILD", "build"),
                 test_name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", out);
    if (!tl_sh(cmd)) snprintf(out, len, "/tmp");
}

bool tl_proc_wrapped(void) { return tl_env("CHATFLOW_SERVICE_WRAPPER", NULL) != NULL; }

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
}

void tl_proc_forget(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid) children[i] = 0;
}

/* In the child after fork(): execs bin, under the wrapper when there is one. Returns only when
 * the exec failed. */
static void exec_service(const char *bin, const char *const *args)
{
    enum { MAX_WRAPPER_WORDS = 40, MAX_ARGV = 64 };
    char *argv[MAX_ARGV];
    int n = 0;
    static char wrapper[2048];
    snprintf(wrapper, sizeof wrapper, "%s", tl_env("CHATFLOW_SERVICE_WRAPPER", ""));
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

pid_t tl_proc_spawn(const char *bin, const char *const *args, const char *const *env,
                    const char *log_path)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        tl_note("cannot open %s: %s", log_path, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
        exec_service(bin, args);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fd);
    setpgid(pid, pid); /* also here: the parent may signal the group before the child ran */
    track(pid);
    return pid;
}

static bool log_has_line(const char *log_path, bool (*parse)(const char *line, void *ctx),
                         void *ctx)
{
    FILE *f = fopen(log_path, "r");
    char line[2048];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) found = parse(line, ctx);
    if (f) fclose(f);
    return found;
}

bool tl_proc_wait_line(pid_t *pid, const char *log_path, int timeout_ms,
                       bool (*parse)(const char *line, void *ctx), void *ctx)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (log_has_line(log_path, parse, ctx)) return true;
        int st;
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            tl_note("exited during start-up (log %s)", log_path);
            tl_proc_forget(*pid);
            *pid = 0;
            return false;
        }
        time_sleep_ms(50);
    }
    tl_note("no start-up line within %d ms (log %s)", timeout_ms, log_path);
    return false;
}

int tl_proc_stop(pid_t *pid, int sig, int timeout_ms, bool *in_time)
{
    if (*pid <= 0) return -1;
    kill(*pid, sig);
    int st = -1;
    bool exited = false;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            exited = true;
            break;
        }
        time_sleep_ms(20);
    }
    if (!exited) {
        kill(-*pid, SIGKILL);
        waitpid(*pid, &st, 0);
    }
    tl_proc_forget(*pid);
    *pid = 0;
    if (in_time) *in_time = exited;
    return st;
}

long tl_proc_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if ((rlim_t)want > rl.rlim_max) want = (long)rl.rlim_max;
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = (rlim_t)want;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

long tl_proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

int tl_proc_open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* utime + stime of one thread, from its stat line (fields 14 and 15, after the "(comm)"). */
static double task_cpu_seconds(const char *task)
{
    char path[300], stat[1024];
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", task);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    bool got = fgets(stat, sizeof stat, f) != NULL;
    fclose(f);
    const char *p = got ? strrchr(stat, ')') : NULL;
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double tl_proc_thread_cpu_seconds(const char *name)
{
    char path[300], comm[64];
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return -1;
    double secs = -1;
    for (struct dirent *e; secs < 0 && (e = readdir(dir));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        bool match = fgets(comm, sizeof comm, f) && strncmp(comm, name, strlen(name)) == 0;
        fclose(f);
        if (match) secs = task_cpu_seconds(e->d_name);
    }
    closedir(dir);
    return secs;
}
