/* metrics/idmap.h — a small open-addressing map from a non-zero uint32_t key
 * to a pointer (linear probing, load at most 1/2, capacity a power of two).
 * Used by the querier (symbol copies) and WAL replay (series aliases).
 * Internal to src/keeld/metrics/.  The map owns its two arrays, never the
 * values.
 */
#ifndef KEELD_METRICS_IDMAP_H
#define KEELD_METRICS_IDMAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "keel/err.h"

typedef struct k_idmap {
  uint32_t *k; /* 0: empty */
  void **v;
  size_t n, cap;
} k_idmap_t;

/* Index of key's slot: where it is, or the empty slot where it would go.
 * cap MUST be non-zero. */
static inline size_t k_idmap_slot(const k_idmap_t *m, uint32_t key) {
  size_t i;
  for (i = (key * UINT32_C(2654435761)) & (m->cap - 1); m->k[i] && m->k[i] != key;
       i = (i + 1) & (m->cap - 1)) {
  }
  return i;
}

/* The value of key, or NULL. */
static inline void *k_idmap_get(const k_idmap_t *m, uint32_t key) {
  size_t i;
  if (!m->cap) return NULL;
  i = k_idmap_slot(m, key);
  return m->k[i] ? m->v[i] : NULL;
}

/* Makes room for one more key (doubling, `first` slots the first time):
 * 0 or KEEL_ENOMEM (then the map is unchanged). */
static inline int k_idmap_reserve(k_idmap_t *m, size_t first) {
  size_t cap;
  k_idmap_t g;
  if ((m->n + 1) * 2 <= m->cap) return 0;
  cap = m->cap ? m->cap * 2 : first;
  g = (k_idmap_t){calloc(cap, sizeof *g.k), calloc(cap, sizeof *g.v), m->n, cap};
  if (!g.k || !g.v) {
    free(g.k);
    free(g.v);
    return KEEL_ENOMEM;
  }
  for (size_t j = 0; j < m->cap; j++) {
    size_t i;
    if (!m->k[j]) continue;
    i = k_idmap_slot(&g, m->k[j]);
    g.k[i] = m->k[j];
    g.v[i] = m->v[j];
  }
  free(m->k);
  free(m->v);
  *m = g;
  return 0;
}

static inline void k_idmap_free(k_idmap_t *m) {
  free(m->k);
  free(m->v);
  *m = (k_idmap_t){0};
}

#endif
