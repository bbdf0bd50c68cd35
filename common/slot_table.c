/* slot_table — fixed slots with generations and a free stack (contract in slot_table.h). */
#include "slot_table.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t generation;
    bool held;
} slot_meta;

struct slot_table {
    unsigned char *objs; /* capacity * obj_size bytes */
    size_t obj_size;
    slot_meta *meta;
    uint32_t *free_stack; /* indexes of free slots; top at free_count - 1 */
    size_t free_count;
    size_t capacity;
};

slot_table *slot_table_new(size_t capacity, size_t obj_size)
{
    slot_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->objs = calloc(capacity ? capacity : 1, obj_size ? obj_size : 1);
    t->meta = calloc(capacity ? capacity : 1, sizeof *t->meta);
    t->free_stack = malloc((capacity ? capacity : 1) * sizeof *t->free_stack);
    if (!t->objs || !t->meta || !t->free_stack) {
        slot_table_free(t);
        return NULL;
    }
    t->obj_size = obj_size;
    t->capacity = capacity;
    /* Lowest slot on top, so a new table fills from the front. */
    for (size_t i = 0; i < capacity; i++) t->free_stack[i] = (uint32_t)(capacity - 1 - i);
    t->free_count = capacity;
    return t;
}

void slot_table_free(slot_table *t)
{
    if (!t) return;
    free(t->objs);
    free(t->meta);
    free(t->free_stack);
    free(t);
}

static void *obj_at(const slot_table *t, size_t i) { return t->objs + i * t->obj_size; }

void *slot_table_acquire(slot_table *t, slot_ref *ref)
{
    if (t->free_count == 0) return NULL;
    uint32_t slot = t->free_stack[--t->free_count];
    slot_meta *m = &t->meta[slot];
    m->generation++;
    m->held = true;
    void *obj = obj_at(t, slot);
    memset(obj, 0, t->obj_size);
    ref->slot = slot;
    ref->generation = m->generation;
    return obj;
}

void *slot_table_get(const slot_table *t, slot_ref ref)
{
    if (ref.slot >= t->capacity) return NULL;
    const slot_meta *m = &t->meta[ref.slot];
    return m->held && m->generation == ref.generation ? obj_at(t, ref.slot) : NULL;
}

void slot_table_release(slot_table *t, slot_ref ref)
{
    if (!slot_table_get(t, ref)) return;
    slot_meta *m = &t->meta[ref.slot];
    m->held = false;
    m->generation++; /* stale refs stop matching at once, before any reuse */
    t->free_stack[t->free_count++] = ref.slot;
}

void *slot_table_at(const slot_table *t, size_t i, slot_ref *ref)
{
    if (i >= t->capacity || !t->meta[i].held) return NULL;
    if (ref) *ref = (slot_ref){.slot = (uint32_t)i, .generation = t->meta[i].generation};
    return obj_at(t, i);
}

size_t slot_table_active(const slot_table *t) { return t->capacity - t->free_count; }
size_t slot_table_capacity(const slot_table *t) { return t->capacity; }
