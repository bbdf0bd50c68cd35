/*
 * broadcast_room — the broadcaster's data structures, free of sockets so they can be unit-tested:
 * shared frames, per-subscriber frame queues, the per-room replay cache and the replay merge.
 *
 * Contract:
 *  - Everything here is used by one thread at a time (the lws service thread; a replay worker
 *    builds frames and hands them over through a workqueue). Reference counts are plain
 *    integers for that reason.
 *  - bc_frame: one serialised BroadcastEvent with LWS_PRE bytes of headroom before the payload
 *    (lws_write needs it) and its sequence number ("" when unknown). Built once per message and
 *    shared by every queue that holds it; freed when the last reference goes.
 *  - bc_fqueue: an unbounded FIFO of frame references (the caller enforces its own bound).
 *    push takes a NEW reference (the caller keeps its own); pop hands the queue's reference to
 *    the caller.
 *  - bc_room_cache: the newest `cap` frames of a room that have a sequence number, oldest first.
 *    Frames are pushed in increasing sequence order. Because every event of the room passes
 *    through the cache, it holds EVERY event after `evicted_upto` (the newest sequence number
 *    ever pushed out, "" when none was): a subscriber asking since=S is served from the cache
 *    alone (bc_room_cache_serves) when S >= evicted_upto (something was evicted) or the oldest
 *    cached frame has seq <= S: nothing newer than S can be missing then. Adjacency of sequence
 *    numbers cannot be known (SQS numbers are not consecutive), hence "<= S", not "== S + 1";
 *    when nothing was ever evicted, older events may predate this process and live only in the
 *    store.
 *  - An event of the room that never reached the cache (the broadcaster had to drop it: no room
 *    in its hand-off queue, out of memory) breaks "every event after evicted_upto" unless it is
 *    accounted for: bc_room_cache_mark_lost() counts it as evicted, i.e. raises evicted_upto to
 *    its sequence number (never lowers it; evictions never lower it either). From then on a
 *    since=S below the lost event is refused by bc_room_cache_serves() (the replay goes to the
 *    store, and bc_replay_begin() makes the store cover at least the lost event), while S at or
 *    above it is still served: nothing newer than the lost event can be missing, since the room's
 *    later events reach the cache in order. So the cache is "incomplete" exactly below the lost
 *    event, and whole again by itself — no flag to clear, nothing indexed by room. Because
 *    evicted_upto may now lie above cached frames, the cache serves S only when S >= evicted_upto
 *    once anything was evicted or lost; "oldest <= S" is used only when nothing ever was.
 *  - bc_replay: the state of one subscriber that replays from the history store.
 *    bc_replay_begin() snapshots the cache frames newer than since into `held` and remembers
 *    the cache's evicted_upto as `need_cover`; live frames published meanwhile are appended to
 *    `held`. History rows are accepted only when strictly newer than `cursor` (the newest seq
 *    queued for the subscriber). After each history page bc_replay_after_page() says whether to
 *    ask for another page, retry later (the store does not yet reach need_cover: events that
 *    left the cache are not committed yet), or finish; bc_replay_finish() then moves the held
 *    frames newer than cursor to the send queue. The result: every event > since exactly once,
 *    in increasing order.
 *  - bc_bucket: a token bucket (rate tokens a second, at most burst), for throttling what one
 *    connection may send. bc_bucket_take() refills by the time elapsed, then takes one token if
 *    there is one. Time is a monotonic nanosecond clock passed in (testable).
 */
#ifndef CHATFLOW_BROADCAST_ROOM_H
#define CHATFLOW_BROADCAST_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "seqnum.h"

typedef struct bc_frame {
    size_t refs;
    size_t len;           /* payload bytes */
    char seq[SEQNUM_BUF]; /* "" when the message had no (valid) sequence number */
    unsigned char buf[];  /* LWS_PRE headroom, then len bytes of payload */
} bc_frame;

/* refs = 1. seq may be NULL or "" (no sequence number) or must be valid. NULL on OOM. */
bc_frame *bc_frame_new(const char *payload, size_t len, const char *seq);
bc_frame *bc_frame_ref(bc_frame *f);
void bc_frame_unref(bc_frame *f);
static inline unsigned char *bc_frame_payload(bc_frame *f) { return f->buf + LWS_PRE; }
/* True when f has a sequence number strictly greater than seq ("" seq: any numbered frame). */
bool bc_frame_after(const bc_frame *f, const char *seq);

typedef struct {
    bc_frame **items;
    size_t cap, head, len;
} bc_fqueue;

void bc_fqueue_init(bc_fqueue *q);
bool bc_fqueue_push(bc_fqueue *q, bc_frame *f); /* takes a new reference; false on OOM */
bc_frame *bc_fqueue_peek(const bc_fqueue *q);   /* NULL when empty */
bc_frame *bc_fqueue_pop(bc_fqueue *q);          /* the queue's reference moves to the caller */
bc_frame *bc_fqueue_at(const bc_fqueue *q, size_t i);
static inline size_t bc_fqueue_len(const bc_fqueue *q) { return q->len; }
void bc_fqueue_clear(bc_fqueue *q); /* drops every reference, frees storage */

typedef struct {
    bc_frame **ring;
    size_t cap, head, len;
    char evicted_upto[SEQNUM_BUF];
} bc_room_cache;

/* cap 0 is allowed (nothing cached). False on OOM. */
bool bc_room_cache_init(bc_room_cache *c, size_t cap);
void bc_room_cache_free(bc_room_cache *c);
/* Takes a new reference to f (which must have a sequence number newer than the newest cached);
 * the oldest frame leaves when full. */
void bc_room_cache_push(bc_room_cache *c, bc_frame *f);
const char *bc_room_cache_oldest(const bc_room_cache *c); /* NULL when empty */
bool bc_room_cache_serves(const bc_room_cache *c, const char *since);
/* An event with this (valid) sequence number never reached the cache: it counts as evicted. */
void bc_room_cache_mark_lost(bc_room_cache *c, const char *seq);
/* Appends (new references to) the cached frames with seq > since to out. False on OOM. */
bool bc_room_cache_copy_after(const bc_room_cache *c, const char *since, bc_fqueue *out);

typedef enum {
    BC_REPLAY_NEXT_PAGE, /* the page was full: ask the store for more after cursor */
    BC_REPLAY_RETRY,     /* the store ends before need_cover: ask again after a pause */
    BC_REPLAY_DONE,      /* cursor joins the held frames: call bc_replay_finish() */
} bc_replay_step;

typedef struct {
    char cursor[SEQNUM_BUF];     /* newest seq queued for the subscriber (starts at since) */
    char need_cover[SEQNUM_BUF]; /* the cache's evicted_upto when the replay began ("" none) */
    bc_fqueue held;              /* cache snapshot after since, then live frames */
} bc_replay;

bool bc_replay_begin(bc_replay *r, const bc_room_cache *c, const char *since);
/* A history frame: true (and cursor advances) when it is strictly newer than cursor. */
bool bc_replay_accept(bc_replay *r, const bc_frame *f);
bc_replay_step bc_replay_after_page(const bc_replay *r, size_t rows_in_page, size_t page_limit);
/* Moves the held frames newer than cursor (in order, each strictly newer than the previous)
 * to out and clears held. False on OOM (held is cleared either way). */
bool bc_replay_finish(bc_replay *r, bc_fqueue *out);
void bc_replay_free(bc_replay *r);

typedef struct {
    double tokens;
    uint64_t at_ns; /* time of the last refill; 0: never used (starts full) */
} bc_bucket;

bool bc_bucket_take(bc_bucket *b, uint64_t now_ns, double rate_per_s, double burst);

#endif
