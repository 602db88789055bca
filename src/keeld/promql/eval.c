/* promql/eval.c — evaluation, structured like Prometheus 2.42's engine.go.
 *
 * Every instant-vector or scalar node evaluates to a matrix over all steps
 * (an instant query is a range query with one step).  rangeEval walks the
 * steps, hands each step's input vectors to a per-step function and
 * gathers the output into series keyed by label set; functions over a
 * range vector take the per-series path (as Prometheus does): one output
 * series per input series, an error when two end up with the same labels.  Label sets are interned per query
 * (pq_intern), so equal sets are equal pointers and have an id for maps.
 *
 * Recursion: eval() recurses once per AST level; the parser bounds the
 * AST height (opts->max_depth).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/grow.h"
#include "keel/metricbatch.h"
#include "promql/internal.h"

#define ENV "query execution"

/* ---- small containers ---------------------------------------------- */

int pq_errf(pq_ctx_t *c, int code, const char *fmt, ...) {
  va_list ap;
  if (!c->e) return code;
  va_start(ap, fmt);
  c->e->code = code;
  c->e->type = code == KEEL_ENOMEM || code == KEEL_EIO ? K_PROMQL_ERR_INTERNAL
                                                        : K_PROMQL_ERR_EXECUTION;
  vsnprintf(c->e->msg, sizeof c->e->msg, fmt, ap);
  va_end(ap);
  for (char *p = c->e->msg; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  return code;
}

static int nomem(pq_ctx_t *c) { return pq_errf(c, KEEL_ENOMEM, "out of memory"); }

int pq_account(pq_ctx_t *c, size_t n) {
  if (c->cur_samples + n > c->o->max_samples)
    return pq_errf(c, KEEL_ETOOBIG,
                   "query processing would load too many samples into memory in " ENV);
  c->cur_samples += n;
  return 0;
}

static void unaccount(pq_ctx_t *c, size_t n) { c->cur_samples -= n < c->cur_samples ? n : c->cur_samples; }

int pq_vec_push(pq_ctx_t *c, pq_vector_t *v, const pq_lset_t *m, int64_t t, double val) {
  pq_sample_t *ns = keel_grow(v->s, &v->cap, v->n, sizeof *ns, 8);
  if (!ns) return nomem(c);
  v->s = ns;
  v->s[v->n].m = m;
  v->s[v->n].t = t;
  v->s[v->n].v = val;
  v->n++;
  return 0;
}

void pq_vec_free(pq_vector_t *v) {
  free(v->s);
  memset(v, 0, sizeof *v);
}

int pq_series_push(pq_series_t *s, int64_t t, double v) {
  pq_point_t *np = keel_grow(s->p, &s->cap, s->n, sizeof *np, 4);
  if (!np) return KEEL_ENOMEM;
  s->p = np;
  s->p[s->n].t = t;
  s->p[s->n].v = v;
  s->n++;
  return 0;
}

static int matrix_add(pq_ctx_t *c, pq_matrix_t *m, const pq_lset_t *l, size_t *idx) {
  pq_series_t *ns = keel_grow(m->s, &m->cap, m->n, sizeof *ns, 8);
  if (!ns) return nomem(c);
  m->s = ns;
  memset(&m->s[m->n], 0, sizeof m->s[m->n]);
  m->s[m->n].m = l;
  *idx = m->n++;
  return 0;
}

void pq_matrix_free(pq_ctx_t *c, pq_matrix_t *m) {
  for (size_t i = 0; i < m->n; i++) {
    if (c) unaccount(c, m->s[i].n);
    free(m->s[i].p);
  }
  free(m->s);
  memset(m, 0, sizeof *m);
}

/* ---- uint64 map ------------------------------------------------------- */

#define MAP_EMPTY UINT64_MAX

static size_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= UINT64_C(0xff51afd7ed558ccd);
  k ^= k >> 33;
  return (size_t)k;
}

void pq_map_free(pq_map_t *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

void pq_map_clear(pq_map_t *m) {
  if (m->n) {
    for (size_t i = 0; i < m->cap; i++) m->keys[i] = MAP_EMPTY;
    m->n = 0;
  }
}

int pq_map_get(const pq_map_t *m, uint64_t k, uint64_t *v) {
  if (!m->cap) return 0;
  for (size_t i = mix(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (m->keys[i] == MAP_EMPTY) return 0;
    if (m->keys[i] == k) {
      if (v) *v = m->vals[i];
      return 1;
    }
  }
}

int pq_map_put(pq_map_t *m, uint64_t k, uint64_t v) {
  size_t i;
  if ((m->n + 1) * 2 > m->cap) {
    size_t nc = m->cap ? m->cap * 2 : 16;
    uint64_t *nk = malloc(nc * sizeof *nk), *nv = malloc(nc * sizeof *nv);
    if (!nk || !nv) {
      free(nk);
      free(nv);
      return KEEL_ENOMEM;
    }
    for (size_t j = 0; j < nc; j++) nk[j] = MAP_EMPTY;
    for (size_t j = 0; j < m->cap; j++) {
      if (m->keys[j] == MAP_EMPTY) continue;
      for (i = mix(m->keys[j]) & (nc - 1); nk[i] != MAP_EMPTY; i = (i + 1) & (nc - 1)) {
      }
      nk[i] = m->keys[j];
      nv[i] = m->vals[j];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = nc;
  }
  for (i = mix(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (m->keys[i] == MAP_EMPTY) {
      m->keys[i] = k;
      m->vals[i] = v;
      m->n++;
      return 0;
    }
    if (m->keys[i] == k) {
      m->vals[i] = v;
      return 0;
    }
  }
}

/* ---- label sets ------------------------------------------------------- */

/* Hash of the label set for the intern table only (never shown, never
 * ordered by): eight bytes per multiply, as every series of a selection is
 * interned at least once. */
static inline uint64_t hash_str(uint64_t h, const char *s) {
  const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
  size_t n = strlen(s);
  uint64_t w;
  for (; n >= 8; s += 8, n -= 8) {
    memcpy(&w, s, 8);
    h = (h ^ w) * k;
    h ^= h >> 29;
  }
  w = 0;
  memcpy(&w, s, n);
  h = (h ^ w ^ (uint64_t)(n + 1) << 56) * k; /* + 1: the string's end counts */
  return h ^ (h >> 32);
}

static uint64_t hash_labels(const k_label_t *v, size_t n) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (size_t i = 0; i < n; i++) h = hash_str(hash_str(h, v[i].name), v[i].value);
  h ^= h >> 33;
  h *= UINT64_C(0xff51afd7ed558ccd);
  return h ^ (h >> 33);
}

static int same_labels(const pq_lset_t *l, const k_label_t *v, size_t n) {
  if (l->n != n) return 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(l->v[i].name, v[i].name) || strcmp(l->v[i].value, v[i].value)) return 0;
  return 1;
}

const pq_lset_t *pq_intern(pq_ctx_t *c, const k_label_t *v, size_t n) {
  uint64_t h = hash_labels(v, n);
  pq_lset_t *l;
  if (c->tabcap) {
    for (l = c->tab[h & (c->tabcap - 1)]; l; l = l->next)
      if (l->hash == h && same_labels(l, v, n)) return l;
  }
  /* at most half full: a lookup of a new set then usually finds an empty
   * bucket without reading a node (a cache miss per series otherwise) */
  if ((c->ntab + 1) * 2 > c->tabcap) {
    size_t nc = c->tabcap ? c->tabcap * 2 : 256;
    pq_lset_t **nt = calloc(nc, sizeof *nt);
    if (!nt) {
      nomem(c);
      return NULL;
    }
    for (size_t i = 0; i < c->tabcap; i++)
      for (pq_lset_t *x = c->tab[i], *nx; x; x = nx) {
        nx = x->next;
        x->next = nt[x->hash & (nc - 1)];
        nt[x->hash & (nc - 1)] = x;
      }
    free(c->tab);
    c->tab = nt;
    c->tabcap = nc;
  }
  l = pq_alloc(c->arena, sizeof *l + n * sizeof(k_label_t));
  if (!l) {
    nomem(c);
    return NULL;
  }
  l->hash = h;
  l->id = c->next_id++;
  l->n = (uint32_t)n;
  if (n) memcpy(l->v, v, n * sizeof *v);
  l->next = c->tab[h & (c->tabcap - 1)];
  c->tab[h & (c->tabcap - 1)] = l;
  c->ntab++;
  return l;
}

static k_label_t *scratch(pq_ctx_t *c, size_t n) {
  if (n > c->scratchcap) {
    size_t nc = n < 16 ? 16 : n * 2;
    k_label_t *ns = realloc(c->scratch, nc * sizeof *ns);
    if (!ns) return NULL;
    c->scratch = ns;
    c->scratchcap = nc;
  }
  return c->scratch;
}

const char *pq_lset_get(const pq_lset_t *l, const char *name) {
  for (uint32_t i = 0; i < l->n; i++)
    if (!strcmp(l->v[i].name, name)) return l->v[i].value;
  return NULL;
}

const pq_lset_t *pq_lset_drop_name(pq_ctx_t *c, const pq_lset_t *l) {
  static const char *const nm[] = {"__name__"};
  if (!pq_lset_get(l, "__name__")) return l;
  return pq_lset_filter(c, l, nm, 1, 0, 0);
}

static int in_list(const char *s, const char *const *names, size_t nn) {
  for (size_t i = 0; i < nn; i++)
    if (!strcmp(s, names[i])) return 1;
  return 0;
}

const pq_lset_t *pq_lset_filter(pq_ctx_t *c, const pq_lset_t *l, const char *const *names,
                                size_t nn, int keep, int drop_name) {
  k_label_t *v = scratch(c, l->n);
  size_t n = 0;
  if (!v && l->n) {
    nomem(c);
    return NULL;
  }
  for (uint32_t i = 0; i < l->n; i++) {
    int listed = in_list(l->v[i].name, names, nn);
    if (keep ? !listed : (listed || (drop_name && !strcmp(l->v[i].name, "__name__")))) continue;
    v[n++] = l->v[i];
  }
  if (n == l->n) return l;
  return pq_intern(c, v, n);
}

const pq_lset_t *pq_lset_set(pq_ctx_t *c, const pq_lset_t *l, const char *name,
                             const char *value) {
  k_label_t *v = scratch(c, l->n + 1);
  size_t n = 0;
  int done = 0;
  const char *cur = pq_lset_get(l, name);
  if (!v) {
    nomem(c);
    return NULL;
  }
  if (!value || !*value) {
    if (!cur) return l;
    for (uint32_t i = 0; i < l->n; i++)
      if (strcmp(l->v[i].name, name)) v[n++] = l->v[i];
    return pq_intern(c, v, n);
  }
  if (cur && !strcmp(cur, value)) return l;
  value = pq_strndup(c->arena, value, strlen(value));
  if (!value) {
    nomem(c);
    return NULL;
  }
  if (!cur) {
    name = pq_strndup(c->arena, name, strlen(name));
    if (!name) {
      nomem(c);
      return NULL;
    }
  }
  for (uint32_t i = 0; i < l->n; i++) {
    int cmp = strcmp(l->v[i].name, name);
    if (!done && cmp >= 0) {
      v[n].name = name;
      v[n++].value = value;
      done = 1;
      if (cmp == 0) continue;
    }
    v[n++] = l->v[i];
  }
  if (!done) {
    v[n].name = name;
    v[n++].value = value;
  }
  return pq_intern(c, v, n);
}

int pq_lset_cmp(const pq_lset_t *a, const pq_lset_t *b) {
  uint32_t n = a->n < b->n ? a->n : b->n;
  for (uint32_t i = 0; i < n; i++) {
    int r = strcmp(a->v[i].name, b->v[i].name);
    if (r) return r < 0 ? -1 : 1;
    r = strcmp(a->v[i].value, b->v[i].value);
    if (r) return r < 0 ? -1 : 1;
  }
  return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
}

void pq_lset_str(const pq_lset_t *l, char *buf, size_t cap) {
  size_t o = 0;
  if (!cap) return;
  buf[0] = '\0';
#define APP(...)                                                          \
  do {                                                                    \
    if (o < cap) {                                                        \
      int w_ = snprintf(buf + o, cap - o, __VA_ARGS__);                   \
      if (w_ > 0) o += (size_t)w_ < cap - o ? (size_t)w_ : cap - o - 1;   \
    }                                                                     \
  } while (0)
  APP("{");
  for (uint32_t i = 0; i < l->n; i++) {
    char q[512];
    pq_quote(q, sizeof q, l->v[i].value, strlen(l->v[i].value));
    APP("%s%s=%s", i ? ", " : "", l->v[i].name, q);
  }
  APP("}");
#undef APP
}

static const pq_lset_t *lset_from(pq_ctx_t *c, const k_labels_t *ls) {
  return pq_intern(c, ls->v, ls->n);
}

/* pq_lset_drop_name(lset_from(ls)) with one intern instead of two: the
 * set with its name is never used by a function that drops it. */
static const pq_lset_t *lset_without_name(pq_ctx_t *c, const k_labels_t *ls) {
  k_label_t *v = scratch(c, ls->n);
  size_t n = 0;
  if (!v && ls->n) {
    nomem(c);
    return NULL;
  }
  for (size_t i = 0; i < ls->n; i++)
    if (strcmp(ls->v[i].name, "__name__")) v[n++] = ls->v[i];
  return pq_intern(c, v, n);
}

int pq_is_stale(double v) {
  uint64_t b;
  memcpy(&b, &v, sizeof b);
  return b == K_STALE_NAN_BITS;
}

const k_pq_node_t *pq_unwrap_parens(const k_pq_node_t *n) {
  while (n->kind == K_PQ_PAREN) n = n->u.paren.expr;
  return n;
}

/* createLabelsForAbsentFunction: equality matchers become labels, a label
 * with any other matcher (or matched twice) is left out. */
const pq_lset_t *pq_absent_labels(pq_ctx_t *c, const k_pq_node_t *arg) {
  const k_pq_node_t *vs;
  const pq_lset_t *l = c->empty;
  const char **empty = NULL;
  size_t ne = 0;
  arg = pq_unwrap_parens(arg);
  if (arg->kind == K_PQ_VSEL) vs = arg;
  else if (arg->kind == K_PQ_MSEL) vs = arg->u.msel.vs;
  else return l;
  empty = malloc((vs->u.vsel.nm + 1) * sizeof *empty);
  if (!empty) {
    nomem(c);
    return NULL;
  }
  for (size_t i = 0; i < vs->u.vsel.nm && l; i++) {
    const k_matcher_t *m = &vs->u.vsel.m[i];
    if (!strcmp(m->name, "__name__")) continue;
    if (m->type == K_MATCH_EQ && !pq_lset_get(l, m->name)) l = pq_lset_set(c, l, m->name, m->value);
    else empty[ne++] = m->name;
  }
  for (size_t i = 0; i < ne && l; i++) l = pq_lset_set(c, l, empty[i], NULL);
  free(empty);
  return l;
}

/* ---- values ----------------------------------------------------------- */

typedef struct value {
  k_pq_type_t type; /* SCALAR/VECTOR/MATRIX: mat; STRING: str */
  pq_matrix_t mat;
  const char *str;
} value_t;

static void value_free(pq_ctx_t *c, value_t *v) {
  pq_matrix_free(c, &v->mat);
  memset(v, 0, sizeof *v);
}

static int eval(pq_ctx_t *c, const k_pq_node_t *n, value_t *out);

/* Number of steps and the i-th step's time. */
static int64_t step_ts(const pq_ctx_t *c, size_t i) { return c->start + (int64_t)i * c->interval; }

/* The error when any two of n label sets (the first at ls, one every
 * stride bytes) are the same (Matrix/Vector.ContainsSameLabelset); seen is
 * scratch, cleared here, the caller's to free. */
static int unique_labels(pq_ctx_t *c, pq_map_t *seen, const pq_lset_t *const *ls, size_t n,
                         size_t stride) {
  if (n < 2) return 0;
  pq_map_clear(seen);
  for (size_t i = 0; i < n; i++) {
    const pq_lset_t *l = *(const pq_lset_t *const *)((const char *)ls + i * stride);
    if (pq_map_get(seen, l->id, NULL))
      return pq_errf(c, KEEL_EINVAL, "vector cannot contain metrics with the same labelset");
    if (pq_map_put(seen, l->id, 1)) return nomem(c);
  }
  return 0;
}

/* unique_labels over a matrix's series. */
static int unique_series(pq_ctx_t *c, const pq_matrix_t *m) {
  pq_map_t seen = {0};
  int rc = m->n ? unique_labels(c, &seen, (const pq_lset_t *const *)&m->s[0].m, m->n,
                                sizeof m->s[0])
                : 0;
  pq_map_free(&seen);
  return rc;
}

/* One more point of a series being built: counted against max_samples. */
static int point_push(pq_ctx_t *c, pq_series_t *o, int64_t t, double v) {
  int rc = pq_account(c, 1);
  if (rc) return rc;
  return pq_series_push(o, t, v) ? nomem(c) : 0;
}

/* Moves the built series *o, labelled l, into m; on failure (l NULL: out
 * of memory) frees its points and gives their samples back. */
static int matrix_take(pq_ctx_t *c, pq_matrix_t *m, const pq_lset_t *l, pq_series_t *o) {
  size_t idx;
  int rc = KEEL_ENOMEM;
  if (l && !(rc = matrix_add(c, m, l, &idx))) {
    o->m = l;
    m->s[idx] = *o;
    return 0;
  }
  unaccount(c, o->n);
  free(o->p);
  return rc;
}

/* ---- selectors -------------------------------------------------------- */

static int do_select(pq_ctx_t *c, const k_pq_node_t *vs, int64_t mint, int64_t maxt,
                     const k_series_t **ser, size_t *n) {
  keel_err_t ke = {0};
  int rc = c->q->select(c->q, vs->u.vsel.m, vs->u.vsel.nm, mint, maxt, ser, n, &ke);
  if (rc) {
    c->e->code = rc;
    c->e->type = rc == KEEL_EINVAL ? K_PROMQL_ERR_EXECUTION : K_PROMQL_ERR_INTERNAL;
    snprintf(c->e->msg, sizeof c->e->msg, "expanding series: %s",
             ke.msg[0] ? ke.msg : keel_strerror(rc));
  }
  return rc;
}

/* Instant vector selector over all steps: the newest sample at or before
 * ts-offset, no older than the lookback delta, not a stale marker.  With
 * sample_time, the point's value is the sample's timestamp (ms), for
 * timestamp(). */
static int eval_vsel(pq_ctx_t *c, const k_pq_node_t *vs, int sample_time, value_t *out) {
  const k_series_t *ser;
  size_t ns;
  int64_t off = vs->u.vsel.offset_ms, lb = c->o->lookback_ms;
  int rc;
  out->type = K_PQ_T_VECTOR;
  rc = do_select(c, vs, c->start - off - lb, c->end - off, &ser, &ns);
  if (rc) goto out;
  for (size_t i = 0; i < ns; i++) {
    const k_series_t *s = &ser[i];
    pq_series_t o = {0};
    size_t j = 0;
    for (size_t k = 0; k < c->nsteps; k++) {
      int64_t ts = step_ts(c, k), ref = ts - off;
      while (j < s->n && s->t[j] <= ref) j++;
      if (j == 0) continue;
      if (s->t[j - 1] < ref - lb || pq_is_stale(s->v[j - 1])) continue;
      if ((rc = point_push(c, &o, ts, sample_time ? (double)s->t[j - 1] : s->v[j - 1]))) {
        free(o.p);
        goto out;
      }
    }
    if (o.n && (rc = matrix_take(c, &out->mat, lset_from(c, &s->labels), &o))) goto out;
  }
out:
  return rc;
}

/* Drops stale markers: a range's samples never include them. */
static int filter_points(pq_ctx_t *c, const k_series_t *s, pq_point_t **out, size_t *n) {
  pq_point_t *p = malloc((s->n ? s->n : 1) * sizeof *p);
  size_t k = 0;
  if (!p) return nomem(c);
  for (size_t i = 0; i < s->n; i++) {
    if (pq_is_stale(s->v[i])) continue;
    p[k].t = s->t[i];
    p[k].v = s->v[i];
    k++;
  }
  *out = p;
  *n = k;
  return 0;
}

/* A range selector evaluated on its own (instant queries only): the raw
 * samples in [t-offset-range, t-offset]. */
static int eval_msel(pq_ctx_t *c, const k_pq_node_t *ms, value_t *out) {
  const k_pq_node_t *vs = ms->u.msel.vs;
  int64_t off = vs->u.vsel.offset_ms, maxt = c->start - off, mint = maxt - ms->u.msel.range_ms;
  const k_series_t *ser;
  size_t ns;
  int rc;
  out->type = K_PQ_T_MATRIX;
  rc = do_select(c, vs, mint, maxt, &ser, &ns);
  if (rc) goto out;
  for (size_t i = 0; i < ns; i++) {
    pq_series_t o = {0};
    for (size_t j = 0; j < ser[i].n; j++) {
      if (ser[i].t[j] < mint || ser[i].t[j] > maxt || pq_is_stale(ser[i].v[j])) continue;
      if ((rc = point_push(c, &o, ser[i].t[j], ser[i].v[j]))) {
        free(o.p);
        goto out;
      }
    }
    if (o.n && (rc = matrix_take(c, &out->mat, lset_from(c, &ser[i].labels), &o))) goto out;
  }
out:
  return rc;
}

/* ---- rangeEval -------------------------------------------------------- */

typedef int (*step_fn_t)(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *args, int64_t ts,
                         pq_vector_t *out, void *ud);

/* Runs fn at every step over the step's samples of in[0..nin) and gathers
 * its output into series.  Output series keep the order of first
 * appearance (for an instant query: the order fn produced). */
static int step_loop(pq_ctx_t *c, const k_pq_node_t *n, value_t *in, size_t nin, step_fn_t fn,
                     void *ud, value_t *out) {
  pq_vector_t *args = calloc(nin ? nin : 1, sizeof *args), res = {0};
  size_t **cursor = calloc(nin ? nin : 1, sizeof *cursor);
  pq_map_t where = {0}, seen = {0};
  int rc = 0;
  if (!args || !cursor) {
    rc = nomem(c);
    goto out;
  }
  for (size_t i = 0; i < nin; i++) {
    cursor[i] = calloc(in[i].mat.n ? in[i].mat.n : 1, sizeof(size_t));
    if (!cursor[i]) {
      rc = nomem(c);
      goto out;
    }
  }
  for (size_t k = 0; k < c->nsteps; k++) {
    int64_t ts = step_ts(c, k);
    for (size_t i = 0; i < nin; i++) {
      args[i].n = 0;
      if (in[i].type == K_PQ_T_STRING) continue;
      for (size_t s = 0; s < in[i].mat.n; s++) {
        pq_series_t *se = &in[i].mat.s[s];
        size_t *cu = &cursor[i][s];
        while (*cu < se->n && se->p[*cu].t < ts) (*cu)++;
        if (*cu < se->n && se->p[*cu].t == ts) {
          if ((rc = pq_vec_push(c, &args[i], se->m, ts, se->p[*cu].v))) goto out;
        }
      }
    }
    res.n = 0;
    if ((rc = fn(c, n, args, ts, &res, ud))) goto out;
    if (res.n > 1 &&
        (rc = unique_labels(c, &seen, (const pq_lset_t *const *)&res.s[0].m, res.n, sizeof res.s[0])))
      goto out;
    if ((rc = pq_account(c, res.n))) goto out;
    for (size_t r = 0; r < res.n; r++) {
      uint64_t idx;
      if (!pq_map_get(&where, res.s[r].m->id, &idx)) {
        size_t ni;
        if ((rc = matrix_add(c, &out->mat, res.s[r].m, &ni))) goto out;
        idx = ni;
        if (pq_map_put(&where, res.s[r].m->id, idx)) {
          rc = nomem(c);
          goto out;
        }
      }
      if (pq_series_push(&out->mat.s[idx], ts, res.s[r].v)) {
        rc = nomem(c);
        goto out;
      }
    }
  }
out:
  for (size_t i = 0; i < nin; i++) {
    if (args) pq_vec_free(&args[i]);
    if (cursor) free(cursor[i]);
  }
  free(args);
  free(cursor);
  pq_vec_free(&res);
  pq_map_free(&where);
  pq_map_free(&seen);
  return rc;
}

static int range_eval(pq_ctx_t *c, const k_pq_node_t *n, k_pq_node_t *const *exprs, size_t nexprs,
                      step_fn_t fn, void *ud, value_t *out) {
  value_t *in = calloc(nexprs ? nexprs : 1, sizeof *in);
  size_t done = 0;
  int rc = 0;
  if (!in) return nomem(c);
  for (; done < nexprs; done++) {
    if (!exprs[done]) continue;
    if (exprs[done]->type == K_PQ_T_STRING) {
      in[done].type = K_PQ_T_STRING;
      continue;
    }
    if ((rc = eval(c, exprs[done], &in[done]))) goto out;
  }
  rc = step_loop(c, n, in, nexprs, fn, ud, out);
out:
  for (size_t i = 0; i < done; i++) value_free(c, &in[i]);
  free(in);
  return rc;
}

/* ---- number literal ---------------------------------------------------- */

static int step_number(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *args, int64_t ts,
                       pq_vector_t *out, void *ud) {
  (void)args, (void)ud;
  return pq_vec_push(c, out, c->empty, ts, n->u.number);
}

/* ---- binary operators ------------------------------------------------ */

static double scalar_binop(k_pq_binop_t op, double l, double r) {
  switch (op) {
  case K_PQ_OP_ADD: return l + r;
  case K_PQ_OP_SUB: return l - r;
  case K_PQ_OP_MUL: return l * r;
  case K_PQ_OP_DIV: return l / r;
  case K_PQ_OP_POW: return pow(l, r);
  case K_PQ_OP_MOD: return fmod(l, r);
  case K_PQ_OP_ATAN2: return atan2(l, r);
  case K_PQ_OP_EQL: return l == r;
  case K_PQ_OP_NEQ: return l != r;
  case K_PQ_OP_GTR: return l > r;
  case K_PQ_OP_LSS: return l < r;
  case K_PQ_OP_GTE: return l >= r;
  case K_PQ_OP_LTE: return l <= r;
  default: return NAN;
  }
}

/* vectorElemBinop: the value, and whether a comparison keeps the sample. */
static double elem_binop(k_pq_binop_t op, double l, double r, int *keep) {
  *keep = 1;
  switch (op) {
  case K_PQ_OP_EQL: *keep = l == r; return l;
  case K_PQ_OP_NEQ: *keep = l != r; return l;
  case K_PQ_OP_GTR: *keep = l > r; return l;
  case K_PQ_OP_LSS: *keep = l < r; return l;
  case K_PQ_OP_GTE: *keep = l >= r; return l;
  case K_PQ_OP_LTE: *keep = l <= r; return l;
  default: return scalar_binop(op, l, r);
  }
}

static int is_comparison(k_pq_binop_t op) { return op >= K_PQ_OP_EQL && op <= K_PQ_OP_LTE; }

/* shouldDropMetricName */
static int drops_name(k_pq_binop_t op) {
  return op == K_PQ_OP_ADD || op == K_PQ_OP_SUB || op == K_PQ_OP_MUL || op == K_PQ_OP_DIV ||
         op == K_PQ_OP_POW || op == K_PQ_OP_MOD;
}

static int step_ss(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                   pq_vector_t *out, void *ud) {
  (void)ud;
  if (!a[0].n || !a[1].n) return 0;
  return pq_vec_push(c, out, c->empty, ts, scalar_binop(n->u.bin.op, a[0].s[0].v, a[1].s[0].v));
}

/* VectorscalarBinop; ud != NULL when the scalar is on the left. */
static int step_vs(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                   pq_vector_t *out, void *ud) {
  int swap = ud != NULL;
  pq_vector_t *vec = swap ? &a[1] : &a[0];
  pq_vector_t *sc = swap ? &a[0] : &a[1];
  k_pq_binop_t op = n->u.bin.op;
  double s;
  if (!sc->n) return 0;
  s = sc->s[0].v;
  for (size_t i = 0; i < vec->n; i++) {
    double lv = vec->s[i].v, rv = s, v;
    int keep;
    const pq_lset_t *m = vec->s[i].m;
    if (swap) lv = s, rv = vec->s[i].v;
    v = elem_binop(op, lv, rv, &keep);
    if (is_comparison(op) && swap) v = rv;
    if (n->u.bin.return_bool) {
      v = keep ? 1.0 : 0.0;
      keep = 1;
    }
    if (!keep) continue;
    if (drops_name(op) || n->u.bin.return_bool) {
      m = pq_lset_drop_name(c, m);
      if (!m) return KEEL_ENOMEM;
    }
    int rc = pq_vec_push(c, out, m, ts, v);
    if (rc) return rc;
  }
  return 0;
}

/* State of a vector/vector operation across steps: signature and result
 * label caches (Prometheus' EvalSeriesHelper and resultMetric cache). */
typedef struct vv_state {
  pq_map_t sig;    /* input lset id -> signature lset */
  pq_map_t result; /* (lhs id << 32 | rhs id) -> result lset */
  pq_map_t a, b;   /* per-step scratch */
} vv_state_t;

static const pq_lset_t *signature(pq_ctx_t *c, vv_state_t *st, const k_pq_node_t *n,
                                  const pq_lset_t *m) {
  uint64_t v;
  const pq_lset_t *s;
  if (pq_map_get(&st->sig, m->id, &v)) return (const pq_lset_t *)(uintptr_t)v;
  s = pq_lset_filter(c, m, n->u.bin.labels, n->u.bin.nlabels, n->u.bin.on, !n->u.bin.on);
  if (s && pq_map_put(&st->sig, m->id, (uint64_t)(uintptr_t)s)) {
    nomem(c);
    return NULL;
  }
  return s;
}

static const pq_lset_t *result_metric(pq_ctx_t *c, vv_state_t *st, const k_pq_node_t *n,
                                      const pq_lset_t *l, const pq_lset_t *r) {
  uint64_t key = ((uint64_t)l->id << 32) | r->id, v;
  const pq_lset_t *m = l;
  if (pq_map_get(&st->result, key, &v)) return (const pq_lset_t *)(uintptr_t)v;
  if (drops_name(n->u.bin.op)) m = pq_lset_drop_name(c, m);
  if (m && n->u.bin.card == K_PQ_CARD_ONE_TO_ONE)
    m = pq_lset_filter(c, m, n->u.bin.labels, n->u.bin.nlabels, n->u.bin.on, 0);
  for (size_t i = 0; m && i < n->u.bin.ninclude; i++)
    m = pq_lset_set(c, m, n->u.bin.include[i], pq_lset_get(r, n->u.bin.include[i]));
  if (m && pq_map_put(&st->result, key, (uint64_t)(uintptr_t)m)) {
    nomem(c);
    return NULL;
  }
  return m;
}

static int step_set(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                    pq_vector_t *out, void *ud) {
  vv_state_t *st = ud;
  pq_vector_t *lhs = &a[0], *rhs = &a[1];
  int rc = 0;
  (void)ts;
  pq_map_clear(&st->a);
  if (n->u.bin.op == K_PQ_OP_AND || n->u.bin.op == K_PQ_OP_UNLESS) {
    /* the lhs samples whose signature the rhs has (and) or lacks (unless) */
    int want = n->u.bin.op == K_PQ_OP_AND;
    if (want && (!lhs->n || !rhs->n)) return 0;
    for (size_t i = 0; i < rhs->n; i++) {
      const pq_lset_t *s = signature(c, st, n, rhs->s[i].m);
      if (!s) return KEEL_ENOMEM;
      if (pq_map_put(&st->a, s->id, 1)) return nomem(c);
    }
    for (size_t i = 0; i < lhs->n; i++) {
      const pq_lset_t *s = signature(c, st, n, lhs->s[i].m);
      if (!s) return KEEL_ENOMEM;
      if (pq_map_get(&st->a, s->id, NULL) == want &&
          (rc = pq_vec_push(c, out, lhs->s[i].m, lhs->s[i].t, lhs->s[i].v)))
        return rc;
    }
    return 0;
  }
  /* or */
  for (size_t i = 0; i < lhs->n; i++) {
    const pq_lset_t *s = signature(c, st, n, lhs->s[i].m);
    if (!s) return KEEL_ENOMEM;
    if (pq_map_put(&st->a, s->id, 1)) return nomem(c);
    if ((rc = pq_vec_push(c, out, lhs->s[i].m, lhs->s[i].t, lhs->s[i].v))) return rc;
  }
  for (size_t i = 0; i < rhs->n; i++) {
    const pq_lset_t *s = signature(c, st, n, rhs->s[i].m);
    if (!s) return KEEL_ENOMEM;
    if (!pq_map_get(&st->a, s->id, NULL) &&
        (rc = pq_vec_push(c, out, rhs->s[i].m, rhs->s[i].t, rhs->s[i].v)))
      return rc;
  }
  return 0;
}

/* Prometheus' labels.MatchLabels, for the many-to-many error text. */
static const pq_lset_t *match_labels(pq_ctx_t *c, const k_pq_node_t *n, const pq_lset_t *m) {
  return pq_lset_filter(c, m, n->u.bin.labels, n->u.bin.nlabels, n->u.bin.on, !n->u.bin.on);
}

/* VectorBinop: arithmetic and comparisons between two instant vectors. */
static int step_vv(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                   pq_vector_t *out, void *ud) {
  vv_state_t *st = ud;
  pq_vector_t *lhs = &a[0], *rhs = &a[1];
  k_pq_card_t card = n->u.bin.card;
  int rc = 0;
  (void)ts;
  if (!lhs->n || !rhs->n) return 0;
  if (card == K_PQ_CARD_ONE_TO_MANY) {
    pq_vector_t *t = lhs;
    lhs = rhs;
    rhs = t;
  }
  pq_map_clear(&st->a);
  pq_map_clear(&st->b);
  /* rhs is the "one" side: its signatures must be unique */
  for (size_t i = 0; i < rhs->n; i++) {
    const pq_lset_t *s = signature(c, st, n, rhs->s[i].m);
    uint64_t prev;
    if (!s) return KEEL_ENOMEM;
    if (pq_map_get(&st->a, s->id, &prev)) {
      char ml[400], l1[400], l2[400];
      const pq_lset_t *mm = match_labels(c, n, rhs->s[i].m);
      if (!mm) return KEEL_ENOMEM;
      pq_lset_str(mm, ml, sizeof ml);
      pq_lset_str(rhs->s[i].m, l1, sizeof l1);
      pq_lset_str(rhs->s[prev].m, l2, sizeof l2);
      return pq_errf(c, KEEL_EINVAL,
                     "found duplicate series for the match group %s on the %s hand-side of the "
                     "operation: [%s, %s];many-to-many matching not allowed: matching labels must "
                     "be unique on one side",
                     ml, card == K_PQ_CARD_ONE_TO_MANY ? "left" : "right", l1, l2);
    }
    if (pq_map_put(&st->a, s->id, i)) return nomem(c);
  }
  for (size_t i = 0; i < lhs->n; i++) {
    const pq_lset_t *s = signature(c, st, n, lhs->s[i].m), *m;
    uint64_t ri;
    double vl, vr, v;
    int keep;
    if (!s) return KEEL_ENOMEM;
    if (!pq_map_get(&st->a, s->id, &ri)) continue;
    vl = lhs->s[i].v;
    vr = rhs->s[ri].v;
    if (card == K_PQ_CARD_ONE_TO_MANY) {
      double t = vl;
      vl = vr;
      vr = t;
    }
    v = elem_binop(n->u.bin.op, vl, vr, &keep);
    if (n->u.bin.return_bool) v = keep ? 1.0 : 0.0;
    else if (!keep) continue;
    m = result_metric(c, st, n, lhs->s[i].m, rhs->s[ri].m);
    if (!m) return KEEL_ENOMEM;
    if (n->u.bin.return_bool) {
      m = pq_lset_drop_name(c, m);
      if (!m) return KEEL_ENOMEM;
    }
    if (card == K_PQ_CARD_ONE_TO_ONE) {
      if (pq_map_get(&st->b, s->id, NULL))
        return pq_errf(c, KEEL_EINVAL,
                       "multiple matches for labels: many-to-one matching must be explicit "
                       "(group_left/group_right)");
      if (pq_map_put(&st->b, s->id, 1)) return nomem(c);
    } else {
      uint64_t key = ((uint64_t)s->id << 32) | m->id;
      if (pq_map_get(&st->b, key, NULL))
        return pq_errf(c, KEEL_EINVAL,
                       "multiple matches for labels: grouping labels must ensure unique matches");
      if (pq_map_put(&st->b, key, 1)) return nomem(c);
    }
    if ((rc = pq_vec_push(c, out, m, lhs->s[i].t, v))) return rc;
  }
  return 0;
}

static int eval_binary(pq_ctx_t *c, const k_pq_node_t *n, value_t *out) {
  k_pq_node_t *args[2] = {n->u.bin.lhs, n->u.bin.rhs};
  k_pq_type_t lt = n->u.bin.lhs->type, rt = n->u.bin.rhs->type;
  vv_state_t st;
  int rc;
  memset(&st, 0, sizeof st);
  out->type = n->type;
  if (lt == K_PQ_T_SCALAR && rt == K_PQ_T_SCALAR) {
    rc = range_eval(c, n, args, 2, step_ss, NULL, out);
  } else if (lt == K_PQ_T_VECTOR && rt == K_PQ_T_VECTOR) {
    int set = n->u.bin.op == K_PQ_OP_AND || n->u.bin.op == K_PQ_OP_OR ||
              n->u.bin.op == K_PQ_OP_UNLESS;
    rc = range_eval(c, n, args, 2, set ? step_set : step_vv, &st, out);
  } else {
    rc = range_eval(c, n, args, 2, step_vs, lt == K_PQ_T_SCALAR ? (void *)1 : NULL, out);
  }
  pq_map_free(&st.sig);
  pq_map_free(&st.result);
  pq_map_free(&st.a);
  pq_map_free(&st.b);
  return rc;
}

/* ---- aggregation ------------------------------------------------------ */

typedef struct agg_group {
  const pq_lset_t *labels;
  double value, mean;
  size_t count;
  pq_sample_t *heap; /* topk/bottomk/quantile members */
  size_t nheap, capheap;
} agg_group_t;

typedef struct agg_state {
  pq_map_t key; /* input lset id -> grouping lset (cache) */
  pq_map_t idx; /* grouping lset id -> group index (per step) */
  agg_group_t *g;
  size_t ng, capg;
} agg_state_t;

/* Grouping key and output labels of a group: by keeps the listed labels,
 * without drops them and __name__. */
static const pq_lset_t *group_of(pq_ctx_t *c, agg_state_t *st, const k_pq_node_t *n,
                                 const pq_lset_t *m, const char *const *grouping, size_t ng,
                                 int cache) {
  uint64_t v;
  const pq_lset_t *g;
  if (cache && pq_map_get(&st->key, m->id, &v)) return (const pq_lset_t *)(uintptr_t)v;
  g = pq_lset_filter(c, m, grouping, ng, !n->u.agg.without, n->u.agg.without);
  if (g && cache && pq_map_put(&st->key, m->id, (uint64_t)(uintptr_t)g)) {
    nomem(c);
    return NULL;
  }
  return g;
}

static int heap_push(agg_group_t *g, const pq_sample_t *s) {
  pq_sample_t *nh = keel_grow(g->heap, &g->capheap, g->nheap, sizeof *nh, 4);
  if (!nh) return KEEL_ENOMEM;
  g->heap = nh;
  g->heap[g->nheap++] = *s;
  return 0;
}

/* Go's container/heap over vectorByValueHeap (topk: min on top; NaN
 * sorts lowest) or vectorByReverseValueHeap (bottomk: max on top). */
static int heap_less(const pq_sample_t *a, const pq_sample_t *b, int reverse) {
  if (isnan(a->v)) return 1;
  return reverse ? a->v > b->v : a->v < b->v;
}

static void heap_up(pq_sample_t *h, size_t j, int rev) {
  while (j > 0) {
    size_t i = (j - 1) / 2;
    if (i == j || !heap_less(&h[j], &h[i], rev)) break;
    pq_sample_t t = h[i];
    h[i] = h[j];
    h[j] = t;
    j = i;
  }
}

static void heap_down(pq_sample_t *h, size_t i0, size_t n, int rev) {
  size_t i = i0;
  for (;;) {
    size_t j1 = 2 * i + 1, j;
    if (j1 >= n) break;
    j = j1;
    if (j1 + 1 < n && heap_less(&h[j1 + 1], &h[j1], rev)) j = j1 + 1;
    if (!heap_less(&h[j], &h[i], rev)) break;
    pq_sample_t t = h[i];
    h[i] = h[j];
    h[j] = t;
    i = j;
  }
}

/* heap.Pop: swap root with last, sift down, drop last. */
static void heap_pop(agg_group_t *g, int rev) {
  size_t n = g->nheap - 1;
  pq_sample_t t = g->heap[0];
  g->heap[0] = g->heap[n];
  g->heap[n] = t;
  heap_down(g->heap, 0, n, rev);
  g->nheap--;
}

static int cmp_double_nan_first(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  if (isnan(x)) return isnan(y) ? 0 : -1;
  if (isnan(y)) return 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/* Prometheus' quantile(): linear interpolation between the closest ranks. */
double pq_quantile(double q, double *v, size_t n) {
  double rank, lo, hi, w;
  if (n == 0 || isnan(q)) return NAN;
  if (q < 0) return -INFINITY;
  if (q > 1) return INFINITY;
  qsort(v, n, sizeof *v, cmp_double_nan_first);
  rank = q * (double)(n - 1);
  lo = fmax(0, floor(rank));
  hi = fmin((double)(n - 1), lo + 1);
  w = rank - floor(rank);
  return v[(size_t)lo] * (1 - w) + v[(size_t)hi] * w;
}

/* Go's %v of a float64 (strconv 'g', shortest), for error texts. */
static void go_g(double v, char *buf, size_t cap) {
  char digits[40];
  int exp10;
  if (isnan(v)) {
    snprintf(buf, cap, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(digits, sizeof digits, "%.*e", prec - 1, v);
    if (strtod(digits, NULL) == v) break;
  }
  {
    /* digits: [-]d.ddde[+-]xx */
    char mant[40], *e = strchr(digits, 'e');
    size_t k = 0;
    int neg = digits[0] == '-';
    exp10 = atoi(e + 1);
    for (char *p = digits + neg; p < e; p++)
      if (*p != '.') mant[k++] = *p;
    mant[k] = '\0';
    while (k > 1 && mant[k - 1] == '0') mant[--k] = '\0';
    if (exp10 < -4 || exp10 >= 6) {
      snprintf(buf, cap, "%s%c%s%s%se%c%02d", neg ? "-" : "", mant[0], k > 1 ? "." : "",
               mant + 1, "", exp10 < 0 ? '-' : '+', abs(exp10));
    } else {
      char fb[K_PROMQL_FLOAT_BUF];
      snprintf(buf, cap, "%s", k_promql_format_float(v, fb));
    }
  }
}

static int agg_new_group(pq_ctx_t *c, agg_state_t *st, const pq_lset_t *labels, size_t *gi) {
  agg_group_t *ng = keel_grow(st->g, &st->capg, st->ng, sizeof *ng, 8);
  if (!ng) return nomem(c);
  st->g = ng;
  memset(&st->g[st->ng], 0, sizeof st->g[st->ng]);
  st->g[st->ng].labels = labels;
  *gi = st->ng++;
  if (pq_map_put(&st->idx, labels->id, *gi)) return nomem(c);
  return 0;
}

static int step_agg(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                    pq_vector_t *out, void *ud) {
  agg_state_t *st = ud;
  k_pq_aggop_t op = n->u.agg.op;
  pq_vector_t *vec = &a[1];
  int64_t k = 0;
  double q = 0;
  const char *value_label = NULL;
  const char **grouping = (const char **)n->u.agg.grouping;
  size_t ngrouping = n->u.agg.ngrouping;
  const char *gbuf[64];
  const char **gdyn = NULL;
  int rc = 0;

  for (size_t i = 0; i < st->ng; i++) free(st->g[i].heap);
  st->ng = 0;
  pq_map_clear(&st->idx);

  if (op == K_PQ_AGG_TOPK || op == K_PQ_AGG_BOTTOMK) {
    double f = a[0].n ? a[0].s[0].v : NAN;
    if (!(f <= 9223372036854775807.0 && f >= -9223372036854775808.0)) {
      char g[64];
      go_g(f, g, sizeof g);
      rc = pq_errf(c, KEEL_EINVAL, "Scalar value %s overflows int64", g);
      goto out;
    }
    k = (int64_t)f;
    if (k < 1) goto out;
  }
  if (op == K_PQ_AGG_QUANTILE) q = a[0].n ? a[0].s[0].v : NAN;
  if (op == K_PQ_AGG_COUNT_VALUES) {
    size_t l;
    value_label = n->u.agg.param->u.string;
    l = strlen(value_label);
    if (!keel_mb_label_name_ok(value_label, l)) {
      char qq[300];
      pq_quote(qq, sizeof qq, value_label, l);
      rc = pq_errf(c, KEEL_EINVAL, "invalid label name %s", qq);
      goto out;
    }
    if (!n->u.agg.without) {
      const char **gg = ngrouping + 1 <= 64 ? gbuf : (gdyn = malloc((ngrouping + 1) * sizeof *gg));
      if (!gg) {
        rc = nomem(c);
        goto out;
      }
      for (size_t i = 0; i < ngrouping; i++) gg[i] = grouping[i];
      gg[ngrouping++] = value_label;
      grouping = gg;
    }
  }

  for (size_t si = 0; si < vec->n; si++) {
    pq_sample_t s = vec->s[si];
    const pq_lset_t *metric = s.m, *gl;
    uint64_t gi64;
    agg_group_t *g;
    if (op == K_PQ_AGG_COUNT_VALUES) {
      char fb[K_PROMQL_FLOAT_BUF];
      metric = pq_lset_set(c, metric, value_label, k_promql_format_float(s.v, fb));
      if (!metric) {
        rc = KEEL_ENOMEM;
        goto out;
      }
    }
    gl = group_of(c, st, n, metric, grouping, ngrouping, op != K_PQ_AGG_COUNT_VALUES);
    if (!gl) {
      rc = KEEL_ENOMEM;
      goto out;
    }
    if (!pq_map_get(&st->idx, gl->id, &gi64)) {
      size_t gi = 0;
      if ((rc = agg_new_group(c, st, gl, &gi))) goto out;
      g = &st->g[gi];
      g->value = s.v;
      g->mean = s.v;
      g->count = 1;
      switch (op) {
      case K_PQ_AGG_STDVAR:
      case K_PQ_AGG_STDDEV: g->value = 0; break;
      case K_PQ_AGG_TOPK:
      case K_PQ_AGG_BOTTOMK:
      case K_PQ_AGG_QUANTILE:
        if (heap_push(g, &s)) {
          rc = nomem(c);
          goto out;
        }
        break;
      case K_PQ_AGG_GROUP: g->value = 1; break;
      default: break;
      }
      continue;
    }
    g = &st->g[gi64];
    switch (op) {
    case K_PQ_AGG_SUM: g->value += s.v; break;
    case K_PQ_AGG_AVG:
      g->count++;
      if (isinf(g->mean)) {
        if (isinf(s.v) && (g->mean > 0) == (s.v > 0)) break;
        if (!isinf(s.v) && !isnan(s.v)) break;
      }
      g->mean += s.v / (double)g->count - g->mean / (double)g->count;
      break;
    case K_PQ_AGG_GROUP: break;
    case K_PQ_AGG_MAX:
      if (g->value < s.v || isnan(g->value)) g->value = s.v;
      break;
    case K_PQ_AGG_MIN:
      if (g->value > s.v || isnan(g->value)) g->value = s.v;
      break;
    case K_PQ_AGG_COUNT:
    case K_PQ_AGG_COUNT_VALUES: g->count++; break;
    case K_PQ_AGG_STDVAR:
    case K_PQ_AGG_STDDEV: {
      double delta;
      g->count++;
      delta = s.v - g->mean;
      g->mean += delta / (double)g->count;
      g->value += delta * (s.v - g->mean);
      break;
    }
    case K_PQ_AGG_TOPK:
    case K_PQ_AGG_BOTTOMK: {
      int rev = op == K_PQ_AGG_BOTTOMK;
      if ((int64_t)g->nheap < k || (rev ? g->heap[0].v > s.v : g->heap[0].v < s.v) ||
          isnan(g->heap[0].v)) {
        if ((int64_t)g->nheap == k) {
          if (k == 1) {
            g->heap[0] = s;
            break;
          }
          heap_pop(g, rev);
        }
        if (heap_push(g, &s)) {
          rc = nomem(c);
          goto out;
        }
        heap_up(g->heap, g->nheap - 1, rev);
      }
      break;
    }
    case K_PQ_AGG_QUANTILE:
      if (heap_push(g, &s)) {
        rc = nomem(c);
        goto out;
      }
      break;
    }
  }

  for (size_t gi = 0; gi < st->ng; gi++) {
    agg_group_t *g = &st->g[gi];
    double v = g->value;
    switch (op) {
    case K_PQ_AGG_AVG: v = g->mean; break;
    case K_PQ_AGG_COUNT:
    case K_PQ_AGG_COUNT_VALUES: v = (double)g->count; break;
    case K_PQ_AGG_STDVAR: v = g->value / (double)g->count; break;
    case K_PQ_AGG_STDDEV: v = sqrt(g->value / (double)g->count); break;
    case K_PQ_AGG_TOPK:
    case K_PQ_AGG_BOTTOMK: {
      /* sort.Sort(sort.Reverse(heap)): by the heap's order, reversed */
      int rev = op == K_PQ_AGG_BOTTOMK;
      if (g->nheap > 1) {
        /* insertion sort keeps it simple; k is small in practice */
        for (size_t i = 1; i < g->nheap; i++) {
          pq_sample_t x = g->heap[i];
          size_t j = i;
          while (j > 0 && heap_less(&g->heap[j - 1], &x, rev)) {
            g->heap[j] = g->heap[j - 1];
            j--;
          }
          g->heap[j] = x;
        }
      }
      for (size_t i = 0; i < g->nheap; i++)
        if ((rc = pq_vec_push(c, out, g->heap[i].m, ts, g->heap[i].v))) goto out;
      continue;
    }
    case K_PQ_AGG_QUANTILE: {
      double *vals = malloc((g->nheap ? g->nheap : 1) * sizeof *vals);
      if (!vals) {
        rc = nomem(c);
        goto out;
      }
      for (size_t i = 0; i < g->nheap; i++) vals[i] = g->heap[i].v;
      v = pq_quantile(q, vals, g->nheap);
      free(vals);
      break;
    }
    default: break;
    }
    if ((rc = pq_vec_push(c, out, g->labels, ts, v))) goto out;
  }
out:
  free(gdyn);
  return rc;
}

static int eval_agg(pq_ctx_t *c, const k_pq_node_t *n, value_t *out) {
  agg_state_t st;
  k_pq_node_t *args[2] = {NULL, n->u.agg.expr};
  int rc;
  memset(&st, 0, sizeof st);
  out->type = K_PQ_T_VECTOR;
  if (n->u.agg.param && n->u.agg.param->type != K_PQ_T_STRING) args[0] = n->u.agg.param;
  rc = range_eval(c, n, args, 2, step_agg, &st, out);
  for (size_t i = 0; i < st.ng; i++) free(st.g[i].heap);
  free(st.g);
  pq_map_free(&st.key);
  pq_map_free(&st.idx);
  return rc;
}

/* ---- function calls --------------------------------------------------- */

static int step_call(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                     pq_vector_t *out, void *ud) {
  (void)ud;
  return n->u.call.func->vf(c, n, a, ts, out);
}

/* timestamp(vector selector): the samples' own timestamps (eval_vsel in
 * sample_time mode stores them, in ms, as the values). */
static int step_timestamp_vs(pq_ctx_t *c, const k_pq_node_t *n, pq_vector_t *a, int64_t ts,
                             pq_vector_t *out, void *ud) {
  (void)n, (void)ud, (void)ts;
  for (size_t i = 0; i < a[0].n; i++) {
    const pq_lset_t *m = pq_lset_drop_name(c, a[0].s[i].m);
    int rc;
    if (!m) return KEEL_ENOMEM;
    if ((rc = pq_vec_push(c, out, m, ts, a[0].s[i].v / 1000))) return rc;
  }
  return 0;
}

/* A function over a range vector: per series, per step, the window's
 * points go to f->mf.  Output series are not merged: two with the same
 * labels (names dropped) are an error, as in Prometheus. */
static int eval_call_matrix(pq_ctx_t *c, const k_pq_node_t *n, size_t midx, value_t *out) {
  const k_pq_func_t *f = n->u.call.func;
  const k_pq_node_t *ms = pq_unwrap_parens(n->u.call.args[midx]);
  const k_pq_node_t *vs = ms->u.msel.vs;
  int64_t off = vs->u.vsel.offset_ms, range = ms->u.msel.range_ms;
  const k_series_t *ser;
  size_t ns, nargs = n->u.call.nargs;
  value_t *other = calloc(nargs, sizeof *other);
  double *sargs = calloc(nargs, sizeof *sargs);
  pq_point_t *pts = NULL;
  int rc = 0;
  out->type = K_PQ_T_VECTOR;
  if (!other || !sargs) {
    rc = nomem(c);
    goto out;
  }
  for (size_t i = 0; i < nargs; i++) {
    if (i == midx || n->u.call.args[i]->type == K_PQ_T_STRING) continue;
    if ((rc = eval(c, n->u.call.args[i], &other[i]))) goto out;
  }
  if ((rc = do_select(c, vs, c->start - off - range, c->end - off, &ser, &ns))) goto out;
  for (size_t si = 0; si < ns; si++) {
    size_t np = 0, lo = 0, hi = 0;
    pq_series_t o = {0};
    free(pts);
    pts = NULL;
    if ((rc = filter_points(c, &ser[si], &pts, &np))) goto out;
    for (size_t k = 0; k < c->nsteps; k++) {
      int64_t ts = step_ts(c, k), maxt = ts - off, mint = maxt - range;
      double v = 0;
      int has = 0;
      while (hi < np && pts[hi].t <= maxt) hi++;
      while (lo < hi && pts[lo].t < mint) lo++;
      if (hi == lo) continue;
      for (size_t i = 0; i < nargs; i++) {
        sargs[i] = NAN;
        if (i != midx && other[i].mat.n && k < other[i].mat.s[0].n) sargs[i] = other[i].mat.s[0].p[k].v;
      }
      /* the window's samples are held while the function runs */
      if ((rc = pq_account(c, hi - lo))) {
        free(o.p);
        goto out;
      }
      unaccount(c, hi - lo);
      rc = f->mf(c, n, pts + lo, hi - lo, sargs, ts, &v, &has);
      if (rc) {
        free(o.p);
        goto out;
      }
      if (!has) continue;
      if ((rc = point_push(c, &o, ts, v))) {
        free(o.p);
        goto out;
      }
    }
    if (o.n &&
        (rc = matrix_take(c, &out->mat,
                          f->keep_name ? lset_from(c, &ser[si].labels)
                                       : lset_without_name(c, &ser[si].labels),
                          &o)))
      goto out;
  }
  if ((rc = unique_series(c, &out->mat))) goto out;
  if (!strcmp(f->name, "absent_over_time")) {
    /* One series {matcher labels} with 1 at the steps no series covers. */
    pq_map_t found = {0};
    pq_series_t o = {0};
    size_t idx;
    int complete = 0;
    for (size_t i = 0; i < out->mat.n && !complete; i++)
      if (out->mat.s[i].n == c->nsteps) complete = 1;
    for (size_t i = 0; i < out->mat.n && !complete; i++)
      for (size_t j = 0; j < out->mat.s[i].n; j++)
        if (pq_map_put(&found, (uint64_t)out->mat.s[i].p[j].t, 1)) {
          pq_map_free(&found);
          rc = nomem(c);
          goto out;
        }
    pq_matrix_free(c, &out->mat);
    if (!complete && found.n < c->nsteps) {
      for (size_t k = 0; k < c->nsteps; k++) {
        int64_t ts = step_ts(c, k);
        if (pq_map_get(&found, (uint64_t)ts, NULL)) continue;
        if ((rc = point_push(c, &o, ts, 1))) {
          free(o.p);
          pq_map_free(&found);
          goto out;
        }
      }
      o.m = pq_absent_labels(c, n->u.call.args[0]);
      if (!o.m || (rc = matrix_add(c, &out->mat, o.m, &idx))) {
        free(o.p);
        pq_map_free(&found);
        rc = rc ? rc : KEEL_ENOMEM;
        goto out;
      }
      out->mat.s[idx] = o;
    }
    pq_map_free(&found);
  }
out:
  free(pts);
  for (size_t i = 0; other && i < nargs; i++) value_free(c, &other[i]);
  free(other);
  free(sargs);
  return rc;
}

static int eval_call(pq_ctx_t *c, const k_pq_node_t *n, value_t *out) {
  const k_pq_func_t *f = n->u.call.func;
  out->type = f->ret;
  if (!strcmp(f->name, "timestamp")) {
    const k_pq_node_t *arg = pq_unwrap_parens(n->u.call.args[0]);
    if (arg->kind == K_PQ_VSEL) {
      value_t in;
      int rc;
      memset(&in, 0, sizeof in);
      rc = eval_vsel(c, arg, 1, &in);
      if (!rc) rc = step_loop(c, n, &in, 1, step_timestamp_vs, NULL, out);
      value_free(c, &in);
      return rc;
    }
  }
  for (size_t i = 0; i < n->u.call.nargs; i++) {
    const k_pq_node_t *a = pq_unwrap_parens(n->u.call.args[i]);
    if (a->kind == K_PQ_MSEL) return eval_call_matrix(c, n, i, out);
  }
  /* absent() reads its argument's matchers; other functions only values */
  return range_eval(c, n, n->u.call.args, n->u.call.nargs, step_call, NULL, out);
}

/* ---- unary minus --------------------------------------------------------- */

static int eval_unary(pq_ctx_t *c, const k_pq_node_t *n, value_t *out) {
  int rc = eval(c, n->u.unary.expr, out);
  if (rc || !n->u.unary.neg) return rc;
  for (size_t i = 0; i < out->mat.n; i++) {
    pq_series_t *s = &out->mat.s[i];
    s->m = pq_lset_drop_name(c, s->m);
    if (!s->m) return KEEL_ENOMEM;
    for (size_t j = 0; j < s->n; j++) s->p[j].v = -s->p[j].v;
  }
  return unique_series(c, &out->mat);
}

static int eval(pq_ctx_t *c, const k_pq_node_t *n, value_t *out) {
  int rc;
  memset(out, 0, sizeof *out);
  switch (n->kind) {
  case K_PQ_NUMBER:
    out->type = K_PQ_T_SCALAR;
    rc = range_eval(c, n, NULL, 0, step_number, NULL, out);
    break;
  case K_PQ_STRING:
    out->type = K_PQ_T_STRING;
    out->str = n->u.string;
    rc = 0;
    break;
  case K_PQ_VSEL: rc = eval_vsel(c, n, 0, out); break;
  case K_PQ_MSEL: rc = eval_msel(c, n, out); break;
  case K_PQ_PAREN: rc = eval(c, n->u.paren.expr, out); break;
  case K_PQ_UNARY: rc = eval_unary(c, n, out); break;
  case K_PQ_BINARY: rc = eval_binary(c, n, out); break;
  case K_PQ_AGG: rc = eval_agg(c, n, out); break;
  case K_PQ_CALL: rc = eval_call(c, n, out); break;
  default: rc = pq_errf(c, KEEL_EINVAL, "unknown node"); break;
  }
  if (rc) value_free(c, out);
  return rc;
}

/* ---- API -------------------------------------------------------------- */

static int cmp_series(const void *a, const void *b) {
  return pq_lset_cmp(((const pq_series_t *)a)->m, ((const pq_series_t *)b)->m);
}

static json_t *result(const char *type, json_t *res) {
  json_t *o = json_object();
  if (!o || !res) {
    json_decref(o);
    json_decref(res);
    return NULL;
  }
  if (json_object_set_new(o, "resultType", json_string(type)) ||
      json_object_set_new(o, "result", res)) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static json_t *matrix_json(const pq_matrix_t *m) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < m->n; i++) {
    json_t *s = json_object(), *vals = json_array();
    int bad = !s || !vals;
    for (size_t j = 0; !bad && j < m->s[i].n; j++)
      bad = json_array_append_new(vals, pq_json_point(m->s[i].p[j].t, m->s[i].p[j].v)) != 0;
    if (bad || json_object_set_new(s, "metric", pq_json_labels(m->s[i].m)) ||
        json_object_set_new(s, "values", vals) || json_array_append_new(arr, s)) {
      if (bad) json_decref(vals);
      json_decref(s);
      json_decref(arr);
      return NULL;
    }
  }
  return arr;
}

static void opts_fill(k_promql_opts_t *o, const k_promql_opts_t *in) {
  memset(o, 0, sizeof *o);
  if (in) *o = *in;
  if (!o->max_samples) o->max_samples = K_PROMQL_DEFAULT_MAX_SAMPLES;
  if (!o->lookback_ms) o->lookback_ms = K_PROMQL_DEFAULT_LOOKBACK_MS;
  if (!o->max_expr_len) o->max_expr_len = K_PROMQL_DEFAULT_MAX_EXPR_LEN;
  if (!o->max_depth) o->max_depth = K_PROMQL_DEFAULT_MAX_DEPTH;
  if (!o->max_points) o->max_points = K_PROMQL_DEFAULT_MAX_POINTS;
}

static void err_clear(k_promql_err_t *e) {
  e->code = 0;
  e->type = K_PROMQL_ERR_NONE;
  e->msg[0] = '\0';
}

/* Keeps every t - offset - range - lookback far from int64 overflow. */
static int times_ok(int64_t start, int64_t end, k_promql_err_t *e) {
  if (start < -(INT64_C(1) << 62) || end > (INT64_C(1) << 62))
    return pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA, "timestamp out of range");
  return 0;
}

/* One parsed query x (only read), evaluated over [start, end]; the JSON.
 * instant decides the result shape.  o: filled (opts_fill). */
static int run_expr(k_querier_t *q, const k_promql_expr_t *x, int64_t start, int64_t end,
                    int64_t step, int instant, const k_promql_opts_t *o, json_t **out,
                    k_promql_err_t *e) {
  pq_ctx_t c;
  value_t v;
  json_t *res = NULL;
  int rc;

  memset(&c, 0, sizeof c);
  memset(&v, 0, sizeof v);
  *out = NULL;
  if (!instant) {
    k_pq_type_t t = x->root->type;
    if (t != K_PQ_T_VECTOR && t != K_PQ_T_SCALAR) {
      rc = pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA,
                  "invalid expression type \"%s\" for range query, must be Scalar or instant Vector",
                  k_promql_type_name(t));
      goto out;
    }
  }
  c.q = q;
  c.e = e;
  c.o = o;
  c.start = start;
  c.end = end;
  c.interval = instant ? 1 : step;
  c.nsteps = instant ? 1 : (size_t)(((uint64_t)end - (uint64_t)start) / (uint64_t)step) + 1;
  c.arena = pq_arena_new();
  if (!c.arena || !(c.empty = pq_intern(&c, NULL, 0))) {
    rc = pq_err(e, KEEL_ENOMEM, K_PROMQL_ERR_INTERNAL, "out of memory");
    goto out;
  }
  if ((rc = eval(&c, x->root, &v))) goto out;

  if (instant) {
    switch (x->root->type) {
    case K_PQ_T_STRING: {
      json_t *a = pq_json_point(start, 0);
      if (a && json_array_set_new(a, 1, json_string(v.str))) {
        json_decref(a);
        a = NULL;
      }
      res = result("string", a);
      break;
    }
    case K_PQ_T_SCALAR:
      res = result("scalar", pq_json_point(start, v.mat.n && v.mat.s[0].n ? v.mat.s[0].p[0].v : NAN));
      break;
    case K_PQ_T_MATRIX: res = result("matrix", matrix_json(&v.mat)); break;
    default: {
      json_t *arr = json_array();
      for (size_t i = 0; arr && i < v.mat.n; i++) {
        json_t *s = json_object();
        if (!s || json_object_set_new(s, "metric", pq_json_labels(v.mat.s[i].m)) ||
            json_object_set_new(s, "value", pq_json_point(start, v.mat.s[i].p[0].v)) ||
            json_array_append_new(arr, s)) {
          json_decref(arr);
          arr = NULL;
        }
      }
      res = result("vector", arr);
      break;
    }
    }
  } else {
    if (v.mat.n > 1) qsort(v.mat.s, v.mat.n, sizeof v.mat.s[0], cmp_series);
    res = result("matrix", matrix_json(&v.mat));
  }
  if (!res) {
    rc = pq_err(e, KEEL_ENOMEM, K_PROMQL_ERR_INTERNAL, "out of memory");
    goto out;
  }
  *out = res;
out:
  value_free(NULL, &v);
  free(c.tab);
  free(c.scratch);
  pq_arena_free(c.arena);
  return rc;
}

/* One query from its text: parse, then run_expr. */
static int run(k_querier_t *q, const char *expr, int64_t start, int64_t end, int64_t step,
               int instant, const k_promql_opts_t *in_opts, json_t **out, k_promql_err_t *e) {
  k_promql_opts_t o;
  k_promql_expr_t *x = NULL;
  k_promql_err_t scratch_err;
  int rc;

  *out = NULL;
  if (!e) e = &scratch_err;
  err_clear(e);
  opts_fill(&o, in_opts);
  if (!expr) {
    rc = pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA, "no query given");
    goto out;
  }
  if ((rc = times_ok(start, end, e))) goto out;
  if ((rc = k_promql_parse(expr, strlen(expr), &o, &x, e))) {
    /* Prometheus' API names the parameter of a parse error */
    if (e->type == K_PROMQL_ERR_BAD_DATA) {
      char m[sizeof e->msg];
      snprintf(m, sizeof m, "%s", e->msg);
      snprintf(e->msg, sizeof e->msg, "invalid parameter \"query\": %.990s", m);
    }
    goto out;
  }
  rc = run_expr(q, x, start, end, step, instant, &o, out, e);
out:
  k_promql_free(x);
  return rc;
}

int k_promql_instant_opts(k_querier_t *q, const char *expr, int64_t t_ms,
                          const k_promql_opts_t *opts, json_t **out, k_promql_err_t *e) {
  return run(q, expr, t_ms, t_ms, 1, 1, opts, out, e);
}

int k_promql_instant_expr(k_querier_t *q, const k_promql_expr_t *x, int64_t t_ms,
                          const k_promql_opts_t *opts, json_t **out, k_promql_err_t *e) {
  k_promql_opts_t o;
  k_promql_err_t scratch_err;
  int rc;
  if (!e) e = &scratch_err;
  err_clear(e);
  opts_fill(&o, opts);
  *out = NULL;
  if (!x || !x->root) return pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA, "no query given");
  if ((rc = times_ok(t_ms, t_ms, e))) return rc;
  return run_expr(q, x, t_ms, t_ms, 1, 1, &o, out, e);
}

int k_promql_instant(k_querier_t *q, const char *expr, int64_t t_ms, json_t **out,
                     k_promql_err_t *e) {
  return k_promql_instant_opts(q, expr, t_ms, NULL, out, e);
}

int k_promql_range_opts(k_querier_t *q, const char *expr, int64_t start_ms, int64_t end_ms,
                        int64_t step_ms, const k_promql_opts_t *opts, json_t **out,
                        k_promql_err_t *e) {
  k_promql_opts_t o;
  k_promql_err_t scratch_err;
  if (!e) e = &scratch_err;
  opts_fill(&o, opts);
  *out = NULL;
  /* Prometheus' API checks, in its order and words. */
  if (end_ms < start_ms)
    return pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA,
                  "invalid parameter \"end\": end timestamp must not be before start time");
  if (step_ms <= 0)
    return pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA,
                  "invalid parameter \"step\": zero or negative query resolution step widths are "
                  "not accepted. Try a positive integer");
  if (((uint64_t)end_ms - (uint64_t)start_ms) / (uint64_t)step_ms > o.max_points)
    return o.max_points == K_PROMQL_DEFAULT_MAX_POINTS
               ? pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA,
                        "exceeded maximum resolution of 11,000 points per timeseries. Try "
                        "decreasing the query resolution (?step=XX)")
               : pq_err(e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA,
                        "exceeded maximum resolution of %zu points per timeseries. Try "
                        "decreasing the query resolution (?step=XX)",
                        o.max_points);
  return run(q, expr, start_ms, end_ms, step_ms, 0, &o, out, e);
}

int k_promql_range(k_querier_t *q, const char *expr, int64_t start_ms, int64_t end_ms,
                   int64_t step_ms, json_t **out, k_promql_err_t *e) {
  return k_promql_range_opts(q, expr, start_ms, end_ms, step_ms, NULL, out, e);
}
