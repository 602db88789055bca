/* head.c — series, symbols, postings, open chunks and the head chunk
 * files; see head.h.
 *
 * Tables are open-addressing with linear probing and backward-shift
 * deletion (no tombstones), keyed by 64-bit hashes kept next to the item.
 */
#define _GNU_SOURCE
#include "metrics/head.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/grow.h"

#define HCF_SEG_MAX (UINT64_C(128) << 20) /* bytes of one head chunk file */
#define HCF_BUF (1u << 20)                /* write buffer; flushed when full */
#define HCF_BUF_MAX (64u << 20)           /* while flushes fail, at most this much waits */
#define REF_SHIFT 40
#define IDPAGE_BITS 12
#define IDPAGE (1u << IDPAGE_BITS)
#define MAX_LABELS 256
#define MAX_LABEL_BYTES 4096

/* ---- hashing ---------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= UINT64_C(0xff51afd7ed558ccd);
  h ^= h >> 33;
  h *= UINT64_C(0xc4ceb9fe1a85ec53);
  h ^= h >> 33;
  return h;
}

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n) {
  uint64_t w;
  while (n >= 8) {
    memcpy(&w, s, 8);
    h = (h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
    h ^= h >> 29;
    s += 8;
    n -= 8;
  }
  w = 0;
  memcpy(&w, s, n);
  h = (h ^ w ^ ((uint64_t)(n + 1) << 56)) * UINT64_C(0x9e3779b97f4a7c15);
  return h ^ (h >> 29);
}

static uint64_t hash_str(const char *s, size_t n) { return mix64(hash_bytes(0x5bd1e995, s, n)); }

uint64_t k_labels_hash(const k_label_t *l, size_t n) {
  uint64_t h = UINT64_C(0x243f6a8885a308d3);
  for (size_t i = 0; i < n; i++) {
    h = hash_bytes(h, l[i].name, strlen(l[i].name));
    h = hash_bytes(h ^ 0xff, l[i].value, strlen(l[i].value));
  }
  return mix64(h);
}

/* ---- structures ---------------------------------------------------------------------- */

typedef struct sym {
  char *s; /* NULL: free id */
  uint32_t len, refs;
  uint64_t hash;
} sym_t;

typedef struct pair {
  uint32_t name, value;
  k_plist_t ids;
} pair_t;

typedef struct lname {
  uint32_t name;
  uint32_t *pairs; /* indexes into h->pairs */
  uint32_t n, cap;
} lname_t;

typedef struct hseg {
  uint32_t seq;
  int fd;
  const uint8_t *map; /* HCF_SEG_MAX bytes, PROT_READ */
  uint64_t flushed;   /* bytes written to the file */
  int64_t maxt;       /* newest sample in any chunk here */
} hseg_t;

struct k_head {
  const keel_log_t *log;
  int64_t block_ms;
  int64_t mint, maxt;
  uint32_t next_id;

  /* symbols */
  sym_t *syms;
  uint32_t nsyms, capsyms;
  uint32_t *sym_free;
  uint32_t nsym_free, capsym_free;
  uint32_t *sym_slots; /* id + 1; 0 empty */
  uint32_t sym_mask, sym_used;

  /* series */
  k_hseries_t **ser_slots;
  uint32_t ser_mask, ser_used;
  k_hseries_t ***idpages; /* id >> IDPAGE_BITS -> page of IDPAGE pointers */
  uint32_t *idpage_used;
  size_t nidpages;
  k_hseries_t **list; /* live series, for iteration */
  size_t nlist, caplist;

  /* postings */
  pair_t *pairs;
  uint32_t npairs, cappairs;
  uint32_t *pair_slots; /* index + 1 */
  uint32_t pair_mask;
  lname_t *names;
  uint32_t nnames, capnames;
  uint32_t *name_slots; /* index + 1 */
  uint32_t name_mask;
  k_plist_t all;

  /* head chunk files */
  char *hcf_dir;
  hseg_t *segs;
  size_t nsegs, capsegs;
  k_bytes_t hbuf; /* pending bytes of the last segment, at offset segs[last].flushed */
  uint32_t next_seq;

  k_hsnap_t *snap; /* an active snapshot pins series, symbols and files */
};

/* ---- generic probing helpers ---------------------------------------------------------- */

static uint32_t *slots_new(uint32_t n) { return calloc(n, sizeof(uint32_t)); }

/* ---- symbols ------------------------------------------------------------------------- */

static int sym_grow(k_head_t *h) {
  uint32_t n = h->sym_mask ? (h->sym_mask + 1) * 2 : 1024, *s = slots_new(n);
  if (!s) return KEEL_ENOMEM;
  for (uint32_t i = 0; h->sym_slots && i <= h->sym_mask; i++) {
    uint32_t id = h->sym_slots[i], j;
    if (!id) continue;
    for (j = (uint32_t)h->syms[id - 1].hash & (n - 1); s[j]; j = (j + 1) & (n - 1)) {
    }
    s[j] = id;
  }
  free(h->sym_slots);
  h->sym_slots = s;
  h->sym_mask = n - 1;
  return 0;
}

static uint32_t sym_find(const k_head_t *h, const char *s, size_t len, uint64_t hash) {
  if (!h->sym_slots) return UINT32_MAX;
  for (uint32_t j = (uint32_t)hash & h->sym_mask;; j = (j + 1) & h->sym_mask) {
    uint32_t id = h->sym_slots[j];
    const sym_t *y;
    if (!id) return UINT32_MAX;
    y = &h->syms[id - 1];
    if (y->hash == hash && y->len == len && !memcmp(y->s, s, len)) return id - 1;
  }
}

/* Interns s and takes a reference; UINT32_MAX on ENOMEM. */
static uint32_t sym_ref(k_head_t *h, const char *s) {
  size_t len = strlen(s);
  uint64_t hash = hash_str(s, len);
  uint32_t id = sym_find(h, s, len, hash), j;
  char *copy;
  if (id != UINT32_MAX) {
    h->syms[id].refs++;
    return id;
  }
  if ((h->sym_used + 1) * 4 > (h->sym_mask + 1) * 3 || !h->sym_slots)
    if (sym_grow(h)) return UINT32_MAX;
  copy = malloc(len + 1);
  if (!copy) return UINT32_MAX;
  memcpy(copy, s, len + 1);
  if (h->nsym_free) {
    id = h->sym_free[--h->nsym_free];
  } else {
    if (h->nsyms == h->capsyms) {
      uint32_t cap = h->capsyms ? h->capsyms * 2 : 1024;
      sym_t *v = realloc(h->syms, cap * sizeof *v);
      if (!v) {
        free(copy);
        return UINT32_MAX;
      }
      h->syms = v;
      h->capsyms = cap;
    }
    id = h->nsyms++;
  }
  h->syms[id] = (sym_t){copy, (uint32_t)len, 1, hash};
  for (j = (uint32_t)hash & h->sym_mask; h->sym_slots[j]; j = (j + 1) & h->sym_mask) {
  }
  h->sym_slots[j] = id + 1;
  h->sym_used++;
  return id;
}

static void sym_unref(k_head_t *h, uint32_t id) {
  sym_t *y = &h->syms[id];
  uint32_t i, j;
  if (--y->refs) return;
  for (i = (uint32_t)y->hash & h->sym_mask; h->sym_slots[i] != id + 1; i = (i + 1) & h->sym_mask) {
  }
  /* backward-shift deletion */
  h->sym_slots[i] = 0;
  for (j = (i + 1) & h->sym_mask; h->sym_slots[j]; j = (j + 1) & h->sym_mask) {
    uint32_t k = (uint32_t)h->syms[h->sym_slots[j] - 1].hash & h->sym_mask;
    if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
      h->sym_slots[i] = h->sym_slots[j];
      h->sym_slots[j] = 0;
      i = j;
    }
  }
  h->sym_used--;
  free(y->s);
  y->s = NULL;
  if (h->nsym_free == h->capsym_free) {
    uint32_t cap = h->capsym_free ? h->capsym_free * 2 : 256, *f;
    f = realloc(h->sym_free, cap * sizeof *f);
    if (!f) return; /* the id is leaked, not reused: harmless */
    h->sym_free = f;
    h->capsym_free = cap;
  }
  h->sym_free[h->nsym_free++] = id;
}

const char *k_head_sym(const k_head_t *h, uint32_t id) { return h->syms[id].s; }

/* ---- id map ----------------------------------------------------------------------------- */

k_hseries_t *k_head_by_id(const k_head_t *h, uint32_t id) {
  size_t p = id >> IDPAGE_BITS;
  if (p >= h->nidpages || !h->idpages[p]) return NULL;
  return h->idpages[p][id & (IDPAGE - 1)];
}

static int idmap_set(k_head_t *h, uint32_t id, k_hseries_t *s) {
  size_t p = id >> IDPAGE_BITS;
  if (p >= h->nidpages) {
    size_t n = p + 1 > h->nidpages * 2 ? p + 1 : h->nidpages * 2;
    k_hseries_t ***pg = realloc(h->idpages, n * sizeof *pg);
    uint32_t *used;
    if (!pg) return KEEL_ENOMEM;
    h->idpages = pg;
    used = realloc(h->idpage_used, n * sizeof *used);
    if (!used) return KEEL_ENOMEM;
    h->idpage_used = used;
    for (size_t i = h->nidpages; i < n; i++) {
      h->idpages[i] = NULL;
      h->idpage_used[i] = 0;
    }
    h->nidpages = n;
  }
  if (!h->idpages[p]) {
    h->idpages[p] = calloc(IDPAGE, sizeof **h->idpages);
    if (!h->idpages[p]) return KEEL_ENOMEM;
  }
  h->idpages[p][id & (IDPAGE - 1)] = s;
  h->idpage_used[p]++;
  return 0;
}

static void idmap_del(k_head_t *h, uint32_t id) {
  size_t p = id >> IDPAGE_BITS;
  h->idpages[p][id & (IDPAGE - 1)] = NULL;
  if (--h->idpage_used[p] == 0) {
    free(h->idpages[p]);
    h->idpages[p] = NULL;
  }
}

/* ---- postings ------------------------------------------------------------------------------ */

static uint64_t pair_hash(uint32_t name, uint32_t value) {
  return mix64((uint64_t)name << 32 | value);
}

static int pairs_grow(k_head_t *h) {
  uint32_t n = h->pair_mask ? (h->pair_mask + 1) * 2 : 256, *s = slots_new(n);
  if (!s) return KEEL_ENOMEM;
  for (uint32_t i = 0; i < h->npairs; i++) {
    uint32_t j;
    for (j = (uint32_t)pair_hash(h->pairs[i].name, h->pairs[i].value) & (n - 1); s[j];
         j = (j + 1) & (n - 1)) {
    }
    s[j] = i + 1;
  }
  free(h->pair_slots);
  h->pair_slots = s;
  h->pair_mask = n - 1;
  return 0;
}

static uint32_t pair_find(const k_head_t *h, uint32_t name, uint32_t value) {
  if (!h->pair_slots) return UINT32_MAX;
  for (uint32_t j = (uint32_t)pair_hash(name, value) & h->pair_mask;; j = (j + 1) & h->pair_mask) {
    uint32_t i = h->pair_slots[j];
    if (!i) return UINT32_MAX;
    if (h->pairs[i - 1].name == name && h->pairs[i - 1].value == value) return i - 1;
  }
}

static uint32_t name_find(const k_head_t *h, uint32_t name) {
  if (!h->name_slots) return UINT32_MAX;
  for (uint32_t j = (uint32_t)mix64(name) & h->name_mask;; j = (j + 1) & h->name_mask) {
    uint32_t i = h->name_slots[j];
    if (!i) return UINT32_MAX;
    if (h->names[i - 1].name == name) return i - 1;
  }
}

static int names_grow(k_head_t *h) {
  uint32_t n = h->name_mask ? (h->name_mask + 1) * 2 : 64, *s = slots_new(n);
  if (!s) return KEEL_ENOMEM;
  for (uint32_t i = 0; i < h->nnames; i++) {
    uint32_t j;
    for (j = (uint32_t)mix64(h->names[i].name) & (n - 1); s[j]; j = (j + 1) & (n - 1)) {
    }
    s[j] = i + 1;
  }
  free(h->name_slots);
  h->name_slots = s;
  h->name_mask = n - 1;
  return 0;
}

/* Adds pair index `pair` to the entry of name, created when missing. */
static int name_link(k_head_t *h, uint32_t name, uint32_t pair) {
  uint32_t ni = name_find(h, name), j;
  lname_t *ln;
  if (ni == UINT32_MAX) {
    if (!h->name_slots || (h->nnames + 1) * 2 > h->name_mask + 1)
      if (names_grow(h)) return KEEL_ENOMEM;
    if (h->nnames == h->capnames) {
      uint32_t cap = h->capnames ? h->capnames * 2 : 32;
      lname_t *l = realloc(h->names, cap * sizeof *l);
      if (!l) return KEEL_ENOMEM;
      h->names = l;
      h->capnames = cap;
    }
    ni = h->nnames++;
    h->names[ni] = (lname_t){name, NULL, 0, 0};
    for (j = (uint32_t)mix64(name) & h->name_mask; h->name_slots[j]; j = (j + 1) & h->name_mask) {
    }
    h->name_slots[j] = ni + 1;
  }
  ln = &h->names[ni];
  if (ln->n == ln->cap) {
    uint32_t cap = ln->cap ? ln->cap * 2 : 4, *p = realloc(ln->pairs, cap * sizeof *p);
    if (!p) return KEEL_ENOMEM;
    ln->pairs = p;
    ln->cap = cap;
  }
  ln->pairs[ln->n++] = pair;
  return 0;
}

/* The pair (name, value), created when missing (with its name entry). */
static int pair_get(k_head_t *h, uint32_t name, uint32_t value, uint32_t *out) {
  uint32_t i = pair_find(h, name, value), j;
  if (i != UINT32_MAX) {
    *out = i;
    return 0;
  }
  if (!h->pair_slots || (h->npairs + 1) * 4 > (h->pair_mask + 1) * 3)
    if (pairs_grow(h)) return KEEL_ENOMEM;
  if (h->npairs == h->cappairs) {
    uint32_t cap = h->cappairs ? h->cappairs * 2 : 256;
    pair_t *p = realloc(h->pairs, cap * sizeof *p);
    if (!p) return KEEL_ENOMEM;
    h->pairs = p;
    h->cappairs = cap;
  }
  i = h->npairs;
  if (name_link(h, name, i)) return KEEL_ENOMEM;
  h->npairs++;
  h->pairs[i] = (pair_t){name, value, {0}};
  for (j = (uint32_t)pair_hash(name, value) & h->pair_mask; h->pair_slots[j];
       j = (j + 1) & h->pair_mask) {
  }
  h->pair_slots[j] = i + 1;
  *out = i;
  return 0;
}

/* Adds id to a sorted list (ids usually arrive increasing). */
static int plist_insert(k_plist_t *l, uint32_t id) {
  size_t lo = 0, hi = l->n;
  if (!l->n || l->v[l->n - 1] < id) return k_plist_push(l, id);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (l->v[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  if (lo < l->n && l->v[lo] == id) return 0;
  if (k_plist_reserve(l, l->n + 1)) return KEEL_ENOMEM;
  memmove(l->v + lo + 1, l->v + lo, (l->n - lo) * sizeof *l->v);
  l->v[lo] = id;
  l->n++;
  return 0;
}

/* Rebuilds postings without the ids of dead series (after a GC). */
static int index_rebuild(k_head_t *h) {
  uint32_t w = 0;
  for (uint32_t i = 0; i < h->npairs; i++) {
    pair_t *p = &h->pairs[i];
    size_t k = 0;
    for (size_t j = 0; j < p->ids.n; j++)
      if (k_head_by_id(h, p->ids.v[j])) p->ids.v[k++] = p->ids.v[j];
    p->ids.n = k;
    if (!k) {
      k_plist_free(&p->ids);
      continue;
    }
    if (k < p->ids.cap / 4) { /* give memory back */
      uint32_t *v = realloc(p->ids.v, k * sizeof *v);
      if (v) {
        p->ids.v = v;
        p->ids.cap = k;
      }
    }
    h->pairs[w++] = *p;
  }
  h->npairs = w;
  {
    size_t k = 0;
    for (size_t j = 0; j < h->all.n; j++)
      if (k_head_by_id(h, h->all.v[j])) h->all.v[k++] = h->all.v[j];
    h->all.n = k;
  }
  /* names and both tables from scratch: pair indexes moved */
  for (uint32_t i = 0; i < h->nnames; i++) free(h->names[i].pairs);
  h->nnames = 0;
  free(h->name_slots);
  h->name_slots = NULL;
  h->name_mask = 0;
  free(h->pair_slots);
  h->pair_slots = NULL;
  h->pair_mask = 0;
  if (pairs_grow(h)) return KEEL_ENOMEM;
  while ((h->npairs + 1) * 4 > (h->pair_mask + 1) * 3)
    if (pairs_grow(h)) return KEEL_ENOMEM;
  for (uint32_t i = 0; i < h->npairs; i++)
    if (name_link(h, h->pairs[i].name, i)) return KEEL_ENOMEM;
  return 0;
}

/* ---- the label index for k_select_ids ---------------------------------------------------------- */

static void hx_postings(void *ix, const char *name, const char *value, const uint32_t **ids,
                        size_t *n) {
  const k_head_t *h = ix;
  size_t nl = strlen(name), vl = strlen(value);
  uint32_t ni = sym_find(h, name, nl, hash_str(name, nl)), vi, pi;
  *ids = NULL;
  *n = 0;
  if (ni == UINT32_MAX) return;
  vi = sym_find(h, value, vl, hash_str(value, vl));
  if (vi == UINT32_MAX) return;
  pi = pair_find(h, ni, vi);
  if (pi == UINT32_MAX) return;
  *ids = h->pairs[pi].ids.v;
  *n = h->pairs[pi].ids.n;
}

static int hx_each_value(void *ix, const char *name, k_value_fn fn, void *ud) {
  const k_head_t *h = ix;
  size_t nl = strlen(name);
  uint32_t ni = sym_find(h, name, nl, hash_str(name, nl)), li;
  int rc;
  if (ni == UINT32_MAX) return 0;
  li = name_find(h, ni);
  if (li == UINT32_MAX) return 0;
  for (uint32_t i = 0; i < h->names[li].n; i++) {
    const pair_t *p = &h->pairs[h->names[li].pairs[i]];
    if ((rc = fn(ud, h->syms[p->value].s, p->ids.v, p->ids.n))) return rc;
  }
  return 0;
}

static void hx_all(void *ix, const uint32_t **ids, size_t *n) {
  const k_head_t *h = ix;
  *ids = h->all.v;
  *n = h->all.n;
}

int k_head_label_names(const k_head_t *h, int (*fn)(void *ud, const char *name), void *ud) {
  int rc;
  for (uint32_t i = 0; i < h->nnames; i++)
    if (h->names[i].n && (rc = fn(ud, h->syms[h->names[i].name].s))) return rc;
  return 0;
}

static const k_lindex_ops_t head_lindex = {hx_postings, hx_each_value, hx_all};

const k_lindex_ops_t *k_head_lindex(void) { return &head_lindex; }

/* ---- head chunk files ---------------------------------------------------------------------- */

static int rm_dir_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char path[4096];
  if (!d) return errno == ENOENT ? 0 : -1;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    unlink(path);
  }
  closedir(d);
  return 0;
}

static int hcf_new_seg(k_head_t *h) {
  char path[4096];
  hseg_t s = {0};
  void *m;
  hseg_t *v = keel_grow(h->segs, &h->capsegs, h->nsegs, sizeof *v, 8);
  if (!v) return KEEL_ENOMEM;
  h->segs = v;
  s.seq = h->next_seq++;
  s.maxt = INT64_MIN;
  snprintf(path, sizeof path, "%s/%08u", h->hcf_dir, s.seq);
  s.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (s.fd < 0) {
    keel_log(h->log, KEEL_LOG_ERROR, "tsdb: create %s: %s", path, strerror(errno));
    return KEEL_EIO;
  }
  /* Mapped once at full size: pages past the end of the file are never
   * touched (reads stay below `flushed`). */
  m = mmap(NULL, HCF_SEG_MAX, PROT_READ, MAP_SHARED, s.fd, 0);
  if (m == MAP_FAILED) {
    keel_log(h->log, KEEL_LOG_ERROR, "tsdb: mmap %s: %s", path, strerror(errno));
    close(s.fd);
    unlink(path);
    return KEEL_EIO;
  }
  s.map = m;
  h->segs[h->nsegs++] = s;
  return 0;
}

/* Writes the pending buffer to the last file.  On failure it stays pending. */
static int hcf_flush(k_head_t *h) {
  hseg_t *s;
  size_t done = 0;
  if (!h->nsegs || !h->hbuf.len) return 0;
  s = &h->segs[h->nsegs - 1];
  while (done < h->hbuf.len) {
    ssize_t w = pwrite(s->fd, h->hbuf.p + done, h->hbuf.len - done, (off_t)(s->flushed + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      keel_log(h->log, KEEL_LOG_ERROR, "tsdb: write head chunk file %08u: %s", s->seq,
               w < 0 ? strerror(errno) : "short write");
      memmove(h->hbuf.p, h->hbuf.p + done, h->hbuf.len - done);
      h->hbuf.len -= done;
      s->flushed += done;
      return KEEL_EIO;
    }
    done += (size_t)w;
  }
  s->flushed += done;
  h->hbuf.len = 0;
  return 0;
}

static int hcf_write(k_head_t *h, const uint8_t *p, size_t len, int64_t maxt, uint64_t *ref) {
  hseg_t *s;
  size_t need = len + 10;
  int rc;
  if (!h->nsegs ||
      h->segs[h->nsegs - 1].flushed + h->hbuf.len + need > HCF_SEG_MAX) {
    if (h->nsegs && (rc = hcf_flush(h))) return rc;
    if ((rc = hcf_new_seg(h))) return rc;
  }
  s = &h->segs[h->nsegs - 1];
  if (h->hbuf.len + need > HCF_BUF_MAX) return KEEL_EIO; /* flushes keep failing */
  if ((rc = k_bytes_reserve(&h->hbuf, need))) return rc;
  *ref = (uint64_t)s->seq << REF_SHIFT | (s->flushed + h->hbuf.len);
  k_bytes_uvarint(&h->hbuf, len);
  memcpy(h->hbuf.p + h->hbuf.len, p, len);
  h->hbuf.len += len;
  if (maxt > s->maxt) s->maxt = maxt;
  if (h->hbuf.len >= HCF_BUF) (void)hcf_flush(h); /* a failure is retried next time */
  return 0;
}

static const hseg_t *seg_find(const k_head_t *h, uint32_t seq) {
  size_t lo = 0, hi = h->nsegs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (h->segs[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo < h->nsegs && h->segs[lo].seq == seq ? &h->segs[lo] : NULL;
}

static int frame(const uint8_t *p, size_t avail, const uint8_t **out, size_t *len) {
  const uint8_t *q = p;
  uint64_t n;
  if (k_get_uvarint(&q, p + avail, &n) || n > (uint64_t)(p + avail - q)) return KEEL_ECORRUPT;
  *out = q;
  *len = (size_t)n;
  return 0;
}

int k_head_chunk(const k_head_t *h, uint64_t ref, const uint8_t **p, size_t *len) {
  const hseg_t *s = seg_find(h, (uint32_t)(ref >> REF_SHIFT));
  uint64_t off = ref & ((UINT64_C(1) << REF_SHIFT) - 1);
  if (!s) return KEEL_ECORRUPT;
  if (off >= s->flushed) {
    if (s != &h->segs[h->nsegs - 1] || off - s->flushed >= h->hbuf.len) return KEEL_ECORRUPT;
    return frame(h->hbuf.p + (off - s->flushed), h->hbuf.len - (off - s->flushed), p, len);
  }
  return frame(s->map + off, s->flushed - off, p, len);
}

static void seg_close(hseg_t *s) {
  munmap((void *)s->map, HCF_SEG_MAX);
  close(s->fd);
}

/* ---- head ---------------------------------------------------------------------------------- */

int k_head_new(const char *dir, int64_t block_ms, const keel_log_t *log, k_head_t **out,
               keel_err_t *e) {
  k_head_t *h = calloc(1, sizeof *h);
  int rc = 0;
  *out = NULL;
  if (!h) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  h->log = log;
  h->block_ms = block_ms;
  h->mint = INT64_MAX;
  h->maxt = INT64_MIN;
  h->next_id = 1;
  h->next_seq = 1;
  if (asprintf(&h->hcf_dir, "%s/chunks_head", dir) < 0) {
    h->hcf_dir = NULL;
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if (mkdir(h->hcf_dir, 0700) && errno != EEXIST) {
    rc = keel_err_set(e, KEEL_EIO, "mkdir %s: %s", h->hcf_dir, strerror(errno));
    goto out;
  }
  /* Closed head chunks are rebuilt from the WAL at every open. */
  if (rm_dir_files(h->hcf_dir)) {
    rc = keel_err_set(e, KEEL_EIO, "clear %s: %s", h->hcf_dir, strerror(errno));
    goto out;
  }
  *out = h;
  h = NULL;
out:
  if (h) k_head_free(h);
  return rc;
}

static void series_free(k_hseries_t *s) {
  k_xorapp_free(&s->open);
  free(s->closed);
  free(s);
}

void k_head_free(k_head_t *h) {
  if (!h) return;
  if (h->snap) k_hsnap_free(h, h->snap);
  for (size_t i = 0; i < h->nlist; i++) series_free(h->list[i]);
  free(h->list);
  free(h->ser_slots);
  for (size_t i = 0; i < h->nidpages; i++) free(h->idpages[i]);
  free(h->idpages);
  free(h->idpage_used);
  for (uint32_t i = 0; i < h->nsyms; i++) free(h->syms[i].s);
  free(h->syms);
  free(h->sym_free);
  free(h->sym_slots);
  for (uint32_t i = 0; i < h->npairs; i++) k_plist_free(&h->pairs[i].ids);
  free(h->pairs);
  free(h->pair_slots);
  for (uint32_t i = 0; i < h->nnames; i++) free(h->names[i].pairs);
  free(h->names);
  free(h->name_slots);
  k_plist_free(&h->all);
  for (size_t i = 0; i < h->nsegs; i++) seg_close(&h->segs[i]);
  free(h->segs);
  k_bytes_free(&h->hbuf);
  free(h->hcf_dir);
  free(h);
}

static int ser_grow(k_head_t *h) {
  uint32_t n = h->ser_mask ? (h->ser_mask + 1) * 2 : 4096;
  k_hseries_t **s = calloc(n, sizeof *s);
  if (!s) return KEEL_ENOMEM;
  for (uint32_t i = 0; h->ser_slots && i <= h->ser_mask; i++) {
    k_hseries_t *x = h->ser_slots[i];
    uint32_t j;
    if (!x) continue;
    for (j = (uint32_t)x->hash & (n - 1); s[j]; j = (j + 1) & (n - 1)) {
    }
    s[j] = x;
  }
  free(h->ser_slots);
  h->ser_slots = s;
  h->ser_mask = n - 1;
  return 0;
}

static int labels_equal(const k_head_t *h, const k_hseries_t *s, const k_label_t *l, size_t n) {
  if (s->nlab != n) return 0;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(h->syms[s->lab[2 * i]].s, l[i].name) ||
        strcmp(h->syms[s->lab[2 * i + 1]].s, l[i].value))
      return 0;
  }
  return 1;
}

static int labels_check(const k_label_t *l, size_t n, keel_err_t *e) {
  size_t bytes = 0;
  if (n == 0) return keel_err_set(e, KEEL_EINVAL, "series: no labels");
  if (n > MAX_LABELS) return keel_err_set(e, KEEL_EINVAL, "series: over %d labels", MAX_LABELS);
  for (size_t i = 0; i < n; i++) {
    if (!l[i].name || !l[i].value) return keel_err_set(e, KEEL_EINVAL, "series: NULL label");
    if (!k_label_name_ok(l[i].name))
      return keel_err_set(e, KEEL_EINVAL, "series: invalid label name \"%.64s\"", l[i].name);
    if (!l[i].value[0])
      return keel_err_set(e, KEEL_EINVAL, "series: label %s has an empty value", l[i].name);
    if (i && strcmp(l[i - 1].name, l[i].name) >= 0)
      return keel_err_set(e, KEEL_EINVAL, "series: labels not sorted or repeated at %s",
                          l[i].name);
    bytes += strlen(l[i].name) + strlen(l[i].value);
  }
  if (bytes > MAX_LABEL_BYTES)
    return keel_err_set(e, KEEL_EINVAL, "series: labels over %d bytes", MAX_LABEL_BYTES);
  for (size_t i = 0; i < n; i++)
    if (!strcmp(l[i].name, "__name__")) {
      const char *m = l[i].value;
      if (!((*m >= 'a' && *m <= 'z') || (*m >= 'A' && *m <= 'Z') || *m == '_' || *m == ':'))
        goto badname;
      for (m++; *m; m++)
        if (!((*m >= 'a' && *m <= 'z') || (*m >= 'A' && *m <= 'Z') || (*m >= '0' && *m <= '9') ||
              *m == '_' || *m == ':'))
          goto badname;
      return 0;
    badname:
      return keel_err_set(e, KEEL_EINVAL, "series: invalid metric name \"%.64s\"", l[i].value);
    }
  return keel_err_set(e, KEEL_EINVAL, "series: no __name__ label");
}

int k_head_get_or_create(k_head_t *h, const k_label_t *l, size_t n, uint32_t id,
                         k_hseries_t **out, int *created, keel_err_t *e) {
  uint64_t hash = k_labels_hash(l, n);
  k_hseries_t *s = NULL;
  uint32_t j;
  size_t nlab_done = 0;
  int rc;

  *created = 0;
  if (h->ser_slots)
    for (j = (uint32_t)hash & h->ser_mask; h->ser_slots[j]; j = (j + 1) & h->ser_mask) {
      k_hseries_t *x = h->ser_slots[j];
      if (x->hash == hash && labels_equal(h, x, l, n)) {
        if (id && x->id != id)
          return keel_err_set(e, KEEL_ECONFLICT, "series %u: labels already used by series %u",
                              id, x->id);
        *out = x;
        return 0;
      }
    }
  if ((rc = labels_check(l, n, e))) return rc;
  if (id && k_head_by_id(h, id))
    return keel_err_set(e, KEEL_ECONFLICT, "series %u: id already used by other labels", id);
  if (!id) {
    if (h->next_id == UINT32_MAX) return keel_err_set(e, KEEL_ETOOBIG, "series ids exhausted");
    id = h->next_id;
  }
  if (!h->ser_slots || (h->ser_used + 1) * 4 > (h->ser_mask + 1) * 3)
    if (ser_grow(h)) goto oom;
  k_hseries_t **v = keel_grow(h->list, &h->caplist, h->nlist, sizeof *v, 4096);
  if (!v) goto oom;
  h->list = v;
  s = calloc(1, sizeof *s + 2 * n * sizeof(uint32_t));
  if (!s) goto oom;
  s->hash = hash;
  s->id = id;
  s->nlab = (uint16_t)n;
  s->last_t = INT64_MIN;
  for (; nlab_done < n; nlab_done++) {
    uint32_t a = sym_ref(h, l[nlab_done].name), b;
    if (a == UINT32_MAX) goto oom;
    b = sym_ref(h, l[nlab_done].value);
    if (b == UINT32_MAX) {
      sym_unref(h, a);
      goto oom;
    }
    s->lab[2 * nlab_done] = a;
    s->lab[2 * nlab_done + 1] = b;
  }
  if (idmap_set(h, id, s)) goto oom;
  for (size_t i = 0; i < n; i++) {
    uint32_t pi;
    if (pair_get(h, s->lab[2 * i], s->lab[2 * i + 1], &pi) || plist_insert(&h->pairs[pi].ids, id)) {
      /* postings partly added: they are filtered by the id map on the
       * next rebuild; undo the id map entry so they point at nothing */
      idmap_del(h, id);
      goto oom;
    }
  }
  if (plist_insert(&h->all, id)) {
    idmap_del(h, id);
    goto oom;
  }
  for (j = (uint32_t)hash & h->ser_mask; h->ser_slots[j]; j = (j + 1) & h->ser_mask) {
  }
  h->ser_slots[j] = s;
  h->ser_used++;
  h->list[h->nlist++] = s;
  if (id >= h->next_id) h->next_id = id + 1;
  *out = s;
  *created = 1;
  return 0;
oom:
  if (s) {
    for (size_t i = 0; i < nlab_done; i++) {
      sym_unref(h, s->lab[2 * i]);
      sym_unref(h, s->lab[2 * i + 1]);
    }
    free(s);
  }
  return keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

void k_head_find_many(const k_head_t *h, const k_labels_t *sets, const uint64_t *hashes, size_t n,
                      k_hseries_t **out) {
  enum { D = 6 }; /* lookups in flight per stage */
  if (!h->ser_slots) {
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    return;
  }
  /* stage 1 fetches the home slot, 2 the series in it, 3 its symbols,
   * 4 compares */
  for (size_t i = 0; i < n + 3 * D; i++) {
    if (i < n) __builtin_prefetch(&h->ser_slots[(uint32_t)hashes[i] & h->ser_mask]);
    if (i >= D && i - D < n) {
      const k_hseries_t *x = h->ser_slots[(uint32_t)hashes[i - D] & h->ser_mask];
      if (x) __builtin_prefetch(x);
    }
    if (i >= 2 * D && i - 2 * D < n) {
      const k_hseries_t *x = h->ser_slots[(uint32_t)hashes[i - 2 * D] & h->ser_mask];
      if (x && x->hash == hashes[i - 2 * D])
        for (uint32_t k = 0; k < 2u * x->nlab; k++) __builtin_prefetch(&h->syms[x->lab[k]]);
    }
    if (i >= 3 * D) {
      size_t k = i - 3 * D;
      uint64_t hash = hashes[k];
      out[k] = NULL;
      for (uint32_t j = (uint32_t)hash & h->ser_mask; h->ser_slots[j]; j = (j + 1) & h->ser_mask) {
        k_hseries_t *x = h->ser_slots[j];
        if (x->hash == hash && labels_equal(h, x, sets[k].v, sets[k].n)) {
          out[k] = x;
          break;
        }
      }
    }
  }
}

void k_head_bump_next_id(k_head_t *h, uint32_t id) {
  if (id >= h->next_id && id < UINT32_MAX) h->next_id = id + 1;
}

size_t k_head_nseries(const k_head_t *h) { return h->nlist; }
k_hseries_t *k_head_series_at(const k_head_t *h, size_t i) { return h->list[i]; }
int64_t k_head_mint(const k_head_t *h) { return h->mint; }
int64_t k_head_maxt(const k_head_t *h) { return h->maxt; }

static int64_t chunk_end(int64_t mint, int64_t block) {
  int64_t q = mint / block, r;
  if (mint % block < 0) q--;
  if (__builtin_mul_overflow(q, block, &r) || __builtin_add_overflow(r, block, &r))
    return INT64_MAX;
  return r;
}

static int close_chunk(k_head_t *h, k_hseries_t *s) {
  size_t bytes = k_xorapp_bytes(&s->open), fit = bytes + bytes / 8 + 24;
  uint64_t ref;
  int rc;
  if (s->nclosed == s->capclosed) {
    /* +4: a series holds about 9 closed chunks at most (3 h at 10 s) */
    uint32_t cap = s->capclosed + 4;
    k_hcref_t *c = realloc(s->closed, cap * sizeof *c);
    if (!c) return KEEL_ENOMEM;
    s->closed = c;
    s->capclosed = cap;
  }
  if ((rc = hcf_write(h, s->open.buf, bytes, s->open.t, &ref))) return rc;
  s->closed[s->nclosed++] = (k_hcref_t){s->open.mint, ref};
  k_xorapp_reset(&s->open);
  /* Keep the buffer for the next chunk, which will need about as much:
   * trimmed to this one's size plus an eighth, or given back when it is
   * unusually big. */
  if (s->open.cap > 2048) {
    free(s->open.buf);
    s->open.buf = NULL;
    s->open.cap = 0;
  } else if (s->open.cap > fit + fit / 4) {
    uint8_t *p = realloc(s->open.buf, fit);
    if (p) {
      s->open.buf = p;
      s->open.cap = (uint32_t)fit;
    }
  }
  return 0;
}

int k_head_append(k_head_t *h, k_hseries_t *s, int64_t t, double v) {
  int rc;
  if (s->open.n && (s->open.n >= K_HEAD_CHUNK_SAMPLES || t >= s->open_end || t < s->open.t)) {
    /* (t < open.t only when the caller broke the contract: a new chunk
     * keeps each chunk ordered at least) */
    if ((rc = close_chunk(h, s))) return rc;
  }
  if (!s->open.n) s->open_end = chunk_end(t, h->block_ms);
  if ((rc = k_xorapp_add(&s->open, t, v))) return rc;
  if (t > h->maxt) h->maxt = t;
  if (t < h->mint) h->mint = t;
  return 0;
}

/* ---- stats --------------------------------------------------------------------------------- */

void k_head_stats(const k_head_t *h, k_head_stats_t *o) {
  uint64_t mem = sizeof *h;
  memset(o, 0, sizeof *o);
  o->series = h->nlist;
  for (size_t i = 0; i < h->nlist; i++) {
    const k_hseries_t *s = h->list[i];
    mem += sizeof *s + 2u * s->nlab * sizeof(uint32_t) + s->open.cap +
           s->capclosed * sizeof(k_hcref_t);
    o->chunks += s->nclosed + (s->open.n ? 1 : 0);
  }
  mem += (uint64_t)h->caplist * sizeof *h->list;
  mem += h->ser_slots ? (uint64_t)(h->ser_mask + 1) * sizeof *h->ser_slots : 0;
  for (size_t i = 0; i < h->nidpages; i++)
    mem += sizeof *h->idpages + sizeof *h->idpage_used + (h->idpages[i] ? IDPAGE * sizeof(void *) : 0);
  for (uint32_t i = 0; i < h->nsyms; i++) mem += h->syms[i].s ? h->syms[i].len + 1 : 0;
  mem += (uint64_t)h->capsyms * sizeof *h->syms + (uint64_t)h->capsym_free * sizeof(uint32_t);
  mem += h->sym_slots ? (uint64_t)(h->sym_mask + 1) * 4 : 0;
  for (uint32_t i = 0; i < h->npairs; i++) mem += h->pairs[i].ids.cap * sizeof(uint32_t);
  mem += (uint64_t)h->cappairs * sizeof *h->pairs;
  mem += h->pair_slots ? (uint64_t)(h->pair_mask + 1) * 4 : 0;
  for (uint32_t i = 0; i < h->nnames; i++) mem += h->names[i].cap * sizeof(uint32_t);
  mem += (uint64_t)h->capnames * sizeof *h->names + (h->name_slots ? (h->name_mask + 1) * 4u : 0);
  mem += h->all.cap * sizeof(uint32_t) + h->hbuf.cap + h->capsegs * sizeof *h->segs;
  o->mem_bytes = mem;
  for (size_t i = 0; i < h->nsegs; i++) o->file_bytes += h->segs[i].flushed;
  o->file_bytes += h->hbuf.len;
  o->symbols = h->sym_used;
}

/* ---- cut ----------------------------------------------------------------------------------- */

int k_head_snapshot(k_head_t *h, int64_t upto, k_hsnap_t **out, keel_err_t *e) {
  k_hsnap_t *sn = NULL;
  size_t ns = 0, nr = 0;
  int rc;

  *out = NULL;
  if (h->snap) return keel_err_set(e, KEEL_EAGAIN, "tsdb: a block cut is already running");
  /* quiet series: an open chunk wholly before upto goes with the cut */
  for (size_t i = 0; i < h->nlist; i++) {
    k_hseries_t *s = h->list[i];
    if (s->open.n && s->open.t < upto && (rc = close_chunk(h, s)))
      return keel_err_set(e, rc, "tsdb: closing head chunks: %s", keel_strerror(rc));
  }
  if ((rc = hcf_flush(h))) return keel_err_set(e, rc, "tsdb: head chunk files: write failed");
  for (size_t i = 0; i < h->nlist; i++) {
    const k_hseries_t *s = h->list[i];
    size_t k = 0;
    while (k < s->nclosed && s->closed[k].mint < upto) k++;
    if (k) {
      ns++;
      nr += k;
    }
  }
  sn = calloc(1, sizeof *sn);
  if (!sn) goto oom;
  sn->upto = upto;
  sn->series = malloc((ns ? ns : 1) * sizeof *sn->series);
  sn->first = malloc((ns + 1) * sizeof *sn->first);
  sn->refs = malloc((nr ? nr : 1) * sizeof *sn->refs);
  sn->sym = malloc((h->nsyms ? h->nsyms : 1) * sizeof *sn->sym);
  sn->seg_seq = malloc((h->nsegs ? h->nsegs : 1) * sizeof *sn->seg_seq);
  sn->seg_base = malloc((h->nsegs ? h->nsegs : 1) * sizeof *sn->seg_base);
  sn->live = malloc((h->nlist ? h->nlist : 1) * sizeof *sn->live);
  if (!sn->series || !sn->first || !sn->refs || !sn->sym || !sn->seg_seq || !sn->seg_base ||
      !sn->live)
    goto oom;
  if (h->nlist) memcpy(sn->live, h->list, h->nlist * sizeof *sn->live);
  sn->nlive = h->nlist;
  if (nr > UINT32_MAX) {
    k_hsnap_free(h, sn);
    return keel_err_set(e, KEEL_ETOOBIG, "tsdb: too many chunks for one cut");
  }
  for (size_t i = 0; i < h->nlist; i++) {
    k_hseries_t *s = h->list[i];
    size_t k = 0;
    while (k < s->nclosed && s->closed[k].mint < upto) k++;
    if (!k) continue;
    sn->first[sn->nseries] = (uint32_t)sn->nrefs;
    sn->series[sn->nseries++] = s;
    for (size_t j = 0; j < k; j++) sn->refs[sn->nrefs++] = s->closed[j].ref;
  }
  sn->first[sn->nseries] = (uint32_t)sn->nrefs;
  for (uint32_t i = 0; i < h->nsyms; i++) sn->sym[i] = h->syms[i].s;
  sn->nsym = h->nsyms;
  for (size_t i = 0; i < h->nsegs; i++) {
    sn->seg_seq[i] = h->segs[i].seq;
    sn->seg_base[i] = h->segs[i].map;
  }
  sn->nseg = h->nsegs;
  h->snap = sn;
  *out = sn;
  return 0;
oom:
  k_hsnap_free(NULL, sn);
  return keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

int k_hsnap_chunk(const k_hsnap_t *s, uint64_t ref, const uint8_t **p, size_t *len) {
  uint32_t seq = (uint32_t)(ref >> REF_SHIFT);
  uint64_t off = ref & ((UINT64_C(1) << REF_SHIFT) - 1);
  size_t lo = 0, hi = s->nseg;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->seg_seq[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  if (lo >= s->nseg || s->seg_seq[lo] != seq || off >= HCF_SEG_MAX) return KEEL_ECORRUPT;
  /* every chunk a snapshot names was flushed before it was made */
  return frame(s->seg_base[lo] + off, (size_t)(HCF_SEG_MAX - off), p, len);
}

void k_hsnap_free(k_head_t *h, k_hsnap_t *sn) {
  if (!sn) return;
  if (h && h->snap == sn) h->snap = NULL;
  free(sn->series);
  free(sn->first);
  free(sn->refs);
  free(sn->sym);
  free(sn->seg_seq);
  free(sn->seg_base);
  free(sn->live);
  free(sn);
}

void k_head_truncate(k_head_t *h, k_hsnap_t *sn) {
  int64_t upto = sn->upto;
  for (size_t i = 0; i < sn->nseries; i++) {
    k_hseries_t *s = sn->series[i];
    uint32_t k = sn->first[i + 1] - sn->first[i];
    /* the head only appended since the snapshot: its first k chunks are
     * the snapshot's */
    memmove(s->closed, s->closed + k, (s->nclosed - k) * sizeof *s->closed);
    s->nclosed -= k;
    if (s->nclosed == 0 && s->capclosed > 8) {
      free(s->closed);
      s->closed = NULL;
      s->capclosed = 0;
    }
  }
  /* files holding only cut chunks (never the one being written) */
  {
    size_t w = 0;
    for (size_t i = 0; i < h->nsegs; i++) {
      hseg_t *s = &h->segs[i];
      if (i + 1 < h->nsegs && s->maxt < upto) {
        char path[4096];
        seg_close(s);
        snprintf(path, sizeof path, "%s/%08u", h->hcf_dir, s->seq);
        unlink(path);
        continue;
      }
      h->segs[w++] = *s;
    }
    h->nsegs = w;
  }
  k_hsnap_free(h, sn);
  if (h->mint < upto) h->mint = upto;
  k_head_gc(h, upto);
}

void k_head_gc(k_head_t *h, int64_t before) {
  size_t w = 0, dead = 0;
  if (h->snap) return; /* a snapshot pins every series */
  for (size_t i = 0; i < h->nlist; i++) {
    k_hseries_t *s = h->list[i];
    if (s->nclosed || s->open.n || (s->last_t != INT64_MIN && s->last_t >= before)) {
      h->list[w++] = s;
      continue;
    }
    /* unlink from the hash table (backward shift) */
    {
      uint32_t a, b;
      for (a = (uint32_t)s->hash & h->ser_mask; h->ser_slots[a] != s; a = (a + 1) & h->ser_mask) {
      }
      h->ser_slots[a] = NULL;
      for (b = (a + 1) & h->ser_mask; h->ser_slots[b]; b = (b + 1) & h->ser_mask) {
        uint32_t k = (uint32_t)h->ser_slots[b]->hash & h->ser_mask;
        if ((b > a && (k <= a || k > b)) || (b < a && k <= a && k > b)) {
          h->ser_slots[a] = h->ser_slots[b];
          h->ser_slots[b] = NULL;
          a = b;
        }
      }
      h->ser_used--;
    }
    idmap_del(h, s->id);
    for (uint32_t j = 0; j < 2u * s->nlab; j++) sym_unref(h, s->lab[j]);
    series_free(s);
    dead++;
  }
  h->nlist = w;
  if (dead && index_rebuild(h))
    keel_log(h->log, KEEL_LOG_ERROR, "tsdb: out of memory rebuilding the head index");
  if (!h->nlist) {
    h->mint = INT64_MAX;
    h->maxt = INT64_MIN;
  }
}
