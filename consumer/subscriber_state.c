/* subscriber_state — the transition table and its one gate (contract in subscriber_state.h). */
#include "subscriber_state.h"

#include "log.h"

#define BIT(s) (1u << (s))
#define CLOSE_OR_CLOSED (BIT(SUB_CLOSING) | BIT(SUB_CLOSED))

/* allowed[from]: the states `from` may change to. */
static const unsigned allowed[SUB_STATE_COUNT] = {
    [SUB_HANDSHAKE] = BIT(SUB_LIVE),
    [SUB_LIVE] = BIT(SUB_REPLAY_FETCHING) | CLOSE_OR_CLOSED,
    [SUB_REPLAY_FETCHING] =
        BIT(SUB_REPLAY_PAGE_WANTED) | BIT(SUB_REPLAY_RETRY_WAIT) | BIT(SUB_LIVE) | CLOSE_OR_CLOSED,
    [SUB_REPLAY_PAGE_WANTED] = BIT(SUB_REPLAY_FETCHING) | CLOSE_OR_CLOSED,
    [SUB_REPLAY_RETRY_WAIT] = BIT(SUB_REPLAY_FETCHING) | CLOSE_OR_CLOSED,
    [SUB_CLOSING] = BIT(SUB_CLOSED),
    [SUB_CLOSED] = 0,
};

static const char *const names[SUB_STATE_COUNT] = {
    [SUB_HANDSHAKE] = "HANDSHAKE",
    [SUB_LIVE] = "LIVE",
    [SUB_REPLAY_FETCHING] = "REPLAY_FETCHING",
    [SUB_REPLAY_PAGE_WANTED] = "REPLAY_PAGE_WANTED",
    [SUB_REPLAY_RETRY_WAIT] = "REPLAY_RETRY_WAIT",
    [SUB_CLOSING] = "CLOSING",
    [SUB_CLOSED] = "CLOSED",
};

const char *sub_state_name(sub_state s) { return (unsigned)s < SUB_STATE_COUNT ? names[s] : "?"; }

bool sub_state_allowed(sub_state from, sub_state to)
{
    return (unsigned)from < SUB_STATE_COUNT && (unsigned)to < SUB_STATE_COUNT &&
           (allowed[from] & BIT(to));
}

bool sub_state_enter(sub_state *state, sub_state to, uint64_t id)
{
    if (!sub_state_allowed(*state, to)) {
        /* A bug, not a client's doing: refusing keeps the subscriber in a state its code knows. */
        log_error("broadcast", "subscriber %llu: state change %s -> %s is not allowed; refused",
                  (unsigned long long)id, sub_state_name(*state), sub_state_name(to));
        return false;
    }
    *state = to;
    return true;
}
