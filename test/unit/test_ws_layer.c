/* test_ws_layer — the pure parts of the WebSocket server layer: frame assembly (ws_frame), the
 * (slot, generation) handles (slot_table) and the subscriber state machine (subscriber_state). */
/* test-passes: asan */
#include <string.h>

#include "../../consumer/subscriber_state.h"
#include "slot_table.h"
#include "testlib.h"
#include "ws_frame.h"

static void test_frames(void)
{
    ws_frame *f = NULL;
    const char *data = NULL;
    size_t len = 0;
    CHECK_INT(ws_frame_gather(&f, 16, "hello", 5, true, &data, &len), WS_FRAME_COMPLETE,
              "a message in one piece is complete at once");
    CHECK(len == 5 && memcmp(data, "hello", 5) == 0 && f == NULL,
          "it is handed back as it came, with no buffer allocated");

    CHECK_INT(ws_frame_gather(&f, 16, "abc", 3, false, &data, &len), WS_FRAME_PARTIAL,
              "a first piece of several is partial");
    CHECK_INT(ws_frame_gather(&f, 16, "def", 3, false, &data, &len), WS_FRAME_PARTIAL,
              "so is a middle piece");
    CHECK_INT(ws_frame_gather(&f, 16, "gh", 2, true, &data, &len), WS_FRAME_COMPLETE,
              "the last piece completes the message");
    CHECK(len == 8 && memcmp(data, "abcdefgh", 8) == 0, "the pieces come back gathered, in order");

    CHECK_INT(ws_frame_gather(&f, 8, "0123456", 7, false, &data, &len), WS_FRAME_PARTIAL,
              "a message under the cap so far is partial");
    CHECK_INT(ws_frame_gather(&f, 8, "789", 3, false, &data, &len), WS_FRAME_PARTIAL,
              "past the cap, the rest is dropped quietly");
    CHECK_INT(ws_frame_gather(&f, 8, "x", 1, true, &data, &len), WS_FRAME_TOO_LARGE,
              "and refused once, at its last piece");
    CHECK_INT(ws_frame_gather(&f, 8, "ok", 2, false, &data, &len), WS_FRAME_PARTIAL,
              "the next message starts afresh");
    CHECK_INT(ws_frame_gather(&f, 8, "!", 1, true, &data, &len), WS_FRAME_COMPLETE,
              "and completes");
    CHECK(len == 3 && memcmp(data, "ok!", 3) == 0, "with only its own bytes");
    ws_frame_free(f);
}

static void test_slots(void)
{
    slot_table *t = slot_table_new(2, sizeof(int));
    CHECK(t != NULL, "a table of 2 slots");
    if (!t) return;
    slot_ref a, b, c;
    int *pa = slot_table_acquire(t, &a);
    int *pb = slot_table_acquire(t, &b);
    CHECK(pa && pb && a.slot != b.slot, "two slots handed out");
    CHECK(slot_table_acquire(t, &c) == NULL, "no third while both are held");
    CHECK_INT(slot_table_active(t), 2, "two active");
    *pa = 7;
    CHECK(slot_table_get(t, a) == pa && *(int *)slot_table_get(t, a) == 7,
          "a ref resolves to its object");
    slot_table_release(t, a);
    CHECK(slot_table_get(t, a) == NULL, "a released ref never resolves again");
    int *pc = slot_table_acquire(t, &c);
    CHECK(pc && c.slot == a.slot && c.generation != a.generation && *pc == 0,
          "its slot is reused with a new generation and a zeroed object");
    CHECK(slot_table_get(t, a) == NULL && slot_table_get(t, c) == pc,
          "the stale ref still does not resolve, not even to the new holder");
    slot_table_release(t, a);
    CHECK(slot_table_get(t, c) == pc, "releasing a stale ref does nothing");
    slot_table_free(t);
}

static void test_states(void)
{
    CHECK(sub_state_allowed(SUB_HANDSHAKE, SUB_LIVE), "handshake -> live");
    CHECK(sub_state_allowed(SUB_LIVE, SUB_REPLAY_FETCHING), "live -> replay fetching");
    CHECK(sub_state_allowed(SUB_REPLAY_FETCHING, SUB_LIVE), "replay fetching -> live");
    CHECK(sub_state_allowed(SUB_CLOSING, SUB_CLOSED), "closing -> closed");
    CHECK(!sub_state_allowed(SUB_CLOSED, SUB_LIVE), "closed is final");
    CHECK(!sub_state_allowed(SUB_HANDSHAKE, SUB_REPLAY_FETCHING), "no replay before the handshake");
    CHECK(!sub_state_allowed(SUB_LIVE, SUB_LIVE), "staying put is not a transition");
    sub_state s = SUB_HANDSHAKE;
    CHECK(sub_state_enter(&s, SUB_LIVE, 1) && s == SUB_LIVE, "an allowed transition is made");
    CHECK(!sub_state_enter(&s, SUB_HANDSHAKE, 1) && s == SUB_LIVE,
          "an illegal one is refused and the state kept");
}

int main(void)
{
    test_frames();
    test_slots();
    test_states();
    return TEST_DONE();
}
