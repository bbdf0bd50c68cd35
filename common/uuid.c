/*
 * uuid — RFC 9562 UUIDs (contract in uuid.h).
 *
 * Randomness and SHA-1 come from OpenSSL; only the bit layout and the 8-4-4-4-12 text form are
 * written here (libuuid is not one of the chosen dependencies, and the layout is a few lines).
 */
#include "uuid.h"

#include <pthread.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

/* Fixed for the life of the product: every message id derived from a clientMessageId depends on
 * it, so a retry after an upgrade still maps to the id of the first attempt. */
const uint8_t CHATFLOW_MESSAGE_NAMESPACE[16] = {
    0x03, 0x3a, 0x2e, 0x2f, 0xd8, 0xa6, 0x4e, 0x91, 0x96, 0x1b, 0xf9, 0x66, 0x9b, 0xf1, 0x80, 0xf4,
}; /* 033a2e2f-d8a6-4e91-961b-f9669bf180f4 */

static void uuid_format(const uint8_t b[16], char out[UUID_STR_BUF])
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 0x0f];
    }
    *o = '\0';
}

static void set_version_and_variant(uint8_t b[16], unsigned version)
{
    b[6] = (uint8_t)((b[6] & 0x0f) | (version << 4));
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10xx: RFC 9562 */
}

bool uuid_v4(char out[UUID_STR_BUF])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        out[0] = '\0';
        return false;
    }
    set_version_and_variant(b, 4);
    uuid_format(b, out);
    return true;
}

/* SHA-1 is fetched once: OpenSSL 3 otherwise looks the algorithm up on every digest, which
 * costs a lock per message id. The fetched object lives as long as the process. */
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha1_md;

static void sha1_fetch(void) { sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL); }

/* uuid.h declares no failure for v5; if OpenSSL cannot hash (no provider with SHA-1, out of
 * memory) out is set to "", so a caller that checks out[0] can tell (chat_message_assign_id
 * does). */
void uuid_v5(const uint8_t ns[16], const char *name, size_t name_len, char out[UUID_STR_BUF])
{
    out[0] = '\0';
    pthread_once(&sha1_once, sha1_fetch);
    if (!sha1_md) return;

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return;
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    int ok = EVP_DigestInit_ex2(ctx, sha1_md, NULL) == 1 && EVP_DigestUpdate(ctx, ns, 16) == 1 &&
             (name_len == 0 || EVP_DigestUpdate(ctx, name, name_len) == 1) &&
             EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 && digest_len >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) return;

    uint8_t b[16];
    memcpy(b, digest, 16);
    set_version_and_variant(b, 5);
    uuid_format(b, out);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool uuid_parse(const char *s, uint8_t out[16])
{
    if (!s) return false;
    int byte = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
            continue;
        }
        int hi = hex_value(s[i]);
        if (hi < 0) return false;
        int lo = hex_value(s[++i]);
        if (lo < 0) return false;
        if (out) out[byte] = (uint8_t)(hi << 4 | lo);
        byte++;
    }
    return s[36] == '\0';
}
