/* metrics/enc.h — byte and bit level helpers shared by the TSDB's formats
 * (chunks, WAL records, block index): varints, zigzag, little-endian
 * fixed-width integers, a capped byte buffer, a bit writer and reader, and
 * CRC32C.  Internal to src/keeld/metrics/.
 */
#ifndef KEELD_METRICS_ENC_H
#define KEELD_METRICS_ENC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "keel/err.h"

/* ---- integers --------------------------------------------------------------- */

static inline uint64_t k_zz(int64_t v) { return ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63)); }
static inline int64_t k_unzz(uint64_t u) { return (int64_t)((u >> 1) ^ (0 - (u & 1))); }

/* Writes v as a LEB128 varint at p (room for 10 bytes); returns bytes written. */
static inline size_t k_put_uvarint(uint8_t *p, uint64_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    p[i++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[i++] = (uint8_t)v;
  return i;
}

/* Reads a varint from *p (never past end) and advances *p: 0, or -1 when
 * truncated or longer than 10 bytes. */
static inline int k_get_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  const uint8_t *q = *p;
  uint64_t r = 0;
  for (unsigned sh = 0; sh < 70 && q < end; sh += 7) {
    uint8_t b = *q++;
    r |= (uint64_t)(b & 0x7f) << sh;
    if (!(b & 0x80)) {
      *p = q;
      *v = r;
      return 0;
    }
  }
  return -1;
}

static inline int k_get_varint(const uint8_t **p, const uint8_t *end, int64_t *v) {
  uint64_t u;
  if (k_get_uvarint(p, end, &u)) return -1;
  *v = k_unzz(u);
  return 0;
}

static inline void k_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t k_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void k_put_u64(uint8_t *p, uint64_t v) {
  k_put_u32(p, (uint32_t)v);
  k_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t k_get_u64(const uint8_t *p) {
  return (uint64_t)k_get_u32(p) | (uint64_t)k_get_u32(p + 4) << 32;
}

static inline uint64_t k_f2u(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}
static inline double k_u2f(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* ---- a capped byte buffer ------------------------------------------------------ */

/* Owns p.  Never grows past max bytes (KEEL_ETOOBIG); max 0 = no cap.
 * Zero-initialized is empty. */
typedef struct k_bytes {
  uint8_t *p;
  size_t len, cap, max;
} k_bytes_t;

/* Makes room for extra more bytes: 0, KEEL_ETOOBIG or KEEL_ENOMEM. */
int k_bytes_reserve(k_bytes_t *b, size_t extra);
int k_bytes_append(k_bytes_t *b, const void *p, size_t n);
void k_bytes_free(k_bytes_t *b);

/* Appends a varint; the caller reserved 10 bytes. */
static inline void k_bytes_uvarint(k_bytes_t *b, uint64_t v) { b->len += k_put_uvarint(b->p + b->len, v); }
static inline void k_bytes_varint(k_bytes_t *b, int64_t v) { k_bytes_uvarint(b, k_zz(v)); }

/* ---- bits ---------------------------------------------------------------------- */

/* Writes the low n (0..64) bits of v, most significant first, at bit
 * position *nbits of buf.  buf MUST have room for (*nbits + n + 7) / 8
 * bytes plus 8 bytes of slack: up to 8 bytes from the current one are
 * stored at once, and bytes past the new end are zeroed. */
static inline void k_bits_put32(uint8_t *buf, uint32_t *nbits, uint64_t v, unsigned n) {
  uint32_t pos = *nbits;
  uint8_t *p = buf + (pos >> 3);
  unsigned off = pos & 7;
  uint64_t w = (uint64_t)(p[0] & (uint8_t)(0xff00u >> off)) << 56; /* bits already there */
  w |= (v & ((UINT64_C(1) << n) - 1)) << (64 - off - n);          /* n <= 32: fits */
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(w >> (56 - 8 * i));
  *nbits = pos + n;
}

static inline void k_bits_put(uint8_t *buf, uint32_t *nbits, uint64_t v, unsigned n) {
  if (n > 32) {
    k_bits_put32(buf, nbits, v >> 32, n - 32);
    n = 32;
  }
  if (n) k_bits_put32(buf, nbits, v, n);
}

/* A bit reader over a borrowed buffer. */
typedef struct k_bitr {
  const uint8_t *p;
  uint64_t nbits, pos;
} k_bitr_t;

static inline uint64_t k_load_be64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  w = __builtin_bswap64(w);
#endif
  return w;
}

/* Reads n (0..64) bits into *v: 0, or -1 past the end. */
static inline int k_bits_get(k_bitr_t *r, unsigned n, uint64_t *v) {
  uint64_t out = 0, pos = r->pos;
  if (pos > r->nbits || n > r->nbits - pos) return -1;
  r->pos = pos + n;
  if (n == 0) {
    *v = 0;
    return 0;
  }
  /* a whole 8-byte window inside the buffer: one load */
  if (n <= 56 && (pos >> 3) + 8 <= r->nbits >> 3) {
    *v = (k_load_be64(r->p + (pos >> 3)) << (pos & 7)) >> (64 - n);
    return 0;
  }
  while (n > 0) {
    unsigned used = (unsigned)(pos & 7), room = 8 - used, take = n < room ? n : room;
    uint8_t b = r->p[pos >> 3];
    out = (out << take) | ((uint64_t)(b >> (room - take)) & ((1u << take) - 1));
    pos += take;
    n -= take;
  }
  *v = out;
  return 0;
}

static inline int k_bit_get(k_bitr_t *r) {
  uint64_t pos = r->pos;
  if (pos >= r->nbits) return -1;
  r->pos = pos + 1;
  return (r->p[pos >> 3] >> (7 - (pos & 7))) & 1;
}

/* ---- CRC32C (Castagnoli) ----------------------------------------------------------- */

/* crc of p[0..n) continuing from crc (start with 0).  Uses SSE4.2 when the
 * CPU has it. */
uint32_t k_crc32c(uint32_t crc, const void *p, size_t n);

/* ---- files ------------------------------------------------------------------------- */

/* Writes all n bytes of p to fd (retrying on EINTR): 0, or -1 with errno. */
int k_write_all(int fd, const void *p, size_t n);

/* fsyncs the directory dir (so entries created in it last): 0, or -1 with errno. */
int k_dir_fsync(const char *dir);

#endif
