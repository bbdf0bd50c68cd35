/* spill — the spill queue and its drainer; see spill.h. */
#include "spill.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "timeutil.h"
#include "watchdog.h"

#define COMPONENT "spill"
#define SPILL_VERSION 1
#define DRAIN_WAIT_S 2 /* the drainer's long poll: short, so it notices a stop soon */
#define DEPTH_REFRESH_MS 5000
#define RETRY_VISIBILITY_S 5 /* a drained message the database did not take: back soon */
#define IDLE_CHECK_MS 500    /* how often the drainer looks at the writer while it is down */

static metric_counter *m_spilled, *m_drained;
static metric_gauge *m_depth;

void spill_metrics_init(void)
{
    m_spilled = metrics_counter(
        "chatflow_spill_messages_total",
        "Messages moved to the spill queue because the database could not take them.", NULL);
    m_drained = metrics_counter(
        "chatflow_spill_drained_total",
        "Spilled messages stored in PostgreSQL and deleted from the spill queue.", NULL);
    m_depth = metrics_gauge(
        "chatflow_spill_depth",
        "Messages in the spill queue (visible + in flight), waiting to be stored.", NULL);
}

/* ---- the envelope ---- */

char *spill_envelope(const sqs_message *m)
{
    json_t *root = json_pack("{s:i, s:s, s:s}", "spillVersion", SPILL_VERSION, "sequenceNumber",
                             m->sequence_number ? m->sequence_number : "", "body", m->body);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return text;
}

bool spill_envelope_parse(const char *json, char **body, char **sequence_number, char *err,
                          size_t err_len)
{
    *body = *sequence_number = NULL;
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    json_int_t version = 0;
    const char *b = NULL, *seq = NULL;
    bool ok = root && json_unpack(root, "{s:I, s:s, s:s}", "spillVersion", &version,
                                  "sequenceNumber", &seq, "body", &b) == 0;
    if (!ok)
        snprintf(err, err_len, "not a spill envelope (spillVersion, sequenceNumber, body)");
    else if (version != SPILL_VERSION) {
        snprintf(err, err_len, "spill envelope version %lld is not %d", (long long)version,
                 SPILL_VERSION);
        ok = false;
    } else {
        *body = strdup(b);
        *sequence_number = strdup(seq);
        if (!*body || !*sequence_number) {
            free(*body);
            free(*sequence_number);
            *body = *sequence_number = NULL;
            snprintf(err, err_len, "out of memory");
            ok = false;
        }
    }
    json_decref(root);
    return ok;
}

size_t spill_send(sqs_client *sqs, const char *spill_url, const sqs_message *const *msgs, size_t n,
                  bool *taken)
{
    sqs_send_entry entries[SQS_MAX_BATCH];
    sqs_entry_result results[SQS_MAX_BATCH];
    char *bodies[SQS_MAX_BATCH] = {0};
    char ids[SQS_MAX_BATCH][24];
    size_t k = 0, map[SQS_MAX_BATCH];
    for (size_t i = 0; i < n && i < SQS_MAX_BATCH; i++) {
        taken[i] = false;
        if (!(bodies[k] = spill_envelope(msgs[i]))) {
            log_error(COMPONENT, "out of memory building the spill envelope of %s",
                      msgs[i]->message_id);
            continue;
        }
        snprintf(ids[k], sizeof ids[k], "s%zu", i);
        entries[k] = (sqs_send_entry){ids[k], bodies[k], NULL, NULL};
        map[k++] = i;
    }
    size_t sent = 0;
    sqs_error e = {0};
    sqs_status st = k ? sqs_send_message_batch(sqs, spill_url, entries, k, results, &e) : SQS_OK;
    if (st != SQS_OK)
        log_warn(COMPONENT,
                 "SendMessageBatch to the spill queue failed: %s (%s %s); the messages stay in "
                 "their room queue",
                 sqs_status_name(st), e.type, e.message);
    for (size_t j = 0; st == SQS_OK && j < k; j++) {
        taken[map[j]] = results[j].ok;
        sent += results[j].ok;
        if (!results[j].ok)
            log_warn(COMPONENT, "spill of %s refused: %s %s", msgs[map[j]]->message_id,
                     results[j].code, results[j].message);
    }
    for (size_t j = 0; j < k; j++) free(bodies[j]);
    metric_counter_add(m_spilled, sent);
    return sent;
}

/* ---- the drainer ---- */

struct spill_drainer {
    spill_drainer_config cfg;
    sqs_client *sqs;
    pthread_t thread;
    atomic_bool finished;
    watchdog_loop *watchdog;
    uint64_t next_depth_ns;
};

/* One spilled message while the drainer holds it. */
typedef struct {
    sqs_message *sqs;
    char *body;     /* the original room-queue body */
    write_row *row; /* NULL: not a storable message (dead-lettered) */
    bool to_delete;
    bool to_retry;
} drained;

static bool stopping(const spill_drainer *d) { return atomic_load(d->cfg.stopping); }

static void sleep_unless_stopping(const spill_drainer *d, long ms)
{
    for (; ms > 0 && !stopping(d); ms -= 100) time_sleep_ms(ms > 100 ? 100 : ms);
}

static void refresh_depth(spill_drainer *d)
{
    uint64_t now = time_mono_ns();
    if (now < d->next_depth_ns) return;
    d->next_depth_ns = now + DEPTH_REFRESH_MS * 1000000ull;
    static const char *const names[] = {"ApproximateNumberOfMessages",
                                        "ApproximateNumberOfMessagesNotVisible"};
    char *values[2] = {NULL, NULL};
    sqs_error e = {0};
    if (sqs_get_queue_attributes(d->sqs, d->cfg.spill_url, names, 2, values, &e) == SQS_OK)
        metric_gauge_set(m_depth,
                         (values[0] ? atof(values[0]) : 0) + (values[1] ? atof(values[1]) : 0));
    free(values[0]);
    free(values[1]);
}

/* Deletes (or, for retries, shortens the visibility of) the flagged messages. */
static void settle_handles(spill_drainer *d, drained *held, size_t n, bool deleting)
{
    sqs_handle_entry entries[SQS_MAX_BATCH];
    sqs_entry_result results[SQS_MAX_BATCH];
    char ids[SQS_MAX_BATCH][24];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (deleting ? !held[i].to_delete : !held[i].to_retry) continue;
        snprintf(ids[k], sizeof ids[k], "h%zu", i);
        entries[k] = (sqs_handle_entry){ids[k], held[i].sqs->receipt_handle, RETRY_VISIBILITY_S};
        k++;
    }
    if (k == 0) return;
    sqs_error e = {0};
    sqs_status st =
        deleting ? sqs_delete_message_batch(d->sqs, d->cfg.spill_url, entries, k, results, &e)
                 : sqs_change_visibility_batch(d->sqs, d->cfg.spill_url, entries, k, results, &e);
    if (st != SQS_OK) {
        /* Not deleted: received again later and stored again as a no-op. */
        log_warn(COMPONENT, "%s on the spill queue failed: %s (%s %s)",
                 deleting ? "DeleteMessageBatch" : "ChangeMessageVisibilityBatch",
                 sqs_status_name(st), e.type, e.message);
        return;
    }
    size_t ok = 0;
    for (size_t j = 0; j < k; j++) ok += results[j].ok;
    if (deleting) metric_counter_add(m_drained, ok);
}

static void dead_letter(spill_drainer *d, drained *h, dlq_reason reason, const char *why,
                        const char *group)
{
    char err[256];
    const char *original = h->body ? h->body : h->sqs->body;
    if (dlq_send(d->sqs, d->cfg.dlq_url, reason, original, why, h->sqs->receive_count, group,
                 h->sqs->message_id, err, sizeof err)) {
        log_warn(COMPONENT, "spilled message %s sent to the DLQ: %s", h->sqs->message_id, why);
        h->to_delete = true;
    } else {
        log_error(COMPONENT,
                  "spilled message %s could not go to the DLQ (%s); left in the spill queue",
                  h->sqs->message_id, err);
    }
}

/* Unwraps each message into a row; what cannot be a row goes to the DLQ. Returns the row count. */
static size_t prepare(spill_drainer *d, drained *held, size_t n, write_row *rows)
{
    size_t n_rows = 0;
    for (size_t i = 0; i < n; i++) {
        char err[256], *seq = NULL;
        chat_message m;
        bool ok = spill_envelope_parse(held[i].sqs->body, &held[i].body, &seq, err, sizeof err) &&
                  queue_message_parse(held[i].body, strlen(held[i].body), &m, err, sizeof err) &&
                  write_row_init(&rows[n_rows], &m, seq, err, sizeof err);
        free(seq);
        if (!ok) {
            dead_letter(d, &held[i], DLQ_POISON, err, "spill");
            continue;
        }
        held[i].row = &rows[n_rows++];
    }
    return n_rows;
}

static void settle(spill_drainer *d, drained *held, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        write_row *r = held[i].row;
        if (!r) continue;
        if (r->status == WRITE_COMMITTED) {
            held[i].to_delete = true;
        } else if (r->status == WRITE_FAILED) {
            dead_letter(d, &held[i], DLQ_DB, r->failure, r->room_id);
        } else {
            held[i].to_retry = true; /* withdrawn or abandoned: the database went away again */
        }
    }
    settle_handles(d, held, n, true);
    settle_handles(d, held, n, false);
}

/* Stores one receive's worth of spilled messages. */
static void drain(spill_drainer *d, sqs_message *msgs, size_t n)
{
    drained held[SQS_MAX_BATCH] = {0};
    write_row rows[SQS_MAX_BATCH];
    for (size_t i = 0; i < n && i < SQS_MAX_BATCH; i++) held[i].sqs = &msgs[i];
    n = n < SQS_MAX_BATCH ? n : SQS_MAX_BATCH;
    batch_writer_hold(d->cfg.writer);
    write_batch b = {.rows = rows, .n_rows = prepare(d, held, n, rows)};
    batch_writer_submit(d->cfg.writer, &b);
    long stall_limit = (long)d->cfg.settings->db_spill_after_ms;
    while (!batch_writer_wait_or_withdraw(d->cfg.writer, &b, 500, stall_limit))
        watchdog_expect(d->watchdog, 60000);
    settle(d, held, n);
    for (size_t i = 0; i < n; i++) free(held[i].body);
}

static void *drainer_main(void *arg)
{
    spill_drainer *d = arg;
    pthread_setname_np(pthread_self(), "cf-spill");
    long request_ms = (long)d->cfg.settings->common.sqs_request_timeout_ms;
    while (!stopping(d)) {
        watchdog_expect(d->watchdog, DRAIN_WAIT_S * 1000 + request_ms + 60000);
        refresh_depth(d);
        if (batch_writer_stalled_ms(d->cfg.writer) > 0) {
            sleep_unless_stopping(d, IDLE_CHECK_MS); /* the database cannot take them now */
            continue;
        }
        sqs_receive_options opt = {
            .max_messages = SQS_MAX_BATCH,
            .wait_seconds = DRAIN_WAIT_S,
            .visibility_timeout = (int)d->cfg.settings->visibility_timeout_s,
        };
        sqs_message *msgs = NULL;
        size_t n = 0;
        sqs_error e = {0};
        /* Only the long poll is cut short by a stop: the deletes after it must run. */
        sqs_client_set_abort(d->sqs, d->cfg.stopping);
        sqs_status st = sqs_receive_message(d->sqs, d->cfg.spill_url, &opt, &msgs, &n, &e);
        sqs_client_set_abort(d->sqs, NULL);
        if (st != SQS_OK) {
            if (!stopping(d))
                log_debug(COMPONENT, "ReceiveMessage on the spill queue failed: %s (%s %s)",
                          sqs_status_name(st), e.type, e.message);
            sleep_unless_stopping(d, 1000);
            continue;
        }
        if (n > 0 && !stopping(d)) drain(d, msgs, n);
        sqs_messages_free(msgs, n);
    }
    watchdog_unregister(d->watchdog);
    atomic_store(&d->finished, true);
    return NULL;
}

spill_drainer *spill_drainer_start(const spill_drainer_config *cfg, char *err, size_t err_len)
{
    spill_drainer *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    atomic_init(&d->finished, false);
    sqs_config sc = consumer_sqs_config(cfg->settings, cfg->credentials);
    if (!(d->sqs = sqs_client_new(&sc, err, err_len))) {
        free(d);
        return NULL;
    }
    d->watchdog = watchdog_register("spill-drainer", 60000);
    int rc = pthread_create(&d->thread, NULL, drainer_main, d);
    if (rc != 0) {
        snprintf(err, err_len, "pthread_create: %s", strerror(rc));
        watchdog_unregister(d->watchdog);
        sqs_client_free(d->sqs);
        free(d);
        return NULL;
    }
    return d;
}

bool spill_drainer_stop(spill_drainer *d, uint64_t deadline_ns)
{
    if (!d) return true;
    while (!atomic_load(&d->finished) && time_mono_ns() < deadline_ns) time_sleep_ms(20);
    if (!atomic_load(&d->finished)) return false;
    pthread_join(d->thread, NULL);
    sqs_client_free(d->sqs);
    free(d);
    return true;
}
