/* test_config — defaults, environment, flags, every validation rule, help output, common finish. */
/* test-passes: asan */
#include "config.h"
#include "testlib.h"

#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct test_settings {
    long long port;
    char mode[8];
    bool verbose;
    char name[6];
    struct chatflow_common_settings common;
};

static const config_option options[] = {
    CONFIG_OPT_INT("T_PORT", "port", struct test_settings, port, "8080", 1, 65535,
                   "Listening port."),
    CONFIG_OPT_STR("T_MODE", "mode", struct test_settings, mode, "fast", "fast|safe|a|b",
                   "Run mode."),
    CONFIG_OPT_BOOL("T_VERBOSE", "verbose", struct test_settings, verbose, "false",
                    "Chatty output."),
    CONFIG_OPT_STR("T_NAME", "name", struct test_settings, name, "", NULL, "Short name."),
    CONFIG_COMMON_OPTIONS(struct test_settings),
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static const char *const our_env[] = {"T_PORT",
                                      "T_MODE",
                                      "T_VERBOSE",
                                      "T_NAME",
                                      "CHATFLOW_QUEUE_SHARDS",
                                      "CHATFLOW_LOG_LEVEL",
                                      "CHATFLOW_SERVER_ID"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof our_env / sizeof our_env[0]; i++) unsetenv(our_env[i]);
}

static char err[512];
static struct test_settings s;
static char *argv_buf[16];
static int argc_out;

/* Loads with the given arguments (NULL-terminated list after the program name). */
static config_result load(const char *const *args)
{
    argc_out = 0;
    argv_buf[argc_out++] = "prog";
    for (; args && *args; args++) argv_buf[argc_out++] = (char *)*args;
    argv_buf[argc_out] = NULL;
    memset(&s, 0x55, sizeof s);
    err[0] = '\0';
    return config_load(options, N_OPTIONS, &s, "prog", "A test program.", &argc_out, argv_buf, err,
                       sizeof err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void)
{
    clear_env();
    config_result r = load(NULL);
    CHECK_INT(r, CONFIG_OK, "defaults load");
    CHECK_INT(s.port, 8080, "int default");
    CHECK_STR(s.mode, "fast", "string default");
    CHECK(!s.verbose, "bool default false");
    CHECK_STR(s.name, "", "empty string default");
    CHECK_INT(s.common.queue_shards, 20, "common queue shards default (the 20 queues of old)");
    CHECK_STR(s.common.queue_prefix, "chatflow-room-", "common queue prefix default");
    CHECK_INT(s.common.sqs_request_timeout_ms, 10000, "common request timeout default");
    CHECK_INT(argc_out, 1, "argc keeps only the program name");
}

static void test_env_then_flags(void)
{
    clear_env();
    setenv("T_PORT", "9000", 1);
    setenv("T_MODE", "safe", 1);
    setenv("T_VERBOSE", "YES", 1);
    config_result r = load(NULL);
    CHECK_INT(r, CONFIG_OK, "environment loads");
    CHECK_INT(s.port, 9000, "env overrides int default");
    CHECK_STR(s.mode, "safe", "env overrides string default");
    CHECK(s.verbose, "env bool YES (case-insensitive)");

    r = load(ARGS("--port", "7000", "--mode=a", "--verbose=off"));
    CHECK_INT(r, CONFIG_OK, "flags load");
    CHECK_INT(s.port, 7000, "--flag value overrides env");
    CHECK_STR(s.mode, "a", "--flag=value overrides env");
    CHECK(!s.verbose, "--verbose=off");

    r = load(ARGS("--port=1", "--port", "2"));
    CHECK_INT(s.port, 2, "last flag wins");

    clear_env();
    r = load(ARGS("--verbose", "--port", "3"));
    CHECK(r == CONFIG_OK && s.verbose && s.port == 3, "bare boolean flag means true");
    r = load(ARGS("--verbose", "0"));
    CHECK(r == CONFIG_OK && !s.verbose, "boolean flag takes a following boolean word");

    r = load(ARGS("first", "--port", "5", "second", "--", "--not-a-flag"));
    CHECK_INT(r, CONFIG_OK, "positional arguments are left for the service");
    CHECK_INT(argc_out, 4, "argc counts program + 3 positionals");
    CHECK(argc_out == 4 && strcmp(argv_buf[1], "first") == 0 &&
              strcmp(argv_buf[2], "second") == 0 && strcmp(argv_buf[3], "--not-a-flag") == 0 &&
              argv_buf[4] == NULL,
          "used flags removed, positionals kept in order, '--' ends options");
}

static void test_int_rules(void)
{
    clear_env();
    setenv("T_PORT", "70000", 1);
    config_result r = load(NULL);
    CHECK_INT(r, CONFIG_ERROR, "out-of-range env is an error");
    CHECK_STR(err, "T_PORT (--port): \"70000\" is out of range 1..65535",
              "range error names variable, flag, value, range");

    clear_env();
    r = load(ARGS("--port", "0"));
    CHECK_INT(r, CONFIG_ERROR, "below range");
    CHECK_STR(err, "T_PORT (--port): \"0\" is out of range 1..65535", "below-range message");
    r = load(ARGS("--port=65535"));
    CHECK(r == CONFIG_OK && s.port == 65535, "upper bound is inclusive");
    r = load(ARGS("--port=12abc"));
    CHECK_STR(err, "T_PORT (--port): \"12abc\" is not an integer (range 1..65535)",
              "trailing garbage refused");
    r = load(ARGS("--port="));
    CHECK_STR(err, "T_PORT (--port): \"\" is not an integer (range 1..65535)",
              "empty integer refused");
    r = load(ARGS("--port", " 80"));
    CHECK_INT(r, CONFIG_ERROR, "leading space refused");
    r = load(ARGS("--port", "99999999999999999999999"));
    CHECK_STR(err, "T_PORT (--port): \"99999999999999999999999\" is out of range 1..65535",
              "overflow reported as out of range");
    r = load(ARGS("--port"));
    CHECK_INT(r, CONFIG_ERROR, "missing value is an error");
    CHECK_STR(err, "T_PORT (--port): missing value after --port", "missing value message");
}

static void test_string_rules(void)
{
    clear_env();
    config_result r = load(ARGS("--mode", "turbo"));
    CHECK_INT(r, CONFIG_ERROR, "value outside choices is an error");
    CHECK_STR(err, "T_MODE (--mode): \"turbo\" is not one of fast|safe|a|b", "choices message");
    r = load(ARGS("--mode", "saf"));
    CHECK_INT(r, CONFIG_ERROR, "a prefix of a choice is not a choice");
    r = load(ARGS("--mode", "b"));
    CHECK(r == CONFIG_OK && strcmp(s.mode, "b") == 0, "last choice accepted");
    r = load(ARGS("--name", "abcde"));
    CHECK(r == CONFIG_OK && strcmp(s.name, "abcde") == 0, "string of size-1 characters fits");
    r = load(ARGS("--name", "abcdef"));
    CHECK_INT(r, CONFIG_ERROR, "string too long for its field");
    CHECK_STR(err, "T_NAME (--name): \"abcdef\" is too long (at most 5 characters)",
              "length message");
    setenv("CHATFLOW_LOG_LEVEL", "loud", 1);
    r = load(NULL);
    CHECK_STR(err, "CHATFLOW_LOG_LEVEL (--log-level): \"loud\" is not one of debug|info|warn|error",
              "common option validated from the environment");
}

static void test_bool_rules(void)
{
    clear_env();
    const char *truthy[] = {"1", "true", "yes", "on", "TRUE", "On"};
    const char *falsy[] = {"0", "false", "no", "off", "False", "NO"};
    int good = 0;
    for (size_t i = 0; i < 6; i++) {
        setenv("T_VERBOSE", truthy[i], 1);
        good += load(NULL) == CONFIG_OK && s.verbose;
        setenv("T_VERBOSE", falsy[i], 1);
        good += load(NULL) == CONFIG_OK && !s.verbose;
    }
    CHECK_INT(good, 12, "every boolean spelling parses");
    setenv("T_VERBOSE", "maybe", 1);
    config_result r = load(NULL);
    CHECK_INT(r, CONFIG_ERROR, "bad boolean is an error");
    CHECK_STR(err,
              "T_VERBOSE (--verbose): \"maybe\" is not a boolean (1/0/true/false/yes/no/on/off)",
              "boolean message");
}

static void test_unknown_flags(void)
{
    clear_env();
    config_result r = load(ARGS("--prot", "80"));
    CHECK_INT(r, CONFIG_ERROR, "unknown flag is an error");
    CHECK_STR(err, "unknown option --prot (see --help)", "unknown flag message");
    r = load(ARGS("--prot=80"));
    CHECK_STR(err, "unknown option --prot (see --help)", "unknown flag with = names the flag only");
    r = load(ARGS("-p"));
    CHECK_STR(err, "unknown option -p (see --help)", "single-dash flag is unknown");
}

/* Runs config_load with --help or --help-markdown, capturing what it prints on stdout. */
static char *capture_help(const char *flag, config_result *r)
{
    static char out[16384];
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fd, STDOUT_FILENO);
    setenv("T_PORT", "not-a-number", 1); /* help still works with a bad environment */
    *r = load(ARGS(flag));
    unsetenv("T_PORT");
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
    return out;
}

static void test_help(void)
{
    config_result r;
    char *out = capture_help("--help", &r);
    CHECK_INT(r, CONFIG_HELP, "--help returns CONFIG_HELP");
    int all = 1;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char flag[96];
        snprintf(flag, sizeof flag, "--%s ", options[i].flag);
        if (!strstr(out, flag) || !strstr(out, options[i].env) || !strstr(out, options[i].help)) {
            all = 0;
            NOTE("help lacks %s", options[i].flag);
        }
    }
    CHECK(all, "--help names every flag, variable and meaning");
    CHECK(strstr(out, "default \"8080\"") && strstr(out, "--port 1..65535"),
          "--help shows default and range");
    CHECK(strstr(out, "--mode fast|safe|a|b") != NULL, "--help shows choices");
    CHECK(strstr(out, "A test program.") != NULL, "--help shows the summary");

    out = capture_help("--help-markdown", &r);
    CHECK_INT(r, CONFIG_HELP, "--help-markdown returns CONFIG_HELP");
    CHECK(strncmp(out, "| Variable | Flag | Default | Meaning |\n| --- | --- | --- | --- |\n",
                  62) == 0,
          "Markdown table header");
    CHECK(strstr(out, "| `T_PORT` | `--port` | `8080` | Listening port. Range 1..65535. |\n") !=
              NULL,
          "Markdown int row with range");
    CHECK(
        strstr(out,
               "| `T_MODE` | `--mode` | `fast` | Run mode. One of `fast`, `safe`, `a`, `b`. |\n") !=
            NULL,
        "Markdown string row with choices");
    CHECK(strstr(out, "| `T_NAME` | `--name` | (empty) | Short name. |\n") != NULL,
          "Markdown empty default");
    int rows = 0;
    for (char *p = out; (p = strchr(p, '\n')) != NULL; p++) rows++;
    CHECK_INT(rows, (int)N_OPTIONS + 2, "one Markdown row per setting");
}

static void test_common_finish(void)
{
    clear_env();
    setenv("CHATFLOW_QUEUE_SHARDS", "0", 1);
    config_result r = load(NULL);
    CHECK(r == CONFIG_ERROR && strstr(err, "CHATFLOW_QUEUE_SHARDS"), "0 queue shards refused (%s)",
          err);
    clear_env();
    setenv("CHATFLOW_QUEUE_SHARDS", "1001", 1);
    r = load(NULL);
    CHECK(r == CONFIG_ERROR, "more than 1000 queue shards refused (%s)", err);

    clear_env();
    load(ARGS("--queue-shards", "5", "--log-level", "warn"));
    bool ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(ok && s.common.queue_shards == 5, "--queue-shards 5 is taken (%s)", err);
    char host[256] = "";
    gethostname(host, sizeof host);
    CHECK_STR(s.common.server_id, host, "empty server id becomes the host name");

    load(ARGS("--server-id", "node-7"));
    ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(ok && strcmp(s.common.server_id, "node-7") == 0, "explicit server id kept");

    load(NULL);
    strcpy(s.common.log_format, "xml"); /* only reachable by bypassing the table */
    ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(!ok && strstr(err, "\"xml\"") != NULL,
          "a log setting log_init refuses is an error naming it");

    load(ARGS("--auth", "on"));
    CHECK(strcmp(s.common.auth, "on") == 0 && s.common.auth_leeway_s == 30,
          "--auth on taken, leeway defaults to 30 s");
    ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(!ok && strstr(err, "CHATFLOW_AUTH_HS256_SECRET") && strstr(err, "CHATFLOW_AUTH_JWKS_URL"),
          "auth on without a secret or a key set URL is an error naming both (%s)", err);
    load(ARGS("--auth", "on", "--auth-jwks-url", "file:///keys.json"));
    ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(ok, "auth on with a key set URL is accepted (%s)", err);
    CHECK(load(ARGS("--auth", "yes")) == CONFIG_ERROR, "--auth takes off|on only");
    clear_env();
}

/* The load balancer watch (lb_watch.h): a target group ARN needs the task's address. */
static void test_lb_watch_settings(void)
{
    clear_env();
    unsetenv("ECS_CONTAINER_METADATA_URI_V4");
    load(NULL);
    CHECK(config_common_finish(&s.common, err, sizeof err) && !s.common.lb_target_group_arn[0] &&
              s.common.lb_poll_s == 5,
          "not watched by default, polled every 5 s when it is (%s)", err);
    const char *arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/0123";
    load(ARGS("--lb-target-group-arn", "chatflow-producer"));
    bool ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(!ok && strstr(err, "CHATFLOW_LB_TARGET_GROUP_ARN") && strstr(err, "not an ARN"),
          "a target group name instead of its ARN is refused (%s)", err);
    load(ARGS("--lb-target-group-arn", arn));
    ok = config_common_finish(&s.common, err, sizeof err);
    CHECK(!ok && strstr(err, "CHATFLOW_LB_TARGET_IP") &&
              strstr(err, "ECS_CONTAINER_METADATA_URI_V4"),
          "an ARN with no address and no task metadata is refused, naming both sources (%s)", err);
    load(ARGS("--lb-target-group-arn", arn, "--lb-target-ip", "10.0.1.7"));
    CHECK(config_common_finish(&s.common, err, sizeof err), "an ARN with an address is taken (%s)",
          err);
    setenv("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/abc", 1);
    load(ARGS("--lb-target-group-arn", arn));
    CHECK(config_common_finish(&s.common, err, sizeof err),
          "an ARN with the task metadata endpoint set is taken (%s)", err);
    unsetenv("ECS_CONTAINER_METADATA_URI_V4");
    CHECK(load(ARGS("--lb-poll-s", "0")) == CONFIG_ERROR, "a poll interval below 1 s is refused");
    clear_env();
}

int main(void)
{
    test_defaults();
    test_env_then_flags();
    test_int_rules();
    test_string_rules();
    test_bool_rules();
    test_unknown_flags();
    test_help();
    test_common_finish();
    test_lb_watch_settings();
    return TEST_DONE();
}
