/* chunk.c — the XOR (Gorilla) and PACKED chunk encodings; see chunk.h. */
#include "metrics/chunk.h"

#include <stdlib.h>
#include <string.h>

#define XOR_HDR_BITS 24
#define NEG_ZERO_BITS UINT64_C(0x8000000000000000)

/* ---- shared pieces ---------------------------------------------------------- */

static uint64_t sext(uint64_t v, unsigned n) {
  uint64_t m = UINT64_C(1) << (n - 1);
  return (v ^ m) - m;
}

/* Delta-of-delta in prefix buckets: 0 | 10+7 | 110+14 | 1110+20 | 1111+64. */
static void put_dod(uint8_t *b, uint32_t *nb, uint64_t dodu) {
  int64_t dod = (int64_t)dodu;
  if (dod == 0) {
    k_bits_put(b, nb, 0, 1);
  } else if (dod >= -64 && dod <= 63) {
    k_bits_put(b, nb, 2, 2);
    k_bits_put(b, nb, dodu, 7);
  } else if (dod >= -8192 && dod <= 8191) {
    k_bits_put(b, nb, 6, 3);
    k_bits_put(b, nb, dodu, 14);
  } else if (dod >= -(INT64_C(1) << 19) && dod < (INT64_C(1) << 19)) {
    k_bits_put(b, nb, 14, 4);
    k_bits_put(b, nb, dodu, 20);
  } else {
    k_bits_put(b, nb, 15, 4);
    k_bits_put(b, nb, dodu, 64);
  }
}

static int get_dod(k_bitr_t *r, uint64_t *dod) {
  static const unsigned width[4] = {7, 14, 20, 64};
  int i = 0, bit;
  uint64_t v;
  while (i < 4) {
    if ((bit = k_bit_get(r)) < 0) return -1;
    if (!bit) break;
    i++;
  }
  if (i == 0) {
    *dod = 0;
    return 0;
  }
  if (k_bits_get(r, width[i - 1], &v)) return -1;
  *dod = width[i - 1] == 64 ? v : sext(v, width[i - 1]);
  return 0;
}

/* Gorilla value: 0 | 10 + bits in the current window | 11 + 5 lead + 6 len + bits. */
static void put_xor(uint8_t *b, uint32_t *nb, uint64_t x, uint8_t *lead, uint8_t *trail) {
  unsigned l, tr, sig;
  if (x == 0) {
    k_bits_put(b, nb, 0, 1);
    return;
  }
  l = (unsigned)__builtin_clzll(x);
  tr = (unsigned)__builtin_ctzll(x);
  if (l > 31) l = 31;
  if (*lead != 0xff && l >= *lead && tr >= *trail) {
    k_bits_put(b, nb, 2, 2);
    k_bits_put(b, nb, x >> *trail, 64 - *lead - *trail);
    return;
  }
  sig = 64 - l - tr;
  k_bits_put(b, nb, 3, 2);
  k_bits_put(b, nb, l, 5);
  k_bits_put(b, nb, sig & 63, 6);
  k_bits_put(b, nb, x >> tr, sig);
  *lead = (uint8_t)l;
  *trail = (uint8_t)tr;
}

/* The "11" case of get_xor, after its two control bits: new window. */
static int get_xor_tail(k_bitr_t *r, uint64_t *x, uint8_t *lead, uint8_t *trail) {
  uint64_t l, sig, v;
  if (k_bits_get(r, 5, &l) || k_bits_get(r, 6, &sig)) return -1;
  if (sig == 0) sig = 64;
  if (l + sig > 64) return -1;
  if (k_bits_get(r, (unsigned)sig, &v)) return -1;
  *trail = (uint8_t)(64 - l - sig);
  *lead = (uint8_t)l;
  *x = *trail == 64 ? 0 : v << *trail;
  return 0;
}

static int get_xor(k_bitr_t *r, uint64_t *x, uint8_t *lead, uint8_t *trail) {
  int bit;
  uint64_t v;
  if ((bit = k_bit_get(r)) < 0) return -1;
  if (!bit) {
    *x = 0;
    return 0;
  }
  if ((bit = k_bit_get(r)) < 0) return -1;
  if (!bit) {
    if (*lead == 0xff) return -1;
    if (k_bits_get(r, 64u - *lead - *trail, &v)) return -1;
    *x = v << *trail;
    return 0;
  }
  return get_xor_tail(r, x, lead, trail);
}

/* ---- XOR appender ------------------------------------------------------------ */

static int xor_reserve(k_xorapp_t *a, uint32_t more_bits) {
  size_t need = (a->nbits + more_bits + 7) / 8 + 8, cap;
  uint8_t *p;
  if (need <= a->cap) return 0;
  cap = a->cap ? a->cap : 48;
  while (cap < need) cap = (cap + cap / 2 + 15) & ~(size_t)15;
  p = realloc(a->buf, cap);
  if (!p) return KEEL_ENOMEM;
  a->buf = p;
  a->cap = (uint32_t)cap;
  return 0;
}

int k_xorapp_add(k_xorapp_t *a, int64_t t, double v) {
  uint64_t vb = k_f2u(v);
  if (a->n == UINT16_MAX) return KEEL_ETOOBIG;
  /* worst case of one sample: 4 + 64 bits of time, 2 + 5 + 6 + 64 of value */
  if (xor_reserve(a, a->n ? 145 : XOR_HDR_BITS + 128)) return KEEL_ENOMEM;
  if (a->n == 0) {
    a->nbits = 0;
    k_bits_put(a->buf, &a->nbits, K_CHUNK_XOR, 8);
    k_bits_put(a->buf, &a->nbits, 0, 16);
    k_bits_put(a->buf, &a->nbits, (uint64_t)t, 64);
    k_bits_put(a->buf, &a->nbits, vb, 64);
    a->mint = t;
    a->tdelta = 0;
    a->lead = 0xff;
    a->trail = 0;
  } else {
    uint64_t d = (uint64_t)t - (uint64_t)a->t;
    put_dod(a->buf, &a->nbits, d - a->tdelta);
    a->tdelta = d;
    put_xor(a->buf, &a->nbits, vb ^ a->vbits, &a->lead, &a->trail);
  }
  a->t = t;
  a->vbits = vb;
  a->n++;
  a->buf[1] = (uint8_t)(a->n >> 8);
  a->buf[2] = (uint8_t)a->n;
  return 0;
}

void k_xorapp_reset(k_xorapp_t *a) {
  a->n = 0;
  a->nbits = 0;
}

void k_xorapp_free(k_xorapp_t *a) {
  free(a->buf);
  memset(a, 0, sizeof *a);
}

/* Fast paths of get_dod and get_xor: while 8 whole bytes remain from the
 * read position, one load gives at least 57 bits, enough for every field
 * but the 64-bit ones, which go through k_bits_get as before.  The bits
 * read and the errors reported are exactly the slow path's. */
static inline int fast_ok(const k_bitr_t *r) { return (r->pos >> 3) + 8 <= r->nbits >> 3; }

static inline uint64_t peek57(const k_bitr_t *r) {
  return k_load_be64(r->p + (r->pos >> 3)) << (r->pos & 7);
}

static inline int get_dod_fast(k_bitr_t *r, uint64_t *dod) {
  static const unsigned width[4] = {7, 14, 20, 64};
  uint64_t w;
  unsigned ones, pre;
  if (!fast_ok(r)) return get_dod(r, dod);
  w = peek57(r);
  if (!(w >> 63)) {
    r->pos++;
    *dod = 0;
    return 0;
  }
  ones = (unsigned)__builtin_clzll(~w); /* w has a 1 on top: ~w != 0 */
  if (ones >= 4) {
    r->pos += 4;
    return k_bits_get(r, 64, dod) ? -1 : 0;
  }
  pre = ones + 1; /* the ones and their terminating 0 */
  r->pos += pre + width[ones - 1];
  *dod = sext((w << pre) >> (64 - width[ones - 1]), width[ones - 1]);
  return 0;
}

static inline int get_xor_fast(k_bitr_t *r, uint64_t *x, uint8_t *lead, uint8_t *trail) {
  uint64_t w;
  if (!fast_ok(r)) return get_xor(r, x, lead, trail);
  w = peek57(r);
  if (!(w >> 63)) {
    r->pos++;
    *x = 0;
    return 0;
  }
  if (!((w >> 62) & 1)) {
    unsigned n;
    uint64_t v;
    if (*lead == 0xff) return -1;
    n = 64u - *lead - *trail;
    if (n <= 55) {
      r->pos += 2 + n;
      *x = n ? ((w << 2) >> (64 - n)) << *trail : 0;
      return 0;
    }
    r->pos += 2;
    if (k_bits_get(r, n, &v)) return -1;
    *x = v << *trail;
    return 0;
  }
  r->pos += 2;
  return get_xor_tail(r, x, lead, trail);
}

static int xor_decode(const uint8_t *p, size_t len, int64_t *t, double *v, size_t cap,
                      size_t *nout) {
  size_t n;
  uint64_t tt, vb, delta = 0, dod, x;
  uint8_t lead = 0xff, trail = 0;
  k_bitr_t r;
  if (len < 3) return KEEL_ECORRUPT;
  n = (size_t)p[1] << 8 | p[2];
  if (n > cap) return KEEL_ECORRUPT;
  *nout = 0;
  if (n == 0) return 0;
  r = (k_bitr_t){p, (uint64_t)len * 8, XOR_HDR_BITS};
  if (k_bits_get(&r, 64, &tt) || k_bits_get(&r, 64, &vb)) return KEEL_ECORRUPT;
  t[0] = (int64_t)tt;
  v[0] = k_u2f(vb);
  for (size_t i = 1; i < n; i++) {
    if (get_dod_fast(&r, &dod) || get_xor_fast(&r, &x, &lead, &trail)) return KEEL_ECORRUPT;
    delta += dod;
    tt += delta;
    vb ^= x;
    t[i] = (int64_t)tt;
    v[i] = k_u2f(vb);
  }
  *nout = n;
  return 0;
}

/* ---- PACKED -------------------------------------------------------------------- */

#define PACK_GROUP 16
#define MAX_DEC 22

static const double p10[MAX_DEC + 1] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static unsigned width_of(uint64_t o) {
  unsigned w = o ? 64 - (unsigned)__builtin_clzll(o) : 0;
  return w == 63 ? 64 : w; /* the 6-bit width code 63 means 64 */
}

static uint64_t grp_bits(const uint64_t *z, size_t m) {
  uint64_t bits = 0;
  for (size_t i = 0; i < m; i += PACK_GROUP) {
    size_t e = i + PACK_GROUP < m ? i + PACK_GROUP : m;
    uint64_t o = 0;
    for (size_t j = i; j < e; j++) o |= z[j];
    bits += 6 + (uint64_t)width_of(o) * (e - i);
  }
  return bits;
}

static void grp_put(uint8_t *b, uint32_t *nb, const uint64_t *z, size_t m) {
  for (size_t i = 0; i < m; i += PACK_GROUP) {
    size_t e = i + PACK_GROUP < m ? i + PACK_GROUP : m;
    uint64_t o = 0;
    unsigned w;
    for (size_t j = i; j < e; j++) o |= z[j];
    w = width_of(o);
    k_bits_put(b, nb, w == 64 ? 63 : w, 6);
    for (size_t j = i; j < e; j++) k_bits_put(b, nb, z[j], w);
  }
}

static int grp_get(k_bitr_t *r, uint64_t *z, size_t m) {
  for (size_t i = 0; i < m; i += PACK_GROUP) {
    size_t e = i + PACK_GROUP < m ? i + PACK_GROUP : m;
    uint64_t code;
    unsigned w;
    if (k_bits_get(r, 6, &code)) return -1;
    w = code == 63 ? 64 : (unsigned)code;
    for (size_t j = i; j < e; j++)
      if (k_bits_get(r, w, &z[j])) return -1;
  }
  return 0;
}

static uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* How x[1..n) is coded after x[0]: from the first differences d, either
 * (1) zigzag(d / g), (2) zigzag((d - previous d) / g), or (3) frame of
 * reference (d - min d) / g, where g is the differences' common divisor;
 * the smallest once bit-packed wins. */
typedef struct seqplan {
  int order;
  uint64_t g, bits;
  int64_t base; /* order 3: the minimum difference */
  const uint64_t *z;
} seqplan_t;

static void seq_plan(const int64_t *x, size_t n, uint64_t *d, uint64_t *z1, uint64_t *z2,
                     uint64_t *z3, seqplan_t *out) {
  size_t m = n - 1;
  uint64_t g = 0, b1, b2, b3, prev = 0;
  int64_t dmin = INT64_MAX;
  int safe = 1;
  const int64_t lim = INT64_C(1) << 61;
  for (size_t i = 0; i < m; i++) {
    int64_t di;
    d[i] = (uint64_t)x[i + 1] - (uint64_t)x[i];
    di = (int64_t)d[i];
    if (di < dmin) dmin = di;
    if (di > lim || di < -lim) safe = 0;
    else g = gcd64(g, (uint64_t)(di < 0 ? -di : di));
  }
  /* Divisors only when no difference is near overflow, so every division
   * below is exact on true (unwrapped) values; g 1 is exact modulo 2^64. */
  if (!safe || g == 0) g = 1;
  for (size_t i = 0; i < m; i++) {
    uint64_t f = d[i] - (uint64_t)dmin; /* in [0, 2^64): exact */
    if (g == 1) {
      z1[i] = k_zz((int64_t)d[i]);
      z2[i] = k_zz((int64_t)(d[i] - prev));
      z3[i] = f;
    } else {
      z1[i] = k_zz((int64_t)d[i] / (int64_t)g);
      z2[i] = k_zz(((int64_t)d[i] - (int64_t)prev) / (int64_t)g);
      z3[i] = f / g;
    }
    prev = d[i];
  }
  b1 = grp_bits(z1, m);
  b2 = grp_bits(z2, m);
  b3 = grp_bits(z3, m) + 8 * (uint64_t)(64 - __builtin_clzll(k_zz(dmin) | 1)) / 7;
  out->g = g;
  out->base = dmin;
  if (b3 < b1 && b3 < b2) {
    out->order = 3;
    out->bits = b3;
    out->z = z3;
  } else if (b1 < b2) {
    out->order = 1;
    out->bits = b1;
    out->z = z1;
  } else {
    out->order = 2;
    out->bits = b2;
    out->z = z2;
  }
}

static void seq_head(k_bytes_t *out, const seqplan_t *p) {
  out->p[out->len++] = (uint8_t)p->order;
  k_bytes_uvarint(out, p->g);
  if (p->order == 3) k_bytes_varint(out, p->base);
}

static int seq_head_get(const uint8_t **q, const uint8_t *end, int *order, uint64_t *g,
                        int64_t *base) {
  if (*q >= end) return -1;
  *order = *(*q)++;
  if (*order < 1 || *order > 3) return -1;
  if (k_get_uvarint(q, end, g) || *g == 0) return -1;
  if (*order == 3 && k_get_varint(q, end, base)) return -1;
  return 0;
}

static int seq_get(k_bitr_t *r, int order, uint64_t g, int64_t base, int64_t x0, int64_t *x,
                   uint64_t *z, size_t n) {
  uint64_t cur = (uint64_t)x0, d = 0;
  if (grp_get(r, z, n - 1)) return -1;
  x[0] = x0;
  for (size_t i = 1; i < n; i++) {
    if (order == 3) {
      d = (uint64_t)base + z[i - 1] * g;
    } else {
      uint64_t step = (uint64_t)k_unzz(z[i - 1]) * g;
      d = order == 1 ? step : d + step;
    }
    cur += d;
    x[i] = (int64_t)cur;
  }
  return 0;
}

/* v == m / 10^d exactly (bit for bit), with |m| <= 2^53.  (No libm: the
 * nearest integer by hand; doubles from 2^52 up are integers already.) */
static int dec_at(double v, int d, int64_t *m) {
  double x = v * p10[d], ax = x < 0 ? -x : x, r;
  if (!(ax <= 9007199254740992.0)) return 0; /* also NaN */
  r = ax >= 4503599627370496.0 ? x : (double)(int64_t)(x < 0 ? x - 0.5 : x + 0.5);
  if (k_f2u(r / p10[d]) != k_f2u(v)) return 0;
  *m = (int64_t)r;
  return 1;
}

/* Finds one exponent D for which every value is an exact decimal; fills M. */
static int dec_plan(const double *v, size_t n, int64_t *M, int *D) {
  int d = 0;
  size_t last_raise = 0;
  for (size_t i = 0; i < n; i++) {
    int d2;
    if (k_f2u(v[i]) == NEG_ZERO_BITS) return 0;
    if (dec_at(v[i], d, &M[i])) continue;
    for (d2 = d + 1; d2 <= MAX_DEC; d2++)
      if (dec_at(v[i], d2, &M[i])) break;
    if (d2 > MAX_DEC) return 0;
    d = d2;
    last_raise = i;
  }
  for (size_t i = 0; i < last_raise; i++)
    if (!dec_at(v[i], d, &M[i])) return 0;
  *D = d;
  return 1;
}

int k_chunk_pack(const int64_t *t, const double *v, size_t n, k_bytes_t *out) {
  size_t m = n ? n - 1 : 0, xcap = m * 10 + 32;
  uint64_t *scr = NULL, xbits_total;
  int64_t *M;
  uint8_t *xb, lead = 0xff, trail = 0, *o;
  uint32_t xbits = 0, nb;
  seqplan_t tp = {0}, vp = {0};
  int D = 0, dec, rc;

  if (n == 0 || n > UINT16_MAX) return KEEL_ETOOBIG;
  /* scratch: d, z1, z2, z3 for time; the same for values; M; XOR bytes */
  scr = malloc(sizeof(uint64_t) * (8 * m + n) + xcap);
  if (!scr) return KEEL_ENOMEM;
  M = (int64_t *)(scr + 8 * m);
  xb = (uint8_t *)(M + n);

  if (m) seq_plan(t, n, scr, scr + m, scr + 2 * m, scr + 3 * m, &tp);
  dec = dec_plan(v, n, M, &D);
  if (dec && m) seq_plan(M, n, scr + 4 * m, scr + 5 * m, scr + 6 * m, scr + 7 * m, &vp);
  for (size_t i = 1; i < n; i++) put_xor(xb, &xbits, k_f2u(v[i]) ^ k_f2u(v[i - 1]), &lead, &trail);
  xbits_total = 64 + (uint64_t)xbits;
  if (dec && 16 + vp.bits > xbits_total) dec = 0; /* (16: rough size of m0 and g) */

  if ((rc = k_bytes_reserve(out, 80 + (tp.bits + 7) / 8 + (xbits + 7) / 8 + (vp.bits + 7) / 8 + 16)))
    goto out;
  o = out->p;
  o[out->len++] = K_CHUNK_PACKED;
  k_bytes_uvarint(out, n);
  k_bytes_varint(out, t[0]);
  if (m) seq_head(out, &tp);
  o[out->len++] = (uint8_t)dec;
  if (dec) {
    o[out->len++] = (uint8_t)D;
    k_bytes_varint(out, M[0]);
    if (m) seq_head(out, &vp);
  } else {
    k_put_u64(o + out->len, k_f2u(v[0]));
    out->len += 8;
  }
  /* two byte-aligned streams: timestamps, then values */
  if (m) {
    nb = 0;
    grp_put(o + out->len, &nb, tp.z, m);
    out->len += (nb + 7) / 8;
    if (dec) {
      nb = 0;
      grp_put(o + out->len, &nb, vp.z, m);
      out->len += (nb + 7) / 8;
    } else {
      memcpy(o + out->len, xb, (xbits + 7) / 8);
      out->len += (xbits + 7) / 8;
    }
  }
  rc = 0;
out:
  free(scr);
  return rc;
}

static int packed_decode(const uint8_t *p, size_t len, int64_t *t, double *v, size_t cap,
                         size_t *nout) {
  const uint8_t *q = p + 1, *end = p + len;
  uint64_t n, tg = 1, vg = 1, *z = NULL;
  int64_t t0, m0 = 0, tbase = 0, vbase = 0;
  int torder = 2, vorder = 2, dec, D = 0, rc = KEEL_ECORRUPT;
  uint64_t v0 = 0;
  k_bitr_t r;

  if (k_get_uvarint(&q, end, &n) || n == 0 || n > UINT16_MAX || n > cap) return KEEL_ECORRUPT;
  if (k_get_varint(&q, end, &t0)) return KEEL_ECORRUPT;
  if (n > 1 && seq_head_get(&q, end, &torder, &tg, &tbase)) return KEEL_ECORRUPT;
  if (q >= end) return KEEL_ECORRUPT;
  dec = *q++;
  if (dec == 1) {
    if (q >= end) return KEEL_ECORRUPT;
    D = *q++;
    if (D > MAX_DEC || k_get_varint(&q, end, &m0)) return KEEL_ECORRUPT;
    if (n > 1 && seq_head_get(&q, end, &vorder, &vg, &vbase)) return KEEL_ECORRUPT;
  } else if (dec == 0) {
    if (end - q < 8) return KEEL_ECORRUPT;
    v0 = k_get_u64(q);
    q += 8;
  } else {
    return KEEL_ECORRUPT;
  }
  z = malloc(sizeof *z * 2 * n); /* group values, then the decimal integers */
  if (!z) return KEEL_ENOMEM;
  r = (k_bitr_t){q, (uint64_t)(end - q) * 8, 0};
  if (seq_get(&r, torder, tg, tbase, t0, t, z, n)) goto out;
  r.pos = (r.pos + 7) & ~(uint64_t)7;
  if (dec) {
    int64_t *mi = (int64_t *)(z + n);
    if (seq_get(&r, vorder, vg, vbase, m0, mi, z, n)) goto out;
    for (size_t i = 0; i < n; i++) v[i] = D ? (double)mi[i] / p10[D] : (double)mi[i];
  } else {
    uint8_t lead = 0xff, trail = 0;
    uint64_t vb = v0, x;
    v[0] = k_u2f(vb);
    for (size_t i = 1; i < n; i++) {
      if (get_xor(&r, &x, &lead, &trail)) goto out;
      vb ^= x;
      v[i] = k_u2f(vb);
    }
  }
  *nout = n;
  rc = 0;
out:
  free(z);
  return rc;
}

/* ---- dispatch ------------------------------------------------------------------ */

int k_chunk_count(const uint8_t *p, size_t len, size_t *n) {
  const uint8_t *q;
  uint64_t u;
  if (len < 1) return KEEL_ECORRUPT;
  switch (p[0]) {
  case K_CHUNK_XOR:
    if (len < 3) return KEEL_ECORRUPT;
    *n = (size_t)p[1] << 8 | p[2];
    return 0;
  case K_CHUNK_PACKED:
    q = p + 1;
    if (k_get_uvarint(&q, p + len, &u) || u == 0 || u > UINT16_MAX) return KEEL_ECORRUPT;
    *n = (size_t)u;
    return 0;
  default: return KEEL_ECORRUPT;
  }
}

int k_chunk_decode(const uint8_t *p, size_t len, int64_t *t, double *v, size_t cap, size_t *n) {
  if (len < 1) return KEEL_ECORRUPT;
  switch (p[0]) {
  case K_CHUNK_XOR: return xor_decode(p, len, t, v, cap, n);
  case K_CHUNK_PACKED: return packed_decode(p, len, t, v, cap, n);
  default: return KEEL_ECORRUPT;
  }
}
