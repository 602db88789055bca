/* metricbatch.c — the binary metric batch (keel/metricbatch.h).
 *
 * Layout (all varints are LEB128, minimal length; "zz" is zigzag):
 *
 *   "KMB" 0x01            magic, version
 *   uvarint flags         0 (anything else is refused: unknown features)
 *   zz-varint base        timestamp base (ms): the first series' first sample
 *   uvarint nstrings      then nstrings x (uvarint len 1..4096, bytes)
 *   uvarint nseries       then nseries x series
 *   u32 LE crc            CRC-32C of every byte before it
 *
 *   series: uvarint nlabels (1..64), nlabels x (uvarint name, uvarint value)
 *           string indexes; uvarint n (1..65536); zz-varint t0 - base, then
 *           for i >= 1 zz-varint of (t[i] - t[i-1]) - (t[i-1] - t[i-2])
 *           (the delta before the first one counting as 0); then the value
 *           bits: v0 as 8 bytes LE, then for i >= 1 x = bits[i] ^ bits[i-1]
 *           as a control byte (leading zero bytes << 4 | trailing zero
 *           bytes) and the bytes between, big-endian; x == 0 is 0x80 alone.
 *
 * Timestamp arithmetic is done on uint64_t (wrapping), so every int64_t
 * sequence round-trips without signed overflow.  The decoder insists on the
 * canonical forms (minimal varints, maximal zero-byte counts), so an
 * accepted batch has exactly one spelling of each value. */
#include "keel/metricbatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC0 'K'
#define MAGIC1 'M'
#define MAGIC2 'B'
#define HDR_MAGIC 4
#define TRAILER 4

/* ---- CRC-32C ------------------------------------------------------------- */

static const uint32_t crc_tab[256] = {
    0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
    0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
    0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
    0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
    0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
    0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
    0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
    0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
    0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
    0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
    0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
    0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
    0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
    0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
    0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
    0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
    0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
    0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
    0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
    0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
    0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
    0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
    0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
    0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
    0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
    0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
    0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
    0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
    0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
    0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
    0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
    0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
    0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
    0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
    0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
    0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
    0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
    0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
    0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
    0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
    0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
    0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
    0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

uint32_t keel_mb_crc32c(const void *p, size_t n) {
  const uint8_t *b = p;
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) c = crc_tab[(c ^ b[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

/* ---- names and text ------------------------------------------------------ */

static int alpha_(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int digit(unsigned char c) { return c >= '0' && c <= '9'; }

int keel_mb_label_name_ok(const char *s, size_t n) {
  if (n == 0 || !alpha_((unsigned char)s[0])) return 0;
  for (size_t i = 1; i < n; i++)
    if (!alpha_((unsigned char)s[i]) && !digit((unsigned char)s[i])) return 0;
  return 1;
}

int keel_mb_metric_name_ok(const char *s, size_t n) {
  if (n == 0 || !(alpha_((unsigned char)s[0]) || s[0] == ':')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!alpha_((unsigned char)s[i]) && !digit((unsigned char)s[i]) && s[i] != ':') return 0;
  return 1;
}

int keel_mb_utf8_ok(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;

  while (i < n) {
    unsigned c = s[i];
    size_t k;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */

    if (c == 0) return 0;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) k = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      k = 2;
      if (c == 0xe0) lo = 0xa0;      /* overlong */
      else if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
      k = 3;
      if (c == 0xf0) lo = 0x90;      /* overlong */
      else if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
    } else {
      return 0;
    }
    if (n - i <= k) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t j = 2; j <= k; j++)
      if ((s[i + j] & 0xc0) != 0x80) return 0;
    i += k + 1;
  }
  return 1;
}

/* ---- varints and values -------------------------------------------------- */

static uint64_t zz(uint64_t u) { return (u << 1) ^ (0 - (u >> 63)); }
static uint64_t unzz(uint64_t z) { return (z >> 1) ^ (0 - (z & 1)); }
/* Two's complement without implementation-defined conversions. */
static int64_t u2i(uint64_t u) {
  return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

static size_t uv_len(uint64_t u) {
  size_t n = 1;
  while (u >= 0x80) {
    u >>= 7;
    n++;
  }
  return n;
}

static size_t uv_put(uint8_t *p, uint64_t u) {
  size_t n = 0;
  while (u >= 0x80) {
    p[n++] = (uint8_t)(u | 0x80);
    u >>= 7;
  }
  p[n++] = (uint8_t)u;
  return n;
}

static int buf_uv(keel_buf_t *b, uint64_t u) {
  uint8_t tmp[10];
  return keel_buf_append(b, tmp, uv_put(tmp, u));
}

static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double bitsd(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* x as control byte + middle bytes; returns the length (1..9). */
static size_t xor_put(uint8_t *p, uint64_t x) {
  unsigned lead, trail, k;
  if (x == 0) {
    p[0] = 0x80;
    return 1;
  }
  lead = (unsigned)__builtin_clzll(x) / 8;
  trail = (unsigned)__builtin_ctzll(x) / 8;
  k = 8 - lead - trail;
  p[0] = (uint8_t)(lead << 4 | trail);
  for (unsigned i = 0; i < k; i++) p[1 + i] = (uint8_t)(x >> (8 * (7 - lead - i)));
  return 1 + k;
}

/* ---- encoder ------------------------------------------------------------- */

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

void keel_mb_enc_init(keel_mb_enc_t *enc, size_t max) {
  memset(enc, 0, sizeof *enc);
  enc->max = max == 0 || max > KEEL_MB_MAX_BATCH ? KEEL_MB_MAX_BATCH : max;
  keel_buf_init(&enc->str, enc->max);
  keel_buf_init(&enc->ser, enc->max);
}

void keel_mb_enc_free(keel_mb_enc_t *enc) {
  keel_buf_free(&enc->str);
  keel_buf_free(&enc->ser);
  free(enc->soff);
  free(enc->slen);
  free(enc->hash);
  memset(enc, 0, sizeof *enc);
}

void keel_mb_enc_reset(keel_mb_enc_t *enc) {
  keel_buf_reset(&enc->str);
  keel_buf_reset(&enc->ser);
  enc->nstr = 0;
  enc->nseries = 0;
  enc->base = 0;
  if (enc->hash) memset(enc->hash, 0, enc->hcap * sizeof *enc->hash);
}

size_t keel_mb_enc_count(const keel_mb_enc_t *enc) { return enc->nseries; }

/* base: the time base the header will carry (0 while there is no series). */
static size_t total_size(uint64_t base, size_t nstr, size_t strbytes, size_t nseries,
                         size_t serbytes) {
  return HDR_MAGIC + 1 + uv_len(zz(base)) + uv_len(nstr) + strbytes + uv_len(nseries) +
         serbytes + TRAILER;
}

size_t keel_mb_enc_size(const keel_mb_enc_t *enc) {
  return total_size(enc->nseries ? (uint64_t)enc->base : 0, enc->nstr, enc->str.len,
                    enc->nseries, enc->ser.len);
}

/* Index of s[0..n) in the table, or -1. */
static long str_find(const keel_mb_enc_t *enc, const char *s, size_t n) {
  size_t mask, i;
  if (!enc->hcap) return -1;
  mask = enc->hcap - 1;
  for (i = (size_t)fnv(s, n) & mask; enc->hash[i]; i = (i + 1) & mask) {
    uint32_t k = enc->hash[i] - 1;
    if (enc->slen[k] == n && !memcmp(enc->str.data + enc->soff[k], s, n)) return (long)k;
  }
  return -1;
}

static void hash_put(uint32_t *h, size_t cap, uint64_t hv, uint32_t k) {
  size_t i;
  for (i = (size_t)hv & (cap - 1); h[i]; i = (i + 1) & (cap - 1)) {
  }
  h[i] = k + 1;
}

/* Room for nstr strings in the arrays and the hash at most half full. */
static int str_reserve(keel_mb_enc_t *enc, size_t nstr) {
  if (nstr > enc->capstr) {
    size_t cap = enc->capstr ? enc->capstr : 64;
    uint32_t *o, *l;
    while (cap < nstr) cap *= 2;
    if (!(o = realloc(enc->soff, cap * sizeof *o))) return KEEL_ENOMEM;
    enc->soff = o;
    if (!(l = realloc(enc->slen, cap * sizeof *l))) return KEEL_ENOMEM;
    enc->slen = l;
    enc->capstr = cap;
  }
  if (nstr * 2 > enc->hcap) {
    size_t cap = enc->hcap ? enc->hcap : 128;
    uint32_t *h;
    while (cap < nstr * 2) cap *= 2;
    if (!(h = calloc(cap, sizeof *h))) return KEEL_ENOMEM;
    for (size_t k = 0; k < enc->nstr; k++)
      hash_put(h, cap, fnv(enc->str.data + enc->soff[k], enc->slen[k]), (uint32_t)k);
    free(enc->hash);
    enc->hash = h;
    enc->hcap = cap;
  }
  return 0;
}

static int check_labels(const keel_mb_label_t *l, size_t n, keel_err_t *e) {
  int has_name = 0;

  if (n == 0 || n > KEEL_MB_MAX_LABELS)
    return keel_err_set(e, KEEL_EINVAL, "%zu labels: expected 1 to %d", n, KEEL_MB_MAX_LABELS);
  for (size_t i = 0; i < n; i++) {
    size_t nl, vl;
    if (!l[i].name || !l[i].value)
      return keel_err_set(e, KEEL_EINVAL, "label %zu: NULL name or value", i);
    nl = strlen(l[i].name);
    vl = strlen(l[i].value);
    if (nl > KEEL_MB_MAX_STRING || !keel_mb_label_name_ok(l[i].name, nl))
      return keel_err_set(e, KEEL_EINVAL, "label name '%.64s': expected [a-zA-Z_][a-zA-Z0-9_]*",
                          l[i].name);
    if (i > 0 && strcmp(l[i - 1].name, l[i].name) >= 0)
      return keel_err_set(e, KEEL_EINVAL, "label '%.64s' after '%.64s': not sorted, or repeated",
                          l[i].name, l[i - 1].name);
    if (vl == 0)
      return keel_err_set(e, KEEL_EINVAL, "label '%.64s': empty value (leave the label out)",
                          l[i].name);
    if (vl > KEEL_MB_MAX_STRING)
      return keel_err_set(e, KEEL_ETOOBIG, "label '%.64s': value over %d bytes", l[i].name,
                          KEEL_MB_MAX_STRING);
    if (!keel_mb_utf8_ok(l[i].value, vl))
      return keel_err_set(e, KEEL_EINVAL, "label '%.64s': value is not UTF-8", l[i].name);
    if (!strcmp(l[i].name, "__name__")) {
      if (!keel_mb_metric_name_ok(l[i].value, vl))
        return keel_err_set(e, KEEL_EINVAL,
                            "metric name '%.64s': expected [a-zA-Z_:][a-zA-Z0-9_:]*",
                            l[i].value);
      has_name = 1;
    }
  }
  if (!has_name) return keel_err_set(e, KEEL_EINVAL, "no __name__ label");
  return 0;
}

int keel_mb_enc_add(keel_mb_enc_t *enc, const keel_mb_label_t *labels, size_t nlabels,
                    const int64_t *t, const double *v, size_t n, keel_err_t *e) {
  /* The strings this series brings that the table lacks. */
  const char *news[2 * KEEL_MB_MAX_LABELS];
  size_t newl[2 * KEEL_MB_MAX_LABELS], nnew = 0, newbytes = 0, ser0 = enc->ser.len,
                                       str0 = enc->str.len;
  uint32_t idx[2 * KEEL_MB_MAX_LABELS];
  uint8_t tmp[16];
  uint64_t base, prev_t, prev_d = 0, prev_v;
  int rc;

  if ((rc = check_labels(labels, nlabels, e))) goto out;
  if (n == 0 || n > KEEL_MB_MAX_SAMPLES) {
    rc = keel_err_set(e, KEEL_EINVAL, "%zu samples: expected 1 to %d", n, KEEL_MB_MAX_SAMPLES);
    goto out;
  }
  for (size_t i = 1; i < n; i++)
    if (t[i] <= t[i - 1]) {
      rc = keel_err_set(e, KEEL_EINVAL, "sample %zu: timestamp %lld not after %lld", i,
                        (long long)t[i], (long long)t[i - 1]);
      goto out;
    }
  for (size_t i = 0; i < 2 * nlabels; i++) {
    const char *s = i & 1 ? labels[i / 2].value : labels[i / 2].name;
    size_t sl = strlen(s), j;
    long k = str_find(enc, s, sl);
    if (k < 0) {
      for (j = 0; j < nnew; j++)
        if (newl[j] == sl && !memcmp(news[j], s, sl)) break;
      if (j == nnew) {
        news[nnew] = s;
        newl[nnew++] = sl;
        newbytes += uv_len(sl) + sl;
      }
      k = (long)(enc->nstr + j);
    }
    idx[i] = (uint32_t)k;
  }
  if (enc->nstr + nnew > KEEL_MB_MAX_STRINGS) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "more than %u strings in one batch", KEEL_MB_MAX_STRINGS);
    goto out;
  }

  /* The series, straight into its buffer; cut back on any failure. */
  base = (uint64_t)(enc->nseries ? enc->base : t[0]);
  rc = buf_uv(&enc->ser, nlabels);
  for (size_t i = 0; !rc && i < 2 * nlabels; i++) rc = buf_uv(&enc->ser, idx[i]);
  if (!rc) rc = buf_uv(&enc->ser, n);
  prev_t = base;
  for (size_t i = 0; !rc && i < n; i++) {
    uint64_t d = (uint64_t)t[i] - prev_t;
    rc = buf_uv(&enc->ser, zz(d - prev_d));
    prev_d = i ? d : 0;
    prev_t = (uint64_t)t[i];
  }
  prev_v = dbits(v[0]);
  for (size_t i = 0; !rc && i < 8; i++) tmp[i] = (uint8_t)(prev_v >> (8 * i));
  if (!rc) rc = keel_buf_append(&enc->ser, tmp, 8);
  for (size_t i = 1; !rc && i < n; i++) {
    uint64_t b = dbits(v[i]);
    rc = keel_buf_append(&enc->ser, tmp, xor_put(tmp, b ^ prev_v));
    prev_v = b;
  }
  if (!rc && total_size(base, enc->nstr + nnew, enc->str.len + newbytes, enc->nseries + 1,
                        enc->ser.len) > enc->max)
    rc = KEEL_ETOOBIG;
  if (rc) {
    rc = rc == KEEL_ETOOBIG
             ? keel_err_set(e, rc, "the batch would pass %zu bytes", enc->max)
             : keel_err_set(e, rc, "out of memory");
    goto out;
  }

  /* Commit the strings. */
  if ((rc = str_reserve(enc, enc->nstr + nnew))) {
    rc = keel_err_set(e, rc, "out of memory");
    goto out;
  }
  for (size_t j = 0; j < nnew; j++) {
    size_t at;
    if ((rc = buf_uv(&enc->str, newl[j]))) break;
    at = enc->str.len;
    if ((rc = keel_buf_append(&enc->str, news[j], newl[j]))) break;
    enc->soff[enc->nstr + j] = (uint32_t)at;
    enc->slen[enc->nstr + j] = (uint32_t)newl[j];
  }
  if (rc) {
    rc = keel_err_set(e, rc, rc == KEEL_ENOMEM ? "out of memory" : "string table too big");
    goto out;
  }
  for (size_t j = 0; j < nnew; j++)
    hash_put(enc->hash, enc->hcap, fnv(news[j], newl[j]), (uint32_t)(enc->nstr + j));
  enc->nstr += nnew;
  if (enc->nseries++ == 0) enc->base = (int64_t)base;
out:
  if (rc) {
    enc->ser.len = ser0;
    if (enc->ser.data) enc->ser.data[ser0] = '\0';
    enc->str.len = str0;
    if (enc->str.data) enc->str.data[str0] = '\0';
  }
  return rc;
}

int keel_mb_enc_add1(keel_mb_enc_t *enc, const keel_mb_label_t *labels, size_t nlabels,
                     int64_t t, double v, keel_err_t *e) {
  return keel_mb_enc_add(enc, labels, nlabels, &t, &v, 1, e);
}

int keel_mb_enc_finish(const keel_mb_enc_t *enc, keel_buf_t *out, keel_err_t *e) {
  uint8_t hdr[4 + 1 + 10 + 10], tail[10], crc[4];
  size_t start = out->len, h = 0, need = keel_mb_enc_size(enc);
  uint32_t c;
  int rc;

  hdr[h++] = MAGIC0;
  hdr[h++] = MAGIC1;
  hdr[h++] = MAGIC2;
  hdr[h++] = KEEL_MB_VERSION;
  hdr[h++] = 0; /* flags */
  h += uv_put(hdr + h, zz(enc->nseries ? (uint64_t)enc->base : 0));
  h += uv_put(hdr + h, enc->nstr);
  if (need > out->max || out->len > out->max - need) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "a %zu-byte batch does not fit the buffer", need);
    goto out;
  }
  rc = keel_buf_append(out, hdr, h);
  if (!rc) rc = keel_buf_append(out, enc->str.data, enc->str.len);
  if (!rc) rc = keel_buf_append(out, tail, uv_put(tail, enc->nseries));
  if (!rc) rc = keel_buf_append(out, enc->ser.data, enc->ser.len);
  if (rc) {
    rc = keel_err_set(e, rc, rc == KEEL_ENOMEM ? "out of memory" : "batch too big");
    goto out;
  }
  c = keel_mb_crc32c(out->data + start, out->len - start);
  for (int i = 0; i < 4; i++) crc[i] = (uint8_t)(c >> (8 * i));
  if ((rc = keel_buf_append(out, crc, 4))) rc = keel_err_set(e, rc, "out of memory");
out:
  if (rc) {
    out->len = start;
    if (out->data) out->data[start] = '\0';
  }
  return rc;
}

/* ---- decoder ------------------------------------------------------------- */

enum { S_NAME = 1, S_METRIC = 2 };

typedef struct dec {
  const uint8_t *p;
  size_t end;        /* of the part before the CRC */
  size_t off;
  keel_err_t *e;
  char *sdata;       /* the strings, each NUL-terminated */
  uint32_t *soff;
  uint32_t *slen;
  uint8_t *sflag;    /* S_* per string */
  size_t nstr;
  size_t maxn;       /* most samples in one series (pass 1) */
} dec_t;

static int bad(dec_t *d, size_t at, int code, const char *what) {
  return keel_err_set(d->e, code, "metric batch: offset %zu: %s", at, what);
}

static int get_uv(dec_t *d, uint64_t *out, const char *what) {
  size_t at = d->off;
  uint64_t v = 0;
  char msg[160];

  for (unsigned shift = 0;; shift += 7) {
    uint8_t b;
    if (d->off >= d->end) {
      snprintf(msg, sizeof msg, "%s: truncated varint", what);
      return bad(d, at, KEEL_EINVAL, msg);
    }
    b = d->p[d->off++];
    if (shift == 63 && b > 1) {
      snprintf(msg, sizeof msg, "%s: varint over 64 bits", what);
      return bad(d, at, KEEL_EINVAL, msg);
    }
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      if (b == 0 && shift > 0) {
        snprintf(msg, sizeof msg, "%s: overlong varint", what);
        return bad(d, at, KEEL_EINVAL, msg);
      }
      break;
    }
  }
  *out = v;
  return 0;
}

static int strings(dec_t *d) {
  uint64_t n, l;
  size_t at = d->off, start, total = 0;
  int rc;

  if ((rc = get_uv(d, &n, "string count"))) return rc;
  if (n > KEEL_MB_MAX_STRINGS) return bad(d, at, KEEL_ETOOBIG, "more than 2^20 strings");
  if (n > d->end - d->off) return bad(d, at, KEEL_EINVAL, "string count past the end");
  /* First walk: bounds and text; second: copy with NULs. */
  start = d->off;
  for (uint64_t i = 0; i < n; i++) {
    at = d->off;
    if ((rc = get_uv(d, &l, "string length"))) return rc;
    if (l == 0) return bad(d, at, KEEL_EINVAL, "empty string");
    if (l > KEEL_MB_MAX_STRING) return bad(d, at, KEEL_ETOOBIG, "string over 4096 bytes");
    if (l > d->end - d->off) return bad(d, at, KEEL_EINVAL, "string past the end");
    if (!keel_mb_utf8_ok((const char *)d->p + d->off, (size_t)l))
      return bad(d, d->off, KEEL_EINVAL, "string is not UTF-8 (or holds NUL)");
    d->off += (size_t)l;
    total += (size_t)l + 1;
  }
  d->nstr = (size_t)n;
  d->sdata = malloc(total ? total : 1);
  d->soff = malloc((n ? n : 1) * sizeof *d->soff);
  d->slen = malloc((n ? n : 1) * sizeof *d->slen);
  d->sflag = malloc(n ? n : 1);
  if (!d->sdata || !d->soff || !d->slen || !d->sflag)
    return keel_err_set(d->e, KEEL_ENOMEM, "out of memory");
  d->off = start;
  total = 0;
  for (size_t i = 0; i < d->nstr; i++) {
    const char *s;
    get_uv(d, &l, ""); /* checked above */
    s = (const char *)d->p + d->off;
    memcpy(d->sdata + total, s, (size_t)l);
    d->sdata[total + l] = '\0';
    d->soff[i] = (uint32_t)total;
    d->slen[i] = (uint32_t)l;
    d->sflag[i] = (uint8_t)((keel_mb_label_name_ok(s, (size_t)l) ? S_NAME : 0) |
                            (keel_mb_metric_name_ok(s, (size_t)l) ? S_METRIC : 0));
    d->off += (size_t)l;
    total += (size_t)l + 1;
  }
  return 0;
}

/* One series at d->off.  lab, t, v NULL: check only (pass 1, which also
 * records d->maxn); else fill them (pass 2, arrays of d->maxn). */
static int series(dec_t *d, uint64_t base, keel_mb_label_t *lab, size_t *nlab, int64_t *t,
                  double *v, size_t *nout) {
  uint64_t nl, n, a, b, prev_t = base, prev_d = 0, x, bits = 0;
  size_t at = d->off, prev_name = 0;
  int rc, has_name = 0;

  if ((rc = get_uv(d, &nl, "label count"))) return rc;
  if (nl == 0 || nl > KEEL_MB_MAX_LABELS) return bad(d, at, KEEL_EINVAL, "label count not 1..64");
  for (uint64_t i = 0; i < nl; i++) {
    at = d->off;
    if ((rc = get_uv(d, &a, "label name index")) || (rc = get_uv(d, &b, "label value index")))
      return rc;
    if (a >= d->nstr || b >= d->nstr) return bad(d, at, KEEL_EINVAL, "string index out of range");
    if (!(d->sflag[a] & S_NAME))
      return bad(d, at, KEEL_EINVAL, "label name not [a-zA-Z_][a-zA-Z0-9_]*");
    if (i > 0 && strcmp(d->sdata + d->soff[prev_name], d->sdata + d->soff[a]) >= 0)
      return bad(d, at, KEEL_EINVAL, "labels not sorted by name, or repeated");
    if (!strcmp(d->sdata + d->soff[a], "__name__")) {
      if (!(d->sflag[b] & S_METRIC))
        return bad(d, at, KEEL_EINVAL, "metric name not [a-zA-Z_:][a-zA-Z0-9_:]*");
      has_name = 1;
    }
    prev_name = (size_t)a;
    if (lab) {
      lab[i].name = d->sdata + d->soff[a];
      lab[i].value = d->sdata + d->soff[b];
    }
  }
  if (!has_name) return bad(d, at, KEEL_EINVAL, "series without __name__");
  at = d->off;
  if ((rc = get_uv(d, &n, "sample count"))) return rc;
  if (n == 0 || n > KEEL_MB_MAX_SAMPLES)
    return bad(d, at, KEEL_EINVAL, "sample count not 1..65536");
  /* Each sample takes a byte or more: a count past the end is caught
   * before anything is sized by it. */
  if (n > d->end - d->off) return bad(d, at, KEEL_EINVAL, "sample count past the end");
  for (uint64_t i = 0; i < n; i++) {
    uint64_t dd, dt, ti;
    at = d->off;
    if ((rc = get_uv(d, &dd, "timestamp"))) return rc;
    dt = unzz(dd) + prev_d;
    ti = prev_t + dt;
    if (i > 0 && u2i(ti) <= u2i(prev_t))
      return bad(d, at, KEEL_EINVAL, "timestamps not strictly increasing");
    if (t) t[i] = u2i(ti);
    prev_d = i ? dt : 0;
    prev_t = ti;
  }
  at = d->off;
  if (d->end - d->off < 8) return bad(d, at, KEEL_EINVAL, "first value truncated");
  for (int i = 0; i < 8; i++) bits |= (uint64_t)d->p[d->off + (size_t)i] << (8 * i);
  d->off += 8;
  if (v) v[0] = bitsd(bits);
  for (uint64_t i = 1; i < n; i++) {
    unsigned c, lead, trail, k;
    at = d->off;
    if (d->off >= d->end) return bad(d, at, KEEL_EINVAL, "value truncated");
    c = d->p[d->off++];
    lead = c >> 4;
    trail = c & 15;
    if (c == 0x80) {
      x = 0;
    } else {
      if (lead + trail > 7) return bad(d, at, KEEL_EINVAL, "bad value control byte");
      k = 8 - lead - trail;
      if (d->end - d->off < k) return bad(d, at, KEEL_EINVAL, "value truncated");
      if (d->p[d->off] == 0 || d->p[d->off + k - 1] == 0)
        return bad(d, at, KEEL_EINVAL, "value not in canonical form");
      x = 0;
      for (unsigned j = 0; j < k; j++) x = x << 8 | d->p[d->off + j];
      x <<= 8 * trail;
      d->off += k;
    }
    bits ^= x;
    if (v) v[i] = bitsd(bits);
  }
  if (n > d->maxn) d->maxn = (size_t)n;
  if (nlab) *nlab = (size_t)nl;
  if (nout) *nout = (size_t)n;
  return 0;
}

int keel_mb_decode(const void *data, size_t len, keel_mb_series_fn fn, void *ud, keel_err_t *e) {
  dec_t d = {.p = data, .e = e};
  keel_mb_label_t lab[KEEL_MB_MAX_LABELS];
  int64_t *t = NULL;
  double *v = NULL;
  uint64_t flags, zbase, base, nser;
  size_t series_at;
  uint32_t want, got;
  int rc;

  if (len > KEEL_MB_MAX_BATCH) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "metric batch: %zu bytes, over the %zu-byte limit", len,
                      KEEL_MB_MAX_BATCH);
    goto out;
  }
  if (len < HDR_MAGIC + TRAILER || d.p[0] != MAGIC0 || d.p[1] != MAGIC1 || d.p[2] != MAGIC2) {
    rc = keel_err_set(e, KEEL_EINVAL, "metric batch: offset 0: not a metric batch (bad magic)");
    goto out;
  }
  if (d.p[3] != KEEL_MB_VERSION) {
    rc = keel_err_set(e, KEEL_EINVAL, "metric batch: offset 3: version %u, expected %d", d.p[3],
                      KEEL_MB_VERSION);
    goto out;
  }
  d.end = len - TRAILER;
  want = (uint32_t)d.p[d.end] | (uint32_t)d.p[d.end + 1] << 8 | (uint32_t)d.p[d.end + 2] << 16 |
         (uint32_t)d.p[d.end + 3] << 24;
  if ((got = keel_mb_crc32c(d.p, d.end)) != want) {
    rc = keel_err_set(e, KEEL_ECORRUPT,
                      "metric batch: offset %zu: CRC-32C %08x, the bytes give %08x", d.end, want,
                      got);
    goto out;
  }
  d.off = HDR_MAGIC;
  if ((rc = get_uv(&d, &flags, "flags"))) goto out;
  if (flags) {
    rc = bad(&d, HDR_MAGIC, KEEL_EINVAL, "unknown flags");
    goto out;
  }
  if ((rc = get_uv(&d, &zbase, "time base"))) goto out;
  base = unzz(zbase);
  if ((rc = strings(&d))) goto out;
  if ((rc = get_uv(&d, &nser, "series count"))) goto out;
  series_at = d.off;
  for (uint64_t i = 0; i < nser; i++)
    if ((rc = series(&d, base, NULL, NULL, NULL, NULL, NULL))) goto out;
  if (d.off != d.end) {
    rc = bad(&d, d.off, KEEL_EINVAL, "bytes after the last series");
    goto out;
  }
  if (!fn || nser == 0) goto out;
  t = malloc(d.maxn * sizeof *t);
  v = malloc(d.maxn * sizeof *v);
  if (!t || !v) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  d.off = series_at;
  for (uint64_t i = 0; i < nser; i++) {
    size_t nl = 0, n = 0;
    if ((rc = series(&d, base, lab, &nl, t, v, &n))) goto out;
    if ((rc = fn(ud, lab, nl, t, v, n))) goto out;
  }
out:
  free(t);
  free(v);
  free(d.sdata);
  free(d.soff);
  free(d.slen);
  free(d.sflag);
  return rc;
}
