/*
 * config — see config.h for the contract.
 *
 * Hand-written rather than getopt_long: each setting has an environment variable and a flag
 * bound to the same table entry, values are validated with messages that name both, and the
 * same table prints --help and the README's Markdown table. getopt would still leave all of
 * that to us and would reorder argv behind our back.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Longest part of a bad value quoted back in an error message. */
#define QUOTE_MAX 80

static void fail(const config_option *o, const char *value, char *err, size_t err_len,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* "CHATFLOW_WS_PORT (--ws-port): \"70000\" " followed by the reason. */
static void fail(const config_option *o, const char *value, char *err, size_t err_len,
                 const char *fmt, ...)
{
    if (!err || err_len == 0) return;
    size_t value_len = strlen(value);
    int n = snprintf(err, err_len, "%s (--%s): \"%.*s%s\" ", o->env, o->flag, QUOTE_MAX, value,
                     value_len > QUOTE_MAX ? "..." : "");
    if (n < 0 || (size_t)n >= err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
    va_end(ap);
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = true, true;
        if (strcasecmp(s, no[i]) == 0) return *out = false, true;
    }
    return false;
}

/* choices is "a|b|c": is value exactly one of them? */
static bool is_choice(const char *choices, const char *value)
{
    size_t len = strlen(value);
    for (const char *p = choices; p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0) return true;
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

static bool apply_int(const config_option *o, void *field, const char *value, char *err,
                      size_t err_len)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    bool numeric = value[0] != '\0' && !isspace((unsigned char)value[0]) && end && *end == '\0';
    if (!numeric) {
        fail(o, value, err, err_len, "is not an integer (range %lld..%lld)", o->min, o->max);
        return false;
    }
    if (errno == ERANGE || v < o->min || v > o->max) {
        fail(o, value, err, err_len, "is out of range %lld..%lld", o->min, o->max);
        return false;
    }
    memcpy(field, &v, sizeof v);
    return true;
}

static bool apply_string(const config_option *o, void *field, const char *value, char *err,
                         size_t err_len)
{
    if (o->choices && !is_choice(o->choices, value)) {
        fail(o, value, err, err_len, "is not one of %s", o->choices);
        return false;
    }
    size_t len = strlen(value);
    if (o->size == 0 || len >= o->size) {
        fail(o, value, err, err_len, "is too long (at most %zu characters)",
             o->size ? o->size - 1 : 0);
        return false;
    }
    memcpy(field, value, len + 1);
    return true;
}

static bool apply_bool(const config_option *o, void *field, const char *value, char *err,
                       size_t err_len)
{
    bool v;
    if (!parse_bool(value, &v)) {
        fail(o, value, err, err_len, "is not a boolean (1/0/true/false/yes/no/on/off)");
        return false;
    }
    memcpy(field, &v, sizeof v);
    return true;
}

static bool apply_value(const config_option *o, void *target, const char *value, char *err,
                        size_t err_len)
{
    void *field = (char *)target + o->offset;
    switch (o->type) {
    case CONFIG_INT: return apply_int(o, field, value, err, err_len);
    case CONFIG_STRING: return apply_string(o, field, value, err, err_len);
    case CONFIG_BOOL: return apply_bool(o, field, value, err, err_len);
    }
    fail(o, value, err, err_len, "has an unknown option type");
    return false;
}

static const config_option *find_flag(const config_option *opts, size_t n_opts, const char *name,
                                      size_t len)
{
    for (size_t i = 0; i < n_opts; i++)
        if (strlen(opts[i].flag) == len && strncmp(opts[i].flag, name, len) == 0) return &opts[i];
    return NULL;
}

/* --help / --help-markdown win over everything else, even over bad environment values. */
static int help_requested(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
        if (strcmp(argv[i], "--help-markdown") == 0) return 2;
    }
    return 0;
}

static bool apply_defaults_and_env(const config_option *opts, size_t n_opts, void *target,
                                   char *err, size_t err_len)
{
    for (size_t i = 0; i < n_opts; i++) {
        if (!apply_value(&opts[i], target, opts[i].default_value, err, err_len)) return false;
        const char *env = getenv(opts[i].env);
        if (env && !apply_value(&opts[i], target, env, err, err_len)) return false;
    }
    return true;
}

/* Applies the flags and compacts what is not a flag (positional arguments) to the front. */
static bool apply_flags(const config_option *opts, size_t n_opts, void *target, int *argc,
                        char **argv, char *err, size_t err_len)
{
    int kept = 1;
    bool options_ended = false;
    for (int i = 1; i < *argc; i++) {
        const char *arg = argv[i];
        if (options_ended || arg[0] != '-' || strcmp(arg, "-") == 0) {
            argv[kept++] = argv[i];
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_ended = true;
            continue;
        }
        const char *name = arg[1] == '-' ? arg + 2 : arg + 1;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const config_option *o = arg[1] == '-' ? find_flag(opts, n_opts, name, name_len) : NULL;
        if (!o) {
            snprintf(err, err_len, "unknown option %.*s (see --help)",
                     (int)(name_len + (size_t)(name - arg)), arg);
            return false;
        }
        const char *value;
        bool flag_value;
        if (eq) {
            value = eq + 1;
        } else if (o->type == CONFIG_BOOL &&
                   (i + 1 >= *argc || !parse_bool(argv[i + 1], &flag_value))) {
            value = "true"; /* a bare boolean flag switches it on */
        } else if (i + 1 < *argc) {
            value = argv[++i];
        } else {
            snprintf(err, err_len, "%s (--%s): missing value after --%s", o->env, o->flag, o->flag);
            return false;
        }
        if (!apply_value(o, target, value, err, err_len)) return false;
    }
    argv[kept] = NULL;
    *argc = kept;
    return true;
}

config_result config_load(const config_option *opts, size_t n_opts, void *target,
                          const char *program, const char *summary, int *argc, char **argv,
                          char *err, size_t err_len)
{
    if (err && err_len) err[0] = '\0';
    int help = argc && argv ? help_requested(*argc, argv) : 0;
    if (help == 1) {
        config_print_help(stdout, opts, n_opts, program, summary);
        return CONFIG_HELP;
    }
    if (help == 2) {
        config_print_markdown(stdout, opts, n_opts);
        return CONFIG_HELP;
    }
    if (!apply_defaults_and_env(opts, n_opts, target, err, err_len)) return CONFIG_ERROR;
    if (argc && argv && !apply_flags(opts, n_opts, target, argc, argv, err, err_len))
        return CONFIG_ERROR;
    return CONFIG_OK;
}

/* What values a setting accepts, for --help: "1..65535", "debug|info", "true|false", "text". */
static void describe_values(const config_option *o, char *buf, size_t len)
{
    switch (o->type) {
    case CONFIG_INT: snprintf(buf, len, "%lld..%lld", o->min, o->max); break;
    case CONFIG_BOOL: snprintf(buf, len, "true|false"); break;
    case CONFIG_STRING:
        if (o->choices)
            snprintf(buf, len, "%s", o->choices);
        else
            snprintf(buf, len, "TEXT (at most %zu characters)", o->size ? o->size - 1 : 0);
        break;
    }
}

void config_print_help(FILE *out, const config_option *opts, size_t n_opts, const char *program,
                       const char *summary)
{
    fprintf(out, "Usage: %s [--flag value | --flag=value]...\n", program ? program : "chatflow");
    if (summary && *summary) fprintf(out, "%s\n", summary);
    fprintf(out, "\nEach setting is read from its environment variable; a flag overrides it.\n\n");
    for (size_t i = 0; i < n_opts; i++) {
        const config_option *o = &opts[i];
        char values[128];
        describe_values(o, values, sizeof values);
        fprintf(out, "  --%s %s\n", o->flag, values);
        fprintf(out, "      env %s, default \"%s\"\n", o->env, o->default_value);
        fprintf(out, "      %s\n", o->help ? o->help : "");
    }
    fprintf(
        out,
        "\n  --help            this text\n  --help-markdown   the settings as a Markdown table\n");
}

/* Markdown table cells: a '|' would end the cell. */
static void write_cell(FILE *out, const char *text)
{
    for (const char *p = text ? text : ""; *p; p++) {
        if (*p == '|')
            fputs("\\|", out);
        else if (*p == '\n')
            fputc(' ', out);
        else
            fputc(*p, out);
    }
}

static void write_accepted(FILE *out, const config_option *o)
{
    switch (o->type) {
    case CONFIG_INT: fprintf(out, " Range %lld..%lld.", o->min, o->max); break;
    case CONFIG_BOOL: fputs(" Boolean (true/false, 1/0, yes/no, on/off).", out); break;
    case CONFIG_STRING:
        if (!o->choices) break;
        fputs(" One of ", out);
        for (const char *p = o->choices; p;) {
            const char *bar = strchr(p, '|');
            int n = bar ? (int)(bar - p) : (int)strlen(p);
            fprintf(out, "%s`%.*s`", p == o->choices ? "" : ", ", n, p);
            p = bar ? bar + 1 : NULL;
        }
        fputc('.', out);
        break;
    }
}

void config_print_markdown(FILE *out, const config_option *opts, size_t n_opts)
{
    fputs("| Variable | Flag | Default | Meaning |\n", out);
    fputs("| --- | --- | --- | --- |\n", out);
    for (size_t i = 0; i < n_opts; i++) {
        const config_option *o = &opts[i];
        fprintf(out, "| `%s` | `--%s` | ", o->env, o->flag);
        if (o->default_value[0]) {
            fputc('`', out);
            write_cell(out, o->default_value);
            fputc('`', out);
        } else {
            fputs("(empty)", out);
        }
        fputs(" | ", out);
        write_cell(out, o->help);
        write_accepted(out, o);
        fputs(" |\n", out);
    }
}

bool config_common_finish(struct chatflow_common_settings *c, char *err, size_t err_len)
{
    if (strcmp(c->auth, "on") == 0 && !c->auth_hs256_secret[0] && !c->auth_jwks_url[0]) {
        snprintf(err, err_len,
                 "CHATFLOW_AUTH (--auth) is on but neither CHATFLOW_AUTH_HS256_SECRET "
                 "(--auth-hs256-secret) nor CHATFLOW_AUTH_JWKS_URL (--auth-jwks-url) is set: "
                 "tokens could not be verified");
        return false;
    }
    if (c->lb_target_group_arn[0] && strncmp(c->lb_target_group_arn, "arn:", 4) != 0) {
        snprintf(err, err_len,
                 "CHATFLOW_LB_TARGET_GROUP_ARN (--lb-target-group-arn): \"%s\" is not an ARN "
                 "(arn:aws:elasticloadbalancing:...:targetgroup/...)",
                 c->lb_target_group_arn);
        return false;
    }
    const char *task_metadata = getenv("ECS_CONTAINER_METADATA_URI_V4");
    if (c->lb_target_group_arn[0] && !c->lb_target_ip[0] && !(task_metadata && *task_metadata)) {
        snprintf(err, err_len,
                 "CHATFLOW_LB_TARGET_GROUP_ARN (--lb-target-group-arn) is set but this task's "
                 "address is unknown: set CHATFLOW_LB_TARGET_IP (--lb-target-ip), or run where ECS "
                 "sets ECS_CONTAINER_METADATA_URI_V4");
        return false;
    }
    if (c->server_id[0] == '\0') {
        char host[256];
        if (gethostname(host, sizeof host) != 0) {
            snprintf(
                err, err_len,
                "CHATFLOW_SERVER_ID (--server-id) is empty and the host name is unavailable: %s",
                strerror(errno));
            return false;
        }
        host[sizeof host - 1] = '\0';
        if (strlen(host) >= sizeof c->server_id) {
            snprintf(err, err_len,
                     "CHATFLOW_SERVER_ID (--server-id) is empty and the host name is longer than "
                     "%zu characters; set it",
                     sizeof c->server_id - 1);
            return false;
        }
        strcpy(c->server_id, host);
    }
    if (!log_init(c->log_level, c->log_format)) {
        snprintf(
            err, err_len,
            "CHATFLOW_LOG_LEVEL/CHATFLOW_LOG_FORMAT: cannot apply level \"%s\" with format \"%s\" "
            "(levels debug|info|warn|error, formats text|json)",
            c->log_level, c->log_format);
        return false;
    }
    return true;
}
