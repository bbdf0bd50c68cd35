/* test_lb_watch — the DescribeTargetHealth request body and the reading of its answer: the
 * target's own TargetHealth state, never another member's or an override's. */
/* test-passes: asan */
#include <stdlib.h>

#include "lb_watch.h"
#include "testlib.h"

static const char *ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/"
                         "chatflow-producer/73e2d6bc24d8a067";

/* An answer in the shape ELBv2 sends, one member per (ip, port, state). */
static char *answer(const char *members)
{
    char *xml = NULL;
    if (asprintf(&xml,
                 "<DescribeTargetHealthResponse "
                 "xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\n"
                 "  <DescribeTargetHealthResult>\n    <TargetHealthDescriptions>%s"
                 "</TargetHealthDescriptions>\n  </DescribeTargetHealthResult>\n"
                 "  <ResponseMetadata><RequestId>1549581b</RequestId></ResponseMetadata>\n"
                 "</DescribeTargetHealthResponse>\n",
                 members) < 0)
        return NULL;
    return xml;
}

static char *member(const char *ip, int port, const char *state)
{
    char *m = NULL;
    if (asprintf(&m,
                 "<member><HealthCheckPort>9090</HealthCheckPort>"
                 "<AdministrativeOverride><State>no_override</State>"
                 "<Reason>AdministrativeOverride.NoOverride</Reason></AdministrativeOverride>"
                 "<TargetHealth><State>%s</State><Reason>Target.DeregistrationInProgress</Reason>"
                 "</TargetHealth><Target><Port>%d</Port><Id>%s</Id>"
                 "<AvailabilityZone>us-east-1a</AvailabilityZone></Target></member>",
                 state, port, ip) < 0)
        return NULL;
    return m;
}

static void test_body(void)
{
    char *body = lb_describe_body(ARN, "10.0.1.7", 8080);
    CHECK_STR(body,
              "Action=DescribeTargetHealth&Version=2015-12-01&TargetGroupArn="
              "arn%3Aaws%3Aelasticloadbalancing%3Aus-east-1%3A123456789012%3Atargetgroup%2F"
              "chatflow-producer%2F73e2d6bc24d8a067&Targets.member.1.Id=10.0.1.7"
              "&Targets.member.1.Port=8080",
              "the form body names the action, the version, the group (encoded) and one target");
    free(body);
}

static void check_state(const char *members, const char *ip, int port, const char *want,
                        const char *what)
{
    char *xml = answer(members), state[32] = "", err[256] = "";
    bool ok = lb_parse_target_state(xml, ip, port, state, sizeof state, err, sizeof err);
    if (want)
        CHECK(ok && strcmp(state, want) == 0, "%s: %s (got %s; %s)", what, want, state, err);
    else
        CHECK(!ok && err[0], "%s: refused (%s)", what, err);
    free(xml);
}

static void test_states(void)
{
    const char *states[] = {"initial",    "healthy",  "unhealthy",
                            "unused",     "draining", "unhealthy.draining",
                            "unavailable"};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        char *m = member("10.0.1.7", 8080, states[i]);
        check_state(m, "10.0.1.7", 8080, states[i], "the target's TargetHealth state");
        free(m);
    }
    CHECK(lb_state_is_draining("draining") && lb_state_is_draining("unhealthy.draining"),
          "draining and unhealthy.draining are a drain");
    CHECK(!lb_state_is_draining("healthy") && !lb_state_is_draining("unused") &&
              !lb_state_is_draining("initial") && !lb_state_is_draining(""),
          "healthy, unused (deregistered), initial are not");
}

static void test_which_target(void)
{
    char *other_ip = member("10.0.1.8", 8080, "draining");
    char *other_port = member("10.0.1.7", 8081, "draining");
    char *mine = member("10.0.1.7", 8080, "healthy");
    char members[4096];
    snprintf(members, sizeof members, "%s%s%s", other_ip, other_port, mine);
    check_state(members, "10.0.1.7", 8080, "healthy",
                "among other targets, the one with this address and port");
    snprintf(members, sizeof members, "%s%s", other_ip, other_port);
    check_state(members, "10.0.1.7", 8080, NULL, "an answer without this target");
    check_state("", "10.0.1.7", 8080, NULL, "an empty description list");
    free(other_ip);
    free(other_port);
    free(mine);
}

static void test_errors(void)
{
    char state[32], err[256] = "";
    const char *error_doc =
        "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">"
        "<Error><Type>Sender</Type><Code>TargetGroupNotFound</Code>"
        "<Message>Target groups 'arn:...' not found</Message></Error>"
        "<RequestId>e2b7a8c0</RequestId></ErrorResponse>";
    bool ok =
        lb_parse_target_state(error_doc, "10.0.1.7", 8080, state, sizeof state, err, sizeof err);
    CHECK(!ok && strstr(err, "TargetGroupNotFound") && strstr(err, "not found"),
          "an error document is reported with its code and message (%s)", err);
    ok = lb_parse_target_state("<html>bad gateway</html>", "10.0.1.7", 8080, state, sizeof state,
                               err, sizeof err);
    CHECK(!ok && err[0], "a page that is not an answer is refused (%s)", err);
    ok = lb_parse_target_state("", "10.0.1.7", 8080, state, sizeof state, err, sizeof err);
    CHECK(!ok, "an empty answer is refused");
    char *cut = answer("<member><TargetHealth><State>draining</State></TargetHealth><Target>"
                       "<Port>8080</Port><Id>10.0.1.7");
    ok = lb_parse_target_state(cut, "10.0.1.7", 8080, state, sizeof state, err, sizeof err);
    CHECK(!ok, "a member cut short is not read (%s)", err);
    free(cut);
}

int main(void)
{
    test_body();
    test_states();
    test_which_target();
    test_errors();
    return TEST_DONE();
}
