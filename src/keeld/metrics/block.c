/* block.c — writing, reading and compacting blocks; see block.h. */
#define _GNU_SOURCE
#include "metrics/block.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/grow.h"
#include "metrics/chunk.h"
#include "metrics/enc.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "block postings are used in place as little-endian u32 arrays");

#define IX_MAGIC 0x4953544bu /* "KTSI" */
#define IX_END 0x4553544bu   /* "KTSE" */
#define CH_MAGIC 0x4353544bu /* "KTSC" */
#define VERSION 1u
#define TRAILER 64
#define CH_FLUSH (4u << 20)
#define MAX_LAB 256

/* ---- samples ------------------------------------------------------------------------- */

int k_samples_reserve(k_samples_t *s, size_t n) {
  size_t cap;
  int64_t *t;
  double *v;
  if (n <= s->cap) return 0;
  cap = s->cap ? s->cap : 256;
  while (cap < n) cap *= 2;
  t = realloc(s->t, cap * sizeof *t);
  if (!t) return KEEL_ENOMEM;
  s->t = t;
  v = realloc(s->v, cap * sizeof *v);
  if (!v) return KEEL_ENOMEM;
  s->v = v;
  s->cap = cap;
  return 0;
}

void k_samples_free(k_samples_t *s) {
  free(s->t);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* ---- reading ------------------------------------------------------------------------- */

struct k_block {
  atomic_int refs;
  atomic_int doomed;
  char *path;
  const keel_log_t *log;
  const uint8_t *ix, *ch;
  size_t ixlen, chlen, end; /* end: start of the index trailer */
  uint64_t symtab_off, sertab_off, names_off, all_off, nseries;
  uint32_t nsym, nnames;
  k_block_meta_t meta;
};

static int map_file(const char *dir, const char *name, const uint8_t **m, size_t *len,
                    uint64_t *bytes, keel_err_t *e) {
  char path[4096];
  struct stat st;
  int fd;
  void *p;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return keel_err_set(e, KEEL_EIO, "open %s: %s", path, strerror(errno));
  if (fstat(fd, &st) || st.st_size < 8) {
    close(fd);
    return keel_err_set(e, KEEL_ECORRUPT, "%s: missing or too short", path);
  }
  p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return keel_err_set(e, KEEL_EIO, "mmap %s: %s", path, strerror(errno));
  *m = p;
  *len = (size_t)st.st_size;
  *bytes += (uint64_t)st.st_size;
  return 0;
}

static int read_meta(const char *dir, k_block_meta_t *m, keel_err_t *e) {
  char path[4096];
  json_error_t je;
  json_t *j;
  struct stat st;
  int rc = 0;
  snprintf(path, sizeof path, "%s/meta.json", dir);
  j = json_load_file(path, 0, &je);
  if (!j) return keel_err_set(e, KEEL_ECORRUPT, "%s: %s", path, je.text);
  if (json_integer_value(json_object_get(j, "version")) != VERSION ||
      !json_is_integer(json_object_get(j, "mint")) || !json_is_integer(json_object_get(j, "maxt"))) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s: not a version %u block meta", path, VERSION);
    goto out;
  }
  m->mint = json_integer_value(json_object_get(j, "mint"));
  m->maxt = json_integer_value(json_object_get(j, "maxt"));
  m->level = (uint32_t)json_integer_value(json_object_get(j, "level"));
  m->nseries = (uint64_t)json_integer_value(json_object_get(j, "series"));
  m->nchunks = (uint64_t)json_integer_value(json_object_get(j, "chunks"));
  m->nsamples = (uint64_t)json_integer_value(json_object_get(j, "samples"));
  if (m->maxt <= m->mint) rc = keel_err_set(e, KEEL_ECORRUPT, "%s: empty time range", path);
  if (stat(path, &st) == 0) m->bytes += (uint64_t)st.st_size;
out:
  json_decref(j);
  return rc;
}

static inline const char *sym_at(const k_block_t *b, uint32_t i) {
  return (const char *)b->ix + k_get_u32(b->ix + b->symtab_off + 4 * (uint64_t)i);
}

int k_block_open(const char *path, const keel_log_t *log, k_block_t **out, keel_err_t *e) {
  k_block_t *b = calloc(1, sizeof *b);
  const uint8_t *t;
  int rc;
  *out = NULL;
  if (!b) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  atomic_init(&b->refs, 1);
  atomic_init(&b->doomed, 0);
  b->log = log;
  b->path = strdup(path);
  if (!b->path) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = read_meta(path, &b->meta, e)) || (rc = map_file(path, "index", &b->ix, &b->ixlen, &b->meta.bytes, e)) ||
      (rc = map_file(path, "chunks", &b->ch, &b->chlen, &b->meta.bytes, e)))
    goto out;
  if (b->ixlen < 8 + TRAILER || k_get_u32(b->ix) != IX_MAGIC || k_get_u32(b->ix + 4) != VERSION ||
      k_get_u32(b->ch) != CH_MAGIC || k_get_u32(b->ch + 4) != VERSION) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s: not a version %u block", path, VERSION);
    goto out;
  }
  b->end = b->ixlen - TRAILER;
  t = b->ix + b->end;
  if (k_get_u32(t + 60) != IX_END || k_crc32c(0, b->ix, b->end) != k_get_u32(t + 56)) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s/index: checksum mismatch", path);
    goto out;
  }
  b->symtab_off = k_get_u64(t);
  b->nsym = k_get_u32(t + 8);
  b->nnames = k_get_u32(t + 12);
  b->sertab_off = k_get_u64(t + 16);
  b->nseries = k_get_u64(t + 24);
  b->names_off = k_get_u64(t + 32);
  b->all_off = k_get_u64(t + 40);
  if (b->symtab_off > b->end || b->nsym > (b->end - b->symtab_off) / 4 ||
      b->sertab_off > b->end || b->nseries > (b->end - b->sertab_off) / 8 ||
      b->names_off > b->end || b->nnames > (b->end - b->names_off) / 16 ||
      b->all_off > b->end - 4 || b->nseries > UINT32_MAX ||
      k_get_u32(b->ix + b->all_off) != b->nseries ||
      b->nseries > (b->end - b->all_off - 4) / 4 || (b->all_off & 3)) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s/index: bad section offsets", path);
    goto out;
  }
  for (uint32_t i = 0; i < b->nsym; i++) {
    uint32_t off = k_get_u32(b->ix + b->symtab_off + 4 * (uint64_t)i);
    if (off >= b->end || !memchr(b->ix + off, 0, b->end - off)) {
      rc = keel_err_set(e, KEEL_ECORRUPT, "%s/index: bad symbol %u", path, i);
      goto out;
    }
  }
  *out = b;
  b = NULL;
out:
  if (b) k_block_unref(b);
  return rc;
}

void k_block_ref(k_block_t *b) { atomic_fetch_add(&b->refs, 1); }

void k_block_unref(k_block_t *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
  if (b->ix) munmap((void *)b->ix, b->ixlen);
  if (b->ch) munmap((void *)b->ch, b->chlen);
  free(b->path);
  free(b);
}

int k_block_rmdir(const char *path) {
  DIR *d = opendir(path);
  struct dirent *de;
  char p[4096];
  if (!d) return errno == ENOENT ? 0 : -1;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", path, de->d_name);
    unlink(p);
  }
  closedir(d);
  return rmdir(path);
}

void k_block_doom(k_block_t *b) {
  if (atomic_exchange(&b->doomed, 1)) return;
  if (k_block_rmdir(b->path))
    keel_log(b->log, KEEL_LOG_ERROR, "tsdb: remove block %s: %s", b->path, strerror(errno));
}

const k_block_meta_t *k_block_meta(const k_block_t *b) { return &b->meta; }
const char *k_block_path(const k_block_t *b) { return b->path; }
size_t k_block_nsyms(const k_block_t *b) { return b->nsym; }
const char *k_block_sym(const k_block_t *b, uint32_t i) { return sym_at(b, i); }

static uint32_t sym_lookup(const k_block_t *b, const char *s) {
  uint32_t lo = 0, hi = b->nsym;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    int c = strcmp(sym_at(b, mid), s);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return UINT32_MAX;
}

/* Series entry of ref: pointer past its labels when lab is NULL. */
static int series_entry(const k_block_t *b, uint32_t ref, const uint8_t **p, const uint8_t **end) {
  uint64_t off;
  if (ref >= b->nseries) return KEEL_ECORRUPT;
  off = k_get_u64(b->ix + b->sertab_off + 8 * (uint64_t)ref);
  if (off >= b->end) return KEEL_ECORRUPT;
  *p = b->ix + off;
  *end = b->ix + b->end;
  return 0;
}

int k_block_label_ids(const k_block_t *b, uint32_t ref, uint32_t *lab, size_t cap, size_t *n) {
  const uint8_t *p, *end;
  uint64_t nl, x;
  if (series_entry(b, ref, &p, &end) || k_get_uvarint(&p, end, &nl) || nl > cap) return KEEL_ECORRUPT;
  for (uint64_t i = 0; i < 2 * nl; i++) {
    if (k_get_uvarint(&p, end, &x) || x >= b->nsym) return KEEL_ECORRUPT;
    lab[i] = (uint32_t)x;
  }
  *n = (size_t)nl;
  return 0;
}

int k_block_labels(const k_block_t *b, uint32_t ref, k_label_t *lab, size_t cap, size_t *n) {
  uint32_t ids[2 * MAX_LAB];
  size_t nl;
  int rc = k_block_label_ids(b, ref, ids, cap < MAX_LAB ? cap : MAX_LAB, &nl);
  if (rc) return rc;
  for (size_t i = 0; i < nl; i++) {
    lab[i].name = sym_at(b, ids[2 * i]);
    lab[i].value = sym_at(b, ids[2 * i + 1]);
  }
  *n = nl;
  return 0;
}

int k_block_samples(const k_block_t *b, uint32_t ref, int64_t mint, int64_t maxt, k_samples_t *out,
                    keel_err_t *e) {
  const uint8_t *p, *end;
  uint64_t nl, x, nch, off = 0;
  int64_t cmint = 0, cmaxt = 0;
  int rc;
  if (series_entry(b, ref, &p, &end) || k_get_uvarint(&p, end, &nl)) goto corrupt;
  for (uint64_t i = 0; i < 2 * nl; i++)
    if (k_get_uvarint(&p, end, &x)) goto corrupt;
  if (k_get_uvarint(&p, end, &nch)) goto corrupt;
  for (uint64_t i = 0; i < nch; i++) {
    uint64_t a, d, o, len;
    const uint8_t *c;
    size_t cnt, got, base = out->n, w;
    if (i == 0) {
      int64_t m;
      if (k_get_varint(&p, end, &m) || k_get_uvarint(&p, end, &d) || k_get_uvarint(&p, end, &o))
        goto corrupt;
      cmint = m;
      off = o;
    } else {
      if (k_get_uvarint(&p, end, &a) || k_get_uvarint(&p, end, &d) || k_get_uvarint(&p, end, &o))
        goto corrupt;
      cmint = (int64_t)((uint64_t)cmaxt + a);
      off += o;
    }
    cmaxt = (int64_t)((uint64_t)cmint + d);
    if (cmaxt < mint || cmint > maxt) continue;
    if (off >= b->chlen) goto corrupt;
    c = b->ch + off;
    if (k_get_uvarint(&c, b->ch + b->chlen, &len) || len + 4 > (uint64_t)(b->ch + b->chlen - c))
      goto corrupt;
    if (k_crc32c(0, c, (size_t)len) != k_get_u32(c + len))
      return keel_err_set(e, KEEL_ECORRUPT, "%s/chunks: checksum mismatch at %llu", b->path,
                          (unsigned long long)off);
    if (k_chunk_count(c, (size_t)len, &cnt)) goto corrupt;
    if ((rc = k_samples_reserve(out, out->n + cnt))) return keel_err_set(e, rc, "out of memory");
    if (k_chunk_decode(c, (size_t)len, out->t + base, out->v + base, cnt, &got)) goto corrupt;
    w = base;
    for (size_t j = base; j < base + got; j++)
      if (out->t[j] >= mint && out->t[j] <= maxt) {
        out->t[w] = out->t[j];
        out->v[w++] = out->v[j];
      }
    out->n = w;
  }
  return 0;
corrupt:
  return keel_err_set(e, KEEL_ECORRUPT, "%s: series %u does not decode", b->path, ref);
}

/* ---- label index -------------------------------------------------------------------------------- */

static const uint8_t *name_entry(const k_block_t *b, uint32_t nsym) {
  uint32_t lo = 0, hi = b->nnames;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    const uint8_t *e = b->ix + b->names_off + 16 * (uint64_t)mid;
    uint32_t s = k_get_u32(e);
    if (s == nsym) return e;
    if (s < nsym) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static int plist_at(const k_block_t *b, uint64_t off, const uint32_t **ids, size_t *n) {
  uint32_t cnt;
  if (off > b->end - 4 || (off & 3)) return -1;
  cnt = k_get_u32(b->ix + off);
  if (cnt > (b->end - off - 4) / 4) return -1;
  *ids = (const uint32_t *)(const void *)(b->ix + off + 4);
  *n = cnt;
  return 0;
}

/* The values array of a name entry, checked. */
static int values_of(const k_block_t *b, const uint8_t *ne, const uint8_t **vals, uint32_t *nv) {
  uint64_t off = k_get_u64(ne + 8);
  *nv = k_get_u32(ne + 4);
  if (off > b->end || *nv > (b->end - off) / 12) return -1;
  *vals = b->ix + off;
  return 0;
}

static void bx_postings(void *ix, const char *name, const char *value, const uint32_t **ids,
                        size_t *n) {
  const k_block_t *b = ix;
  uint32_t ns = sym_lookup(b, name), vs, nv, lo = 0, hi;
  const uint8_t *ne, *vals;
  *ids = NULL;
  *n = 0;
  if (ns == UINT32_MAX || !(ne = name_entry(b, ns))) return;
  vs = sym_lookup(b, value);
  if (vs == UINT32_MAX || values_of(b, ne, &vals, &nv)) return;
  hi = nv;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2, s = k_get_u32(vals + 12 * (uint64_t)mid);
    if (s == vs) {
      if (plist_at(b, k_get_u64(vals + 12 * (uint64_t)mid + 4), ids, n)) *n = 0;
      return;
    }
    if (s < vs) lo = mid + 1;
    else hi = mid;
  }
}

static int bx_each_value(void *ix, const char *name, k_value_fn fn, void *ud) {
  const k_block_t *b = ix;
  uint32_t ns = sym_lookup(b, name), nv;
  const uint8_t *ne, *vals;
  int rc;
  if (ns == UINT32_MAX || !(ne = name_entry(b, ns)) || values_of(b, ne, &vals, &nv)) return 0;
  for (uint32_t i = 0; i < nv; i++) {
    const uint32_t *ids;
    size_t n;
    uint32_t vs = k_get_u32(vals + 12 * (uint64_t)i);
    if (vs >= b->nsym || plist_at(b, k_get_u64(vals + 12 * (uint64_t)i + 4), &ids, &n)) continue;
    if ((rc = fn(ud, sym_at(b, vs), ids, n))) return rc;
  }
  return 0;
}

static void bx_all(void *ix, const uint32_t **ids, size_t *n) {
  const k_block_t *b = ix;
  if (plist_at(b, b->all_off, ids, n)) *n = 0;
}

int k_block_label_names(const k_block_t *b, int (*fn)(void *ud, const char *name), void *ud) {
  int rc;
  for (uint32_t i = 0; i < b->nnames; i++) {
    uint32_t s = k_get_u32(b->ix + b->names_off + 16 * (uint64_t)i);
    if (s < b->nsym && (rc = fn(ud, sym_at(b, s)))) return rc;
  }
  return 0;
}

static const k_lindex_ops_t block_lindex = {bx_postings, bx_each_value, bx_all};
const k_lindex_ops_t *k_block_lindex(void) { return &block_lindex; }

/* ---- writing ----------------------------------------------------------------------------------- */

typedef struct ppair {
  uint64_t key; /* name << 32 | value */
  k_plist_t ids;
} ppair_t;

struct k_bwriter {
  const keel_log_t *log;
  char *blocks_dir, *tmp, *final;
  int64_t mint, maxt;
  uint32_t level;
  const char *const *syms;
  size_t nsym;
  int chfd, crash;
  k_bytes_t chbuf, packbuf;
  uint64_t choff; /* bytes of chunks written or buffered */
  k_bytes_t series;
  uint64_t *seroff;
  size_t nser, capser;
  ppair_t *pairs;
  uint32_t npairs, cappairs;
  uint32_t *slots; /* pair index + 1 */
  uint32_t mask;
  uint64_t nchunks, nsamples;
};

void k_bw_set_crash_point(k_bwriter_t *w, int step) { w->crash = step; }

static void bw_free(k_bwriter_t *w) {
  if (w->chfd >= 0) close(w->chfd);
  k_bytes_free(&w->chbuf);
  k_bytes_free(&w->packbuf);
  k_bytes_free(&w->series);
  free(w->seroff);
  for (uint32_t i = 0; i < w->npairs; i++) k_plist_free(&w->pairs[i].ids);
  free(w->pairs);
  free(w->slots);
  free(w->blocks_dir);
  free(w->tmp);
  free(w->final);
  free(w);
}

int k_bw_open(const char *blocks_dir, int64_t mint, int64_t maxt, uint32_t level,
              const char *const *syms, size_t nsym, const keel_log_t *log, k_bwriter_t **out,
              keel_err_t *e) {
  k_bwriter_t *w = calloc(1, sizeof *w);
  char path[4096];
  uint8_t hdr[8];
  int rc = 0;
  *out = NULL;
  if (!w) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  w->chfd = -1;
  w->log = log;
  w->mint = mint;
  w->maxt = maxt;
  w->level = level;
  w->syms = syms;
  w->nsym = nsym;
  if (nsym > UINT32_MAX / 2) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "block: too many symbols");
    goto out;
  }
  if (!(w->blocks_dir = strdup(blocks_dir)) ||
      asprintf(&w->final, "%s/%lld_%lld", blocks_dir, (long long)mint, (long long)maxt) < 0 ||
      asprintf(&w->tmp, "%s.tmp", w->final) < 0) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  k_block_rmdir(w->tmp);
  if (mkdir(w->tmp, 0700)) {
    rc = keel_err_set(e, KEEL_EIO, "mkdir %s: %s", w->tmp, strerror(errno));
    goto out;
  }
  snprintf(path, sizeof path, "%s/chunks", w->tmp);
  w->chfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (w->chfd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "create %s: %s", path, strerror(errno));
    goto out;
  }
  k_put_u32(hdr, CH_MAGIC);
  k_put_u32(hdr + 4, VERSION);
  if ((rc = k_bytes_append(&w->chbuf, hdr, 8))) {
    keel_err_set(e, rc, "out of memory");
    goto out;
  }
  w->choff = 8;
  *out = w;
  w = NULL;
out:
  if (w) {
    if (w->tmp) k_block_rmdir(w->tmp);
    bw_free(w);
  }
  return rc;
}

static int pairs_grow(k_bwriter_t *w) {
  uint32_t n = w->mask ? (w->mask + 1) * 2 : 1024, *s = calloc(n, sizeof *s);
  if (!s) return KEEL_ENOMEM;
  for (uint32_t i = 0; i < w->npairs; i++) {
    uint32_t j;
    for (j = (uint32_t)((w->pairs[i].key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & (n - 1); s[j];
         j = (j + 1) & (n - 1)) {
    }
    s[j] = i + 1;
  }
  free(w->slots);
  w->slots = s;
  w->mask = n - 1;
  return 0;
}

static int posting_add(k_bwriter_t *w, uint32_t name, uint32_t value, uint32_t ref) {
  uint64_t key = (uint64_t)name << 32 | value;
  uint32_t j;
  if (!w->slots || (w->npairs + 1) * 4 > (w->mask + 1) * 3)
    if (pairs_grow(w)) return KEEL_ENOMEM;
  for (j = (uint32_t)((key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & w->mask; w->slots[j];
       j = (j + 1) & w->mask)
    if (w->pairs[w->slots[j] - 1].key == key) return k_plist_push(&w->pairs[w->slots[j] - 1].ids, ref);
  if (w->npairs == w->cappairs) {
    uint32_t cap = w->cappairs ? w->cappairs * 2 : 1024;
    ppair_t *p = realloc(w->pairs, cap * sizeof *p);
    if (!p) return KEEL_ENOMEM;
    w->pairs = p;
    w->cappairs = cap;
  }
  w->pairs[w->npairs] = (ppair_t){key, {0}};
  w->slots[j] = ++w->npairs;
  return k_plist_push(&w->pairs[w->npairs - 1].ids, ref);
}

static int ch_flush(k_bwriter_t *w) {
  if (!w->chbuf.len) return 0;
  if (k_write_all(w->chfd, w->chbuf.p, w->chbuf.len)) return KEEL_EIO;
  w->chbuf.len = 0;
  return 0;
}

int k_bw_add(k_bwriter_t *w, const uint32_t *lab, size_t nlab, const int64_t *t, const double *v,
             size_t n, keel_err_t *e) {
  size_t nch, done = 0;
  uint32_t ref;
  int64_t prev_maxt = 0;
  uint64_t prev_off = 0;
  int rc;
  if (n == 0) return 0;
  if (nlab == 0 || nlab > MAX_LAB) return keel_err_set(e, KEEL_EINVAL, "block: bad label count");
  if (w->nser >= UINT32_MAX) return keel_err_set(e, KEEL_ETOOBIG, "block: too many series");
  ref = (uint32_t)w->nser;
  uint64_t *o = keel_grow(w->seroff, &w->capser, w->nser, sizeof *o, 4096);
  if (!o) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  w->seroff = o;
  nch = (n + K_BLOCK_CHUNK_SAMPLES - 1) / K_BLOCK_CHUNK_SAMPLES;
  if ((rc = k_bytes_reserve(&w->series, 20 + nlab * 10 + nch * 30)))
    return keel_err_set(e, rc, "out of memory");
  w->seroff[w->nser++] = w->series.len;
  k_bytes_uvarint(&w->series, nlab);
  for (size_t i = 0; i < 2 * nlab; i++) {
    if (lab[i] >= w->nsym) return keel_err_set(e, KEEL_EINVAL, "block: symbol out of range");
    k_bytes_uvarint(&w->series, lab[i]);
  }
  for (size_t i = 0; i < nlab; i++)
    if ((rc = posting_add(w, lab[2 * i], lab[2 * i + 1], ref))) return keel_err_set(e, rc, "out of memory");
  k_bytes_uvarint(&w->series, nch);
  for (size_t c = 0; c < nch; c++) {
    /* balanced chunks: the first n % nch get one more */
    size_t cnt = n / nch + (c < n % nch ? 1 : 0);
    const int64_t *ct = t + done;
    uint64_t off = w->choff;
    uint8_t lenbuf[10];
    size_t ll;
    w->packbuf.len = 0;
    if ((rc = k_chunk_pack(ct, v + done, cnt, &w->packbuf))) return keel_err_set(e, rc, "block: chunk: %s", keel_strerror(rc));
    ll = k_put_uvarint(lenbuf, w->packbuf.len);
    if ((rc = k_bytes_reserve(&w->chbuf, ll + w->packbuf.len + 4))) return keel_err_set(e, rc, "out of memory");
    memcpy(w->chbuf.p + w->chbuf.len, lenbuf, ll);
    memcpy(w->chbuf.p + w->chbuf.len + ll, w->packbuf.p, w->packbuf.len);
    k_put_u32(w->chbuf.p + w->chbuf.len + ll + w->packbuf.len, k_crc32c(0, w->packbuf.p, w->packbuf.len));
    w->chbuf.len += ll + w->packbuf.len + 4;
    w->choff += ll + w->packbuf.len + 4;
    if (c == 0) {
      k_bytes_varint(&w->series, ct[0]);
      k_bytes_uvarint(&w->series, (uint64_t)ct[cnt - 1] - (uint64_t)ct[0]);
      k_bytes_uvarint(&w->series, off);
    } else {
      k_bytes_uvarint(&w->series, (uint64_t)ct[0] - (uint64_t)prev_maxt);
      k_bytes_uvarint(&w->series, (uint64_t)ct[cnt - 1] - (uint64_t)ct[0]);
      k_bytes_uvarint(&w->series, off - prev_off);
    }
    prev_maxt = ct[cnt - 1];
    prev_off = off;
    done += cnt;
    w->nchunks++;
  }
  w->nsamples += n;
  if (w->chbuf.len >= CH_FLUSH && ch_flush(w))
    return keel_err_set(e, KEEL_EIO, "write %s/chunks: %s", w->tmp, strerror(errno));
  return 0;
}

static int key_cmp(const void *a, const void *b) {
  uint64_t x = ((const ppair_t *)a)->key, y = ((const ppair_t *)b)->key;
  return x < y ? -1 : x > y;
}

static int pad(k_bytes_t *b, size_t align) {
  static const uint8_t zero[8] = {0};
  size_t n = (align - b->len % align) % align;
  return k_bytes_append(b, zero, n);
}

static int put32(k_bytes_t *b, uint32_t v) {
  uint8_t x[4];
  k_put_u32(x, v);
  return k_bytes_append(b, x, 4);
}
static int put64(k_bytes_t *b, uint64_t v) {
  uint8_t x[8];
  k_put_u64(x, v);
  return k_bytes_append(b, x, 8);
}

/* The whole index in memory (the series entries are already encoded). */
static int build_index(k_bwriter_t *w, k_bytes_t *ix) {
  uint64_t symtab, sertab, series_base, names, all, *poff = NULL, *voff = NULL;
  uint32_t *symoff = NULL, nnames = 0;
  int rc = KEEL_ENOMEM;
  symoff = malloc((w->nsym ? w->nsym : 1) * sizeof *symoff);
  poff = malloc((w->npairs ? w->npairs : 1) * sizeof *poff);
  voff = malloc((w->npairs ? w->npairs : 1) * sizeof *voff);
  if (!symoff || !poff || !voff) goto out;
  if (put32(ix, IX_MAGIC) || put32(ix, VERSION)) goto out;
  for (size_t i = 0; i < w->nsym; i++) {
    if (ix->len > UINT32_MAX - 4096) {
      rc = KEEL_ETOOBIG;
      goto out;
    }
    symoff[i] = (uint32_t)ix->len;
    if (k_bytes_append(ix, w->syms[i], strlen(w->syms[i]) + 1)) goto out;
  }
  if (pad(ix, 4)) goto out;
  symtab = ix->len;
  for (size_t i = 0; i < w->nsym; i++)
    if (put32(ix, symoff[i])) goto out;
  series_base = ix->len;
  if (k_bytes_append(ix, w->series.p, w->series.len) || pad(ix, 8)) goto out;
  sertab = ix->len;
  for (size_t i = 0; i < w->nser; i++)
    if (put64(ix, series_base + w->seroff[i])) goto out;
  /* postings in (name, value) order = string order */
  qsort(w->pairs, w->npairs, sizeof *w->pairs, key_cmp);
  if (pad(ix, 4)) goto out;
  for (uint32_t i = 0; i < w->npairs; i++) {
    poff[i] = ix->len;
    if (put32(ix, (uint32_t)w->pairs[i].ids.n) ||
        k_bytes_append(ix, w->pairs[i].ids.v, w->pairs[i].ids.n * 4))
      goto out;
  }
  all = ix->len;
  if (put32(ix, (uint32_t)w->nser)) goto out;
  for (size_t i = 0; i < w->nser; i++)
    if (put32(ix, (uint32_t)i)) goto out;
  /* values arrays, one per name */
  for (uint32_t i = 0; i < w->npairs;) {
    uint32_t name = (uint32_t)(w->pairs[i].key >> 32), j = i;
    voff[nnames++] = ix->len;
    for (; j < w->npairs && (uint32_t)(w->pairs[j].key >> 32) == name; j++)
      if (put32(ix, (uint32_t)w->pairs[j].key) || put64(ix, poff[j])) goto out;
    i = j;
  }
  if (pad(ix, 8)) goto out;
  names = ix->len;
  for (uint32_t i = 0, k = 0; i < w->npairs; k++) {
    uint32_t name = (uint32_t)(w->pairs[i].key >> 32), j = i;
    while (j < w->npairs && (uint32_t)(w->pairs[j].key >> 32) == name) j++;
    if (put32(ix, name) || put32(ix, j - i) || put64(ix, voff[k])) goto out;
    i = j;
  }
  {
    uint8_t t[TRAILER] = {0};
    k_put_u64(t, symtab);
    k_put_u32(t + 8, (uint32_t)w->nsym);
    k_put_u32(t + 12, nnames);
    k_put_u64(t + 16, sertab);
    k_put_u64(t + 24, w->nser);
    k_put_u64(t + 32, names);
    k_put_u64(t + 40, all);
    k_put_u32(t + 56, k_crc32c(0, ix->p, ix->len));
    k_put_u32(t + 60, IX_END);
    if (k_bytes_append(ix, t, TRAILER)) goto out;
  }
  rc = 0;
out:
  free(symoff);
  free(poff);
  free(voff);
  return rc;
}

static int write_file(const char *dir, const char *name, const void *p, size_t n) {
  char path[4096];
  int fd, rc = 0;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  if (k_write_all(fd, p, n) || fdatasync(fd)) rc = -1;
  close(fd);
  return rc;
}

int k_bw_finish(k_bwriter_t *w, char *path, size_t cap, keel_err_t *e) {
  k_bytes_t ix = {0};
  char meta[512];
  int rc = 0, n, crashed = 0;
  if (w->nser == 0) {
    rc = keel_err_set(e, KEEL_EINVAL, "block: no series");
    goto out;
  }
  if (ch_flush(w) || fdatasync(w->chfd)) {
    rc = keel_err_set(e, KEEL_EIO, "write %s/chunks: %s", w->tmp, strerror(errno));
    goto out;
  }
  close(w->chfd);
  w->chfd = -1;
  if ((rc = build_index(w, &ix))) {
    keel_err_set(e, rc, "block index: %s", keel_strerror(rc));
    goto out;
  }
  if (write_file(w->tmp, "index", ix.p, ix.len)) {
    rc = keel_err_set(e, KEEL_EIO, "write %s/index: %s", w->tmp, strerror(errno));
    goto out;
  }
  if ((crashed = w->crash == 1)) goto out;
  n = snprintf(meta, sizeof meta,
               "{\"version\":%u,\"mint\":%lld,\"maxt\":%lld,\"level\":%u,\"series\":%llu,"
               "\"chunks\":%llu,\"samples\":%llu}\n",
               VERSION, (long long)w->mint, (long long)w->maxt, w->level,
               (unsigned long long)w->nser, (unsigned long long)w->nchunks,
               (unsigned long long)w->nsamples);
  if (write_file(w->tmp, "meta.json", meta, (size_t)n) || k_dir_fsync(w->tmp)) {
    rc = keel_err_set(e, KEEL_EIO, "write %s/meta.json: %s", w->tmp, strerror(errno));
    goto out;
  }
  if ((crashed = w->crash == 2)) goto out;
  if (rename(w->tmp, w->final)) {
    rc = keel_err_set(e, KEEL_EIO, "rename %s: %s", w->tmp, strerror(errno));
    goto out;
  }
  if ((crashed = w->crash == 3)) goto out;
  if (k_dir_fsync(w->blocks_dir)) {
    /* the block is complete; only its name may not survive a power cut,
     * and then the WAL still has its samples */
    keel_log(w->log, KEEL_LOG_WARN, "tsdb: fsync %s: %s", w->blocks_dir, strerror(errno));
  }
  snprintf(path, cap, "%s", w->final);
out:
  if (crashed) /* a simulated death: files stay as they are */
    rc = keel_err_set(e, KEEL_EIO, "block: simulated crash at step %d", w->crash);
  k_bytes_free(&ix);
  if (rc && !crashed) k_bw_abort(w);
  else bw_free(w);
  return rc;
}

void k_bw_abort(k_bwriter_t *w) {
  if (!w) return;
  if (w->chfd >= 0) {
    close(w->chfd);
    w->chfd = -1;
  }
  k_block_rmdir(w->tmp);
  bw_free(w);
}

/* ---- compaction ------------------------------------------------------------------------------ */

typedef struct cursor {
  const k_block_t *b;
  uint32_t *map; /* source symbol -> merged symbol */
  uint32_t ref;
  uint32_t lab[2 * MAX_LAB];
  size_t nlab;
} cursor_t;

static int cursor_load(cursor_t *c) {
  size_t n;
  if (c->ref >= c->b->nseries) return 1;
  if (k_block_label_ids(c->b, c->ref, c->lab, MAX_LAB, &n)) return -1;
  for (size_t i = 0; i < 2 * n; i++) c->lab[i] = c->map[c->lab[i]];
  c->nlab = n;
  return 0;
}

static int lab_cmp(const uint32_t *a, size_t na, const uint32_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  for (size_t i = 0; i < 2 * n; i++)
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  return na < nb ? -1 : na > nb;
}

int k_block_compact(const char *blocks_dir, k_block_t *const *src, size_t n, uint32_t level,
                    const keel_log_t *log, char *path, size_t cap, keel_err_t *e) {
  cursor_t *cur = calloc(n ? n : 1, sizeof *cur);
  const char **syms = NULL;
  size_t nsyms = 0, total = 0, *pos = NULL;
  k_bwriter_t *w = NULL;
  k_samples_t s = {0};
  int rc = 0, live;

  if (!cur) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) total += src[i]->nsym;
  syms = malloc((total ? total : 1) * sizeof *syms);
  pos = calloc(n ? n : 1, sizeof *pos);
  if (!syms || !pos) goto oom;
  for (size_t i = 0; i < n; i++) {
    cur[i].b = src[i];
    cur[i].map = malloc((src[i]->nsym ? src[i]->nsym : 1) * sizeof *cur[i].map);
    if (!cur[i].map) goto oom;
  }
  /* merge the sorted symbol tables */
  for (;;) {
    const char *min = NULL;
    for (size_t i = 0; i < n; i++)
      if (pos[i] < src[i]->nsym && (!min || strcmp(sym_at(src[i], (uint32_t)pos[i]), min) < 0))
        min = sym_at(src[i], (uint32_t)pos[i]);
    if (!min) break;
    for (size_t i = 0; i < n; i++)
      if (pos[i] < src[i]->nsym && !strcmp(sym_at(src[i], (uint32_t)pos[i]), min))
        cur[i].map[pos[i]++] = (uint32_t)nsyms;
    syms[nsyms++] = min;
  }
  if ((rc = k_bw_open(blocks_dir, src[0]->meta.mint, src[n - 1]->meta.maxt, level, syms, nsyms, log,
                      &w, e)))
    goto out;
  for (size_t i = 0; i < n; i++)
    if (cursor_load(&cur[i]) < 0) goto corrupt;
  /* merge the series, which each block keeps in label order */
  for (;;) {
    cursor_t *min = NULL;
    live = 0;
    for (size_t i = 0; i < n; i++) {
      if (cur[i].ref >= src[i]->nseries) continue;
      live = 1;
      if (!min || lab_cmp(cur[i].lab, cur[i].nlab, min->lab, min->nlab) < 0) min = &cur[i];
    }
    if (!live) break;
    s.n = 0;
    {
      uint32_t lab[2 * MAX_LAB];
      size_t nlab = min->nlab;
      memcpy(lab, min->lab, 2 * nlab * sizeof *lab);
      for (size_t i = 0; i < n; i++) {
        int r;
        if (cur[i].ref >= src[i]->nseries || lab_cmp(cur[i].lab, cur[i].nlab, lab, nlab)) continue;
        if ((rc = k_block_samples(src[i], cur[i].ref, INT64_MIN, INT64_MAX, &s, e))) goto out;
        cur[i].ref++;
        if ((r = cursor_load(&cur[i])) < 0) goto corrupt;
      }
      /* sources do not overlap in time; if they ever do, keep the first
       * sample of each timestamp and time order */
      for (size_t i = 1; i < s.n; i++)
        if (s.t[i] <= s.t[i - 1]) {
          size_t k = 0;
          for (size_t a = 1; a < s.n; a++) { /* insertion sort: rare path */
            int64_t tt = s.t[a];
            double vv = s.v[a];
            size_t b = a;
            while (b > 0 && s.t[b - 1] > tt) {
              s.t[b] = s.t[b - 1];
              s.v[b] = s.v[b - 1];
              b--;
            }
            s.t[b] = tt;
            s.v[b] = vv;
          }
          for (size_t a = 0; a < s.n; a++)
            if (!k || s.t[k - 1] != s.t[a]) {
              s.t[k] = s.t[a];
              s.v[k++] = s.v[a];
            }
          s.n = k;
          break;
        }
      if ((rc = k_bw_add(w, lab, nlab, s.t, s.v, s.n, e))) goto out;
    }
  }
  rc = k_bw_finish(w, path, cap, e);
  w = NULL;
  goto out;
corrupt:
  rc = keel_err_set(e, KEEL_ECORRUPT, "compaction: a source series does not decode");
  goto out;
oom:
  rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  if (w) k_bw_abort(w);
  for (size_t i = 0; i < n; i++) free(cur[i].map);
  free(cur);
  free(syms);
  free(pos);
  k_samples_free(&s);
  return rc;
}
