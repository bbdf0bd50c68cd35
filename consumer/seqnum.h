/*
 * seqnum — SQS FIFO sequence numbers, compared as numbers.
 *
 * Contract:
 *  - A sequence number is a decimal string of 1-SEQNUM_MAX_DIGITS ASCII digits (SQS issues up to
 *    128-bit values, 39 digits at most; real ones are 20 digits today). seqnum_valid() says
 *    whether a string is one.
 *  - seqnum_cmp() orders two valid sequence numbers by value (<0, 0, >0): leading zeros are
 *    ignored, a longer significant part is larger, equal lengths compare digit by digit.
 *  - Hand-written because no chosen dependency compares big decimals, and parsing into
 *    unsigned __int128 would be longer and no clearer than comparing the digits.
 */
#ifndef CHATFLOW_SEQNUM_H
#define CHATFLOW_SEQNUM_H

#include <stdbool.h>

#define SEQNUM_MAX_DIGITS 39
#define SEQNUM_BUF 64 /* same size as broadcast_history_row.sequence_number */

bool seqnum_valid(const char *s);
int seqnum_cmp(const char *a, const char *b);

#endif
