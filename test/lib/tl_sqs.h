/*
 * tl_sqs — SQS for the integration tests, through the project's own client (common/sqs.h) on the
 * stack's endpoint ($AWS_ENDPOINT_URL_SQS, $AWS_REGION). Part of libtestsupport (tl_).
 *
 * Contract:
 *  - A tl_sqs holds credentials, a client and the URLs of the queue shards <prefix><s>.fifo
 *    (s in 1..TL_SQS_MAX_SHARD; room_shard() in room.h says which one carries a room).
 *    tl_sqs_open() fails, noted, without an endpoint's client; tl_sqs_close() frees everything
 *    (also after a failed open).
 *  - tl_sqs_create_shards(s, shards) creates the FIFO queues of shards 1..shards (a test's own,
 *    under a unique prefix); tl_sqs_lookup_shards() finds existing ones (a stack's, e.g. after
 *    restart-sqs); both fail, noted, for shards outside 1..TL_SQS_MAX_SHARD. tl_sqs_url() looks
 *    up any queue by name (the caller frees the URL).
 *  - tl_sqs_drain_shard() receives and deletes everything in a shard's queue until three empty
 *    receives in a row (fauxqs hands out one message per FIFO group per receive) and returns the
 *    bodies with their MessageGroupId (the room id, up to ROOM_ID_MAX characters) in receive
 *    order: per group, that is the queue's order. tl_sqs_msgs_free() frees them.
 *  - tl_sqs_depth() is ApproximateNumberOfMessages + ...NotVisible, -1 on error;
 *    tl_sqs_shard_depth() is that for a shard's queue.
 */
#ifndef CHATFLOW_TL_SQS_H
#define CHATFLOW_TL_SQS_H

#include <stdbool.h>
#include <stddef.h>

#include "credentials.h"
#include "room.h"
#include "sqs.h"

#define TL_SQS_MAX_SHARD 63

typedef struct {
    credentials_provider *creds;
    sqs_client *sqs;
    char prefix[64];
    char *urls[TL_SQS_MAX_SHARD + 1]; /* by shard, 1.. */
} tl_sqs;

typedef struct {
    char *body;
    char group_id[ROOM_ID_BUF]; /* the room id */
} tl_sqs_msg;

bool tl_sqs_open(tl_sqs *s, const char *prefix, int request_timeout_ms);
void tl_sqs_close(tl_sqs *s);
bool tl_sqs_create_shards(tl_sqs *s, int shards);
bool tl_sqs_lookup_shards(tl_sqs *s, int shards);
bool tl_sqs_url(tl_sqs *s, const char *name, char **url);

tl_sqs_msg *tl_sqs_drain_shard(tl_sqs *s, int shard, size_t *n);
void tl_sqs_msgs_free(tl_sqs_msg *m, size_t n);
long tl_sqs_depth(tl_sqs *s, const char *url);
long tl_sqs_shard_depth(tl_sqs *s, int shard);

#endif
