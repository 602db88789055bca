/* Unit tests for keel/crypto.h: hashing, hex, random ids, ct_equal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keel/crypto.h"
#include "keel/err.h"

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

static int setup(void **state) { return keel_crypto_init() == 0 ? 0 : -1; }

static void assert_b32(const char *s, size_t n) {
  assert_int_equal(strlen(s), n);
  for (size_t i = 0; i < n; i++)
    if (!strchr(b32, s[i])) fail_msg("'%c' (0x%02x) at %zu is not base32", s[i], (unsigned char)s[i], i);
}

static void test_hash_known_vectors(void **state) {
  char hex[KEEL_HASH_HEX];
  keel_hash_hex(hex, "", 0);
  assert_string_equal(hex, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  keel_hash_hex(hex, "abc", 3);
  assert_string_equal(hex, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
}

static void test_hash_consistent(void **state) {
  uint8_t raw[KEEL_HASH_BYTES];
  char hex[KEEL_HASH_HEX], hex2[KEEL_HASH_HEX], a[KEEL_HASH_HEX], b[KEEL_HASH_HEX];
  const char data[] = "the quick brown fox\0with a NUL";

  keel_hash(raw, data, sizeof data - 1);
  keel_hex(hex, raw, sizeof raw);
  keel_hash_hex(hex2, data, sizeof data - 1);
  assert_string_equal(hex, hex2);
  assert_int_equal(strlen(hex2), KEEL_HASH_HEX - 1);

  /* Bytes after the NUL count; a one-byte change changes the hash. */
  keel_hash_hex(a, data, strlen(data));
  assert_string_not_equal(a, hex2);
  keel_hash_hex(a, "abd", 3);
  keel_hash_hex(b, "abc", 3);
  assert_string_not_equal(a, b);
}

static void test_hex_known(void **state) {
  static const uint8_t bin[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
  char out[2 * sizeof bin + 1];
  keel_hex(out, bin, sizeof bin);
  assert_string_equal(out, "00017f80abff");
  keel_hex(out, bin, 0);
  assert_string_equal(out, "");
}

static void test_hex_round_trip(void **state) {
  uint8_t bin[64], back[64];
  char hex[129];
  for (size_t n = 0; n <= sizeof bin; n++) {
    for (size_t i = 0; i < n; i++) bin[i] = (uint8_t)(i * 37 + n * 11 + 5);
    memset(back, 0xee, sizeof back);
    keel_hex(hex, bin, n);
    assert_int_equal(strlen(hex), 2 * n);
    assert_int_equal(keel_unhex(back, n, hex), 0);
    assert_memory_equal(back, bin, n);
  }
}

static void test_unhex_upper_case(void **state) {
  uint8_t bin[3];
  assert_int_equal(keel_unhex(bin, 3, "ABcdEf"), 0);
  assert_int_equal(bin[0], 0xab);
  assert_int_equal(bin[1], 0xcd);
  assert_int_equal(bin[2], 0xef);
}

static void test_unhex_rejects(void **state) {
  uint8_t bin[4];
  assert_int_equal(keel_unhex(bin, 2, "abc"), KEEL_EINVAL);    /* odd, short */
  assert_int_equal(keel_unhex(bin, 1, "abc"), KEEL_EINVAL);    /* odd, long */
  assert_int_equal(keel_unhex(bin, 2, "ab"), KEEL_EINVAL);     /* too short */
  assert_int_equal(keel_unhex(bin, 1, "abcd"), KEEL_EINVAL);   /* too long */
  assert_int_equal(keel_unhex(bin, 1, "zz"), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 1, "0g"), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 1, "g0"), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 2, "0x12"), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 2, " a12"), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 2, "12-3"), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 1, ""), KEEL_EINVAL);
  assert_int_equal(keel_unhex(bin, 0, ""), 0);
}

static void test_random_id(void **state) {
  char ids[64][32];
  for (size_t i = 0; i < 64; i++) {
    keel_random_id(ids[i], sizeof ids[i], "usr_");
    assert_int_equal(strncmp(ids[i], "usr_", 4), 0);
    assert_b32(ids[i] + 4, 16);
    for (size_t j = 0; j < i; j++) assert_string_not_equal(ids[i], ids[j]);
  }
}

static void test_random_id_sizes(void **state) {
  char out[32];
  /* Exactly strlen(prefix) + 17 is enough. */
  memset(out, '#', sizeof out);
  keel_random_id(out, 3 + 17, "tk_");
  assert_int_equal(strncmp(out, "tk_", 3), 0);
  assert_b32(out + 3, 16);
  assert_int_equal(out[20], '#');
  /* Empty prefix. */
  keel_random_id(out, sizeof out, "");
  assert_b32(out, 16);
  /* Too small: no partial id, and nothing is written past outsz. */
  memset(out, '#', sizeof out);
  keel_random_id(out, 3 + 16, "tk_");
  assert_int_equal(out[0], '\0');
  for (size_t i = 3 + 16; i < sizeof out; i++) assert_int_equal(out[i], '#');
}

static void test_random_b32(void **state) {
  char a[51], b[51];
  memset(a, '#', sizeof a);
  keel_random_b32(a, 0);
  assert_string_equal(a, "");
  keel_random_b32(a, 50);
  keel_random_b32(b, 50);
  assert_b32(a, 50);
  assert_b32(b, 50);
  assert_string_not_equal(a, b);
}

static void test_ct_equal(void **state) {
  uint8_t a[32], b[32];
  for (size_t i = 0; i < sizeof a; i++) a[i] = b[i] = (uint8_t)i;
  assert_int_equal(keel_ct_equal(a, b, sizeof a), 1);
  assert_int_equal(keel_ct_equal(a, b, 0), 1);
  b[0] ^= 1;
  assert_int_equal(keel_ct_equal(a, b, sizeof a), 0);
  assert_int_equal(keel_ct_equal(a + 1, b + 1, sizeof a - 1), 1);
  b[0] ^= 1;
  b[31] ^= 0x80;
  assert_int_equal(keel_ct_equal(a, b, sizeof a), 0);
  assert_int_equal(keel_ct_equal(a, b, sizeof a - 1), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hash_known_vectors),
      cmocka_unit_test(test_hash_consistent),
      cmocka_unit_test(test_hex_known),
      cmocka_unit_test(test_hex_round_trip),
      cmocka_unit_test(test_unhex_upper_case),
      cmocka_unit_test(test_unhex_rejects),
      cmocka_unit_test(test_random_id),
      cmocka_unit_test(test_random_id_sizes),
      cmocka_unit_test(test_random_b32),
      cmocka_unit_test(test_ct_equal),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
