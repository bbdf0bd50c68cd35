/*
 * plan — what each message of a run is, decided by one seeded generator before it is sent, so a
 * run can be repeated and every broadcast can be matched to its send.
 */
#include "loadgen.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

const char *const LG_TYPE_NAMES[3] = {"TEXT", "JOIN", "LEAVE"};

const char *const LG_TEXT_POOL[50] = {
    "Hello everyone!",
    "How is it going?",
    "Good morning from the east coast",
    "Anyone watching the game tonight?",
    "Just pushed the new release",
    "Lunch in ten minutes",
    "That build took forever",
    "Can someone review my change?",
    "Coffee break, back soon",
    "The deploy went fine",
    "Who is on call this week?",
    "Great job on the demo",
    "I'll be late for the standup",
    "Reading the design doc now",
    "Let's sync after the meeting",
    "The tests are green again",
    "Does anyone have the link?",
    "Weekend plans anyone?",
    "Thanks for the help earlier",
    "Heading home, see you tomorrow",
    "Nice weather today",
    "Happy Friday!",
    "The dashboard looks much better",
    "Fixed the flaky test",
    "Has anyone seen this error before?",
    "Meeting moved to 3pm",
    "Pizza is here",
    "Welcome to the room!",
    "Check out this article",
    "I think we should ship it",
    "Latency looks good on the graphs",
    "Back from vacation",
    "Ping me if you need anything",
    "Rolling back, one moment",
    "The queue depth is dropping",
    "Let me look into it",
    "Good catch!",
    "Almost done with the migration",
    "Can we talk about the roadmap?",
    "New emoji just dropped \xF0\x9F\x8E\x89",
    "Caf\xC3\xA9 au lait for everyone",
    "Brb",
    "LGTM",
    "Merged, thanks",
    "Ship it \xF0\x9F\x9A\x80",
    "What time is the retro?",
    "Updated the runbook",
    "Scaling the consumers now",
    "All systems nominal",
    "Good night!",
};

/* xorshift64*: a tiny seeded generator, so a run can be repeated exactly. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void lg_plan(lg_record *rec, size_t n, const lg_options *opt, unsigned seed)
{
    uint64_t s = ((uint64_t)seed << 1) | 1u;
    for (size_t i = 0; i < n; i++) {
        lg_record *r = &rec[i];
        memset(r, 0, sizeof *r);
        /* under --rooms N index k is room "k+1": a seed plans the run it did when rooms were
         * numbers */
        r->room = (uint32_t)(next_rand(&s) % (uint64_t)opt->rooms);
        r->user_id = 1 + (uint32_t)(next_rand(&s) % 100000u);
        uint64_t t = next_rand(&s) % 100u;
        r->type = t < 90 ? 0 : t < 95 ? 1 : 2;
        r->text = (uint8_t)(next_rand(&s) % 50u);
        r->state = REC_PLANNED;
    }
}

int lg_client_message_id(const lg_options *opt, size_t index, char *buf, size_t len)
{
    return snprintf(buf, len, "%s-%zu", opt->run_id, index);
}

long lg_index_from_cmid(const lg_options *opt, const char *cmid)
{
    size_t plen = strlen(opt->run_id);
    if (!cmid || strncmp(cmid, opt->run_id, plen) != 0 || cmid[plen] != '-') return -1;
    char *end = NULL;
    long v = strtol(cmid + plen + 1, &end, 10);
    if (!end || *end != '\0' || v < 0) return -1;
    return v;
}

int lg_frame(const lg_options *opt, const lg_record *r, size_t index, char *buf, size_t len)
{
    char cmid[64];
    lg_client_message_id(opt, index, cmid, sizeof cmid);
    /* The pool holds no characters that need JSON escaping; the timestamp is the send time. */
    char ts[ISO8601_BUF];
    time_format_iso8601(time_wall_ms(), ts);
    return snprintf(
        buf, len,
        "{\"userId\":\"%" PRIu32 "\",\"username\":\"user%" PRIu32 "\",\"message\":\"%s\","
        "\"timestamp\":\"%s\",\"messageType\":\"%s\",\"clientMessageId\":\"%s\"}",
        r->user_id, r->user_id, LG_TEXT_POOL[r->text], ts, LG_TYPE_NAMES[r->type], cmid);
}

void lg_compute_message_ids(lg_record *rec, size_t first, size_t n, const lg_options *opt)
{
    for (size_t i = first; i < first + n; i++) {
        char cmid[64], name[16 + ROOM_ID_BUF + sizeof cmid];
        lg_client_message_id(opt, i, cmid, sizeof cmid);
        /* the same name the producer hashes: "userId:roomId:clientMessageId" */
        int len = snprintf(name, sizeof name, "%" PRIu32 ":%s:%s", rec[i].user_id,
                           opt->room_ids[rec[i].room], cmid);
        uuid_v5(CHATFLOW_MESSAGE_NAMESPACE, name, (size_t)len, rec[i].message_id);
    }
}
