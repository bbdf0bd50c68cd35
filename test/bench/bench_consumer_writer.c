/*
 * bench_consumer_writer — the batch writer alone against PostgreSQL: rows/s of each flush method
 * (COPY into a staging table vs one prepared INSERT ... SELECT FROM unnest(arrays)) at a given
 * flush size, with the consumer's real code path (write_row_init, batch_writer, ON CONFLICT,
 * user_activity upsert). Each flush is one submitted batch of exactly --batch rows, as group
 * commit produces when that many rows are waiting.
 *
 *   bench_consumer_writer --database-url URL --method copy|unnest --batch B --rows N
 *
 * Needs the schema (chatflow-consumer --migrate) in that database; inserts fresh rows (new ids).
 * Prints one JSON line: {"method", "batch", "rows", "seconds", "rows_per_s"}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"
#include "timeutil.h"
#include "uuid.h"
#include "../../consumer/batch_writer.h"

int main(int argc, char **argv)
{
    const char *url = NULL, *method = "copy";
    long batch = 100, rows = 20000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--database-url") == 0)
            url = argv[i + 1];
        else if (strcmp(argv[i], "--method") == 0)
            method = argv[i + 1];
        else if (strcmp(argv[i], "--batch") == 0)
            batch = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rows") == 0)
            rows = atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_consumer_writer --database-url URL --method copy|unnest "
                            "--batch B --rows N\n");
            return 2;
        }
    }
    if (!url || batch < 1 || batch > 10000 || rows < batch ||
        (strcmp(method, "copy") != 0 && strcmp(method, "unnest") != 0)) {
        fprintf(stderr, "bench_consumer_writer: need --database-url, method copy|unnest, 1 <= "
                        "batch <= 10000, rows >= batch\n");
        return 2;
    }
    log_init("warn", "text");
    batch_writer_config cfg = {.database_url = url,
                               .statement_timeout_ms = 60000,
                               .batch_size = (size_t)batch,
                               .max_wait_ms = 1000,
                               .max_backoff_ms = 100,
                               .use_unnest = strcmp(method, "unnest") == 0};
    char err[512];
    batch_writer *w = batch_writer_start(&cfg, err, sizeof err);
    if (!w) {
        fprintf(stderr, "bench_consumer_writer: %s\n", err);
        return 1;
    }
    write_row *r = calloc((size_t)batch, sizeof *r);
    chat_message m;
    memset(&m, 0, sizeof m);
    snprintf(m.message, sizeof m.message, "benchmark message text of a typical length");
    snprintf(m.message_type, sizeof m.message_type, "TEXT");
    snprintf(m.server_id, sizeof m.server_id, "bench");
    snprintf(m.client_ip, sizeof m.client_ip, "127.0.0.1");
    unsigned seed = 12345;
    long done = 0, failed = 0;
    uint64_t t0 = time_mono_ns();
    while (done < rows) {
        for (long i = 0; i < batch; i++) {
            int user = 1 + (int)(rand_r(&seed) % 100000);
            snprintf(m.user_id, sizeof m.user_id, "%d", user);
            snprintf(m.username, sizeof m.username, "user%d", user);
            snprintf(m.room_id, sizeof m.room_id, "%d", 1 + (int)(rand_r(&seed) % 20));
            int64_t now = time_wall_ms();
            time_format_iso8601(now, m.timestamp);
            time_format_iso8601(now, m.received_at);
            uuid_v4(m.message_id);
            char seq[24];
            snprintf(seq, sizeof seq, "%ld", done + i + 1);
            write_row_init(&r[i], &m, seq, err, sizeof err);
        }
        write_batch b = {.rows = r, .n_rows = (size_t)batch};
        batch_writer_hold(w);
        batch_writer_submit(w, &b);
        while (!batch_writer_wait(w, &b, 1000))
            ;
        for (long i = 0; i < batch; i++) failed += r[i].status != WRITE_COMMITTED;
        done += batch;
    }
    double s = (double)(time_mono_ns() - t0) / 1e9;
    batch_writer_stop(w, time_mono_ns() + 1000000000ull);
    free(r);
    if (failed) {
        fprintf(stderr, "bench_consumer_writer: %ld rows not committed\n", failed);
        return 1;
    }
    printf("{\"method\":\"%s\",\"batch\":%ld,\"rows\":%ld,\"seconds\":%.3f,\"rows_per_s\":%.0f}\n",
           method, batch, done, s, done / s);
    return 0;
}
