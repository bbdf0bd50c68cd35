/*
 * chatflow-loadgen — entry point: flags, the two phases, the consumer's metrics, the report.
 * See loadgen.h for the layout. Exit status: 0 when every message was acked (and, with
 * --subscribe, every acked message was broadcast once and in order), 1 otherwise, 2 on bad flags
 * (and on --tokens without a usable CHATFLOW_AUTH_HS256_SECRET).
 */
#include "loadgen.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: chatflow-loadgen [options]\n"
            "  --host H               producer host (127.0.0.1)\n"
            "  --port P               producer WebSocket port (8080)\n"
            "  --messages N           main-phase messages in total (500000)\n"
            "  --connections N        main-phase sender connections, spread over the rooms (64)\n"
            "  --warmup-connections N warm-up connections (32; 0 skips the warm-up)\n"
            "  --warmup-messages N    messages per warm-up connection (1000)\n"
            "  --window N             unacked messages per connection (20)\n"
            "  --rate N               first sends per second over all connections (0: as fast as "
            "the windows allow)\n"
            "  --rooms N              rooms \"1\"..\"N\", N <= %d (20)\n"
            "  --room-ids ID,ID,...   these rooms instead of --rooms: room ids of 1-64 characters\n"
            "                         of A-Z a-z 0-9 _ -, each once (e.g. team-alpha,7,<uuid>)\n"
            "  --retries N            resends per message before it counts as failed (5)\n"
            "  --subscribe            also subscribe to the consumer for every room and match "
            "broadcasts\n"
            "  --consumer-host H      consumer host (127.0.0.1)\n"
            "  --consumer-port P      consumer WebSocket port (8081)\n"
            "  --consumer-admin URL   consumer admin base URL for /api/metrics/all "
            "(http://127.0.0.1:9091)\n"
            "  --drain-timeout S      seconds to wait for broadcasts after the last ack (30)\n"
            "  --connect-timeout S    seconds to open the connections (10)\n"
            "  --out-dir DIR          where the CSV, series and chart go (build/loadgen)\n"
            "  --json FILE            also write the report as JSON\n"
            "  --acked-ids FILE       write the messageId of every acked message (both phases), "
            "one per line\n"
            "  --seed N               generator seed (1)\n"
            "  --tokens               identity tokens, for CHATFLOW_AUTH=on: HS256 with the\n"
            "                         secret in CHATFLOW_AUTH_HS256_SECRET (iss, aud from\n"
            "                         CHATFLOW_AUTH_ISSUER, _AUDIENCE when set), valid 24 h;\n"
            "                         sender connection i is user 1+i (user<1+i>) and sends\n"
            "                         all its messages as that user; subscribers anonymous\n"
            "  --quiet                no progress lines on stderr\n",
            LG_MAX_ROOMS);
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || !end || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* The run's rooms: "1".."N" for --rooms N, or the --room-ids list; o->room_ids points here.
 * Static: it must outlive parse_flags(), and at 65 KiB it is no stack object. */
static struct {
    char ids[LG_MAX_ROOMS][ROOM_ID_BUF];
    const char *ptrs[LG_MAX_ROOMS];
    int n;
} rooms_table;

static void add_room(const char *id, size_t len)
{
    memcpy(rooms_table.ids[rooms_table.n], id, len);
    rooms_table.ids[rooms_table.n][len] = '\0';
    rooms_table.ptrs[rooms_table.n] = rooms_table.ids[rooms_table.n];
    rooms_table.n++;
}

/* A room id that is already in the table. */
static bool room_known(const char *id, size_t len)
{
    for (int k = 0; k < rooms_table.n; k++)
        if (strlen(rooms_table.ids[k]) == len && memcmp(rooms_table.ids[k], id, len) == 0)
            return true;
    return false;
}

/* --room-ids: every item a valid room id (room.h), each once, at most LG_MAX_ROOMS. */
static bool parse_room_ids(const char *list, char *err, size_t err_len)
{
    rooms_table.n = 0;
    for (const char *p = list;; p++) {
        size_t len = strcspn(p, ",");
        int shown = len > 70 ? 70 : (int)len;
        char why[96];
        if (rooms_table.n == LG_MAX_ROOMS) {
            snprintf(err, err_len, "more than %d room ids", LG_MAX_ROOMS);
            return false;
        }
        if (!room_id_check(p, len, why, sizeof why)) {
            snprintf(err, err_len, "room id %d, '%.*s': %s", rooms_table.n + 1, shown, p, why);
            return false;
        }
        if (room_known(p, len)) {
            snprintf(err, err_len, "room id '%.*s' is given twice", shown, p);
            return false;
        }
        add_room(p, len);
        p += len;
        if (*p == '\0') return true;
    }
}

/* Fills the room table from --room-ids, or with "1".."rooms". 0, or 2 after saying why. */
static int settle_rooms(lg_options *o, const char *room_ids, bool rooms_given)
{
    char err[256];
    if (room_ids && rooms_given) {
        fprintf(stderr, "chatflow-loadgen: --rooms and --room-ids exclude each other\n");
        return 2;
    }
    if (room_ids && !parse_room_ids(room_ids, err, sizeof err)) {
        fprintf(stderr, "chatflow-loadgen: bad value for --room-ids: %s\n", err);
        usage(stderr);
        return 2;
    }
    if (!room_ids) {
        rooms_table.n = 0;
        for (int r = 1; r <= o->rooms; r++) {
            char id[16];
            add_room(id, (size_t)snprintf(id, sizeof id, "%d", r));
        }
    }
    o->rooms = rooms_table.n;
    o->room_ids = rooms_table.ptrs;
    return 0;
}

static int parse_flags(int argc, char **argv, lg_options *o, bool *want_tokens)
{
    enum {
        F_HOST = 1,
        F_PORT,
        F_MESSAGES,
        F_CONN,
        F_WCONN,
        F_WMSG,
        F_WINDOW,
        F_RATE,
        F_ROOMS,
        F_ROOM_IDS,
        F_RETRIES,
        F_SUB,
        F_CHOST,
        F_CPORT,
        F_CADMIN,
        F_DRAIN,
        F_CTIMEOUT,
        F_OUT,
        F_JSON,
        F_ACKED,
        F_SEED,
        F_TOKENS,
        F_QUIET,
        F_HELP
    };
    static const struct option longopts[] = {{"host", 1, 0, F_HOST},
                                             {"port", 1, 0, F_PORT},
                                             {"messages", 1, 0, F_MESSAGES},
                                             {"connections", 1, 0, F_CONN},
                                             {"warmup-connections", 1, 0, F_WCONN},
                                             {"warmup-messages", 1, 0, F_WMSG},
                                             {"window", 1, 0, F_WINDOW},
                                             {"rate", 1, 0, F_RATE},
                                             {"rooms", 1, 0, F_ROOMS},
                                             {"room-ids", 1, 0, F_ROOM_IDS},
                                             {"retries", 1, 0, F_RETRIES},
                                             {"subscribe", 0, 0, F_SUB},
                                             {"consumer-host", 1, 0, F_CHOST},
                                             {"consumer-port", 1, 0, F_CPORT},
                                             {"consumer-admin", 1, 0, F_CADMIN},
                                             {"drain-timeout", 1, 0, F_DRAIN},
                                             {"connect-timeout", 1, 0, F_CTIMEOUT},
                                             {"out-dir", 1, 0, F_OUT},
                                             {"json", 1, 0, F_JSON},
                                             {"acked-ids", 1, 0, F_ACKED},
                                             {"seed", 1, 0, F_SEED},
                                             {"tokens", 0, 0, F_TOKENS},
                                             {"quiet", 0, 0, F_QUIET},
                                             {"help", 0, 0, F_HELP},
                                             {0, 0, 0, 0}};
    int ch, li = -1;
    long v;
    const char *room_ids = NULL;
    bool rooms_given = false;
    opterr = 0;
    while ((li = -1, ch = getopt_long(argc, argv, "", longopts, &li)) != -1) {
        const char *a = optarg;
        bool ok = true;
        switch (ch) {
        case F_HOST: o->host = a; break;
        case F_PORT:
            ok = parse_long(a, 1, 65535, &v);
            o->port = (int)v;
            break;
        case F_MESSAGES: ok = parse_long(a, 1, 100000000, &o->messages); break;
        case F_CONN:
            ok = parse_long(a, 1, 10000, &v);
            o->connections = (int)v;
            break;
        case F_WCONN:
            ok = parse_long(a, 0, 10000, &v);
            o->warmup_connections = (int)v;
            break;
        case F_WMSG: ok = parse_long(a, 1, 10000000, &o->warmup_messages); break;
        case F_WINDOW:
            ok = parse_long(a, 1, 10000, &v);
            o->window = (int)v;
            break;
        case F_RATE: ok = parse_long(a, 0, 10000000, &o->rate); break;
        case F_ROOMS:
            ok = parse_long(a, 1, LG_MAX_ROOMS, &v);
            o->rooms = (int)v;
            rooms_given = true;
            break;
        case F_ROOM_IDS: room_ids = a; break;
        case F_RETRIES:
            ok = parse_long(a, 0, 20, &v);
            o->max_retries = (int)v;
            break;
        case F_SUB: o->subscribe = true; break;
        case F_CHOST: o->consumer_host = a; break;
        case F_CPORT:
            ok = parse_long(a, 1, 65535, &v);
            o->consumer_port = (int)v;
            break;
        case F_CADMIN: o->consumer_admin = a; break;
        case F_DRAIN:
            ok = parse_long(a, 0, 3600, &v);
            o->drain_timeout_s = (int)v;
            break;
        case F_CTIMEOUT:
            ok = parse_long(a, 1, 600, &v);
            o->connect_timeout_s = (int)v;
            break;
        case F_OUT: o->out_dir = a; break;
        case F_JSON: o->json_path = a; break;
        case F_ACKED: o->acked_ids_path = a; break;
        case F_SEED:
            ok = parse_long(a, 0, 1L << 30, &v);
            o->seed = (unsigned)v;
            break;
        case F_TOKENS: *want_tokens = true; break;
        case F_QUIET: o->quiet = true; break;
        case F_HELP: usage(stdout); return 1;
        default:
            fprintf(stderr, "chatflow-loadgen: unknown or incomplete option '%s'\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "chatflow-loadgen: bad value '%s' for --%s\n", a,
                    li >= 0 ? longopts[li].name : "?");
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "chatflow-loadgen: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    int rc = settle_rooms(o, room_ids, rooms_given);
    if (rc) return rc;
    if (o->connections < o->rooms || (o->warmup_connections && o->warmup_connections < o->rooms)) {
        fprintf(stderr, "chatflow-loadgen: need at least one connection per room (%d rooms)\n",
                o->rooms);
        return 2;
    }
    return 0;
}

typedef struct {
    char *data;
    size_t len;
} buffer;

static size_t collect(char *p, size_t size, size_t n, void *user)
{
    buffer *b = user;
    size_t add = size * n;
    char *grown = realloc(b->data, b->len + add + 1);
    if (!grown) return 0;
    memcpy(grown + b->len, p, add);
    b->data = grown;
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

/* The consumer's view of the test window; NULL (with a note) when it cannot be had. */
static char *fetch_consumer_metrics(const lg_options *o, int64_t start_ms, int64_t end_ms)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/api/metrics/all?testStartTime=%lld&testEndTime=%lld",
             o->consumer_admin, (long long)start_ms, (long long)end_ms);
    CURL *c = curl_easy_init();
    buffer b = {0};
    long status = 0;
    if (!c) return NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || status != 200) {
        fprintf(stderr, "loadgen: %s answered %s (HTTP %ld); the report goes on without it\n", url,
                rc == CURLE_OK ? "an error" : curl_easy_strerror(rc), status);
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* --tokens: one identity per sender slot of the larger phase, minted before any connection; 0,
 * or 2 after saying why (a missing or short secret is a usage error: nothing was tried yet). */
static int mint_tokens(lg_options *o, lg_tokens *t)
{
    int slots = o->connections > o->warmup_connections ? o->connections : o->warmup_connections;
    char err[256];
    if (!lg_tokens_mint(t, slots, time_wall_ms() / 1000, err, sizeof err)) {
        fprintf(stderr, "chatflow-loadgen: %s\n", err);
        return 2;
    }
    o->tokens = t;
    return 0;
}

static bool write_acked_ids(const char *path, const lg_record *rec, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "chatflow-loadgen: cannot write %s\n", path);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (rec[i].state == REC_ACKED) fprintf(f, "%s\n", rec[i].message_id);
    return fclose(f) == 0;
}

/* Both phases, the consumer's metrics, the report: the exit status. */
static int run(lg_options o)
{
    char run_id[32];
    snprintf(run_id, sizeof run_id, "lg%lx",
             (unsigned long)(time_wall_ms() / 1000) ^ ((unsigned long)getpid() << 8));
    o.run_id = run_id;
    mkdir(o.out_dir, 0755);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    size_t n_warm =
        o.warmup_connections ? (size_t)o.warmup_connections * (size_t)o.warmup_messages : 0;
    size_t total = n_warm + (size_t)o.messages;
    lg_record *rec = calloc(total, sizeof *rec);
    if (!rec) {
        fprintf(stderr, "chatflow-loadgen: cannot allocate %zu message records\n", total);
        return 1;
    }
    lg_plan(rec, total, &o, o.seed);
    /* Under --tokens a record's userId, and so its messageId, is its sending slot's: settled at
     * its first send (drive.c). */
    if (!o.tokens) lg_compute_message_ids(rec, 0, total, &o);

    bool ok = true;
    lg_phase warm = {.opt = NULL}, main_phase = {.opt = NULL};
    if (n_warm) {
        lg_options wo = o;
        wo.connections = o.warmup_connections;
        wo.subscribe = false;
        warm = (lg_phase){.opt = &wo, .rec = rec, .n = n_warm, .first = 0};
        if (!o.quiet)
            fprintf(stderr, "loadgen: warm-up, %zu messages on %d connections\n", n_warm,
                    wo.connections);
        if (!lg_drive(&warm)) {
            fprintf(stderr, "chatflow-loadgen: warm-up failed: %s\n", warm.fatal);
            free(rec);
            return 1;
        }
        warm.opt = &o;
    }
    main_phase = (lg_phase){.opt = &o, .rec = rec, .n = (size_t)o.messages, .first = n_warm};
    if (!o.quiet)
        fprintf(stderr, "loadgen: main phase, %ld messages on %d connections%s\n", o.messages,
                o.connections, o.subscribe ? ", with subscribers" : "");
    if (!lg_drive(&main_phase)) {
        fprintf(stderr, "chatflow-loadgen: run failed: %s\n", main_phase.fatal);
        free(rec);
        return 1;
    }

    char *metrics = o.subscribe ? fetch_consumer_metrics(&o, main_phase.start_wall_ms,
                                                         main_phase.end_wall_ms + 1000)
                                : NULL;
    ok = lg_report(&main_phase, n_warm ? &warm : NULL, metrics);
    if (o.acked_ids_path) ok = write_acked_ids(o.acked_ids_path, rec, total) && ok;
    free(metrics);
    bool clean =
        main_phase.failed == 0 && main_phase.acked == o.messages && main_phase.errors_seen == 0;
    if (o.subscribe)
        clean = clean && main_phase.broadcasts_lost == 0 && main_phase.broadcasts_duplicated == 0 &&
                main_phase.broadcasts_out_of_order == 0;
    free(rec);
    curl_global_cleanup();
    return ok && clean ? 0 : 1;
}

int main(int argc, char **argv)
{
    lg_options o = {
        .host = "127.0.0.1",
        .port = 8080,
        .consumer_host = "127.0.0.1",
        .consumer_port = 8081,
        .consumer_admin = "http://127.0.0.1:9091",
        .messages = 500000,
        .connections = 64,
        .warmup_connections = 32,
        .warmup_messages = 1000,
        .window = 20,
        .rooms = 20,
        .max_retries = 5,
        .drain_timeout_s = 30,
        .connect_timeout_s = 10,
        .out_dir = "build/loadgen",
        .seed = 1,
    };
    bool want_tokens = false;
    lg_tokens tokens = {0}; /* owned here, freed on every way out after minting */
    int rc = parse_flags(argc, argv, &o, &want_tokens);
    if (rc) return rc == 1 ? 0 : 2;
    if (want_tokens && mint_tokens(&o, &tokens)) return 2;
    int status = run(o);
    lg_tokens_free(&tokens);
    return status;
}
