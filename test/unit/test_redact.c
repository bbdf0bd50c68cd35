/* test_redact — URL userinfo, libpq keyword passwords, identity tokens (access_token=, Bearer)
 * and secret environment values never
 * survive redact_text();
 * ordinary text is left alone; the string never grows. */
/* test-passes: asan */
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "testlib.h"

static const char *redacted(const char *in)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s", in);
    redact_text(buf, sizeof buf);
    return buf;
}

int main(void)
{
    CHECK_STR(
        redacted("SQS endpoint \"https://admin:hunter22@sqs.example.com/q\" is not a valid URL"),
        "SQS endpoint \"https://***@sqs.example.com/q\" is not a valid URL",
        "userinfo of a URL masked");
    CHECK_STR(redacted("GetQueueUrl http://u:p@127.0.0.1:9/: Connection refused"),
              "GetQueueUrl http://***@127.0.0.1:9/: Connection refused",
              "short userinfo masked without growing");
    CHECK_STR(redacted("a http://x:pw1@h/ and https://y:pw2@k?q=a@b"),
              "a http://***@h/ and https://***@k?q=a@b",
              "every URL in the text; an @ after the authority is not userinfo");
    CHECK_STR(redacted("http://host:4566/000/queue mail me@example.com"),
              "http://host:4566/000/queue mail me@example.com",
              "URLs without userinfo and other @ are left alone");

    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIEXAMPLEKEY", 1);
    setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN", 1);
    CHECK_STR(redacted("CHATFLOW_SERVER_ID (--server-id): \"wJalrXUtnFEMIEXAMPLEKEY\" is too long"),
              "CHATFLOW_SERVER_ID (--server-id): \"***\" is too long",
              "the secret key's value masked wherever it appears");
    CHECK_STR(redacted("token=FwoGZXIvYXdzEXAMPLETOKEN;again FwoGZXIvYXdzEXAMPLETOKEN"),
              "token=***;again ***", "the session token's value masked, every occurrence");
    setenv("AWS_SESSION_TOKEN", "ab", 1);
    CHECK_STR(redacted("a tab stab"), "a tab stab",
              "values under 4 characters are not treated as secrets");

    CHECK_STR(
        redacted("connect: host=db port=5432 user=chatflow password=s3cretpw dbname=chatflow"),
        "connect: host=db port=5432 user=chatflow password=*** dbname=chatflow",
        "a libpq keyword password is masked");
    CHECK_STR(redacted("conninfo password='a s\\'ecret' dbname=x"),
              "conninfo password=*** dbname=x",
              "a quoted keyword password (with an escaped quote) is masked whole");
    CHECK_STR(redacted("password=ab dbname=x"), "password=** dbname=x",
              "a short one too, without growing");
    CHECK_STR(redacted("postgresql://chatflow:pgpass99@db.internal:5432/chatflow"),
              "postgresql://***@db.internal:5432/chatflow", "a DATABASE_URL's userinfo is masked");

    /* Identity tokens: the access_token query argument and a Bearer header value. */
    CHECK_STR(
        redacted("GET /chat/7?access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&since=5 "
                 "refused"),
        "GET /chat/7?access_token=***&since=5 refused",
        "an access_token query value masked up to the next argument");
    CHECK_STR(redacted("url /api/rooms/a/messages?limit=5&access_token=abc.def.ghi"),
              "url /api/rooms/a/messages?limit=5&access_token=***",
              "an access_token at the end of a URL masked");
    CHECK_STR(redacted("a access_token=x1 and access_token=\"tok.en.value\""),
              "a access_token=** and access_token=\"tok.en.value\"",
              "short values become stars of their own length; a quoted value is not a token "
              "argument");
    CHECK_STR(redacted("Authorization: Bearer eyJ0eXAi.eyJzdWIi.sig0123 sent"),
              "Authorization: Bearer *** sent", "a Bearer token masked");
    setenv("CHATFLOW_AUTH_HS256_SECRET", "hs256-shared-secret-0123456789abcdef", 1);
    CHECK_STR(redacted("CHATFLOW_AUTH_ISSUER: \"hs256-shared-secret-0123456789abcdef\" is bad"),
              "CHATFLOW_AUTH_ISSUER: \"***\" is bad", "the HS256 secret's value masked");

    char small[8] = "abcdefg";
    redact_text(small, sizeof small);
    CHECK_STR(small, "abcdefg", "a string filling its buffer exactly is handled");
    return TEST_DONE();
}
