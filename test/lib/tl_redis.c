/* tl_redis — see tl_redis.h. */
#include "tl_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "timeutil.h"
#include "tl_proc.h"

#define PING_WAIT_MS 10000
#define CALL_TIMEOUT_MS 1000
#define START_ATTEMPTS 3 /* a restart may find its port briefly taken (below) */

/* ---------------------------------------------------------------- cleanup at exit */

/* Servers to stop at exit. A test keeps them in static storage, so the pointers stay valid. */
#define MAX_SERVERS 4
static tl_redis *servers[MAX_SERVERS];

static void done_at_exit(void)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i]) tl_redis_done(servers[i]);
}

static void register_at_exit(tl_redis *r)
{
    static bool registered;
    if (!registered) atexit(done_at_exit);
    registered = true;
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i] == r) return;
    for (int i = 0; i < MAX_SERVERS; i++)
        if (!servers[i]) {
            servers[i] = r;
            return;
        }
}

/* ---------------------------------------------------------------- the wire */

/* A TCP connection to 127.0.0.1:port with send and receive timeouts; -1 when refused. */
static int connect_loopback(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Is buf[0..n) a whole reply of the kinds tl_redis_call() reads: a line, or a "$<len>" line and
 * its bulk string? */
static bool reply_complete(const char *buf, size_t n)
{
    const char *crlf = memmem(buf, n, "\r\n", 2);
    if (!crlf) return false;
    if (buf[0] != '$') return true;
    long len = strtol(buf + 1, NULL, 10);
    size_t head = (size_t)(crlf - buf) + 2;
    return len < 0 || n >= head + (size_t)len + 2;
}

/* Reads one reply into buf (NUL-terminated) until it is complete or the deadline passes. */
static bool read_reply(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    buf[0] = '\0';
    uint64_t until = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (n + 1 < cap && !reply_complete(buf, n)) {
        uint64_t now = time_mono_ns();
        struct pollfd p = {fd, POLLIN, 0};
        if (now >= until || poll(&p, 1, (int)((until - now) / 1000000ull) + 1) <= 0) return false;
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got <= 0) return false;
        n += (size_t)got;
        buf[n] = '\0';
    }
    return reply_complete(buf, n);
}

/* The reply as tl_redis.h shows it: the first line, or "$" and a bulk string's contents. */
static void format_reply(const char *buf, char *reply, size_t reply_len)
{
    size_t line = strcspn(buf, "\r");
    if (buf[0] == '$' && strtol(buf + 1, NULL, 10) >= 0) {
        const char *data = buf + line + 2;
        snprintf(reply, reply_len, "$%.*s", (int)strtol(buf + 1, NULL, 10), data);
        return;
    }
    snprintf(reply, reply_len, "%.*s", (int)line, buf);
}

bool tl_redis_call(int port, const char *command, char *reply, size_t reply_len, int timeout_ms)
{
    reply[0] = '\0';
    int fd = connect_loopback(port, timeout_ms);
    if (fd < 0) return false;
    char line[512], buf[4096];
    int n = snprintf(line, sizeof line, "%s\r\n", command); /* inline command: one line */
    bool ok = n > 0 && (size_t)n < sizeof line && write(fd, line, (size_t)n) == n &&
              read_reply(fd, buf, sizeof buf, timeout_ms);
    close(fd);
    if (ok) format_reply(buf, reply, reply_len);
    return ok;
}

bool tl_redis_ping(int port, int timeout_ms)
{
    char reply[64];
    return tl_redis_call(port, "PING", reply, sizeof reply, timeout_ms) &&
           strcmp(reply, "+PONG") == 0;
}

/* A port nobody listens on now: the kernel's choice for port 0, released at once. */
int tl_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* ---------------------------------------------------------------- the process */

/* Still our running child? Reaps it (and forgets it) when it has exited. */
static bool running(tl_redis *r)
{
    if (r->pid <= 0) return false;
    int st;
    pid_t w = waitpid(r->pid, &st, WNOHANG);
    if (w == 0) return true;
    r->pid = 0; /* exited (w == pid) or reaped elsewhere (ECHILD) */
    return false;
}

static bool wait_ping(tl_redis *r)
{
    for (int waited = 0; waited <= PING_WAIT_MS; waited += 50) {
        if (tl_redis_ping(r->port, CALL_TIMEOUT_MS)) return true;
        if (!running(r)) {
            tl_note("redis-server exited during start-up (log %s)", r->log_path);
            return false;
        }
        time_sleep_ms(50);
    }
    tl_note("redis-server did not answer PING on port %d within %d ms (log %s)", r->port,
            PING_WAIT_MS, r->log_path);
    return false;
}

/* In the child after fork(): async-signal-safe calls only (the test may have threads). */
static void exec_server(const char *bin, const char *const *args, int log_fd, pid_t parent)
{
    setpgid(0, 0);
    /* Killed with its test even when the test cannot clean up (a crash, SIGKILL): exit handlers
     * and tl_init()'s signal handler do not run then. The signal follows the forking thread. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the test died before prctl() */
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    enum { MAX_ARGV = 32 };
    char *argv[MAX_ARGV];
    int n = 0;
    argv[n++] = (char *)bin;
    for (size_t i = 0; args[i] && n < MAX_ARGV - 1; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    execv(bin, argv);
    static const char msg[] = "tl_redis: exec of the redis-server failed\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
}

/* Like tl_proc_spawn() (a process group of its own, output to the log, never wrapped: it is not
 * the code under test), plus the parent-death signal above. */
static pid_t spawn_server(const char *bin, const char *const *args, const char *log_path)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        tl_note("cannot open %s: %s", log_path, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) exec_server(bin, args, fd, parent);
    close(fd);
    if (pid > 0) setpgid(pid, pid); /* also here: the test may signal the group at once */
    return pid;
}

/* One start on r->port in r->dir; true once it answers PING. */
static bool spawn_once(tl_redis *r)
{
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    r->runs++;
    snprintf(r->log_path, sizeof r->log_path, "%s/redis-%d.log", r->log_dir, r->runs);
    const char *const args[] = {
        "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize",
        "no", "--protected-mode", "yes",
        /* DEBUG from loopback: a test can give Redis another replication history (a failover) */
        "--enable-debug-command", "local", "--dir", r->dir, NULL};
    const char *bin = tl_env("CHATFLOW_REDIS_SERVER", "/usr/bin/redis-server");
    r->pid = spawn_server(bin, args, r->log_path);
    if (r->pid <= 0) {
        r->pid = 0;
        tl_note("cannot start %s", bin);
        return false;
    }
    if (wait_ping(r)) return true;
    if (r->pid > 0) tl_proc_stop(&r->pid, SIGKILL, 2000, NULL);
    return false;
}

/* A few attempts: between a kill and a restart, an outgoing connection of another process may
 * hold the port as its local port for a moment, and redis-server then exits at once. */
static bool spawn(tl_redis *r)
{
    for (int i = 0; i < START_ATTEMPTS; i++) {
        if (spawn_once(r)) return true;
        time_sleep_ms(300);
    }
    return false;
}

bool tl_redis_start(tl_redis *r, const char *log_dir)
{
    memset(r, 0, sizeof *r);
    tl_init(); /* SIGPIPE ignored; its SIGINT/SIGTERM handler exits, and the server follows */
    snprintf(r->log_dir, sizeof r->log_dir, "%s", log_dir);
    snprintf(r->dir, sizeof r->dir, "%s/tl-redis-XXXXXX", tl_env("TMPDIR", "/tmp"));
    if (!mkdtemp(r->dir)) {
        tl_note("mkdtemp %s: %s", r->dir, strerror(errno));
        r->dir[0] = '\0';
        return false;
    }
    register_at_exit(r);
    r->port = tl_free_port();
    if (r->port <= 0) {
        tl_note("no free port on 127.0.0.1 for redis-server");
        return false;
    }
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
    return spawn(r);
}

const char *tl_redis_url(const tl_redis *r) { return r->url; }

bool tl_redis_stop(tl_redis *r, int timeout_ms)
{
    if (!running(r)) return true;
    bool in_time = false;
    tl_proc_stop(&r->pid, SIGTERM, timeout_ms, &in_time);
    return in_time;
}

void tl_redis_kill(tl_redis *r)
{
    if (running(r)) tl_proc_stop(&r->pid, SIGKILL, 5000, NULL);
}

bool tl_redis_restart(tl_redis *r)
{
    if (running(r)) {
        tl_note("redis-server (pid %d) is still running: not restarted", (int)r->pid);
        return false;
    }
    return r->port > 0 && r->dir[0] && spawn(r);
}

void tl_redis_done(tl_redis *r)
{
    tl_redis_stop(r, 5000);
    if (!r->dir[0]) return;
    /* nothing persists, but a folder of files the server may have written is still removed */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    tl_sh(cmd);
    r->dir[0] = '\0';
}
