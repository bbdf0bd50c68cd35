/*
 * seqnum — positions in a room, compared as numbers.
 *
 * Contract:
 *  - A position (what the protocol calls a sequence number) is a decimal string of
 *    1-SEQNUM_MAX_DIGITS ASCII digits. New positions are queue_epoch.h's (the queue's epoch, then
 *    SQS's number padded to SQS_SEQNUM_DIGITS: 49 digits today); SQS's own numbers (up to 128 bits,
 *    at most SQS_SEQNUM_DIGITS digits) and rows stored before epochs existed are positions too, of
 *    epoch 0, so they sort before every epoch's. seqnum_valid() says whether a string is one.
 *  - seqnum_cmp() orders two valid positions by value (<0, 0, >0): leading zeros are ignored, a
 *    longer significant part is larger, equal lengths compare digit by digit.
 *  - Hand-written because no chosen dependency compares big decimals, and parsing into a binary
 *    integer (beyond 128 bits now) would be longer and no clearer than comparing the digits.
 */
#ifndef CHATFLOW_SEQNUM_H
#define CHATFLOW_SEQNUM_H

#include <stdbool.h>

#define SQS_SEQNUM_DIGITS 39 /* 2^128 - 1 has 39 digits */
#define SEQNUM_MAX_DIGITS 60 /* an epoch of up to 21 digits, then SQS_SEQNUM_DIGITS */
#define SEQNUM_BUF 64

bool seqnum_valid(const char *s);
int seqnum_cmp(const char *a, const char *b);

#endif
