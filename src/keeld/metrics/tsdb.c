/* tsdb.c — open/replay, appending and group commit, maintenance jobs; see
 * tsdb.h.  The querier is in query.c. */
#define _GNU_SOURCE
#include "metrics/tsdb.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keel/grow.h"
#include "keel/time.h"
#include "metrics/idmap.h"
#include "metrics/tsdb_int.h"

#define MAX_LAB 256
#define MAX_COMPACT_RANGE (INT64_C(31) * 24 * 3600 * 1000)

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t floor_to(int64_t t, int64_t step) {
  int64_t q = t / step;
  if (t % step < 0) q--;
  return q * step;
}

static int blocks_insert(k_tsdb_t *db, k_block_t *b) {
  size_t i;
  k_block_t **v = keel_grow(db->blocks, &db->capblocks, db->nblocks, sizeof *v, 16);
  if (!v) return KEEL_ENOMEM;
  db->blocks = v;
  for (i = db->nblocks; i > 0 && k_block_meta(db->blocks[i - 1])->mint > k_block_meta(b)->mint; i--)
    db->blocks[i] = db->blocks[i - 1];
  db->blocks[i] = b;
  db->nblocks++;
  return 0;
}

static void blocks_remove(k_tsdb_t *db, const k_block_t *b) {
  size_t w = 0;
  for (size_t i = 0; i < db->nblocks; i++)
    if (db->blocks[i] != b) db->blocks[w++] = db->blocks[i];
  db->nblocks = w;
}

/* Labels of a head series as strings of the head (valid until it changes). */
static size_t head_labels(const k_head_t *h, const k_hseries_t *s, k_label_t *out) {
  for (size_t i = 0; i < s->nlab; i++) {
    out[i].name = k_head_sym(h, s->lab[2 * i]);
    out[i].value = k_head_sym(h, s->lab[2 * i + 1]);
  }
  return s->nlab;
}

/* ---- open ----------------------------------------------------------------------------------- */

static void refresh_future(k_tsdb_t *db) {
  int64_t now = keel_now_ms();
  db->future_limit = db->opts.max_future_ms < 0 || now > INT64_MAX - db->opts.max_future_ms
                         ? INT64_MAX
                         : now + db->opts.max_future_ms;
}


static int load_blocks(k_tsdb_t *db, keel_err_t *e) {
  DIR *d = opendir(db->blocks_dir);
  struct dirent *de;
  char path[4096];
  if (!d) return keel_err_set(e, KEEL_EIO, "open %s: %s", db->blocks_dir, strerror(errno));
  while ((de = readdir(d))) {
    size_t len = strlen(de->d_name);
    k_block_t *b;
    keel_err_t be = {0};
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", db->blocks_dir, de->d_name);
    if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp")) {
      /* a block being written when the process stopped */
      keel_log(db->log, KEEL_LOG_INFO, "tsdb: removing unfinished block %s", path);
      k_block_rmdir(path);
      continue;
    }
    if (k_block_open(path, db->log, &b, &be)) {
      keel_log(db->log, KEEL_LOG_ERROR, "tsdb: skipping block %s: %s", path, be.msg);
      continue;
    }
    if (blocks_insert(db, b)) {
      k_block_unref(b);
      closedir(d);
      return keel_err_set(e, KEEL_ENOMEM, "out of memory");
    }
  }
  closedir(d);
  /* A block inside another one's range is a compaction source whose
   * deletion a crash interrupted: the bigger block was complete before it
   * was renamed into place. */
  for (size_t i = 0; i < db->nblocks; i++) {
    const k_block_meta_t *a = k_block_meta(db->blocks[i]);
    for (size_t j = 0; j < db->nblocks; j++) {
      const k_block_meta_t *b = k_block_meta(db->blocks[j]);
      if (i == j || b->mint > a->mint || b->maxt < a->maxt || (b->mint == a->mint && b->maxt == a->maxt))
        continue;
      keel_log(db->log, KEEL_LOG_INFO, "tsdb: removing block %s (inside %s)",
               k_block_path(db->blocks[i]), k_block_path(db->blocks[j]));
      k_block_doom(db->blocks[i]);
      k_block_unref(db->blocks[i]);
      memmove(db->blocks + i, db->blocks + i + 1, (db->nblocks - i - 1) * sizeof *db->blocks);
      db->nblocks--;
      i--;
      break;
    }
  }
  for (size_t i = 0; i < db->nblocks; i++) {
    const k_block_meta_t *m = k_block_meta(db->blocks[i]);
    if (m->maxt > db->min_valid) db->min_valid = m->maxt;
    if (i && m->mint < k_block_meta(db->blocks[i - 1])->maxt)
      keel_log(db->log, KEEL_LOG_WARN, "tsdb: blocks %s and %s overlap; queries merge them",
               k_block_path(db->blocks[i - 1]), k_block_path(db->blocks[i]));
  }
  return 0;
}

/* Replay state.  Aliases: a series can be in the WAL under two ids — it
 * went quiet, a checkpoint kept it under its old id, a cut dropped it from
 * the head, and it came back under a new id.  Replay keeps the first and
 * sends the samples of the other id to it. */
typedef struct replay {
  k_tsdb_t *db;
  uint64_t series, samples, skipped_old, skipped_unknown, skipped_order, conflicts;
  k_idmap_t alias; /* id -> its series */
} replay_t;

static int alias_put(replay_t *r, uint32_t id, k_hseries_t *s) {
  size_t j;
  if (k_idmap_reserve(&r->alias, 64)) return KEEL_ENOMEM;
  j = k_idmap_slot(&r->alias, id);
  r->alias.n += !r->alias.k[j];
  r->alias.k[j] = id;
  r->alias.v[j] = s;
  return 0;
}

static int on_series(void *ud, uint32_t id, const k_label_t *l, size_t n) {
  replay_t *r = ud;
  k_hseries_t *s;
  int created;
  keel_err_t e = {0};
  int rc;
  k_head_bump_next_id(r->db->head, id);
  rc = k_head_get_or_create(r->db->head, l, n, id, &s, &created, &e);
  if (rc == KEEL_ENOMEM) return rc;
  if (rc == KEEL_ECONFLICT) {
    /* the same labels under an older id? (lookup only: never create here) */
    k_labels_t set = {l, n};
    uint64_t hash = k_labels_hash(l, n);
    k_hseries_t *prev = NULL;
    k_head_find_many(r->db->head, &set, &hash, 1, &prev);
    if (prev) return alias_put(r, id, prev);
  }
  if (rc) {
    if (r->conflicts++ < 10) keel_log(r->db->log, KEEL_LOG_WARN, "tsdb: replay: %s", e.msg);
    return 0;
  }
  s->logged = 1;
  r->series += created;
  return 0;
}

static int on_samples(void *ud, const k_wsample_t *smp, size_t n) {
  replay_t *r = ud;
  k_tsdb_t *db = r->db;
  for (size_t i = 0; i < n; i++) {
    k_hseries_t *s = k_head_by_id(db->head, smp[i].id);
    int rc;
    if (!s && r->alias.n) s = k_idmap_get(&r->alias, smp[i].id);
    if (!s) {
      r->skipped_unknown++;
      continue;
    }
    if (smp[i].t < db->min_valid) { /* already in a block */
      r->skipped_old++;
      continue;
    }
    if (smp[i].t <= s->last_t) {
      r->skipped_order++;
      continue;
    }
    if ((rc = k_head_append(db->head, s, smp[i].t, smp[i].v))) return rc;
    s->last_t = smp[i].t;
    r->samples++;
  }
  return 0;
}

int k_tsdb_open(const char *dir, const k_tsdb_opts_t *opts, const keel_log_t *log,
                k_tsdb_t **out, keel_err_t *e) {
  k_tsdb_t *db = calloc(1, sizeof *db);
  replay_t r = {0};
  k_wal_replay_cb_t cb = {on_series, on_samples, &r};
  int rc = 0;

  *out = NULL;
  if (!db) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  db->log = log;
  if (opts) db->opts = *opts;
  if (!db->opts.retention_ms) db->opts.retention_ms = K_TSDB_RETENTION_DEFAULT;
  if (!db->opts.block_ms) db->opts.block_ms = K_TSDB_BLOCK_DEFAULT;
  if (!db->opts.max_batch_samples) db->opts.max_batch_samples = (size_t)4 << 20;
  if (!db->opts.max_future_ms) db->opts.max_future_ms = 10 * 60 * 1000;
  db->min_valid = INT64_MIN;
  if (db->opts.block_ms < 60000 || db->opts.retention_ms < db->opts.block_ms) {
    rc = keel_err_set(e, KEEL_EINVAL, "tsdb: block range must be >= 1m and <= the retention");
    goto out;
  }
  if (!(db->dir = strdup(dir)) || asprintf(&db->blocks_dir, "%s/blocks", dir) < 0) {
    db->blocks_dir = NULL;
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((mkdir(dir, 0700) && errno != EEXIST) || (mkdir(db->blocks_dir, 0700) && errno != EEXIST)) {
    rc = keel_err_set(e, KEEL_EIO, "mkdir %s: %s", db->blocks_dir, strerror(errno));
    goto out;
  }
  if ((rc = load_blocks(db, e)) ||
      (rc = k_head_new(dir, db->opts.block_ms, log, &db->head, e)) ||
      (rc = k_wal_open(dir, log, &db->wal, e)))
    goto out;
  r.db = db;
  rc = k_wal_replay(db->wal, &cb, e);
  k_idmap_free(&r.alias);
  if (rc) goto out;
  k_head_gc(db->head, db->min_valid);
  refresh_future(db);
  if (r.skipped_unknown || r.conflicts)
    keel_log(log, KEEL_LOG_WARN,
             "tsdb: replay skipped %llu samples of unknown series, %llu conflicting series",
             (unsigned long long)r.skipped_unknown, (unsigned long long)r.conflicts);
  keel_log(log, KEEL_LOG_INFO,
           "tsdb: opened %s: %zu blocks, replayed %llu series and %llu samples "
           "(%llu already in blocks, %llu out of order)",
           dir, db->nblocks, (unsigned long long)k_head_nseries(db->head),
           (unsigned long long)r.samples, (unsigned long long)r.skipped_old,
           (unsigned long long)r.skipped_order);
  *out = db;
  db = NULL;
out:
  if (db) k_tsdb_close(db);
  return rc;
}

/* ---- appending ------------------------------------------------------------------------------- */

static int64_t accept_min(const k_tsdb_t *db) {
  int64_t m = db->min_valid, hm = k_head_maxt(db->head), half = db->opts.block_ms / 2;
  if (hm != INT64_MIN && hm >= INT64_MIN + half && hm - half > m) m = hm - half;
  return m;
}

static void batch_open(k_tsdb_t *db) {
  if (!db->batch_gen) db->batch_gen = ++db->next_gen;
}

int k_tsdb_ref(k_tsdb_t *db, const k_label_t *labels, size_t n, uint64_t *ref, keel_err_t *e) {
  k_hseries_t *s;
  int created, rc;
  if ((rc = k_head_get_or_create(db->head, labels, n, 0, &s, &created, e))) return rc;
  if (created) {
    if (db->nunlogged == db->capunlogged) {
      size_t cap = db->capunlogged ? db->capunlogged * 2 : 256;
      uint32_t *v = realloc(db->unlogged, cap * sizeof *v);
      if (!v) return keel_err_set(e, KEEL_ENOMEM, "out of memory"); /* logged by the next
                                                                      checkpoint at worst */
      db->unlogged = v;
      db->capunlogged = cap;
    }
    db->unlogged[db->nunlogged++] = s->id;
    batch_open(db);
  }
  *ref = s->id;
  db->last_s = s; /* the next append_ref is most likely for it */
  return 0;
}

int k_tsdb_append_ref(k_tsdb_t *db, uint64_t ref, int64_t t, double v, keel_err_t *e) {
  k_hseries_t *s = db->last_s && db->last_s->id == ref ? db->last_s
                   : ref <= UINT32_MAX                 ? k_head_by_id(db->head, (uint32_t)ref)
                                                       : NULL;
  if (!s) return keel_err_set(e, KEEL_ENOENT, "tsdb: series ref %llu is gone", (unsigned long long)ref);
  if (t <= s->last_t) {
    db->ooo++;
    return keel_err_set(e, KEEL_ECONFLICT, "out of order sample");
  }
  if (t < accept_min(db)) {
    db->oob++;
    return keel_err_set(e, KEEL_ECONFLICT, "sample too old");
  }
  if (t > db->future_limit) { /* the cached clock may be stale: look again */
    refresh_future(db);
    if (t > db->future_limit) {
      db->oob++;
      return keel_err_set(e, KEEL_ECONFLICT, "sample too far in the future");
    }
  }
  if (db->nstaged == db->capstaged) {
    size_t cap = db->capstaged ? db->capstaged * 2 : 4096;
    k_wsample_t *v2;
    k_hseries_t **s2;
    if (db->nstaged >= db->opts.max_batch_samples)
      return keel_err_set(e, KEEL_ETOOBIG, "tsdb: batch full: commit first");
    if (cap > db->opts.max_batch_samples) cap = db->opts.max_batch_samples;
    v2 = realloc(db->staged, cap * sizeof *v2);
    if (!v2) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
    db->staged = v2;
    s2 = realloc(db->staged_s, cap * sizeof *s2);
    if (!s2) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
    db->staged_s = s2;
    db->capstaged = cap;
  }
  batch_open(db);
  db->staged_s[db->nstaged] = s;
  db->staged[db->nstaged++] = (k_wsample_t){s->id, t, v};
  s->last_t = t;
  return 0;
}

int k_tsdb_refs(k_tsdb_t *db, const k_labels_t *sets, size_t n, uint64_t *refs, size_t *failed,
                keel_err_t *e) {
  enum { CHUNK = 256 };
  uint64_t hashes[CHUNK];
  k_hseries_t *found[CHUNK];
  int rc;
  *failed = 0;
  for (size_t base = 0; base < n; base += CHUNK) {
    size_t m = n - base < CHUNK ? n - base : CHUNK;
    for (size_t i = 0; i < m; i++) hashes[i] = k_labels_hash(sets[base + i].v, sets[base + i].n);
    k_head_find_many(db->head, sets + base, hashes, m, found);
    for (size_t i = 0; i < m; i++) {
      if (found[i]) {
        refs[base + i] = found[i]->id;
        continue;
      }
      /* new (or invalid): the one-by-one path creates or explains it */
      if ((rc = k_tsdb_ref(db, sets[base + i].v, sets[base + i].n, &refs[base + i], e))) {
        *failed = base + i;
        return rc;
      }
    }
  }
  return 0;
}

int k_tsdb_append(k_tsdb_t *db, const k_label_t *labels, size_t n, int64_t t, double v,
                  keel_err_t *e) {
  uint64_t ref;
  int rc = k_tsdb_ref(db, labels, n, &ref, e);
  return rc ? rc : k_tsdb_append_ref(db, ref, t, v, e);
}

/* Forgets the staged samples: each series' last accepted time goes back to
 * its last appended one.  (An open chunk is empty only for a series closed
 * by a cut, whose samples are all older than what is accepted now.) */
static void unstage(k_tsdb_t *db) {
  for (size_t i = 0; i < db->nstaged; i++) {
    k_hseries_t *s = db->staged_s[i];
    s->last_t = s->open.n ? s->open.t : INT64_MIN;
  }
  db->nstaged = 0;
}

void k_tsdb_rollback(k_tsdb_t *db) {
  unstage(db);
  if (!db->nunlogged) db->batch_gen = 0; /* nothing left to commit: the number is abandoned */
}

int k_tsdb_commit(k_tsdb_t *db, uint64_t *gen, keel_err_t *e) {
  k_label_t lab[MAX_LAB];
  uint64_t g;
  int rc;
  *gen = db->committed_gen;
  if (!db->nstaged && !db->nunlogged) return 0;
  batch_open(db);
  g = db->batch_gen;
  for (size_t i = 0; i < db->nunlogged; i++) {
    k_hseries_t *s = k_head_by_id(db->head, db->unlogged[i]);
    if (!s || s->logged) continue;
    if ((rc = k_wal_add_series(db->wal, s->id, lab, head_labels(db->head, s, lab), e))) goto fail;
  }
  if ((rc = k_wal_add_samples(db->wal, db->staged, db->nstaged, e)) ||
      (rc = k_wal_commit(db->wal, g, e)))
    goto fail;
  for (size_t i = 0; i < db->nunlogged; i++) {
    k_hseries_t *s = k_head_by_id(db->head, db->unlogged[i]);
    if (s) s->logged = 1;
  }
  db->nunlogged = 0;
  /* in the WAL: now into the head, where queries see it.  Each append
   * touches its series and the end of its open chunk, scattered over the
   * heap: fetch them ahead (series 16 ahead, chunk ends 8 ahead). */
  for (size_t i = 0; i < db->nstaged; i++) {
    const k_wsample_t *x = &db->staged[i];
    if (i + 16 < db->nstaged) __builtin_prefetch(db->staged_s[i + 16]);
    if (i + 8 < db->nstaged) {
      const k_hseries_t *p = db->staged_s[i + 8];
      if (p->open.buf) __builtin_prefetch(p->open.buf + (p->open.nbits >> 3), 1);
    }
    if (k_head_append(db->head, db->staged_s[i], x->t, x->v)) {
      /* only on ENOMEM or a dead disk: the sample is in the WAL and comes
       * back at the next open */
      if (db->apply_failures++ % 100000 == 0)
        keel_log(db->log, KEEL_LOG_ERROR, "tsdb: cannot add a committed sample to the head");
    }
  }
  db->samples_appended += db->nstaged;
  db->nstaged = 0;
  db->commits++;
  db->committed_gen = g;
  refresh_future(db);
  db->batch_gen = 0;
  *gen = g;
  return 0;
fail:
  k_wal_discard(db->wal);
  unstage(db);
  db->failed_gen = g;
  db->batch_gen = 0;
  db->commit_failures++;
  return rc;
}

uint64_t k_tsdb_visible_gen(const k_tsdb_t *db) {
  return db->batch_gen ? db->batch_gen : db->committed_gen;
}
uint64_t k_tsdb_durable_gen(const k_tsdb_t *db) { return k_wal_durable_gen(db->wal); }
uint64_t k_tsdb_failed_gen(const k_tsdb_t *db) { return db->failed_gen; }
int k_tsdb_sync_fd(const k_tsdb_t *db) { return k_wal_sync_fd(db->wal); }
void k_tsdb_sync_poll(k_tsdb_t *db) { k_wal_sync_poll(db->wal); }
void k_tsdb_sync_wait(k_tsdb_t *db) { k_wal_sync_wait(db->wal); }

int k_tsdb_querier(k_tsdb_t *db, k_querier_t **q, keel_err_t *e) {
  return k_tsdb_querier_new(db, q, e);
}

void k_tsdb_stats(k_tsdb_t *db, k_tsdb_stats_t *o) {
  k_head_stats_t hs;
  k_wal_stats_t ws;
  memset(o, 0, sizeof *o);
  k_head_stats(db->head, &hs);
  k_wal_stats(db->wal, &ws);
  o->series = hs.series;
  o->head_chunks = hs.chunks;
  o->head_bytes = hs.mem_bytes + db->capstaged * (sizeof *db->staged + sizeof *db->staged_s);
  o->head_file_bytes = hs.file_bytes;
  o->samples_appended = db->samples_appended;
  o->out_of_order = db->ooo;
  o->out_of_bounds = db->oob;
  o->wal_bytes = ws.bytes;
  o->wal_corrupt_tails = ws.corrupt_tails;
  o->blocks = db->nblocks;
  for (size_t i = 0; i < db->nblocks; i++) {
    o->block_bytes += k_block_meta(db->blocks[i])->bytes;
    o->block_samples += k_block_meta(db->blocks[i])->nsamples;
  }
  o->commits = db->commits;
  o->commit_failures = db->commit_failures;
  o->cuts = db->cuts;
  o->compactions = db->compactions;
  o->blocks_expired = db->expired;
  o->maintain_failures = db->maint_failures;
  o->head_mint = k_head_mint(db->head);
  o->head_maxt = k_head_maxt(db->head);
}

/* ---- maintenance jobs ------------------------------------------------------------------------ */

enum { JOB_CUT = 1, JOB_COMPACT, JOB_DELETE };

typedef struct tsdb_job {
  k_tsdb_t *db; /* NULL once the database closed while the job ran */
  int kind;
  const keel_log_t *log;
  char *blocks_dir, *wal_dir;
  int crash;

  /* worker/close handshake */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finished, cancel;

  /* cut */
  k_hsnap_t *snap;
  int64_t mint, maxt;
  uint32_t wal_upto;
  int ckpt_ok, crashed;

  /* compact / delete */
  k_block_t **src;
  size_t nsrc;
  uint32_t level;

  /* result */
  k_block_t *out;
  int rc;
  keel_err_t err;
} tsdb_job_t;

static int job_cancelled(tsdb_job_t *j) {
  int c;
  pthread_mutex_lock(&j->mu);
  c = j->cancel;
  pthread_mutex_unlock(&j->mu);
  return c;
}

/* -- cut: write the snapshot's chunks as a block ---------------------------------------------- */

typedef struct cutser {
  const uint32_t *lab; /* mapped to block symbol ids */
  uint32_t nlab, idx;
} cutser_t;

static int cutser_cmp(const void *a, const void *b) {
  const cutser_t *x = a, *y = b;
  uint32_t n = x->nlab < y->nlab ? x->nlab : y->nlab;
  for (uint32_t i = 0; i < 2 * n; i++)
    if (x->lab[i] != y->lab[i]) return x->lab[i] < y->lab[i] ? -1 : 1;
  return x->nlab < y->nlab ? -1 : x->nlab > y->nlab;
}

typedef struct symref {
  const char *s;
  uint32_t id;
} symref_t;

static int symref_cmp(const void *a, const void *b) {
  return strcmp(((const symref_t *)a)->s, ((const symref_t *)b)->s);
}

typedef struct ckpt_it {
  const k_hsnap_t *snap;
  size_t i;
  k_label_t lab[MAX_LAB];
} ckpt_it_t;

static int ckpt_next(void *ud, uint32_t *id, const k_label_t **l, size_t *n) {
  ckpt_it_t *it = ud;
  const k_hseries_t *s;
  if (it->i >= it->snap->nlive) return 0;
  s = it->snap->live[it->i++];
  for (size_t k = 0; k < s->nlab; k++) {
    it->lab[k].name = it->snap->sym[s->lab[2 * k]];
    it->lab[k].value = it->snap->sym[s->lab[2 * k + 1]];
  }
  *id = s->id;
  *l = it->lab;
  *n = s->nlab;
  return 1;
}

static int cut_write(tsdb_job_t *j) {
  const k_hsnap_t *sn = j->snap;
  uint32_t *map = NULL, *flat = NULL;
  symref_t *used = NULL;
  const char **syms = NULL;
  cutser_t *order = NULL;
  size_t nused = 0, nflat = 0;
  k_bwriter_t *w = NULL;
  k_samples_t smp = {0};
  char path[4096];
  int rc = 0;

  map = malloc((sn->nsym ? sn->nsym : 1) * sizeof *map);
  used = malloc((sn->nsym ? sn->nsym : 1) * sizeof *used);
  order = malloc((sn->nseries ? sn->nseries : 1) * sizeof *order);
  if (!map || !used || !order) goto oom;
  for (size_t i = 0; i < sn->nsym; i++) map[i] = UINT32_MAX;
  for (size_t i = 0; i < sn->nseries; i++) {
    const k_hseries_t *s = sn->series[i];
    nflat += 2u * s->nlab;
    for (uint32_t k = 0; k < 2u * s->nlab; k++)
      if (map[s->lab[k]] == UINT32_MAX) {
        map[s->lab[k]] = 0;
        used[nused++] = (symref_t){sn->sym[s->lab[k]], s->lab[k]};
      }
  }
  /* block symbol ids in string order */
  qsort(used, nused, sizeof *used, symref_cmp);
  syms = malloc((nused ? nused : 1) * sizeof *syms);
  flat = malloc((nflat ? nflat : 1) * sizeof *flat);
  if (!syms || !flat) goto oom;
  for (size_t i = 0; i < nused; i++) {
    map[used[i].id] = (uint32_t)i;
    syms[i] = used[i].s;
  }
  nflat = 0;
  for (size_t i = 0; i < sn->nseries; i++) {
    const k_hseries_t *s = sn->series[i];
    order[i] = (cutser_t){flat + nflat, s->nlab, (uint32_t)i};
    for (uint32_t k = 0; k < 2u * s->nlab; k++) flat[nflat++] = map[s->lab[k]];
  }
  qsort(order, sn->nseries, sizeof *order, cutser_cmp);

  if ((rc = k_bw_open(j->blocks_dir, j->mint, j->maxt, 1, syms, nused, j->log, &w, &j->err)))
    goto out;
  if (j->crash >= 1 && j->crash <= 3) k_bw_set_crash_point(w, j->crash);
  for (size_t i = 0; i < sn->nseries; i++) {
    uint32_t idx = order[i].idx;
    if ((i & 4095) == 0 && job_cancelled(j)) {
      rc = keel_err_set(&j->err, KEEL_EAGAIN, "tsdb: block cut cancelled");
      goto out;
    }
    smp.n = 0;
    for (uint32_t r = sn->first[idx]; r < sn->first[idx + 1]; r++) {
      const uint8_t *p;
      size_t len, cnt, got, base = smp.n, wpos;
      if (k_hsnap_chunk(sn, sn->refs[r], &p, &len) || k_chunk_count(p, len, &cnt)) {
        rc = keel_err_set(&j->err, KEEL_ECORRUPT, "tsdb: head chunk unreadable");
        goto out;
      }
      if ((rc = k_samples_reserve(&smp, smp.n + cnt))) goto oom;
      if (k_chunk_decode(p, len, smp.t + base, smp.v + base, cnt, &got)) {
        rc = keel_err_set(&j->err, KEEL_ECORRUPT, "tsdb: head chunk does not decode");
        goto out;
      }
      /* chunks never cross the boundary; keep the range strict anyway */
      wpos = base;
      for (size_t k = base; k < base + got; k++)
        if (smp.t[k] >= j->mint && smp.t[k] < j->maxt && (wpos == 0 || smp.t[k] > smp.t[wpos - 1])) {
          smp.t[wpos] = smp.t[k];
          smp.v[wpos++] = smp.v[k];
        }
      smp.n = wpos;
    }
    if ((rc = k_bw_add(w, order[i].lab, order[i].nlab, smp.t, smp.v, smp.n, &j->err))) goto out;
  }
  rc = k_bw_finish(w, path, sizeof path, &j->err);
  w = NULL;
  if (rc) {
    if (j->crash >= 1 && j->crash <= 3) j->crashed = 1;
    goto out;
  }
  if ((rc = k_block_open(path, j->log, &j->out, &j->err))) goto out;
  if (j->crash == 4) {
    j->crashed = 1;
    goto out;
  }
  if (j->wal_upto) {
    ckpt_it_t it = {sn, 0, {{0}}};
    keel_err_t ce = {0};
    if (k_wal_checkpoint(j->wal_dir, j->wal_upto, ckpt_next, &it, j->log, &ce))
      keel_log(j->log, KEEL_LOG_ERROR, "tsdb: %s (the WAL stays until the next cut)", ce.msg);
    else
      j->ckpt_ok = 1;
  }
  if (j->crash == 5) j->crashed = 1;
  goto out;
oom:
  rc = keel_err_set(&j->err, KEEL_ENOMEM, "out of memory");
out:
  if (w) k_bw_abort(w);
  free(map);
  free(used);
  free(syms);
  free(flat);
  free(order);
  k_samples_free(&smp);
  return rc;
}

static void job_run(void *arg) {
  tsdb_job_t *j = arg;
  if (!job_cancelled(j)) {
    switch (j->kind) {
    case JOB_CUT: j->rc = cut_write(j); break;
    case JOB_COMPACT: {
      char path[4096];
      j->rc = k_block_compact(j->blocks_dir, j->src, j->nsrc, j->level, j->log, path, sizeof path,
                              &j->err);
      if (!j->rc) j->rc = k_block_open(path, j->log, &j->out, &j->err);
      if (j->crash == 6) j->crashed = 1; /* new block in place, sources not yet deleted */
      break;
    }
    case JOB_DELETE:
      for (size_t i = 0; i < j->nsrc; i++) k_block_doom(j->src[i]);
      break;
    }
  } else {
    j->rc = KEEL_EAGAIN;
  }
  pthread_mutex_lock(&j->mu);
  j->finished = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

static void job_free(tsdb_job_t *j) {
  for (size_t i = 0; i < j->nsrc; i++) k_block_unref(j->src[i]);
  free(j->src);
  if (j->out) k_block_unref(j->out);
  free(j->blocks_dir);
  free(j->wal_dir);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}

/* On the loop thread, after job_run. */
static void job_done(void *arg) {
  tsdb_job_t *j = arg;
  k_tsdb_t *db = j->db;
  if (!db) { /* orphaned by k_tsdb_close, which released the rest */
    job_free(j);
    return;
  }
  db->job = NULL;
  if (j->crashed) {
    /* simulated crash: leave memory as a dead process would, disk as it is */
    db->crashed = 1;
    k_hsnap_free(db->head, j->snap);
    j->snap = NULL;
    job_free(j);
    return;
  }
  switch (j->kind) {
  case JOB_CUT:
    if (j->out) {
      if (blocks_insert(db, j->out)) {
        keel_log(db->log, KEEL_LOG_ERROR, "tsdb: out of memory adding block %s", k_block_path(j->out));
        k_hsnap_free(db->head, j->snap);
        db->maint_failures++;
        break;
      }
      j->out = NULL;
      /* the block and the head swap in one step on this thread: queries
       * see each sample exactly once */
      db->last_s = NULL; /* the head may free series now */
      k_head_truncate(db->head, j->snap);
      if (j->ckpt_ok) k_wal_cut_end(db->wal, j->wal_upto);
      db->cuts++;
    } else {
      keel_log(db->log, KEEL_LOG_ERROR, "tsdb: block cut [%lld, %lld) failed: %s",
               (long long)j->mint, (long long)j->maxt, j->err.msg);
      k_hsnap_free(db->head, j->snap);
      db->maint_failures++;
    }
    j->snap = NULL;
    break;
  case JOB_COMPACT:
    if (j->out) {
      for (size_t i = 0; i < j->nsrc; i++) {
        blocks_remove(db, j->src[i]);
        k_block_doom(j->src[i]);
        k_block_unref(j->src[i]); /* the list's reference; the job's goes in job_free */
      }
      if (blocks_insert(db, j->out)) {
        /* the block is on disk and found at the next open */
        keel_log(db->log, KEEL_LOG_ERROR, "tsdb: out of memory adding block %s", k_block_path(j->out));
      } else {
        j->out = NULL;
      }
      db->compactions++;
    } else {
      keel_log(db->log, KEEL_LOG_ERROR, "tsdb: compaction failed: %s", j->err.msg);
      db->maint_failures++;
    }
    break;
  case JOB_DELETE:
    if (j->rc) { /* never ran (could not be queued): the blocks stay */
      for (size_t i = 0; i < j->nsrc; i++) {
        k_block_ref(j->src[i]);
        if (blocks_insert(db, j->src[i])) k_block_unref(j->src[i]); /* found again at open */
      }
      db->maint_failures++;
    } else {
      db->expired += j->nsrc;
    }
    break;
  }
  job_free(j);
}

static tsdb_job_t *job_new(k_tsdb_t *db, int kind) {
  tsdb_job_t *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->db = db;
  j->kind = kind;
  j->log = db->log;
  /* a test's crash point goes to the next job it concerns */
  if ((kind == JOB_CUT && db->crash_point >= 1 && db->crash_point <= 5) ||
      (kind == JOB_COMPACT && db->crash_point == 6)) {
    j->crash = db->crash_point;
    db->crash_point = 0;
  }
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  j->blocks_dir = strdup(db->blocks_dir);
  j->wal_dir = strdup(k_wal_dir(db->wal));
  if (!j->blocks_dir || !j->wal_dir) {
    job_free(j);
    return NULL;
  }
  return j;
}

static int job_start(k_tsdb_t *db, tsdb_job_t *j, k_work_t *work, keel_err_t *e) {
  db->job = j;
  if (!work) {
    job_run(j);
    job_done(j);
    return 0;
  }
  if (k_work_submit(work, job_run, job_done, j)) {
    /* undo: as if the job failed at once */
    j->rc = KEEL_ENOMEM;
    keel_err_set(&j->err, KEEL_ENOMEM, "cannot queue the job");
    job_done(j);
    return keel_err_set(e, KEEL_ENOMEM, "tsdb: cannot queue a maintenance job");
  }
  return 0;
}

/* -- planning --------------------------------------------------------------------------------- */

/* Blocks wholly past the retention. */
static int plan_retention(k_tsdb_t *db, int64_t now, k_work_t *work, int *started, keel_err_t *e) {
  int64_t cutoff = now - db->opts.retention_ms;
  size_t n = 0;
  tsdb_job_t *j;
  for (size_t i = 0; i < db->nblocks; i++)
    if (k_block_meta(db->blocks[i])->maxt <= cutoff) n++;
  if (!n) return 0;
  if (!(j = job_new(db, JOB_DELETE)) || !(j->src = malloc(n * sizeof *j->src))) {
    if (j) job_free(j);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  /* out of the list now (queries stop seeing them); files go on the worker */
  for (size_t i = 0; i < db->nblocks;) {
    k_block_t *b = db->blocks[i];
    if (k_block_meta(b)->maxt <= cutoff) {
      keel_log(db->log, KEEL_LOG_INFO, "tsdb: block %s is past the retention", k_block_path(b));
      j->src[j->nsrc++] = b; /* the list's reference moves to the job */
      memmove(db->blocks + i, db->blocks + i + 1, (db->nblocks - i - 1) * sizeof *db->blocks);
      db->nblocks--;
    } else {
      i++;
    }
  }
  *started = 1;
  return job_start(db, j, work, e);
}

static int plan_cut(k_tsdb_t *db, k_work_t *work, int *started, keel_err_t *e) {
  int64_t B = db->opts.block_ms, hmin = k_head_mint(db->head), hmax = k_head_maxt(db->head), lo;
  tsdb_job_t *j;
  k_hsnap_t *sn = NULL;
  uint32_t upto = 0;
  int rc;
  for (;;) {
    if (hmin == INT64_MAX || hmax == INT64_MIN) return 0;
    lo = floor_to(hmin, B);
    if (lo > INT64_MAX - 2 * B || hmax < lo + B + B / 2) return 0;
    /* Staged samples are never older than the range (the acceptance window
     * had passed it when they came); should one be, wait until it is
     * committed, so this cut takes it rather than leaving it behind. */
    for (size_t i = 0; i < db->nstaged; i++)
      if (db->staged[i].t < lo + B) return 0;
    if (db->min_valid < lo + B) db->min_valid = lo + B;
    if ((rc = k_head_snapshot(db->head, lo + B, &sn, e))) return rc;
    if (sn->nseries) break;
    /* nothing in that range (a gap): move on without a block */
    db->last_s = NULL;
    k_head_truncate(db->head, sn);
    hmin = k_head_mint(db->head);
    hmax = k_head_maxt(db->head);
  }
  if ((rc = k_wal_cut_begin(db->wal, lo + B, &upto, e)) || !(j = job_new(db, JOB_CUT))) {
    k_hsnap_free(db->head, sn);
    return rc ? rc : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  j->snap = sn;
  j->mint = lo;
  j->maxt = lo + B;
  j->wal_upto = upto;
  *started = 1;
  return job_start(db, j, work, e);
}

static int plan_compact(k_tsdb_t *db, k_work_t *work, int *started, keel_err_t *e) {
  int64_t maxr = db->opts.retention_ms / 10;
  if (maxr > MAX_COMPACT_RANGE) maxr = MAX_COMPACT_RANGE;
  for (int64_t r = db->opts.block_ms * 3, level = 2; r <= maxr && r > 0; r *= 3, level++) {
    for (size_t i = 0; i < db->nblocks;) {
      const k_block_meta_t *m = k_block_meta(db->blocks[i]);
      int64_t start = floor_to(m->mint, r);
      size_t k = i;
      tsdb_job_t *j;
      /* the run of blocks inside [start, start + r) */
      while (k < db->nblocks && k_block_meta(db->blocks[k])->mint >= start &&
             k_block_meta(db->blocks[k])->maxt <= start + r)
        k++;
      if (k == i) {
        i++;
        continue;
      }
      if (k - i < 2 || start + r > db->min_valid) {
        i = k;
        continue;
      }
      if (!(j = job_new(db, JOB_COMPACT)) || !(j->src = malloc((k - i) * sizeof *j->src))) {
        if (j) job_free(j);
        return keel_err_set(e, KEEL_ENOMEM, "out of memory");
      }
      for (size_t x = i; x < k; x++) {
        k_block_ref(db->blocks[x]);
        j->src[j->nsrc++] = db->blocks[x];
      }
      j->level = (uint32_t)level;
      *started = 1;
      return job_start(db, j, work, e);
    }
  }
  return 0;
}

int k_tsdb_maintain(k_tsdb_t *db, int64_t now_ms, k_work_t *work, keel_err_t *e) {
  for (int round = 0; round < 10000; round++) {
    int started = 0, rc;
    if (db->job || db->crashed) return 0;
    if ((rc = plan_retention(db, now_ms, work, &started, e)) || started) goto next;
    if ((rc = plan_cut(db, work, &started, e)) || started) goto next;
    rc = plan_compact(db, work, &started, e);
  next:
    if (rc) return rc;
    if (!started || work) return 0;
  }
  return 0;
}

int k_tsdb_maintain_busy(const k_tsdb_t *db) { return db->job != NULL; }

void k_tsdb_set_crash_point(k_tsdb_t *db, int step) { db->crash_point = step; }

/* ---- close ----------------------------------------------------------------------------------- */

void k_tsdb_close(k_tsdb_t *db) {
  if (!db) return;
  if (db->job) {
    tsdb_job_t *j = db->job;
    pthread_mutex_lock(&j->mu);
    j->cancel = 1;
    while (!j->finished) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
    /* Its done callback still comes from the pool: leave it the job
     * struct and release the rest now.  Whatever the job wrote is
     * consistent on disk (blocks are renamed into place complete). */
    if (j->snap) k_hsnap_free(db->head, j->snap);
    j->snap = NULL;
    for (size_t i = 0; i < j->nsrc; i++) k_block_unref(j->src[i]);
    j->nsrc = 0;
    if (j->out) k_block_unref(j->out);
    j->out = NULL;
    j->db = NULL;
    db->job = NULL;
  }
  if (db->wal) k_wal_close(db->wal);
  k_head_free(db->head);
  for (size_t i = 0; i < db->nblocks; i++) k_block_unref(db->blocks[i]);
  free(db->blocks);
  free(db->staged);
  free(db->staged_s);
  free(db->unlogged);
  free(db->dir);
  free(db->blocks_dir);
  free(db);
}
