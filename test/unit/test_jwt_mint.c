/* test_jwt_mint — HS256 tokens issued by common/jwt_mint.h pass the project's own verifier
 * (common/jwt.h) with every claim intact, and fail it under another secret or after exp. */
/* test-passes: asan */
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "jwt_mint.h"
#include "testlib.h"

#define NOW 1700000000LL
static const char SECRET[] = "mint-test-secret-0123456789-abcdefghijkl";
static const char OTHER[] = "another-secret-0123456789-abcdefghijklmn";

static int64_t fixed_now(void *ctx) { return *(const int64_t *)ctx; }
static int64_t now_value = NOW;

static jwt_verifier *verifier(const char *secret, const char *issuer, const char *audience)
{
    jwt_config cfg;
    jwt_config_init(&cfg);
    cfg.algs = JWT_ALG_HS256;
    cfg.hs256_secret = (const uint8_t *)secret;
    cfg.hs256_secret_len = strlen(secret);
    cfg.issuer = issuer;
    cfg.audience = audience;
    cfg.leeway_s = 0;
    cfg.now_s = fixed_now;
    cfg.now_ctx = &now_value;
    char err[160];
    jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof err);
    CHECK(v != NULL, "verifier: %s", v ? "built" : err);
    return v;
}

static jwt_error verify(const jwt_verifier *v, const char *token, jwt_claims *c)
{
    char reason[JWT_REASON_BUF];
    return jwt_verify(v, token, strlen(token), c, reason, sizeof reason);
}

static void test_round_trip(void)
{
    char err[160] = "";
    jwt_mint_claims mc = {.sub = "4242", .name = "alice", .iat = NOW, .exp = NOW + 60};
    char *token = jwt_mint_hs256(SECRET, strlen(SECRET), &mc, err, sizeof err);
    CHECK(token != NULL, "minted: %s", token ? "yes" : err);
    if (!token) return;
    jwt_verifier *v = verifier(SECRET, NULL, NULL);
    jwt_claims c;
    CHECK_INT(verify(v, token, &c), JWT_OK, "the project's verifier accepts the minted token");
    CHECK_STR(c.sub, "4242", "sub carried");
    CHECK_STR(c.username, "alice", "name carried");
    CHECK_INT(c.exp, NOW + 60, "exp carried");
    CHECK(!c.rooms_limited, "no rooms claim: every room");
    jwt_claims_free(&c);

    now_value = NOW + 60;
    CHECK_INT(verify(v, token, &c), JWT_EXPIRED, "refused once exp is reached");
    jwt_claims_free(&c);
    now_value = NOW;
    jwt_verifier_free(v);

    jwt_verifier *other = verifier(OTHER, NULL, NULL);
    CHECK_INT(verify(other, token, &c), JWT_BAD_SIGNATURE, "refused under another secret");
    jwt_claims_free(&c);
    jwt_verifier_free(other);
    free(token);
}

static void test_issuer_audience(void)
{
    char err[160] = "";
    jwt_mint_claims mc = {
        .sub = "7", .issuer = "chatflow-dev", .audience = "chat", .iat = NOW, .exp = NOW + 60};
    char *token = jwt_mint_hs256(SECRET, strlen(SECRET), &mc, err, sizeof err);
    CHECK(token != NULL, "minted with iss and aud");
    if (!token) return;
    jwt_verifier *v = verifier(SECRET, "chatflow-dev", "chat");
    jwt_claims c;
    CHECK_INT(verify(v, token, &c), JWT_OK, "iss and aud match the verifier's");
    CHECK_STR(c.username, "", "no name claim: empty username");
    jwt_claims_free(&c);
    jwt_verifier_free(v);
    jwt_verifier *wrong = verifier(SECRET, "someone-else", "chat");
    CHECK_INT(verify(wrong, token, &c), JWT_BAD_ISSUER, "another issuer is refused");
    jwt_claims_free(&c);
    jwt_verifier_free(wrong);
    free(token);
}

static void test_refusals(void)
{
    char err[160] = "";
    jwt_mint_claims mc = {.sub = "1", .iat = NOW, .exp = NOW + 60};
    char *t = jwt_mint_hs256("short-secret", 12, &mc, err, sizeof err);
    CHECK(t == NULL, "a secret under %d bytes is refused", JWT_HS256_MIN_SECRET);
    CHECK(strstr(err, "at least") != NULL, "the error says why: %s", err);
    CHECK(strstr(err, "short-secret") == NULL, "the error does not show the secret");
    free(t);
    mc.sub = "";
    t = jwt_mint_hs256(SECRET, strlen(SECRET), &mc, err, sizeof err);
    CHECK(t == NULL, "an empty subject is refused: %s", err);
    free(t);
    t = jwt_mint_hs256(SECRET, strlen(SECRET), NULL, err, sizeof err);
    CHECK(t == NULL, "no claims is refused");
    free(t);
}

int main(void)
{
    test_round_trip();
    test_issuer_audience();
    test_refusals();
    return TEST_DONE();
}
