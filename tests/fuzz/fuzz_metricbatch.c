/* libFuzzer harness: keel/metricbatch.h.
 *
 * The first byte picks a mode, the rest is the input:
 *   0  the rest is a batch, decoded as is;
 *   1  the same with its CRC trailer recomputed first, so that mutations
 *      reach the parser behind the checksum;
 *   2  the rest describes series (labels, timestamps, value bits), which
 *      are encoded, decoded and compared.
 * Invariants beyond not crashing or reading out of bounds (ASan; the
 * input is copied to an exact-size allocation):
 *   - every series the decoder delivers has 1..64 labels, valid and
 *     strictly sorted names, __name__ with a valid metric name, non-empty
 *     UTF-8 values, n >= 1 strictly increasing timestamps;
 *   - the encoder accepts every series the decoder delivers, and
 *     decode(encode(decode(b))) delivers exactly what decode(b) did,
 *     bit-exact values included;
 *   - decode(encode(x)) == x for every x the encoder accepts; the encoder
 *     refuses only with KEEL_EINVAL / KEEL_ETOOBIG, and a refusal changes
 *     nothing;
 *   - errors are one of KEEL_EINVAL, KEEL_ECORRUPT, KEEL_ETOOBIG,
 *     KEEL_ENOMEM with a message naming the offset. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/metricbatch.h"

#include "fuzz_check.h"

/* A flat record of what a decode delivered, for comparisons. */
typedef struct rec {
  keel_buf_t flat;
  keel_mb_enc_t *enc; /* when set, every series is re-encoded here */
} rec_t;

static int on_series(void *ud, const keel_mb_label_t *l, size_t nl, const int64_t *t,
                     const double *v, size_t n) {
  rec_t *r = ud;
  int has_name = 0;
  keel_err_t e;

  CHECK(nl >= 1 && nl <= KEEL_MB_MAX_LABELS);
  CHECK(n >= 1 && n <= KEEL_MB_MAX_SAMPLES);
  for (size_t i = 0; i < nl; i++) {
    size_t a = strlen(l[i].name), b = strlen(l[i].value);
    CHECK(keel_mb_label_name_ok(l[i].name, a));
    CHECK(b > 0 && keel_mb_utf8_ok(l[i].value, b));
    if (i) CHECK(strcmp(l[i - 1].name, l[i].name) < 0);
    if (!strcmp(l[i].name, "__name__")) {
      CHECK(keel_mb_metric_name_ok(l[i].value, b));
      has_name = 1;
    }
    CHECK(!keel_buf_append(&r->flat, l[i].name, a + 1));
    CHECK(!keel_buf_append(&r->flat, l[i].value, b + 1));
  }
  CHECK(has_name);
  for (size_t i = 1; i < n; i++) CHECK(t[i] > t[i - 1]);
  CHECK(!keel_buf_append(&r->flat, &n, sizeof n));
  CHECK(!keel_buf_append(&r->flat, t, n * sizeof *t));
  CHECK(!keel_buf_append(&r->flat, v, n * sizeof *v)); /* the bits */
  if (r->enc) {
    int rc = keel_mb_enc_add(r->enc, l, nl, t, v, n, &e);
    /* The input was at most this big, so the copy fits the cap. */
    CHECK(rc == 0 || rc == KEEL_ENOMEM);
  }
  return 0;
}

static void check_error(int rc, const keel_err_t *e) {
  CHECK(rc == KEEL_EINVAL || rc == KEEL_ECORRUPT || rc == KEEL_ETOOBIG || rc == KEEL_ENOMEM);
  CHECK(e->code == rc);
  if (rc != KEEL_ENOMEM) CHECK(strstr(e->msg, "metric batch: ") == e->msg);
  CHECK(strlen(e->msg) < sizeof e->msg);
}

/* Decodes b; when it is good, re-encodes what came out and checks the
 * second decode gives the same. */
static void decode_and_back(const uint8_t *b, size_t n) {
  keel_mb_enc_t enc;
  keel_buf_t out;
  rec_t r1, r2;
  keel_err_t e;
  int rc;

  keel_mb_enc_init(&enc, 0);
  keel_buf_init(&out, KEEL_MB_MAX_BATCH);
  keel_buf_init(&r1.flat, (size_t)1 << 30);
  keel_buf_init(&r2.flat, (size_t)1 << 30);
  r1.enc = &enc;
  r2.enc = NULL;
  rc = keel_mb_decode(b, n, on_series, &r1, &e);
  if (rc) {
    check_error(rc, &e);
    goto out;
  }
  CHECK(keel_mb_decode(b, n, NULL, NULL, &e) == 0);
  rc = keel_mb_enc_finish(&enc, &out, &e);
  CHECK(rc == 0 || rc == KEEL_ENOMEM);
  if (rc) goto out;
  CHECK(out.len == keel_mb_enc_size(&enc));
  CHECK(keel_mb_decode(out.data, out.len, on_series, &r2, &e) == 0);
  CHECK(r1.flat.len == r2.flat.len);
  CHECK(r1.flat.len == 0 || !memcmp(r1.flat.data, r2.flat.data, r1.flat.len));
out:
  keel_mb_enc_free(&enc);
  keel_buf_free(&out);
  keel_buf_free(&r1.flat);
  keel_buf_free(&r2.flat);
}

/* ---- mode 2: series described by the input ------------------------------- */

typedef struct in {
  const uint8_t *p;
  size_t n, off;
} in_t;

static uint8_t u8(in_t *in) { return in->off < in->n ? in->p[in->off++] : 0; }
static uint64_t u64(in_t *in) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u = u << 8 | u8(in);
  return u;
}

static const char *const pool[] = {"__name__", "a", "b", "cpu", "mode", "device", "Z_9", "_",
                                   "9bad", "bad-name", ""};

static void structured(const uint8_t *p, size_t n) {
  enum { MAXS = 16, MAXN = 64 };
  keel_mb_enc_t enc;
  keel_buf_t out, want;
  rec_t r;
  keel_err_t e;
  in_t in = {p, n, 0};
  size_t nseries = 1 + u8(&in) % MAXS;
  char text[2 * KEEL_MB_MAX_LABELS][24];
  int64_t t[MAXN];
  double v[MAXN];

  keel_mb_enc_init(&enc, 1 + (size_t)u8(&in) * 64); /* small caps hit KEEL_ETOOBIG */
  keel_buf_init(&out, KEEL_MB_MAX_BATCH);
  keel_buf_init(&want, (size_t)1 << 30);
  keel_buf_init(&r.flat, (size_t)1 << 30);
  r.enc = NULL;
  for (size_t s = 0; s < nseries && in.off < in.n; s++) {
    keel_mb_label_t l[KEEL_MB_MAX_LABELS + 1];
    size_t nl = u8(&in) % 6, first = 0, ns = 1 + u8(&in) % MAXN, before = keel_mb_enc_size(&enc),
           count = keel_mb_enc_count(&enc);
    int rc;

    /* Mostly with a good __name__ first, so that series get through. */
    if (u8(&in) % 8) {
      static const char *const metrics[] = {"m", "node_load1", "a:b", "_x", "9bad"};
      l[0] = (keel_mb_label_t){"__name__", metrics[u8(&in) % 5]};
      first = 1;
      nl++;
    }
    for (size_t i = first; i < nl; i++) {
      uint8_t k = u8(&in);
      /* Names from the pool, or up to 8 raw bytes; values raw bytes. */
      if (k & 1) {
        l[i].name = pool[(k >> 1) % (sizeof pool / sizeof pool[0])];
      } else {
        size_t len = (k >> 1) % 9;
        for (size_t j = 0; j < len; j++) text[2 * i][j] = (char)u8(&in);
        text[2 * i][len] = '\0';
        l[i].name = text[2 * i];
      }
      {
        size_t len = u8(&in) % 12;
        for (size_t j = 0; j < len; j++) text[2 * i + 1][j] = (char)u8(&in);
        text[2 * i + 1][len] = '\0';
        l[i].value = text[2 * i + 1];
      }
    }
    /* Sorted in most cases, so that series get through. */
    if (u8(&in) % 4) {
      for (size_t i = 1; i < nl; i++)
        for (size_t j = i; j > 0 && strcmp(l[j - 1].name, l[j].name) > 0; j--) {
          keel_mb_label_t tmp = l[j];
          l[j] = l[j - 1];
          l[j - 1] = tmp;
        }
    }
    for (size_t i = 0; i < ns; i++) {
      uint8_t k = u8(&in);
      uint64_t d = k & 0x80 ? u64(&in) : (uint64_t)(k & 0x7f);
      t[i] = i ? (int64_t)((uint64_t)t[i - 1] + d) : (int64_t)u64(&in);
      {
        uint64_t bits = u8(&in) & 1 ? u64(&in) : (uint64_t)u8(&in) << 52;
        memcpy(&v[i], &bits, sizeof bits);
      }
    }
    rc = keel_mb_enc_add(&enc, l, nl, t, v, ns, &e);
    if (rc) {
      CHECK(rc == KEEL_EINVAL || rc == KEEL_ETOOBIG || rc == KEEL_ENOMEM);
      CHECK(keel_mb_enc_size(&enc) == before && keel_mb_enc_count(&enc) == count);
      continue;
    }
    /* Accepted: what the decoder must deliver for it. */
    CHECK(!on_series(&r, l, nl, t, v, ns));
    CHECK(!keel_buf_append(&want, r.flat.data, r.flat.len));
    keel_buf_reset(&r.flat);
    CHECK(keel_mb_enc_size(&enc) <= enc.max);
  }
  CHECK(keel_mb_enc_finish(&enc, &out, &e) == 0);
  CHECK(out.len == keel_mb_enc_size(&enc));
  keel_buf_reset(&r.flat);
  CHECK(keel_mb_decode(out.data, out.len, on_series, &r, &e) == 0);
  CHECK(r.flat.len == want.len);
  CHECK(want.len == 0 || !memcmp(r.flat.data, want.data, want.len));
  keel_mb_enc_free(&enc);
  keel_buf_free(&out);
  keel_buf_free(&want);
  keel_buf_free(&r.flat);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *copy;
  size_t n;

  if (size < 1) return 0;
  n = size - 1;
  /* An exact-size heap copy: ASan sees any read past the end. */
  copy = malloc(n ? n : 1);
  CHECK(copy);
  memcpy(copy, data + 1, n);
  switch (data[0] % 3) {
  case 0: decode_and_back(copy, n); break;
  case 1:
    if (n >= 8) {
      uint32_t c = keel_mb_crc32c(copy, n - 4);
      for (int i = 0; i < 4; i++) copy[n - 4 + (size_t)i] = (uint8_t)(c >> (8 * i));
    }
    decode_and_back(copy, n);
    break;
  default: structured(copy, n); break;
  }
  free(copy);
  return 0;
}
