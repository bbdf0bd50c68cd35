/*
 * test_batch_writer — the writer's bookkeeping while the database is unreachable (a closed
 * loopback port, so no server is needed): a batch withdrawn while the writer waits for more rows
 * to group-commit (the spill path does this; the writer once dereferenced the empty list), a
 * withdrawn batch never written, and a stop deadline that abandons what is still pending.
 */
/* test-passes: asan tsan */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "timeutil.h"
#include "../../consumer/batch_writer.h"

/* Port 1 on loopback refuses at once: every connection attempt fails fast, like a stopped
 * PostgreSQL. */
#define UNREACHABLE_DB "postgresql://chatflow@127.0.0.1:1/chatflow?connect_timeout=1"

static batch_writer *start_writer(long max_wait_ms)
{
    batch_writer_config cfg = {
        .database_url = UNREACHABLE_DB,
        .statement_timeout_ms = 1000,
        .batch_size = 100,
        .max_wait_ms = max_wait_ms,
        .max_backoff_ms = 200,
        .use_unnest = true,
    };
    char err[256] = "";
    batch_writer *w = batch_writer_start(&cfg, err, sizeof(err));
    CHECK(w != NULL, "writer starts with the database down (%s)", err);
    return w;
}

static void fill_batch(write_batch *b, write_row *rows, size_t n)
{
    memset(b, 0, sizeof(*b));
    memset(rows, 0, n * sizeof(*rows));
    b->rows = rows;
    b->n_rows = n;
}

/* A second holder keeps the writer in its group-commit wait; the withdrawal empties the pending
 * list under it. */
static void test_withdraw_during_group_commit_wait(void)
{
    batch_writer *w = start_writer(300);
    if (!w) return;
    batch_writer_hold(w);
    batch_writer_hold(w);
    write_row rows[3];
    write_batch b;
    fill_batch(&b, rows, 3);
    batch_writer_submit(w, &b);
    time_sleep_ms(50); /* the writer is now inside the wait (300 ms) */
    batch_writer_withdraw(w, &b);
    for (size_t i = 0; i < 3; i++)
        CHECK(rows[i].status == WRITE_WITHDRAWN, "row %zu withdrawn (status %d)", i,
              (int)rows[i].status);
    time_sleep_ms(500); /* past the wait's deadline: the writer wakes to an empty list */
    char detail[256];
    CHECK(!batch_writer_db_up(w, detail, sizeof(detail)), "database reported down: %s", detail);
    batch_writer_unhold(w);
    uint64_t t0 = time_mono_ns();
    batch_writer_stop(w, time_mono_ns() + 2000000000ull);
    CHECK(time_mono_ns() - t0 < 5000000000ull, "writer stops after the withdrawal");
}

/* With nothing else held, wait_or_withdraw takes the batch back once the stall limit passes. */
static void test_wait_or_withdraw_on_stall(void)
{
    batch_writer *w = start_writer(50);
    if (!w) return;
    batch_writer_hold(w);
    write_row rows[2];
    write_batch b;
    fill_batch(&b, rows, 2);
    batch_writer_submit(w, &b);
    bool settled = batch_writer_wait_or_withdraw(w, &b, 10000, 300);
    CHECK(settled, "the batch settles within the wait");
    for (size_t i = 0; i < 2; i++)
        CHECK(rows[i].status == WRITE_WITHDRAWN, "stalled row %zu withdrawn (status %d)", i,
              (int)rows[i].status);
    CHECK(batch_writer_stalled_ms(w) >= 300, "stall is reported (%ld ms)",
          batch_writer_stalled_ms(w));
    batch_writer_stop(w, time_mono_ns() + 2000000000ull);
}

/* A stop deadline ends the retries: what is still pending is abandoned, never left waiting. */
static void test_stop_deadline_abandons(void)
{
    batch_writer *w = start_writer(50);
    if (!w) return;
    batch_writer_hold(w);
    write_row rows[2];
    write_batch b;
    fill_batch(&b, rows, 2);
    batch_writer_submit(w, &b);
    batch_writer_begin_stop(w, time_mono_ns() + 300000000ull);
    CHECK(batch_writer_wait(w, &b, 5000), "the batch settles by the stop deadline");
    for (size_t i = 0; i < 2; i++)
        CHECK(rows[i].status == WRITE_ABANDONED, "row %zu abandoned (status %d)", i,
              (int)rows[i].status);
    batch_writer_stop(w, time_mono_ns());
}

int main(void)
{
    test_withdraw_during_group_commit_wait();
    test_wait_or_withdraw_on_stall();
    test_stop_deadline_abandons();
    return TEST_DONE();
}
