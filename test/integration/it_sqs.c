/*
 * it_sqs — the SQS client against a real fauxqs (AWS_ENDPOINT_URL_SQS from the test stack), plus a
 * tiny in-process libmicrohttpd server for the answers fauxqs never gives (500, throttling), which
 * also checks the wire format and recomputes each request's SigV4 signature.
 *
 * Queue names carry the pid and time: the stack is shared with other tests.
 */
/* test-passes: asan */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "credentials.h"
#include "log.h"
#include "metrics.h"
#include "sigv4.h"
#include "sqs.h"
#include "testlib.h"
#include "timeutil.h"

static const char *endpoint;
static const char *region;
static credentials_provider *credentials;
static char suffix[64];

static sqs_client *new_client(const char *url, int max_attempts)
{
    char err[256];
    const sqs_config cfg = {
        .region = region,
        .endpoint = url,
        .credentials = credentials,
        .max_attempts = max_attempts,
        .base_backoff_ms = 1,
        .max_backoff_ms = 5,
    };
    sqs_client *c = sqs_client_new(&cfg, err, sizeof err);
    if (!c) NOTE("sqs_client_new(%s): %s", url, err);
    return c;
}

/* chatflow_sqs_requests_total{action,result} as rendered, 0 when the series does not exist yet. */
static unsigned long long requests_counted(const char *action, const char *result)
{
    char prefix[160];
    snprintf(prefix, sizeof prefix, "chatflow_sqs_requests_total{action=\"%s\",result=\"%s\"} ",
             action, result);
    char *text = metrics_render();
    unsigned long long n = 0;
    const char *line = text ? strstr(text, prefix) : NULL;
    if (line) n = strtoull(line + strlen(prefix), NULL, 10);
    free(text);
    return n;
}

/* Sequence numbers are decimal strings longer than 64 bits: compare by length, then digits. */
static int seq_cmp(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}

static char *create_fifo(sqs_client *c, const char *base)
{
    char name[128];
    snprintf(name, sizeof name, "%s-%s.fifo", base, suffix);
    const sqs_attribute attrs[] = {
        {"FifoQueue", "true"},
        {"ContentBasedDeduplication", "false"},
        {"VisibilityTimeout", "30"},
    };
    char *url = NULL;
    sqs_error err;
    sqs_status s = sqs_create_queue(c, name, attrs, 3, &url, &err);
    CHECK(s == SQS_OK && url, "CreateQueue %s (%s %s)", name, err.type, err.message);
    return url;
}

static void test_queue_management(sqs_client *c)
{
    char name[128];
    snprintf(name, sizeof name, "itsqs-mgmt-%s.fifo", suffix);
    char *url = create_fifo(c, "itsqs-mgmt");
    if (!url) return;
    CHECK(strstr(url, name) != NULL, "queue URL names the queue (%s)", url);

    char *again = NULL;
    sqs_error err;
    CHECK_INT(sqs_create_queue(c, name,
                               (const sqs_attribute[]){{"FifoQueue", "true"},
                                                       {"ContentBasedDeduplication", "false"},
                                                       {"VisibilityTimeout", "30"}},
                               3, &again, &err),
              SQS_OK, "CreateQueue again with the same attributes is idempotent");
    CHECK_STR(again, url, "CreateQueue again returns the same URL");
    free(again);

    char *found = NULL;
    CHECK_INT(sqs_get_queue_url(c, name, &found, &err), SQS_OK, "GetQueueUrl");
    CHECK_STR(found, url, "GetQueueUrl returns the created queue's URL");
    free(found);

    const char *names[] = {"FifoQueue", "VisibilityTimeout", "QueueArn",
                           "ContentBasedDeduplication"};
    char *values[4] = {0};
    CHECK_INT(sqs_get_queue_attributes(c, url, names, 4, values, &err), SQS_OK,
              "GetQueueAttributes");
    CHECK_STR(values[0], "true", "FifoQueue attribute");
    CHECK_STR(values[1], "30", "VisibilityTimeout attribute");
    CHECK(values[2] && strstr(values[2], name), "QueueArn names the queue (%s)",
          values[2] ? values[2] : "(null)");
    CHECK_STR(values[3], "false", "ContentBasedDeduplication attribute");
    for (int i = 0; i < 4; i++) free(values[i]);

    CHECK_INT(sqs_set_queue_attributes(c, url, (const sqs_attribute[]){{"VisibilityTimeout", "45"}},
                                       1, &err),
              SQS_OK, "SetQueueAttributes VisibilityTimeout 45");
    CHECK_INT(sqs_get_queue_attributes(c, url, names + 1, 1, values, &err), SQS_OK,
              "GetQueueAttributes after set");
    CHECK_STR(values[0], "45", "VisibilityTimeout changed");
    free(values[0]);

    /* purge: one message in, none left */
    sqs_send_result sent;
    CHECK_INT(sqs_send_message(c, url, "to be purged", "g", "purge-1", &sent, &err), SQS_OK,
              "SendMessage before purge");
    const char *depth_name[] = {"ApproximateNumberOfMessages"};
    CHECK_INT(sqs_get_queue_attributes(c, url, depth_name, 1, values, &err), SQS_OK,
              "depth before purge");
    CHECK_STR(values[0], "1", "one message before purge");
    free(values[0]);
    CHECK_INT(sqs_purge_queue(c, url, &err), SQS_OK, "PurgeQueue");
    CHECK_INT(sqs_get_queue_attributes(c, url, depth_name, 1, values, &err), SQS_OK,
              "depth after purge");
    CHECK_STR(values[0], "0", "no message after purge");
    free(values[0]);
    free(url);
}

static sqs_message *receive_one(sqs_client *c, const char *url, int visibility, size_t *n,
                                sqs_error *err)
{
    const sqs_receive_options opt = {
        .max_messages = 10, .wait_seconds = 0, .visibility_timeout = visibility};
    sqs_message *m = NULL;
    *n = 0;
    sqs_status s = sqs_receive_message(c, url, &opt, &m, n, err);
    if (s != SQS_OK) NOTE("ReceiveMessage: %s %s %s", sqs_status_name(s), err->type, err->message);
    return m;
}

static bool delete_one(sqs_client *c, const char *url, const sqs_message *m)
{
    const sqs_handle_entry e = {.id = "d0", .receipt_handle = m->receipt_handle};
    sqs_entry_result r;
    sqs_error err;
    return sqs_delete_message_batch(c, url, &e, 1, &r, &err) == SQS_OK && r.ok;
}

static void test_batch_and_order(sqs_client *c)
{
    char *url = create_fifo(c, "itsqs-order");
    if (!url) return;
    char ids[10][8], bodies[10][16], dedup[10][96];
    sqs_send_entry entries[10];
    for (int i = 0; i < 10; i++) {
        snprintf(ids[i], sizeof ids[i], "e%d", i);
        snprintf(bodies[i], sizeof bodies[i], "m%d", i);
        snprintf(dedup[i], sizeof dedup[i], "order-%s-%d", suffix, i);
        entries[i] = (sqs_send_entry){
            .id = ids[i], .body = bodies[i], .group_id = "room-1", .dedup_id = dedup[i]};
    }
    sqs_entry_result results[10];
    sqs_error err;
    sqs_status s = sqs_send_message_batch(c, url, entries, 10, results, &err);
    CHECK_INT(s, SQS_OK, "SendMessageBatch of 10 (%s %s)", err.type, err.message);
    int ok = 0;
    bool increasing = true;
    for (int i = 0; i < 10; i++) {
        ok += results[i].ok && results[i].message_id[0] && results[i].sequence_number[0];
        if (i > 0 && seq_cmp(results[i - 1].sequence_number, results[i].sequence_number) >= 0)
            increasing = false;
    }
    CHECK_INT(ok, 10, "every entry succeeded with a message id and a sequence number");
    CHECK(increasing, "sequence numbers increase in entry order");

    /* fauxqs hands out one message per group per receive: receive, check, delete, ten times. */
    int in_order = 0, attrs_ok = 0, deleted = 0;
    for (int i = 0; i < 10; i++) {
        size_t n;
        sqs_message *m = receive_one(c, url, 30, &n, &err);
        if (n == 1 && strcmp(m[0].body, bodies[i]) == 0) in_order++;
        if (n == 1 && strcmp(m[0].sequence_number, results[i].sequence_number) == 0 &&
            strcmp(m[0].group_id, "room-1") == 0 && m[0].receive_count == 1 &&
            m[0].sent_timestamp_ms > 0 && strcmp(m[0].message_id, results[i].message_id) == 0)
            attrs_ok++;
        if (n == 1 && delete_one(c, url, &m[0])) deleted++;
        sqs_messages_free(m, n);
    }
    CHECK_INT(in_order, 10, "the group's messages arrive in send order");
    CHECK_INT(attrs_ok, 10,
              "received messages carry id, sequence number, group, receive count 1, sent time");
    CHECK_INT(deleted, 10, "each message deleted with DeleteMessageBatch");
    size_t n;
    sqs_message *m = receive_one(c, url, 30, &n, &err);
    CHECK_INT(n, 0, "queue empty after deleting everything");
    sqs_messages_free(m, n);

    /* three groups: one receive returns one of each, one DeleteMessageBatch removes them all */
    sqs_send_entry multi[3];
    char gids[3][8];
    for (int i = 0; i < 3; i++) {
        snprintf(gids[i], sizeof gids[i], "g%d", i);
        snprintf(dedup[i], sizeof dedup[i], "multi-%s-%d", suffix, i);
        multi[i] = (sqs_send_entry){
            .id = ids[i], .body = bodies[i], .group_id = gids[i], .dedup_id = dedup[i]};
    }
    CHECK_INT(sqs_send_message_batch(c, url, multi, 3, results, &err), SQS_OK,
              "SendMessageBatch to three groups");
    m = receive_one(c, url, 30, &n, &err);
    CHECK_INT(n, 3, "one receive returns one message of each of the three groups");
    sqs_handle_entry del[3];
    for (size_t i = 0; i < n && i < 3; i++)
        del[i] = (sqs_handle_entry){.id = ids[i], .receipt_handle = m[i].receipt_handle};
    if (n == 3) {
        CHECK_INT(sqs_delete_message_batch(c, url, del, 3, results, &err), SQS_OK,
                  "DeleteMessageBatch of 3");
        CHECK(results[0].ok && results[1].ok && results[2].ok, "all three deletes succeeded");
    }
    sqs_messages_free(m, n);
    const char *depth[] = {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"};
    char *values[2] = {0};
    CHECK_INT(sqs_get_queue_attributes(c, url, depth, 2, values, &err), SQS_OK,
              "depth after batch delete");
    CHECK(values[0] && values[1] && strcmp(values[0], "0") == 0 && strcmp(values[1], "0") == 0,
          "no message visible or in flight after the batch delete (%s / %s)",
          values[0] ? values[0] : "-", values[1] ? values[1] : "-");
    free(values[0]);
    free(values[1]);
    free(url);
}

/* Room ids are the FIFO group ids (docs/protocol.md §4): three rooms, one of them the longest id
 * (64 characters), interleaved in one batch; each id comes back intact and each room's messages
 * in their order, whatever the other rooms on the same queue. */
static void test_room_id_groups(sqs_client *c)
{
    char *url = create_fifo(c, "itsqs-rooms");
    if (!url) return;
    char id64[65];
    for (int i = 0; i < 64; i++) id64[i] = "Ab9_-z"[i % 6];
    id64[64] = '\0';
    const char *rooms[3] = {"team-alpha", "3f2b8c1e-9a4d-4c7b-8e21-5d6f7a8b9c0d", id64};
    enum { PER_ROOM = 3, N = 3 * PER_ROOM };
    sqs_send_entry entries[N];
    char ids[N][8], bodies[N][16], dedup[N][96];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "r%d", i);
        snprintf(bodies[i], sizeof bodies[i], "%d-%d", i % 3, i / 3); /* room-index */
        snprintf(dedup[i], sizeof dedup[i], "rooms-%s-%d", suffix, i);
        entries[i] = (sqs_send_entry){
            .id = ids[i], .body = bodies[i], .group_id = rooms[i % 3], .dedup_id = dedup[i]};
    }
    sqs_entry_result results[N];
    sqs_error err;
    CHECK_INT(sqs_send_message_batch(c, url, entries, N, results, &err), SQS_OK,
              "SendMessageBatch to three room-id groups (%s %s)", err.type, err.message);
    int next[3] = {0, 0, 0}, wrong_group = 0, disorder = 0, got = 0;
    for (int round = 0; round < 3 * N && got < N; round++) {
        size_t n;
        sqs_message *m = receive_one(c, url, 30, &n, &err);
        for (size_t k = 0; k < n; k++) {
            int r = -1, seq = -1;
            got++;
            if (sscanf(m[k].body, "%d-%d", &r, &seq) != 2 || r < 0 || r > 2) {
                wrong_group++;
                continue;
            }
            if (strcmp(m[k].group_id, rooms[r]) != 0) wrong_group++;
            if (seq != next[r]++) disorder++;
            delete_one(c, url, &m[k]);
        }
        sqs_messages_free(m, n);
    }
    CHECK_INT(got, N, "every message of the three rooms received");
    CHECK_INT(wrong_group, 0, "each carries its room id as group id, the 64-character one intact");
    CHECK_INT(disorder, 0, "each room's messages arrive in send order");
    free(url);
}

static void test_dedup_and_visibility(sqs_client *c)
{
    char *url = create_fifo(c, "itsqs-dedup");
    if (!url) return;
    char dedup[96];
    snprintf(dedup, sizeof dedup, "dup-%s", suffix);
    sqs_send_result a, b;
    sqs_error err;
    CHECK_INT(sqs_send_message(c, url, "once", "room-2", dedup, &a, &err), SQS_OK,
              "SendMessage with a dedup id");
    CHECK_INT(sqs_send_message(c, url, "once", "room-2", dedup, &b, &err), SQS_OK,
              "SendMessage again with the same dedup id");
    size_t n;
    sqs_message *m = receive_one(c, url, 30, &n, &err);
    CHECK_INT(n, 1, "one message received");
    if (n != 1) {
        sqs_messages_free(m, n);
        free(url);
        return;
    }
    CHECK_STR(m[0].body, "once", "its body");
    const char *depth[] = {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"};
    char *values[2] = {0};
    CHECK_INT(sqs_get_queue_attributes(c, url, depth, 2, values, &err), SQS_OK,
              "depth after duplicate send");
    CHECK(values[0] && values[1] && strcmp(values[0], "0") == 0 && strcmp(values[1], "1") == 0,
          "the duplicate was dropped: 0 visible, 1 in flight (%s / %s)",
          values[0] ? values[0] : "-", values[1] ? values[1] : "-");
    free(values[0]);
    free(values[1]);

    /* in flight: nothing to receive; visibility 0 makes it come back with a higher receive count */
    size_t n2;
    sqs_message *none = receive_one(c, url, 30, &n2, &err);
    CHECK_INT(n2, 0, "an in-flight message is not received again");
    sqs_messages_free(none, n2);
    sqs_handle_entry change = {
        .id = "v0", .receipt_handle = m[0].receipt_handle, .visibility_timeout = 0};
    sqs_entry_result r;
    CHECK_INT(sqs_change_visibility_batch(c, url, &change, 1, &r, &err), SQS_OK,
              "ChangeMessageVisibilityBatch to 0");
    CHECK(r.ok, "the visibility change entry succeeded (%s %s)", r.code, r.message);
    sqs_message *back = receive_one(c, url, 30, &n2, &err);
    CHECK(n2 == 1 && strcmp(back[0].message_id, m[0].message_id) == 0,
          "the message is visible again");
    CHECK(n2 == 1 && back[0].receive_count == 2, "its receive count is 2 (%d)",
          n2 == 1 ? back[0].receive_count : -1);
    if (n2 == 1) CHECK(delete_one(c, url, &back[0]), "deleted");
    sqs_messages_free(back, n2);
    sqs_messages_free(m, n);
    free(url);
}

/* ---- long poll ---- */

typedef struct {
    const char *url;
    sqs_status status;
    size_t n;
    char body[64];
    double seconds;
} poll_result;

static void *long_poll(void *arg)
{
    poll_result *p = arg;
    sqs_client *c = new_client(endpoint, 1);
    if (!c) return NULL;
    const sqs_receive_options opt = {
        .max_messages = 1, .wait_seconds = 20, .visibility_timeout = 30};
    sqs_message *m = NULL;
    sqs_error err;
    uint64_t start = time_mono_ns();
    p->status = sqs_receive_message(c, p->url, &opt, &m, &p->n, &err);
    p->seconds = (double)(time_mono_ns() - start) / 1e9;
    if (p->n > 0) snprintf(p->body, sizeof p->body, "%s", m[0].body);
    sqs_messages_free(m, p->n);
    sqs_client_free(c);
    return NULL;
}

static void test_long_poll(sqs_client *c)
{
    char *url = create_fifo(c, "itsqs-poll");
    if (!url) return;
    poll_result p = {.url = url, .status = SQS_SERVER_ERROR};
    pthread_t t;
    pthread_create(&t, NULL, long_poll, &p);
    time_sleep_ms(1000); /* let the poll start waiting */
    sqs_send_result sent;
    sqs_error err;
    CHECK_INT(sqs_send_message(c, url, "wake up", "room-3", "wake-1", &sent, &err), SQS_OK,
              "send while another thread long-polls");
    pthread_join(t, NULL);
    CHECK_INT(p.status, SQS_OK, "long poll succeeded");
    CHECK(p.n == 1 && strcmp(p.body, "wake up") == 0,
          "long poll returned the message sent meanwhile");
    CHECK(p.seconds < 19.0, "long poll returned before the 20 s wait ended (%.2f s)", p.seconds);
    free(url);
}

/* ---- errors from fauxqs ---- */

static void test_errors(sqs_client *c)
{
    char name[128], *url = NULL;
    sqs_error err;
    snprintf(name, sizeof name, "itsqs-missing-%s.fifo", suffix);
    unsigned long long before = requests_counted("GetQueueUrl", "queue_missing");
    sqs_status s = sqs_get_queue_url(c, name, &url, &err);
    CHECK_INT(s, SQS_QUEUE_MISSING, "GetQueueUrl of a missing queue -> queue_missing (%s: %s)",
              err.type, err.message);
    CHECK(err.http_status == 400 && err.type[0], "error carries HTTP 400 and the AWS type (%ld %s)",
          err.http_status, err.type);
    CHECK_INT(requests_counted("GetQueueUrl", "queue_missing") - before, 1,
              "queue_missing is not retried");
    free(url);

    char *q = create_fifo(c, "itsqs-errors");
    if (!q) return;
    const sqs_send_entry dup[2] = {
        {.id = "same", .body = "a", .group_id = "g", .dedup_id = "x1"},
        {.id = "same", .body = "b", .group_id = "g", .dedup_id = "x2"},
    };
    sqs_entry_result r[2];
    before = requests_counted("SendMessageBatch", "invalid_request");
    s = sqs_send_message_batch(c, q, dup, 2, r, &err);
    CHECK_INT(s, SQS_INVALID_REQUEST, "batch with duplicate ids -> invalid_request (%s: %s)",
              err.type, err.message);
    CHECK_INT(requests_counted("SendMessageBatch", "invalid_request") - before, 1,
              "invalid_request is not retried");

    sqs_send_result sent;
    s = sqs_send_message(c, q, "no group", NULL, "x3", &sent, &err);
    CHECK_INT(s, SQS_INVALID_REQUEST, "FIFO send without a group id -> invalid_request (%s: %s)",
              err.type, err.message);

    const sqs_receive_options bad = {
        .max_messages = 11, .wait_seconds = 0, .visibility_timeout = -1};
    sqs_message *m = NULL;
    size_t n = 0;
    CHECK_INT(sqs_receive_message(c, q, &bad, &m, &n, &err), SQS_INVALID_REQUEST,
              "max_messages 11 refused locally (%s)", err.message);
    free(q);

    /* a port nothing listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    bind(fd, (struct sockaddr *)&addr, sizeof addr);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    close(fd);
    char closed[64];
    snprintf(closed, sizeof closed, "http://127.0.0.1:%d", ntohs(addr.sin_port));
    sqs_client *dead = new_client(closed, 3);
    if (!dead) return;
    before = requests_counted("GetQueueUrl", "network_error");
    s = sqs_get_queue_url(dead, "whatever.fifo", &url, &err);
    CHECK_INT(s, SQS_NETWORK_ERROR, "closed port -> network_error (%s)", err.message);
    CHECK_INT(err.http_status, 0, "no HTTP status on a network error");
    CHECK_INT(requests_counted("GetQueueUrl", "network_error") - before, 3,
              "network error tried max_attempts = 3 times");
    sqs_client_free(dead);
}

/* After metrics_reset() + sqs_metrics_forget() the client registers fresh series (under ASan a
 * stale pointer would be a use after free). */
static void test_metrics_after_reset(sqs_client *c)
{
    metrics_reset();
    sqs_metrics_forget();
    char name[128], *url = NULL;
    snprintf(name, sizeof name, "itsqs-missing2-%s.fifo", suffix);
    sqs_error err;
    CHECK_INT(sqs_get_queue_url(c, name, &url, &err), SQS_QUEUE_MISSING,
              "call after metrics_reset");
    free(url);
    CHECK_INT(requests_counted("GetQueueUrl", "queue_missing"), 1,
              "counted from 1 in the fresh registry");
    char *text = metrics_render();
    CHECK(text &&
              strstr(text, "chatflow_sqs_request_duration_seconds_count{action=\"GetQueueUrl\"} 1"),
          "duration histogram registered again and observed once");
    free(text);
}

/* ---- a fake SQS for the answers fauxqs never gives ---- */

typedef enum {
    FAKE_500,
    FAKE_THROTTLE,
    FAKE_INVALID,
    FAKE_QUERY_HEADER,
    FAKE_AUTH,
    FAKE_500_THEN_OK
} fake_mode;

static struct {
    pthread_mutex_t lock;
    fake_mode mode;
    int attempts;
    int bad_wire;    /* requests whose headers or signature were wrong */
    int connections; /* TCP connections accepted */
    char last_problem[256];
} fake = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct {
    char *data;
    size_t len;
} upload;

static void wire_problem(const char *what)
{
    fake.bad_wire++;
    snprintf(fake.last_problem, sizeof fake.last_problem, "%s", what);
}

/* Checks the headers the contract requires and recomputes the signature from them. Called with
 * fake.lock held. */
static void check_wire(struct MHD_Connection *conn, const char *method, const upload *u)
{
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    const char *type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    const char *target = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Amz-Target");
    const char *date = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Amz-Date");
    const char *token = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Amz-Security-Token");
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (strcmp(method, "POST") != 0) return wire_problem("not a POST");
    if (!host || !type || !target || !date || !auth)
        return wire_problem("a required header is missing");
    if (strcmp(type, "application/x-amz-json-1.0") != 0) return wire_problem("wrong content type");
    if (strncmp(target, "AmazonSQS.", 10) != 0) return wire_problem("wrong X-Amz-Target");
    if (!token || strcmp(token, "it-session-token") != 0)
        return wire_problem("session token header missing");
    if (!strstr(auth, "/sqs/aws4_request") || !strstr(auth, "Credential=ITKEY/"))
        return wire_problem("wrong credential scope");
    if (!strstr(auth, "host;x-amz-date;x-amz-security-token;x-amz-target") &&
        !strstr(auth, "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"))
        return wire_problem("signed headers do not cover host, date, token and target");
    const sigv4_header headers[] = {
        {"Host", host},
        {"Content-Type", type},
        {"X-Amz-Target", target},
    };
    const sigv4_request req = {.method = "POST",
                               .path = "/",
                               .headers = headers,
                               .n_headers = 3,
                               .body = (const uint8_t *)u->data,
                               .body_len = u->len};
    const sigv4_params params = {.access_key_id = "ITKEY",
                                 .secret_access_key = "itsecret",
                                 .session_token = "it-session-token",
                                 .region = region,
                                 .service = "sqs",
                                 .amz_date = date,
                                 .normalize_path = true};
    sigv4_result sig;
    char err[128];
    if (!sigv4_sign(&req, &params, &sig, err, sizeof err))
        return wire_problem("cannot recompute the signature");
    if (strcmp(sig.authorization, auth) != 0)
        wire_problem("signature does not match the request as received");
    sigv4_result_free(&sig);
}

static enum MHD_Result fake_answer(struct MHD_Connection *conn, unsigned status, const char *body,
                                   const char *query_error)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/x-amz-json-1.0");
    if (query_error) MHD_add_response_header(r, "x-amzn-query-error", query_error);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result fake_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    upload *u = *con_cls;
    if (!u) {
        *con_cls = calloc(1, sizeof *u);
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size) {
        char *grown = realloc(u->data, u->len + *upload_data_size);
        if (!grown) return MHD_NO;
        memcpy(grown + u->len, upload_data, *upload_data_size);
        u->data = grown;
        u->len += *upload_data_size;
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&fake.lock);
    int attempt = ++fake.attempts;
    fake_mode mode = fake.mode;
    check_wire(conn, method, u);
    pthread_mutex_unlock(&fake.lock);

    switch (mode) {
    case FAKE_500:
        return fake_answer(conn, 500,
                           "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"boom\"}",
                           NULL);
    case FAKE_THROTTLE:
        return fake_answer(
            conn, 400,
            "{\"__type\":\"com.amazonaws.sqs#ThrottlingException\",\"message\":\"slow down\"}",
            NULL);
    case FAKE_INVALID:
        return fake_answer(
            conn, 400,
            "{\"__type\":\"com.amazonaws.sqs#InvalidParameterValue\",\"message\":\"bad value\"}",
            NULL);
    case FAKE_QUERY_HEADER:
        return fake_answer(conn, 400,
                           "{\"__type\":\"com.amazonaws.sqs#SomethingNew\",\"message\":\"gone\"}",
                           "AWS.SimpleQueueService.NonExistentQueue;Sender");
    case FAKE_AUTH:
        return fake_answer(
            conn, 403,
            "{\"__type\":\"com.amazon.coral.service#SignatureDoesNotMatch\",\"Message\":\"no\"}",
            NULL);
    case FAKE_500_THEN_OK:
        if (attempt == 1) return fake_answer(conn, 500, "{\"__type\":\"InternalError\"}", NULL);
        return fake_answer(conn, 200, "{\"QueueUrl\":\"http://fake/000000000000/q.fifo\"}", NULL);
    }
    return MHD_NO;
}

static void fake_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    upload *u = *con_cls;
    if (u) free(u->data);
    free(u);
    *con_cls = NULL;
}

static void fake_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)conn;
    (void)socket_context;
    if (toe != MHD_CONNECTION_NOTIFY_STARTED) return;
    pthread_mutex_lock(&fake.lock);
    fake.connections++;
    pthread_mutex_unlock(&fake.lock);
}

static void expect_fake(sqs_client *c, fake_mode mode, sqs_status want, int want_attempts,
                        const char *want_type, const char *what)
{
    pthread_mutex_lock(&fake.lock);
    fake.mode = mode;
    fake.attempts = 0;
    pthread_mutex_unlock(&fake.lock);
    char *url = NULL;
    sqs_error err;
    sqs_status s = sqs_get_queue_url(c, "q.fifo", &url, &err);
    free(url);
    pthread_mutex_lock(&fake.lock);
    int attempts = fake.attempts;
    pthread_mutex_unlock(&fake.lock);
    CHECK(s == want, "%s -> %s (got %s: %ld %s %s)", what, sqs_status_name(want),
          sqs_status_name(s), err.http_status, err.type, err.message);
    CHECK_INT(attempts, want_attempts, "%s: %d attempt(s)", what, want_attempts);
    if (want_type) CHECK_STR(err.type, want_type, "%s: error type", what);
}

static void test_fake_server(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_request, NULL,
                         MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_NOTIFY_COMPLETED, fake_completed,
                         NULL, MHD_OPTION_NOTIFY_CONNECTION, fake_connection, NULL, MHD_OPTION_END);
    CHECK(d != NULL, "fake SQS server started");
    if (!d) return;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d",
             MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);

    /* this client signs with a session token, so the token header is checked too */
    char err[256];
    setenv("AWS_ACCESS_KEY_ID", "ITKEY", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "itsecret", 1);
    setenv("AWS_SESSION_TOKEN", "it-session-token", 1);
    credentials_provider *saved = credentials;
    credentials = credentials_provider_new(err, sizeof err);
    CHECK(credentials != NULL, "provider with a session token (%s)", err);
    sqs_client *c = credentials ? new_client(url, 3) : NULL;
    if (c) {
        unsigned long long before = requests_counted("GetQueueUrl", "server_error");
        expect_fake(c, FAKE_500, SQS_SERVER_ERROR, 3, "InternalError", "HTTP 500");
        CHECK_INT(requests_counted("GetQueueUrl", "server_error") - before, 3,
                  "metrics count each 500 attempt");
        expect_fake(c, FAKE_THROTTLE, SQS_THROTTLED, 3, "ThrottlingException",
                    "400 ThrottlingException");
        expect_fake(c, FAKE_INVALID, SQS_INVALID_REQUEST, 1, "InvalidParameterValue",
                    "400 InvalidParameterValue");
        expect_fake(c, FAKE_QUERY_HEADER, SQS_QUEUE_MISSING, 1, NULL,
                    "x-amzn-query-error NonExistentQueue");
        expect_fake(c, FAKE_AUTH, SQS_AUTH_ERROR, 1, "SignatureDoesNotMatch",
                    "403 SignatureDoesNotMatch");
        expect_fake(c, FAKE_500_THEN_OK, SQS_OK, 2, NULL, "500 then 200: the retry succeeds");
        pthread_mutex_lock(&fake.lock);
        CHECK_INT(fake.bad_wire, 0,
                  "every request had the required headers and a valid signature (%s)",
                  fake.last_problem);
        CHECK_INT(fake.connections, 1,
                  "all %d requests of one client went over one kept-alive connection",
                  3 + 3 + 1 + 1 + 1 + 2);
        pthread_mutex_unlock(&fake.lock);
        sqs_client_free(c);
    }
    credentials_provider_free(credentials);
    credentials = saved;
    MHD_stop_daemon(d);
}

int main(void)
{
    log_init("error", "text");
    endpoint = getenv("AWS_ENDPOINT_URL_SQS");
    region = getenv("AWS_REGION") && *getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1";
    CHECK(endpoint && *endpoint,
          "AWS_ENDPOINT_URL_SQS is set (test/run exports the stack's fauxqs)");
    if (!endpoint || !*endpoint) return TEST_DONE();
    snprintf(suffix, sizeof suffix, "%ld-%ld", (long)getpid(), (long)time(NULL));
    if (!getenv("AWS_ACCESS_KEY_ID")) {
        setenv("AWS_ACCESS_KEY_ID", "test", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "test", 1);
    }
    char err[256];
    credentials = credentials_provider_new(err, sizeof err);
    CHECK(credentials != NULL, "credentials from the environment (%s)", err);
    if (!credentials) return TEST_DONE();
    sqs_client *c = new_client(endpoint, 0);
    CHECK(c != NULL, "client for %s", endpoint);
    if (c) {
        test_queue_management(c);
        test_batch_and_order(c);
        test_room_id_groups(c);
        test_dedup_and_visibility(c);
        test_long_poll(c);
        test_errors(c);
        test_metrics_after_reset(c);
        sqs_client_free(c);
    }
    test_fake_server();
    credentials_provider_free(credentials);
    return TEST_DONE();
}
