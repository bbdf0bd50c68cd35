/*
 * Unit tests of positions: seqnum's validity and numeric order, and queue_position() — the
 * queue's epoch, then SQS's number padded to 39 digits — ordering a queue's later life after its
 * earlier one whatever the numbers. The epoch read and its triggers run against fauxqs in
 * it_queue_epoch and part 5 of it_consumer_bus.
 */
/* test-passes: asan */
#include <stdio.h>
#include <string.h>

#include "queue_epoch.h"
#include "seqnum.h"
#include "testlib.h"

static void test_seqnum(void)
{
    CHECK(seqnum_valid("0"), "seqnum: '0' is valid");
    CHECK(seqnum_valid("18851234567890123456"), "seqnum: a 20-digit SQS number is valid");
    CHECK(seqnum_valid("340282366920938463463374607431768211455"),
          "seqnum: 2^128-1 (39 digits) is valid");
    CHECK(seqnum_valid("123456789012345678901234567890123456789012345678901234567890"),
          "seqnum: 60 digits (a position's most) are valid");
    CHECK(!seqnum_valid("1234567890123456789012345678901234567890123456789012345678901"),
          "seqnum: 61 digits are refused");
    CHECK(!seqnum_valid(""), "seqnum: empty is refused");
    CHECK(!seqnum_valid(NULL), "seqnum: NULL is refused");
    CHECK(!seqnum_valid("12a"), "seqnum: a letter is refused");
    CHECK(!seqnum_valid("-1"), "seqnum: a sign is refused");
    CHECK(!seqnum_valid(" 1"), "seqnum: a space is refused");

    CHECK(seqnum_cmp("9", "10") < 0, "seqnum: 9 < 10 (numeric, not lexical)");
    CHECK(seqnum_cmp("10", "9") > 0, "seqnum: 10 > 9");
    CHECK(seqnum_cmp("100", "100") == 0, "seqnum: equal");
    CHECK(seqnum_cmp("0100", "100") == 0, "seqnum: leading zeros ignored");
    CHECK(seqnum_cmp("0", "000") == 0, "seqnum: zero in any width");
    CHECK(seqnum_cmp("18851234567890123456", "18851234567890123457") < 0,
          "seqnum: 20 digits differing in the last digit");
    CHECK(seqnum_cmp("99999999999999999999", "100000000000000000000") < 0,
          "seqnum: beyond 64 bits, a longer number is larger");
    CHECK(seqnum_cmp("340282366920938463463374607431768211455",
                     "340282366920938463463374607431768211454") > 0,
          "seqnum: near 2^128");
}

static void test_position_format(void)
{
    char out[SEQNUM_BUF];
    CHECK(queue_position(1765112400, "42", out) &&
              strcmp(out, "1765112400000000000000000000000000000000000000042") == 0,
          "position: the epoch, then the number padded to 39 digits (%s)", out);
    CHECK(queue_position(1765112400, "00000000000000000042", out) &&
              strcmp(out, "1765112400000000000000000000000000000000000000042") == 0,
          "position: fauxqs's zero-padded 20 digits give the same position");
    CHECK(queue_position(7, "340282366920938463463374607431768211455", out) &&
              strcmp(out, "7340282366920938463463374607431768211455") == 0,
          "position: a 39-digit number is not padded");
    CHECK(strlen(out) <= SEQNUM_MAX_DIGITS && seqnum_valid(out), "position: a valid seqnum");
    CHECK(!queue_position(0, "42", out), "position: epoch 0 (unknown) makes none");
    CHECK(!queue_position(1765112400, "3402823669209384634633746074317682114550", out),
          "position: a 40-digit number is no SQS sequence number");
    CHECK(!queue_position(1765112400, "4x2", out), "position: not digits");
    CHECK(!queue_position(1765112400, "", out), "position: empty");
    CHECK(!queue_position(1765112400, NULL, out), "position: NULL");
    CHECK(queue_position(UINT64_MAX, "1", out) && strlen(out) == 20 + SQS_SEQNUM_DIGITS,
          "position: the largest epoch still fits (%zu digits)", strlen(out));
}

static void test_position_order(void)
{
    char old_high[SEQNUM_BUF], new_low[SEQNUM_BUF], new_next[SEQNUM_BUF];
    queue_position(1765112400, "18851234567890123456", old_high);
    queue_position(1765112401, "1", new_low);
    queue_position(1765112401, "2", new_next);
    CHECK(seqnum_cmp(old_high, new_low) < 0,
          "order: a queue's next life (numbering from 1) sorts after its earlier one");
    CHECK(seqnum_cmp(new_low, new_next) < 0, "order: within a life, SQS's order");
    CHECK(seqnum_cmp("18851234567890123456", new_low) < 0 &&
              seqnum_cmp("340282366920938463463374607431768211455", new_low) < 0,
          "order: a bare SQS number (a row stored before epochs) sorts before every position");
}

int main(void)
{
    test_seqnum();
    test_position_format();
    test_position_order();
    return TEST_DONE();
}
