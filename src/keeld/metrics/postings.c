/* postings.c — posting list algebra and label matchers; see postings.h. */
#include "keel/regex.h"
#include "metrics/postings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lists ----------------------------------------------------------------------- */

int k_plist_reserve(k_plist_t *l, size_t n) {
  uint32_t *v;
  size_t cap;
  if (n <= l->cap) return 0;
  cap = l->cap ? l->cap : 4;
  while (cap < n) cap = cap + cap / 2 + 4;
  v = realloc(l->v, cap * sizeof *v);
  if (!v) return KEEL_ENOMEM;
  l->v = v;
  l->cap = cap;
  return 0;
}

int k_plist_push(k_plist_t *l, uint32_t id) {
  if (l->n == l->cap && k_plist_reserve(l, l->n + 1)) return KEEL_ENOMEM;
  l->v[l->n++] = id;
  return 0;
}

void k_plist_free(k_plist_t *l) {
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

/* First index i >= lo with a[i] >= x (galloping then binary search). */
static size_t seek(const uint32_t *a, size_t lo, size_t n, uint32_t x) {
  size_t step = 1, hi = lo;
  while (hi < n && a[hi] < x) {
    lo = hi + 1;
    hi += step;
    step *= 2;
  }
  if (hi > n) hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

int k_plist_intersect(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, k_plist_t *out) {
  size_t i = 0, j = 0;
  out->n = 0;
  if (k_plist_reserve(out, na < nb ? na : nb)) return KEEL_ENOMEM;
  if (na > nb) { /* walk the short one */
    const uint32_t *t = a;
    size_t tn = na;
    a = b;
    na = nb;
    b = t;
    nb = tn;
  }
  for (; i < na && j < nb; i++) {
    j = seek(b, j, nb, a[i]);
    if (j < nb && b[j] == a[i]) out->v[out->n++] = a[i];
  }
  return 0;
}

int k_plist_subtract(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, k_plist_t *out) {
  size_t j = 0;
  out->n = 0;
  if (k_plist_reserve(out, na)) return KEEL_ENOMEM;
  for (size_t i = 0; i < na; i++) {
    j = seek(b, j, nb, a[i]);
    if (j >= nb || b[j] != a[i]) out->v[out->n++] = a[i];
  }
  return 0;
}

static int cmp_u32(const void *x, const void *y) {
  uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
  return a < b ? -1 : a > b;
}

int k_plist_union(const uint32_t *const *lists, const size_t *ns, size_t k, k_plist_t *out) {
  size_t total = 0, nonempty = 0, last = 0;
  uint32_t maxid = 0;
  out->n = 0;
  for (size_t i = 0; i < k; i++) {
    total += ns[i];
    if (ns[i]) {
      nonempty++;
      last = i;
      if (lists[i][ns[i] - 1] > maxid) maxid = lists[i][ns[i] - 1];
    }
  }
  if (k_plist_reserve(out, total)) return KEEL_ENOMEM;
  if (nonempty <= 1) {
    if (nonempty) memcpy(out->v, lists[last], ns[last] * sizeof *out->v);
    out->n = nonempty ? ns[last] : 0;
    return 0;
  }
  if ((uint64_t)maxid < (uint64_t)total * 64) {
    /* dense enough: a bitmap over [0, maxid] */
    size_t words = (size_t)maxid / 64 + 1;
    uint64_t *bm = calloc(words, sizeof *bm);
    if (!bm) return KEEL_ENOMEM;
    for (size_t i = 0; i < k; i++)
      for (size_t j = 0; j < ns[i]; j++) bm[lists[i][j] >> 6] |= UINT64_C(1) << (lists[i][j] & 63);
    for (size_t w = 0; w < words; w++)
      for (uint64_t x = bm[w]; x; x &= x - 1)
        out->v[out->n++] = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(x));
    free(bm);
    return 0;
  }
  for (size_t i = 0; i < k; i++) {
    if (!ns[i]) continue;
    memcpy(out->v + out->n, lists[i], ns[i] * sizeof *out->v);
    out->n += ns[i];
  }
  qsort(out->v, out->n, sizeof *out->v, cmp_u32);
  {
    size_t w = 0;
    for (size_t i = 0; i < out->n; i++)
      if (w == 0 || out->v[w - 1] != out->v[i]) out->v[w++] = out->v[i];
    out->n = w;
  }
  return 0;
}

/* ---- matchers --------------------------------------------------------------------- */

enum { KM_LIT = 0, KM_SET, KM_ANY, KM_NONEMPTY, KM_RE };

int k_label_name_ok(const char *s) {
  if (!s || !*s) return 0;
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return 0;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return 0;
  return 1;
}


/* A regex that is only literal text, maybe alternated ("a|b|c"), becomes a
 * set of strings: no regexec per value, direct postings lookups. */
static int re_literal_set(k_cmatcher_t *c, const char *re) {
  size_t n = 1, k = 0;
  const char *s, *start;
  for (s = re; *s; s++) {
    if (strchr(".[]()*+?{}^$\\", *s)) return 0;
    if (*s == '|') n++;
  }
  c->lits = calloc(n, sizeof *c->lits);
  if (!c->lits) return -1;
  for (start = s = re;; s++) {
    if (*s == '|' || *s == '\0') {
      c->lits[k] = strndup(start, (size_t)(s - start));
      if (!c->lits[k]) return -1;
      k++;
      c->nlits = k;
      if (!*s) break;
      start = s + 1;
    }
  }
  return 1;
}

static int base_match(const k_cmatcher_t *c, const char *v) {
  regmatch_t m;
  switch (c->kind) {
  case KM_LIT: return strcmp(v, c->lits ? c->lits[0] : c->value) == 0;
  case KM_SET:
    for (size_t i = 0; i < c->nlits; i++)
      if (!strcmp(v, c->lits[i])) return 1;
    return 0;
  case KM_ANY: return 1;
  case KM_NONEMPTY: return v[0] != 0;
  default:
    /* POSIX leftmost-longest: the whole value matches iff the match found
     * starts at 0 and ends at the end. */
    if (regexec(&c->re, v, 1, &m, 0)) return 0;
    return m.rm_so == 0 && (size_t)m.rm_eo == strlen(v);
  }
}

int k_cmatcher_match(const k_cmatcher_t *c, const char *v) {
  int r = base_match(c, v ? v : "");
  return c->type == K_MATCH_NE || c->type == K_MATCH_NRE ? !r : r;
}

static int compile_one(const k_matcher_t *m, k_cmatcher_t *c, keel_err_t *e) {
  const char *why = NULL;
  int rc;
  c->type = m->type;
  c->name = m->name;
  c->value = m->value ? m->value : "";
  if (!k_label_name_ok(m->name))
    return keel_err_set(e, KEEL_EINVAL, "matcher: invalid label name \"%.64s\"", m->name ? m->name : "");
  if (m->type == K_MATCH_EQ || m->type == K_MATCH_NE) {
    c->kind = KM_LIT;
  } else if (m->type == K_MATCH_RE || m->type == K_MATCH_NRE) {
    if (strlen(c->value) > K_MATCHER_RE_MAX)
      return keel_err_set(e, KEEL_EINVAL, "matcher %s: regular expression over %d bytes", m->name,
                          K_MATCHER_RE_MAX);
    if (!strcmp(c->value, ".*")) {
      c->kind = KM_ANY;
    } else if (!strcmp(c->value, ".+")) {
      c->kind = KM_NONEMPTY;
    } else if ((rc = re_literal_set(c, c->value)) != 0) {
      if (rc < 0) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
      c->kind = c->nlits == 1 ? KM_LIT : KM_SET;
    } else {
      if (!keel_regex_cost_ok(c->value, strlen(c->value), &why))
        return keel_err_set(e, KEEL_EINVAL, "matcher %s=~\"%.64s\": %s", m->name, c->value, why);
      if ((rc = regcomp(&c->re, c->value, REG_EXTENDED))) {
        char msg[128];
        regerror(rc, &c->re, msg, sizeof msg);
        regfree(&c->re);
        return keel_err_set(e, rc == REG_ESPACE ? KEEL_ENOMEM : KEEL_EINVAL,
                            "matcher %s=~\"%.64s\": invalid regular expression: %s", m->name,
                            c->value, msg);
      }
      c->has_re = 1;
      c->kind = KM_RE;
    }
  } else {
    return keel_err_set(e, KEEL_EINVAL, "matcher %s: unknown type %d", m->name, (int)m->type);
  }
  c->empty_matches = k_cmatcher_match(c, "");
  return 0;
}

static void cmatcher_free(k_cmatcher_t *c) {
  for (size_t i = 0; i < c->nlits; i++) free(c->lits[i]);
  free(c->lits);
  if (c->has_re) regfree(&c->re);
}

int k_matchers_compile(const k_matcher_t *m, size_t nm, k_cmatchers_t *out, keel_err_t *e) {
  int rc = 0;
  out->n = 0;
  out->m = calloc(nm ? nm : 1, sizeof *out->m);
  if (!out->m) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  for (size_t i = 0; i < nm; i++) {
    rc = compile_one(&m[i], &out->m[i], e);
    out->n = i + 1; /* cmatcher_free copes with a half-built one */
    if (rc) goto out;
  }
out:
  if (rc) k_matchers_free(out);
  return rc;
}

void k_matchers_free(k_cmatchers_t *c) {
  if (!c->m) return;
  for (size_t i = 0; i < c->n; i++) cmatcher_free(&c->m[i]);
  free(c->m);
  c->m = NULL;
  c->n = 0;
}

/* ---- selection ---------------------------------------------------------------------- */

typedef struct gather {
  const k_cmatcher_t *c;
  int want; /* collect values whose match() is this */
  const uint32_t **lists;
  size_t *ns, k, cap;
} gather_t;

static int gather_push(gather_t *g, const uint32_t *ids, size_t n) {
  if (g->k == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 16;
    const uint32_t **l = realloc(g->lists, cap * sizeof *l);
    size_t *ns;
    if (!l) return KEEL_ENOMEM;
    g->lists = l;
    ns = realloc(g->ns, cap * sizeof *ns);
    if (!ns) return KEEL_ENOMEM;
    g->ns = ns;
    g->cap = cap;
  }
  g->lists[g->k] = ids;
  g->ns[g->k++] = n;
  return 0;
}

static int gather_value(void *ud, const char *value, const uint32_t *ids, size_t n) {
  gather_t *g = ud;
  if (!n || !*value) return 0;
  if (k_cmatcher_match(g->c, value) != g->want) return 0;
  return gather_push(g, ids, n);
}

/* The term of one matcher: ids whose series must (neg 0) or must not
 * (neg 1) be selected.  *skip when the matcher constrains nothing. */
static int term_ids(const k_lindex_ops_t *ops, void *ix, const k_cmatcher_t *c, int *neg,
                    int *skip, k_plist_t *out) {
  gather_t g = {c, !c->empty_matches, NULL, NULL, 0, 0};
  int positive_type = c->type == K_MATCH_EQ || c->type == K_MATCH_RE, rc = 0;
  int literal = c->kind == KM_LIT || c->kind == KM_SET;

  *neg = c->empty_matches;
  *skip = 0;
  if (c->kind == KM_ANY && positive_type) { /* =~".*" */
    *skip = 1;
    return 0;
  }
  /* Literal sets whose wanted values are exactly the literals: look them
   * up (EQ/RE collect matching values; NE/NRE collect the literals they
   * exclude once they are negative). */
  if (literal && ((positive_type && g.want == 1) || (!positive_type && g.want == 0))) {
    size_t nl = c->lits ? c->nlits : 1;
    for (size_t i = 0; i < nl; i++) {
      const char *v = c->lits ? c->lits[i] : c->value;
      const uint32_t *ids;
      size_t n;
      if (!*v) continue;
      ops->postings(ix, c->name, v, &ids, &n);
      if (n && (rc = gather_push(&g, ids, n))) goto out;
    }
  } else if ((rc = ops->each_value(ix, c->name, gather_value, &g))) {
    goto out;
  }
  rc = k_plist_union(g.lists, g.ns, g.k, out);
out:
  free(g.lists);
  free(g.ns);
  return rc;
}

typedef struct term {
  int neg;
  k_plist_t ids;
} term_t;

static int term_cmp(const void *a, const void *b) {
  const term_t *x = a, *y = b;
  return x->ids.n < y->ids.n ? -1 : x->ids.n > y->ids.n;
}

int k_select_ids(const k_lindex_ops_t *ops, void *ix, const k_cmatchers_t *cm, k_plist_t *out) {
  term_t *terms = calloc(cm->n ? cm->n : 1, sizeof *terms);
  size_t nt = 0, npos = 0;
  k_plist_t tmp = {0};
  int rc = 0;
  const uint32_t *all;
  size_t nall;

  out->n = 0;
  if (!terms) return KEEL_ENOMEM;
  for (size_t i = 0; i < cm->n; i++) {
    int neg, skip;
    if ((rc = term_ids(ops, ix, &cm->m[i], &neg, &skip, &terms[nt].ids))) {
      k_plist_free(&terms[nt].ids);
      goto out;
    }
    if (skip) {
      k_plist_free(&terms[nt].ids);
      continue;
    }
    terms[nt].neg = neg;
    if (!neg) {
      npos++;
      if (terms[nt].ids.n == 0) { /* nothing can match */
        nt++;
        goto out;
      }
    }
    nt++;
  }
  /* smallest first: the running intersection only shrinks */
  qsort(terms, nt, sizeof *terms, term_cmp);
  if (npos == 0) {
    ops->all(ix, &all, &nall);
    if ((rc = k_plist_reserve(out, nall))) goto out;
    if (nall) memcpy(out->v, all, nall * sizeof *all);
    out->n = nall;
  } else {
    int first = 1;
    for (size_t i = 0; i < nt; i++) {
      if (terms[i].neg) continue;
      if (first) {
        k_plist_t t = *out;
        *out = terms[i].ids;
        terms[i].ids = t;
        first = 0;
        continue;
      }
      if ((rc = k_plist_intersect(out->v, out->n, terms[i].ids.v, terms[i].ids.n, &tmp))) goto out;
      {
        k_plist_t t = *out;
        *out = tmp;
        tmp = t;
      }
      if (!out->n) goto out;
    }
  }
  for (size_t i = 0; i < nt && out->n; i++) {
    if (!terms[i].neg || !terms[i].ids.n) continue;
    if ((rc = k_plist_subtract(out->v, out->n, terms[i].ids.v, terms[i].ids.n, &tmp))) goto out;
    {
      k_plist_t t = *out;
      *out = tmp;
      tmp = t;
    }
  }
out:
  /* an early "nothing can match" exit leaves out empty */
  if (rc) out->n = 0;
  for (size_t i = 0; i < nt; i++) k_plist_free(&terms[i].ids);
  free(terms);
  k_plist_free(&tmp);
  return rc;
}
