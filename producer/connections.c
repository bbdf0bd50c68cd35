/* connections — slot table with generations and per-connection answer FIFOs (contract in
 * connections.h). */
#include "connections.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

/* The connections themselves live in the slot table's storage, one pconn per slot. */
struct conn_table {
    slot_table *slots;
};

answer *answer_new(const char *text, size_t len)
{
    answer *a = malloc(sizeof *a + LWS_PRE + len + 1);
    if (!a) return NULL;
    a->next = NULL;
    a->len = len;
    a->refusal = false;
    a->text = a->storage + LWS_PRE;
    memcpy(a->text, text, len);
    a->text[len] = '\0';
    return a;
}

void answer_free(answer *a) { free(a); }

conn_table *conn_table_new(size_t capacity)
{
    conn_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (!(t->slots = slot_table_new(capacity, sizeof(pconn)))) {
        free(t);
        return NULL;
    }
    return t;
}

void conn_table_free(conn_table *t)
{
    if (!t) return;
    for (size_t i = 0; i < slot_table_capacity(t->slots); i++) {
        pconn *c = conn_table_at(t, i);
        if (c) conn_table_release(t, c);
    }
    slot_table_free(t->slots);
    free(t);
}

pconn *conn_table_acquire(conn_table *t)
{
    slot_ref ref;
    pconn *c = slot_table_acquire(t->slots, &ref);
    if (!c) return NULL;
    c->slot = ref.slot;
    c->generation = ref.generation;
    return c;
}

pconn *conn_table_get(conn_table *t, uint32_t slot, uint32_t generation)
{
    return slot_table_get(t->slots, (slot_ref){.slot = slot, .generation = generation});
}

void conn_table_release(conn_table *t, pconn *c)
{
    slot_ref ref = {.slot = c->slot, .generation = c->generation};
    if (!slot_table_get(t->slots, ref)) return;
    answer *a;
    while ((a = conn_pop_answer(c))) answer_free(a);
    ws_frame_free(c->rx_buf);
    c->rx_buf = NULL;
    c->wsi = NULL;
    slot_table_release(t->slots, ref); /* stale (slot, generation) pairs stop matching at once */
}

size_t conn_table_active(const conn_table *t) { return slot_table_active(t->slots); }
size_t conn_table_capacity(const conn_table *t) { return slot_table_capacity(t->slots); }

pconn *conn_table_at(conn_table *t, size_t i) { return slot_table_at(t->slots, i, NULL); }

void conn_push_answer(pconn *c, answer *a)
{
    a->next = NULL;
    if (c->out_tail)
        c->out_tail->next = a;
    else
        c->out_head = a;
    c->out_tail = a;
    c->out_count++;
}

answer *conn_pop_answer(pconn *c)
{
    answer *a = c->out_head;
    if (!a) return NULL;
    c->out_head = a->next;
    if (!c->out_head) c->out_tail = NULL;
    c->out_count--;
    a->next = NULL;
    return a;
}
