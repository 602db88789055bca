/* metrics/chunk.h — compressed runs of samples (t ms, float value).
 *
 * Two encodings, both lossless on the value's bits (NaN payloads, the stale
 * marker K_STALE_NAN_BITS, +-Inf and -0.0 come back bit-exactly) and on any
 * int64 timestamps (differences wrap modulo 2^64, so huge jumps and negative
 * times are fine):
 *
 *  K_CHUNK_XOR — Gorilla (Pelkonen et al., VLDB 2015), used for the head's
 *    chunks because it appends one sample at a time: delta-of-delta
 *    timestamps in prefix-coded buckets (0 / 7 / 14 / 20 / 64 bits), values
 *    XOR'd with the previous one (leading/trailing zero windows).
 *    Layout: u8 1, u16 big-endian sample count, bit stream.
 *
 *  K_CHUNK_PACKED — written once, for blocks: the same delta-of-delta
 *    timestamps (or plain deltas, whichever is smaller) divided by their
 *    common divisor and bit-packed in groups of 16 with one width per group;
 *    values, when every value of the chunk is a decimal m / 10^d with
 *    |m| <= 2^53 that divides back to the exact same bits, as integers m
 *    coded like the timestamps (what exporters print: "12345.67", byte
 *    counts, 0/1 flags); otherwise Gorilla XOR.
 *    Layout: u8 2, uvarint n, varint t0, [u8 order, uvarint gcd] (n > 1),
 *    u8 value mode, mode header, then the bit stream.
 *
 * Chunks never hold their own length: containers (head chunk files, block
 * chunk files) frame them.
 */
#ifndef KEELD_METRICS_CHUNK_H
#define KEELD_METRICS_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/enc.h"

enum { K_CHUNK_XOR = 1, K_CHUNK_PACKED = 2 };

#define K_HEAD_CHUNK_SAMPLES 120   /* a head chunk is closed at this many samples */
#define K_BLOCK_CHUNK_SAMPLES 1024 /* block chunks hold up to this many */

/* An open XOR chunk: the appender state lives next to the bytes so a
 * series can keep appending one sample at a time.  Zero-initialized is
 * empty.  Owns buf (k_xorapp_free).  Callers keep timestamps increasing
 * (the format itself does not need it). */
typedef struct k_xorapp {
  uint8_t *buf;
  uint32_t cap;   /* bytes of buf */
  uint32_t nbits; /* bits used, header included */
  uint16_t n;     /* samples */
  uint8_t lead, trail; /* current XOR window; lead 0xff: none yet */
  int64_t mint, t;     /* first and last timestamp (valid when n > 0) */
  uint64_t tdelta;     /* last timestamp delta, wrapping */
  uint64_t vbits;      /* last value's bits */
} k_xorapp_t;

/* Appends one sample: 0 or KEEL_ENOMEM (then the chunk is unchanged). */
int k_xorapp_add(k_xorapp_t *a, int64_t t, double v);
/* Bytes of the chunk so far (a->buf[0..bytes) is a complete XOR chunk). */
static inline size_t k_xorapp_bytes(const k_xorapp_t *a) { return (a->nbits + 7) / 8; }
/* Empties the chunk; keeps the buffer for the next one. */
void k_xorapp_reset(k_xorapp_t *a);
void k_xorapp_free(k_xorapp_t *a);

/* Number of samples in a chunk of either encoding: 0, or KEEL_ECORRUPT. */
int k_chunk_count(const uint8_t *p, size_t len, size_t *n);
/* Decodes a whole chunk into t[0..*n) and v[0..*n); cap is their room and
 * MUST be >= k_chunk_count.  KEEL_ECORRUPT when the bytes do not decode. */
int k_chunk_decode(const uint8_t *p, size_t len, int64_t *t, double *v, size_t cap, size_t *n);

/* Appends a K_CHUNK_PACKED chunk of t[0..n), v[0..n) (n >= 1) to out:
 * 0, KEEL_ENOMEM or KEEL_ETOOBIG (out's cap). */
int k_chunk_pack(const int64_t *t, const double *v, size_t n, k_bytes_t *out);

#endif
