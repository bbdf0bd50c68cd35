/*
 * tl_rawws — raw-socket WebSocket for the hostile-client tests: what a real WebSocket library
 * would never send (byte-by-byte handshakes, frames declaring 2^62 bytes, ping floods). Part of
 * libtestsupport (tl_).
 *
 * Contract:
 *  - tl_raw_connect(port, rcvbuf): a blocking TCP connection to 127.0.0.1:port (TCP_NODELAY), -1
 *    on failure; rcvbuf > 0 shrinks the socket's receive buffer first (a reader that falls
 *    behind quickly). tl_raw_ws_open() also completes an upgrade to path (-1 unless 101).
 *  - tl_raw_handshake_text(): the upgrade request for a path; tl_raw_send_all(): every byte or
 *    false; tl_raw_read_status(): the HTTP status of the answer head, read byte by byte so no
 *    frame after it is consumed (0 when none came).
 *  - tl_raw_wait_closed(): true when the peer closed the socket (EOF or reset) in time.
 *  - tl_raw_frame(): one masked client frame into out (room for len + 14 bytes), any opcode;
 *    declared != 0 puts that length in the header instead of len. Returns its size.
 *  - tl_raw_read_close(): reads unmasked server frames until a close frame (true; code and
 *    reason set) or the end; *frames counts the data frames before it.
 *  - tl_raw_ping_flood(): sends 125-byte pings on a non-blocking socket for duration_ms without
 *    reading a pong; returns how many went out, *dropped when the peer cut the connection.
 *  - idle, where taken and not NULL, runs between polls (a test keeps its other connections
 *    serviced while it waits here).
 */
#ifndef CHATFLOW_TL_RAWWS_H
#define CHATFLOW_TL_RAWWS_H

#include <stdbool.h>
#include <stddef.h>

int tl_raw_connect(int port, int rcvbuf);
int tl_raw_ws_open(int port, const char *path, int rcvbuf);
void tl_raw_handshake_text(char *out, size_t len, int port, const char *path);
bool tl_raw_send_all(int fd, const void *data, size_t len);
int tl_raw_read_status(int fd, int timeout_ms);
bool tl_raw_wait_closed(int fd, int timeout_ms);
size_t tl_raw_frame(unsigned char *out, int opcode, bool fin, const void *payload, size_t len,
                    unsigned long long declared);
bool tl_raw_read_close(int fd, int timeout_ms, int *code, char *reason, size_t reason_len,
                       long *frames, void (*idle)(void));
long tl_raw_ping_flood(int fd, int duration_ms, bool *dropped, void (*idle)(void));

#endif
