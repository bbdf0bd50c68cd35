/*
 * slot_table — (slot, generation) handles for objects one thread owns while other threads may
 * still answer for them after they are gone.
 *
 * A service thread owns its connections; work it hands to other threads (a publish, a page of
 * history) comes back later, when the connection may have closed and its memory been reused.
 * Such work therefore carries a slot_ref, never a pointer: the answer is applied only when
 * slot_table_get() still resolves that ref.
 *
 * Contract:
 *  - The table has a fixed capacity and keeps, per slot, an object of obj_size bytes (the
 *    object itself, or a pointer to it when something else allocates it).
 *  - slot_table_acquire() takes a free slot — the most recently released one first; a new
 *    table hands out slot 0, 1, ... in order — zeroes its object, gives the slot a new
 *    generation and returns the object (and its ref); NULL when every slot is taken.
 *  - slot_table_get() returns the object while the ref's slot is held with that generation,
 *    else NULL. slot_table_release() frees the slot and moves its generation on at once, so a
 *    stale ref never resolves again, not even to whoever takes the slot next. Releasing a stale
 *    ref does nothing.
 *  - Not thread-safe: only the owning thread calls these; other threads only carry refs.
 */
#ifndef CHATFLOW_SLOT_TABLE_H
#define CHATFLOW_SLOT_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t slot;
    uint32_t generation;
} slot_ref;

typedef struct slot_table slot_table;

/* NULL on out of memory. */
slot_table *slot_table_new(size_t capacity, size_t obj_size);
/* Frees the table and the objects' storage (not what they point to: release those first). */
void slot_table_free(slot_table *t);
void *slot_table_acquire(slot_table *t, slot_ref *ref);
void *slot_table_get(const slot_table *t, slot_ref ref);
void slot_table_release(slot_table *t, slot_ref ref);
/* The object in slot i while it is held (for walks), else NULL; *ref (if given) is its ref. */
void *slot_table_at(const slot_table *t, size_t i, slot_ref *ref);
size_t slot_table_active(const slot_table *t);
size_t slot_table_capacity(const slot_table *t);

#endif
