/* broadcast_room — see broadcast_room.h. */
#include "broadcast_room.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- frames ---- */

bc_frame *bc_frame_new(const char *payload, size_t len, const char *seq)
{
    if (seq && seq[0] && !seqnum_valid(seq)) return NULL;
    bc_frame *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f) return NULL;
    f->refs = 1;
    f->len = len;
    snprintf(f->seq, sizeof f->seq, "%s", seq ? seq : "");
    memcpy(f->buf + LWS_PRE, payload, len);
    return f;
}

bc_frame *bc_frame_ref(bc_frame *f)
{
    f->refs++;
    return f;
}

void bc_frame_unref(bc_frame *f)
{
    if (f && --f->refs == 0) free(f);
}

bool bc_frame_after(const bc_frame *f, const char *seq)
{
    if (!f->seq[0]) return false;
    if (!seq || !seq[0]) return true;
    return seqnum_cmp(f->seq, seq) > 0;
}

/* ---- frame queue: a growable ring whose capacity is a power of two (index by mask) ---- */

void bc_fqueue_init(bc_fqueue *q) { memset(q, 0, sizeof *q); }

static bool fqueue_grow(bc_fqueue *q)
{
    size_t ncap = q->cap ? q->cap * 2 : 16;
    bc_frame **n = malloc(ncap * sizeof *n);
    if (!n) return false;
    for (size_t i = 0; i < q->len; i++) n[i] = q->items[(q->head + i) & (q->cap - 1)];
    free(q->items);
    q->items = n;
    q->cap = ncap;
    q->head = 0;
    return true;
}

bool bc_fqueue_push(bc_fqueue *q, bc_frame *f)
{
    if (q->len == q->cap && !fqueue_grow(q)) return false;
    q->items[(q->head + q->len) & (q->cap - 1)] = bc_frame_ref(f);
    q->len++;
    return true;
}

bc_frame *bc_fqueue_peek(const bc_fqueue *q) { return q->len ? q->items[q->head] : NULL; }

bc_frame *bc_fqueue_at(const bc_fqueue *q, size_t i)
{
    return i < q->len ? q->items[(q->head + i) & (q->cap - 1)] : NULL;
}

bc_frame *bc_fqueue_pop(bc_fqueue *q)
{
    if (!q->len) return NULL;
    bc_frame *f = q->items[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return f;
}

void bc_fqueue_clear(bc_fqueue *q)
{
    bc_frame *f;
    while ((f = bc_fqueue_pop(q))) bc_frame_unref(f);
    free(q->items);
    bc_fqueue_init(q);
}

/* ---- room cache: a fixed ring of the newest numbered frames ---- */

bool bc_room_cache_init(bc_room_cache *c, size_t cap)
{
    memset(c, 0, sizeof *c);
    if (cap) {
        c->ring = calloc(cap, sizeof *c->ring);
        if (!c->ring) return false;
    }
    c->cap = cap;
    return true;
}

void bc_room_cache_free(bc_room_cache *c)
{
    for (size_t i = 0; i < c->len; i++) bc_frame_unref(c->ring[(c->head + i) % c->cap]);
    free(c->ring);
    memset(c, 0, sizeof *c);
}

/* evicted_upto only moves up: a lost event may already have raised it above what is evicted. */
static void raise_evicted(bc_room_cache *c, const char *seq)
{
    if (!c->evicted_upto[0] || seqnum_cmp(seq, c->evicted_upto) > 0)
        snprintf(c->evicted_upto, sizeof c->evicted_upto, "%s", seq);
}

void bc_room_cache_push(bc_room_cache *c, bc_frame *f)
{
    if (!c->cap) {
        /* Nothing is kept, so everything pushed is at once "evicted". */
        raise_evicted(c, f->seq);
        return;
    }
    if (c->len == c->cap) {
        bc_frame *old = c->ring[c->head];
        raise_evicted(c, old->seq);
        bc_frame_unref(old);
        c->head = (c->head + 1) % c->cap;
        c->len--;
    }
    c->ring[(c->head + c->len) % c->cap] = bc_frame_ref(f);
    c->len++;
}

const char *bc_room_cache_oldest(const bc_room_cache *c)
{
    return c->len ? c->ring[c->head]->seq : NULL;
}

bool bc_room_cache_serves(const bc_room_cache *c, const char *since)
{
    if (!since || !since[0]) return false;
    /* Everything after evicted_upto is still here. Only when nothing was ever evicted or lost is
     * everything after the oldest here too (a lost event may lie above the oldest). */
    if (c->evicted_upto[0]) return seqnum_cmp(since, c->evicted_upto) >= 0;
    const char *oldest = bc_room_cache_oldest(c);
    return oldest && seqnum_cmp(oldest, since) <= 0;
}

void bc_room_cache_mark_lost(bc_room_cache *c, const char *seq)
{
    if (seqnum_valid(seq)) raise_evicted(c, seq);
}

bool bc_room_cache_copy_after(const bc_room_cache *c, const char *since, bc_fqueue *out)
{
    for (size_t i = 0; i < c->len; i++) {
        bc_frame *f = c->ring[(c->head + i) % c->cap];
        if (bc_frame_after(f, since) && !bc_fqueue_push(out, f)) return false;
    }
    return true;
}

/* ---- replay merge ---- */

bool bc_replay_begin(bc_replay *r, const bc_room_cache *c, const char *since)
{
    memset(r, 0, sizeof *r);
    snprintf(r->cursor, sizeof r->cursor, "%s", since ? since : "");
    snprintf(r->need_cover, sizeof r->need_cover, "%s", c->evicted_upto);
    bc_fqueue_init(&r->held);
    return bc_room_cache_copy_after(c, r->cursor, &r->held);
}

bool bc_replay_accept(bc_replay *r, const bc_frame *f)
{
    if (!bc_frame_after(f, r->cursor)) return false;
    memcpy(r->cursor, f->seq, sizeof r->cursor);
    return true;
}

/* True when every event newer than cursor is among the held frames: the cache held everything
 * after need_cover when the replay began, and live frames were added since. */
static bool cursor_reaches_held(const bc_replay *r)
{
    return !r->need_cover[0] || (r->cursor[0] && seqnum_cmp(r->cursor, r->need_cover) >= 0);
}

bc_replay_step bc_replay_after_page(const bc_replay *r, size_t rows_in_page, size_t page_limit)
{
    if (r->need_cover[0] && cursor_reaches_held(r)) return BC_REPLAY_DONE;
    if (rows_in_page >= page_limit) return BC_REPLAY_NEXT_PAGE;
    return cursor_reaches_held(r) ? BC_REPLAY_DONE : BC_REPLAY_RETRY;
}

bool bc_replay_finish(bc_replay *r, bc_fqueue *out)
{
    bool ok = true;
    bc_frame *f;
    while ((f = bc_fqueue_pop(&r->held))) {
        /* Frames without a sequence number cannot be ordered; they were live, so pass them on. */
        bool keep = !f->seq[0] || bc_replay_accept(r, f);
        if (keep && ok && !bc_fqueue_push(out, f)) ok = false;
        bc_frame_unref(f);
    }
    bc_fqueue_clear(&r->held);
    return ok;
}

void bc_replay_free(bc_replay *r) { bc_fqueue_clear(&r->held); }

/* ---- token bucket ---- */

bool bc_bucket_take(bc_bucket *b, uint64_t now_ns, double rate_per_s, double burst)
{
    if (!b->at_ns) {
        b->tokens = burst;
    } else if (now_ns > b->at_ns) {
        b->tokens += (double)(now_ns - b->at_ns) / 1e9 * rate_per_s;
        if (b->tokens > burst) b->tokens = burst;
    }
    b->at_ns = now_ns ? now_ns : 1;
    if (b->tokens < 1.0) return false;
    b->tokens -= 1.0;
    return true;
}
