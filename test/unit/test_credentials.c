/*
 * test_credentials — the provider chain against a credentials endpoint the test serves itself
 * (libmicrohttpd on 127.0.0.1, port picked by the kernel), through
 * AWS_CONTAINER_CREDENTIALS_FULL_URI.
 *
 * The RELATIVE_URI form targets the link-local ECS host, which a test cannot reach; it shares the
 * fetch code with FULL_URI, and only its URL validation is checked here.
 */
/* test-passes: asan tsan */
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "credentials.h"
#include "log.h"
#include "testlib.h"
#include "timeutil.h"

#define AUTH_TOKEN "test-auth-token-123"

typedef enum {
    SERVE_OK,
    SERVE_BAD_JSON,
    SERVE_NO_SECRET,
    SERVE_BAD_EXPIRATION,
    SERVE_HTTP_500
} serve_mode;

/* What the fake endpoint serves; changed by the test between requests under `lock`. */
static struct {
    pthread_mutex_t lock;
    serve_mode mode;
    char key_id[64];
    long expires_in_s;
    int delay_ms;
    int requests;
    int auth_failures;
    int in_flight, max_in_flight;
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static atomic_int gets_done;
static atomic_int gets_during_fetch;

static void serve(serve_mode mode, const char *key_id, long expires_in_s, int delay_ms)
{
    pthread_mutex_lock(&srv.lock);
    srv.mode = mode;
    snprintf(srv.key_id, sizeof srv.key_id, "%s", key_id);
    srv.expires_in_s = expires_in_s;
    srv.delay_ms = delay_ms;
    pthread_mutex_unlock(&srv.lock);
}

static int server_requests(void)
{
    pthread_mutex_lock(&srv.lock);
    int n = srv.requests;
    pthread_mutex_unlock(&srv.lock);
    return n;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");

    pthread_mutex_lock(&srv.lock);
    srv.requests++;
    bool auth_ok = auth && strcmp(auth, AUTH_TOKEN) == 0;
    if (!auth_ok) srv.auth_failures++;
    serve_mode mode = srv.mode;
    char key_id[64];
    snprintf(key_id, sizeof key_id, "%s", srv.key_id);
    long expires_in_s = srv.expires_in_s;
    int delay_ms = srv.delay_ms;
    if (++srv.in_flight > srv.max_in_flight) srv.max_in_flight = srv.in_flight;
    pthread_mutex_unlock(&srv.lock);

    int gets_before = atomic_load(&gets_done);
    if (delay_ms) usleep((useconds_t)delay_ms * 1000);
    if (atomic_load(&gets_done) > gets_before) atomic_fetch_add(&gets_during_fetch, 1);

    char expiration[ISO8601_BUF];
    time_format_iso8601(((int64_t)time(NULL) + expires_in_s) * 1000, expiration);
    char body[1024];
    unsigned status = 200;
    if (!auth_ok) {
        status = 401;
        snprintf(body, sizeof body, "{\"error\":\"bad authorization\"}");
    } else if (mode == SERVE_OK) {
        snprintf(body, sizeof body,
                 "{\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"secret-%s\",\"Token\":\"token-%s\","
                 "\"Expiration\":\"%s\",\"RoleArn\":\"arn:aws:iam::123456789012:role/task\"}",
                 key_id, key_id, key_id, expiration);
    } else if (mode == SERVE_BAD_JSON) {
        snprintf(body, sizeof body, "{\"AccessKeyId\":\"%s\", oops", key_id);
    } else if (mode == SERVE_NO_SECRET) {
        snprintf(body, sizeof body,
                 "{\"AccessKeyId\":\"%s\",\"Token\":\"t\",\"Expiration\":\"%s\"}", key_id,
                 expiration);
    } else if (mode == SERVE_BAD_EXPIRATION) {
        snprintf(body, sizeof body,
                 "{\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"s\",\"Token\":\"t\",\"Expiration\":"
                 "\"tomorrow\"}",
                 key_id);
    } else {
        status = 500;
        snprintf(body, sizeof body, "{\"error\":\"internal\"}");
    }
    pthread_mutex_lock(&srv.lock);
    srv.in_flight--;
    pthread_mutex_unlock(&srv.lock);
    return reply(conn, status, body);
}

static struct MHD_Daemon *server_start(int *port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL,
                         NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_END);
    if (!d) return NULL;
    *port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return d;
}

static void clear_env(void)
{
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
}

static void use_endpoint(int port)
{
    char uri[128];
    snprintf(uri, sizeof uri, "http://127.0.0.1:%d/v2/credentials/abc", port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", AUTH_TOKEN, 1);
}

static void test_no_source(void)
{
    char err[512] = "";
    clear_env();
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p == NULL, "no source configured: provider refused");
    CHECK(strstr(err, "AWS_ACCESS_KEY_ID") != NULL, "no source: error names the variables (%s)",
          err);
    credentials_provider_free(p);

    setenv("AWS_ACCESS_KEY_ID", "AKIDONLY", 1);
    p = credentials_provider_new(err, sizeof err);
    CHECK(p == NULL && strstr(err, "AWS_SECRET_ACCESS_KEY"),
          "key id without secret: clear error (%s)", err);
    credentials_provider_free(p);
    clear_env();
}

static void test_environment(int port)
{
    char err[512] = "";
    clear_env();
    use_endpoint(port); /* configured too, but the environment comes first */
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "envtoken", 1);
    int before = server_requests();
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p != NULL, "environment provider created (%s)", err);
    if (!p) return;
    CHECK_STR(credentials_source(p), "environment", "environment wins over ECS");
    aws_credentials c;
    CHECK(credentials_get(p, &c, err, sizeof err), "environment credentials read");
    CHECK_STR(c.access_key_id, "AKIDENV", "environment key id");
    CHECK_STR(c.secret_access_key, "envsecret", "environment secret");
    CHECK_STR(c.session_token, "envtoken", "environment session token");
    CHECK_INT(c.expiration, 0, "environment credentials do not expire");
    CHECK_INT(server_requests(), before,
              "ECS endpoint not contacted when the environment has keys");
    credentials_provider_free(p);
    clear_env();
}

static void test_first_fetch(int port)
{
    char err[512] = "";
    clear_env();
    use_endpoint(port);
    serve(SERVE_OK, "AKIDFIRST", 3600, 0);
    int before = server_requests();
    time_t now = time(NULL);
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p != NULL, "ECS provider created (%s)", err);
    if (!p) return;
    CHECK_STR(credentials_source(p), "ecs", "source is ecs");
    CHECK_INT(server_requests(), before + 1, "one fetch at creation");
    aws_credentials c;
    CHECK(credentials_get(p, &c, err, sizeof err), "ECS credentials read (%s)", err);
    CHECK_STR(c.access_key_id, "AKIDFIRST", "ECS key id");
    CHECK_STR(c.secret_access_key, "secret-AKIDFIRST", "ECS secret");
    CHECK_STR(c.session_token, "token-AKIDFIRST", "ECS token");
    CHECK(c.expiration >= now + 3599 && c.expiration <= now + 3602,
          "Expiration parsed (%lld s ahead)", (long long)(c.expiration - now));
    CHECK(credentials_get(p, &c, err, sizeof err), "second read");
    CHECK_INT(server_requests(), before + 1, "no refresh while more than 15 min remain");
    pthread_mutex_lock(&srv.lock);
    int auth_failures = srv.auth_failures;
    pthread_mutex_unlock(&srv.lock);
    CHECK_INT(auth_failures, 0, "server saw the authorization token on every request");
    credentials_provider_free(p);

    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong-token", 1);
    p = credentials_provider_new(err, sizeof err);
    CHECK(p == NULL && strstr(err, "401"),
          "wrong authorization token: refused with the HTTP status (%s)", err);
    credentials_provider_free(p);
    clear_env();
}

static void test_refresh(int port)
{
    char err[512] = "";
    clear_env();
    use_endpoint(port);
    serve(SERVE_OK, "AKIDOLD", 600, 0); /* 10 min left: inside the 15 min refresh window */
    int before = server_requests();
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p != NULL, "provider with short-lived credentials (%s)", err);
    if (!p) return;
    serve(SERVE_OK, "AKIDNEW", 3600, 0);
    aws_credentials c;
    CHECK(credentials_get(p, &c, err, sizeof err), "read near expiry (%s)", err);
    CHECK_INT(server_requests(), before + 2, "a second fetch happened because expiry was near");
    CHECK_STR(c.access_key_id, "AKIDNEW", "the refreshed key is returned");
    CHECK_STR(c.session_token, "token-AKIDNEW", "the refreshed token is returned");
    CHECK(credentials_get(p, &c, err, sizeof err), "read after refresh");
    CHECK_INT(server_requests(), before + 2, "fresh credentials are not fetched again");
    credentials_provider_free(p);
    clear_env();
}

static void test_endpoint_down(void)
{
    char err[512] = "";
    int port = 0;
    struct MHD_Daemon *d = server_start(&port);
    CHECK(d != NULL, "second credentials server started");
    if (!d) return;
    clear_env();
    use_endpoint(port);
    serve(SERVE_OK, "AKIDSHORT", 2, 0);
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p != NULL, "provider with credentials expiring in 2 s (%s)", err);
    MHD_stop_daemon(d);
    if (!p) return;
    aws_credentials c;
    bool ok = credentials_get(p, &c, err, sizeof err);
    CHECK(ok, "endpoint down before expiry: the old credentials are still returned (%s)",
          ok ? "" : err);
    CHECK_STR(c.access_key_id, "AKIDSHORT", "endpoint down: old key id kept");
    time_t expiry = c.expiration;
    while (time(NULL) <= expiry) time_sleep_ms(200);
    err[0] = '\0';
    ok = credentials_get(p, &c, err, sizeof err);
    CHECK(!ok, "endpoint down after expiry: credentials_get fails");
    CHECK(strstr(err, "expired") && strstr(err, "failed"),
          "after expiry: error names expiry and fetch failure (%s)", err);
    credentials_provider_free(p);
    clear_env();
}

static void expect_refused(int port, serve_mode mode, const char *want, const char *what)
{
    char err[512] = "";
    clear_env();
    use_endpoint(port);
    serve(mode, "AKIDBAD", 3600, 0);
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p == NULL, "%s: provider refused", what);
    CHECK(strstr(err, want) != NULL, "%s: error says \"%s\" (%s)", what, want, err);
    credentials_provider_free(p);
    clear_env();
}

static void test_bad_uris(void)
{
    char err[512] = "";
    clear_env();
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/creds", 1);
    credentials_provider *p = credentials_provider_new(err, sizeof err);
    CHECK(p == NULL && strstr(err, "https"), "plain http to a non-loopback host refused (%s)", err);
    credentials_provider_free(p);
    clear_env();
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/credentials", 1);
    p = credentials_provider_new(err, sizeof err);
    CHECK(p == NULL && strstr(err, "must start with '/'"), "relative URI without '/' refused (%s)",
          err);
    credentials_provider_free(p);
    clear_env();
}

/* Many readers while the credentials are always due for refresh: one fetch at a time, and the
 * readers keep going while it is in flight. Also the TSan target. */
#define READERS 6
#define READS 30

static credentials_provider *shared_provider;
static atomic_int read_failures;

static void *reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < READS; i++) {
        aws_credentials c;
        char err[512];
        if (!credentials_get(shared_provider, &c, err, sizeof err) ||
            strncmp(c.access_key_id, "AKIDCONC", 8) != 0)
            atomic_fetch_add(&read_failures, 1);
        atomic_fetch_add(&gets_done, 1);
        time_sleep_ms(5);
    }
    return NULL;
}

static void test_concurrent_refresh(int port)
{
    char err[512] = "";
    clear_env();
    use_endpoint(port);
    serve(SERVE_OK, "AKIDCONC", 600, 0);
    shared_provider = credentials_provider_new(err, sizeof err);
    CHECK(shared_provider != NULL, "provider for concurrent readers (%s)", err);
    if (!shared_provider) return;
    serve(SERVE_OK, "AKIDCONC2", 600, 100); /* still due for refresh; each fetch takes 100 ms */
    pthread_mutex_lock(&srv.lock);
    srv.max_in_flight = 0;
    int before = srv.requests;
    pthread_mutex_unlock(&srv.lock);

    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++) pthread_create(&t[i], NULL, reader, NULL);
    for (int i = 0; i < READERS; i++) pthread_join(t[i], NULL);

    pthread_mutex_lock(&srv.lock);
    int fetches = srv.requests - before, max_in_flight = srv.max_in_flight;
    pthread_mutex_unlock(&srv.lock);
    CHECK_INT(atomic_load(&read_failures), 0, "%d concurrent reads all returned credentials",
              READERS * READS);
    CHECK(fetches >= 1 && fetches < READERS * READS,
          "refreshes happened but not one per read (%d fetches)", fetches);
    CHECK_INT(max_in_flight, 1, "only one thread fetched at a time");
    CHECK(atomic_load(&gets_during_fetch) > 0,
          "readers got credentials while a fetch was in flight");
    credentials_provider_free(shared_provider);
    clear_env();
}

int main(void)
{
    log_init("error", "text"); /* the failures this test provokes are logged as errors on purpose */
    int port = 0;
    struct MHD_Daemon *d = server_start(&port);
    CHECK(d != NULL && port > 0, "credentials server listening on 127.0.0.1:%d", port);
    if (!d) return TEST_DONE();

    test_no_source();
    test_environment(port);
    test_first_fetch(port);
    test_refresh(port);
    test_endpoint_down();
    expect_refused(port, SERVE_BAD_JSON, "not JSON", "bad JSON");
    expect_refused(port, SERVE_NO_SECRET, "SecretAccessKey", "missing SecretAccessKey");
    expect_refused(port, SERVE_BAD_EXPIRATION, "Expiration", "unparseable Expiration");
    expect_refused(port, SERVE_HTTP_500, "HTTP 500", "endpoint answering 500");
    test_bad_uris();
    test_concurrent_refresh(port);

    MHD_stop_daemon(d);
    return TEST_DONE();
}
