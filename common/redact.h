/*
 * redact — keeps secrets out of log lines and error messages.
 *
 * Contract:
 *  - redact_text(s, cap) rewrites the NUL-terminated string s in place (never longer than it
 *    was, so cap only bounds the scan): the userinfo of every URL ("scheme://user:password@host")
 *    becomes "***@", and every occurrence of the value of a secret environment variable
 *    (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN,
 *    CHATFLOW_AUTH_HS256_SECRET; values of at least 4 characters) becomes "***", and so does the
 *    value of a libpq keyword password ("password=secret" or "password='a secret'", as a
 *    connection string spells it), of an identity token in a URL ("access_token=<token>", up to
 *    the next '&', '#', space or quote) and after "Bearer " (an Authorization header).
 *  - log.c runs it on every log line; the services also run it on text they answer with that
 *    they did not write themselves (settings errors, SQS and credential errors, health details).
 *    Thread-safe (it reads the environment, which nothing changes after start-up).
 *  - redact_printable(dst, cap, src) copies untrusted text (from a token, a key set) into a
 *    one-line message: printable ASCII only, quotes and backslashes too (others become '?'), at
 *    most 40 characters. src NULL copies "". Always NUL-terminates when cap > 0.
 */
#ifndef CHATFLOW_REDACT_H
#define CHATFLOW_REDACT_H

#include <stddef.h>

void redact_text(char *s, size_t cap);
void redact_printable(char *dst, size_t cap, const char *src);

#endif
