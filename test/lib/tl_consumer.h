/*
 * tl_consumer — a consumer integration test's world: its own database and queues, messages put
 * straight into SQS, and chatflow-consumer as a child process. Part of libtestsupport (tl_).
 *
 * Contract:
 *  - tl_consumer_env_init() (after tl_init()) creates, for this test alone, a PostgreSQL database
 *    on the stack's server (DATABASE_URL, dropping a leftover of the same name) and `shards` queue
 *    shards (the decimal rooms 1..shards map to them one to one, room.h),
 *    DLQ and spill queue under a unique prefix ($CHATFLOW_BIN/chatflow-sqs setup), so tests never
 *    see each other's rows or messages. It needs DATABASE_URL and AWS_ENDPOINT_URL_SQS (test/run
 *    exports them); false, noted, otherwise. tl_consumer_env_done() stops the children, drops
 *    the database and frees the rest.
 *  - tl_chat_message() fills a valid protocol.md §4 message (new id, now as timestamps);
 *    tl_consumer_send_batch() sends up to SQS_MAX_BATCH of one room in one call (group = room,
 *    dedup = messageId) and is true when every entry went in; tl_consumer_send_messages() sends
 *    any number of any rooms, interleaving rooms batch by batch as a producer would and keeping
 *    each room's order; tl_consumer_send_raw() sends any body (poison) to a room queue.
 *  - tl_consumer_spawn() starts chatflow-consumer on the test's database and queues (ports 0 on
 *    127.0.0.1, migrations on start, short long-polls) and returns at once; env overrides the
 *    defaults. tl_consumer_start() also waits for its start-up line (30 s; 120 s under a
 *    wrapper) and reads both ports from it. tl_consumer_stop() is tl_proc_stop() on it.
 *  - Its log is <log_dir>/<log_name>.log; log_dir comes from tl_log_dir(name).
 *  - tl_consumer_order_kept() reads each room's rows by sequence_number on e->pg and is true when
 *    they are exactly that room's messages among ms, in the order of ms (nothing missing, nothing
 *    extra, FIFO order kept); noted per room when not.
 */
#ifndef CHATFLOW_TL_CONSUMER_H
#define CHATFLOW_TL_CONSUMER_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "message.h"
#include "tl_sqs.h"
#include "wsclient.h"

typedef struct {
    char name[64]; /* test name: logs, database, queue prefix */
    char log_dir[512];
    char admin_url[1024]; /* DATABASE_URL of the stack (maintenance connection) */
    char db_url[1024];    /* the test's own database */
    char db_name[96];
    char dlq_name[96];
    char spill_name[96]; /* the spill queue (standard) */
    int shards;          /* queue shards 1..shards: rooms "1".."shards" each have their own */
    tl_sqs q;            /* client and room queues (q.prefix, q.urls[room]) */
    char *dlq_url;
    char *spill_url;
    PGconn *pg; /* on the test's database, when the test opens it */
} tl_consumer_env;

typedef struct {
    pid_t pid;
    int ws_port, admin_port;
    char log_path[600];
} tl_consumer;

bool tl_consumer_env_init(tl_consumer_env *e, const char *name, int shards);
/* The test's queues made again (an emulator restarted without them), URLs looked up anew. */
bool tl_consumer_env_recreate_queues(tl_consumer_env *e);
void tl_consumer_env_done(tl_consumer_env *e);

void tl_chat_message(chat_message *m, int room, int user, const char *text, const char *type);
bool tl_consumer_send_batch(tl_consumer_env *e, int room, const chat_message *ms, size_t n);
bool tl_consumer_send_messages(tl_consumer_env *e, const chat_message *ms, size_t n);
bool tl_consumer_send_raw(tl_consumer_env *e, int room, const char *body, const char *dedup);
/* One message of any room (m->room_id) to the queue of its shard (room.h), group = the room id. */
bool tl_consumer_send_to_room(tl_consumer_env *e, const chat_message *m);
/* The same to a given shard's queue, whatever the room maps to (a misrouted message). */
bool tl_consumer_send_to_shard(tl_consumer_env *e, int shard, const chat_message *m);
/* Messages in all room queues together; -1 on error. */
long tl_consumer_rooms_depth(tl_consumer_env *e);
/* An anonymous subscriber on each of the rooms "1".."rooms" of the consumer at 127.0.0.1:port,
 * into subs[1..rooms] (5 s each); false at the first that fails (those opened stay in subs). */
bool tl_consumer_subscribe_rooms(wsc_ctx *ctx, int port, wsc_conn **subs, int rooms);

bool tl_consumer_order_kept(tl_consumer_env *e, const chat_message *ms, size_t n);

bool tl_consumer_spawn(tl_consumer_env *e, tl_consumer *p, const char *log_name,
                       const char *const *env);
bool tl_consumer_start(tl_consumer_env *e, tl_consumer *p, const char *log_name,
                       const char *const *env);
int tl_consumer_stop(tl_consumer *p, int sig, int timeout_ms, bool *in_time);

#endif
