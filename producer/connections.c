/* connections — slot table with generations and per-connection answer FIFOs (contract in
 * connections.h). */
#include "connections.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

struct conn_table {
    pconn *slots;
    uint32_t *free_stack;          /* indexes of free slots; top at free_count - 1 */
    size_t free_count;
    size_t capacity;
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
    t->slots = calloc(capacity, sizeof *t->slots);
    t->free_stack = malloc(capacity * sizeof *t->free_stack);
    if (!t->slots || !t->free_stack) {
        conn_table_free(t);
        return NULL;
    }
    t->capacity = capacity;
    /* Lowest slot on top, so slots are reused from the front. */
    for (size_t i = 0; i < capacity; i++) t->free_stack[i] = (uint32_t)(capacity - 1 - i);
    t->free_count = capacity;
    return t;
}

void conn_table_free(conn_table *t)
{
    if (!t) return;
    if (t->slots)
        for (size_t i = 0; i < t->capacity; i++)
            if (t->slots[i].in_use) conn_table_release(t, &t->slots[i]);
    free(t->slots);
    free(t->free_stack);
    free(t);
}

pconn *conn_table_acquire(conn_table *t)
{
    if (t->free_count == 0) return NULL;
    uint32_t slot = t->free_stack[--t->free_count];
    pconn *c = &t->slots[slot];
    uint32_t generation = c->generation + 1;
    memset(c, 0, sizeof *c);
    c->slot = slot;
    c->generation = generation;
    c->in_use = true;
    return c;
}

pconn *conn_table_get(conn_table *t, uint32_t slot, uint32_t generation)
{
    if (slot >= t->capacity) return NULL;
    pconn *c = &t->slots[slot];
    return c->in_use && c->generation == generation ? c : NULL;
}

void conn_table_release(conn_table *t, pconn *c)
{
    if (!c->in_use) return;
    answer *a;
    while ((a = conn_pop_answer(c))) answer_free(a);
    free(c->rx_buf);
    c->rx_buf = NULL;
    c->in_use = false;
    c->wsi = NULL;
    c->generation++;               /* stale (slot, generation) pairs stop matching at once */
    t->free_stack[t->free_count++] = c->slot;
}

size_t conn_table_active(const conn_table *t) { return t->capacity - t->free_count; }
size_t conn_table_capacity(const conn_table *t) { return t->capacity; }

pconn *conn_table_at(conn_table *t, size_t i)
{
    return i < t->capacity && t->slots[i].in_use ? &t->slots[i] : NULL;
}

void conn_push_answer(pconn *c, answer *a)
{
    a->next = NULL;
    if (c->out_tail) c->out_tail->next = a;
    else c->out_head = a;
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
