/*
 * ws_frame — reassembly of one WebSocket message that libwebsockets hands over in pieces.
 *
 * lws calls RECEIVE once per piece it read: a message that spans socket reads (or is sent in
 * fragments) arrives in several calls, and is complete only when the piece is the final
 * fragment AND no payload of it is left to read (ws_frame_last_piece()).
 *
 * Contract:
 *  - ws_frame_gather(&f, cap, piece, len, last, &data, &data_len) adds one piece. A message of at
 *    most cap bytes comes back WS_FRAME_COMPLETE with data/data_len: the piece itself when the
 *    message came in one piece (no copy), else the gathered bytes, valid until the next call.
 *    A message longer than cap is not kept: its remaining pieces are dropped and it comes back
 *    once, at its last piece, as WS_FRAME_TOO_LARGE. WS_FRAME_PARTIAL: more pieces to come.
 *    WS_FRAME_NO_MEMORY: the buffer could not be allocated (the caller closes the connection).
 *  - The state (*f) is NULL until a message first comes in pieces; then one allocation of cap
 *    bytes is kept for the connection's life and freed by ws_frame_free().
 *  - Plain memory, no lws state: one thread per connection, like everything about it.
 */
#ifndef CHATFLOW_WS_FRAME_H
#define CHATFLOW_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>

struct lws;

typedef struct ws_frame {
    size_t len;           /* bytes gathered of the current message */
    bool over;            /* the current message passed the cap: its rest is dropped */
    unsigned char data[]; /* cap bytes */
} ws_frame;

typedef enum {
    WS_FRAME_PARTIAL,
    WS_FRAME_COMPLETE,
    WS_FRAME_TOO_LARGE,
    WS_FRAME_NO_MEMORY,
} ws_frame_status;

/* True when the piece lws just delivered ends its message. */
bool ws_frame_last_piece(struct lws *wsi);
ws_frame_status ws_frame_gather(ws_frame **f, size_t cap, const void *piece, size_t len, bool last,
                                const char **data, size_t *data_len);
void ws_frame_free(ws_frame *f);

#endif
