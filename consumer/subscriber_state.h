/*
 * subscriber_state — the life of one broadcast subscriber as a state machine.
 *
 *   HANDSHAKE ──established──▶ LIVE ◀──────────────── last page joined the held frames ──┐
 *                               │                                                        │
 *                               └─since= not in the cache─▶ REPLAY_FETCHING ─────────────┘
 *                                                             │   ▲     │   ▲
 *                                        page was full ───────┘   │     │   │
 *                                        REPLAY_PAGE_WANTED ──────┘     │   │
 *                                        (send queue half written)      │   │
 *                                        store behind the cache ────────┘   │
 *                                        REPLAY_RETRY_WAIT ─── timer ───────┘
 *   every open state (LIVE, REPLAY_*) ──close reason set──▶ CLOSING
 *   every open state and CLOSING ──lws CLOSED──▶ CLOSED
 *
 * Contract:
 *  - SUB_HANDSHAKE is 0: lws allocates a subscriber zeroed, before it has upgraded.
 *  - sub_state_enter() is the only place a subscriber's state changes: it makes the transition
 *    when the table above allows it, else logs an error naming both states and leaves the state
 *    as it was (returns false). Staying in the same state is not a transition (refused too).
 *  - While REPLAY_*, live frames are held (broadcast_room.h bc_replay), not sent; exactly one page
 *    of history is at the replay worker in REPLAY_FETCHING and none in the other states.
 *  - Service thread only, like the subscriber itself.
 */
#ifndef CHATFLOW_CONSUMER_SUBSCRIBER_STATE_H
#define CHATFLOW_CONSUMER_SUBSCRIBER_STATE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    SUB_HANDSHAKE = 0,   /* accepted, not upgraded yet */
    SUB_LIVE,            /* live frames go straight to the send queue */
    SUB_REPLAY_FETCHING, /* a page of history is at the replay worker */
    /* the last page was full: the next one is asked for once it is mostly written */
    SUB_REPLAY_PAGE_WANTED,
    SUB_REPLAY_RETRY_WAIT, /* the store does not reach the cache yet: a timer asks again */
    SUB_CLOSING,           /* close reason set, queues freed: the next WRITEABLE hangs up */
    SUB_CLOSED,            /* lws closed the connection */
    SUB_STATE_COUNT
} sub_state;

const char *sub_state_name(sub_state s);
bool sub_state_allowed(sub_state from, sub_state to);
/* id only names the subscriber in the log line of a refused transition. */
bool sub_state_enter(sub_state *state, sub_state to, uint64_t id);

/* Upgraded and not closing: frames may still be queued for it. */
static inline bool sub_state_open(sub_state s)
{
    return s >= SUB_LIVE && s <= SUB_REPLAY_RETRY_WAIT;
}
static inline bool sub_state_replaying(sub_state s)
{
    return s >= SUB_REPLAY_FETCHING && s <= SUB_REPLAY_RETRY_WAIT;
}

#endif
