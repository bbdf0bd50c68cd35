/*
 * credentials — where AWS keys come from: a provider chain, safe to read from many threads.
 *
 * Contract:
 *  - credentials_provider_new() picks the first source that is configured:
 *      1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); static.
 *      2. ECS container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI fetched from
 *         http://169.254.170.2<uri>, or AWS_CONTAINER_CREDENTIALS_FULL_URI with the
 *         Authorization header from AWS_CONTAINER_AUTHORIZATION_TOKEN. The JSON answer's
 *         AccessKeyId, SecretAccessKey, Token and Expiration are used.
 *    It fails (NULL, err set) when no source is configured or the first ECS fetch fails.
 *  - credentials_get() copies the current credentials out. ECS credentials are refreshed when
 *    less than CREDENTIALS_REFRESH_AHEAD_S remain before Expiration; only one thread fetches at a
 *    time, others keep using the old ones. If the refresh fails the old credentials are kept (and
 *    returned) until they expire; after expiry credentials_get() fails with err naming the cause.
 *  - The provider owns everything it allocates; credentials_provider_free() releases it.
 */
#ifndef CHATFLOW_CREDENTIALS_H
#define CHATFLOW_CREDENTIALS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define CREDENTIALS_REFRESH_AHEAD_S (15 * 60)
#define ECS_CREDENTIALS_HOST "169.254.170.2"

typedef struct {
    char access_key_id[128];
    char secret_access_key[128];
    char session_token[4096]; /* "" when none */
    time_t expiration;        /* 0 for static credentials */
} aws_credentials;

typedef struct credentials_provider credentials_provider;

credentials_provider *credentials_provider_new(char *err, size_t err_len);
bool credentials_get(credentials_provider *p, aws_credentials *out, char *err, size_t err_len);
/* "environment" or "ecs" */
const char *credentials_source(const credentials_provider *p);
void credentials_provider_free(credentials_provider *p);

#endif
