/* tl_rawws — see tl_rawws.h. */
#include "tl_rawws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "timeutil.h"

#define WS_OP_CONTINUATION 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define MAX_SERVER_FRAME (1u << 20)

static uint64_t deadline_after(int timeout_ms)
{
    return time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int tl_raw_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

void tl_raw_handshake_text(char *out, size_t len, int port, const char *path)
{
    snprintf(
        out, len,
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path, port);
}

bool tl_raw_send_all(int fd, const void *data, size_t len)
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

int tl_raw_read_status(int fd, int timeout_ms)
{
    char buf[2048];
    size_t have = 0;
    uint64_t deadline = deadline_after(timeout_ms);
    while (have < sizeof buf - 1 && time_mono_ns() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
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

bool tl_raw_wait_closed(int fd, int timeout_ms)
{
    char buf[4096];
    uint64_t deadline = deadline_after(timeout_ms);
    while (time_mono_ns() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
    }
    return false;
}

size_t tl_raw_frame(unsigned char *out, int opcode, bool fin, const void *payload, size_t len,
                    unsigned long long declared)
{
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
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

int tl_raw_ws_open(int port, const char *path, int rcvbuf)
{
    int fd = tl_raw_connect(port, rcvbuf);
    if (fd < 0) return -1;
    char req[512];
    tl_raw_handshake_text(req, sizeof req, port, path);
    if (!tl_raw_send_all(fd, req, strlen(req)) || tl_raw_read_status(fd, 5000) != 101) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool read_exact(int fd, unsigned char *buf, size_t n, uint64_t deadline, void (*idle)(void))
{
    size_t have = 0;
    while (have < n) {
        if (time_mono_ns() >= deadline) return false;
        if (idle) idle();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) continue;
        ssize_t r = recv(fd, buf + have, n - have, 0);
        if (r <= 0) return false;
        have += (size_t)r;
    }
    return true;
}

/* The payload length of a server frame whose first two header bytes are in hdr. */
static bool read_length(int fd, unsigned char *hdr, uint64_t deadline, void (*idle)(void),
                        unsigned long long *len)
{
    *len = hdr[1] & 0x7f;
    if (*len == 126) {
        if (!read_exact(fd, hdr + 2, 2, deadline, idle)) return false;
        *len = ((unsigned)hdr[2] << 8) | hdr[3];
    } else if (*len == 127) {
        if (!read_exact(fd, hdr + 2, 8, deadline, idle)) return false;
        *len = 0;
        for (int i = 2; i < 10; i++) *len = (*len << 8) | hdr[i];
    }
    return true;
}

static void close_payload(const unsigned char *payload, unsigned long long len, int *code,
                          char *reason, size_t reason_len)
{
    if (len >= 2) *code = (payload[0] << 8) | payload[1];
    size_t rl = len > 2 ? (size_t)len - 2 : 0;
    if (rl >= reason_len) rl = reason_len - 1;
    memcpy(reason, payload + 2, rl);
    reason[rl] = '\0';
}

bool tl_raw_read_close(int fd, int timeout_ms, int *code, char *reason, size_t reason_len,
                       long *frames, void (*idle)(void))
{
    uint64_t deadline = deadline_after(timeout_ms);
    unsigned char hdr[10], *payload = malloc(MAX_SERVER_FRAME);
    *frames = 0;
    *code = 0;
    reason[0] = '\0';
    bool found = false;
    unsigned long long len;
    while (payload && !found && read_exact(fd, hdr, 2, deadline, idle) &&
           read_length(fd, hdr, deadline, idle, &len) && len <= MAX_SERVER_FRAME &&
           read_exact(fd, payload, (size_t)len, deadline, idle)) {
        int opcode = hdr[0] & 0x0f;
        if (opcode == WS_OP_CLOSE) {
            close_payload(payload, len, code, reason, reason_len);
            found = true;
        } else if (opcode == WS_OP_TEXT || opcode == WS_OP_BINARY || opcode == WS_OP_CONTINUATION) {
            (*frames)++;
        }
    }
    free(payload);
    return found;
}

long tl_raw_ping_flood(int fd, int duration_ms, bool *dropped, void (*idle)(void))
{
    enum { PING_BODY = 125, PER_SEND = 64 };
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    unsigned char ping[PING_BODY + 14], batch[PER_SEND * (PING_BODY + 14)];
    char body[PING_BODY];
    memset(body, 'p', sizeof body);
    size_t one = tl_raw_frame(ping, WS_OP_PING, true, body, sizeof body, 0);
    for (int i = 0; i < PER_SEND; i++) memcpy(batch + i * one, ping, one);
    long pings = 0;
    *dropped = false;
    uint64_t deadline = deadline_after(duration_ms);
    while (time_mono_ns() < deadline) {
        ssize_t n = send(fd, batch, PER_SEND * one, MSG_NOSIGNAL);
        if (n > 0) {
            pings += n / (ssize_t)one;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            *dropped = true;
            break;
        } else {
            time_sleep_ms(5);
        }
        if (idle) idle();
    }
    return pings;
}
