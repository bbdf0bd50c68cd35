/*
 * credentials — the AWS credentials provider chain (contract in credentials.h).
 *
 * Sources, first configured wins: the environment (static keys), then ECS container credentials
 * fetched over HTTP with libcurl and parsed with jansson.
 *
 * Refresh: credentials_get() notices that less than CREDENTIALS_REFRESH_AHEAD_S remain and, if no
 * other thread is already at it, marks the provider "refreshing" and fetches WITHOUT holding the
 * mutex, so readers keep getting the old keys meanwhile. A failed refresh is remembered with its
 * cause and not retried for REFRESH_RETRY_S, so an unreachable endpoint costs one connect timeout
 * per interval and not one per SQS request. Once the keys have expired, callers get an error that
 * names the expiry time and the last fetch failure.
 *
 * The ECS host is the compile-time constant ECS_CREDENTIALS_HOST; tests cannot reach it, so they
 * exercise the same fetch path through AWS_CONTAINER_CREDENTIALS_FULL_URI on loopback.
 */
#include "credentials.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "curl_body.h"
#include "errbuf.h"
#include "log.h"
#include "timeutil.h"

#define REFRESH_RETRY_S 5
#define FETCH_CONNECT_TIMEOUT_MS 2000L
#define FETCH_TIMEOUT_MS 5000L
#define FETCH_MAX_BODY (64 * 1024)

typedef enum { SOURCE_ENVIRONMENT, SOURCE_ECS } credentials_source_kind;

struct credentials_provider {
    credentials_source_kind source;
    char url[2048];           /* ECS: the full credentials URL */
    char authorization[2048]; /* ECS: Authorization header value, "" for none */

    pthread_mutex_t lock;     /* guards everything below */
    pthread_cond_t refreshed; /* signalled when a fetch ends */
    aws_credentials current;
    bool refreshing;
    time_t last_failure;  /* time of the last failed fetch, 0 if none */
    char last_error[512]; /* cause of the last failed fetch */
};

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static bool copy_field(char *dst, size_t dst_len, const char *value, const char *what, char *err,
                       size_t err_len)
{
    size_t n = strlen(value);
    if (n >= dst_len) {
        errbuf_set(err, err_len, "%s is too long (%zu bytes, at most %zu)", what, n, dst_len - 1);
        return false;
    }
    memcpy(dst, value, n + 1);
    return true;
}

/* ---- environment source ---- */

static bool load_environment(credentials_provider *p, char *err, size_t err_len)
{
    const char *id = env_nonempty("AWS_ACCESS_KEY_ID");
    const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
    const char *token = env_nonempty("AWS_SESSION_TOKEN");
    if (!id || !secret) {
        errbuf_set(
            err, err_len,
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not (or the other way round)");
        return false;
    }
    aws_credentials *c = &p->current;
    return copy_field(c->access_key_id, sizeof c->access_key_id, id, "AWS_ACCESS_KEY_ID", err,
                      err_len) &&
           copy_field(c->secret_access_key, sizeof c->secret_access_key, secret,
                      "AWS_SECRET_ACCESS_KEY", err, err_len) &&
           copy_field(c->session_token, sizeof c->session_token, token ? token : "",
                      "AWS_SESSION_TOKEN", err, err_len);
}

/* ---- ECS source ---- */

/* The AWS SDKs send the authorization token over plain HTTP only to loopback or the ECS/EKS link-
 * local hosts; anything else must be https, so the token cannot leak to an arbitrary host. */
static bool full_uri_allowed(const char *uri, char *err, size_t err_len)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = false;
    if (!u) {
        errbuf_set(err, err_len, "out of memory");
        return false;
    }
    if (curl_url_set(u, CURLUPART_URL, uri, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        errbuf_set(err, err_len, "AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\" is not a valid URL",
                   uri);
    } else if (strcasecmp(scheme, "https") == 0) {
        ok = true;
    } else if (strcasecmp(scheme, "http") == 0 &&
               (strcmp(host, "127.0.0.1") == 0 || strcasecmp(host, "localhost") == 0 ||
                strcmp(host, "[::1]") == 0 || strcmp(host, ECS_CREDENTIALS_HOST) == 0 ||
                strcmp(host, "169.254.170.23") == 0)) {
        ok = true;
    } else {
        errbuf_set(
            err, err_len,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\": plain http is allowed only to loopback or "
            "the ECS credentials host; use https",
            uri);
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static bool configure_ecs(credentials_provider *p, const char *relative, const char *full,
                          char *err, size_t err_len)
{
    if (relative) {
        if (relative[0] != '/') {
            errbuf_set(err, err_len,
                       "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \"%s\" must start with '/'",
                       relative);
            return false;
        }
        int n = snprintf(p->url, sizeof p->url, "http://%s%s", ECS_CREDENTIALS_HOST, relative);
        if (n < 0 || (size_t)n >= sizeof p->url) {
            errbuf_set(err, err_len, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is too long");
            return false;
        }
    } else {
        if (!full_uri_allowed(full, err, err_len)) return false;
        if (!copy_field(p->url, sizeof p->url, full, "AWS_CONTAINER_CREDENTIALS_FULL_URI", err,
                        err_len))
            return false;
        const char *token = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        if (token && !copy_field(p->authorization, sizeof p->authorization, token,
                                 "AWS_CONTAINER_AUTHORIZATION_TOKEN", err, err_len))
            return false;
    }
    return true;
}

static bool json_string_field(json_t *root, const char *name, bool required, char *dst,
                              size_t dst_len, char *err, size_t err_len)
{
    json_t *v = json_object_get(root, name);
    if (!v) {
        if (!required) {
            dst[0] = '\0';
            return true;
        }
        errbuf_set(err, err_len, "credentials answer has no \"%s\"", name);
        return false;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        errbuf_set(err, err_len, "credentials answer field \"%s\" is not a non-empty string", name);
        return false;
    }
    return copy_field(dst, dst_len, json_string_value(v), name, err, err_len);
}

static bool parse_credentials(const char *body, size_t len, aws_credentials *out, char *err,
                              size_t err_len)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root) {
        errbuf_set(err, err_len, "credentials answer is not JSON: %s (line %d)", jerr.text,
                   jerr.line);
        return false;
    }
    bool ok = false;
    char expiration[64];
    int64_t expiration_ms = 0;
    if (!json_is_object(root)) {
        errbuf_set(err, err_len, "credentials answer is not a JSON object");
    } else if (json_string_field(root, "AccessKeyId", true, out->access_key_id,
                                 sizeof out->access_key_id, err, err_len) &&
               json_string_field(root, "SecretAccessKey", true, out->secret_access_key,
                                 sizeof out->secret_access_key, err, err_len) &&
               json_string_field(root, "Token", false, out->session_token,
                                 sizeof out->session_token, err, err_len) &&
               json_string_field(root, "Expiration", true, expiration, sizeof expiration, err,
                                 err_len)) {
        if (!time_parse_iso8601(expiration, &expiration_ms)) {
            errbuf_set(err, err_len,
                       "credentials answer \"Expiration\" \"%s\" is not an ISO-8601 instant",
                       expiration);
        } else {
            out->expiration = (time_t)(expiration_ms / 1000);
            ok = true;
        }
    }
    json_decref(root);
    return ok;
}

/* One HTTP GET of the credentials endpoint. Called without the provider's lock held. */
static bool fetch_ecs(const credentials_provider *p, aws_credentials *out, char *err,
                      size_t err_len)
{
    CURL *curl = curl_easy_init();
    if (!curl) {
        errbuf_set(err, err_len, "curl_easy_init failed");
        return false;
    }
    curl_body body = {.max = FETCH_MAX_BODY};
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    bool ok = false;

    if (p->authorization[0]) {
        char header[sizeof p->authorization + 32];
        snprintf(header, sizeof header, "Authorization: %s", p->authorization);
        headers = curl_slist_append(NULL, header);
        if (!headers) {
            errbuf_set(err, err_len, "out of memory");
            goto done;
        }
    }
    curl_easy_setopt(curl, CURLOPT_URL, p->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_body_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, FETCH_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, FETCH_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");

    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        errbuf_set(err, err_len, "GET %s failed: %s", p->url,
                   body.too_big ? "answer larger than 64 KiB"
                   : errbuf[0]  ? errbuf
                                : curl_easy_strerror(rc));
        goto done;
    }
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        errbuf_set(err, err_len, "GET %s answered HTTP %ld: %.200s", p->url, status,
                   body.data ? body.data : "");
        goto done;
    }
    char perr[400];
    if (!parse_credentials(body.data ? body.data : "", body.len, out, perr, sizeof perr)) {
        errbuf_set(err, err_len, "GET %s: %s", p->url, perr);
        goto done;
    }
    ok = true;
done:
    curl_slist_free_all(headers);
    free(body.data);
    curl_easy_cleanup(curl);
    return ok;
}

/* ---- public ---- */

credentials_provider *credentials_provider_new(char *err, size_t err_len)
{
    const char *id = env_nonempty("AWS_ACCESS_KEY_ID");
    const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
    const char *relative = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");

    if (!id && !secret && !relative && !full) {
        errbuf_set(
            err, err_len,
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with ECS "
            "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI)");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        errbuf_set(err, err_len, "curl_global_init failed");
        return NULL;
    }
    credentials_provider *p = calloc(1, sizeof *p);
    if (!p) {
        curl_global_cleanup();
        errbuf_set(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->refreshed, NULL);

    bool ok;
    if (id || secret) {
        p->source = SOURCE_ENVIRONMENT;
        ok = load_environment(p, err, err_len);
    } else {
        p->source = SOURCE_ECS;
        ok = configure_ecs(p, relative, full, err, err_len);
        if (ok) {
            char ferr[512];
            ok = fetch_ecs(p, &p->current, ferr, sizeof ferr);
            if (!ok) errbuf_set(err, err_len, "ECS container credentials: %s", ferr);
        }
    }
    if (!ok) {
        credentials_provider_free(p);
        return NULL;
    }
    return p;
}

/* Decides under the lock whether this caller should fetch: the keys are due for refresh, nobody
 * else is fetching, and the last failure is not too recent. */
static bool should_refresh(const credentials_provider *p, time_t now)
{
    if (p->refreshing) return false;
    if (p->current.expiration - now > CREDENTIALS_REFRESH_AHEAD_S) return false;
    return p->last_failure == 0 || now - p->last_failure >= REFRESH_RETRY_S;
}

static void refresh(credentials_provider *p)
{
    aws_credentials fresh = {0};
    char ferr[512];
    bool ok = fetch_ecs(p, &fresh, ferr, sizeof ferr);
    time_t now = time(NULL);

    pthread_mutex_lock(&p->lock);
    if (ok) {
        p->current = fresh;
        p->last_failure = 0;
        p->last_error[0] = '\0';
    } else {
        p->last_failure = now;
        snprintf(p->last_error, sizeof p->last_error, "%s", ferr);
    }
    time_t expiration = p->current.expiration;
    p->refreshing = false;
    pthread_cond_broadcast(&p->refreshed);
    pthread_mutex_unlock(&p->lock);

    if (ok) {
        log_info("credentials", "refreshed ECS credentials; they expire in %lld s",
                 (long long)(fresh.expiration - now));
    } else if (expiration > now) {
        log_error("credentials",
                  "refreshing ECS credentials failed, keeping the current ones until they "
                  "expire in %lld s: %s",
                  (long long)(expiration - now), ferr);
    } else {
        log_error("credentials",
                  "refreshing ECS credentials failed and the current ones have expired: %s", ferr);
    }
}

bool credentials_get(credentials_provider *p, aws_credentials *out, char *err, size_t err_len)
{
    if (p->source == SOURCE_ENVIRONMENT) {
        *out = p->current; /* immutable after construction */
        return true;
    }
    time_t now = time(NULL);
    pthread_mutex_lock(&p->lock);
    bool fetch = should_refresh(p, now);
    if (fetch) p->refreshing = true;
    pthread_mutex_unlock(&p->lock);

    if (fetch) refresh(p);

    pthread_mutex_lock(&p->lock);
    /* Expired keys are useless: wait for a fetch another thread has in flight rather than fail. */
    while (p->refreshing && p->current.expiration <= now)
        pthread_cond_wait(&p->refreshed, &p->lock);
    bool valid = p->current.expiration > now;
    if (valid) {
        *out = p->current;
    } else {
        char when[ISO8601_BUF];
        time_format_iso8601((int64_t)p->current.expiration * 1000, when);
        errbuf_set(err, err_len, "ECS credentials expired at %s and could not be refreshed: %s",
                   when, p->last_error[0] ? p->last_error : "no refresh attempted yet");
    }
    pthread_mutex_unlock(&p->lock);
    return valid;
}

const char *credentials_source(const credentials_provider *p)
{
    return p->source == SOURCE_ENVIRONMENT ? "environment" : "ecs";
}

void credentials_provider_free(credentials_provider *p)
{
    if (!p) return;
    pthread_cond_destroy(&p->refreshed);
    pthread_mutex_destroy(&p->lock);
    /* Keys should not linger in freed memory. */
    memset(&p->current, 0, sizeof p->current);
    free(p);
    curl_global_cleanup();
}
