/* history — replay rows for the broadcaster; see history.h. */
#include "history.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

/* numeric drops leading zeros; SQS sequence numbers are (at least) 20 digits and fauxqs
 * zero-pads them: restore that width so a replayed event carries the same text as the live one. */
#define SEQ_TEXT                                                                                  \
    "CASE WHEN length(sequence_number::text) < 20 THEN lpad(sequence_number::text, 20, '0')"      \
    " ELSE sequence_number::text END"

#define ISO_UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static const db_statement history_statements[] = {
    {"history_after",
     "SELECT message_id, room_id, user_id, username, message_text, " ISO_UTC("client_timestamp") ","
     " message_type, server_id, client_ip, " SEQ_TEXT ", " ISO_UTC("received_at")
     " FROM messages WHERE room_id = $1::int AND sequence_number > $2::numeric"
     /* Qualified: a bare name would sort by the text output column of the same name. */
     " ORDER BY messages.sequence_number LIMIT $3::bigint",
     3},
};

struct history {
    pthread_mutex_t mu;
    char url[1024];
    db_conn *db;
};

history *history_new(const char *database_url, long statement_timeout_ms)
{
    history *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    snprintf(h->url, sizeof(h->url), "%s", database_url);
    h->db = db_conn_new(h->url, statement_timeout_ms, "chatflow-consumer-replay", history_statements,
                        sizeof(history_statements) / sizeof(history_statements[0]), NULL, NULL);
    if (!h->db) {
        free(h);
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void history_free(history *h)
{
    if (!h)
        return;
    db_conn_free(h->db);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static void copy_field(char *dst, size_t size, const PGresult *r, int row, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(r, row, col));
}

bool history_read(void *ctx, long room, const char *since_seq, size_t limit,
                  void (*emit)(void *emit_ctx, const broadcast_history_row *row), void *emit_ctx,
                  char *err, size_t err_len)
{
    history *h = ctx;
    size_t len = since_seq ? strlen(since_seq) : 0;
    if (len == 0 || len > 40 || strspn(since_seq, "0123456789") != len) {
        snprintf(err, err_len, "since: not a sequence number");
        return false;
    }
    char room_s[24], limit_s[24];
    snprintf(room_s, sizeof(room_s), "%ld", room);
    snprintf(limit_s, sizeof(limit_s), "%zu", limit);
    const char *params[] = {room_s, since_seq, limit_s};

    pthread_mutex_lock(&h->mu);
    PGresult *r = NULL;
    /* One retry: a connection found dead on first use is replaced once. */
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        if (db_conn_ensure(h->db, err, err_len))
            r = db_exec_prepared(h->db, "history_after", 3, params, err, err_len);
        if (!r && db_last_error_kind(h->db) != DB_ERR_CONNECTION)
            break;
    }
    pthread_mutex_unlock(&h->mu);
    if (!r)
        return false;

    broadcast_history_row *row = malloc(sizeof(*row));
    if (!row) {
        PQclear(r);
        snprintf(err, err_len, "out of memory");
        return false;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        memset(row, 0, sizeof(*row));
        chat_message *m = &row->msg;
        copy_field(m->message_id, sizeof(m->message_id), r, i, 0);
        copy_field(m->room_id, sizeof(m->room_id), r, i, 1);
        copy_field(m->user_id, sizeof(m->user_id), r, i, 2);
        copy_field(m->username, sizeof(m->username), r, i, 3);
        copy_field(m->message, sizeof(m->message), r, i, 4);
        copy_field(m->timestamp, sizeof(m->timestamp), r, i, 5);
        copy_field(m->message_type, sizeof(m->message_type), r, i, 6);
        copy_field(m->server_id, sizeof(m->server_id), r, i, 7);
        copy_field(m->client_ip, sizeof(m->client_ip), r, i, 8);
        copy_field(row->sequence_number, sizeof(row->sequence_number), r, i, 9);
        copy_field(m->received_at, sizeof(m->received_at), r, i, 10);
        copy_field(row->server_timestamp, sizeof(row->server_timestamp), r, i, 10);
        emit(emit_ctx, row);
    }
    free(row);
    PQclear(r);
    return true;
}
