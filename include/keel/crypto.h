/* keel/crypto.h — hashing, random identifiers and tokens (libsodium).
 *
 * keel_crypto_init MUST be called once before any other function here.
 */
#ifndef KEEL_CRYPTO_H
#define KEEL_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_HASH_BYTES 32                        /* BLAKE2b-256 */
#define KEEL_HASH_HEX (KEEL_HASH_BYTES * 2 + 1)   /* with NUL */

int keel_crypto_init(void);

/* BLAKE2b-256 of p[0..n) */
void keel_hash(uint8_t out[KEEL_HASH_BYTES], const void *p, size_t n);
/* Lower-case hex of BLAKE2b-256 of p[0..n), NUL-terminated. */
void keel_hash_hex(char out[KEEL_HASH_HEX], const void *p, size_t n);

/* Lower-case hex of bin[0..n) into out (2n+1 bytes). */
void keel_hex(char *out, const uint8_t *bin, size_t n);
/* Parses exactly 2n hex digits; KEEL_EINVAL otherwise. */
int keel_unhex(uint8_t *bin, size_t n, const char *hex);

/* A random identifier: prefix + 16 chars of lower-case base32 (80 bits).
 * out must hold strlen(prefix) + 17 bytes. */
void keel_random_id(char *out, size_t outsz, const char *prefix);

/* Random bytes encoded as lower-case base32 (no padding). */
void keel_random_b32(char *out, size_t nchars);

/* Constant-time equality of two equal-length buffers: 1 if equal. */
int keel_ct_equal(const void *a, const void *b, size_t n);

#endif
