/*
 * config — every setting from the environment, with command-line overrides.
 *
 * Contract:
 *  - A service describes its settings as a table of config_option, each bound to a field of its
 *    own settings struct by offset. config_load() applies, in order: the default, the
 *    environment variable, then "--flag value" / "--flag=value" from argv.
 *  - Integers are checked against [min, max]; strings against an optional list of choices
 *    ("a|b|c"); booleans accept 1/0/true/false/yes/no/on/off. A bad value stops start-up:
 *    config_load() returns CONFIG_ERROR with err naming the variable (and the flag), the value
 *    given and the accepted range, e.g.
 *      "CHATFLOW_WS_PORT (--ws-port): \"70000\" is out of range 1..65535".
 *  - "--help" returns CONFIG_HELP after printing every setting with its default and meaning;
 *    "--help-markdown" prints the same as a Markdown table (the README's table is checked against
 *    it by a test). Unknown flags are an error; positional arguments are an error unless the
 *    service reads them itself from *argc/argv after config_load() (which removes what it used).
 *  - String fields are char arrays of the size given in the option; values longer are an error.
 *  - The tables are static data; config_load() writes only into the target struct.
 */
#ifndef CHATFLOW_CONFIG_H
#define CHATFLOW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "room.h"

typedef enum { CONFIG_INT, CONFIG_STRING, CONFIG_BOOL } config_type;

typedef struct {
    const char *env;  /* "CHATFLOW_WS_PORT" */
    const char *flag; /* "ws-port" (used as --ws-port) */
    config_type type;
    const char *default_value; /* as text, "" for empty */
    long long min, max;        /* CONFIG_INT */
    const char *choices;       /* CONFIG_STRING: "a|b|c", or NULL for any */
    size_t offset;             /* offsetof(settings struct, field) */
    size_t size;               /* CONFIG_STRING: sizeof the char array */
    const char *help;
} config_option;

/* Field types: CONFIG_INT -> long long, CONFIG_BOOL -> bool, CONFIG_STRING -> char[size]. */
#define CONFIG_OPT_INT(env, flag, type, field, def, lo, hi, help)        \
    {                                                                    \
        env, flag, CONFIG_INT, def, lo, hi, NULL, offsetof(type, field), \
            sizeof(((type *)0)->field), help                             \
    }
#define CONFIG_OPT_STR(env, flag, type, field, def, choices, help)           \
    {                                                                        \
        env, flag, CONFIG_STRING, def, 0, 0, choices, offsetof(type, field), \
            sizeof(((type *)0)->field), help                                 \
    }
#define CONFIG_OPT_BOOL(env, flag, type, field, def, help)              \
    {                                                                   \
        env, flag, CONFIG_BOOL, def, 0, 1, NULL, offsetof(type, field), \
            sizeof(((type *)0)->field), help                            \
    }

typedef enum { CONFIG_OK = 0, CONFIG_HELP, CONFIG_ERROR } config_result;

config_result config_load(const config_option *opts, size_t n_opts, void *target,
                          const char *program, const char *summary, int *argc, char **argv,
                          char *err, size_t err_len);
void config_print_help(FILE *out, const config_option *opts, size_t n_opts, const char *program,
                       const char *summary);
void config_print_markdown(FILE *out, const config_option *opts, size_t n_opts);

/*
 * Settings both services share, embedded in each service's settings struct as `common`.
 * CONFIG_COMMON_OPTIONS(type) expands to their table entries for a struct `type` that has a
 * member `struct chatflow_common_settings common`.
 */
struct chatflow_common_settings {
    char log_level[8];
    char log_format[8];
    char aws_region[32];
    char sqs_endpoint[256];
    char queue_prefix[64];
    char dlq_name[96];
    long long queue_shards;
    char admin_bind[64];
    char server_id[64];
    long long sqs_connect_timeout_ms;
    long long sqs_request_timeout_ms;
    /* Identity tokens (auth.h): off, or on with a shared secret and/or a key set URL. */
    char auth[4];
    char auth_hs256_secret[512];
    char auth_jwks_url[512];
    char auth_issuer[256];
    char auth_audience[256];
    char auth_user_id_claim[64];
    long long auth_jwks_refresh_s;
    long long auth_leeway_s;
    /* The load balancer's drain, seen from the task (lb_watch.h). */
    char lb_target_group_arn[256];
    char lb_target_ip[64];
    long long lb_poll_s;
    char elb_endpoint[256];
};

#define CONFIG_COMMON_OPTIONS(type)                                                                \
    CONFIG_OPT_STR("CHATFLOW_LOG_LEVEL", "log-level", type, common.log_level, "info",              \
                   "debug|info|warn|error", "Lowest level logged."),                               \
        CONFIG_OPT_STR("CHATFLOW_LOG_FORMAT", "log-format", type, common.log_format, "text",       \
                       "text|json", "Log line format; json for CloudWatch."),                      \
        CONFIG_OPT_STR("AWS_REGION", "aws-region", type, common.aws_region, "us-east-1", NULL,     \
                       "AWS region of the SQS queues."),                                           \
        CONFIG_OPT_STR("AWS_ENDPOINT_URL_SQS", "sqs-endpoint", type, common.sqs_endpoint, "",      \
                       NULL, "SQS endpoint URL; empty means https://sqs.{region}.amazonaws.com."), \
        CONFIG_OPT_STR("CHATFLOW_QUEUE_PREFIX", "queue-prefix", type, common.queue_prefix,         \
                       "chatflow-room-", NULL,                                                     \
                       "Queue name prefix; shard s is the queue <prefix><s>.fifo."),               \
        CONFIG_OPT_STR("CHATFLOW_DLQ_NAME", "dlq-name", type, common.dlq_name,                     \
                       "chatflow-db-dlq.fifo", NULL,                                               \
                       "Dead-letter queue for messages that cannot be stored."),                   \
        CONFIG_OPT_INT("CHATFLOW_QUEUE_SHARDS", "queue-shards", type, common.queue_shards, "20",   \
                       1, ROOM_SHARDS_MAX,                                                         \
                       "FIFO queues the rooms are spread over (room.h); the same on every task."), \
        CONFIG_OPT_STR("CHATFLOW_ADMIN_BIND", "admin-bind", type, common.admin_bind, "0.0.0.0",    \
                       NULL, "Address the admin HTTP server (metrics, health) binds to."),         \
        CONFIG_OPT_STR("CHATFLOW_SERVER_ID", "server-id", type, common.server_id, "", NULL,        \
                       "Identity written into each message; empty means the host name."),          \
        CONFIG_OPT_INT("CHATFLOW_SQS_CONNECT_TIMEOUT_MS", "sqs-connect-timeout-ms", type,          \
                       common.sqs_connect_timeout_ms, "2000", 100, 60000, "SQS connect timeout."), \
        CONFIG_OPT_INT("CHATFLOW_SQS_REQUEST_TIMEOUT_MS", "sqs-request-timeout-ms", type,          \
                       common.sqs_request_timeout_ms, "10000", 100, 120000,                        \
                       "SQS request timeout (long polls add their wait)."),                        \
        CONFIG_OPT_STR("CHATFLOW_AUTH", "auth", type, common.auth, "off", "off|on",                \
                       "Identity tokens (JWT) on every WebSocket handshake and the room API."),    \
        CONFIG_OPT_STR("CHATFLOW_AUTH_HS256_SECRET", "auth-hs256-secret", type,                    \
                       common.auth_hs256_secret, "", NULL,                                         \
                       "Shared secret (32+ bytes) for HS256 tokens; never logged."),               \
        CONFIG_OPT_STR("CHATFLOW_AUTH_JWKS_URL", "auth-jwks-url", type, common.auth_jwks_url, "",  \
                       NULL, "JWK set for RS256/ES256: file://, https:// or loopback http://."),   \
        CONFIG_OPT_INT("CHATFLOW_AUTH_JWKS_REFRESH_S", "auth-jwks-refresh-s", type,                \
                       common.auth_jwks_refresh_s, "60", 1, 86400,                                 \
                       "A token with an unknown kid refetches the JWK set at most this often."),   \
        CONFIG_OPT_STR("CHATFLOW_AUTH_ISSUER", "auth-issuer", type, common.auth_issuer, "", NULL,  \
                       "Required token iss; empty: not checked."),                                 \
        CONFIG_OPT_STR("CHATFLOW_AUTH_AUDIENCE", "auth-audience", type, common.auth_audience, "",  \
                       NULL, "Required token aud; empty: tokens naming an audience are refused."), \
        CONFIG_OPT_STR("CHATFLOW_AUTH_USER_ID_CLAIM", "auth-user-id-claim", type,                  \
                       common.auth_user_id_claim, "sub", NULL,                                     \
                       "Token claim holding the ChatFlow userId (e.g. custom:chatflow_user_id)."), \
        CONFIG_OPT_INT("CHATFLOW_AUTH_LEEWAY_S", "auth-leeway-s", type, common.auth_leeway_s,      \
                       "30", 0, 600, "Clock skew allowed on token exp and nbf, in seconds."),      \
        CONFIG_OPT_STR("CHATFLOW_LB_TARGET_GROUP_ARN", "lb-target-group-arn", type,                \
                       common.lb_target_group_arn, "", NULL,                                       \
                       "Target group of the WebSocket port: when it drains this task, clients "    \
                       "are closed 1001 to reconnect elsewhere; empty: not watched."),             \
        CONFIG_OPT_STR("CHATFLOW_LB_TARGET_IP", "lb-target-ip", type, common.lb_target_ip, "",     \
                       NULL, "This task's address in that group; empty: from ECS task metadata."), \
        CONFIG_OPT_INT("CHATFLOW_LB_POLL_S", "lb-poll-s", type, common.lb_poll_s, "5", 1, 60,      \
                       "How often the target's health is read (DescribeTargetHealth)."),           \
        CONFIG_OPT_STR(                                                                            \
            "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2", "elb-endpoint", type,                    \
            common.elb_endpoint, "", NULL,                                                         \
            "ELBv2 endpoint URL; empty: https://elasticloadbalancing.{region}.amazonaws.com.")

/* Checks cross-field rules of the common settings (auth on needs a secret or a key set URL), fills
 * server_id with
 * the host name when empty, and applies the log settings. false with err set on a bad value. */
bool config_common_finish(struct chatflow_common_settings *c, char *err, size_t err_len);

#endif
