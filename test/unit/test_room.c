/* test_room — room ids (1-64 of [A-Za-z0-9_-]) and their queue shard (common/room.h). */
/* test-passes: asan */
#include "room.h"
#include "testlib.h"

/* s with every byte outside printable ASCII as \xNN, so a check's line stays one TAP line. */
static const char *shown(const char *s, size_t len)
{
    static char out[4 * ROOM_ID_MAX + 8];
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < sizeof out; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

static bool valid(const char *s) { return room_id_valid(s, strlen(s)); }

/* Every id of `len` copies of c: the length rule on its own. */
static bool valid_run(char c, size_t len)
{
    char buf[ROOM_ID_MAX + 2];
    memset(buf, c, len);
    buf[len] = '\0';
    return valid(buf);
}

static void test_valid_ids(void)
{
    const char *good[] = {"7",
                          "1",
                          "20",
                          "1000",
                          "07",
                          "0",
                          "team-alpha",
                          "Team_Alpha-2",
                          "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b",
                          "_",
                          "-",
                          "--",
                          "a_b-C9"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK(valid(good[i]), "\"%s\" is a room id", good[i]);
    CHECK(valid_run('x', 1), "1 character is a room id");
    CHECK(valid_run('x', ROOM_ID_MAX), "%d characters are a room id", ROOM_ID_MAX);
    CHECK(!valid_run('x', ROOM_ID_MAX + 1), "%d characters are not", ROOM_ID_MAX + 1);
    CHECK(!valid(""), "the empty string is not a room id");
    CHECK(!room_id_valid(NULL, 0), "NULL is not a room id");
}

/* Each character class on its own, whole: every byte of it is allowed and nothing next to it. */
static void test_character_classes(void)
{
    bool upper = true, lower = true, digits = true;
    for (char c = 'A'; c <= 'Z'; c++) upper = upper && room_id_valid(&c, 1);
    for (char c = 'a'; c <= 'z'; c++) lower = lower && room_id_valid(&c, 1);
    for (char c = '0'; c <= '9'; c++) digits = digits && room_id_valid(&c, 1);
    CHECK(upper, "every letter A-Z is allowed");
    CHECK(lower, "every letter a-z is allowed");
    CHECK(digits, "every digit 0-9 is allowed");
    CHECK(room_id_valid("_", 1) && room_id_valid("-", 1), "'_' and '-' are allowed");

    /* every other byte value, alone and in the middle of a valid id */
    int others = 0, refused = 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '-';
        if (allowed) continue;
        char mid[3] = {'a', c, 'b'};
        others++;
        if (!room_id_valid(&c, 1) && !room_id_valid(mid, 3)) refused++;
    }
    CHECK_INT(refused, others, "all %d other byte values are refused, alone and inside an id",
              others);
    const char *bad[] = {"a.b", ".",           "a b",  " 7",       "7 ",  "a/b", "../1", "a%2Fb",
                         "%41", "caf\xc3\xa9", "\xff", "room?x=1", "a+b", "a:b", "a\tb", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!valid(bad[i]), "\"%s\" is not a room id", shown(bad[i], strlen(bad[i])));
}

/* len is the id's length, not strlen: a NUL inside is a character like any other (refused), and
 * bytes past len are not read. */
static void test_length_argument(void)
{
    CHECK(!room_id_valid("ab\0cd", 5), "an embedded NUL (len 5) is refused");
    CHECK(room_id_valid("ab\0cd", 2), "the same bytes with len 2 are \"ab\"");
    CHECK(room_id_valid("team.alpha", 4), "bytes past len are not looked at");
    CHECK(!room_id_valid("team", 0), "len 0 is the empty id");
}

static void test_error_text(void)
{
    char err[128] = "untouched";
    CHECK(room_id_check("team-alpha", 10, err, sizeof err) && strcmp(err, "untouched") == 0,
          "a valid id leaves err alone");
    const char *bad[] = {"", "a.b", "x x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(!room_id_check(bad[i], strlen(bad[i]), err, sizeof err), "\"%s\" refused", bad[i]);
        CHECK_STR(err, "roomId: must be 1-64 characters of A-Z a-z 0-9 _ -",
                  "the reason for \"%s\" names the field and the rule", bad[i]);
    }
    char big[ROOM_ID_MAX + 1];
    memset(big, 'a', sizeof big);
    CHECK(!room_id_check(big, sizeof big, err, sizeof err) && strstr(err, "1-64"),
          "the reason for 65 characters names the length (%s)", err);
    char tiny[8];
    memset(tiny, 'z', sizeof tiny);
    CHECK(!room_id_check("a.b", 3, tiny, sizeof tiny) && tiny[sizeof tiny - 1] == '\0' &&
              strncmp(tiny, "roomId:", sizeof tiny - 1) == 0,
          "a short err buffer is cut and terminated (\"%s\")", tiny);
    CHECK(!room_id_check("a.b", 3, NULL, 0), "err may be NULL");
}

static void test_decimal_shards(void)
{
    bool self = true;
    for (int s = 1; s <= 20 && self; s++) {
        char id[12];
        snprintf(id, sizeof id, "%d", s);
        self = room_shard(id, 20) == s;
    }
    CHECK(self, "rooms \"1\"..\"20\" go to shards 1..20 of 20 (one queue per room kept)");
    CHECK_INT(room_shard("1000", 1000), 1000, "\"1000\" goes to shard 1000 of 1000");
    CHECK_INT(room_shard("1", 1), 1, "\"1\" goes to shard 1 of 1");
    /* not canonical decimals in 1..shards: hashed like any other id */
    CHECK_INT(room_shard("0", 20), 4, "\"0\" is hashed (FNV-1a 890022063 -> 4 of 20)");
    CHECK_INT(room_shard("07", 20), 9, "\"07\" is hashed, not shard 7 (451766088 -> 9 of 20)");
    CHECK_INT(room_shard("21", 20), 5, "\"21\" with 20 shards is hashed (2364708844 -> 5 of 20)");
    CHECK_INT(room_shard("21", 21), 21, "\"21\" with 21 shards is shard 21");
    CHECK_INT(room_shard("99999999999999999999999", 20), 7,
              "a decimal longer than a long is hashed, not overflowed (2517949606 -> 7 of 20)");
}

/* Pinned values of the documented hash (docs/protocol.md §4): another client computing a room's
 * shard must get the same numbers, so a change here is a wire change. */
static void test_pinned_hash(void)
{
    struct {
        const char *id;
        int shards, want;
    } pins[] = {
        {"team-alpha", 4, 2},
        {"team-alpha", 20, 18},
        {"team-alpha", 3, 3},
        {"3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b", 4, 3},
        {"3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b", 20, 7},
        {"1000", 4, 1},
        {"1000", 20, 9},
    };
    for (size_t i = 0; i < sizeof pins / sizeof pins[0]; i++)
        CHECK_INT(room_shard(pins[i].id, pins[i].shards), pins[i].want, "\"%s\" -> shard %d of %d",
                  pins[i].id, pins[i].want, pins[i].shards);
    /* FNV-1a-32("team-alpha") = 1567866677: 1567866677 % 1000 = 677 */
    CHECK_INT(room_shard("team-alpha", 1000), 678, "\"team-alpha\" -> shard 678 of 1000");
}

static void test_shard_range(void)
{
    const char *ids[] = {"1",
                         "7",
                         "20",
                         "21",
                         "1000",
                         "0",
                         "07",
                         "team-alpha",
                         "Z",
                         "3f2b8c1e-9d4a-4e5b-8f6a-1c2d3e4f5a6b",
                         "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"};
    int bad = 0;
    for (int shards = 1; shards <= ROOM_SHARDS_MAX; shards++)
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
            int s = room_shard(ids[i], shards);
            if (s < 1 || s > shards) {
                if (!bad) NOTE("\"%s\" with %d shards -> %d", ids[i], shards, s);
                bad++;
            }
        }
    CHECK_INT(bad, 0, "every shard is in 1..shards for shards 1..%d", ROOM_SHARDS_MAX);
    CHECK_INT(room_shard("team-alpha", 1), 1, "with one shard every room is shard 1");
    CHECK(room_shard("team-alpha", 20) == room_shard("team-alpha", 20),
          "the mapping depends on nothing but the id and the count");
}

int main(void)
{
    test_valid_ids();
    test_character_classes();
    test_length_argument();
    test_error_text();
    test_decimal_shards();
    test_pinned_hash();
    test_shard_range();
    return TEST_DONE();
}
