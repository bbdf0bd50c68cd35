/* test_uuid — v4 layout and uniqueness, v5 against RFC 9562's example, parsing. */
/* test-passes: asan */
#include "testlib.h"
#include "uuid.h"

static const uint8_t DNS_NAMESPACE[16] = {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1,
                                          0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};

static bool canonical_lower(const char *s)
{
    if (strlen(s) != 36) return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_v4(void)
{
    enum { N = 2000 };
    static char ids[N][UUID_STR_BUF];
    bool all_ok = true, all_layout = true;
    for (int i = 0; i < N; i++) {
        if (!uuid_v4(ids[i])) all_ok = false;
        if (!canonical_lower(ids[i]) || ids[i][14] != '4' || !strchr("89ab", ids[i][19]))
            all_layout = false;
    }
    CHECK(all_ok, "uuid_v4 succeeds %d times", N);
    CHECK(all_layout, "every v4 is 8-4-4-4-12 lower-case hex, version 4, variant 10xx (e.g. %s)",
          ids[0]);
    qsort(ids, N, UUID_STR_BUF, cmp_str);
    int dups = 0;
    for (int i = 1; i < N; i++) dups += strcmp(ids[i - 1], ids[i]) == 0;
    CHECK_INT(dups, 0, "%d v4 ids are all different", N);
    /* The variant nibble takes all four values 8,9,a,b: the random bits around it survive. */
    bool seen[4] = {false};
    for (int i = 0; i < N; i++) seen[strchr("89ab", ids[i][19]) - "89ab"] = true;
    CHECK(seen[0] && seen[1] && seen[2] && seen[3], "v4 variant nibble spans 8,9,a,b");
}

static void test_v5(void)
{
    char out[UUID_STR_BUF];
    uuid_v5(DNS_NAMESPACE, "www.example.com", 15, out);
    CHECK_STR(out, "2ed6657d-e927-568b-95e1-2665a8aea6a2", "v5 RFC 9562 example (www.example.com)");

    char again[UUID_STR_BUF];
    uuid_v5(DNS_NAMESPACE, "www.example.com", 15, again);
    CHECK_STR(again, out, "v5 is deterministic");

    uuid_v5(DNS_NAMESPACE, "www.example.org", 15, again);
    CHECK(strcmp(again, out) != 0, "v5 differs for another name");
    CHECK(again[14] == '5' && strchr("89ab", again[19]), "v5 has version 5, variant 10xx (%s)",
          again);

    uuid_v5(CHATFLOW_MESSAGE_NAMESPACE, "www.example.com", 15, again);
    CHECK(strcmp(again, out) != 0, "v5 differs in another namespace");

    /* name_len is honoured: the bytes past it do not count. */
    uuid_v5(DNS_NAMESPACE, "www.example.comXYZ", 15, again);
    CHECK_STR(again, out, "v5 hashes exactly name_len bytes");

    uuid_v5(CHATFLOW_MESSAGE_NAMESPACE, "", 0, again);
    CHECK(canonical_lower(again) && again[14] == '5', "v5 of the empty name is a UUID (%s)", again);
}

static void test_parse(void)
{
    uint8_t b[16];
    CHECK(uuid_parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8", b) &&
              memcmp(b, DNS_NAMESPACE, 16) == 0,
          "uuid_parse reads the DNS namespace");
    CHECK(uuid_parse("6BA7B810-9DAD-11D1-80B4-00C04FD430C8", b) &&
              memcmp(b, DNS_NAMESPACE, 16) == 0,
          "uuid_parse accepts upper case");
    char v4[UUID_STR_BUF];
    uuid_v4(v4);
    CHECK(uuid_parse(v4, b) && b[6] >> 4 == 4 && (b[8] & 0xc0) == 0x80,
          "uuid_parse reads a v4 back with its version and variant bits");
    CHECK(uuid_parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8", NULL), "uuid_parse with NULL out");

    const char *bad[] = {
        "",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c",   /* short */
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8a", /* long */
        "6ba7b8109dad11d180b400c04fd430c8",      /* no dashes */
        "6ba7b810-9dad-11d1-80b4_00c04fd430c8",  /* wrong separator */
        "6ba7b81-09dad-11d1-80b4-00c04fd430c8",  /* dash misplaced */
        "6ba7b810-9dad-11d1-80b4-00c04fd430cg",  /* not hex */
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
        " 6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!uuid_parse(bad[i], b), "uuid_parse rejects \"%s\"", bad[i]);
    CHECK(!uuid_parse(NULL, b), "uuid_parse rejects NULL");
}

int main(void)
{
    test_v4();
    test_v5();
    test_parse();
    return TEST_DONE();
}
