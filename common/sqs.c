/*
 * sqs — Amazon SQS over the AWS JSON 1.0 protocol (contract in sqs.h).
 *
 * Request path: the body is built with jansson, signed with sigv4_sign() (service "sqs"), and
 * POSTed with the client's one libcurl easy handle, so the connection is reused. The response
 * buffer belongs to the client and only grows. Errors are classified once, in classify_error();
 * sqs_call() owns the retry loop and the metrics.
 *
 * Metrics: each (action, result) counter and each action's histogram is registered the first
 * time it is used and its pointer cached in a static table of atomics. Two threads racing on a
 * first use both register, and the registry hands both the same series; afterwards the hot path
 * is one atomic load. metrics_reset() frees the series: tests that call it call
 * sqs_metrics_forget() too, while no SQS call is in flight.
 */
#include "sqs.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws_http.h"
#include "log.h"
#include "metrics.h"
#include "sigv4.h"
#include "timeutil.h"

#define RESPONSE_MAX (16u * 1024 * 1024)

typedef enum {
    ACT_CREATE_QUEUE,
    ACT_GET_QUEUE_URL,
    ACT_GET_QUEUE_ATTRIBUTES,
    ACT_SET_QUEUE_ATTRIBUTES,
    ACT_PURGE_QUEUE,
    ACT_SEND_MESSAGE,
    ACT_SEND_MESSAGE_BATCH,
    ACT_RECEIVE_MESSAGE,
    ACT_DELETE_MESSAGE_BATCH,
    ACT_CHANGE_VISIBILITY_BATCH,
    ACT_COUNT
} sqs_action;

static const char *const action_names[ACT_COUNT] = {
    "CreateQueue",        "GetQueueUrl",
    "GetQueueAttributes", "SetQueueAttributes",
    "PurgeQueue",         "SendMessage",
    "SendMessageBatch",   "ReceiveMessage",
    "DeleteMessageBatch", "ChangeMessageVisibilityBatch",
};

#define STATUS_COUNT (SQS_AUTH_ERROR + 1)

static const char *const status_names[STATUS_COUNT] = {
    "ok",         "throttled", "server_error", "network_error", "queue_missing", "invalid_request",
    "auth_error",
};

struct sqs_client {
    char region[64];
    char endpoint[512];
    aws_endpoint ep; /* Host header and path, as signed */
    credentials_provider *credentials;
    long connect_timeout_ms;
    long request_timeout_ms;
    int max_attempts;
    int base_backoff_ms;
    int max_backoff_ms;

    const atomic_bool *abort_flag; /* set by another thread: end the call in progress */

    CURL *curl;
    char curl_error[CURL_ERROR_SIZE];
    char *response; /* reused across requests */
    size_t response_len, response_cap;
    bool response_too_big;
    char query_error[128]; /* x-amzn-query-error of the last answer, "" if none */
};

const char *sqs_status_name(sqs_status s)
{
    return (unsigned)s < STATUS_COUNT ? status_names[s] : "unknown";
}

bool sqs_status_retriable(sqs_status s)
{
    return s == SQS_THROTTLED || s == SQS_SERVER_ERROR || s == SQS_NETWORK_ERROR;
}

/* ---- metrics ---- */

static _Atomic(metric_counter *) request_counters[ACT_COUNT][STATUS_COUNT];
static _Atomic(metric_histogram *) request_durations[ACT_COUNT];

static void record_request(sqs_action a, sqs_status s, double seconds)
{
    metric_counter *c = atomic_load_explicit(&request_counters[a][s], memory_order_acquire);
    if (!c) {
        char labels[128];
        snprintf(labels, sizeof labels, "action=\"%s\",result=\"%s\"", action_names[a],
                 status_names[s]);
        c = metrics_counter("chatflow_sqs_requests_total",
                            "SQS requests (each attempt) by action and result.", labels);
        atomic_store_explicit(&request_counters[a][s], c, memory_order_release);
    }
    metric_histogram *h = atomic_load_explicit(&request_durations[a], memory_order_acquire);
    if (!h) {
        char labels[96];
        snprintf(labels, sizeof labels, "action=\"%s\"", action_names[a]);
        h = metrics_histogram("chatflow_sqs_request_duration_seconds",
                              "SQS request duration (each attempt).", labels,
                              METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
        atomic_store_explicit(&request_durations[a], h, memory_order_release);
    }
    metric_counter_inc(c);
    metric_histogram_observe(h, seconds);
}

/* ---- errors ---- */

static void err_clear(sqs_error *err)
{
    err->http_status = 0;
    err->type[0] = '\0';
    err->message[0] = '\0';
}

static void err_set(sqs_error *err, long http_status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_set(sqs_error *err, long http_status, const char *type, const char *fmt, ...)
{
    err->http_status = http_status;
    snprintf(err->type, sizeof err->type, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static bool type_in(const char *type, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(type, *list) == 0) return true;
    return false;
}

static const char *const throttle_types[] = {
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "AWS.SimpleQueueService.RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KmsThrottled",
    NULL,
};
static const char *const missing_types[] = {
    "QueueDoesNotExist",
    "NonExistentQueue",
    "AWS.SimpleQueueService.NonExistentQueue",
    NULL,
};
static const char *const auth_types[] = {
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingClientTokenId",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSecurity",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "RequestExpired",
    "AuthFailure",
    NULL,
};

static sqs_status classify_type(const char *type)
{
    if (!type || !*type) return SQS_OK;
    if (type_in(type, throttle_types)) return SQS_THROTTLED;
    if (type_in(type, missing_types)) return SQS_QUEUE_MISSING;
    if (type_in(type, auth_types)) return SQS_AUTH_ERROR;
    return SQS_OK; /* unknown here: the HTTP status decides */
}

/* Fills err from a non-200 answer and returns its kind (sqs.h). */
sqs_status sqs_parse_error_answer(long http_status, const char *body, size_t len,
                                  const char *query_error, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    char type[128] = "";
    char message[512] = "";
    if (!query_error) query_error = "";
    json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
    if (json_is_object(root)) {
        const char *t = json_string_value(json_object_get(root, "__type"));
        if (!t) t = json_string_value(json_object_get(root, "code"));
        if (t) {
            const char *hash = strrchr(t, '#');
            snprintf(type, sizeof type, "%s", hash ? hash + 1 : t);
        }
        const char *m = json_string_value(json_object_get(root, "message"));
        if (!m) m = json_string_value(json_object_get(root, "Message"));
        if (m) snprintf(message, sizeof message, "%s", m);
    } else if (len) {
        snprintf(message, sizeof message, "%.*s", (int)(len < 200 ? len : 200), body);
    }
    json_decref(root);

    /* The legacy query-protocol code ("AWS.SimpleQueueService.NonExistentQueue;Sender") is more
     * specific than some __type values, so it is consulted first. */
    sqs_status kind = classify_type(query_error);
    if (kind == SQS_OK) kind = classify_type(type);
    if (!type[0] && query_error[0]) snprintf(type, sizeof type, "%s", query_error);
    if (kind == SQS_OK) {
        if (http_status == 429)
            kind = SQS_THROTTLED;
        else if (http_status == 401 || http_status == 403)
            kind = SQS_AUTH_ERROR;
        else if (http_status >= 400 && http_status < 500)
            kind = SQS_INVALID_REQUEST;
        else
            kind = SQS_SERVER_ERROR; /* 5xx, or an answer no SQS server gives */
    }
    err_set(err, http_status, type[0] ? type : "", "%s",
            message[0] ? message : "(no error message)");
    return kind;
}

static sqs_status classify_error(sqs_client *c, long http_status, sqs_error *err)
{
    return sqs_parse_error_answer(http_status, c->response, c->response_len, c->query_error, err);
}

/* ---- client ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sqs_client *c = userdata;
    size_t n = size * nmemb;
    if (c->response_len + n + 1 > c->response_cap) {
        if (c->response_len + n + 1 > RESPONSE_MAX) {
            c->response_too_big = true;
            return 0;
        }
        size_t cap = c->response_cap ? c->response_cap : 4096;
        while (cap < c->response_len + n + 1) cap *= 2;
        char *grown = realloc(c->response, cap);
        if (!grown) return 0;
        c->response = grown;
        c->response_cap = cap;
    }
    memcpy(c->response + c->response_len, ptr, n);
    c->response_len += n;
    c->response[c->response_len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sqs_client *c = userdata;
    size_t n = size * nmemb;
    static const char name[] = "x-amzn-query-error:";
    if (n > sizeof name - 1 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        const char *v = ptr + sizeof name - 1;
        const char *end = ptr + n;
        while (v < end && (*v == ' ' || *v == '\t')) v++;
        const char *stop = v;
        while (stop < end && *stop != ';' && *stop != '\r' && *stop != '\n') stop++;
        snprintf(c->query_error, sizeof c->query_error, "%.*s", (int)(stop - v), v);
    }
    return n;
}

static bool parse_endpoint(sqs_client *c, char *err, size_t err_len)
{
    return aws_endpoint_parse(c->endpoint, "SQS endpoint", &c->ep, err, err_len);
}

void sqs_client_set_abort(sqs_client *c, const atomic_bool *flag)
{
    c->abort_flag = flag;
    curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, (void *)flag);
    curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, flag ? 0L : 1L);
}

bool sqs_client_aborted(const sqs_client *c) { return c->abort_flag && atomic_load(c->abort_flag); }

sqs_client *sqs_client_new(const sqs_config *cfg, char *err, size_t err_len)
{
    if (!cfg || !cfg->region || !*cfg->region || !cfg->credentials) {
        snprintf(err, err_len, "sqs_client_new: region and credentials are required");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, err_len, "curl_global_init failed");
        return NULL;
    }
    sqs_client *c = calloc(1, sizeof *c);
    if (!c) {
        curl_global_cleanup();
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    int n1 = snprintf(c->region, sizeof c->region, "%s", cfg->region);
    int n2 = cfg->endpoint && *cfg->endpoint
                 ? snprintf(c->endpoint, sizeof c->endpoint, "%s", cfg->endpoint)
                 : snprintf(c->endpoint, sizeof c->endpoint, "https://sqs.%s.amazonaws.com",
                            cfg->region);
    c->credentials = cfg->credentials;
    c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 2000;
    c->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 30000;
    c->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 4;
    c->base_backoff_ms = cfg->base_backoff_ms > 0 ? cfg->base_backoff_ms : 50;
    c->max_backoff_ms = cfg->max_backoff_ms > 0 ? cfg->max_backoff_ms : 2000;

    if ((size_t)n1 >= sizeof c->region || (size_t)n2 >= sizeof c->endpoint) {
        snprintf(err, err_len, "SQS region or endpoint is too long");
        goto fail;
    }
    if (!parse_endpoint(c, err, err_len)) goto fail;
    c->curl = curl_easy_init();
    if (!c->curl) {
        snprintf(err, err_len, "curl_easy_init failed");
        goto fail;
    }
    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_URL, c->endpoint);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_error);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, aws_curl_abort_on_flag);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, NULL); /* sqs_client_set_abort() */
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
    return c;
fail:
    sqs_client_free(c);
    return NULL;
}

void sqs_client_free(sqs_client *c)
{
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    free(c->response);
    free(c);
    curl_global_cleanup();
}

/* ---- one request ---- */

/* One signed POST. On SQS_OK the answer is in c->response. */
static sqs_status attempt(sqs_client *c, sqs_action a, const char *body, size_t body_len,
                          long timeout_ms, sqs_error *err)
{
    aws_credentials creds;
    char cerr[600];
    if (!credentials_get(c->credentials, &creds, cerr, sizeof cerr)) {
        err_set(err, 0, "CredentialsUnavailable", "%s", cerr);
        return SQS_AUTH_ERROR;
    }
    char target[64];
    snprintf(target, sizeof target, "AmazonSQS.%s", action_names[a]);
    const sigv4_header headers[] = {
        {"Content-Type", "application/x-amz-json-1.0"},
        {"X-Amz-Target", target},
    };
    char serr[256];
    struct curl_slist *list =
        aws_signed_post_headers(&c->ep, headers, sizeof headers / sizeof headers[0], body, body_len,
                                &creds, c->region, "sqs", serr, sizeof serr);
    memset(&creds, 0, sizeof creds);
    if (!list) {
        err_set(err, 0, "SigningFailed", "%s", serr);
        return SQS_INVALID_REQUEST;
    }

    CURL *h = c->curl;
    c->response_len = 0;
    c->response_too_big = false;
    c->query_error[0] = '\0';
    c->curl_error[0] = '\0';
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(list);

    if (rc != CURLE_OK) {
        err_set(err, 0, rc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : "NetworkError", "%s %s: %s",
                action_names[a], c->endpoint,
                c->response_too_big ? "answer too large"
                : c->curl_error[0]  ? c->curl_error
                                    : curl_easy_strerror(rc));
        return SQS_NETWORK_ERROR;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) {
        err->http_status = 200;
        return SQS_OK;
    }
    return classify_error(c, status, err);
}

static long backoff_ms(const sqs_client *c, int retry)
{
    long cap = c->base_backoff_ms;
    for (int i = 0; i < retry && cap < c->max_backoff_ms; i++) cap *= 2;
    if (cap > c->max_backoff_ms) cap = c->max_backoff_ms;
    return (long)arc4random_uniform((uint32_t)cap + 1); /* full jitter */
}

/* A 200 answer's body as a JSON object ({} for an empty body), or NULL with err set. */
static json_t *parse_reply(const char *action, const char *body, size_t len, sqs_error *err)
{
    json_t *root = len ? json_loadb(body, len, 0, NULL) : json_object();
    if (!json_is_object(root)) {
        json_decref(root);
        /* body need not be NUL-terminated (sqs_parse_* callers): print at most len bytes */
        err_set(err, 200, "MalformedResponse",
                "%s answered 200 with a body that is not a JSON object: %.*s", action,
                (int)(len < 100 ? len : 100), len ? body : "");
        return NULL;
    }
    return root;
}

/* Sends body (consumed: json_decref'd here) and, on SQS_OK, returns the parsed answer in *reply
 * (an object; {} for an empty body). */
static sqs_status sqs_call(sqs_client *c, sqs_action a, json_t *body_json, long extra_timeout_ms,
                           json_t **reply, sqs_error *err)
{
    *reply = NULL;
    char *body = body_json ? json_dumps(body_json, JSON_COMPACT) : NULL;
    json_decref(body_json);
    if (!body) {
        err_set(err, 0, "OutOfMemory", "building the %s request failed", action_names[a]);
        return SQS_INVALID_REQUEST;
    }
    size_t body_len = strlen(body);
    sqs_status s = SQS_OK;
    for (int n = 1;; n++) {
        err_clear(err);
        uint64_t start = time_mono_ns();
        s = attempt(c, a, body, body_len, c->request_timeout_ms + extra_timeout_ms, err);
        record_request(a, s, (double)(time_mono_ns() - start) / 1e9);
        if (s == SQS_OK || !sqs_status_retriable(s) || n >= c->max_attempts ||
            sqs_client_aborted(c))
            break;
        long sleep_ms = backoff_ms(c, n - 1);
        log_debug("sqs", "%s attempt %d/%d: %s (%s %s); retrying in %ld ms", action_names[a], n,
                  c->max_attempts, sqs_status_name(s), err->type, err->message, sleep_ms);
        time_sleep_ms(sleep_ms);
    }
    free(body);
    if (s != SQS_OK) return s;
    *reply = parse_reply(action_names[a], c->response, c->response_len, err);
    return *reply ? SQS_OK : SQS_SERVER_ERROR;
}

/* ---- helpers for bodies and answers ---- */

static json_t *body_with_queue(const char *queue_url)
{
    return json_pack("{s:s}", "QueueUrl", queue_url);
}

static bool add_attributes(json_t *body, const sqs_attribute *attrs, size_t n)
{
    if (n == 0) return true;
    json_t *map = json_object();
    for (size_t i = 0; i < n; i++) {
        if (!attrs[i].name || !attrs[i].value) {
            json_decref(map);
            return false;
        }
        json_object_set_new(map, attrs[i].name, json_string(attrs[i].value));
    }
    return json_object_set_new(body, "Attributes", map) == 0;
}

static sqs_status invalid(sqs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static sqs_status invalid(sqs_error *err, const char *fmt, ...)
{
    err->http_status = 0;
    snprintf(err->type, sizeof err->type, "InvalidArgument");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return SQS_INVALID_REQUEST;
}

static char *dup_string_field(json_t *obj, const char *name)
{
    const char *v = json_string_value(json_object_get(obj, name));
    return strdup(v ? v : "");
}

static void copy_string_field(json_t *obj, const char *name, char *dst, size_t dst_len)
{
    const char *v = json_string_value(json_object_get(obj, name));
    snprintf(dst, dst_len, "%s", v ? v : "");
}

static sqs_status take_queue_url(json_t *reply, char **queue_url, sqs_error *err)
{
    const char *url = json_string_value(json_object_get(reply, "QueueUrl"));
    if (!url) {
        json_decref(reply);
        err_set(err, 200, "MalformedResponse", "answer has no QueueUrl");
        return SQS_SERVER_ERROR;
    }
    *queue_url = strdup(url);
    json_decref(reply);
    return SQS_OK;
}

/* ---- queue management ---- */

sqs_status sqs_create_queue(sqs_client *c, const char *name, const sqs_attribute *attrs,
                            size_t n_attrs, char **queue_url, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!name || !*name || !queue_url) return invalid(err, "CreateQueue: queue name required");
    json_t *body = json_pack("{s:s}", "QueueName", name);
    if (!add_attributes(body, attrs, n_attrs)) {
        json_decref(body);
        return invalid(err, "CreateQueue: attribute without name or value");
    }
    json_t *reply;
    sqs_status s = sqs_call(c, ACT_CREATE_QUEUE, body, 0, &reply, err);
    return s == SQS_OK ? take_queue_url(reply, queue_url, err) : s;
}

sqs_status sqs_get_queue_url(sqs_client *c, const char *name, char **queue_url, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!name || !*name || !queue_url) return invalid(err, "GetQueueUrl: queue name required");
    json_t *reply;
    sqs_status s =
        sqs_call(c, ACT_GET_QUEUE_URL, json_pack("{s:s}", "QueueName", name), 0, &reply, err);
    return s == SQS_OK ? take_queue_url(reply, queue_url, err) : s;
}

sqs_status sqs_get_queue_attributes(sqs_client *c, const char *queue_url, const char *const *names,
                                    size_t n_names, char **values, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url || !names || !values || n_names == 0)
        return invalid(err, "GetQueueAttributes: queue URL and attribute names required");
    json_t *body = body_with_queue(queue_url);
    json_t *list = json_array();
    for (size_t i = 0; i < n_names; i++) json_array_append_new(list, json_string(names[i]));
    json_object_set_new(body, "AttributeNames", list);
    json_t *reply;
    sqs_status s = sqs_call(c, ACT_GET_QUEUE_ATTRIBUTES, body, 0, &reply, err);
    if (s != SQS_OK) return s;
    json_t *attrs = json_object_get(reply, "Attributes");
    for (size_t i = 0; i < n_names; i++) {
        const char *v = json_string_value(json_object_get(attrs, names[i]));
        values[i] = v ? strdup(v) : NULL;
    }
    json_decref(reply);
    return SQS_OK;
}

sqs_status sqs_set_queue_attributes(sqs_client *c, const char *queue_url,
                                    const sqs_attribute *attrs, size_t n_attrs, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url || !attrs || n_attrs == 0)
        return invalid(err, "SetQueueAttributes: queue URL and attributes required");
    json_t *body = body_with_queue(queue_url);
    if (!add_attributes(body, attrs, n_attrs)) {
        json_decref(body);
        return invalid(err, "SetQueueAttributes: attribute without name or value");
    }
    json_t *reply;
    sqs_status s = sqs_call(c, ACT_SET_QUEUE_ATTRIBUTES, body, 0, &reply, err);
    json_decref(reply);
    return s;
}

sqs_status sqs_purge_queue(sqs_client *c, const char *queue_url, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url) return invalid(err, "PurgeQueue: queue URL required");
    json_t *reply;
    sqs_status s = sqs_call(c, ACT_PURGE_QUEUE, body_with_queue(queue_url), 0, &reply, err);
    json_decref(reply);
    return s;
}

/* ---- sending ---- */

static void set_optional(json_t *obj, const char *name, const char *value)
{
    if (value) json_object_set_new(obj, name, json_string(value));
}

sqs_status sqs_send_message(sqs_client *c, const char *queue_url, const char *body_text,
                            const char *group_id, const char *dedup_id, sqs_send_result *result,
                            sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url || !body_text) return invalid(err, "SendMessage: queue URL and body required");
    json_t *body = json_pack("{s:s,s:s}", "QueueUrl", queue_url, "MessageBody", body_text);
    if (!body) return invalid(err, "SendMessage: body is not valid UTF-8");
    set_optional(body, "MessageGroupId", group_id);
    set_optional(body, "MessageDeduplicationId", dedup_id);
    json_t *reply;
    sqs_status s = sqs_call(c, ACT_SEND_MESSAGE, body, 0, &reply, err);
    if (s != SQS_OK) return s;
    if (result) {
        copy_string_field(reply, "MessageId", result->message_id, sizeof result->message_id);
        copy_string_field(reply, "SequenceNumber", result->sequence_number,
                          sizeof result->sequence_number);
    }
    json_decref(reply);
    return SQS_OK;
}

/* Marks every result failed, then fills them from the Successful / Failed lists by Id. */
static void read_batch_results(json_t *reply, const char *const *ids, size_t n,
                               sqs_entry_result *results)
{
    for (size_t i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof results[i]);
        snprintf(results[i].code, sizeof results[i].code, "NoResult");
        snprintf(results[i].message, sizeof results[i].message,
                 "the answer did not mention this entry");
    }
    size_t k;
    json_t *e;
    json_array_foreach(json_object_get(reply, "Successful"), k, e)
    {
        const char *id = json_string_value(json_object_get(e, "Id"));
        for (size_t i = 0; id && i < n; i++) {
            if (strcmp(ids[i], id) != 0) continue;
            results[i].ok = true;
            results[i].code[0] = results[i].message[0] = '\0';
            copy_string_field(e, "MessageId", results[i].message_id, sizeof results[i].message_id);
            copy_string_field(e, "SequenceNumber", results[i].sequence_number,
                              sizeof results[i].sequence_number);
            break;
        }
    }
    json_array_foreach(json_object_get(reply, "Failed"), k, e)
    {
        const char *id = json_string_value(json_object_get(e, "Id"));
        for (size_t i = 0; id && i < n; i++) {
            if (strcmp(ids[i], id) != 0) continue;
            results[i].ok = false;
            results[i].sender_fault = json_is_true(json_object_get(e, "SenderFault"));
            copy_string_field(e, "Code", results[i].code, sizeof results[i].code);
            copy_string_field(e, "Message", results[i].message, sizeof results[i].message);
            break;
        }
    }
}

sqs_status sqs_send_message_batch(sqs_client *c, const char *queue_url,
                                  const sqs_send_entry *entries, size_t n,
                                  sqs_entry_result *results, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url || !entries || !results)
        return invalid(err, "SendMessageBatch: queue URL, entries and results required");
    if (n == 0 || n > SQS_MAX_BATCH)
        return invalid(err, "SendMessageBatch: %zu entries, must be 1..%d", n, SQS_MAX_BATCH);
    json_t *body = body_with_queue(queue_url);
    json_t *list = json_array();
    const char *ids[SQS_MAX_BATCH];
    for (size_t i = 0; i < n; i++) {
        if (!entries[i].id || !entries[i].body) {
            json_decref(list);
            json_decref(body);
            return invalid(err, "SendMessageBatch: entry %zu has no id or body", i);
        }
        json_t *e = json_pack("{s:s,s:s}", "Id", entries[i].id, "MessageBody", entries[i].body);
        if (!e) {
            json_decref(list);
            json_decref(body);
            return invalid(err, "SendMessageBatch: entry %zu is not valid UTF-8", i);
        }
        set_optional(e, "MessageGroupId", entries[i].group_id);
        set_optional(e, "MessageDeduplicationId", entries[i].dedup_id);
        json_array_append_new(list, e);
        ids[i] = entries[i].id;
    }
    json_object_set_new(body, "Entries", list);
    json_t *reply;
    sqs_status s = sqs_call(c, ACT_SEND_MESSAGE_BATCH, body, 0, &reply, err);
    if (s != SQS_OK) return s;
    read_batch_results(reply, ids, n, results);
    json_decref(reply);
    return SQS_OK;
}

/* ---- receiving ---- */

static json_t *system_attribute_names(void)
{
    return json_pack("[s,s,s,s]", "SequenceNumber", "ApproximateReceiveCount", "SentTimestamp",
                     "MessageGroupId");
}

static bool read_message(json_t *m, sqs_message *out)
{
    json_t *attrs = json_object_get(m, "Attributes");
    const char *count = json_string_value(json_object_get(attrs, "ApproximateReceiveCount"));
    const char *sent = json_string_value(json_object_get(attrs, "SentTimestamp"));
    out->message_id = dup_string_field(m, "MessageId");
    out->receipt_handle = dup_string_field(m, "ReceiptHandle");
    out->body = dup_string_field(m, "Body");
    out->sequence_number = dup_string_field(attrs, "SequenceNumber");
    out->group_id = dup_string_field(attrs, "MessageGroupId");
    out->receive_count = count ? atoi(count) : 0;
    out->sent_timestamp_ms = sent ? strtoll(sent, NULL, 10) : 0;
    return out->message_id && out->receipt_handle && out->body && out->sequence_number &&
           out->group_id;
}

static sqs_status take_messages(json_t *reply, sqs_message **messages, size_t *n_messages,
                                sqs_error *err);

sqs_status sqs_receive_message(sqs_client *c, const char *queue_url, const sqs_receive_options *opt,
                               sqs_message **messages, size_t *n_messages, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url || !opt || !messages || !n_messages)
        return invalid(err, "ReceiveMessage: queue URL, options and outputs required");
    *messages = NULL;
    *n_messages = 0;
    if (opt->max_messages < 1 || opt->max_messages > 10)
        return invalid(err, "ReceiveMessage: max_messages %d is out of range 1..10",
                       opt->max_messages);
    if (opt->wait_seconds < 0 || opt->wait_seconds > 20)
        return invalid(err, "ReceiveMessage: wait_seconds %d is out of range 0..20",
                       opt->wait_seconds);

    json_t *body = json_pack("{s:s,s:i,s:i}", "QueueUrl", queue_url, "MaxNumberOfMessages",
                             opt->max_messages, "WaitTimeSeconds", opt->wait_seconds);
    if (opt->visibility_timeout >= 0)
        json_object_set_new(body, "VisibilityTimeout", json_integer(opt->visibility_timeout));
    set_optional(body, "ReceiveRequestAttemptId", opt->attempt_id);
    json_object_set_new(body, "MessageSystemAttributeNames", system_attribute_names());
    json_object_set_new(body, "AttributeNames", system_attribute_names()); /* older servers */

    json_t *reply;
    sqs_status s =
        sqs_call(c, ACT_RECEIVE_MESSAGE, body, (long)opt->wait_seconds * 1000, &reply, err);
    if (s != SQS_OK) return s;
    return take_messages(reply, messages, n_messages, err);
}

/* Copies the messages out of a ReceiveMessage answer, which it consumes. */
static sqs_status take_messages(json_t *reply, sqs_message **messages, size_t *n_messages,
                                sqs_error *err)
{
    *messages = NULL;
    *n_messages = 0;
    json_t *list = json_object_get(reply, "Messages");
    size_t n = json_array_size(list);
    if (n > 0) {
        sqs_message *out = calloc(n, sizeof *out);
        bool ok = out != NULL;
        for (size_t i = 0; ok && i < n; i++) ok = read_message(json_array_get(list, i), &out[i]);
        if (!ok) {
            sqs_messages_free(out, out ? n : 0);
            json_decref(reply);
            err_set(err, 200, "OutOfMemory", "ReceiveMessage: copying %zu messages failed", n);
            return SQS_SERVER_ERROR;
        }
        *messages = out;
        *n_messages = n;
    }
    json_decref(reply);
    return SQS_OK;
}

void sqs_messages_free(sqs_message *messages, size_t n)
{
    if (!messages) return;
    for (size_t i = 0; i < n; i++) {
        free(messages[i].message_id);
        free(messages[i].receipt_handle);
        free(messages[i].body);
        free(messages[i].sequence_number);
        free(messages[i].group_id);
    }
    free(messages);
}

/* ---- answers parsed without a request (sqs.h: for tests and fuzzing) ---- */

sqs_status sqs_parse_receive_answer(const char *body, size_t len, sqs_message **messages,
                                    size_t *n_messages, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    *messages = NULL;
    *n_messages = 0;
    json_t *reply = parse_reply("ReceiveMessage", body, len, err);
    return reply ? take_messages(reply, messages, n_messages, err) : SQS_SERVER_ERROR;
}

sqs_status sqs_parse_batch_answer(const char *body, size_t len, const char *const *ids, size_t n,
                                  sqs_entry_result *results, sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (n > SQS_MAX_BATCH)
        return invalid(err, "batch answer: %zu entries, must be 0..%d", n, SQS_MAX_BATCH);
    json_t *reply = parse_reply("batch", body, len, err);
    if (!reply) return SQS_SERVER_ERROR;
    read_batch_results(reply, ids, n, results);
    json_decref(reply);
    return SQS_OK;
}

/* ---- handle batches ---- */

static sqs_status handle_batch(sqs_client *c, sqs_action a, const char *queue_url,
                               const sqs_handle_entry *entries, size_t n, sqs_entry_result *results,
                               sqs_error *err)
{
    sqs_error local;
    if (!err) err = &local;
    if (!queue_url || !entries || !results)
        return invalid(err, "%s: queue URL, entries and results required", action_names[a]);
    if (n == 0 || n > SQS_MAX_BATCH)
        return invalid(err, "%s: %zu entries, must be 1..%d", action_names[a], n, SQS_MAX_BATCH);
    json_t *body = body_with_queue(queue_url);
    json_t *list = json_array();
    const char *ids[SQS_MAX_BATCH];
    for (size_t i = 0; i < n; i++) {
        if (!entries[i].id || !entries[i].receipt_handle) {
            json_decref(list);
            json_decref(body);
            return invalid(err, "%s: entry %zu has no id or receipt handle", action_names[a], i);
        }
        json_t *e =
            json_pack("{s:s,s:s}", "Id", entries[i].id, "ReceiptHandle", entries[i].receipt_handle);
        if (a == ACT_CHANGE_VISIBILITY_BATCH)
            json_object_set_new(e, "VisibilityTimeout",
                                json_integer(entries[i].visibility_timeout));
        json_array_append_new(list, e);
        ids[i] = entries[i].id;
    }
    json_object_set_new(body, "Entries", list);
    json_t *reply;
    sqs_status s = sqs_call(c, a, body, 0, &reply, err);
    if (s != SQS_OK) return s;
    read_batch_results(reply, ids, n, results);
    json_decref(reply);
    return SQS_OK;
}

sqs_status sqs_delete_message_batch(sqs_client *c, const char *queue_url,
                                    const sqs_handle_entry *entries, size_t n,
                                    sqs_entry_result *results, sqs_error *err)
{
    return handle_batch(c, ACT_DELETE_MESSAGE_BATCH, queue_url, entries, n, results, err);
}

sqs_status sqs_change_visibility_batch(sqs_client *c, const char *queue_url,
                                       const sqs_handle_entry *entries, size_t n,
                                       sqs_entry_result *results, sqs_error *err)
{
    return handle_batch(c, ACT_CHANGE_VISIBILITY_BATCH, queue_url, entries, n, results, err);
}

void sqs_metrics_forget(void)
{
    for (int a = 0; a < ACT_COUNT; a++) {
        for (int s = 0; s < STATUS_COUNT; s++) atomic_store(&request_counters[a][s], NULL);
        atomic_store(&request_durations[a], NULL);
    }
}
