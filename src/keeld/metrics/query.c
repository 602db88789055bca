/* query.c — the TSDB's querier (querier.h) over the blocks and the head.
 *
 * Each call reads the database as it is then: the current block list and
 * the head, which together hold every committed sample exactly once (a cut
 * swaps chunks from the head into a block in one step on this thread).
 * The querier keeps a reference on every block it has read until it is
 * closed, so compaction and retention may drop blocks meanwhile without
 * pulling pages (and label strings) from under earlier answers; head labels
 * and samples are copied into the querier's arena.
 *
 * Results: per source (each block overlapping the range, then the head) the
 * matching series with samples in [mint, maxt]; then sorted by labels and
 * merged, so a series present in several sources comes out once with its
 * samples in time order (sources do not overlap in time; if they ever do,
 * the first sample of a timestamp wins).
 */
#define _GNU_SOURCE
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "keel/grow.h"
#include "metrics/idmap.h"
#include "metrics/tsdb_int.h"

#define MAX_LAB 256
#define ARENA_BLOCK (1u << 20)

/* ---- arena ------------------------------------------------------------------------------- */

typedef struct ablk {
  struct ablk *next;
  size_t used, cap;
  alignas(16) unsigned char data[];
} ablk_t;

typedef struct arena {
  ablk_t *head;
} arena_t;

static void *aalloc(arena_t *a, size_t n) {
  void *p;
  n = (n + 15) & ~(size_t)15;
  if (!n) n = 16;
  if (!a->head || a->head->cap - a->head->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    ablk_t *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  p = a->head->data + a->head->used;
  a->head->used += n;
  return p;
}

static char *astrdup(arena_t *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = aalloc(a, n);
  if (p) memcpy(p, s, n);
  return p;
}

static void arena_free(arena_t *a) {
  while (a->head) {
    ablk_t *n = a->head->next;
    free(a->head);
    a->head = n;
  }
}

/* ---- querier ------------------------------------------------------------------------------ */

typedef struct ent {
  const k_label_t *lab;
  size_t nlab;
  int64_t *t;
  double *v;
  size_t n;
  size_t src; /* blocks in time order, then the head */
} ent_t;

typedef struct tq {
  k_querier_t q;
  k_tsdb_t *db;
  k_block_t **blocks; /* the database's current list (borrowed), refreshed per call */
  size_t nblocks;
  k_block_t **held;   /* every block read so far: one reference each */
  size_t nheld, capheld;
  arena_t ar;
  k_samples_t scr;
  ent_t *ents;
  size_t nents, capents;
  /* head symbol id -> its copy in the arena, for one select call only (a
   * cut between two calls may give an id to another string) */
  k_idmap_t syms; /* id + 1 -> its copy */
} tq_t;

static int labels_cmp(const k_label_t *a, size_t na, const k_label_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  for (size_t i = 0; i < n; i++) {
    /* head labels share their copies (sym_copy), blocks their map: equal
     * pointers are equal strings */
    int c = a[i].name == b[i].name ? 0 : strcmp(a[i].name, b[i].name);
    if (c) return c;
    if (a[i].value != b[i].value && (c = strcmp(a[i].value, b[i].value))) return c;
  }
  return na < nb ? -1 : na > nb;
}

static int ent_cmp(const void *x, const void *y) {
  const ent_t *a = x, *b = y;
  int c = labels_cmp(a->lab, a->nlab, b->lab, b->nlab);
  if (c) return c;
  return a->src < b->src ? -1 : a->src > b->src;
}

static int ent_push(tq_t *q, const ent_t *e) {
  ent_t *v = keel_grow(q->ents, &q->capents, q->nents, sizeof *v, 1024);
  if (!v) return KEEL_ENOMEM;
  q->ents = v;
  q->ents[q->nents++] = *e;
  return 0;
}

/* The querier's copy of head symbol id: one per select call, shared by
 * every series that has it (NULL: out of memory). */
static const char *sym_copy(tq_t *q, const k_head_t *h, uint32_t id) {
  size_t i;
  char *c;
  if (k_idmap_reserve(&q->syms, 1024)) return NULL;
  i = k_idmap_slot(&q->syms, id + 1);
  if (q->syms.k[i]) return q->syms.v[i];
  if (!(c = astrdup(&q->ar, k_head_sym(h, id)))) return NULL;
  q->syms.k[i] = id + 1;
  q->syms.v[i] = c;
  q->syms.n++;
  return c;
}

/* Moves the scratch samples into the arena as an entry. */
static int ent_from_scratch(tq_t *q, const k_label_t *lab, size_t nlab, size_t src) {
  ent_t e = {lab, nlab, NULL, NULL, q->scr.n, src};
  e.t = aalloc(&q->ar, q->scr.n * sizeof *e.t);
  e.v = aalloc(&q->ar, q->scr.n * sizeof *e.v);
  if (!e.t || !e.v) return KEEL_ENOMEM;
  memcpy(e.t, q->scr.t, q->scr.n * sizeof *e.t);
  memcpy(e.v, q->scr.v, q->scr.n * sizeof *e.v);
  return ent_push(q, &e);
}

/* Appends one chunk's samples within [mint, maxt] to the scratch. */
static int decode_into(k_samples_t *s, const uint8_t *p, size_t len, int64_t mint, int64_t maxt) {
  size_t cnt, got, base = s->n, w;
  int rc;
  if ((rc = k_chunk_count(p, len, &cnt))) return rc;
  if ((rc = k_samples_reserve(s, s->n + cnt))) return rc;
  if ((rc = k_chunk_decode(p, len, s->t + base, s->v + base, cnt, &got))) return rc;
  w = base;
  for (size_t i = base; i < base + got; i++)
    if (s->t[i] >= mint && s->t[i] <= maxt) {
      s->t[w] = s->t[i];
      s->v[w++] = s->v[i];
    }
  s->n = w;
  return 0;
}

static int head_samples(const k_head_t *h, const k_hseries_t *s, int64_t mint, int64_t maxt,
                        k_samples_t *out) {
  int rc;
  out->n = 0;
  for (uint32_t i = 0; i < s->nclosed; i++) {
    /* a chunk ends before the next one starts */
    int64_t next = i + 1 < s->nclosed ? s->closed[i + 1].mint : s->open.n ? s->open.mint : INT64_MAX;
    const uint8_t *p;
    size_t len;
    if (s->closed[i].mint > maxt || next <= mint) continue;
    if ((rc = k_head_chunk(h, s->closed[i].ref, &p, &len)) ||
        (rc = decode_into(out, p, len, mint, maxt)))
      return rc;
  }
  if (s->open.n && s->open.mint <= maxt && s->open.t >= mint)
    return decode_into(out, s->open.buf, k_xorapp_bytes(&s->open), mint, maxt);
  return 0;
}

static int block_overlaps(const k_block_t *b, int64_t mint, int64_t maxt) {
  const k_block_meta_t *m = k_block_meta(b);
  return m->mint <= maxt && m->maxt > mint;
}

static int head_overlaps(const k_head_t *h, int64_t mint, int64_t maxt) {
  return k_head_nseries(h) && k_head_mint(h) <= maxt && k_head_maxt(h) >= mint;
}

/* Points at the current block list and holds a reference on each. */
static int refresh(tq_t *q) {
  k_tsdb_t *db = q->db;
  for (size_t i = 0; i < db->nblocks; i++) {
    size_t k = 0;
    while (k < q->nheld && q->held[k] != db->blocks[i]) k++;
    if (k < q->nheld) continue;
    k_block_t **v = keel_grow(q->held, &q->capheld, q->nheld, sizeof *v, 16);
    if (!v) return KEEL_ENOMEM;
    q->held = v;
    k_block_ref(db->blocks[i]);
    q->held[q->nheld++] = db->blocks[i];
  }
  q->blocks = db->blocks;
  q->nblocks = db->nblocks;
  return 0;
}

static int q_select(k_querier_t *qq, const k_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                    const k_series_t **out, size_t *nout, keel_err_t *e) {
  tq_t *q = (tq_t *)qq;
  k_cmatchers_t cm = {0};
  k_plist_t ids = {0};
  k_series_t *res = NULL;
  size_t nres = 0;
  int rc;

  *out = NULL;
  *nout = 0;
  q->nents = 0;
  if (refresh(q)) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_matchers_compile(m, nm, &cm, e))) return rc;
  for (size_t bi = 0; bi < q->nblocks; bi++) {
    const k_block_t *b = q->blocks[bi];
    if (!block_overlaps(b, mint, maxt)) continue;
    if ((rc = k_select_ids(k_block_lindex(), (void *)b, &cm, &ids))) goto oom;
    for (size_t i = 0; i < ids.n; i++) {
      k_label_t tmp[MAX_LAB], *lab;
      size_t nl;
      q->scr.n = 0;
      if ((rc = k_block_samples(b, ids.v[i], mint, maxt, &q->scr, e))) goto out;
      if (!q->scr.n) continue;
      if ((rc = k_block_labels(b, ids.v[i], tmp, MAX_LAB, &nl))) {
        rc = keel_err_set(e, rc, "%s: series %u labels do not decode", k_block_path(b), ids.v[i]);
        goto out;
      }
      /* block strings live in its map, which this querier holds */
      if (!(lab = aalloc(&q->ar, nl * sizeof *lab))) goto oom;
      memcpy(lab, tmp, nl * sizeof *lab);
      if ((rc = ent_from_scratch(q, lab, nl, bi))) goto oom;
    }
  }
  if (head_overlaps(q->db->head, mint, maxt)) {
    const k_head_t *h = q->db->head;
    if ((rc = k_select_ids(k_head_lindex(), (void *)h, &cm, &ids))) goto oom;
    if (q->syms.n) memset(q->syms.k, 0, q->syms.cap * sizeof *q->syms.k);
    q->syms.n = 0;
    for (size_t i = 0; i < ids.n; i++) {
      const k_hseries_t *s = k_head_by_id(h, ids.v[i]);
      k_label_t *lab;
      /* the series are scattered over the heap: start loading the next
       * ones while this one decodes */
      if (i + 2 < ids.n) __builtin_prefetch(k_head_by_id(h, ids.v[i + 2]));
      if (i + 1 < ids.n) {
        const k_hseries_t *nx = k_head_by_id(h, ids.v[i + 1]);
        if (nx) __builtin_prefetch(nx->open.buf);
      }
      if (!s) continue;
      if ((rc = head_samples(h, s, mint, maxt, &q->scr))) {
        rc = keel_err_set(e, rc, "tsdb: head series %u does not decode", s->id);
        goto out;
      }
      if (!q->scr.n) continue;
      /* head strings can go at the next block cut: copy them */
      if (!(lab = aalloc(&q->ar, s->nlab * sizeof *lab))) goto oom;
      for (size_t k = 0; k < s->nlab; k++) {
        lab[k].name = sym_copy(q, h, s->lab[2 * k]);
        lab[k].value = sym_copy(q, h, s->lab[2 * k + 1]);
        if (!lab[k].name || !lab[k].value) goto oom;
      }
      if ((rc = ent_from_scratch(q, lab, s->nlab, q->nblocks))) goto oom;
    }
  }
  if (q->nents) qsort(q->ents, q->nents, sizeof *q->ents, ent_cmp);
  if (!(res = aalloc(&q->ar, (q->nents ? q->nents : 1) * sizeof *res))) goto oom;
  for (size_t i = 0; i < q->nents;) {
    size_t j = i + 1, total = q->ents[i].n;
    k_series_t *r = &res[nres++];
    while (j < q->nents && !labels_cmp(q->ents[i].lab, q->ents[i].nlab, q->ents[j].lab, q->ents[j].nlab))
      total += q->ents[j++].n;
    r->labels.v = q->ents[i].lab;
    r->labels.n = q->ents[i].nlab;
    if (j == i + 1) {
      r->t = q->ents[i].t;
      r->v = q->ents[i].v;
      r->n = q->ents[i].n;
    } else {
      int64_t *t = aalloc(&q->ar, total * sizeof *t);
      double *v = aalloc(&q->ar, total * sizeof *v);
      size_t k = 0;
      if (!t || !v) goto oom;
      for (size_t x = i; x < j; x++)
        for (size_t y = 0; y < q->ents[x].n; y++) {
          int64_t tt = q->ents[x].t[y];
          size_t at = k;
          /* sources are time-ordered and disjoint: this is an append; the
           * loop only runs if they ever overlap */
          while (at > 0 && t[at - 1] > tt) at--;
          if (at > 0 && t[at - 1] == tt) continue; /* the earlier source wins */
          memmove(t + at + 1, t + at, (k - at) * sizeof *t);
          memmove(v + at + 1, v + at, (k - at) * sizeof *v);
          t[at] = tt;
          v[at] = q->ents[x].v[y];
          k++;
        }
      r->t = t;
      r->v = v;
      r->n = k;
    }
    i = j;
  }
  *out = res;
  *nout = nres;
  rc = 0;
  goto out;
oom:
  rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  k_plist_free(&ids);
  k_matchers_free(&cm);
  return rc;
}

/* ---- label names and values --------------------------------------------------------------------- */

typedef struct strs {
  const char **v;
  size_t n, cap;
} strs_t;

static int strs_push(void *ud, const char *s) {
  strs_t *x = ud;
  const char **v = keel_grow(x->v, &x->cap, x->n, sizeof *v, 64);
  if (!v) return KEEL_ENOMEM;
  x->v = v;
  x->v[x->n++] = s;
  return 0;
}

static int str_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts, dedups and copies the strings into the arena. */
static int strs_finish(tq_t *q, strs_t *x, const char *const **out, size_t *n) {
  const char **res;
  size_t k = 0;
  if (x->n) qsort(x->v, x->n, sizeof *x->v, str_cmp);
  res = aalloc(&q->ar, (x->n ? x->n : 1) * sizeof *res);
  if (!res) return KEEL_ENOMEM;
  for (size_t i = 0; i < x->n; i++)
    if (!k || strcmp(res[k - 1], x->v[i])) {
      if (!(res[k] = astrdup(&q->ar, x->v[i]))) return KEEL_ENOMEM;
      k++;
    }
  *out = res;
  *n = k;
  return 0;
}

static int value_nonempty(void *ud, const char *value, const uint32_t *ids, size_t n) {
  (void)ids;
  return n ? strs_push(ud, value) : 0;
}

/* Label names (name NULL) or values of name of the series matching. */
static int q_labels(tq_t *q, const char *name, const k_matcher_t *m, size_t nm, int64_t mint,
                    int64_t maxt, const char *const **out, size_t *nout, keel_err_t *e) {
  k_cmatchers_t cm = {0};
  k_plist_t ids = {0};
  strs_t x = {0};
  int rc;
  const k_head_t *h = q->db->head;
  int head = head_overlaps(h, mint, maxt);

  *out = NULL;
  *nout = 0;
  if (refresh(q)) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_matchers_compile(m, nm, &cm, e))) return rc;
  for (size_t bi = 0; bi <= q->nblocks; bi++) {
    int is_head = bi == q->nblocks;
    const k_block_t *b = is_head ? NULL : q->blocks[bi];
    if (is_head ? !head : !block_overlaps(b, mint, maxt)) continue;
    if (!nm) {
      if (!name)
        rc = is_head ? k_head_label_names(h, strs_push, &x) : k_block_label_names(b, strs_push, &x);
      else
        rc = is_head ? k_head_lindex()->each_value((void *)h, name, value_nonempty, &x)
                     : k_block_lindex()->each_value((void *)b, name, value_nonempty, &x);
      if (rc) goto oom;
      continue;
    }
    if ((rc = k_select_ids(is_head ? k_head_lindex() : k_block_lindex(),
                           is_head ? (void *)h : (void *)b, &cm, &ids)))
      goto oom;
    for (size_t i = 0; i < ids.n; i++) {
      k_label_t lab[MAX_LAB];
      size_t nl = 0;
      if (is_head) {
        const k_hseries_t *s = k_head_by_id(h, ids.v[i]);
        if (!s) continue;
        for (size_t k = 0; k < s->nlab; k++) {
          lab[k].name = k_head_sym(h, s->lab[2 * k]);
          lab[k].value = k_head_sym(h, s->lab[2 * k + 1]);
        }
        nl = s->nlab;
      } else if (k_block_labels(b, ids.v[i], lab, MAX_LAB, &nl)) {
        continue;
      }
      for (size_t k = 0; k < nl; k++) {
        if (name && strcmp(lab[k].name, name)) continue;
        if ((rc = strs_push(&x, name ? lab[k].value : lab[k].name))) goto oom;
      }
    }
  }
  if ((rc = strs_finish(q, &x, out, nout))) goto oom;
  goto out;
oom:
  rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  free(x.v);
  k_plist_free(&ids);
  k_matchers_free(&cm);
  return rc;
}

static int q_label_names(k_querier_t *qq, const k_matcher_t *m, size_t nm, int64_t mint,
                         int64_t maxt, const char *const **out, size_t *n, keel_err_t *e) {
  return q_labels((tq_t *)qq, NULL, m, nm, mint, maxt, out, n, e);
}

static int q_label_values(k_querier_t *qq, const char *name, const k_matcher_t *m, size_t nm,
                          int64_t mint, int64_t maxt, const char *const **out, size_t *n,
                          keel_err_t *e) {
  if (!name) return keel_err_set(e, KEEL_EINVAL, "label_values: no label name");
  return q_labels((tq_t *)qq, name, m, nm, mint, maxt, out, n, e);
}

static void q_close(k_querier_t *qq) {
  tq_t *q = (tq_t *)qq;
  if (!q) return;
  for (size_t i = 0; i < q->nheld; i++) k_block_unref(q->held[i]);
  free(q->held);
  arena_free(&q->ar);
  k_samples_free(&q->scr);
  free(q->ents);
  k_idmap_free(&q->syms);
  free(q);
}

int k_tsdb_querier_new(k_tsdb_t *db, k_querier_t **out, keel_err_t *e) {
  tq_t *q = calloc(1, sizeof *q);
  *out = NULL;
  if (!q) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  q->q.select = q_select;
  q->q.label_names = q_label_names;
  q->q.label_values = q_label_values;
  q->q.close = q_close;
  q->db = db;
  *out = &q->q;
  return 0;
}
