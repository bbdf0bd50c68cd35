/*
 * tl_sqs — SQS for the integration tests, through the project's own client (common/sqs.h) on the
 * stack's endpoint ($AWS_ENDPOINT_URL_SQS, $AWS_REGION). Part of libtestsupport (tl_).
 *
 * Contract:
 *  - A tl_sqs holds credentials, a client and the URLs of the room queues <prefix><room>.fifo
 *    (rooms 1..63). tl_sqs_open() fails, noted, without an endpoint's client; tl_sqs_close()
 *    frees everything (also after a failed open).
 *  - tl_sqs_create_rooms() creates FIFO room queues (a test's own, under a unique prefix);
 *    tl_sqs_lookup_rooms() finds existing ones (a stack's, e.g. after restart-sqs);
 *    tl_sqs_url() looks up any queue by name (the caller frees the URL).
 *  - tl_sqs_drain_room() receives and deletes everything in a room's queue until three empty
 *    receives in a row (fauxqs hands out one message per FIFO group per receive) and returns the
 *    bodies in receive order; tl_sqs_msgs_free() frees them.
 *  - tl_sqs_depth() is ApproximateNumberOfMessages + ...NotVisible, -1 on error.
 */
#ifndef CHATFLOW_TL_SQS_H
#define CHATFLOW_TL_SQS_H

#include <stdbool.h>
#include <stddef.h>

#include "credentials.h"
#include "sqs.h"

#define TL_SQS_MAX_ROOM 63

typedef struct {
    credentials_provider *creds;
    sqs_client *sqs;
    char prefix[64];
    char *urls[TL_SQS_MAX_ROOM + 1]; /* by room */
} tl_sqs;

typedef struct {
    char *body;
    char group_id[32];
} tl_sqs_msg;

bool tl_sqs_open(tl_sqs *s, const char *prefix, int request_timeout_ms);
void tl_sqs_close(tl_sqs *s);
bool tl_sqs_create_rooms(tl_sqs *s, int room_min, int room_max);
bool tl_sqs_lookup_rooms(tl_sqs *s, int room_min, int room_max);
bool tl_sqs_url(tl_sqs *s, const char *name, char **url);

tl_sqs_msg *tl_sqs_drain_room(tl_sqs *s, int room, size_t *n);
void tl_sqs_msgs_free(tl_sqs_msg *m, size_t n);
long tl_sqs_depth(tl_sqs *s, const char *url);
long tl_sqs_room_depth(tl_sqs *s, int room);

#endif
