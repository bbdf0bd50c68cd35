/*
 * connections — the WebSocket thread's table of open connections, addressed by (slot, generation)
 * (the handle scheme of slot_table.h).
 *
 * Contract:
 *  - Other threads never hold a connection pointer: a publish request carries the connection's
 *    slot index and generation, and the answer is delivered only if conn_table_get() still finds
 *    that pair. A slot's generation changes every time it is reused, so a late answer for a
 *    closed connection is recognised and dropped, never sent to whoever took the slot next.
 *  - The table has a fixed capacity (the connection limit); acquire returns NULL when full.
 *  - Each connection owns a FIFO of answer frames waiting to be written (one lws_write per
 *    WRITEABLE) and its reassembly buffer; conn_table_release() frees both.
 *  - Not thread-safe: only the WebSocket service thread touches it.
 */
#ifndef CHATFLOW_PRODUCER_CONNECTIONS_H
#define CHATFLOW_PRODUCER_CONNECTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "room.h"
#include "slot_table.h"
#include "ws_frame.h"

struct lws;

/* One answer frame (ack or error), with lws's LWS_PRE bytes of headroom before the text. */
typedef struct answer {
    struct answer *next;
    size_t len;
    bool refusal;        /* a frame refused at a cap: never counted in unanswered */
    unsigned char *text; /* points into storage, after the headroom */
    unsigned char storage[];
} answer;

/* Copies len bytes of text into a new answer; NULL on allocation failure. */
answer *answer_new(const char *text, size_t len);
void answer_free(answer *a);

typedef struct pconn {
    struct lws *wsi;
    uint32_t slot;
    uint32_t generation;
    char room[ROOM_ID_BUF]; /* from /chat/{roomId}, valid (room.h) */
    int shard;              /* room_shard(room, queue shards) */
    char client_ip[64];

    /* CHATFLOW_AUTH on: the identity its token proved at the handshake (auth.h). Frames must
     * carry this userId; the rate limiter counts against it. */
    bool authed;
    bool token_expired; /* close with CLOSE_TOKEN_EXPIRED at the next WRITEABLE */
    uint32_t user_id;
    char user_id_str[8];
    char username[21]; /* the token's name; "" when it has none (the frame's is used) */
    int64_t token_exp_s;

    ws_frame *rx_buf; /* frame reassembly; NULL until a frame comes in pieces */

    /* answers waiting to be written */
    answer *out_head, *out_tail;
    size_t out_count;

    int unanswered;   /* frames received whose answer is not written yet */
    int at_publisher; /* of those, how many the publisher still holds */
    int refusals;     /* refusal answers queued (frames past a cap; not in unanswered) */
    bool reads_paused;
    bool closing; /* close with "going away" at the next WRITEABLE */

    bool typed_once; /* a typing indicator was published (last_typing_ns is set) */
    uint64_t last_typing_ns;
} pconn;

typedef struct conn_table conn_table;

conn_table *conn_table_new(size_t capacity);
void conn_table_free(conn_table *t);
/* A zeroed connection in a free slot with a new generation; NULL when the table is full. */
pconn *conn_table_acquire(conn_table *t);
/* The connection in slot with that generation, or NULL if it closed (or the slot was reused). */
pconn *conn_table_get(conn_table *t, uint32_t slot, uint32_t generation);
/* Frees the connection's buffers and answers and returns its slot to the free list. */
void conn_table_release(conn_table *t, pconn *c);
size_t conn_table_active(const conn_table *t);
size_t conn_table_capacity(const conn_table *t);
/* The connection in slot i if one is open there (for walks at shutdown), else NULL. */
pconn *conn_table_at(conn_table *t, size_t i);

void conn_push_answer(pconn *c, answer *a);
/* Removes and returns the oldest answer, or NULL. */
answer *conn_pop_answer(pconn *c);

#endif
