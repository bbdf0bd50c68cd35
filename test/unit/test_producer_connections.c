/* test_producer_connections — slots with generations: stale ids never reach a reused slot;
 * capacity; answer FIFO; release frees queued answers (ASan checks the frees). */
/* test-passes: asan */
#include <string.h>

#include "../../producer/connections.h"
#include "testlib.h"

int main(void)
{
    conn_table *t = conn_table_new(2);
    pconn *a = conn_table_acquire(t);
    pconn *b = conn_table_acquire(t);
    CHECK(a && b && a != b, "two connections in a table of two");
    CHECK(conn_table_acquire(t) == NULL, "full table: acquire fails");
    CHECK_INT(conn_table_active(t), 2, "2 active");
    uint32_t slot = a->slot, gen = a->generation;
    CHECK(conn_table_get(t, slot, gen) == a, "lookup by (slot, generation)");
    CHECK(conn_table_get(t, slot, gen + 1) == NULL, "wrong generation: not found");
    CHECK(conn_table_get(t, 99, gen) == NULL, "slot out of range: not found");

    conn_push_answer(a, answer_new("one", 3));
    conn_push_answer(a, answer_new("two", 3));
    conn_push_answer(a, answer_new("three", 5));
    CHECK_INT(a->out_count, 3, "three answers queued");
    answer *x = conn_pop_answer(a);
    CHECK(x && x->len == 3 && memcmp(x->text, "one", 3) == 0, "answers come out in order");
    answer_free(x);
    conn_table_release(t, a); /* frees "two" and "three" */
    CHECK(conn_table_get(t, slot, gen) == NULL, "released: the old id no longer resolves");
    pconn *c = conn_table_acquire(t);
    CHECK(c && c->slot == slot, "the slot is reused");
    CHECK(c->generation != gen, "with a new generation");
    CHECK(conn_table_get(t, slot, gen) == NULL,
          "a late answer for the old connection finds nothing");
    CHECK(conn_table_get(t, c->slot, c->generation) == c, "the new connection resolves");
    CHECK(c->out_head == NULL && c->unanswered == 0 && c->rx_buf == NULL,
          "the reused slot starts clean");
    CHECK(conn_table_at(t, b->slot) == b, "walk finds open connections");
    conn_table_release(t, b);
    CHECK(conn_table_at(t, b->slot) == NULL, "walk skips free slots");
    CHECK(conn_pop_answer(c) == NULL, "empty FIFO pops NULL");
    conn_table_free(t); /* frees c */
    return TEST_DONE();
}
