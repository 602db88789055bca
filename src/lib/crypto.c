#include "keel/crypto.h"

#include <sodium.h>
#include <string.h>

#include "keel/err.h"

int keel_crypto_init(void) { return sodium_init() < 0 ? KEEL_EIO : 0; }

void keel_hash(uint8_t out[KEEL_HASH_BYTES], const void *p, size_t n) {
  crypto_generichash(out, KEEL_HASH_BYTES, p, n, NULL, 0);
}

void keel_hash_hex(char out[KEEL_HASH_HEX], const void *p, size_t n) {
  uint8_t h[KEEL_HASH_BYTES];
  keel_hash(h, p, n);
  keel_hex(out, h, sizeof h);
}

void keel_hex(char *out, const uint8_t *bin, size_t n) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[bin[i] >> 4];
    out[2 * i + 1] = d[bin[i] & 15];
  }
  out[2 * n] = '\0';
}

static int nib(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int keel_unhex(uint8_t *bin, size_t n, const char *hex) {
  if (strlen(hex) != 2 * n) return KEEL_EINVAL;
  for (size_t i = 0; i < n; i++) {
    int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return KEEL_EINVAL;
    bin[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

void keel_random_b32(char *out, size_t nchars) {
  static const char a[] = "abcdefghijklmnopqrstuvwxyz234567";
  unsigned char r[64];
  /* One getrandom per 64 characters, not one per character (ids are made
   * for every request and every run); 256 is a multiple of 32, so the low
   * five bits of a random byte are uniform. */
  for (size_t i = 0; i < nchars; i++) {
    if (i % sizeof r == 0) randombytes_buf(r, sizeof r);
    out[i] = a[r[i % sizeof r] & 31];
  }
  sodium_memzero(r, sizeof r);
  out[nchars] = '\0';
}

void keel_random_id(char *out, size_t outsz, const char *prefix) {
  size_t pl = strlen(prefix);
  if (outsz < pl + 17) {
    if (outsz) out[0] = '\0';
    return;
  }
  memcpy(out, prefix, pl);
  keel_random_b32(out + pl, 16);
}

int keel_ct_equal(const void *a, const void *b, size_t n) { return sodium_memcmp(a, b, n) == 0; }
