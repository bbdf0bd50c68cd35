/*
 * it_auth — identity tokens (CHATFLOW_AUTH=on, docs/protocol.md "Identity") against the real
 * chain: a producer and a consumer on their own queues and database, real fauxqs and PostgreSQL.
 *  - HS256 (secret, issuer, audience): a valid token works end to end — sent with a Bearer header
 *    and with ?access_token=, acked, received by a subscriber whose identity is the token's, the
 *    room API answers 200 with it; missing, expired, not-yet-valid, bad-signature, alg none,
 *    wrong audience / issuer tokens are refused at both handshakes with 401 and the reason as the
 *    body, a token whose rooms claim lacks the room with 403, a subscriber claiming another
 *    userId with 403; the room API answers 401 / 403 the same way, /health and /metrics stay
 *    open; a frame with another userId is answered FORBIDDEN_USER, the token's name replaces the
 *    frame's; the rate limit counts against the token's subject across userId changes and
 *    connections; a connection whose token expires is closed with 4401 "token expired".
 *  - RS256 from a JWK set file (file://): a valid token works end to end; HS256 tokens and an
 *    unknown kid are refused.
 *  - Development tokens (CHATFLOW_DEV_TOKENS=on on the HS256 producer): /config.json announces
 *    them, GET /dev/token?name= answers a token for the name's stable userId (or the userId
 *    given) that opens the producer and the room API; bad names and userIds are 400; without
 *    the setting (the JWKS pair) the endpoint is 404.
 *  - Key rotation: the JWK set file gains a key with a new kid; both services accept tokens signed
 *    with it within seconds (CHATFLOW_AUTH_JWKS_REFRESH_S=2), without a restart.
 *  - CORS preflight (OPTIONS) of the room API: 204 with Allow-Headers Authorization for a
 *    listed origin, no Allow-Origin for another.
 *  - Anonymous reads (CHATFLOW_AUTH_ANONYMOUS_READ on the JWKS consumer): a subscriber and an API
 *    read without a token are answered, anonymously (a READ frame is refused even with a userId
 *    in the query); a bad token is still 401, and the producer still needs a token.
 *  - No token appears in either service's log (grepped for every token minted here).
 */
/* test-passes: asan tsan */
#include <curl/curl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../producer/dev_tokens.h"
#include "testlib.h"
#include "timeutil.h"
#include "tl_consumer.h"
#include "tl_http.h"
#include "tl_jwt.h"
#include "tl_proc.h"
#include "tl_producer.h"
#include "tl_rawws.h"
#include "wsclient.h"

#define SECRET "it-auth-shared-secret-0123456789-abcdef"
#define ISSUER "https://issuer.chatflow.test"
#define AUDIENCE "chatflow-test"
#define RATE_PER_MINUTE 6
#define PAGE_ORIGIN "https://chat.example"

static tl_consumer_env env;
static tl_consumer cons;
static tl_producer prod;
static wsc_ctx *ws;

/* Every token minted, to grep the logs for at the end. */
static char *minted[64];
static size_t n_minted;

static const char *keep(char *token)
{
    if (token && n_minted < sizeof minted / sizeof minted[0]) minted[n_minted++] = token;
    return token ? token : "";
}

static int64_t now_s(void) { return time_wall_ms() / 1000; }

/* An HS256 token for sub with the configured issuer and audience, plus extra claims. */
static const char *hs(const char *sub, const char *name, int64_t exp, const char *extra)
{
    char claims_extra[512];
    snprintf(claims_extra, sizeof claims_extra, ",\"iss\":\"%s\",\"aud\":\"%s\"%s", ISSUER,
             AUDIENCE, extra ? extra : "");
    char *payload = tl_jwt_claims(sub, name, exp, claims_extra);
    char *t = tl_jwt_hs256(SECRET, payload);
    free(payload);
    return keep(t);
}

/* ---- raw HTTP: a handshake with an optional header, the status and the body as sent ---- */

static int raw_handshake(int port, const char *path, const char *authorization, char *body,
                         size_t body_len)
{
    body[0] = '\0';
    int fd = tl_raw_connect(port, 0);
    if (fd < 0) return 0;
    char req[12000];
    tl_raw_handshake_text(req, sizeof req, port, path);
    if (authorization) { /* before the blank line that ends the head */
        size_t n = strlen(req) - 2;
        snprintf(req + n, sizeof req - n, "Authorization: %s\r\n\r\n", authorization);
    }
    char resp[4096];
    size_t got = 0;
    if (tl_raw_send_all(fd, req, strlen(req))) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        while (got + 1 < sizeof resp && poll(&p, 1, got ? 300 : 5000) > 0) {
            ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
            if (r <= 0) break;
            got += (size_t)r;
        }
    }
    close(fd);
    resp[got] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        NOTE("raw answer: %.80s", resp);
        status = 0;
    }
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, body_len, "%s", b ? b + 4 : "");
    return status;
}

/* ---- the room API with an optional Authorization header ---- */

static char *api_get(const char *path, const char *authorization, long *status)
{
    CURL *h = curl_easy_init();
    char url[12000], hdr[12000];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", cons.admin_port, path);
    tl_buf b = {0};
    struct curl_slist *headers = NULL;
    if (authorization) {
        snprintf(hdr, sizeof hdr, "Authorization: %s", authorization);
        headers = curl_slist_append(headers, hdr);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tl_buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    *status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return b.data;
}

/* A request to the room API with the extra request headers given (NULL-terminated); its status,
 * with the answer's head in *head (malloc'd, the caller frees head->data). */
static long api_exchange(const char *method, const char *path, const char *const *headers,
                         tl_buf *head)
{
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", cons.admin_port, path);
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers[i]; i++) hl = curl_slist_append(hl, headers[i]);
    tl_buf body = {0};
    *head = (tl_buf){0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tl_buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, tl_buf_write);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, head);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    free(body.data);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    return status;
}

/* The value of header name (with its ": ") in head, into out; "" when absent. */
static void header_value(const tl_buf *head, const char *name, char *out, size_t len)
{
    char key[64];
    snprintf(key, sizeof key, "\n%s: ", name);
    const char *at = head->data ? strcasestr(head->data, key) : NULL;
    out[0] = '\0';
    if (at) {
        at += strlen(key);
        snprintf(out, len, "%.*s", (int)strcspn(at, "\r\n"), at);
    }
}

/* The Access-Control-Allow-Origin and Vary headers of a room API answer to a request from origin
 * (copied into acao / vary, "" when absent); the HTTP status. */
static long api_cors(const char *path, const char *authorization, const char *origin, char *acao,
                     char *vary, size_t len)
{
    char auth_hdr[12000], origin_hdr[256];
    snprintf(auth_hdr, sizeof auth_hdr, "Authorization: %s", authorization);
    snprintf(origin_hdr, sizeof origin_hdr, "Origin: %s", origin);
    const char *headers[] = {auth_hdr, origin_hdr, NULL};
    tl_buf head;
    long status = api_exchange("GET", path, headers, &head);
    header_value(&head, "Access-Control-Allow-Origin", acao, len);
    header_value(&head, "Vary", vary, len);
    free(head.data);
    return status;
}

/* A CORS preflight (OPTIONS) from origin: its status; the Allow-Origin and Allow-Headers it
 * answered ("" when absent). */
static long api_preflight(const char *path, const char *origin, char *acao, char *allow_headers,
                          size_t len)
{
    char origin_hdr[256];
    snprintf(origin_hdr, sizeof origin_hdr, "Origin: %s", origin);
    const char *headers[] = {origin_hdr, "Access-Control-Request-Method: GET",
                             "Access-Control-Request-Headers: authorization", NULL};
    tl_buf head;
    long status = api_exchange("OPTIONS", path, headers, &head);
    header_value(&head, "Access-Control-Allow-Origin", acao, len);
    header_value(&head, "Access-Control-Allow-Headers", allow_headers, len);
    free(head.data);
    return status;
}

/* ---- frames ---- */

static json_t *next_frame(wsc_conn *c, int timeout_ms)
{
    size_t len;
    char *s = wsc_recv(c, timeout_ms, &len);
    json_t *j = s ? json_loads(s, 0, NULL) : NULL;
    free(s);
    return j;
}

static const char *str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* The broadcast of the message with this text (other frames skipped), or NULL. */
static json_t *wait_text(wsc_conn *c, const char *text, int timeout_ms)
{
    uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (time_mono_ns() < end) {
        json_t *j = next_frame(c, 500);
        if (j && strcmp(str(j, "message"), text) == 0) return j;
        json_decref(j);
    }
    return NULL;
}

/* Sends a frame and returns its answer's status ("SUCCESS") or errorCode. */
static const char *say(wsc_conn *c, int user, const char *text, char *out, size_t out_len)
{
    char *f = tl_frame(user, text, NULL);
    tl_ws_send_str(c, f);
    free(f);
    json_t *a = next_frame(c, 10000);
    const char *code = !a                                ? "(no answer)"
                       : json_object_get(a, "errorCode") ? str(a, "errorCode")
                                                         : str(a, "status");
    snprintf(out, out_len, "%s", code);
    json_decref(a);
    return out;
}

static wsc_conn *produce(const char *room, const char *authorization, const char *token,
                         int *status)
{
    char path[10000], err[256];
    snprintf(path, sizeof path, "/chat/%s%s%s", room, token ? "?access_token=" : "",
             token ? token : "");
    return wsc_connect_auth(ws, "127.0.0.1", prod.ws_port, path, authorization, 5000, status, err,
                            sizeof err);
}

static char *bearer(const char *token)
{
    char *s = NULL;
    if (asprintf(&s, "Bearer %s", token) < 0) s = NULL;
    return s;
}

/* ---- starting ---- */

static bool wait_ready(int port)
{
    for (int i = 0; i < 200; i++) {
        long st;
        char *b = tl_http("GET", port, "/health/ready", &st);
        free(b);
        if (st == 200) return true;
        time_sleep_ms(100);
    }
    return false;
}

static bool start_pair(const char *tag, const char *const *auth_env, const char *producer_extra)
{
    static char prefix_env[128], dlq_env[160], plog[700], clog[64];
    snprintf(prefix_env, sizeof prefix_env, "CHATFLOW_QUEUE_PREFIX=%s", env.q.prefix);
    snprintf(dlq_env, sizeof dlq_env, "CHATFLOW_DLQ_NAME=%s", env.dlq_name);
    snprintf(plog, sizeof plog, "%s/producer-%s.log", env.log_dir, tag);
    snprintf(clog, sizeof clog, "consumer-%s", tag);
    const char *penv[16] = {prefix_env, dlq_env, "CHATFLOW_QUEUE_SHARDS=3",
                            "CHATFLOW_RATE_LIMIT_PER_MINUTE=6", "CHATFLOW_LOG_LEVEL=debug"};
    const char *cenv[16] = {"CHATFLOW_LOG_LEVEL=debug",
                            "CHATFLOW_API_ALLOW_ORIGIN=" PAGE_ORIGIN ", https://other.example"};
    size_t np = 5, nc = 2;
    for (size_t i = 0; auth_env[i]; i++) penv[np++] = cenv[nc++] = auth_env[i];
    if (producer_extra) penv[np++] = producer_extra;
    penv[np] = cenv[nc] = NULL;
    bool ok = tl_consumer_start(&env, &cons, clog, cenv) && wait_ready(cons.admin_port);
    ok = ok && tl_producer_start(&prod, plog, penv) && wait_ready(prod.admin_port);
    return ok;
}

static void stop_pair(void)
{
    bool in_time;
    if (prod.pid > 0) tl_producer_stop(&prod, SIGTERM, 30000, &in_time);
    if (cons.pid > 0) tl_consumer_stop(&cons, SIGTERM, 30000, &in_time);
}

/* ---- HS256 ---- */

typedef struct {
    const char *what;
    const char *token; /* NULL: none */
    const char *room;
    int status;
    const char *reason; /* expected in the body */
} refusal_case;

static void test_refusals(void)
{
    int64_t t = now_s();
    char none_payload[256];
    snprintf(none_payload, sizeof none_payload,
             "{\"sub\":\"11\",\"exp\":%lld,\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"}",
             (long long)(t + 600));
    char *other_secret_payload =
        tl_jwt_claims("11", "alice", t + 600, ",\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"");
    const char *bad_sig =
        keep(tl_jwt_hs256("another-secret-of-enough-length-0123456789", other_secret_payload));
    free(other_secret_payload);
    const char *alg_none = keep(tl_jwt_raw("{\"alg\":\"none\",\"typ\":\"JWT\"}", none_payload, ""));
    char *wrong_aud_p =
        tl_jwt_claims("11", "alice", t + 600, ",\"iss\":\"" ISSUER "\",\"aud\":\"someone-else\"");
    const char *wrong_aud = keep(tl_jwt_hs256(SECRET, wrong_aud_p));
    free(wrong_aud_p);
    char *wrong_iss_p = tl_jwt_claims("11", "alice", t + 600,
                                      ",\"iss\":\"https://evil.test\",\"aud\":\"" AUDIENCE "\"");
    const char *wrong_iss = keep(tl_jwt_hs256(SECRET, wrong_iss_p));
    free(wrong_iss_p);
    char nbf[64];
    snprintf(nbf, sizeof nbf, ",\"nbf\":%lld", (long long)(t + 3600));
    refusal_case cases[] = {
        {"no token", NULL, "1", 401, "token required"},
        {"expired", hs("11", "alice", t - 600, NULL), "1", 401, "expired"},
        {"not yet valid", hs("11", "alice", t + 7200, nbf), "1", 401, "valid only in"},
        {"bad signature", bad_sig, "1", 401, "signature"},
        {"alg none", alg_none, "1", 401, "none"},
        {"wrong audience", wrong_aud, "1", 401, "aud"},
        {"wrong issuer", wrong_iss, "1", 401, "iss"},
        {"room outside the rooms claim",
         hs("11", "alice", t + 600, ",\"rooms\":[\"1\",\"team-*\"]"), "3", 403,
         "does not allow room 3"},
        {"subject that is not a userId", hs("a-uuid-subject", "alice", t + 600, NULL), "1", 403,
         "not a ChatFlow userId"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        refusal_case *c = &cases[i];
        char path[10000], body[2048];
        char *auth = c->token ? bearer(c->token) : NULL;
        snprintf(path, sizeof path, "/chat/%s", c->room);
        int st = raw_handshake(prod.ws_port, path, auth, body, sizeof body);
        CHECK(st == c->status && strstr(body, c->reason),
              "producer handshake, %s (Bearer): HTTP %d with \"%s\" (got %d \"%.120s\")", c->what,
              c->status, c->reason, st, body);
        snprintf(path, sizeof path, "/chat/%s%s%s", c->room, c->token ? "?access_token=" : "",
                 c->token ? c->token : "");
        st = raw_handshake(prod.ws_port, path, NULL, body, sizeof body);
        CHECK(st == c->status && strstr(body, c->reason),
              "producer handshake, %s (?access_token=): HTTP %d (got %d \"%.120s\")", c->what,
              c->status, st, body);
        snprintf(path, sizeof path, "/chat/%s?userId=11&username=alice%s%s", c->room,
                 c->token ? "&access_token=" : "", c->token ? c->token : "");
        st = raw_handshake(cons.ws_port, path, NULL, body, sizeof body);
        CHECK(st == c->status && strstr(body, c->reason),
              "consumer handshake, %s: HTTP %d with \"%s\" (got %d \"%.120s\")", c->what, c->status,
              c->reason, st, body);
        snprintf(path, sizeof path, "/api/rooms/%s/messages", c->room);
        long ast;
        char *ab = api_get(path, auth, &ast);
        CHECK(ast == c->status && ab && strstr(ab, c->reason),
              "room API, %s: HTTP %d with \"%s\" (got %ld %.120s)", c->what, c->status, c->reason,
              ast, ab ? ab : "");
        free(ab);
        /* search answers only what the token may read, like every room path */
        snprintf(path, sizeof path, "/api/rooms/%s/search?q=hello", c->room);
        ab = api_get(path, auth, &ast);
        CHECK(ast == c->status && ab && strstr(ab, c->reason),
              "room search, %s: HTTP %d (got %ld %.120s)", c->what, c->status, ast, ab ? ab : "");
        free(ab);
        free(auth);
    }
    char body[2048];
    int st = raw_handshake(prod.ws_port, "/chat/1", "Basic dXNlcjpwYXNz", body, sizeof body);
    CHECK_INT(st, 401, "producer handshake with Authorization: Basic refused with 401");
}

static void test_end_to_end(void)
{
    int64_t t = now_s();
    const char *alice = hs("11", "alice", t + 600, ",\"rooms\":[\"1\",\"2\"]");
    const char *bob = hs("12", NULL, t + 600, NULL);
    char *alice_auth = bearer(alice);
    char path[10000], err[256], code[64];
    int st = 0;

    /* subscribers: alice as a member (token), bob claiming alice's userId (403) */
    snprintf(path, sizeof path, "/chat/1?userId=11&username=alice&access_token=%s", alice);
    wsc_conn *sub = wsc_connect(ws, "127.0.0.1", cons.ws_port, path, 5000, &st, err, sizeof err);
    CHECK(sub != NULL, "consumer subscriber with a token accepted (HTTP %d)", sub ? 101 : st);
    snprintf(path, sizeof path, "/chat/1?userId=11&username=alice&access_token=%s", bob);
    char body[2048];
    st = raw_handshake(cons.ws_port, path, NULL, body, sizeof body);
    CHECK(st == 403 && strstr(body, "not the token's subject"),
          "a subscriber claiming another userId than its token's refused with 403 (%d %.100s)", st,
          body);
    wsc_conn *anon_auth = wsc_connect_auth(ws, "127.0.0.1", cons.ws_port, "/chat/1", alice_auth,
                                           5000, &st, err, sizeof err);
    CHECK(anon_auth != NULL, "consumer subscriber with a Bearer header accepted (HTTP %d)",
          anon_auth ? 101 : st);

    /* producers: Bearer header and ?access_token= */
    wsc_conn *p1 = produce("1", alice_auth, NULL, &st);
    CHECK(p1 != NULL, "producer accepts a valid token in the Authorization header (HTTP %d)",
          p1 ? 101 : st);
    wsc_conn *p2 = produce("1", NULL, bob, &st);
    CHECK(p2 != NULL, "producer accepts a valid token as ?access_token= (HTTP %d)", p2 ? 101 : st);
    if (p1 && sub) {
        CHECK_STR(say(p1, 11, "auth-hello-1", code, sizeof code), "SUCCESS",
                  "a frame as the token's subject is acked");
        json_t *ev = wait_text(sub, "auth-hello-1", 15000);
        CHECK(ev != NULL, "the subscriber with a token receives it");
        CHECK(ev && strcmp(str(ev, "userId"), "11") == 0 &&
                  strcmp(str(ev, "username"), "alice") == 0,
              "as userId 11, username alice (%s, %s)", ev ? str(ev, "userId") : "",
              ev ? str(ev, "username") : "");
        json_decref(ev);
        CHECK_STR(say(p1, 12, "auth-spoof", code, sizeof code), "FORBIDDEN_USER",
                  "a frame with another userId than the token's is refused FORBIDDEN_USER");
    }
    if (p2 && sub) {
        /* bob's token has no name: the frame's username (user12) is used */
        CHECK_STR(say(p2, 12, "auth-hello-2", code, sizeof code), "SUCCESS",
                  "a frame over a ?access_token= connection is acked");
        json_t *ev = wait_text(sub, "auth-hello-2", 15000);
        CHECK(ev && strcmp(str(ev, "userId"), "12") == 0 &&
                  strcmp(str(ev, "username"), "user12") == 0,
              "received as userId 12 with the frame's username when the token has no name");
        json_decref(ev);
    }
    /* the token's name wins over the frame's */
    wsc_conn *p3 = produce("2", alice_auth, NULL, &st);
    if (p3 && sub) {
        wsc_conn *sub2 = wsc_connect_auth(ws, "127.0.0.1", cons.ws_port, "/chat/2", alice_auth,
                                          5000, &st, err, sizeof err);
        CHECK_STR(say(p3, 11, "auth-name", code, sizeof code), "SUCCESS", "room 2 frame acked");
        json_t *ev = sub2 ? wait_text(sub2, "auth-name", 15000) : NULL;
        CHECK(ev && strcmp(str(ev, "username"), "alice") == 0,
              "the token's name replaces the frame's username (user11) (%s)",
              ev ? str(ev, "username") : "none");
        json_decref(ev);
        wsc_free(sub2);
    }
    wsc_free(p3);

    /* the room API */
    long ast;
    char *ab = api_get("/api/rooms/1/messages", alice_auth, &ast);
    CHECK(ast == 200 && ab && strstr(ab, "auth-hello-1"),
          "room API with a Bearer token: 200 with the messages (%ld)", ast);
    free(ab);
    snprintf(path, sizeof path, "/api/rooms/1/presence?access_token=%s", alice);
    ab = api_get(path, NULL, &ast);
    CHECK_INT(ast, 200, "room API with ?access_token=: 200");
    free(ab);
    ab = api_get("/health/live", NULL, &ast);
    CHECK_INT(ast, 200, "/health/live needs no token");
    free(ab);

    /* CORS is an allowlist with tokens on: a listed page's origin is echoed (Vary: Origin),
     * another site's gets no Access-Control-Allow-Origin, so its page cannot read the answer. */
    char acao[256], vary[256];
    ast = api_cors("/api/rooms/1/messages", alice_auth, PAGE_ORIGIN, acao, vary, sizeof acao);
    CHECK(ast == 200 && strcmp(acao, PAGE_ORIGIN) == 0 && strcasestr(vary, "Origin"),
          "the listed page origin is allowed (%ld, '%s', Vary '%s')", ast, acao, vary);
    ast = api_cors("/api/rooms/1/messages", alice_auth, "https://other.example", acao, vary,
                   sizeof acao);
    CHECK_STR(acao, "https://other.example", "the second listed origin too");
    ast = api_cors("/api/rooms/1/messages", alice_auth, "https://evil.example", acao, vary,
                   sizeof acao);
    CHECK(strcmp(acao, "") == 0, "an unlisted origin gets no Access-Control-Allow-Origin ('%s')",
          acao);
    ab = api_get("/metrics", NULL, &ast);
    CHECK_INT(ast, 200, "/metrics needs no token");
    free(ab);

    wsc_free(p1);
    wsc_free(p2);
    wsc_free(sub);
    wsc_free(anon_auth);
    free(alice_auth);
}

/* RATE_PER_MINUTE frames a minute per token subject, whatever userId the frames claim and over
 * however many connections. */
static void test_rate_limit(void)
{
    const char *carol = hs("31", "carol", now_s() + 600, NULL);
    char *auth = bearer(carol);
    int st;
    wsc_conn *a = produce("2", auth, NULL, &st);
    wsc_conn *b = produce("2", auth, NULL, &st);
    CHECK(a && b, "two connections with the same token");
    if (a && b) {
        char code[64];
        int ok = 0;
        for (int i = 0; i < RATE_PER_MINUTE; i++) {
            char text[32];
            snprintf(text, sizeof text, "rate-%d", i);
            ok += strcmp(say(i % 2 ? b : a, 31, text, code, sizeof code), "SUCCESS") == 0;
        }
        CHECK_INT(ok, RATE_PER_MINUTE, "the first %d frames of the minute acked", RATE_PER_MINUTE);
        CHECK_STR(say(a, 32, "rate-other-user", code, sizeof code), "FORBIDDEN_USER",
                  "changing the frame's userId does not open a fresh bucket");
        CHECK_STR(say(a, 31, "rate-over", code, sizeof code), "RATE_LIMITED",
                  "the subject's next frame is rate limited");
        CHECK_STR(say(b, 31, "rate-over-2", code, sizeof code), "RATE_LIMITED",
                  "on its other connection too");
    }
    wsc_free(a);
    wsc_free(b);
    free(auth);
}

/* c is closed within 10 s with 4401 "token expired". */
static void check_expiry_close(wsc_conn *c, const char *who)
{
    bool closed = wsc_wait_closed(c, 10000);
    int code = 0;
    const char *reason = "";
    wsc_close_info(c, &code, &reason);
    CHECK(closed && code == 4401 && strcmp(reason, "token expired") == 0,
          "%s is closed with 4401 \"token expired\" when it expires (%d \"%s\")", who, code,
          reason);
}

/* Step C: the producer and the consumer close a connection when its token's exp (+ leeway 1 s)
 * passes. */
static void test_expiry(void)
{
    const char *dave = hs("41", "dave", now_s() + 2, NULL);
    char *auth = bearer(dave);
    int st;
    wsc_conn *c = produce("1", auth, NULL, &st);
    CHECK(c != NULL, "a connection with a token expiring in 2 s (HTTP %d)", c ? 101 : st);
    if (c) check_expiry_close(c, "the producer connection");
    wsc_free(c);

    /* The consumer too: a subscriber whose token runs out is closed with 4401 (a fresh token:
     * the first one ran out above). */
    free(auth);
    auth = bearer(hs("41", "dave", now_s() + 2, NULL));
    c = wsc_connect_auth(ws, "127.0.0.1", cons.ws_port, "/chat/1", auth, 5000, &st, NULL, 0);
    CHECK(c != NULL, "a subscriber with a token expiring in 2 s (HTTP %d)", c ? 101 : st);
    if (c) check_expiry_close(c, "the subscriber");
    wsc_free(c);
    free(auth);
}

/* ---- RS256 from a JWK set file ---- */

static void test_jwks(const tl_jwt_key *key)
{
    int64_t t = now_s();
    char *payload =
        tl_jwt_claims("51", "erin", t + 600, ",\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"");
    const char *rs = keep(tl_jwt_rs256(key, payload));
    tl_jwt_key *stranger = tl_jwt_rsa_new("not-in-the-set");
    const char *unknown = stranger ? keep(tl_jwt_rs256(stranger, payload)) : "";
    free(payload);
    tl_jwt_key_free(stranger);
    const char *hs_token = hs("51", "erin", t + 600, NULL);
    char path[10000], err[256], code[64], body[2048];
    int st;
    snprintf(path, sizeof path, "/chat/1?userId=51&username=erin&access_token=%s", rs);
    wsc_conn *sub = wsc_connect(ws, "127.0.0.1", cons.ws_port, path, 5000, &st, err, sizeof err);
    CHECK(sub != NULL, "RS256: consumer subscriber accepted (HTTP %d)", sub ? 101 : st);
    char *auth = bearer(rs);
    wsc_conn *p = produce("1", auth, NULL, &st);
    CHECK(p != NULL, "RS256: producer accepts the token (HTTP %d)", p ? 101 : st);
    if (p && sub) {
        CHECK_STR(say(p, 51, "rs256-hello", code, sizeof code), "SUCCESS", "RS256: frame acked");
        json_t *ev = wait_text(sub, "rs256-hello", 15000);
        CHECK(ev != NULL, "RS256: the subscriber receives it");
        json_decref(ev);
    }
    long ast;
    char *ab = api_get("/api/rooms/1/messages", auth, &ast);
    CHECK_INT(ast, 200, "RS256: room API 200");
    free(ab);
    char *hs_auth = bearer(hs_token);
    st = raw_handshake(prod.ws_port, "/chat/1", hs_auth, body, sizeof body);
    CHECK(st == 401, "RS256 only: an HS256 token refused with 401 (%d %.100s)", st, body);
    free(hs_auth);
    char *unk_auth = bearer(unknown);
    st = raw_handshake(prod.ws_port, "/chat/1", unk_auth, body, sizeof body);
    CHECK(st == 401, "RS256: a token signed by a key not in the set refused with 401 (%d %.100s)",
          st, body);
    free(unk_auth);
    wsc_free(p);
    wsc_free(sub);
    free(auth);
}

/* ---- the logs ---- */

/* ---- the development token endpoint (CHATFLOW_DEV_TOKENS) ---- */

static json_t *producer_json(const char *path, long *status)
{
    char *body = tl_http("GET", prod.ws_port, path, status);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

static void test_dev_tokens(void)
{
    long st;
    json_t *cfg = producer_json("/config.json", &st);
    json_t *a = json_object_get(cfg, "auth");
    CHECK(st == 200 && json_is_true(json_object_get(a, "required")) &&
              json_is_true(json_object_get(a, "devTokens")),
          "/config.json says tokens are required and development tokens are on");
    CHECK_STR(str(a, "tokenUrl"), "/dev/token", "/config.json names the token URL");
    json_decref(cfg);

    int64_t before = now_s();
    json_t *t = producer_json("/dev/token?name=alice", &st);
    CHECK_INT(st, 200, "GET /dev/token?name=alice answers 200");
    char uid[16];
    snprintf(uid, sizeof uid, "%u", dev_tokens_user_id_for("alice"));
    CHECK_STR(str(t, "userId"), uid, "alice's userId is the one derived from her name");
    CHECK_STR(str(t, "username"), "alice", "the answer names the user");
    json_int_t exp = json_integer_value(json_object_get(t, "expiresAt"));
    CHECK(exp >= before + 3600 && exp <= now_s() + 3600, "the token lives the default 3600 s");
    const char *token = keep(str(t, "token")[0] ? strdup(str(t, "token")) : NULL);

    json_t *again = producer_json("/dev/token?name=alice", &st);
    CHECK_STR(str(again, "userId"), uid, "the same name is the same user on the next login");
    keep(str(again, "token")[0] ? strdup(str(again, "token")) : NULL);
    json_decref(again);

    /* The token opens the producer (with ?access_token=, as the page sends it) and the consumer's
     * API, with the name the endpoint was given. */
    int status = 0;
    wsc_conn *c = produce("dev-room", NULL, token, &status);
    CHECK(c != NULL, "a development token opens the producer socket (HTTP %d)", status);
    if (c) {
        char code[32];
        CHECK_STR(say(c, atoi(uid), "hello from a dev token", code, sizeof code), "SUCCESS",
                  "a frame as the token's user is acked");
        CHECK_STR(say(c, atoi(uid) % 100000 + 1, "posing as someone else", code, sizeof code),
                  "FORBIDDEN_USER", "a frame as another user is refused");
        wsc_free(c);
    }
    char *auth_hdr = bearer(token);
    long api_status = 0;
    free(api_get("/api/rooms/dev-room/presence", auth_hdr, &api_status));
    CHECK_INT(api_status, 200, "a development token reads the room API");
    free(auth_hdr);
    json_decref(t);

    t = producer_json("/dev/token?name=bob&userId=77", &st);
    CHECK(st == 200 && strcmp(str(t, "userId"), "77") == 0,
          "an explicit userId is honoured (HTTP %ld)", st);
    keep(str(t, "token")[0] ? strdup(str(t, "token")) : NULL);
    json_decref(t);

    static const struct {
        const char *path, *reason;
    } bad[] = {
        {"/dev/token", "name: must be 3-20"},
        {"/dev/token?name=al", "name: must be 3-20"},
        {"/dev/token?name=al%20ice", "name: must be 3-20"},
        {"/dev/token?name=alice&userId=0", "userId: must be"},
        {"/dev/token?name=alice&userId=100001", "userId: must be"},
        {"/dev/token?name=alice&userId=007", "userId: must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *body = tl_http("GET", prod.ws_port, bad[i].path, &st);
        CHECK(st == 400 && body && strstr(body, bad[i].reason),
              "%s answers 400 \"%s...\" (HTTP %ld: %.60s)", bad[i].path, bad[i].reason, st,
              body ? body : "");
        free(body);
    }
}

/* The page's fetch with an Authorization header is preceded by a preflight: answered for a
 * listed origin only. */
static void test_preflight(void)
{
    char acao[256], headers[256];
    long st = api_preflight("/api/rooms/7/messages", PAGE_ORIGIN, acao, headers, sizeof acao);
    CHECK_INT(st, 204, "OPTIONS preflight of the room API answers 204");
    CHECK_STR(acao, PAGE_ORIGIN, "the preflight allows the listed origin");
    CHECK(strcasestr(headers, "authorization") != NULL,
          "the preflight allows the Authorization header (\"%s\")", headers);
    st = api_preflight("/api/rooms/7/messages", "https://evil.example", acao, headers, sizeof acao);
    CHECK(acao[0] == '\0', "an unlisted origin's preflight gets no Allow-Origin (HTTP %ld)", st);
}

/* The JWKS consumer runs with CHATFLOW_AUTH_ANONYMOUS_READ: readers without any token are
 * anonymous, never members; writers and bad tokens are still refused. */
static void test_anonymous_read(const tl_jwt_key *key)
{
    int st;
    char err[256], body[2048], code[64];
    wsc_conn *anon =
        wsc_connect(ws, "127.0.0.1", cons.ws_port, "/chat/anon-room?userId=52&username=mallory",
                    5000, &st, err, sizeof err);
    CHECK(anon != NULL, "anonymous read: a subscriber without a token is accepted (HTTP %d)",
          anon ? 101 : st);
    st = raw_handshake(prod.ws_port, "/chat/anon-room", NULL, body, sizeof body);
    CHECK_INT(st, 401, "anonymous read: the producer still refuses a sender without a token");
    st = raw_handshake(cons.ws_port, "/chat/anon-room", "Bearer not.a.token", body, sizeof body);
    CHECK_INT(st, 401, "anonymous read: a bad token is still refused, not read as anonymous");
    long ast;
    free(api_get("/api/rooms/anon-room/messages", NULL, &ast));
    CHECK_INT(ast, 200, "anonymous read: the room API answers without a token");
    free(api_get("/api/rooms/anon-room/messages", "Bearer not.a.token", &ast));
    CHECK_INT(ast, 401, "anonymous read: the room API refuses a bad token");

    char *payload = tl_jwt_claims("53", "frank", now_s() + 600,
                                  ",\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"");
    char *auth = bearer(keep(tl_jwt_rs256(key, payload)));
    free(payload);
    wsc_conn *p = produce("anon-room", auth, NULL, &st);
    if (p && anon) {
        CHECK_STR(say(p, 53, "for-anonymous-readers", code, sizeof code), "SUCCESS",
                  "anonymous read: a verified sender's frame is acked");
        json_t *ev = wait_text(anon, "for-anonymous-readers", 15000);
        CHECK(ev != NULL, "anonymous read: the anonymous subscriber receives it");
        json_decref(ev);
        /* The query named userId 52, but nobody vouched for it: not a member, so no READ. */
        tl_ws_send_str(anon,
                       "{\"type\":\"READ\",\"roomId\":\"anon-room\",\"sequenceNumber\":\"1\"}");
        json_t *e = next_frame(anon, 10000);
        CHECK(e && strcmp(str(e, "type"), "ERROR") == 0,
              "anonymous read: a READ frame is refused (the query's userId is not an identity)");
        json_decref(e);
    } else {
        CHECK(false, "anonymous read: producer (HTTP %d) and subscriber opened", st);
    }
    wsc_free(p);
    wsc_free(anon);
    free(auth);
}

/* The issuer rotates: the set file gains a key with a new kid. Both services must accept tokens
 * signed with it without a restart (CHATFLOW_AUTH_JWKS_REFRESH_S=2 here, so the refetch an
 * unknown kid triggers is allowed within seconds). */
static void test_rotation(const tl_jwt_key *old_key, const char *set_path)
{
    tl_jwt_key *next = tl_jwt_rsa_new("it-auth-r2");
    char *old_set = tl_jwt_rsa_public_set(old_key),
         *next_set = next ? tl_jwt_rsa_public_set(next) : NULL;
    json_t *both = old_set ? json_loads(old_set, 0, NULL) : NULL;
    json_t *added = next_set ? json_loads(next_set, 0, NULL) : NULL;
    bool ok = both && added &&
              json_array_extend(json_object_get(both, "keys"), json_object_get(added, "keys")) == 0;
    char tmp[800];
    snprintf(tmp, sizeof tmp, "%s.tmp", set_path);
    ok = ok && json_dump_file(both, tmp, 0) == 0 && rename(tmp, set_path) == 0;
    CHECK(ok, "rotation: the set file now holds the old and the new key");
    json_decref(both);
    json_decref(added);
    free(old_set);
    free(next_set);
    if (!ok) {
        tl_jwt_key_free(next);
        return;
    }
    char *payload = tl_jwt_claims("54", "grace", now_s() + 600,
                                  ",\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"");
    char *auth = bearer(keep(tl_jwt_rs256(next, payload)));
    free(payload);
    pid_t producer_pid = prod.pid, consumer_pid = cons.pid;
    const struct {
        const char *who;
        int port;
    } services[] = {{"producer", prod.ws_port}, {"consumer", cons.ws_port}};
    for (size_t s = 0; s < 2; s++) {
        char body[2048];
        int st = 0, attempts = 0;
        /* The first handshake with the new kid asks for a refetch (off the loop thread) and is
         * refused; a retry a moment later finds the key. Bounded: 20 s. */
        for (int64_t end = now_s() + 20; now_s() < end; attempts++) {
            st = raw_handshake(services[s].port, "/chat/rotated-room", auth, body, sizeof body);
            if (st == 101) break;
            time_sleep_ms(250);
        }
        CHECK_INT(st, 101,
                  "rotation: the %s accepts a token signed with the new kid (after %d "
                  "attempts)",
                  services[s].who, attempts + 1);
    }
    CHECK(prod.pid == producer_pid && cons.pid == consumer_pid && kill(producer_pid, 0) == 0 &&
              kill(consumer_pid, 0) == 0,
          "rotation: without a restart of either service");
    free(auth);
    tl_jwt_key_free(next);
}

static void test_dev_tokens_off(void)
{
    long st;
    char *body = tl_http("GET", prod.ws_port, "/dev/token?name=alice", &st);
    CHECK_INT(st, 404, "without CHATFLOW_DEV_TOKENS, /dev/token is 404");
    free(body);
    json_t *cfg = producer_json("/config.json", &st);
    json_t *a = json_object_get(cfg, "auth");
    CHECK(json_is_true(json_object_get(a, "required")) &&
              json_is_false(json_object_get(a, "devTokens")) && !json_object_get(a, "tokenUrl"),
          "/config.json: tokens required, no development tokens");
    json_decref(cfg);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = s ? fread(s, 1, (size_t)n, f) : 0;
    fclose(f);
    if (s) s[got] = '\0';
    return s;
}

static void test_logs_clean(const char *tag)
{
    char path[800];
    const char *which[] = {"producer", "consumer"};
    for (int w = 0; w < 2; w++) {
        snprintf(path, sizeof path, "%s/%s-%s.log", env.log_dir, which[w], tag);
        char *log = slurp(path);
        CHECK(log != NULL, "%s log %s readable", which[w], path);
        if (!log) continue;
        size_t leaked = 0;
        for (size_t i = 0; i < n_minted; i++) {
            /* a token's signature part is what makes it usable: look for that and the whole */
            const char *sig = strrchr(minted[i], '.');
            if (strstr(log, minted[i]) || (sig && strlen(sig) > 16 && strstr(log, sig + 1)))
                leaked++;
        }
        CHECK_INT(leaked, 0, "no token (of %zu) appears in the %s log (%s)", n_minted, which[w],
                  tag);
        CHECK(!strstr(log, SECRET), "the HS256 secret does not appear in the %s log", which[w]);
        free(log);
    }
}

int main(void)
{
    tl_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!tl_consumer_env_init(&env, "auth", 3)) {
        CHECK(false, "test environment (database, queues)");
        return TEST_DONE();
    }
    ws = wsc_ctx_new();

    const char *hs_env[] = {"CHATFLOW_AUTH=on",
                            "CHATFLOW_AUTH_HS256_SECRET=" SECRET,
                            "CHATFLOW_AUTH_ISSUER=" ISSUER,
                            "CHATFLOW_AUTH_AUDIENCE=" AUDIENCE,
                            "CHATFLOW_AUTH_LEEWAY_S=1",
                            NULL};
    CHECK(start_pair("hs256", hs_env, "CHATFLOW_DEV_TOKENS=on"),
          "producer (with development tokens) and consumer started with HS256 tokens");
    if (prod.pid > 0 && cons.pid > 0) {
        test_refusals();
        test_end_to_end();
        test_rate_limit();
        test_expiry();
        test_dev_tokens();
        test_preflight();
    }
    stop_pair();
    test_logs_clean("hs256");

    tl_jwt_key *key = tl_jwt_rsa_new("it-auth-r1");
    char *set = key ? tl_jwt_rsa_public_set(key) : NULL;
    static char jwks_path[700], jwks_env[800];
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", env.log_dir);
    FILE *f = fopen(jwks_path, "w");
    if (f && set) fputs(set, f);
    if (f) fclose(f);
    snprintf(jwks_env, sizeof jwks_env, "CHATFLOW_AUTH_JWKS_URL=file://%s", jwks_path);
    const char *rs_env[] = {"CHATFLOW_AUTH=on",
                            jwks_env,
                            "CHATFLOW_AUTH_ISSUER=" ISSUER,
                            "CHATFLOW_AUTH_AUDIENCE=" AUDIENCE,
                            "CHATFLOW_AUTH_ANONYMOUS_READ=on", /* read by the consumer only */
                            "CHATFLOW_AUTH_JWKS_REFRESH_S=2",
                            NULL};
    CHECK(key && set && start_pair("jwks", rs_env, NULL),
          "producer and consumer started with a JWK set from file://");
    if (prod.pid > 0 && cons.pid > 0) {
        test_jwks(key);
        test_anonymous_read(key);
        test_rotation(key, jwks_path);
        test_dev_tokens_off();
    }
    stop_pair();
    test_logs_clean("jwks");
    free(set);
    tl_jwt_key_free(key);

    for (size_t i = 0; i < n_minted; i++) free(minted[i]);
    wsc_ctx_free(ws);
    tl_consumer_env_done(&env);
    curl_global_cleanup();
    return TEST_DONE();
}
