/* Unit tests for keel/metricbatch.h: round trips (fixed edge data and
 * random), the encoder's refusals and cap, and every malformed-batch case
 * of the decoder, built byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/metricbatch.h"

/* ---- a decoded copy of a batch ------------------------------------------- */

#define MAXSER 512

typedef struct got_series {
  size_t nl;
  char *names[KEEL_MB_MAX_LABELS], *values[KEEL_MB_MAX_LABELS];
  size_t n;
  int64_t *t;
  uint64_t *bits;
} got_series_t;

typedef struct got {
  size_t n;
  got_series_t s[MAXSER];
  int stop_after; /* return 99 after this many calls (0: never) */
} got_t;

static int collect(void *ud, const keel_mb_label_t *l, size_t nl, const int64_t *t,
                   const double *v, size_t n) {
  got_t *g = ud;
  got_series_t *s;

  assert_true(g->n < MAXSER);
  assert_true(nl >= 1 && nl <= KEEL_MB_MAX_LABELS);
  assert_true(n >= 1);
  s = &g->s[g->n++];
  s->nl = nl;
  for (size_t i = 0; i < nl; i++) {
    s->names[i] = strdup(l[i].name);
    s->values[i] = strdup(l[i].value);
    if (i) assert_true(strcmp(l[i - 1].name, l[i].name) < 0);
  }
  s->n = n;
  s->t = malloc(n * sizeof *s->t);
  s->bits = malloc(n * sizeof *s->bits);
  memcpy(s->t, t, n * sizeof *t);
  memcpy(s->bits, v, n * sizeof *v);
  if (g->stop_after && g->n == (size_t)g->stop_after) return 99;
  return 0;
}

static void got_free(got_t *g) {
  for (size_t i = 0; i < g->n; i++) {
    for (size_t j = 0; j < g->s[i].nl; j++) {
      free(g->s[i].names[j]);
      free(g->s[i].values[j]);
    }
    free(g->s[i].t);
    free(g->s[i].bits);
  }
  g->n = 0;
}

static uint64_t bits_of(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double of_bits(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static void expect_series(const got_series_t *s, const keel_mb_label_t *l, size_t nl,
                          const int64_t *t, const double *v, size_t n) {
  assert_int_equal(s->nl, nl);
  for (size_t i = 0; i < nl; i++) {
    assert_string_equal(s->names[i], l[i].name);
    assert_string_equal(s->values[i], l[i].value);
  }
  assert_int_equal(s->n, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(s->t[i], t[i]);
    assert_int_equal(s->bits[i], bits_of(v[i])); /* bit-exact, NaN included */
  }
}

/* ---- CRC, names ---------------------------------------------------------- */

static void test_crc32c(void **state) {
  (void)state;
  assert_int_equal(keel_mb_crc32c("123456789", 9), 0xe3069283u); /* the check value */
  assert_int_equal(keel_mb_crc32c("", 0), 0);
}

static void test_names(void **state) {
  (void)state;
  assert_true(keel_mb_label_name_ok("a", 1));
  assert_true(keel_mb_label_name_ok("_A9_z", 5));
  assert_false(keel_mb_label_name_ok("", 0));
  assert_false(keel_mb_label_name_ok("9a", 2));
  assert_false(keel_mb_label_name_ok("a:b", 3));
  assert_false(keel_mb_label_name_ok("a-b", 3));
  assert_true(keel_mb_metric_name_ok("node:cpu_rate5m", 15));
  assert_true(keel_mb_metric_name_ok(":a", 2));
  assert_false(keel_mb_metric_name_ok("1a", 2));
  assert_true(keel_mb_utf8_ok("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
  assert_false(keel_mb_utf8_ok("a\0b", 3));
  assert_false(keel_mb_utf8_ok("\xc0\xaf", 2));         /* overlong */
  assert_false(keel_mb_utf8_ok("\xe0\x80\xaf", 3));     /* overlong */
  assert_false(keel_mb_utf8_ok("\xed\xa0\x80", 3));     /* surrogate */
  assert_false(keel_mb_utf8_ok("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
  assert_false(keel_mb_utf8_ok("\xe2\x82", 2));         /* truncated */
  assert_false(keel_mb_utf8_ok("\xff", 1));
  assert_false(keel_mb_utf8_ok("\x80", 1));
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip_edges(void **state) {
  static const keel_mb_label_t l1[] = {{"__name__", "node_cpu_seconds_total"},
                                       {"cpu", "0"},
                                       {"mode", "idle"}};
  static const keel_mb_label_t l2[] = {{"__name__", "x"}};
  static const keel_mb_label_t l3[] = {{"__name__", "a:b"}, {"path", "/h\xc3\xa9/\xf0\x9f\x98\x80"},
                                       {"zone", "x y=\"z\"\n"}};
  double v1[] = {0.0,
                 -0.0,
                 1.5,
                 of_bits(KEEL_MB_STALE_NAN_BITS),
                 INFINITY,
                 -INFINITY,
                 of_bits(0x7ff8000000000001ull), /* quiet NaN with a payload */
                 of_bits(0xfff4000000000abcull), /* negative signalling NaN */
                 DBL_MIN / 4,                    /* subnormal */
                 DBL_MAX,
                 -DBL_MAX,
                 1e300,
                 1e300,
                 12345678.0};
  int64_t t1[] = {INT64_MIN, INT64_MIN + 1, -5, -1, 0, 1, 1000, 1001, 1002, 1003, 2000000000000,
                  INT64_MAX - 2, INT64_MAX - 1, INT64_MAX};
  int64_t t2[] = {1790000000000};
  double v2[] = {42};
  int64_t t3[] = {1790000000000, 1790000010000, 1790000020000, 1790000030001};
  double v3[] = {1, 2, 3, 4};
  keel_mb_enc_t enc;
  keel_buf_t out;
  got_t *g = calloc(1, sizeof *g);
  keel_err_t e;

  (void)state;
  keel_mb_enc_init(&enc, 0);
  keel_buf_init(&out, KEEL_MB_MAX_BATCH);
  assert_int_equal(keel_mb_enc_add(&enc, l1, 3, t1, v1, 14, &e), 0);
  assert_int_equal(keel_mb_enc_add1(&enc, l2, 1, t2[0], v2[0], &e), 0);
  assert_int_equal(keel_mb_enc_add(&enc, l3, 3, t3, v3, 4, &e), 0);
  /* The same series again: allowed (appended in order). */
  assert_int_equal(keel_mb_enc_add1(&enc, l2, 1, t2[0] + 1, v2[0], &e), 0);
  assert_int_equal(keel_mb_enc_count(&enc), 4);
  assert_int_equal(keel_mb_enc_finish(&enc, &out, &e), 0);
  assert_int_equal(out.len, keel_mb_enc_size(&enc));
  assert_int_equal(keel_mb_decode(out.data, out.len, collect, g, &e), 0);
  assert_int_equal(g->n, 4);
  expect_series(&g->s[0], l1, 3, t1, v1, 14);
  expect_series(&g->s[1], l2, 1, t2, v2, 1);
  expect_series(&g->s[2], l3, 3, t3, v3, 4);
  t2[0]++;
  expect_series(&g->s[3], l2, 1, t2, v2, 1);
  /* Validation only. */
  assert_int_equal(keel_mb_decode(out.data, out.len, NULL, NULL, &e), 0);
  /* The callback's value stops decoding and comes back. */
  got_free(g);
  g->stop_after = 2;
  assert_int_equal(keel_mb_decode(out.data, out.len, collect, g, &e), 99);
  assert_int_equal(g->n, 2);
  got_free(g);
  g->stop_after = 0;

  /* An empty batch is valid. */
  keel_mb_enc_reset(&enc);
  keel_buf_reset(&out);
  assert_int_equal(keel_mb_enc_finish(&enc, &out, &e), 0);
  assert_int_equal(out.len, keel_mb_enc_size(&enc));
  assert_int_equal(keel_mb_decode(out.data, out.len, collect, g, &e), 0);
  assert_int_equal(g->n, 0);

  keel_mb_enc_free(&enc);
  keel_buf_free(&out);
  free(g);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* splitmix64: reproducible */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int cmp_label(const void *a, const void *b) {
  return strcmp(((const keel_mb_label_t *)a)->name, ((const keel_mb_label_t *)b)->name);
}

static void test_roundtrip_random(void **state) {
  enum { ROUNDS = 40, SER = 60, MAXN = 300 };
  static const char *const names[] = {"cpu", "mode", "device", "fstype", "mountpoint", "job",
                                      "instance", "le", "quantile", "name", "a", "Z", "_x1"};
  static const char *const vals[] = {"0", "1", "idle", "user", "/", "/home", "sda", "eth0",
                                     "\xc3\xa9t\xc3\xa9", "x", "very long value with spaces"};
  keel_mb_label_t *lab = calloc(SER * 16, sizeof *lab);
  size_t *nl = calloc(SER, sizeof *nl), *ns = calloc(SER, sizeof *ns);
  int64_t *t = calloc((size_t)SER * MAXN, sizeof *t);
  double *v = calloc((size_t)SER * MAXN, sizeof *v);
  char (*metric)[32] = calloc(SER, 32);
  got_t *g = calloc(1, sizeof *g);
  keel_mb_enc_t enc;
  keel_buf_t out;
  keel_err_t e;

  (void)state;
  keel_mb_enc_init(&enc, 0);
  keel_buf_init(&out, KEEL_MB_MAX_BATCH);
  for (int r = 0; r < ROUNDS; r++) {
    size_t nser = 1 + rnd() % SER;
    keel_mb_enc_reset(&enc);
    keel_buf_reset(&out);
    for (size_t s = 0; s < nser; s++) {
      keel_mb_label_t *l = lab + s * 16;
      int used[sizeof names / sizeof names[0]] = {0};
      size_t k = rnd() % 6;
      int64_t step = (int64_t)(rnd() % 4 == 0 ? rnd() % 1000000 + 1 : 10000);
      snprintf(metric[s], 32, "m_%u", (unsigned)(rnd() % 20));
      nl[s] = 0;
      l[nl[s]++] = (keel_mb_label_t){"__name__", metric[s]};
      for (size_t i = 0; i < k; i++) {
        size_t ni = rnd() % (sizeof names / sizeof names[0]);
        if (used[ni]++) continue;
        l[nl[s]++] = (keel_mb_label_t){names[ni], vals[rnd() % (sizeof vals / sizeof vals[0])]};
      }
      qsort(l, nl[s], sizeof *l, cmp_label);
      ns[s] = 1 + (rnd() % 4 == 0 ? rnd() % MAXN : rnd() % 3);
      for (size_t i = 0; i < ns[s]; i++) {
        int64_t *ts = t + s * MAXN;
        double *vs = v + s * MAXN;
        /* Jittered steps: delta-of-delta is not always 0. */
        ts[i] = i ? ts[i - 1] + step + (int64_t)(rnd() % 3 == 0 ? rnd() % 50 : 0)
                  : 1790000000000 + (int64_t)(rnd() % 100000) - 50000;
        switch (rnd() % 5) {
        case 0: vs[i] = of_bits(rnd()); break;               /* any bits, NaNs too */
        case 1: vs[i] = (double)(rnd() % 1000); break;       /* small integers */
        case 2: vs[i] = i ? vs[i - 1] : 0.5; break;          /* repeats */
        case 3: vs[i] = (i ? vs[i - 1] : 0) + (double)(rnd() % 100) / 8; break; /* counter */
        default: vs[i] = of_bits(KEEL_MB_STALE_NAN_BITS); break;
        }
      }
      assert_int_equal(keel_mb_enc_add(&enc, l, nl[s], t + s * MAXN, v + s * MAXN, ns[s], &e), 0);
    }
    assert_int_equal(keel_mb_enc_finish(&enc, &out, &e), 0);
    assert_int_equal(out.len, keel_mb_enc_size(&enc));
    assert_int_equal(keel_mb_decode(out.data, out.len, collect, g, &e), 0);
    assert_int_equal(g->n, nser);
    for (size_t s = 0; s < nser; s++)
      expect_series(&g->s[s], lab + s * 16, nl[s], t + s * MAXN, v + s * MAXN, ns[s]);
    got_free(g);
  }
  keel_mb_enc_free(&enc);
  keel_buf_free(&out);
  free(lab);
  free(nl);
  free(ns);
  free(t);
  free(v);
  free(metric);
  free(g);
}

/* A reused encoder fed the same label sets allocates nothing: its buffers
 * keep their addresses and sizes. */
static void test_reset_reuses(void **state) {
  static const keel_mb_label_t l[] = {{"__name__", "node_load1"}};
  static const keel_mb_label_t l2[] = {{"__name__", "node_disk_read_bytes_total"},
                                       {"device", "sda"}};
  keel_mb_enc_t enc;
  keel_err_t e;
  char *s, *r;
  uint32_t *h;
  size_t caps, capr;

  (void)state;
  keel_mb_enc_init(&enc, 1 << 20);
  for (int round = 0; round < 3; round++) {
    keel_mb_enc_reset(&enc);
    for (int i = 0; i < 200; i++) {
      assert_int_equal(keel_mb_enc_add1(&enc, l, 1, 1000 + i, i, &e), 0);
      assert_int_equal(keel_mb_enc_add1(&enc, l2, 2, 1000 + i, i * 512.0, &e), 0);
    }
    if (round == 1) {
      s = enc.str.data;
      r = enc.ser.data;
      h = enc.hash;
      caps = enc.str.cap;
      capr = enc.ser.cap;
    } else if (round == 2) {
      assert_ptr_equal(enc.str.data, s);
      assert_ptr_equal(enc.ser.data, r);
      assert_ptr_equal(enc.hash, h);
      assert_int_equal(enc.str.cap, caps);
      assert_int_equal(enc.ser.cap, capr);
    }
  }
  /* Each string is stored once. */
  assert_int_equal(enc.nstr, 5);
  keel_mb_enc_free(&enc);
}

/* ---- the encoder's refusals ---------------------------------------------- */

static void expect_refused(const keel_mb_label_t *l, size_t nl, const int64_t *t, size_t n,
                           int code, const char *msg_part) {
  double v[4] = {1, 2, 3, 4};
  keel_mb_enc_t enc;
  keel_err_t e;

  keel_mb_enc_init(&enc, 0);
  assert_int_equal(keel_mb_enc_add(&enc, l, nl, t, v, n, &e), code);
  if (!strstr(e.msg, msg_part)) fail_msg("'%s' lacks '%s'", e.msg, msg_part);
  assert_int_equal(keel_mb_enc_count(&enc), 0);
  assert_int_equal(enc.ser.len, 0);
  assert_int_equal(enc.str.len, 0);
  keel_mb_enc_free(&enc);
}

static void test_encoder_refuses(void **state) {
  int64_t t[] = {1, 2, 3, 4}, tbad[] = {1, 2, 2}, tdown[] = {5, 4};
  keel_mb_label_t many[KEEL_MB_MAX_LABELS + 1];
  char names[KEEL_MB_MAX_LABELS + 1][8], *big = malloc(KEEL_MB_MAX_STRING + 2);

  (void)state;
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}, {"__name__", "b"}}, 2, t, 1, KEEL_EINVAL,
                 "not sorted, or repeated");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}, {"b", "1"}, {"a", "1"}}, 3, t, 1,
                 KEEL_EINVAL, "not sorted");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}, {"b-c", "1"}}, 2, t, 1, KEEL_EINVAL,
                 "label name 'b-c'");
  expect_refused((keel_mb_label_t[]){{"", "a"}}, 1, t, 1, KEEL_EINVAL, "label name ''");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}, {"b", ""}}, 2, t, 1, KEEL_EINVAL,
                 "empty value");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}, {"b", "\xff"}}, 2, t, 1, KEEL_EINVAL,
                 "not UTF-8");
  expect_refused((keel_mb_label_t[]){{"a", "b"}}, 1, t, 1, KEEL_EINVAL, "no __name__");
  expect_refused((keel_mb_label_t[]){{"__name__", "1up"}}, 1, t, 1, KEEL_EINVAL, "metric name");
  expect_refused((keel_mb_label_t[]){{"__name__", NULL}}, 1, t, 1, KEEL_EINVAL, "NULL");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}}, 0, t, 1, KEEL_EINVAL, "0 labels");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}}, 1, t, 0, KEEL_EINVAL, "0 samples");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}}, 1, tbad, 3, KEEL_EINVAL, "not after");
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}}, 1, tdown, 2, KEEL_EINVAL, "not after");
  memset(big, 'x', KEEL_MB_MAX_STRING + 1);
  big[KEEL_MB_MAX_STRING + 1] = '\0';
  expect_refused((keel_mb_label_t[]){{"__name__", "a"}, {"v", big}}, 2, t, 1, KEEL_ETOOBIG,
                 "over 4096");
  for (int i = 0; i <= KEEL_MB_MAX_LABELS; i++) {
    snprintf(names[i], sizeof names[i], "l%03d", i);
    many[i] = (keel_mb_label_t){names[i], "v"};
  }
  many[0].name = "__name__";
  expect_refused(many, KEEL_MB_MAX_LABELS + 1, t, 1, KEEL_EINVAL, "65 labels");
  free(big);
}

/* Over the cap: KEEL_ETOOBIG, and the encoder is exactly as before. */
static void test_encoder_cap(void **state) {
  keel_mb_label_t l[] = {{"__name__", "m"}, {"i", NULL}};
  char iv[24];
  keel_mb_enc_t enc;
  keel_buf_t a, b;
  keel_err_t e;
  size_t added = 0;
  int rc = 0;

  (void)state;
  keel_mb_enc_init(&enc, 1000);
  keel_buf_init(&a, 1 << 20);
  keel_buf_init(&b, 1 << 20);
  l[1].value = iv;
  while (1) {
    snprintf(iv, sizeof iv, "%zu", added);
    if ((rc = keel_mb_enc_add1(&enc, l, 2, 1790000000000 + (int64_t)added, 1.0, &e))) break;
    added++;
  }
  assert_int_equal(rc, KEEL_ETOOBIG);
  assert_true(added > 10);
  assert_true(keel_mb_enc_size(&enc) <= 1000);
  assert_int_equal(keel_mb_enc_count(&enc), added);
  assert_int_equal(keel_mb_enc_finish(&enc, &a, &e), 0);
  assert_true(a.len <= 1000);
  /* A failed add of a series whose strings are new left no trace. */
  assert_int_equal(keel_mb_decode(a.data, a.len, NULL, NULL, &e), 0);
  keel_mb_enc_reset(&enc);
  for (size_t i = 0; i < added; i++) {
    snprintf(iv, sizeof iv, "%zu", i);
    assert_int_equal(keel_mb_enc_add1(&enc, l, 2, 1790000000000 + (int64_t)i, 1.0, &e), 0);
  }
  assert_int_equal(keel_mb_enc_finish(&enc, &b, &e), 0);
  assert_int_equal(a.len, b.len);
  assert_memory_equal(a.data, b.data, a.len);
  /* finish into a buffer too small: refused, buffer unchanged. */
  {
    keel_buf_t small;
    keel_buf_init(&small, 10);
    keel_buf_puts(&small, "ab");
    assert_int_equal(keel_mb_enc_finish(&enc, &small, &e), KEEL_ETOOBIG);
    assert_int_equal(small.len, 2);
    keel_buf_free(&small);
  }
  keel_mb_enc_free(&enc);
  keel_buf_free(&a);
  keel_buf_free(&b);
}

/* ---- the decoder's refusals, on hand-made batches ------------------------- */

typedef struct raw {
  uint8_t b[4096];
  size_t n;
} raw_t;

static void r_bytes(raw_t *r, const void *p, size_t n) {
  assert_true(r->n + n <= sizeof r->b);
  memcpy(r->b + r->n, p, n);
  r->n += n;
}
static void r_u8(raw_t *r, uint8_t c) { r_bytes(r, &c, 1); }
static void r_uv(raw_t *r, uint64_t u) {
  while (u >= 0x80) {
    r_u8(r, (uint8_t)(u | 0x80));
    u >>= 7;
  }
  r_u8(r, (uint8_t)u);
}
static void r_zz(raw_t *r, int64_t x) {
  uint64_t u = (uint64_t)x;
  r_uv(r, (u << 1) ^ (0 - (u >> 63)));
}
static void r_str(raw_t *r, const char *s) {
  r_uv(r, strlen(s));
  r_bytes(r, s, strlen(s));
}
static void r_head(raw_t *r) {
  r->n = 0;
  r_bytes(r, "KMB\x01", 4);
  r_uv(r, 0);    /* flags */
  r_zz(r, 1000); /* base */
}
/* String table "__name__", "m", "a", "1", "b" (indexes 0..4). */
static void r_strings(raw_t *r) {
  r_uv(r, 5);
  r_str(r, "__name__");
  r_str(r, "m");
  r_str(r, "a");
  r_str(r, "1");
  r_str(r, "b");
}
static void r_value(raw_t *r, double d) {
  uint64_t u = bits_of(d);
  for (int i = 0; i < 8; i++) r_u8(r, (uint8_t)(u >> (8 * i)));
}
static void r_crc(raw_t *r) {
  uint32_t c = keel_mb_crc32c(r->b, r->n);
  for (int i = 0; i < 4; i++) r_u8(r, (uint8_t)(c >> (8 * i)));
}

static int never(void *ud, const keel_mb_label_t *l, size_t nl, const int64_t *t, const double *v,
                 size_t n) {
  (void)ud, (void)l, (void)nl, (void)t, (void)v, (void)n;
  fail_msg("callback called for a bad batch");
  return 0;
}

static void expect_bad(const raw_t *r, int code, const char *part) {
  keel_err_t e = {0};
  int rc = keel_mb_decode(r->b, r->n, never, NULL, &e);
  if (rc != code) fail_msg("rc %d, expected %d (%s)", rc, code, e.msg);
  if (!strstr(e.msg, part)) fail_msg("'%s' lacks '%s'", e.msg, part);
  assert_non_null(strstr(e.msg, "offset "));
}

/* A good one-series batch: the malformed cases change one thing each. */
static void r_good(raw_t *r) {
  r_head(r);
  r_strings(r);
  r_uv(r, 1);    /* series */
  r_uv(r, 2);    /* labels */
  r_uv(r, 0), r_uv(r, 1); /* __name__=m */
  r_uv(r, 2), r_uv(r, 3); /* a=1 */
  r_uv(r, 2);    /* samples */
  r_zz(r, 0), r_zz(r, 10);
  r_value(r, 1.0);
  r_u8(r, 0x80); /* same value */
  r_crc(r);
}

static void test_decoder_good_raw(void **state) {
  raw_t r;
  got_t *g = calloc(1, sizeof *g);
  keel_err_t e;
  int64_t t[] = {1000, 1010};
  double v[] = {1, 1};

  (void)state;
  r_good(&r);
  assert_int_equal(keel_mb_decode(r.b, r.n, collect, g, &e), 0);
  assert_int_equal(g->n, 1);
  expect_series(&g->s[0], (keel_mb_label_t[]){{"__name__", "m"}, {"a", "1"}}, 2, t, v, 2);
  got_free(g);
  free(g);
}

static void test_decoder_refuses(void **state) {
  raw_t r;
  (void)state;

  /* Framing. */
  r.n = 0;
  r_bytes(&r, "KMB", 3);
  expect_bad(&r, KEEL_EINVAL, "bad magic");
  r_good(&r);
  r.b[0] = 'X';
  expect_bad(&r, KEEL_EINVAL, "bad magic");
  r_good(&r);
  r.b[3] = 2;
  expect_bad(&r, KEEL_EINVAL, "version 2");
  r_good(&r);
  r.b[r.n - 1] ^= 1;
  expect_bad(&r, KEEL_ECORRUPT, "CRC-32C");
  r_good(&r);
  r.b[r.n - 6] ^= 0x40; /* a value byte */
  expect_bad(&r, KEEL_ECORRUPT, "CRC-32C");
  r_head(&r);
  r.b[4] = 1; /* flags */
  r_strings(&r);
  r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "unknown flags");
  /* Trailing bytes after the last series. */
  r_good(&r);
  r.n -= 4;
  r_u8(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "bytes after the last series");

  /* Varints. */
  r_head(&r);
  r_u8(&r, 0x85); /* string count, never ends */
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "string count: truncated varint");
  r_head(&r);
  r_u8(&r, 0x81), r_u8(&r, 0x00); /* 1, overlong */
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "string count: overlong varint");
  r_head(&r);
  for (int i = 0; i < 9; i++) r_u8(&r, 0xff);
  r_u8(&r, 0x02); /* bit 64 */
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "varint over 64 bits");

  /* The string table. */
  r_head(&r);
  r_uv(&r, 2000000);
  r_crc(&r);
  expect_bad(&r, KEEL_ETOOBIG, "more than 2^20 strings");
  r_head(&r);
  r_uv(&r, 100);
  r_str(&r, "a");
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "string count past the end");
  r_head(&r);
  r_uv(&r, 2), r_str(&r, ""), r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "empty string");
  r_head(&r);
  r_uv(&r, 2), r_uv(&r, 5000), r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_ETOOBIG, "string over 4096 bytes");
  r_head(&r);
  r_uv(&r, 2), r_uv(&r, 50), r_u8(&r, 'a');
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "string past the end");
  r_head(&r);
  r_uv(&r, 2), r_str(&r, "a\xc3"), r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "not UTF-8");
  r_head(&r);
  r_uv(&r, 2), r_uv(&r, 3), r_bytes(&r, "a\0b", 3), r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "holds NUL");

/* One series with the given labels (pairs of indexes) and a fixed sample. */
#define SERIES(...)                                         \
  do {                                                      \
    uint64_t ix_[] = {__VA_ARGS__};                         \
    r_head(&r);                                             \
    r_strings(&r);                                          \
    r_uv(&r, 1);                                            \
    r_uv(&r, sizeof ix_ / sizeof ix_[0] / 2);               \
    for (size_t i_ = 0; i_ < sizeof ix_ / sizeof ix_[0]; i_++) r_uv(&r, ix_[i_]); \
    r_uv(&r, 1), r_zz(&r, 0), r_value(&r, 1);               \
    r_crc(&r);                                              \
  } while (0)
}

/* The series-level cases, each a one-series batch. */
static void test_decoder_refuses_series(void **state) {
  raw_t r;
  (void)state;

  SERIES(0, 1, 9, 3);
  expect_bad(&r, KEEL_EINVAL, "string index out of range");
  SERIES(0, 1, 2, 9);
  expect_bad(&r, KEEL_EINVAL, "string index out of range");
  SERIES(0, 1, 3, 3); /* "1" is not a label name */
  expect_bad(&r, KEEL_EINVAL, "label name not");
  SERIES(2, 3, 0, 1); /* "a" before "__name__" */
  expect_bad(&r, KEEL_EINVAL, "not sorted");
  SERIES(0, 1, 0, 1); /* repeated */
  expect_bad(&r, KEEL_EINVAL, "not sorted by name, or repeated");
  SERIES(2, 3);
  expect_bad(&r, KEEL_EINVAL, "series without __name__");
  SERIES(0, 3); /* __name__="1" */
  expect_bad(&r, KEEL_EINVAL, "metric name not");

  /* Label count 0 and 65. */
  r_head(&r);
  r_strings(&r);
  r_uv(&r, 1), r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "label count not 1..64");
  r_head(&r);
  r_strings(&r);
  r_uv(&r, 1), r_uv(&r, 65);
  for (int i = 0; i < 130; i++) r_uv(&r, 0);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "label count not 1..64");

/* One series __name__=m with raw sample bytes after the label pairs. */
#define SAMPLES(body)                                       \
  do {                                                      \
    r_head(&r);                                             \
    r_strings(&r);                                          \
    r_uv(&r, 1), r_uv(&r, 1), r_uv(&r, 0), r_uv(&r, 1);     \
    body;                                                   \
    r_crc(&r);                                              \
  } while (0)
  SAMPLES(r_uv(&r, 0));
  expect_bad(&r, KEEL_EINVAL, "sample count not 1..65536");
  SAMPLES(r_uv(&r, 65537));
  expect_bad(&r, KEEL_EINVAL, "sample count not 1..65536");
  SAMPLES(r_uv(&r, 1000); r_zz(&r, 0));
  expect_bad(&r, KEEL_EINVAL, "sample count past the end");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 0); r_value(&r, 1); r_u8(&r, 0x80));
  expect_bad(&r, KEEL_EINVAL, "timestamps not strictly increasing");
  SAMPLES(r_uv(&r, 3); r_zz(&r, 0); r_zz(&r, 10); r_zz(&r, -20); r_value(&r, 1); r_u8(&r, 0x80);
          r_u8(&r, 0x80));
  expect_bad(&r, KEEL_EINVAL, "timestamps not strictly increasing");
  SAMPLES(r_uv(&r, 1); r_zz(&r, 0); r_bytes(&r, "\0\0\0", 3));
  expect_bad(&r, KEEL_EINVAL, "first value truncated");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 1); r_value(&r, 1));
  expect_bad(&r, KEEL_EINVAL, "value truncated");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 1); r_value(&r, 1); r_u8(&r, 0x44));
  expect_bad(&r, KEEL_EINVAL, "bad value control byte");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 1); r_value(&r, 1); r_u8(&r, 0x81));
  expect_bad(&r, KEEL_EINVAL, "bad value control byte");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 1); r_value(&r, 1); r_u8(&r, 0x07));
  expect_bad(&r, KEEL_EINVAL, "value truncated");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 1); r_value(&r, 1); r_u8(&r, 0x61);
          r_u8(&r, 0x00));
  expect_bad(&r, KEEL_EINVAL, "value not in canonical form");
  SAMPLES(r_uv(&r, 2); r_zz(&r, 0); r_zz(&r, 1); r_value(&r, 1); r_u8(&r, 0x42);
          r_u8(&r, 0x01); r_u8(&r, 0x00));
  expect_bad(&r, KEEL_EINVAL, "value not in canonical form");
  SAMPLES(r_uv(&r, 1); r_zz(&r, 0));
  expect_bad(&r, KEEL_EINVAL, "first value truncated");

  /* Two series, the second bad: the first is never delivered. */
  r_head(&r);
  r_strings(&r);
  r_uv(&r, 2);
  r_uv(&r, 1), r_uv(&r, 0), r_uv(&r, 1), r_uv(&r, 1), r_zz(&r, 0), r_value(&r, 1);
  r_uv(&r, 1), r_uv(&r, 0), r_uv(&r, 7);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "string index out of range");
  /* A series count promising more than there is. */
  r_head(&r);
  r_strings(&r);
  r_uv(&r, 3);
  r_uv(&r, 1), r_uv(&r, 0), r_uv(&r, 1), r_uv(&r, 1), r_zz(&r, 0), r_value(&r, 1);
  r_crc(&r);
  expect_bad(&r, KEEL_EINVAL, "label count: truncated varint");
}

/* Every proper prefix of a good batch, CRC made right, is refused; so is
 * every single-bit flip with the CRC left as is. */
static void test_decoder_prefixes_and_flips(void **state) {
  keel_mb_enc_t enc;
  keel_buf_t out;
  keel_err_t e;
  raw_t r;
  static const keel_mb_label_t l[] = {{"__name__", "node_memory_MemFree_bytes"}};
  static const keel_mb_label_t l2[] = {{"__name__", "node_cpu_seconds_total"},
                                       {"cpu", "1"},
                                       {"mode", "user"}};
  int64_t t[] = {1790000000000, 1790000001000, 1790000002000};
  double v[] = {1e9, 1.5e9, 1.25e9};

  (void)state;
  keel_mb_enc_init(&enc, 0);
  keel_buf_init(&out, 1 << 20);
  assert_int_equal(keel_mb_enc_add(&enc, l, 1, t, v, 3, &e), 0);
  assert_int_equal(keel_mb_enc_add(&enc, l2, 3, t, v, 3, &e), 0);
  assert_int_equal(keel_mb_enc_finish(&enc, &out, &e), 0);
  assert_true(out.len < sizeof r.b);
  for (size_t k = 0; k + 4 < out.len; k++) {
    int rc;
    memcpy(r.b, out.data, k);
    r.n = k;
    r_crc(&r);
    rc = keel_mb_decode(r.b, r.n, never, NULL, &e);
    if (rc != KEEL_EINVAL) fail_msg("prefix %zu: rc %d (%s)", k, rc, e.msg);
  }
  for (size_t k = 0; k < out.len * 8; k++) {
    memcpy(r.b, out.data, out.len);
    r.n = out.len;
    r.b[k / 8] ^= (uint8_t)(1u << (k % 8));
    assert_true(keel_mb_decode(r.b, r.n, never, NULL, &e) < 0);
  }
  keel_mb_enc_free(&enc);
  keel_buf_free(&out);
}

static void test_decoder_size_limit(void **state) {
  size_t n = KEEL_MB_MAX_BATCH + 1;
  char *p = calloc(1, n);
  keel_err_t e;
  (void)state;
  memcpy(p, "KMB\x01", 4);
  assert_int_equal(keel_mb_decode(p, n, never, NULL, &e), KEEL_ETOOBIG);
  assert_non_null(strstr(e.msg, "limit"));
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_roundtrip_edges),
      cmocka_unit_test(test_roundtrip_random),
      cmocka_unit_test(test_reset_reuses),
      cmocka_unit_test(test_encoder_refuses),
      cmocka_unit_test(test_encoder_cap),
      cmocka_unit_test(test_decoder_good_raw),
      cmocka_unit_test(test_decoder_refuses),
      cmocka_unit_test(test_decoder_refuses_series),
      cmocka_unit_test(test_decoder_prefixes_and_flips),
      cmocka_unit_test(test_decoder_size_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
