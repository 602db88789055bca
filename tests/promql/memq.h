/* tests/promql/memq.h — an array-backed k_querier_t for PromQL tests.
 *
 * Header-only (static functions) so the unit tests, the peer check and the
 * fuzz harness share it without a library.  Series are kept sorted by
 * labels (Prometheus' order); samples must be added in time order.
 * Regex matchers are POSIX ERE anchored as "^(re)$", like the TSDB's.
 * Everything select returns stays valid until close (each call's result
 * array is kept in a list).
 */
#ifndef KEEL_TESTS_PROMQL_MEMQ_H
#define KEEL_TESTS_PROMQL_MEMQ_H

#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/err.h"
#include "metrics/querier.h"

typedef struct memq_series {
  k_label_t *labels; /* owned strings */
  size_t nl;
  int64_t *t;
  double *v;
  size_t n, cap;
} memq_series_t;

typedef struct memq {
  k_querier_t q; /* first: a memq_t * is a k_querier_t * */
  memq_series_t *s;
  size_t n, cap;
  void **results; /* arrays handed out by select, freed on close */
  size_t nres, capres;
  size_t selects; /* how many select calls (tests check laziness) */
} memq_t;

static inline int memq_label_cmp(const k_label_t *a, size_t na, const k_label_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  for (size_t i = 0; i < n; i++) {
    int r = strcmp(a[i].name, b[i].name);
    if (r) return r;
    r = strcmp(a[i].value, b[i].value);
    if (r) return r;
  }
  return na < nb ? -1 : na > nb ? 1 : 0;
}

static inline int memq_keep(memq_t *m, void *p) {
  if (m->nres == m->capres) {
    size_t nc = m->capres ? m->capres * 2 : 16;
    void **nr = realloc(m->results, nc * sizeof *nr);
    if (!nr) return -1;
    m->results = nr;
    m->capres = nc;
  }
  m->results[m->nres++] = p;
  return 0;
}

static inline const char *memq_get(const memq_series_t *s, const char *name) {
  for (size_t i = 0; i < s->nl; i++)
    if (!strcmp(s->labels[i].name, name)) return s->labels[i].value;
  return "";
}

static inline int memq_match(const k_matcher_t *mt, const char *v, int *ok, keel_err_t *e) {
  regex_t r;
  size_t n;
  char *anch;
  int hit;
  switch (mt->type) {
  case K_MATCH_EQ: *ok = !strcmp(v, mt->value); return 0;
  case K_MATCH_NE: *ok = strcmp(v, mt->value) != 0; return 0;
  default: break;
  }
  n = strlen(mt->value);
  anch = malloc(n + 5);
  if (!anch) return KEEL_ENOMEM;
  snprintf(anch, n + 5, "^(%s)$", mt->value);
  if (regcomp(&r, anch, REG_EXTENDED | REG_NOSUB)) {
    free(anch);
    return keel_err_set(e, KEEL_EINVAL, "bad regex %s", mt->value);
  }
  hit = regexec(&r, v, 0, NULL, 0) == 0;
  regfree(&r);
  free(anch);
  *ok = mt->type == K_MATCH_RE ? hit : !hit;
  return 0;
}

static inline int memq_select(k_querier_t *q, const k_matcher_t *mt, size_t nm, int64_t mint,
                       int64_t maxt, const k_series_t **out, size_t *nout, keel_err_t *e) {
  memq_t *m = (memq_t *)q;
  k_series_t *res = malloc((m->n ? m->n : 1) * sizeof *res);
  size_t k = 0;
  m->selects++;
  if (!res || memq_keep(m, res)) {
    free(res);
    return KEEL_ENOMEM;
  }
  for (size_t i = 0; i < m->n; i++) {
    const memq_series_t *s = &m->s[i];
    int all = 1;
    size_t lo = 0, hi;
    for (size_t j = 0; j < nm && all; j++) {
      int rc = memq_match(&mt[j], memq_get(s, mt[j].name), &all, e);
      if (rc) return rc;
    }
    if (!all) continue;
    while (lo < s->n && s->t[lo] < mint) lo++;
    hi = lo;
    while (hi < s->n && s->t[hi] <= maxt) hi++;
    if (hi == lo) continue;
    res[k].labels.v = s->labels;
    res[k].labels.n = s->nl;
    res[k].t = s->t + lo;
    res[k].v = s->v + lo;
    res[k].n = hi - lo;
    k++;
  }
  *out = res;
  *nout = k;
  return 0;
}

static inline int memq_label_names(k_querier_t *q, const k_matcher_t *m, size_t nm, int64_t mint,
                            int64_t maxt, const char *const **out, size_t *n, keel_err_t *e) {
  (void)q, (void)m, (void)nm, (void)mint, (void)maxt, (void)e;
  *out = NULL;
  *n = 0;
  return 0;
}

static inline int memq_label_values(k_querier_t *q, const char *name, const k_matcher_t *m, size_t nm,
                             int64_t mint, int64_t maxt, const char *const **out, size_t *n,
                             keel_err_t *e) {
  (void)name;
  return memq_label_names(q, m, nm, mint, maxt, out, n, e);
}

static inline void memq_close(k_querier_t *q) {
  memq_t *m = (memq_t *)q;
  for (size_t i = 0; i < m->n; i++) {
    for (size_t j = 0; j < m->s[i].nl; j++) {
      free((char *)m->s[i].labels[j].name);
      free((char *)m->s[i].labels[j].value);
    }
    free(m->s[i].labels);
    free(m->s[i].t);
    free(m->s[i].v);
  }
  free(m->s);
  for (size_t i = 0; i < m->nres; i++) free(m->results[i]);
  free(m->results);
  memset(m, 0, sizeof *m);
}

static inline void memq_init(memq_t *m) {
  memset(m, 0, sizeof *m);
  m->q.select = memq_select;
  m->q.label_names = memq_label_names;
  m->q.label_values = memq_label_values;
  m->q.close = memq_close;
}

static inline int memq_lcmp(const void *a, const void *b) {
  return strcmp(((const k_label_t *)a)->name, ((const k_label_t *)b)->name);
}

/* The series with labels "name{a=b,c=d}" style: text is
 * `metric` or `metric{k="v",...}` or `{k="v",...}` (values may hold \" \\ \n).
 * Creates the series when new.  NULL on a malformed text. */
static inline memq_series_t *memq_series(memq_t *m, const char *text) {
  k_label_t l[64];
  size_t nl = 0, pos;
  const char *p = text;
  memq_series_t *s;
  if (*p && *p != '{') {
    const char *st = p;
    while (*p && *p != '{') p++;
    l[nl].name = strdup("__name__");
    l[nl].value = strndup(st, (size_t)(p - st));
    nl++;
  }
  if (*p == '{') {
    p++;
    while (*p && *p != '}') {
      const char *st = p;
      char *val, *o;
      if (nl == 64) return NULL;
      while (*p && *p != '=') p++;
      if (*p != '=' || p[1] != '"') return NULL;
      l[nl].name = strndup(st, (size_t)(p - st));
      p += 2;
      val = o = malloc(strlen(p) + 1);
      if (!val) return NULL;
      while (*p && *p != '"') {
        if (*p == '\\' && p[1]) {
          p++;
          *o++ = *p == 'n' ? '\n' : *p;
          p++;
        } else {
          *o++ = *p++;
        }
      }
      *o = '\0';
      if (*p != '"') return NULL;
      p++;
      l[nl++].value = val;
      if (*p == ',') p++;
    }
  }
  qsort(l, nl, sizeof l[0], memq_lcmp);
  for (pos = 0; pos < m->n; pos++) {
    int c = memq_label_cmp(m->s[pos].labels, m->s[pos].nl, l, nl);
    if (c == 0) {
      for (size_t i = 0; i < nl; i++) {
        free((char *)l[i].name);
        free((char *)l[i].value);
      }
      return &m->s[pos];
    }
    if (c > 0) break;
  }
  if (m->n == m->cap) {
    size_t nc = m->cap ? m->cap * 2 : 16;
    memq_series_t *ns = realloc(m->s, nc * sizeof *ns);
    if (!ns) return NULL;
    m->s = ns;
    m->cap = nc;
  }
  memmove(&m->s[pos + 1], &m->s[pos], (m->n - pos) * sizeof *m->s);
  m->n++;
  s = &m->s[pos];
  memset(s, 0, sizeof *s);
  s->labels = malloc((nl ? nl : 1) * sizeof *s->labels);
  if (!s->labels) return NULL;
  memcpy(s->labels, l, nl * sizeof *l);
  s->nl = nl;
  return s;
}

/* Appends one sample (t in ms, strictly after the series' last one). */
static inline int memq_add(memq_t *m, const char *series, int64_t t, double v) {
  memq_series_t *s = memq_series(m, series);
  if (!s) return -1;
  if (s->n && s->t[s->n - 1] >= t) return -1;
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 16;
    int64_t *nt = realloc(s->t, nc * sizeof *nt);
    double *nv;
    if (!nt) return -1;
    s->t = nt;
    nv = realloc(s->v, nc * sizeof *nv);
    if (!nv) return -1;
    s->v = nv;
    s->cap = nc;
  }
  s->t[s->n] = t;
  s->v[s->n] = v;
  s->n++;
  return 0;
}

/* The stale-marker NaN (labels.h). */
static inline double memq_stale(void) {
  uint64_t b = K_STALE_NAN_BITS;
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}

#endif
