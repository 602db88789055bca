/* Unit tests for metrics/chunk.c: XOR (head) and PACKED (block) chunks
 * round-trip timestamps and value bits exactly, on random data and on the
 * edges (NaN payloads, the stale marker, +-Inf, -0.0, denormals, huge and
 * negative timestamps); truncated or damaged chunks fail cleanly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics/chunk.h"
#include "metrics/labels.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static const uint64_t edge_bits[] = {
    K_STALE_NAN_BITS,
    UINT64_C(0x7ff8000000000001), /* quiet NaN with payload */
    UINT64_C(0xfff8000000000000), /* negative quiet NaN */
    UINT64_C(0x7ff0000000000001), /* signalling NaN */
    UINT64_C(0x7ff0000000000000), /* +Inf */
    UINT64_C(0xfff0000000000000), /* -Inf */
    UINT64_C(0x8000000000000000), /* -0.0 */
    UINT64_C(0x0000000000000000), /* +0.0 */
    UINT64_C(0x0000000000000001), /* smallest denormal */
    UINT64_C(0x7fefffffffffffff), /* DBL_MAX */
    UINT64_C(0x3ff0000000000000), /* 1.0 */
};

static double bits2d(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}
static uint64_t d2bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

/* Decodes buf and compares with t, v bit for bit. */
static void check_decode(const uint8_t *buf, size_t len, const int64_t *t, const double *v,
                         size_t n) {
  int64_t *dt = malloc(sizeof *dt * (n + 1));
  double *dv = malloc(sizeof *dv * (n + 1));
  size_t cnt = 0, got = 0;
  assert_int_equal(k_chunk_count(buf, len, &cnt), 0);
  assert_int_equal(cnt, n);
  assert_int_equal(k_chunk_decode(buf, len, dt, dv, n, &got), 0);
  assert_int_equal(got, n);
  for (size_t i = 0; i < n; i++) {
    if (dt[i] != t[i]) fail_msg("sample %zu: t %lld != %lld", i, (long long)dt[i], (long long)t[i]);
    if (d2bits(dv[i]) != d2bits(v[i]))
      fail_msg("sample %zu: v bits %016llx != %016llx", i, (unsigned long long)d2bits(dv[i]),
               (unsigned long long)d2bits(v[i]));
  }
  free(dt);
  free(dv);
}

/* Both encodings of the same samples, then every truncation of each. */
static void roundtrip(const int64_t *t, const double *v, size_t n) {
  k_xorapp_t a = {0};
  k_bytes_t pk = {0};
  int64_t *dt = malloc(sizeof *dt * n);
  double *dv = malloc(sizeof *dv * n);
  for (size_t i = 0; i < n; i++) assert_int_equal(k_xorapp_add(&a, t[i], v[i]), 0);
  assert_int_equal(a.n, n);
  check_decode(a.buf, k_xorapp_bytes(&a), t, v, n);
  assert_int_equal(k_chunk_pack(t, v, n, &pk), 0);
  check_decode(pk.p, pk.len, t, v, n);
  /* truncations never crash and never claim success with wrong data (every
   * cut of small chunks; of big ones, ~64 spread out and the last 16) */
  for (size_t cut = 0, step = pk.len > 128 ? pk.len / 64 : 1; cut < pk.len;
       cut += cut + 16 >= pk.len ? 1 : step) {
    size_t got = 0;
    int rc = k_chunk_decode(pk.p, cut, dt, dv, n, &got);
    if (rc == 0) {
      /* a shorter prefix may still decode if the cut is in padding */
      assert_int_equal(got, n);
      for (size_t i = 0; i < n; i++) assert_true(dt[i] == t[i]);
    }
  }
  for (size_t cut = 0, step = k_xorapp_bytes(&a) > 128 ? k_xorapp_bytes(&a) / 64 : 1;
       cut < k_xorapp_bytes(&a); cut += cut + 16 >= k_xorapp_bytes(&a) ? 1 : step) {
    size_t got = 0;
    (void)k_chunk_decode(a.buf, cut, dt, dv, n, &got);
  }
  k_xorapp_free(&a);
  k_bytes_free(&pk);
  free(dt);
  free(dv);
}

static void test_edges(void **state) {
  (void)state;
  size_t ne = sizeof edge_bits / sizeof edge_bits[0];
  int64_t t[64];
  double v[64];
  size_t n = 0;
  /* every edge value after every other, so each XOR pair occurs */
  for (size_t i = 0; i < ne; i++)
    for (size_t j = 0; j < 4 && n < 64; j++) {
      t[n] = -1000000 + (int64_t)n * 15000;
      v[n] = bits2d(edge_bits[(i + j * 3) % ne]);
      n++;
    }
  roundtrip(t, v, n);
  /* one sample of each */
  for (size_t i = 0; i < ne; i++) {
    int64_t t1 = -5;
    double v1 = bits2d(edge_bits[i]);
    roundtrip(&t1, &v1, 1);
  }
}

static void test_time_extremes(void **state) {
  (void)state;
  int64_t t[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX / 2, INT64_MAX - 1, INT64_MAX};
  double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  roundtrip(t, v, 8);
  /* decreasing too: the formats do not need order */
  int64_t r[] = {INT64_MAX, 0, INT64_MIN, 17, -17, 1LL << 62, -(1LL << 62), 3};
  roundtrip(r, v, 8);
  /* deltas in every bucket of the prefix code */
  int64_t b[10] = {0};
  int64_t steps[] = {10000, 10000, 10063, 9936, 18000, 500000, 100, 1LL << 40, 1};
  for (int i = 1; i < 10; i++) b[i] = b[i - 1] + steps[i - 1];
  roundtrip(b, v, 8);
  roundtrip(b + 1, v, 8);
}

static void test_random(void **state) {
  (void)state;
  enum { N = 500 };
  int64_t t[N];
  double v[N];
  for (int round = 0; round < 200; round++) {
    size_t n = 1 + rnd() % N;
    int64_t cur = (int64_t)(rnd() % 2000000000000ULL) - 1000000000000LL;
    for (size_t i = 0; i < n; i++) {
      switch (round % 5) {
      case 0: v[i] = bits2d(rnd()); break; /* any bits, NaNs included */
      case 1: v[i] = (double)(rnd() % 1000) / 100.0; break;
      case 2: v[i] = i ? v[i - 1] + (double)(rnd() % 1000) : 1e9; break;
      case 3: v[i] = bits2d(edge_bits[rnd() % (sizeof edge_bits / sizeof edge_bits[0])]); break;
      default: v[i] = (double)(int64_t)(rnd() % 100) - 50; break;
      }
      t[i] = cur;
      cur += round % 3 == 0 ? (int64_t)(rnd() % 100000) - 50000 : 15000 + (int64_t)(rnd() % 7) - 3;
    }
    roundtrip(t, v, n);
  }
}

/* Regular scrapes of a counter with two decimals: the packed form is
 * decimal integers, far below a byte per sample. */
static void test_packed_small(void **state) {
  (void)state;
  enum { N = 720 };
  int64_t t[N];
  double v[N], c[N], g[N];
  k_bytes_t pk = {0};
  int64_t ticks = 123456789;
  for (int i = 0; i < N; i++) {
    t[i] = 1700000000000LL + i * 10000LL + (int64_t)(rnd() % 3);
    ticks += 950 + (int64_t)(rnd() % 100);
    v[i] = (double)ticks / 100.0;
    c[i] = 42;
    g[i] = (double)((int64_t)(rnd() % 1000) * 4096);
  }
  assert_int_equal(k_chunk_pack(t, v, N, &pk), 0);
  check_decode(pk.p, pk.len, t, v, N);
  print_message("counter with jitter: %.2f bytes/sample\n", (double)pk.len / N);
  assert_true(pk.len < N * 2);
  pk.len = 0;
  assert_int_equal(k_chunk_pack(t, c, N, &pk), 0);
  check_decode(pk.p, pk.len, t, c, N);
  print_message("constant: %.2f bytes/sample\n", (double)pk.len / N);
  assert_true(pk.len < N * 6 / 10);
  pk.len = 0;
  assert_int_equal(k_chunk_pack(t, g, N, &pk), 0);
  check_decode(pk.p, pk.len, t, g, N);
  print_message("gauge of pages: %.2f bytes/sample\n", (double)pk.len / N);
  k_bytes_free(&pk);
}

static void test_corrupt(void **state) {
  (void)state;
  int64_t t[200];
  double v[200];
  k_xorapp_t a = {0};
  k_bytes_t pk = {0};
  for (int i = 0; i < 200; i++) {
    t[i] = i * 1000;
    v[i] = bits2d(rnd());
    assert_int_equal(k_xorapp_add(&a, t[i], v[i]), 0);
  }
  assert_int_equal(k_chunk_pack(t, v, 200, &pk), 0);
  /* flipped bytes: decoding either fails or returns 200 samples; never crashes */
  for (int k = 0; k < 2000; k++) {
    uint8_t *c = malloc(pk.len), *x = malloc(k_xorapp_bytes(&a));
    int64_t dt[200];
    double dv[200];
    size_t got;
    memcpy(c, pk.p, pk.len);
    memcpy(x, a.buf, k_xorapp_bytes(&a));
    c[rnd() % pk.len] ^= (uint8_t)(1 + rnd() % 255);
    x[rnd() % k_xorapp_bytes(&a)] ^= (uint8_t)(1 + rnd() % 255);
    (void)k_chunk_decode(c, pk.len, dt, dv, 200, &got);
    (void)k_chunk_decode(x, k_xorapp_bytes(&a), dt, dv, 200, &got);
    free(c);
    free(x);
  }
  /* a cap below the count is refused */
  {
    int64_t dt[10];
    double dv[10];
    size_t got;
    assert_int_equal(k_chunk_decode(pk.p, pk.len, dt, dv, 10, &got), KEEL_ECORRUPT);
    uint8_t bad = 9;
    assert_int_equal(k_chunk_decode(&bad, 1, dt, dv, 10, &got), KEEL_ECORRUPT);
  }
  k_xorapp_free(&a);
  k_bytes_free(&pk);
}

/* The appender's buffer can be reset and reused. */
static void test_reset(void **state) {
  (void)state;
  k_xorapp_t a = {0};
  int64_t t[3] = {5, 6, 7};
  double v[3] = {1.5, -2.5, 3.5};
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 3; i++) assert_int_equal(k_xorapp_add(&a, t[i], v[i]), 0);
    check_decode(a.buf, k_xorapp_bytes(&a), t, v, 3);
    assert_int_equal(a.mint, 5);
    assert_int_equal(a.t, 7);
    k_xorapp_reset(&a);
  }
  k_xorapp_free(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_edges),        cmocka_unit_test(test_time_extremes),
      cmocka_unit_test(test_random),       cmocka_unit_test(test_packed_small),
      cmocka_unit_test(test_corrupt),      cmocka_unit_test(test_reset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
