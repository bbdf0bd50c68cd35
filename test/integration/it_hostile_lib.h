/*
 * it_hostile_lib — raw-socket helpers for the hostile-client tests (it_hostile_*.c): what a real
 * WebSocket library would never send (byte-by-byte handshakes, frames declaring 2^62 bytes, ping
 * floods), plus reading a process's resident memory and open descriptors from /proc.
 *
 *  - hs_connect(port): a blocking TCP connection to 127.0.0.1:port (TCP_NODELAY), -1 on failure;
 *    rcvbuf > 0 shrinks the socket's receive buffer first (a reader that falls behind quickly).
 *  - hs_handshake_text(): the upgrade request for a path.
 *  - hs_read_status(): the HTTP status of the answer head (0 when none came).
 *  - hs_wait_closed(): true when the peer closed the socket (EOF or reset) in time.
 *  - hs_frame(): one masked client frame (any opcode, any declared length).
 *  - hs_read_close(): reads server frames until a close frame; its code and reason (idle, when
 *    given, runs between reads).
 *  - hs_rss_kb(pid), hs_open_fds(pid): VmRSS and the number of open descriptors.
 * Header-only (static inline): shared by the two hostile-client tests and, for hs_rss_kb, the
 * idle-connection benchmark (test/bench/bench_idle_conns.c).
 */
#ifndef CHATFLOW_IT_HOSTILE_LIB_H
#define CHATFLOW_IT_HOSTILE_LIB_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "timeutil.h"

static inline int hs_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static inline void hs_handshake_text(char *out, size_t len, int port, const char *path)
{
    snprintf(out, len,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             path, port);
}

static inline bool hs_send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads up to the end of the answer head (exactly: byte by byte past the blank line is not
 * needed, the server sends nothing unasked after a 101); returns the HTTP status, 0 if none. */
static inline int hs_read_status(int fd, int timeout_ms)
{
    char buf[2048];
    size_t have = 0;
    uint64_t deadline = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (have < sizeof buf - 1 && time_mono_ns() < deadline) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 50) <= 0) continue;
        ssize_t n = recv(fd, buf + have, 1, 0); /* one byte at a time: leave any frame unread */
        if (n <= 0) break;
        have += (size_t)n;
        buf[have] = '\0';
        if (have >= 4 && memcmp(buf + have - 4, "\r\n\r\n", 4) == 0) break;
    }
    buf[have] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) status = 0;
    return status;
}

static inline bool hs_wait_closed(int fd, int timeout_ms)
{
    char buf[4096];
    uint64_t deadline = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (time_mono_ns() < deadline) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 50) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
    }
    return false;
}

/* A masked client frame into out (room for len + 14 bytes); declared != 0 puts that length in
 * the header instead of len. Returns the frame's size. */
static inline size_t hs_frame(unsigned char *out, int opcode, bool fin, const void *payload, size_t len,
                              unsigned long long declared)
{
    static const unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    size_t h = 0;
    out[h++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    unsigned long long n = declared ? declared : len;
    if (n < 126) {
        out[h++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[h++] = (unsigned char)(n >> (8 * i));
    }
    memcpy(out + h, mask, 4);
    h += 4;
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++) out[h + i] = p[i] ^ mask[i & 3];
    return h + len;
}

/* An upgraded raw WebSocket to path; -1 when the upgrade failed. */
static inline int hs_ws_open(int port, const char *path, int rcvbuf)
{
    int fd = hs_connect(port, rcvbuf);
    if (fd < 0) return -1;
    char req[512];
    hs_handshake_text(req, sizeof req, port, path);
    if (!hs_send_all(fd, req, strlen(req)) || hs_read_status(fd, 5000) != 101) {
        close(fd);
        return -1;
    }
    return fd;
}

/* idle, when not NULL, runs between polls (a test keeps its other connections serviced). */
static inline bool hs_read_exact(int fd, unsigned char *buf, size_t n, uint64_t deadline, void (*idle)(void))
{
    size_t have = 0;
    while (have < n) {
        if (time_mono_ns() >= deadline) return false;
        if (idle) idle();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 50) <= 0) continue;
        ssize_t r = recv(fd, buf + have, n - have, 0);
        if (r <= 0) return false;
        have += (size_t)r;
    }
    return true;
}

/* Reads unmasked server frames until a close frame (true, code and reason set) or the end;
 * *frames counts the data frames read before it. */
static inline bool hs_read_close(int fd, int timeout_ms, int *code, char *reason, size_t reason_len, long *frames,
                                 void (*idle)(void))
{
    uint64_t deadline = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    unsigned char hdr[10], *payload = malloc(1 << 20);
    *frames = 0;
    *code = 0;
    reason[0] = '\0';
    bool found = false;
    while (payload && hs_read_exact(fd, hdr, 2, deadline, idle)) {
        int opcode = hdr[0] & 0x0f;
        unsigned long long len = hdr[1] & 0x7f;
        if (len == 126) {
            if (!hs_read_exact(fd, hdr + 2, 2, deadline, idle)) break;
            len = ((unsigned)hdr[2] << 8) | hdr[3];
        } else if (len == 127) {
            if (!hs_read_exact(fd, hdr + 2, 8, deadline, idle)) break;
            len = 0;
            for (int i = 2; i < 10; i++) len = (len << 8) | hdr[i];
        }
        if (len > (1u << 20) || !hs_read_exact(fd, payload, (size_t)len, deadline, idle)) break;
        if (opcode == 0x8) {
            if (len >= 2) *code = (payload[0] << 8) | payload[1];
            size_t rl = len > 2 ? (size_t)len - 2 : 0;
            if (rl >= reason_len) rl = reason_len - 1;
            memcpy(reason, payload + 2, rl);
            reason[rl] = '\0';
            found = true;
            break;
        }
        if (opcode == 0x1 || opcode == 0x2 || opcode == 0x0) (*frames)++;
    }
    free(payload);
    return found;
}

static inline long hs_rss_kb(pid_t pid)
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

static inline int hs_open_fds(pid_t pid)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls /proc/%d/fd 2>/dev/null | wc -l", (int)pid);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

#endif
