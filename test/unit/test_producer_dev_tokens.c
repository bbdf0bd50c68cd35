/* test_producer_dev_tokens — the development token endpoint's logic (producer/dev_tokens.h) and
 * the settings rule that keeps it behind CHATFLOW_AUTH=on with an HS256 secret. */
/* test-passes: asan */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../producer/dev_tokens.h"
#include "../../producer/settings.h"
#include "jwt.h"
#include "testlib.h"

#define SECRET "dev-token-test-secret-0123456789-abcdefgh"
#define NOW 1700000000LL

static producer_settings_result load(producer_settings *s, char **argv, int argc, char *err,
                                     size_t len)
{
    return producer_settings_load(s, &argc, argv, err, len);
}

static void test_settings_rule(void)
{
    producer_settings s;
    char err[512];
    char *off[] = {"chatflow-producer", "--dev-tokens", "on", NULL};
    CHECK(load(&s, off, 3, err, sizeof err) == PRODUCER_SETTINGS_ERROR &&
              strstr(err, "CHATFLOW_DEV_TOKENS") && strstr(err, "CHATFLOW_AUTH"),
          "dev tokens with auth off are refused (%s)", err);
    char *jwks_only[] = {"chatflow-producer",
                         "--dev-tokens",
                         "on",
                         "--auth",
                         "on",
                         "--auth-jwks-url",
                         "file:///nonexistent/jwks.json",
                         NULL};
    CHECK(load(&s, jwks_only, 7, err, sizeof err) == PRODUCER_SETTINGS_ERROR &&
              strstr(err, "CHATFLOW_AUTH_HS256_SECRET"),
          "dev tokens without an HS256 secret are refused (%s)", err);
    char *ok[] = {"chatflow-producer",   "--dev-tokens", "on", "--auth", "on",
                  "--auth-hs256-secret", SECRET,         NULL};
    CHECK(load(&s, ok, 7, err, sizeof err) == PRODUCER_SETTINGS_OK && s.dev_tokens &&
              s.dev_token_ttl_s == 3600,
          "dev tokens with auth on and a secret load, ttl 3600 by default (%s)", err);
    char *dflt[] = {"chatflow-producer", NULL};
    CHECK(load(&s, dflt, 1, err, sizeof err) == PRODUCER_SETTINGS_OK && !s.dev_tokens,
          "dev tokens are off by default");
}

static dev_tokens *make(long long ttl, const char *issuer, const char *audience)
{
    producer_settings s;
    memset(&s, 0, sizeof s);
    s.dev_tokens = true;
    s.dev_token_ttl_s = ttl;
    snprintf(s.common.auth, sizeof s.common.auth, "on");
    snprintf(s.common.auth_hs256_secret, sizeof s.common.auth_hs256_secret, "%s", SECRET);
    snprintf(s.common.auth_issuer, sizeof s.common.auth_issuer, "%s", issuer);
    snprintf(s.common.auth_audience, sizeof s.common.auth_audience, "%s", audience);
    bool failed = true;
    dev_tokens *d = dev_tokens_new(&s, &failed);
    CHECK(d && !failed, "dev_tokens_new");
    return d;
}

static int64_t fixed_now(void *ctx) { return *(const int64_t *)ctx; }

static void test_issue(void)
{
    dev_tokens *d = make(120, "chatflow-dev", "chat-page");
    if (!d) return;
    char *body = NULL, reason[160];
    CHECK_INT(dev_tokens_issue(d, "alice", NULL, NOW, &body, reason, sizeof reason), 200,
              "a token for alice");
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    char want_id[16];
    snprintf(want_id, sizeof want_id, "%u", dev_tokens_user_id_for("alice"));
    CHECK_STR(json_string_value(json_object_get(j, "userId")), want_id,
              "alice's userId is derived from her name");
    CHECK_INT(json_integer_value(json_object_get(j, "expiresAt")), NOW + 120, "exp = now + ttl");
    CHECK_INT(json_integer_value(json_object_get(j, "ttlSeconds")), 120, "ttlSeconds");

    jwt_config cfg;
    jwt_config_init(&cfg);
    cfg.algs = JWT_ALG_HS256;
    cfg.hs256_secret = (const uint8_t *)SECRET;
    cfg.hs256_secret_len = strlen(SECRET);
    cfg.issuer = "chatflow-dev";
    cfg.audience = "chat-page";
    int64_t now = NOW;
    cfg.now_s = fixed_now;
    cfg.now_ctx = &now;
    char err[160];
    jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof err);
    const char *token = json_string_value(json_object_get(j, "token"));
    jwt_claims c;
    CHECK(v && token && jwt_verify(v, token, strlen(token), &c, reason, sizeof reason) == JWT_OK,
          "the token passes the services' verifier with the configured iss and aud");
    CHECK_STR(c.sub, want_id, "its sub is the userId");
    CHECK_STR(c.username, "alice", "its name is the login name");
    jwt_claims_free(&c);
    jwt_verifier_free(v);
    json_decref(j);
    free(body);

    CHECK(dev_tokens_user_id_for("alice") == dev_tokens_user_id_for("alice") &&
              dev_tokens_user_id_for("alice") != dev_tokens_user_id_for("bob"),
          "the derived userId is stable and differs between alice and bob");
    unsigned lo = 100001, hi = 0;
    char name[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "user%d", i);
        unsigned id = dev_tokens_user_id_for(name);
        lo = id < lo ? id : lo;
        hi = id > hi ? id : hi;
    }
    CHECK(lo >= 1 && hi <= 100000, "derived userIds stay in 1..100000 (%u..%u)", lo, hi);

    CHECK_INT(dev_tokens_issue(d, "bob", "42", NOW, &body, reason, sizeof reason), 200,
              "an explicit userId");
    CHECK(body && strstr(body, "\"userId\":\"42\""), "is the one in the token");
    free(body);

    static const struct {
        const char *name, *user_id, *why;
    } bad[] = {{"al", NULL, "name: must be 3-20"},
               {"", NULL, "name: must be 3-20"},
               {"alice!", NULL, "name: must be 3-20"},
               {"abcdefghijklmnopqrstu", NULL, "name: must be 3-20"},
               {"alice", "0", "userId: must be"},
               {"alice", "100001", "userId: must be"},
               {"alice", "-5", "userId: must be"},
               {"alice", "12a", "userId: must be"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        body = NULL;
        int st =
            dev_tokens_issue(d, bad[i].name, bad[i].user_id, NOW, &body, reason, sizeof reason);
        CHECK(st == 400 && !body && strstr(reason, bad[i].why), "name \"%s\" userId %s: 400 %s",
              bad[i].name, bad[i].user_id ? bad[i].user_id : "(none)", reason);
    }
    dev_tokens_free(d);

    producer_settings off;
    memset(&off, 0, sizeof off);
    bool failed = true;
    CHECK(dev_tokens_new(&off, &failed) == NULL && !failed, "off: no endpoint, not a failure");
}

int main(void)
{
    test_settings_rule();
    test_issue();
    return TEST_DONE();
}
