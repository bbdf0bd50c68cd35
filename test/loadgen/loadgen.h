/*
 * chatflow-loadgen — the reference load test of protocol.md §7, on the project's WebSocket client.
 *
 * Layout:
 *   main.c     flags, the phases (warm-up, main), the report's assembly
 *   plan.c     the message plan: every message of a run decided up front by one generator
 *              (room, user, type, text, clientMessageId, the messageId the producer will derive)
 *   drive.c    the event loop: sender connections per room, windows of unacked messages,
 *              retries with backoff, reconnects; subscriber connections matching broadcasts
 *   report.c   statistics, text/JSON report, per-message CSV, 10 s series and the gnuplot chart
 *   tokens.c   --tokens: HS256 identity tokens, one user per sender connection slot
 *
 * Rooms: a run's rooms are room ids (common/room.h), "1".."N" for --rooms N or the list of
 * --room-ids. Everything that names a room (paths, the messageId the producer derives, matching
 * broadcasts, the reports) uses the id; records and per-room tables hold its index in
 * opt->room_ids, so a record stays small.
 *
 * Identities: without --tokens every record carries the planned random userId (any connection of
 * its room may send it). With --tokens sender slot i (connection i of a phase) is the verified
 * user lg_slot_user(i), its token on every (re)connect; a record takes its slot's userId at its
 * first send, and with it its messageId ("userId:roomId:clientMessageId"), so every retry of it
 * goes out on that same slot: on another user's connection the producer would answer
 * FORBIDDEN_USER, and under another userId it would be another messageId (no dedupe).
 *
 * Threads: a generator thread fills per-room bounded queues (common/workqueue.h) with message
 * indexes; everything else runs on the one lws loop thread, which owns every record it touches.
 */
#ifndef CHATFLOW_LOADGEN_H
#define CHATFLOW_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "room.h"
#include "uuid.h"
#include "workqueue.h"

#define LG_MAX_ROOMS 1000

typedef enum { REC_PLANNED = 0, REC_INFLIGHT, REC_WAIT_RETRY, REC_ACKED, REC_FAILED } rec_state;

typedef struct {
    uint32_t room;    /* index into opt->room_ids */
    uint32_t user_id; /* planned; under --tokens the sender slot's, set at the first send */
    uint8_t type;     /* 0 TEXT, 1 JOIN, 2 LEAVE */
    uint8_t text;     /* index into the text pool */
    uint8_t attempts;
    uint8_t state;           /* rec_state */
    uint8_t broadcasts;      /* times seen by the room's subscriber (capped at 255) */
    bool in_order_candidate; /* acked on its first attempt: takes part in the order check */
    uint32_t sender;         /* sending connection id (first attempt; every attempt, --tokens) */
    uint32_t cur_sender;     /* connection of the attempt in flight */
    uint64_t sender_seq;     /* position in that connection's send order */
    int64_t first_send_us;   /* monotonic */
    int64_t ack_us;
    int64_t broadcast_us;
    int64_t wall_send_ms; /* wall clock, for the CSV and the 10 s series */
    int64_t retry_at_us;
    char message_id[UUID_STR_BUF];
    char error[24]; /* last error code */
} lg_record;

/* tokens.c: the identities of --tokens (protocol.md §8), minted once for the whole run. */
#define LG_SUBSCRIBER_USER 100000u /* the subscribers' sub: no sender slot's (slots <= 10000) */
typedef struct {
    char **sender;    /* by slot: the token of user lg_slot_user(slot), named "user<id>" */
    int n_sender;     /* slots: the larger of the two phases' connection counts */
    char *subscriber; /* no name claim: the consumer subscribes it anonymously */
} lg_tokens;
/* Mints them from CHATFLOW_AUTH_HS256_SECRET (and CHATFLOW_AUTH_ISSUER / _AUDIENCE when set),
 * valid from now_s for 24 h. false with err set: err never holds the secret or a token. */
bool lg_tokens_mint(lg_tokens *t, int slots, int64_t now_s, char *err, size_t err_len);
void lg_tokens_free(lg_tokens *t);
/* The userId of sender slot i under --tokens: 1 + i. */
uint32_t lg_slot_user(int slot);

typedef struct {
    /* flags */
    const char *host;
    int port;
    const char *consumer_host;
    int consumer_port;
    const char *consumer_admin; /* base URL of the consumer's admin HTTP, for /api/metrics/all */
    long messages;              /* main phase, total */
    int connections;
    int warmup_connections;
    long warmup_messages; /* per warm-up connection */
    int window;           /* unacked per connection */
    long rate; /* first sends per second over all connections; 0 = as the windows allow */
    int rooms; /* how many room ids room_ids holds */
    const char *const *room_ids; /* the rooms, by index 0..rooms-1 */
    int max_retries;
    bool subscribe;
    int drain_timeout_s; /* after the last ack, how long to wait for broadcasts */
    int connect_timeout_s;
    const char *out_dir;
    const char *json_path;
    const char *acked_ids_path; /* every acked messageId (warm-up and main), one per line */
    const char *run_id;
    unsigned seed;
    bool quiet;
    const lg_tokens *tokens; /* --tokens: an identity per sender slot; NULL without */
} lg_options;

typedef struct {
    const lg_options *opt;
    lg_record *rec;
    size_t n;                            /* records in this phase */
    size_t first;                        /* index of the first record of this phase */
    workqueue *room_queue[LG_MAX_ROOMS]; /* by room index */
    /* counters filled by the driver */
    long acked, failed, retries, reconnections, connections_opened, errors_seen;
    long broadcasts_received, broadcasts_duplicated, broadcasts_out_of_order, broadcasts_unknown;
    long broadcasts_lost;
    long acked_broadcast;      /* acked records seen at least once by their subscriber */
    int64_t start_us, end_us;  /* monotonic */
    int64_t last_broadcast_us; /* when the last acked record was first seen by a subscriber */
    int64_t start_wall_ms, end_wall_ms;
    char fatal[512]; /* set when the run could not go on */
} lg_phase;

/* plan.c */
extern const char *const LG_TEXT_POOL[50];
extern const char *const LG_TYPE_NAMES[3];
void lg_plan(lg_record *rec, size_t n, const lg_options *opt, unsigned seed);
/* The clientMessageId of record i: "<run_id>-<i>". */
int lg_client_message_id(const lg_options *opt, size_t index, char *buf, size_t len);
/* Parses the index back out of a clientMessageId of this run; -1 when it is not one. */
long lg_index_from_cmid(const lg_options *opt, const char *cmid);
/* Builds the protocol.md §1 frame of record i into buf; returns its length. */
int lg_frame(const lg_options *opt, const lg_record *r, size_t index, char *buf, size_t len);
/* Computes every record's messageId as the producer derives it (UUID v5) from its user_id. */
void lg_compute_message_ids(lg_record *rec, size_t first, size_t n, const lg_options *opt);

/* drive.c: runs one phase to completion (or fatal). Returns false when the run failed early. */
bool lg_drive(lg_phase *phase);

/* report.c */
typedef struct {
    double mean, p50, p95, p99, p999, max;
    size_t count;
} lg_latency;
lg_latency lg_latency_of(const lg_record *rec, size_t n, bool end_to_end);
bool lg_report(const lg_phase *main_phase, const lg_phase *warmup, char *metrics_json);

#endif
