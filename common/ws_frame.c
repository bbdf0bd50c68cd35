/* ws_frame — gathering a message's pieces up to a cap (contract in ws_frame.h). */
#include "ws_frame.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

bool ws_frame_last_piece(struct lws *wsi)
{
    return lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
}

/* Ends the current message: the next piece starts a new one (the bytes stay until then). */
static ws_frame_status finish(ws_frame *f, ws_frame_status st)
{
    f->len = 0;
    f->over = false;
    return st;
}

ws_frame_status ws_frame_gather(ws_frame **fp, size_t cap, const void *piece, size_t len, bool last,
                                const char **data, size_t *data_len)
{
    ws_frame *f = *fp;
    bool in_progress = f && (f->len > 0 || f->over);
    if (!in_progress && last && len <= cap) { /* the common case: one piece, no copy */
        *data = piece;
        *data_len = len;
        return WS_FRAME_COMPLETE;
    }
    if (!f) {
        if (!(f = malloc(sizeof *f + cap))) return WS_FRAME_NO_MEMORY;
        f->len = 0;
        f->over = false;
        *fp = f;
    }
    if (!f->over) {
        if (f->len + len > cap) {
            f->over = true;
        } else {
            memcpy(f->data + f->len, piece, len);
            f->len += len;
        }
    }
    if (!last) return WS_FRAME_PARTIAL;
    if (f->over) return finish(f, WS_FRAME_TOO_LARGE);
    *data = (const char *)f->data;
    *data_len = f->len;
    return finish(f, WS_FRAME_COMPLETE);
}

void ws_frame_free(ws_frame *f) { free(f); }
