/* jwks — a JWK set of verification keys, and its refreshing holder (contract in jwks.h). */
#include "jwks.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "curl_body.h"
#include "errbuf.h"
#include "redact.h"
#include "timeutil.h"

struct jwks {
    atomic_int refs;
    size_t n;
    jwks_key keys[JWKS_MAX_KEYS];
};

/* ------------------------------------------------------------------ the set */

static const char *const SKIP_NAMES[JWKS_SKIP_N] = {
    [JWKS_SKIP_KTY] = "kty",         [JWKS_SKIP_CURVE] = "curve",
    [JWKS_SKIP_USE] = "use",         [JWKS_SKIP_ALG] = "alg",
    [JWKS_SKIP_NO_KID] = "no_kid",   [JWKS_SKIP_DUP_KID] = "duplicate_kid",
    [JWKS_SKIP_PRIVATE] = "private", [JWKS_SKIP_KEY_SIZE] = "key_size",
    [JWKS_SKIP_INVALID] = "invalid", [JWKS_SKIP_TOO_MANY] = "too_many",
};

const char *jwks_skip_reason_name(jwks_skip_reason r)
{
    return (r >= 0 && r < JWKS_SKIP_N) ? SKIP_NAMES[r] : "unknown";
}

/* RFC 7518 base64url without padding. cjose's decoder asserts (aborts) on some inputs with '=',
 * so nothing reaches it that this does not accept. */
static bool b64url_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n % 4 == 1) return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

/* Every member cjose may base64url-decode for an RSA or EC key. */
static bool b64url_members_ok(json_t *k)
{
    static const char *const members[] = {"n", "e", "d", "p", "q", "dp", "dq", "qi", "x", "y"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        json_t *v = json_object_get(k, members[i]);
        if (v && (!json_is_string(v) || !b64url_ok(json_string_value(v)))) return false;
    }
    return true;
}

static const char *member_str(json_t *k, const char *name)
{
    return json_string_value(json_object_get(k, name)); /* NULL when absent or not a string */
}

static bool has_kid(const jwks *set, const char *kid) { return jwks_find(set, kid) != NULL; }

/* The checks that need no key material, cheapest first. -1 when the key may be loaded. */
static int screen_key(const jwks *set, json_t *k, jwks_key_type *type, char *why, size_t why_len)
{
    const char *kty = member_str(k, "kty"), *use = member_str(k, "use");
    const char *alg = member_str(k, "alg"), *kid = member_str(k, "kid");
    char shown[48];
    if (!kty || (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0)) {
        redact_printable(shown, sizeof shown, kty ? kty : "(none)");
        errbuf_set(why, why_len, "kty \"%s\" is not RSA or EC", shown);
        return JWKS_SKIP_KTY;
    }
    *type = strcmp(kty, "RSA") == 0 ? JWKS_KEY_RSA : JWKS_KEY_EC_P256;
    if (json_object_get(k, "use") && (!use || strcmp(use, "sig") != 0)) {
        errbuf_set(why, why_len, "use is not \"sig\"");
        return JWKS_SKIP_USE;
    }
    if (!kid || kid[0] == '\0' || strlen(kid) > JWKS_KID_MAX) {
        errbuf_set(why, why_len, "no kid of 1-%d bytes", JWKS_KID_MAX);
        return JWKS_SKIP_NO_KID;
    }
    if (json_object_get(k, "d")) {
        errbuf_set(why, why_len, "holds private key material (\"d\")");
        return JWKS_SKIP_PRIVATE;
    }
    const char *crv = member_str(k, "crv");
    if (*type == JWKS_KEY_EC_P256 && (!crv || strcmp(crv, "P-256") != 0)) {
        redact_printable(shown, sizeof shown, crv ? crv : "(none)");
        errbuf_set(why, why_len, "curve \"%s\" is not P-256", shown);
        return JWKS_SKIP_CURVE;
    }
    const char *want_alg = *type == JWKS_KEY_RSA ? "RS256" : "ES256";
    if (json_object_get(k, "alg") && (!alg || strcmp(alg, want_alg) != 0)) {
        redact_printable(shown, sizeof shown, alg ? alg : "(not a string)");
        errbuf_set(why, why_len, "alg \"%s\" is not %s", shown, want_alg);
        return JWKS_SKIP_ALG;
    }
    if (has_kid(set, kid)) {
        errbuf_set(why, why_len, "kid already in the set");
        return JWKS_SKIP_DUP_KID;
    }
    if (!b64url_members_ok(k)) {
        errbuf_set(why, why_len, "a key member is not unpadded base64url");
        return JWKS_SKIP_INVALID;
    }
    return -1;
}

/* Loads one key into set->keys[set->n]; -1 on success, else the skip reason (why filled). */
static int load_key(jwks *set, json_t *k, char *why, size_t why_len)
{
    if (!json_is_object(k)) {
        errbuf_set(why, why_len, "not a JSON object");
        return JWKS_SKIP_INVALID;
    }
    jwks_key_type type = JWKS_KEY_RSA;
    int r = screen_key(set, k, &type, why, why_len);
    if (r >= 0) return r;

    cjose_err cerr = {0};
    cjose_jwk_t *jwk = cjose_jwk_import_json((cjose_header_t *)k, &cerr);
    if (!jwk) {
        errbuf_set(why, why_len, "key material does not load (%s)",
                   cerr.message ? cerr.message : "cjose error");
        return JWKS_SKIP_INVALID;
    }
    size_t bits = cjose_jwk_get_keysize(jwk, NULL);
    if (type == JWKS_KEY_RSA && (bits < JWKS_RSA_MIN_BITS || bits > JWKS_RSA_MAX_BITS)) {
        cjose_jwk_release(jwk);
        errbuf_set(why, why_len, "RSA key of %zu bits (%d-%d accepted)", bits, JWKS_RSA_MIN_BITS,
                   JWKS_RSA_MAX_BITS);
        return JWKS_SKIP_KEY_SIZE;
    }
    jwks_key *slot = &set->keys[set->n++];
    snprintf(slot->kid, sizeof slot->kid, "%s", member_str(k, "kid"));
    slot->type = type;
    slot->rsa_bytes = type == JWKS_KEY_RSA ? bits / 8 : 0;
    slot->jwk = jwk;
    return -1;
}

static void count_skip(jwks_load_info *info, size_t index, json_t *k, int reason, const char *why)
{
    info->skipped++;
    info->by_reason[reason]++;
    if (info->first_skip[0]) return;
    char kid[48];
    redact_printable(kid, sizeof kid, member_str(k, "kid")); /* NULL for a non-object */
    snprintf(info->first_skip, sizeof info->first_skip, "key %zu (kid \"%s\"): %s", index, kid,
             why);
}

static jwks *jwks_new_empty(void)
{
    jwks *set = calloc(1, sizeof *set);
    if (set) atomic_init(&set->refs, 1);
    return set;
}

jwks *jwks_parse(const char *json, size_t len, jwks_load_info *info, char *err, size_t err_len)
{
    jwks_load_info scratch;
    if (!info) info = &scratch;
    memset(info, 0, sizeof *info);
    if (!json || len == 0) {
        errbuf_set(err, err_len, "JWK set: empty");
        return NULL;
    }
    if (len > JWKS_MAX_BYTES) {
        errbuf_set(err, err_len, "JWK set: larger than %d bytes", JWKS_MAX_BYTES);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        errbuf_set(err, err_len, "JWK set: not JSON (line %d: %s)", jerr.line, jerr.text);
        return NULL;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys)) {
        json_decref(root);
        errbuf_set(err, err_len, "JWK set: not an object with a \"keys\" array");
        return NULL;
    }
    jwks *set = jwks_new_empty();
    if (!set) {
        json_decref(root);
        errbuf_set(err, err_len, "JWK set: out of memory");
        return NULL;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        char why[112] = "";
        int reason = JWKS_SKIP_TOO_MANY;
        if (set->n < JWKS_MAX_KEYS)
            reason = load_key(set, k, why, sizeof why);
        else
            errbuf_set(why, sizeof why, "more than %d usable keys", JWKS_MAX_KEYS);
        if (reason >= 0) count_skip(info, i, k, reason, why);
    }
    info->loaded = set->n;
    json_decref(root);
    return set;
}

jwks *jwks_load_file(const char *path, jwks_load_info *info, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        errbuf_set(err, err_len, "JWK set: cannot open %s", path);
        return NULL;
    }
    char *buf = malloc(JWKS_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, JWKS_MAX_BYTES + 1, f) : 0;
    bool read_error = ferror(f);
    fclose(f);
    jwks *set = NULL;
    if (!buf)
        errbuf_set(err, err_len, "JWK set: out of memory");
    else if (read_error)
        errbuf_set(err, err_len, "JWK set: cannot read %s", path);
    else
        set = jwks_parse(buf, n, info, err, err_len); /* > JWKS_MAX_BYTES is refused there */
    free(buf);
    return set;
}

jwks *jwks_retain(jwks *set)
{
    if (set) atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

void jwks_release(jwks *set)
{
    if (!set || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < set->n; i++) cjose_jwk_release(set->keys[i].jwk);
    free(set);
}

size_t jwks_count(const jwks *set) { return set ? set->n : 0; }

const jwks_key *jwks_find(const jwks *set, const char *kid)
{
    if (!set || !kid) return NULL;
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->keys[i].kid, kid) == 0) return &set->keys[i];
    return NULL;
}

/* ------------------------------------------------------------------ the holder */

struct jwks_source {
    pthread_mutex_t lock;
    pthread_cond_t fetch_done;
    jwks *current; /* one reference held here; never NULL */
    /* Set at creation, read without the lock. url NULL: a static source. */
    char *url;
    bool is_http; /* an HTTP status to check (not file://) */
    long connect_timeout_ms, timeout_ms;
    int64_t interval_ms;
    int64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
    bool curl_ready;
    /* Background refresher (cfg.background): started at creation, joined by jwks_source_free. */
    bool background;
    bool refresher_started;
    pthread_t refresher;
    pthread_cond_t wake; /* a fetch is wanted, or stopping */
    /* Under the lock. */
    bool wanted;   /* background: a fetch was asked for */
    bool stopping; /* background: the refresher must end */
    bool fetching; /* one thread is fetching; others wait on fetch_done */
    bool attempted;
    int64_t last_attempt_ms;
    uint64_t fetches, failures;
    jwks_load_info last_load;
    char last_error[JWKS_ERR_BUF];
};

static int64_t mono_ms(void *ctx)
{
    (void)ctx;
    return (int64_t)(time_mono_ns() / 1000000);
}

/* file:// and https:// anywhere; http:// only to this host, where nobody can alter it in flight. */
static bool url_allowed(const char *url, bool *is_http, char *err, size_t err_len)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = false;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        errbuf_set(err, err_len, "JWKS URL: not an absolute URL");
    } else if (strcmp(scheme, "file") == 0) {
        ok = true;
        *is_http = false;
    } else if (strcmp(scheme, "https") == 0) {
        ok = true;
        *is_http = true;
    } else if (strcmp(scheme, "http") == 0) {
        curl_url_get(u, CURLUPART_HOST, &host, 0);
        ok = host && (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "localhost") == 0 ||
                      strcmp(host, "[::1]") == 0);
        *is_http = true;
        if (!ok)
            errbuf_set(err, err_len, "JWKS URL: http:// only to a loopback host; use https://");
    } else {
        errbuf_set(err, err_len, "JWKS URL: scheme %s is not file, https or loopback http", scheme);
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

/* One GET of the URL; the body (malloc'd, owned by the caller) or NULL with err. No lock held. */
static char *fetch_url(const jwks_source *s, size_t *len, char *err, size_t err_len)
{
    CURL *curl = curl_easy_init();
    if (!curl) {
        errbuf_set(err, err_len, "curl_easy_init failed");
        return NULL;
    }
    curl_body body = {.max = JWKS_MAX_BYTES};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, s->url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_body_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "file,http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect could leave loopback */
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)JWKS_MAX_BYTES);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "chatflow-jwks");

    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK || (s->is_http && status != 200)) {
        if (rc != CURLE_OK)
            errbuf_set(err, err_len, "GET %.120s failed: %s", s->url,
                       body.too_big || rc == CURLE_FILESIZE_EXCEEDED ? "larger than JWKS_MAX_BYTES"
                       : errbuf[0]                                   ? errbuf
                                                                     : curl_easy_strerror(rc));
        else
            errbuf_set(err, err_len, "GET %.120s answered HTTP %ld", s->url, status);
        free(body.data);
        return NULL;
    }
    *len = body.len;
    return body.data ? body.data : calloc(1, 1); /* an empty answer is parsed (and refused) */
}

/* The fetching thread's work: called and returns with the lock held, fetching set by the caller
 * (so nobody else fetches); the network wait happens with the lock released. */
static bool fetch_locked(jwks_source *s, char *err, size_t err_len)
{
    s->fetches++;
    s->attempted = true;
    s->last_attempt_ms = s->clock_ms(s->clock_ctx);
    pthread_mutex_unlock(&s->lock);

    char why[JWKS_ERR_BUF] = "";
    jwks_load_info info = {0};
    size_t len = 0;
    jwks *fresh = NULL;
    char *body = fetch_url(s, &len, why, sizeof why);
    if (body) fresh = jwks_parse(body, len, &info, why, sizeof why);
    free(body);

    pthread_mutex_lock(&s->lock);
    jwks *old = NULL;
    if (fresh) {
        old = s->current;
        s->current = fresh;
        s->last_load = info;
        s->last_error[0] = '\0';
    } else {
        s->failures++;
        snprintf(s->last_error, sizeof s->last_error, "%s", why);
        errbuf_set(err, err_len, "%s", why);
    }
    s->fetching = false;
    pthread_cond_broadcast(&s->fetch_done);
    jwks_release(old); /* frees only when no verifier still holds it */
    return fresh != NULL;
}

static void wait_for_fetch(jwks_source *s)
{
    while (s->fetching) pthread_cond_wait(&s->fetch_done, &s->lock);
}

static jwks_source *source_alloc(void)
{
    jwks_source *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->fetch_done, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->clock_ms = mono_ms;
    return s;
}

jwks_source *jwks_source_new_static(jwks *set)
{
    if (!set) return NULL;
    jwks_source *s = source_alloc();
    if (!s) {
        jwks_release(set);
        return NULL;
    }
    s->current = set;
    s->last_load.loaded = set->n;
    return s;
}

static bool source_configure(jwks_source *s, const jwks_source_config *cfg, char *err,
                             size_t err_len)
{
    if (!url_allowed(cfg->url, &s->is_http, err, err_len)) return false;
    s->url = strdup(cfg->url);
    s->current = jwks_new_empty();
    if (!s->url || !s->current) {
        errbuf_set(err, err_len, "out of memory");
        return false;
    }
    s->interval_ms =
        1000LL * (cfg->refresh_interval_s > 0 ? cfg->refresh_interval_s : JWKS_DEFAULT_REFRESH_S);
    s->connect_timeout_ms =
        cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : JWKS_DEFAULT_CONNECT_TIMEOUT_MS;
    s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : JWKS_DEFAULT_TIMEOUT_MS;
    if (cfg->clock_ms) {
        s->clock_ms = cfg->clock_ms;
        s->clock_ctx = cfg->clock_ctx;
    }
    return true;
}

/* The background refresher: fetches when asked, until stopping. Its waits are bounded so a lost
 * wake-up costs at most a second. */
static void *refresher_main(void *arg)
{
    jwks_source *s = arg;
    pthread_setname_np(pthread_self(), "cf-jwks");
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        if (!s->wanted) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&s->wake, &s->lock, &until);
            continue;
        }
        s->wanted = false;
        wait_for_fetch(s);
        s->fetching = true;
        fetch_locked(s, NULL, 0);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

jwks_source *jwks_source_new(const jwks_source_config *cfg, char *err, size_t err_len)
{
    if (!cfg || !cfg->url || !cfg->url[0]) {
        errbuf_set(err, err_len, "JWKS URL: not set");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        errbuf_set(err, err_len, "curl_global_init failed");
        return NULL;
    }
    jwks_source *s = source_alloc();
    if (!s) {
        curl_global_cleanup();
        errbuf_set(err, err_len, "out of memory");
        return NULL;
    }
    s->curl_ready = true;
    if (!source_configure(s, cfg, err, err_len) || !jwks_source_refresh_now(s, err, err_len)) {
        jwks_source_free(s);
        return NULL;
    }
    if (cfg->background) {
        if (pthread_create(&s->refresher, NULL, refresher_main, s) != 0) {
            errbuf_set(err, err_len, "JWKS: cannot start the refresher thread");
            jwks_source_free(s);
            return NULL;
        }
        s->refresher_started = true;
        s->background = true;
    }
    return s;
}

void jwks_source_free(jwks_source *s)
{
    if (!s) return;
    if (s->refresher_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->refresher, NULL); /* a fetch in progress ends within its timeout */
    }
    pthread_cond_destroy(&s->wake);
    jwks_release(s->current);
    free(s->url);
    pthread_cond_destroy(&s->fetch_done);
    pthread_mutex_destroy(&s->lock);
    if (s->curl_ready) curl_global_cleanup();
    free(s);
}

jwks *jwks_source_get(jwks_source *s)
{
    pthread_mutex_lock(&s->lock);
    jwks *set = jwks_retain(s->current);
    pthread_mutex_unlock(&s->lock);
    return set;
}

jwks *jwks_source_refresh_unknown_kid(jwks_source *s)
{
    pthread_mutex_lock(&s->lock);
    bool due = !s->attempted || s->clock_ms(s->clock_ctx) - s->last_attempt_ms >= s->interval_ms;
    if (s->url && s->background) {
        if (due && !s->fetching && !s->wanted) {
            s->wanted = true;
            pthread_cond_signal(&s->wake);
        }
    } else if (s->url) {
        if (s->fetching) {
            wait_for_fetch(s); /* its result is as fresh as ours would be */
        } else if (due) {
            s->fetching = true;
            fetch_locked(s, NULL, 0);
        }
    }
    jwks *set = jwks_retain(s->current);
    pthread_mutex_unlock(&s->lock);
    return set;
}

bool jwks_source_refresh_now(jwks_source *s, char *err, size_t err_len)
{
    if (!s->url) return true;
    pthread_mutex_lock(&s->lock);
    wait_for_fetch(s);
    s->fetching = true;
    bool ok = fetch_locked(s, err, err_len);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void jwks_source_get_stats(jwks_source *s, jwks_source_stats *out)
{
    pthread_mutex_lock(&s->lock);
    out->fetches = s->fetches;
    out->failures = s->failures;
    out->keys = s->current->n;
    out->last_load = s->last_load;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
    pthread_mutex_unlock(&s->lock);
}
