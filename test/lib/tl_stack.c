/* tl_stack — see tl_stack.h. */
#include "tl_stack.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl_proc.h"

static tl_stack *at_exit_stack;

static void down_at_exit(void)
{
    if (at_exit_stack) tl_stack_down(at_exit_stack);
}

void tl_stack_init(tl_stack *s, const char *name, const char *log_dir)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/%s/test-stacks/%s", tl_env("ROOT", "."),
             tl_env("BUILD", "build"), name);
    snprintf(s->log_dir, sizeof s->log_dir, "%s", log_dir);
    if (!at_exit_stack) atexit(down_at_exit);
    at_exit_stack = s;
}

bool tl_stack_cmd(tl_stack *s, const char *args)
{
    char cmd[2600];
    snprintf(cmd, sizeof cmd,
             "CHATFLOW_STACK_DIR='%s' BUILD='%s' CHATFLOW_BIN='%s' '%s/deploy/local/stack' %s "
             ">>'%s/stack.log' 2>&1",
             s->dir, tl_env("BUILD", "build"), tl_env("CHATFLOW_BIN", "build"), tl_env("ROOT", "."),
             args, s->log_dir);
    return tl_sh(cmd);
}

/* A value as the shell would read it: one pair of surrounding quotes removed. */
static const char *unquoted(char *v)
{
    size_t len = strlen(v);
    if (len >= 2 && (v[0] == '"' || v[0] == '\'') && v[len - 1] == v[0]) {
        v[len - 1] = '\0';
        return v + 1;
    }
    return v;
}

bool tl_stack_load_env(tl_stack *s)
{
    char path[800], line[1024];
    snprintf(path, sizeof path, "%s/stack.env", s->dir);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    s->fauxqs_pid = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq) continue;
        *eq = '\0';
        const char *value = unquoted(eq + 1);
        if (strncmp(line, "AWS_", 4) == 0 || strcmp(line, "DATABASE_URL") == 0)
            setenv(line, value, 1);
        if (strcmp(line, "CHATFLOW_FAUXQS_PID") == 0) s->fauxqs_pid = (pid_t)atoi(value);
    }
    fclose(f);
    return true;
}

void tl_stack_freeze_sqs(tl_stack *s, bool frozen)
{
    if (s->fauxqs_pid > 0) kill(s->fauxqs_pid, frozen ? SIGSTOP : SIGCONT);
}

void tl_stack_down(tl_stack *s)
{
    if (!s->dir[0]) return;
    tl_stack_freeze_sqs(s, false);
    tl_stack_cmd(s, "down --purge");
}
