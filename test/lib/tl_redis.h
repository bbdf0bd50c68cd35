/*
 * tl_redis — a throw-away redis-server for a test (the consumers' cluster bus, consumer/bus.h):
 * started, killed and restarted by PID, on loopback. Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_redis_start() picks a free port on 127.0.0.1, makes a private temporary folder (mkdtemp
 *    under $TMPDIR or /tmp) and starts $CHATFLOW_REDIS_SERVER (default /usr/bin/redis-server) in
 *    it: no persistence (--save "" --appendonly no), --bind 127.0.0.1 --protected-mode yes
 *    --daemonize no, its log on stdout into <log_dir>/redis-<run>.log (one file per start, so a
 *    restart keeps the first run's log). It returns once the server answers PING (10 s), false,
 *    noted, when it exited or did not. Never under $CHATFLOW_SERVICE_WRAPPER: redis-server is not
 *    the code under test. The server gets SIGKILL when the thread that started it ends
 *    (PR_SET_PDEATHSIG), so a test that crashes or is killed leaves no server behind: start it
 *    (and restart it) from the main thread.
 *  - tl_redis_url() is "redis://127.0.0.1:<port>" (CHATFLOW_REDIS_URL).
 *  - tl_redis_stop() sends SIGTERM and SIGKILLs after timeout_ms (tl_proc_stop()); true when it
 *    exited in time. tl_redis_kill() is kill -9 (a crash: the data is gone, as nothing persists).
 *  - tl_redis_restart() starts a stopped or killed server again on the same port and folder, with
 *    an empty data set (a new epoch for the bus); it waits for PING like tl_redis_start().
 *  - tl_redis_call() sends one inline command ("PING", "DBSIZE", "HGET k f") on a fresh
 *    connection and copies the reply into reply: its first line without CRLF, RESP type byte kept
 *    ("+PONG", ":3", "-ERR ...", "*2" for an array, "$-1" for a missing value), and for a bulk
 *    string "$" followed by its contents ("$17" is the string "17"); false when no whole reply
 *    came within timeout_ms. tl_redis_ping() is true on "+PONG".
 *  - tl_redis_done() stops the server (if running) and removes its folder. It also runs at exit,
 *    pass or fail, for every server started (so r must live until exit: static storage); a
 *    signal or crash is covered by the parent-death signal (the folder then stays, empty of
 *    data). Calling it twice does nothing more. tl_proc_kill_all() does not know this server.
 */
#ifndef CHATFLOW_TL_REDIS_H
#define CHATFLOW_TL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid; /* 0 when not running */
    int port;
    int runs; /* starts so far: names each run's log */
    char dir[512];
    char log_dir[512];
    char log_path[600]; /* the current run's log */
    char url[64];
} tl_redis;

bool tl_redis_start(tl_redis *r, const char *log_dir);
const char *tl_redis_url(const tl_redis *r);
bool tl_redis_stop(tl_redis *r, int timeout_ms);
void tl_redis_kill(tl_redis *r);
bool tl_redis_restart(tl_redis *r);
bool tl_redis_call(int port, const char *command, char *reply, size_t reply_len, int timeout_ms);
bool tl_redis_ping(int port, int timeout_ms);
/* A loopback port nobody listens on now (the kernel's pick, released at once). */
int tl_free_port(void);
void tl_redis_done(tl_redis *r);

#endif
