/* tsdb_testutil.h — a reference model for the TSDB unit tests: what was
 * appended (and accepted) per series, and a check that a querier returns
 * exactly that, bit for bit. */
#ifndef TSDB_TESTUTIL_H
#define TSDB_TESTUTIL_H

#include "keeld_testutil.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "metrics/tsdb.h"

#define TM_MAXSER 512

typedef struct tm_series {
  char idx[16], job[16];
  k_label_t lab[3];
  int64_t *t;
  double *v;
  size_t n, cap;
} tm_series_t;

typedef struct tmodel {
  tm_series_t s[TM_MAXSER];
  size_t ns;
} tmodel_t;

static inline uint64_t tm_rnd(uint64_t *st) {
  uint64_t x = *st;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *st = x;
}

/* Series i: {__name__="tm_metric", i="<i>", job="j<i % 3>"} (sorted). */
static inline void tm_init(tmodel_t *m, size_t ns) {
  memset(m, 0, sizeof *m);
  m->ns = ns;
  for (size_t i = 0; i < ns; i++) {
    tm_series_t *s = &m->s[i];
    snprintf(s->idx, sizeof s->idx, "%05zu", i);
    snprintf(s->job, sizeof s->job, "j%zu", i % 3);
    s->lab[0] = (k_label_t){"__name__", "tm_metric"};
    s->lab[1] = (k_label_t){"i", s->idx};
    s->lab[2] = (k_label_t){"job", s->job};
  }
}

static inline void tm_free(tmodel_t *m) {
  for (size_t i = 0; i < m->ns; i++) {
    free(m->s[i].t);
    free(m->s[i].v);
  }
}

static inline void tm_add(tmodel_t *m, size_t i, int64_t t, double v) {
  tm_series_t *s = &m->s[i];
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->t = realloc(s->t, s->cap * sizeof *s->t);
    s->v = realloc(s->v, s->cap * sizeof *s->v);
  }
  s->t[s->n] = t;
  s->v[s->n++] = v;
}

/* Appends and records (when accepted); returns the append's code. */
static inline int tm_append(k_tsdb_t *db, tmodel_t *m, size_t i, int64_t t, double v) {
  keel_err_t e = {0};
  int rc = k_tsdb_append(db, m->s[i].lab, 3, t, v, &e);
  if (rc == 0) tm_add(m, i, t, v);
  else if (rc != KEEL_ECONFLICT) fail_msg("append: %d %s", rc, e.msg);
  return rc;
}

static inline uint64_t tm_commit(k_tsdb_t *db) {
  keel_err_t e = {0};
  uint64_t g = 0;
  if (k_tsdb_commit(db, &g, &e)) fail_msg("commit: %s", e.msg);
  return g;
}

static inline uint64_t tm_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

/* The querier's answer for every series over [mint, maxt] equals the model. */
static inline void tm_check_q(k_querier_t *q, const tmodel_t *m, int64_t mint, int64_t maxt) {
  keel_err_t e = {0};
  const k_series_t *res;
  size_t n, r = 0;
  k_matcher_t mt = {K_MATCH_EQ, "__name__", "tm_metric"};
  if (q->select(q, &mt, 1, mint, maxt, &res, &n, &e)) fail_msg("select: %s", e.msg);
  /* model series are in label order already (zero-padded index) */
  for (size_t i = 0; i < m->ns; i++) {
    const tm_series_t *s = &m->s[i];
    size_t k = 0;
    while (k < s->n && s->t[k] < mint) k++;
    if (k >= s->n || s->t[k] > maxt) continue; /* no samples in range: not returned */
    if (r >= n) fail_msg("series %zu missing from the answer (%zu series)", i, n);
    if (res[r].labels.n != 3 || strcmp(res[r].labels.v[1].value, s->idx))
      fail_msg("answer %zu is series i=%s, expected %s", r, res[r].labels.n > 1 ? res[r].labels.v[1].value : "?", s->idx);
    for (size_t j = 0; j < res[r].n; j++, k++) {
      if (k >= s->n || s->t[k] > maxt)
        fail_msg("series %zu: extra sample t=%" PRId64, i, res[r].t[j]);
      if (res[r].t[j] != s->t[k] || tm_bits(res[r].v[j]) != tm_bits(s->v[k]))
        fail_msg("series %zu sample %zu: got (%" PRId64 ", %016" PRIx64 ") want (%" PRId64
                 ", %016" PRIx64 ")",
                 i, j, res[r].t[j], tm_bits(res[r].v[j]), s->t[k], tm_bits(s->v[k]));
    }
    if (k < s->n && s->t[k] <= maxt) fail_msg("series %zu: missing samples from t=%" PRId64, i, s->t[k]);
    r++;
  }
  if (r != n) fail_msg("answer has %zu series, model %zu", n, r);
}

static inline void tm_check_range(k_tsdb_t *db, const tmodel_t *m, int64_t mint, int64_t maxt) {
  k_querier_t *q;
  keel_err_t e = {0};
  if (k_tsdb_querier(db, &q, &e)) fail_msg("querier: %s", e.msg);
  tm_check_q(q, m, mint, maxt);
  q->close(q);
}

static inline void tm_check(k_tsdb_t *db, const tmodel_t *m) {
  tm_check_range(db, m, INT64_MIN, INT64_MAX);
}

#endif
