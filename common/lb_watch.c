/*
 * lb_watch — polls this task's own target in its ALB target group (see lb_watch.h).
 *
 * The answer is XML: ELBv2 speaks only the Query protocol. None of the chosen libraries reads
 * XML, and the two elements needed here do not justify another dependency, so a small reader
 * below finds them. It does not decode entities; the values it reads (a state, an address, a
 * port, an error code) never contain any.
 */
#include "lb_watch.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws_http.h"
#include "curl_body.h"
#include "errbuf.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"

#define COMPONENT "lb-watch"
#define CONNECT_TIMEOUT_MS 2000L
#define CALL_TIMEOUT_MS 5000L
#define ANSWER_MAX (64 * 1024)

struct lb_watch {
    char region[64];
    char endpoint[512];
    aws_endpoint ep;
    credentials_provider *credentials;
    char target_group_arn[512];
    char ip[64]; /* "" until known */
    int port;
    int poll_s;
    void (*on_draining)(void *ctx);
    void *ctx;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    atomic_bool stop;

    /* the watcher thread's own */
    CURL *curl;
    char curl_error[CURL_ERROR_SIZE];
    bool last_failed;
    char last_state[32]; /* of the last answer: "" before the first */
    char last_error[512];

    metric_counter *checks_ok, *checks_error, *drains;
    metric_gauge *draining_gauge;
};

/* ---- the request and the answer ------------------------------------------------------------ */

char *lb_describe_body(const char *target_group_arn, const char *ip, int port)
{
    char *arn = curl_easy_escape(NULL, target_group_arn, 0);
    char *id = curl_easy_escape(NULL, ip, 0);
    char *body = NULL;
    if (arn && id &&
        asprintf(&body,
                 "Action=DescribeTargetHealth&Version=2015-12-01&TargetGroupArn=%s"
                 "&Targets.member.1.Id=%s&Targets.member.1.Port=%d",
                 arn, id, port) < 0)
        body = NULL;
    curl_free(arn);
    curl_free(id);
    return body;
}

/* The text of the first <name>...</name> in [from, end): *value and *len; false when absent. */
static bool xml_find(const char *from, const char *end, const char *name, const char **value,
                     size_t *len)
{
    char open[64], close[64];
    int open_len = snprintf(open, sizeof open, "<%s>", name);
    int close_len = snprintf(close, sizeof close, "</%s>", name);
    const char *p = memmem(from, (size_t)(end - from), open, (size_t)open_len);
    if (!p) return false;
    const char *v = p + open_len;
    const char *q = memmem(v, (size_t)(end - v), close, (size_t)close_len);
    if (!q) return false;
    *value = v;
    *len = (size_t)(q - v);
    return true;
}

static bool xml_equals(const char *value, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(value, want, len) == 0;
}

static void copy_value(char *dst, size_t dst_len, const char *value, size_t len)
{
    if (len >= dst_len) len = dst_len - 1;
    memcpy(dst, value, len);
    dst[len] = '\0';
}

/* An ErrorResponse's Code and Message, for the log. */
static void describe_error_document(const char *xml, char *err, size_t err_len)
{
    const char *end = xml + strlen(xml), *code, *message;
    size_t code_len, message_len;
    char c[96] = "", m[160] = "";
    if (xml_find(xml, end, "Code", &code, &code_len)) copy_value(c, sizeof c, code, code_len);
    if (xml_find(xml, end, "Message", &message, &message_len))
        copy_value(m, sizeof m, message, message_len);
    if (c[0])
        errbuf_set(err, err_len, "%s: %s", c, m);
    else
        errbuf_set(err, err_len, "not a DescribeTargetHealth answer");
}

bool lb_parse_target_state(const char *xml, const char *ip, int port, char *state, size_t state_len,
                           char *err, size_t err_len)
{
    const char *end = xml + strlen(xml), *list, *member;
    size_t list_len, member_len;
    if (!strstr(xml, "<DescribeTargetHealthResponse") ||
        !xml_find(xml, end, "TargetHealthDescriptions", &list, &list_len)) {
        describe_error_document(xml, err, err_len);
        return false;
    }
    char want_port[16];
    snprintf(want_port, sizeof want_port, "%d", port);
    const char *list_end = list + list_len;
    for (const char *p = list; xml_find(p, list_end, "member", &member, &member_len);
         p = member + member_len) {
        const char *member_end = member + member_len, *target, *health, *id, *tport, *st;
        size_t target_len, health_len, id_len, tport_len, st_len;
        if (!xml_find(member, member_end, "Target", &target, &target_len) ||
            !xml_find(target, target + target_len, "Id", &id, &id_len) ||
            !xml_find(target, target + target_len, "Port", &tport, &tport_len) ||
            !xml_equals(id, id_len, ip) || !xml_equals(tport, tport_len, want_port))
            continue;
        /* TargetHealth's own State: an AdministrativeOverride element has a State too. */
        if (!xml_find(member, member_end, "TargetHealth", &health, &health_len) ||
            !xml_find(health, health + health_len, "State", &st, &st_len) || st_len == 0) {
            errbuf_set(err, err_len, "the answer gives no state for %s:%d", ip, port);
            return false;
        }
        copy_value(state, state_len, st, st_len);
        return true;
    }
    errbuf_set(err, err_len, "the answer does not describe %s:%d", ip, port);
    return false;
}

bool lb_state_is_draining(const char *state)
{
    return strcmp(state, "draining") == 0 || strcmp(state, "unhealthy.draining") == 0;
}

/* ---- calls ----------------------------------------------------------------------------------- */

/* One transfer on the watcher's handle, the answer in *body (caller frees body->data). false
 * with err set on a transport failure or a status other than 200 (the body is kept). */
static bool perform(lb_watch *w, const char *url, struct curl_slist *headers, const char *post,
                    curl_body *body, long *status, char *err, size_t err_len)
{
    CURL *h = w->curl;
    curl_easy_reset(h);
    *body = (curl_body){.max = ANSWER_MAX};
    *status = 0;
    w->curl_error[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (post) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(post));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_body_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, w->curl_error);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, CALL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, aws_curl_abort_on_flag);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &w->stop);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        errbuf_set(err, err_len, "%s: %s", url,
                   body->too_big      ? "answer too large"
                   : w->curl_error[0] ? w->curl_error
                                      : curl_easy_strerror(rc));
        return false;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (*status != 200) {
        errbuf_set(err, err_len, "%s: HTTP %ld", url, *status);
        return false;
    }
    return true;
}

/* The container document's first network's first IPv4 address. */
static bool read_task_ip(lb_watch *w, char *err, size_t err_len)
{
    const char *uri = getenv("ECS_CONTAINER_METADATA_URI_V4");
    if (!uri || !*uri) {
        errbuf_set(err, err_len,
                   "no target address: CHATFLOW_LB_TARGET_IP is empty and "
                   "ECS_CONTAINER_METADATA_URI_V4 is not set");
        return false;
    }
    curl_body body;
    long status;
    bool ok = perform(w, uri, NULL, NULL, &body, &status, err, err_len);
    json_t *doc = ok && body.data ? json_loads(body.data, 0, NULL) : NULL;
    free(body.data);
    if (!ok) return false;
    json_t *ip = json_array_get(
        json_object_get(json_array_get(json_object_get(doc, "Networks"), 0), "IPv4Addresses"), 0);
    ok = json_is_string(ip) && json_string_length(ip) < sizeof w->ip;
    if (ok)
        snprintf(w->ip, sizeof w->ip, "%s", json_string_value(ip));
    else
        errbuf_set(err, err_len, "%s: no Networks[0].IPv4Addresses[0] in the task metadata", uri);
    json_decref(doc);
    return ok;
}

static bool describe_target_health(lb_watch *w, char *state, size_t state_len, char *err,
                                   size_t err_len)
{
    aws_credentials creds;
    if (!credentials_get(w->credentials, &creds, err, err_len)) return false;
    char *form = lb_describe_body(w->target_group_arn, w->ip, w->port);
    static const sigv4_header headers[] = {
        {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
    };
    struct curl_slist *list =
        form ? aws_signed_post_headers(&w->ep, headers, 1, form, strlen(form), &creds, w->region,
                                       "elasticloadbalancing", err, err_len)
             : NULL;
    memset(&creds, 0, sizeof creds);
    if (!list) {
        if (!form) errbuf_set(err, err_len, "out of memory");
        free(form);
        return false;
    }
    curl_body body;
    long status;
    bool ok = perform(w, w->endpoint, list, form, &body, &status, err, err_len);
    curl_slist_free_all(list);
    free(form);
    if (ok)
        ok = lb_parse_target_state(body.data ? body.data : "", w->ip, w->port, state, state_len,
                                   err, err_len);
    else if (status && body.data) { /* an AWS error document says more than the status */
        char detail[200];
        describe_error_document(body.data, detail, sizeof detail);
        errbuf_set(err, err_len, "DescribeTargetHealth: HTTP %ld %s", status, detail);
    }
    free(body.data);
    return ok;
}

/* ---- the thread ------------------------------------------------------------------------------ */

static void note_failure(lb_watch *w, const char *err)
{
    metric_counter_inc(w->checks_error);
    if (!w->last_failed || strcmp(w->last_error, err) != 0)
        log_warn(COMPONENT, "cannot read this task's target health (tried again every %d s): %s",
                 w->poll_s, err);
    w->last_failed = true;
    snprintf(w->last_error, sizeof w->last_error, "%s", err);
}

static void note_state(lb_watch *w, const char *state)
{
    metric_counter_inc(w->checks_ok);
    if (w->last_failed || strcmp(w->last_state, state) != 0)
        log_info(COMPONENT, "target %s:%d is %s", w->ip, w->port, state);
    bool was_draining = lb_state_is_draining(w->last_state);
    w->last_failed = false;
    snprintf(w->last_state, sizeof w->last_state, "%s", state);
    bool draining = lb_state_is_draining(state);
    metric_gauge_set(w->draining_gauge, draining ? 1 : 0);
    if (draining && !was_draining) {
        log_info(COMPONENT,
                 "the load balancer is draining this target: asking clients to reconnect "
                 "elsewhere before it cuts them");
        metric_counter_inc(w->drains);
        w->on_draining(w->ctx);
    }
}

static void check_once(lb_watch *w)
{
    char err[512], state[32];
    if (!w->ip[0] && !read_task_ip(w, err, sizeof err)) {
        note_failure(w, err);
        return;
    }
    if (describe_target_health(w, state, sizeof state, err, sizeof err))
        note_state(w, state);
    else if (!atomic_load(&w->stop)) /* a call cut short by lb_watch_stop() is no failure */
        note_failure(w, err);
}

static void *watch_thread(void *arg)
{
    lb_watch *w = arg;
    pthread_setname_np(pthread_self(), "cf-lb-watch");
    while (!atomic_load(&w->stop)) {
        check_once(w);
        struct timespec until = time_mono_after_ms(w->poll_s * 1000L);
        pthread_mutex_lock(&w->mu);
        while (!atomic_load(&w->stop) && pthread_cond_timedwait(&w->wake, &w->mu, &until) == 0) {
        }
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void register_metrics(lb_watch *w)
{
    const char *checks_help = "DescribeTargetHealth calls for this task's own target, by outcome.";
    w->checks_ok = metrics_counter("chatflow_lb_target_checks_total", checks_help, "result=\"ok\"");
    w->checks_error =
        metrics_counter("chatflow_lb_target_checks_total", checks_help, "result=\"error\"");
    w->drains =
        metrics_counter("chatflow_lb_target_drains_total",
                        "Times the load balancer was seen to start draining this task.", NULL);
    w->draining_gauge = metrics_gauge(
        "chatflow_lb_target_draining",
        "1 while the last answer said the load balancer is draining this task.", NULL);
}

static bool copy_setting(char *dst, size_t dst_len, const char *value, const char *what, char *err,
                         size_t err_len)
{
    if (strlen(value) >= dst_len) {
        errbuf_set(err, err_len, "%s is too long (%zu bytes; at most %zu)", what, strlen(value),
                   dst_len - 1);
        return false;
    }
    snprintf(dst, dst_len, "%s", value);
    return true;
}

lb_watch *lb_watch_start(const lb_watch_config *cfg, char *err, size_t err_len)
{
    lb_watch *w = calloc(1, sizeof *w);
    if (!w) {
        errbuf_set(err, err_len, "out of memory");
        return NULL;
    }
    w->credentials = cfg->credentials;
    w->port = cfg->target_port;
    w->poll_s = cfg->poll_s > 0 ? cfg->poll_s : 1;
    w->on_draining = cfg->on_draining;
    w->ctx = cfg->ctx;
    char endpoint[512];
    if (cfg->endpoint && *cfg->endpoint)
        snprintf(endpoint, sizeof endpoint, "%s", cfg->endpoint);
    else
        snprintf(endpoint, sizeof endpoint, "https://elasticloadbalancing.%s.amazonaws.com/",
                 cfg->region);
    if (!copy_setting(w->region, sizeof w->region, cfg->region, "AWS_REGION", err, err_len) ||
        !copy_setting(w->endpoint, sizeof w->endpoint, endpoint, "the ELB endpoint", err,
                      err_len) ||
        !copy_setting(w->target_group_arn, sizeof w->target_group_arn, cfg->target_group_arn,
                      "CHATFLOW_LB_TARGET_GROUP_ARN", err, err_len) ||
        !copy_setting(w->ip, sizeof w->ip, cfg->target_ip ? cfg->target_ip : "",
                      "CHATFLOW_LB_TARGET_IP", err, err_len) ||
        !aws_endpoint_parse(w->endpoint, "ELB endpoint", &w->ep, err, err_len)) {
        free(w);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        errbuf_set(err, err_len, "curl_global_init failed");
        free(w);
        return NULL;
    }
    bool have_mu = false, have_wake = false;
    if (!(w->curl = curl_easy_init()) || !(have_mu = pthread_mutex_init(&w->mu, NULL) == 0) ||
        !(have_wake = time_cond_init_monotonic(&w->wake))) {
        errbuf_set(err, err_len, "out of memory");
        goto fail;
    }
    register_metrics(w);
    log_info(COMPONENT, "watching target %s:%d in %s every %d s", w->ip[0] ? w->ip : "(task IP)",
             w->port, w->target_group_arn, w->poll_s);
    if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
        errbuf_set(err, err_len, "cannot start the load balancer watcher thread");
        goto fail;
    }
    return w;
fail:
    if (have_wake) pthread_cond_destroy(&w->wake);
    if (have_mu) pthread_mutex_destroy(&w->mu);
    if (w->curl) curl_easy_cleanup(w->curl);
    curl_global_cleanup();
    free(w);
    return NULL;
}

void lb_watch_stop(lb_watch *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
    curl_easy_cleanup(w->curl);
    curl_global_cleanup();
    free(w);
}

bool lb_watch_start_configured(const struct chatflow_common_settings *s,
                               credentials_provider *credentials, int target_port,
                               void (*on_draining)(void *ctx), void *ctx, lb_watch **out, char *err,
                               size_t err_len)
{
    *out = NULL;
    if (!s->lb_target_group_arn[0]) return true;
    const lb_watch_config cfg = {
        .region = s->aws_region,
        .endpoint = s->elb_endpoint,
        .credentials = credentials,
        .target_group_arn = s->lb_target_group_arn,
        .target_ip = s->lb_target_ip,
        .target_port = target_port,
        .poll_s = (int)s->lb_poll_s,
        .on_draining = on_draining,
        .ctx = ctx,
    };
    *out = lb_watch_start(&cfg, err, err_len);
    return *out != NULL;
}
